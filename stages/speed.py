"""DVC stage `speed`: what each pruned model buys, realised and measured on the CPU."""

import click
import torch

from prunelab import paths
from prunelab.cli import stage_errors, stage_help
from prunelab.config import METHODS, SCOPES, grid_step, load_params
from prunelab.data import load_split
from prunelab.files import Outputs
from prunelab.model import accuracy, load_weights, to_inputs, to_targets
from prunelab.plot import tradeoff_figure
from prunelab.savings import REPEATS, THREADS, check_equivalence, measure, summarise
from prunelab.tracking import track

CPU = torch.device("cpu")
DETAILS = ("Unit-pruned nets are compacted, weight-pruned nets store each layer dense or CSR "
           "(whichever is faster); both scopes, every sparsity. Timings vary run to run, so they "
           "live here and not in the deterministic pruning stages.")
SERIES = ("speedup_b100", "speedup_b1", "bytes_compressed", "flops_per_sample")


@click.command(help=stage_help("speed", details=DETAILS))
def main() -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS)
        with track("speed", cfg) as run:
            weights = load_weights(paths.MODEL, CPU)
            images, labels = load_split(paths.DATA_DIR, "t10k", cfg.data.test_size)
            x, y = to_inputs(images, CPU), to_targets(labels, CPU)
            rows = [row for m in METHODS for s in SCOPES
                    for row in measure(weights, m, s, cfg.prune.sparsities, x, y, REPEATS, THREADS)]
            check_equivalence(rows)
            out = Outputs()
            out.add_csv(paths.SPEED_CURVE, rows)
            out.add_json(paths.SPEED_METRICS, summarise(rows, accuracy(weights, x, y)))
            out.add_bytes(paths.TRADEOFF_FIGURE, tradeoff_figure(rows))
            out.commit()
            for m in METHODS:
                for s in SCOPES:
                    mine = [r for r in rows if r["method"] == m and r["scope"] == s]
                    run.log_series({f"{m}_{s}.{n}": [(grid_step(float(r["sparsity"])), float(r[n]))
                                                     for r in mine] for n in SERIES},
                                   parent_prefix="speed.")
            run.log_artifacts(out.paths)
    click.echo(f"speed: {len(rows)} models realised and timed ({THREADS} thread)", err=True)


if __name__ == "__main__":
    main()
