"""DVC stage `sensitivity`: prune one layer at a time (the others dense), test every copy, and
name the layer that breaks first (and the first among the hidden layers: the study keeps the
output layer dense)."""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import METHODS, load_params
from prunelab.data.mnist import load_split
from prunelab.models.networks import accuracy, load_net, resolve_device, to_inputs, to_targets
from prunelab.pruning.sweep import TOLERANCE_POINTS
from prunelab.reporting.figures import sensitivity_figure
from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_errors, stage_help
from prunelab.studies.sensitivity import (
    breaks_first,
    curve_rows,
    headline,
    layer_names,
    layer_sweep,
    metric_series,
    scalar_metrics,
    summary,
)
from prunelab.tracking.runs import track

DETAILS = ("The first seed's net (train.seeds[0]). For every k of prune.sparsities, one layer "
           "alone is pruned with the study's criterion (weight: the floor(k * n) smallest |w|, "
           "every layer including the output layer; unit: the floor(k * rows) rows or conv "
           "channels of smallest L2 norm, hidden layers only); prune.scope does not apply to "
           "one layer.")


@click.command(help=stage_help("sensitivity", details=DETAILS))
def main() -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS)
        with track("sensitivity", cfg) as run:
            device = resolve_device(cfg.train.device)
            net = load_net(paths.model(cfg.train.seed), device)
            images, labels = load_split(paths.DATA_DIR, "t10k", cfg.data.test_size)
            x, y = to_inputs(images, device), to_targets(labels, device)
            points = [p for m in METHODS for p in layer_sweep(net, m, cfg.prune.sparsities, x, y)]
            dense = round(accuracy(net, x, y), 4)
            metrics = summary(points, dense, output_layer=layer_names(net)[-1])
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
