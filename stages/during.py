"""DVC stages `during` and `during_compare` (stages/retrain/dvc.yaml): nets pruned while they
train -- gradual pruning on three rate shapes, early-bird tickets, SET, RigL and their static
mask -- then every arm beside dense, the IMP tickets, the at-init methods and one-shot
magnitude + fine-tuning.

`train` trains every arm of every seed of during.method_seeds and during.schedule_seeds; each
finished arm is saved in models/during/<seed>/, so a killed run resumes after its last finished
training and a new seed trains only its own arms. `compare` reads them all.
"""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import train_steps
from prunelab.runtime.files import Outputs, read_rows
from prunelab.runtime.pool import plan
from prunelab.runtime.stage import stage_help
from prunelab.studies.atinit.study import CURVE as ATINIT_CURVE
from prunelab.studies.during import arms, compare, schedule
from prunelab.studies.during import study as during
from prunelab.studies.l0.study import CURVE as L0_CURVE
from prunelab.studies.opening import open_stage

STUDY = during.STUDY


@click.group(help=stage_help(*STUDY.stages, details="Pruning while training (docs/during.md): "
                             "`train`, then `compare`."))
def main() -> None:
    pass


@main.command(help=stage_help(STUDY.stage("during")))
def train() -> None:
    kept = f"finished arms stay in {during.FOLDER}/<seed>/ and the next run resumes"
    with open_stage(STUDY.stage("during"), kept=kept) as stage:
        workers, threads = plan(stage.device)  # CPU: single-threaded arms side by side
        key = arms.fingerprint(stage.cfg, stage.device.type, threads)

        def report(row: dict, resumed: bool) -> None:
            click.echo(f"during: seed {row['seed']} {row['arm']}: {row['accuracy']}% at "
                       f"{row['weights_remaining']}% of weights"
                       + (" (resumed)" if resumed else f" ({row['seconds']} s)"), err=True)
            measured = {k: v for k, v in row.items() if k in ("accuracy", "weights_remaining")
                        or k.startswith(("noise_", "delete_"))}
            stage.run.log_child(f"{row['arm']} seed {row['seed']}", measured,
                                {"accuracy": row["evals"], "loss": row["loss"],
                                 "weights_remaining": row["sparsity_history"],
                                 "mask_distance": row.get("distances", [])},
                                {"method": row["method"], "shape": row["shape"],
                                 "seed": str(row["seed"])})

        rows = [{k: r.get(k) for k in (*arms.COLUMNS, *compare.measures([r])[1:])}
                for r in arms.run(stage.cfg, stage.split, during.FOLDER, key, report,
                                  workers, threads)]
        out = Outputs()
        out.add_csv(during.ARMS, rows)
        out.commit()


@main.command("compare", help=stage_help(STUDY.stage("during_compare")))
def compare_arms() -> None:
    with open_stage(STUDY.stage("during_compare")) as stage:
        cfg = stage.cfg
        rows = read_rows(during.ARMS)
        curve = compare.aggregate(rows)
        result = compare.summary(rows, curve, cfg.during.final_sparsity,
                                 train_steps(cfg.data, cfg.train))
        refs = {name: read_rows(path) if path.is_file() else []
                for name, path in (("imp", paths.IMP_CURVE), ("atinit", ATINIT_CURVE),
                                   ("finetune", paths.finetune_curve("weight")),
                                   ("l0", L0_CURVE))}
        total, d = train_steps(cfg.data, cfg.train), cfg.during
        first, last = schedule.bounds(total, d.start, d.end)
        schedules = {shape: schedule.curve(shape, d.final_sparsity, first, last, d.every, total)
                     for shape in d.shapes}
        out = Outputs()
        out.add_csv(during.CURVE, curve)
        out.add_json(during.METRICS, result)
        out.add_json(during.HEADLINE, compare.headline(result))
        out.add_bytes(during.FIGURE, compare.figure(curve, schedules, refs, result,
                                                    cfg.model.arch))
        seeds = (f"methods on seed(s) {list(cfg.during.method_seeds)}, the schedule on seed(s) "
                 f"{list(cfg.during.schedule_seeds)}")
        out.add_text(during.SECTION, compare.section(result, seeds))
        out.commit()
        stage.run.log_metrics(compare.headline(result))
        stage.run.log_artifacts(out.paths)


if __name__ == "__main__":
    main()
