"""DVC stage `sensitivity`: prune one layer at a time (the others dense), test every copy, and
name the layer that breaks first (and the first among the hidden layers: the study keeps the
output layer dense)."""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import METHODS
from prunelab.models.networks import dense_accuracy
from prunelab.pruning.sweep import TOLERANCE_POINTS
from prunelab.reporting.figures import sensitivity_figure
from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_help
from prunelab.studies.opening import open_stage
from prunelab.studies.sensitivity import (
    STUDY,
    breaks_first,
    curve_rows,
    headline,
    metric_series,
    scalar_metrics,
    summary,
    sweep_layers,
)

DETAILS = ("The first seed's net (train.seeds[0]). For every k of prune.sparsities, one layer "
           "alone is pruned with the study's criterion (weight: the floor(k * n) smallest |w|, "
           "every layer including the output layer; unit: the floor(k * rows) rows or conv "
           "channels of smallest L2 norm, hidden layers only; a ResNet's or LSTM's parts and "
           "coupling groups the same way); prune.scope does not apply to one layer.")


@click.command(help=stage_help(STUDY.stage("sensitivity"), details=DETAILS))
def main() -> None:
    with open_stage(STUDY.stage("sensitivity")) as stage:
        cfg, net, (x, y), run = stage.cfg, stage.model, stage.test, stage.run
        points, output_layer = sweep_layers(net, cfg.prune.sparsities, x, y)
        dense = dense_accuracy(net, x, y)
        metrics = summary(points, dense, output_layer=output_layer)
        rows = curve_rows(points)
        out = Outputs()
        out.add_csv(paths.SENSITIVITY_CURVE, rows)
        out.add_json(paths.SENSITIVITY_METRICS, metrics)
        out.add_bytes(paths.SENSITIVITY_FIGURE, sensitivity_figure(rows, dense,
                                                                   TOLERANCE_POINTS))
        out.commit()
        run.log_series(metric_series(points), parent_prefix="sensitivity.")
        run.log_metrics(scalar_metrics(metrics), parent_prefix="sensitivity.")
        run.set_tags({f"sensitivity.{m}.{key}": name
                      for key in ("breaks_first", "breaks_first_hidden")
                      for m, name in breaks_first(metrics, key).items()}, on_parent=True)
        run.log_artifacts(out.paths)
    for method in METHODS:
        click.echo(headline(metrics, method), err=True)


if __name__ == "__main__":
    main()
