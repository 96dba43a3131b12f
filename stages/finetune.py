"""DVC stages `finetune_weight` and `finetune_unit` (stages/retrain/dvc.yaml): prune the trained
net once per k and criterion, then train on with the mask held; test before and after.

METHOD is the granularity: `weight` or `unit`.
"""

import time

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import METHODS, grid_step, load_params
from prunelab.data.mnist import load_split
from prunelab.models.networks import accuracy, load_net, resolve_device, to_inputs, to_targets
from prunelab.pruning.criteria.registry import criterion
from prunelab.pruning.masks import check_support
from prunelab.pruning.sweep import criteria_context
from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_errors, stage_help
from prunelab.studies.retraining import (
    Split,
    finetune_rows,
    finetune_summary,
    finetune_sweep,
    finetune_timing,
    with_lr,
)
from prunelab.tracking.runs import track

DETAILS = ("Each k of prune.sparsities is pruned (prune.scope) with every criterion of "
           "finetune.weight_criteria / finetune.unit_criteria, then trained finetune.epochs "
           "more at finetune.lr (null: train.lr / 10) with its mask held; units the mask leaves "
           "dead are removed first (the same function, trained faster). Unit-pruned nets are "
           "timed compacted against the dense net (batch 100, one thread).")


@click.command(help=stage_help("finetune_weight", "finetune_unit", details=DETAILS))
@click.argument("method", type=click.Choice(METHODS))
def main(method: str) -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS)
        with track(f"finetune_{method}", cfg) as run:
            device = resolve_device(cfg.train.device)
            net = load_net(paths.model(cfg.train.seed), device)
            (xs, ys), (xt, yt) = (load_split(paths.DATA_DIR, split, limit) for split, limit in
                                  (("train", cfg.data.train_size), ("t10k", cfg.data.test_size)))
            data = Split(to_inputs(xs, device), to_targets(ys, device), to_inputs(xt, device),
                         to_targets(yt, device))
            chosen = [criterion(method, n) for n in cfg.finetune.criteria(method)]  # type: ignore[arg-type]
            for c in chosen:  # before any work: one line naming the criterion and the arch
                check_support(c, net, cfg.model.arch)
            context = criteria_context(net, chosen, cfg, paths.DATA_DIR, device)
            recipe = with_lr(cfg.train, cfg.finetune.learning_rate(cfg.train), cfg.finetune.epochs)
            memo: dict = {}
            start = time.perf_counter()
            curves = {c.name: finetune_sweep(net, method, cfg.prune.scope, cfg.prune.sparsities,
                                             data, recipe, c, context, memo,
                                             time_speed=method == "unit")
                      for c in chosen}
            first = next(iter(curves.values()))
            at_zero = next((p for p in first if p.one_shot.sparsity == 0.0), None)
            # without k = 0 in the grid: the trained net as it is, and no tuned-dense reference
            dense = at_zero.one_shot.accuracy if at_zero else round(
                accuracy(net, data.x_test, data.y_test), 4)
            tuned_dense = at_zero.accuracy if at_zero else None
            summary = {"dense_accuracy": dense, "dense_fine_tuned_accuracy": tuned_dense,
                       **{name: finetune_summary(points, dense, tuned_dense)
                          for name, points in curves.items()}}
            out = Outputs()
            out.add_csv(paths.finetune_curve(method), [
                row for name, points in curves.items()
                for row in finetune_rows(points, method, cfg.prune.scope, name)])
            out.add_json(paths.finetune_metrics(method), summary)
            out.add_json(paths.finetune_timing(method),
                         finetune_timing(curves, time.perf_counter() - start))
            out.commit()
            for name, points in curves.items():
                run.log_series({f"{name}.one_shot_accuracy": [
                    (grid_step(p.one_shot.sparsity), p.one_shot.accuracy) for p in points],
                    f"{name}.fine_tuned_accuracy": [
                    (grid_step(p.one_shot.sparsity), p.accuracy) for p in points]},
                    parent_prefix=f"finetune_{method}.")
            run.log_artifacts(out.paths)
    for name, points in curves.items():
        line = ", ".join(f"{p.one_shot.sparsity:g}: {p.one_shot.accuracy:.2f}->{p.accuracy:.2f}"
                         for p in points)
        click.echo(f"finetune_{method} {name}: {line}", err=True)


if __name__ == "__main__":
    main()
