"""The notebook's study: prune each seed's trained net over the sparsity grid with every
criterion (no retraining), then the mean curves with 95% bands across the seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prunelab import paths
from prunelab.config import STUDY_CRITERIA
from prunelab.runtime.declare import Plot, Stage, Study

ITEM = paths.ITEM
# What decides whether the notebook's own numbers apply (its set-up only): the figure and the
# aggregate read these too.
NOTEBOOK_PARAMS = ("model.arch", "model.mlp.hidden", "train.epochs", "train.lr",
                   "train.batch_size", "prune.scope", "data.train_size", "data.test_size")


def prune_stage(method: str) -> Stage:
    """prune_weight / prune_unit: one granularity's sweep of one seed's net."""
    return Stage(
        f"prune_{method}", f"{method} pruning of one seed's net over the sparsity grid, no "
        "retraining", "stages/prune.py", args=(method, ITEM),
        params=("data.train_size", "data.test_size", "train.device", "prune.sparsities",
                "prune.scope", f"prune.{method}_criteria", "prune.calibration_size"),
        reads=(paths.model(ITEM), paths.train_run(ITEM), paths.DATA_DIR),
        outs=(paths.prune_curve(method, ITEM),), details=(paths.prune_metrics(method, ITEM),),
        per_seed=True)


AGGREGATES = {m: paths.aggregate_curve(m) for m in ("weight", "unit")}

STUDY = Study(
    name="oneshot",
    description="every criterion over the sparsity grid, no retraining; mean and 95% CI",
    figure=paths.FIGURE,
    report_section="How much can be deleted without retraining",
    stages=(
        prune_stage("weight"),
        prune_stage("unit"),
        Stage("aggregate", "mean, std and 95% CI across the seeds, per criterion and k",
              "stages/aggregate.py", params=("train.seeds", *NOTEBOOK_PARAMS),
              reads=(paths.SEED_CURVES, paths.SEED_METRICS),
              outs=(*AGGREGATES.values(), paths.STUDY_CURVE),
              metrics=(paths.HEADLINE,), details=(paths.AGGREGATE_METRICS,),
              note="It reads the seed folders listed in train.seeds; its deps are the folders,\n"
                   "so any seed's new curve reruns it."),
        Stage("plot", "the study's figure: mean curves with 95% bands, the notebook's points",
              "stages/plot.py", params=NOTEBOOK_PARAMS, reads=tuple(AGGREGATES.values()),
              figures=(paths.FIGURE,)),
    ),
    plots=(
        Plot("accuracy_vs_sparsity", "accuracy_curves",
             "The study's criteria (magnitude, l2): accuracy against sparsity, seeds' mean",
             "sparsity", {str(paths.STUDY_CURVE): "accuracy"}, "sparsity k",
             "test accuracy (%)", in_git=True),
        *(Plot(f"{m}_criteria", "accuracy_curves",
               f"Every {m} criterion: test accuracy against sparsity, mean over train.seeds",
               "sparsity", {str(p): "accuracy"}, "sparsity k", "test accuracy (%)", in_git=True)
          for m, p in AGGREGATES.items()),
        Plot("accuracy_vs_effective_sparsity", "accuracy_curves",
             "Every criterion: test accuracy against effective sparsity",
             {str(p): "effective_sparsity" for p in AGGREGATES.values()},
             {str(p): "accuracy" for p in AGGREGATES.values()}, "effective sparsity",
             "test accuracy (%)"),
    ),
)


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The `dvc exp show` columns, from the aggregate statistics: how many seeds, the dense
    accuracy and the study's criteria's highest k within 1 point of dense, means over the seeds
    (every criterion's, with spread and intervals, stays in metrics/aggregate.json)."""
    def mean(method: str, key: str) -> Any:  # None when the study's criterion did not run
        return metrics.get(method, {}).get(STUDY_CRITERIA[method], {}).get(key, {}).get("mean")

    dense = next((s["dense_accuracy"]["mean"] for m in ("weight", "unit")
                  for s in metrics.get(m, {}).values() if "dense_accuracy" in s), None)
    return {"seeds": metrics.get("n"), "dense_accuracy": dense,
            **{f"{m}.{STUDY_CRITERIA[m]}.k_within_1pt": mean(m, "max_sparsity_within_1pt")
               for m in ("weight", "unit")}}


def study_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The aggregate rows of the study's own criteria (magnitude, l2): the default plot."""
    return [r for r in rows if r.get("criterion") == STUDY_CRITERIA.get(str(r.get("method")))]
