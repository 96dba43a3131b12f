"""DVC stage `aggregate`: every seed's curves and headlines as mean, std and 95% CI, and where
the study's notebook falls (only when this run is the notebook's set-up)."""

from functools import partial
from pathlib import Path

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import METHODS
from prunelab.errors import DataError
from prunelab.reporting.aggregate import (
    aggregate_metrics,
    aggregate_rows,
    curve_series,
    flat_metrics,
    headline_stats,
    seed_metrics,
    study_coverage,
    summary_line,
)
from prunelab.reporting.notebook import notebook_applies
from prunelab.runtime.files import Outputs, read_json, read_rows
from prunelab.runtime.stage import stage_help
from prunelab.studies.oneshot import STUDY, headline, study_rows
from prunelab.tracking.stage import open_run

DETAILS = ("Reads only the seeds listed in train.seeds (folders of seeds since removed from the "
           "list are ignored); every seed must have been pruned on the same grid and criteria.")


def seed_file(path: Path, seed: int) -> Path:
    """``path``, which must exist: else one line naming the seed and the fix."""
    if not path.is_file():
        raise DataError(f"{path}: missing: seed {seed} (in train.seeds) has not been pruned; "
                        "run: dvc repro")
    return path


def train_run_tag(seed: int) -> dict[str, str]:
    """The MLflow run that trained ``seed``'s net, as a tag (none when tracking was off)."""
    link = paths.train_run(seed)
    run_id = read_json(link).get("mlflow_run_id") if link.is_file() else None
    return {"train_run_id": str(run_id)} if run_id else {}


@click.command(help=stage_help(STUDY.stage("aggregate"), details=DETAILS))
def main() -> None:
    with open_run(STUDY.stage("aggregate")) as (cfg, run):
        seeds = cfg.train.seeds
        curves = {m: {s: read_rows(seed_file(paths.prune_curve(m, s), s)) for s in seeds}
                  for m in METHODS}
        summaries = {m: {s: read_json(seed_file(paths.prune_metrics(m, s), s)) for s in seeds}
                     for m in METHODS}
        rows = [r for m in METHODS for r in aggregate_rows(curves[m],
                                                          partial(paths.prune_curve, m))]
        headlines = {m: headline_stats(summaries[m], curves[m], partial(paths.prune_metrics, m))
                     for m in METHODS}
        coverage = study_coverage(rows, notebook_applies(cfg))[1]
        metrics = aggregate_metrics(seeds, headlines, coverage)
        out = Outputs()
        for m in METHODS:
            out.add_csv(paths.aggregate_curve(m), [r for r in rows if r["method"] == m])
        out.add_csv(paths.STUDY_CURVE, study_rows(rows))
        out.add_json(paths.AGGREGATE_METRICS, metrics)
        top = headline(metrics)
        out.add_json(paths.HEADLINE, top)
        out.commit()
        # the stage's run: every statistic and band; the pipeline's run: the headline numbers
        # and each criterion's mean curve (its chart view stays readable, the study's cards first)
        series = curve_series(rows)
        run.log_metrics(flat_metrics(metrics))
        run.log_series(series)
        run.log_metrics(flat_metrics(top), parent_prefix="aggregate.",
                        on_stage=False)
        run.log_series({k: v for k, v in series.items() if k.endswith(".accuracy")},
                       parent_prefix="aggregate.", on_stage=False)
        for s in seeds:  # one child run per seed: its own headline numbers
            run.log_child(f"seed {s}", seed_metrics({m: summaries[m][s] for m in METHODS},
                                                    {m: curves[m][s] for m in METHODS}),
                          tags={"seed": str(s), **train_run_tag(s)})
        run.log_artifacts(out.paths)
    click.echo(f"aggregate: {summary_line(metrics)}", err=True)


if __name__ == "__main__":
    main()
