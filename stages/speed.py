"""DVC stage `speed`: what each pruned model buys, realised and measured on the CPU.

Unit-pruned nets are compacted, weight-pruned nets store each layer dense or CSR (whichever
is faster); both scopes, every sparsity. Timings vary run to run, so they live here and not in
the deterministic pruning stages.
"""

import click
import torch

from prunelab import paths
from prunelab.cli import stage_errors
from prunelab.config import METHODS, SCOPES, load_params
from prunelab.data import load_split
from prunelab.files import write_csv, write_json
from prunelab.model import accuracy, load_weights, to_inputs, to_targets
from prunelab.plot import draw_tradeoff
from prunelab.savings import measure, summarise
from prunelab.tracking import track

CPU = torch.device("cpu")
THREADS = 1  # per-core latency: steady on a busy machine, and what a serving worker gets
REPEATS = 15


@click.command(help=__doc__)
def main() -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS)
        with track("speed", cfg) as run:
            weights = load_weights(paths.MODEL, CPU)
            images, labels = load_split(paths.DATA_DIR, "t10k", cfg.data.test_size)
            x, y = to_inputs(images, CPU), to_targets(labels, CPU)
            rows = [row for m in METHODS for s in SCOPES
                    for row in measure(weights, m, s, cfg.prune.sparsities, x, y, REPEATS, THREADS)]
            summary = {"threads": THREADS, "repeats": REPEATS,
                       **summarise(rows, accuracy(weights, x, y))}
            write_csv(paths.SPEED_CURVE, rows)
            write_json(paths.SPEED_METRICS, summary)
            draw_tradeoff(rows, paths.TRADEOFF_FIGURE)
            for m in METHODS:
                for s in SCOPES:
                    mine = [r for r in rows if r["method"] == m and r["scope"] == s]
                    run.log_series({f"{m}_{s}.{n}": [(round(float(r["sparsity"]) * 1000),
                                                      float(r[n])) for r in mine]
                                    for n in ("speedup_b100", "speedup_b1", "bytes_compressed",
                                              "flops_per_sample")}, parent_prefix="speed.")
            run.log_artifacts([paths.SPEED_CURVE, paths.SPEED_METRICS, paths.TRADEOFF_FIGURE])
    click.echo(f"speed: {len(rows)} models realised and timed ({THREADS} thread)", err=True)


if __name__ == "__main__":
    main()
