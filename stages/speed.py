"""DVC stage `speed`: what each pruned model buys, realised and measured on the CPU."""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import METHODS, SCOPES, Params
from prunelab.models.networks import dense_accuracy
from prunelab.pruning.criteria.base import Criterion
from prunelab.pruning.criteria.registry import criterion
from prunelab.pruning.masks import DEFAULT_CRITERIA, check_support
from prunelab.pruning.savings import (
    REPEATS,
    THREADS,
    check_equivalence,
    measure,
    speed_series,
    summarise,
)
from prunelab.pruning.sweep import criteria_context
from prunelab.reporting.figures import tradeoff_figure
from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_help
from prunelab.studies.opening import open_stage
from prunelab.studies.speed import STUDY

DETAILS = ("Unit-pruned nets are compacted, weight-pruned nets store each layer dense or CSR "
           "(whichever is faster); the study's criteria in both scopes and the reconstructing "
           "criteria (obs, l2_refit) in layer scope, every sparsity, each checked against its "
           "pruned twin. Timings vary run to run, so they live here and not in the "
           "deterministic pruning stages.")


def timed_sets(cfg: Params) -> list[tuple[str, Criterion, str]]:
    """(granularity, criterion, scope) to realise and time: the study's criteria in both scopes
    (a mask's speed depends on its pattern, not on how it was ranked), and every listed
    criterion that rewrites the weights it keeps, in layer scope."""
    sets = [(m, DEFAULT_CRITERIA[m], s) for m in METHODS for s in SCOPES]
    return sets + [(m, c, "layer") for m in METHODS
                   for c in (criterion(m, n) for n in cfg.prune.criteria(m))  # type: ignore[arg-type]
                   if c.reconstruct is not None]


@click.command(help=stage_help(STUDY.stage("speed"), details=DETAILS))
def main() -> None:
    with open_stage(STUDY.stage("speed"), device="cpu") as stage:  # timed on the CPU
        cfg, net, (x, y) = stage.cfg, stage.net, stage.test
        sets = timed_sets(cfg)
        for _, c, _ in sets:  # before any work: one line naming the criterion and the arch
            check_support(c, net, cfg.model.arch)
        context = criteria_context(net, [c for _, c, _ in sets], cfg, paths.DATA_DIR,
                                   stage.device)
        rows = [row for m, c, s in sets for row in measure(
            net, m, s, cfg.prune.sparsities, x, y, REPEATS, THREADS, c, context)]
        check_equivalence(rows)
        out = Outputs()
        out.add_csv(paths.SPEED_CURVE, rows)
        out.add_json(paths.SPEED_METRICS, summarise(rows, dense_accuracy(net, x, y)))
        out.add_bytes(paths.TRADEOFF_FIGURE, tradeoff_figure(rows))
        out.commit()
        stage.run.log_series(speed_series(rows), parent_prefix="speed.")
        stage.run.log_artifacts(out.paths)
    click.echo(f"speed: {len(rows)} models realised and timed ({THREADS} thread)", err=True)


if __name__ == "__main__":
    main()
