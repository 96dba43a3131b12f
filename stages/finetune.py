"""DVC stages `finetune_weight` and `finetune_unit` (stages/retrain/dvc.yaml): prune the trained
net once per k and criterion, then train on with the mask held; test before and after.

METHOD is the granularity: `weight` or `unit`.
"""

import time

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import METHODS
from prunelab.pruning.sweep import checked_criteria, criteria_context
from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_help
from prunelab.studies.finetune import STUDY, headline
from prunelab.studies.opening import open_stage
from prunelab.studies.retraining import (
    finetune_results,
    finetune_rows,
    finetune_series,
    finetune_sweep,
    finetune_timing,
    with_lr,
)

DETAILS = ("Each k of prune.sparsities is pruned (prune.scope) with every criterion of "
           "finetune.weight_criteria / finetune.unit_criteria, then trained finetune.epochs "
           "more at finetune.lr (null: train.lr / 10) with its mask held; units the mask leaves "
           "dead are removed first (the same function, trained faster). Unit-pruned nets are "
           "timed compacted against the dense net (batch 100, one thread).")


@click.command(help=stage_help(*(STUDY.stage(f"finetune_{m}") for m in METHODS),
                               details=DETAILS))
@click.argument("method", type=click.Choice(METHODS))
def main(method: str) -> None:
    with open_stage(STUDY.stage(f"finetune_{method}")) as stage:
        cfg, net, data, run = stage.cfg, stage.net, stage.split, stage.run
        chosen = checked_criteria(method, cfg.finetune.criteria(method), net, cfg.model.arch)
        context = criteria_context(net, chosen, cfg, paths.DATA_DIR, stage.device)
        recipe = with_lr(cfg.train, cfg.finetune.learning_rate(cfg.train), cfg.finetune.epochs)
        memo: dict = {}
        start = time.perf_counter()
        curves = {c.name: finetune_sweep(net, method, cfg.prune.scope, cfg.prune.sparsities,
                                         data, recipe, c, context, memo,
                                         time_speed=method == "unit")
                  for c in chosen}
        summary = finetune_results(curves, net, data)
        out = Outputs()
        out.add_csv(paths.finetune_curve(method), [
            row for name, points in curves.items()
            for row in finetune_rows(points, method, cfg.prune.scope, name)])
        out.add_json(paths.finetune_metrics(method), summary)
        out.add_json(paths.finetune_headline(method), headline(summary, method))
        out.add_json(paths.finetune_timing(method),
                     finetune_timing(curves, time.perf_counter() - start))
        out.commit()
        run.log_series(finetune_series(curves), parent_prefix=f"finetune_{method}.")
        run.log_artifacts(out.paths)
    for name, points in curves.items():
        line = ", ".join(f"{p.one_shot.sparsity:g}: {p.one_shot.accuracy:.2f}->{p.accuracy:.2f}"
                         for p in points)
        click.echo(f"finetune_{method} {name}: {line}", err=True)


if __name__ == "__main__":
    main()
