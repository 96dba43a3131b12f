"""DVC stages `atinit@<seed>` and `atinit_compare` (stages/retrain/dvc.yaml): tickets without a
trained net -- masks from the untrained net with their sanity checks, and supermasks -- then
every arm beside dense, the IMP tickets and one-shot magnitude + fine-tuning.

`train SEED` trains one seed's arms; each finished arm is saved in models/atinit/<seed>/, so a
killed run resumes after its last finished training. `compare` reads every seed's curve.
"""

import time

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.models.networks import build_model, weights_blob
from prunelab.runtime.files import Outputs, read_json, read_rows
from prunelab.runtime.pool import plan
from prunelab.runtime.stage import stage_help
from prunelab.studies.atinit import arms, compare
from prunelab.studies.atinit import study as atinit
from prunelab.studies.opening import open_stage

STUDY = atinit.STUDY


@click.group(help=stage_help(*STUDY.stages, details="Tickets without a trained net "
                             "(docs/atinit.md): `train SEED`, then `compare`."))
def main() -> None:
    pass


@main.command(help=stage_help(STUDY.stage("atinit")))
@click.argument("seed", type=click.IntRange(0, 2**32 - 1))
def train(seed: int) -> None:
    kept = f"finished arms stay in {atinit.seed_store(seed)}/ and the next run resumes"
    with open_stage(STUDY.stage("atinit"), seed, kept=kept) as stage:
        # train's init for this seed, drawn again (bit-equal to models/seeds/<seed>/init.pt)
        drawn = build_model(stage.cfg.model, seed, stage.device).layers()
        init = tuple(layer.with_weight(layer.weight.detach()) for layer in drawn)
        blob = weights_blob(init, stage.cfg.model.arch)
        workers, threads = plan(stage.device)  # CPU: one single-threaded arm per thread
        key = arms.fingerprint(stage.cfg, blob, stage.device.type, threads)
        store = arms.ArmStore(atinit.seed_store(seed), key)

        def report(row: dict, resumed: bool) -> None:
            click.echo(f"atinit@{seed}: {row['arm']}: {row['accuracy']}% at "
                       f"{row['weights_remaining']}% of weights"
                       + (" (resumed)" if resumed else f" ({row['seconds']} s)"), err=True)
            stage.run.log_child(row["arm"], {"accuracy": row["accuracy"],
                                             "weights_remaining": row["weights_remaining"]},
                                {"loss": row["loss"], "accuracy": row["evals"]},
                                {"method": row["method"], "control": row["control"]})

        start = time.perf_counter()
        done = arms.run(stage.cfg, init, stage.split, store, report, workers, threads)
        rows = [{k: r[k] for k in arms.COLUMNS} for r in done]
        wall = round(time.perf_counter() - start, 1)
        stage.run.log_metrics({"wall_seconds": wall, "workers": workers})
        click.echo(f"atinit@{seed}: {len(rows)} arms in {wall / 60:.1f} min ({workers} "
                   f"worker{'s' if workers > 1 else ''} of {threads} thread)", err=True)
        out = Outputs()
        out.add_csv(atinit.seed_curve(seed), rows)
        out.commit()


@main.command("compare", help=stage_help(STUDY.stage("atinit_compare")))
def compare_seeds() -> None:
    with open_stage(STUDY.stage("atinit_compare")) as stage:
        cfg, imp_rows = stage.cfg, read_rows(paths.IMP_CURVE)
        per_seed = {s: read_rows(atinit.seed_curve(s)) for s in cfg.atinit.seeds}
        rows = compare.aggregate(per_seed)
        dense = read_json(paths.IMP_METRICS).get("dense_accuracy")
        result = compare.summary(rows, compare.verdicts(per_seed), imp_rows, dense)
        out = Outputs()
        out.add_csv(atinit.CURVE, rows)
        out.add_json(atinit.METRICS, result)
        out.add_json(atinit.HEADLINE, compare.headline(result))
        out.add_bytes(atinit.FIGURE, compare.figure(
            rows, imp_rows, read_rows(paths.finetune_curve("weight")), dense, cfg.model.arch))
        out.add_text(atinit.SECTION, compare.section(result, len(per_seed)))
        out.commit()
        stage.run.log_metrics(compare.headline(result))
        stage.run.log_artifacts(out.paths)


if __name__ == "__main__":
    main()
