"""DVC stage `speed`: what each pruned model buys, realised and measured on the CPU."""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.pruning.families import speed_rows
from prunelab.pruning.savings import THREADS, speed_series, summarise
from prunelab.reporting.figures import tradeoff_figure
from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_help
from prunelab.studies.opening import open_stage
from prunelab.studies.speed import STUDY

DETAILS = ("Unit-pruned nets are compacted, weight-pruned nets store each layer dense or CSR "
           "(whichever is faster; a ResNet's or LSTM's weight-pruned net is stored dense); the "
           "study's criteria in both scopes and the reconstructing "
           "criteria (obs, l2_refit) in layer scope, every sparsity, each checked against its "
           "pruned twin. Timings vary run to run, so they live here and not in the "
           "deterministic pruning stages.")


@click.command(help=stage_help(STUDY.stage("speed"), details=DETAILS))
def main() -> None:
    with open_stage(STUDY.stage("speed"), device="cpu") as stage:  # timed on the CPU
        cfg, net, (x, y) = stage.cfg, stage.model, stage.test
        rows, dense = speed_rows(net, cfg, x, y, paths.DATA_DIR, stage.device)
        out = Outputs()
        out.add_csv(paths.SPEED_CURVE, rows)
        out.add_json(paths.SPEED_METRICS, summarise(rows, dense))
        out.add_bytes(paths.TRADEOFF_FIGURE, tradeoff_figure(rows))
        out.commit()
        stage.run.log_series(speed_series(rows), parent_prefix="speed.")
        stage.run.log_artifacts(out.paths)
    click.echo(f"speed: {len(rows)} models realised and timed ({THREADS} thread)", err=True)


if __name__ == "__main__":
    main()
