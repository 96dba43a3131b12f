"""DVC stage `l0` (stages/retrain/dvc.yaml): a unit-level subnetwork from the objective --
hard-concrete gates on the hidden units, trained with the weights under an L0 penalty, one
training per l0.lambdas from the first seed's init; each beside l2_refit pruning the first
seed's trained net to the widths the gates found, both compacted and timed.
"""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.models.networks import build_model, dense_accuracy
from prunelab.pruning.criteria.reconstruct import L2_REFIT
from prunelab.pruning.sweep import criteria_context
from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_help
from prunelab.studies.l0 import gates
from prunelab.studies.l0 import study as l0
from prunelab.studies.opening import open_stage

STUDY = l0.STUDY


@click.command(help=stage_help(STUDY.stage("l0")))
def main() -> None:
    kept = f"finished lambdas stay in {l0.FOLDER}/ and the next run resumes"
    with open_stage(STUDY.stage("l0"), kept=kept) as stage:
        cfg, data, dense = stage.cfg, stage.split, stage.net
        init = tuple(layer.with_weight(layer.weight.detach()) for layer in
                     build_model(cfg.model, cfg.train.seed, stage.device).layers())
        context = criteria_context(dense, [L2_REFIT], cfg, paths.DATA_DIR, stage.device)
        store = gates.Store(l0.FOLDER, gates.fingerprint(cfg, stage.device.type))
        rows = []
        for row, resumed in gates.sweep(init, dense, data, cfg.train, cfg.l0.lambdas, context,
                                        cfg.train.seed, store):
            click.echo(f"l0: lambda {row['lambda']:g}: widths {row['widths']}, "
                       f"{row['accuracy']}% ({row['speedup_b100']}x); l2_refit at those widths "
                       f"{row['l2_refit_accuracy']}% ({row['l2_refit_speedup_b100']}x)"
                       + (" (resumed)" if resumed else ""), err=True)
            stage.run.log_child(f"lambda {row['lambda']:g}",
                                {k: v for k, v in row.items() if k not in ("widths", "history")},
                                {"expected_share": row["history"]}, {"widths": row["widths"]})
            rows.append({k: v for k, v in row.items() if k != "history"})
        accuracy = dense_accuracy(dense, data.x_test, data.y_test)
        out = Outputs()
        out.add_csv(l0.CURVE, rows)
        out.add_json(l0.METRICS, {"dense_accuracy": accuracy, "lambdas": rows})
        out.add_text(l0.SECTION, l0.section(rows, accuracy))
        out.commit()
        stage.run.log_artifacts(out.paths)


if __name__ == "__main__":
    main()
