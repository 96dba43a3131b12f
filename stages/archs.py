"""DVC stage `archs` (stages/retrain/dvc.yaml): the MLP, LeNet-5, a ResNet and an LSTM on MNIST
and MNIST-1D, one training per seed of archs.seeds, each pruned over the grid, compacted and
timed; the table, figure and report section across them (docs/architectures.md)."""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_help
from prunelab.studies.archs import compare, run
from prunelab.studies.archs import study as archs
from prunelab.studies.opening import open_stage

STUDY = archs.STUDY


@click.command(help=stage_help(STUDY.stage("archs")))
def main() -> None:
    with open_stage(STUDY.stage("archs")) as stage:
        curve, table = [], []
        for dataset, arch, rows, row in run.study(stage, archs.DATA):
            name = f"{dataset} {arch} seed {row['seed']}"
            click.echo(f"archs: {name}: dense {row['dense_accuracy']}% in {row['train_seconds']}"
                       f" s; compacted {row['compact_accuracy']}% ({row['speedup_b100']}x)",
                       err=True)
            stage.run.log_child(name, {k: v for k, v in row.items() if isinstance(v, float)},
                                tags={"widths": row["compact_widths"]})
            curve, table = curve + rows, [*table, row]
        out = Outputs()
        out.add_csv(archs.CURVES, curve)
        out.add_csv(archs.TABLE, table)
        out.add_json(archs.METRICS, {"rows": table, "aggregate": compare.aggregate(table)})
        out.add_text(archs.SECTION, compare.section(table, "../plots/archs.png"))
        out.add_bytes(archs.FIGURE, compare.figure(curve))
        out.commit()
        stage.run.log_artifacts(out.paths)


if __name__ == "__main__":
    main()
