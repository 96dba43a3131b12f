"""DVC stage `finetune_plot` (stages/retrain/dvc.yaml): plots/finetune.png from both
fine-tuning curves."""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import METHODS
from prunelab.reporting.figures import finetune_figure
from prunelab.runtime.files import read_rows, write_bytes
from prunelab.runtime.stage import stage_help
from prunelab.studies.finetune import STUDY
from prunelab.tracking.stage import open_run


@click.command(help=stage_help(STUDY.stage("finetune_plot")))
def main() -> None:
    with open_run(STUDY.stage("finetune_plot")) as (cfg, run):
        curves = {m: read_rows(paths.finetune_curve(m)) for m in METHODS}
        write_bytes(paths.FINETUNE_FIGURE, finetune_figure(
            curves, cfg.finetune.epochs, cfg.finetune.learning_rate(cfg.train), cfg.model.arch))
        run.log_artifacts([paths.FINETUNE_FIGURE])
    click.echo(f"finetune_plot: {paths.FINETUNE_FIGURE}", err=True)


if __name__ == "__main__":
    main()
