"""The at-init study's costs: each method's mask on the study's full MLP at init (seed 0's
models/seeds/0/init.pt), GraSP's Hessian-gradient product alone, and a supermask's training
step against a masked dense training step. Medians of --repeats runs, machine recorded; run it
on a quiet machine: `python bench/atinit.py` (writes bench/results/atinit.json).

Targets (issue: pruning at initialisation): each score <= 2 s (SynFlow's 100 rounds included),
GraSP's Hessian-gradient product <= 5 s.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "stages"))
import _repo  # noqa: E402,F401

from prunelab import paths  # noqa: E402
from prunelab.data.mnist import load_split  # noqa: E402
from prunelab.models.networks import load_net, to_inputs, to_targets  # noqa: E402
from prunelab.reporting.tables import fill_blocks  # noqa: E402
from prunelab.runtime.machine import describe  # noqa: E402
from prunelab.studies.atinit import scores, supermask  # noqa: E402
from prunelab.studies.registry import load_params  # noqa: E402
from prunelab.studies.retraining import masked_train  # noqa: E402


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


SCORE_TARGET_S, HG_TARGET_S = 2.0, 5.0


def markdown(results: dict[str, Any]) -> str:
    """The atinit-bench block of docs/atinit.md."""
    m, steps = results["machine"], results["supermask_vs_masked_step"]
    lines = [f"Measured on {m['cores']} cores ({m['cpu']}), `python bench/atinit.py` (median of "
             f"{results['repeats']}, the study's MLP at init, {results['batches']} calibration "
             "batches):", "", "| what | seconds | target |", "|---|---|---|"]
    for name, seconds in results["mask_seconds"].items():
        ok = "met" if seconds <= SCORE_TARGET_S else "**missed**"
        lines.append(f"| `{name}` mask at 5.5% of weights | {seconds:.2f} | "
                     f"≤ {SCORE_TARGET_S:g}: {ok} |")
    hg = results["grasp_hg_seconds"]
    lines.append(f"| GraSP's Hessian-gradient product | {hg:.2f} | ≤ {HG_TARGET_S:g}: "
                 f"{'met' if hg <= HG_TARGET_S else '**missed**'} |")
    lines.append(f"| a supermask epoch against a masked epoch (1,000 images) | "
                 f"{steps['supermask_epoch_seconds']:.2f} against "
                 f"{steps['masked_epoch_seconds']:.2f} = {steps['ratio']:.1f}x | |")
    return "\n".join(lines)


def publish(results: dict[str, Any], readme: Path | None) -> None:
    table = markdown(results)
    click.echo(table)
    if readme is not None:
        for page, text in fill_blocks(readme, {"atinit-bench": table}).items():
            page.write_text(text, encoding="utf-8")


@click.command()
@click.option("--repeats", default=3, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "bench/results/atinit.json")
@click.option("--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also write the atinit-bench block (README.md or the docs page holding it).")
@click.option("--render", is_flag=True, help="Run nothing: the block from the saved --out.")
def main(repeats: int, out: Path, readme: Path | None, render: bool) -> None:
    if render:
        publish(json.loads(out.read_text()), readme)
        return
    cfg = load_params(ROOT / paths.PARAMS)
    cpu = torch.device("cpu")
    init = load_net(ROOT / paths.init_model(cfg.first_seed), cpu)
    images, labels = load_split(ROOT / paths.DATA_DIR, "train", cfg.data.train_size)
    x, y = to_inputs(images[:1000], cpu), to_targets(labels[:1000], cpu)
    batches = list(zip(x.split(cfg.train.batch_size), y.split(cfg.train.batch_size), strict=True))
    counts = scores.imp_counts(init, 13, cfg.imp.rate, cfg.imp.output_rate)  # 5.5% left
    results: dict[str, Any] = {"machine": describe().as_dict(), "repeats": repeats,
                               "batches": len(batches), "mask_seconds": {}}
    for name, method in scores.METHODS.items():
        results["mask_seconds"][name] = median_seconds(
            lambda m=method: scores.method_masks(m, init, counts, batches, 0), repeats)
        click.echo(f"{name}: {results['mask_seconds'][name]} s", err=True)
    results["grasp_hg_seconds"] = median_seconds(
        lambda: scores.grasp_scores(init, batches, 0), repeats)
    results["supermask_vs_masked_step"] = _steps(init, counts, x, y, cfg, repeats)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    publish(results, readme)


def _steps(init: Any, counts: Any, x: torch.Tensor, y: torch.Tensor, cfg: Any,
           repeats: int) -> dict[str, float]:
    """One epoch over the 1,000 images (10 steps): score training against masked training."""
    from prunelab.data.split import Split

    split = Split(x, y, x[:100], y[:100])
    masks = scores.method_masks(scores.METHODS["random"], init, counts, [], 0)
    one = type(cfg.train)(epochs=1, lr=cfg.train.lr, batch_size=cfg.train.batch_size, seed=0)
    masked = median_seconds(lambda: masked_train(init, masks, split, one), repeats)
    sm = median_seconds(lambda: supermask.train_supermask(init, 0.3, split, one, 0.001, 1, 0),
                        repeats)
    return {"masked_epoch_seconds": masked, "supermask_epoch_seconds": sm,
            "ratio": round(sm / masked, 2)}


if __name__ == "__main__":
    main()
