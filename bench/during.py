"""The during-training study's costs: a training with its mask changing (gradual pruning, SET,
RigL, the static mask) and the dense run tracking its early-bird masks, each against the
study's own dense training loop, on the study's full MLP and real MNIST. Medians of --repeats
runs, interleaved, of one epoch on the first --images training images (the masks updated
every during.every steps and the early-bird masks drawn every during.earlybird_every steps, as
in the study; the schedule's start and end at its shares of the epoch), machine recorded; run
it on a quiet machine: `python bench/during.py` (writes bench/results/during.json).

Targets (issue: pruning while training): gradual pruning and SET <= 1.2x the dense training's
time (mask updates included), RigL <= 1.5x, early-bird's mask tracking <= 5% overhead.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
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
from prunelab.data.split import Split  # noqa: E402
from prunelab.models.networks import Network, build_model, to_inputs, to_targets  # noqa: E402
from prunelab.reporting.tables import fill_blocks  # noqa: E402
from prunelab.runtime.machine import describe  # noqa: E402
from prunelab.studies.during import sparse  # noqa: E402
from prunelab.studies.during.schedule import bounds  # noqa: E402
from prunelab.studies.registry import load_params  # noqa: E402
from prunelab.training.loop import train  # noqa: E402

TARGETS = {"gradual": 1.2, "set": 1.2, "static": 1.2, "rigl": 1.5}
TRACKING_TARGET = 0.05


def markdown(results: dict[str, Any]) -> str:
    """The during-bench block of docs/during.md."""
    m = results["machine"]
    dense = results["seconds"]["dense (the study's loop)"]
    lines = [f"Measured on {m['cores']} cores ({m['cpu']}), `python bench/during.py` (median of "
             f"{results['repeats']}, the study's MLP, one epoch of {results['images']:,} "
             f"images, masks updated every {results['every']} steps):", "",
             "| training | seconds | over dense | target |", "|---|---|---|---|"]
    for name, seconds in results["seconds"].items():
        method = name.split(" ")[0]
        target = TARGETS.get(method)
        ratio = seconds / dense
        verdict = "" if target is None else (f"≤ {target:g}x: "
                                             + ("met" if ratio <= target else "**missed**"))
        lines.append(f"| {name} | {seconds:.2f} | {ratio:.2f}x | {verdict} |")
    share = results["tracking_share"]
    lines.append(f"| early-bird mask tracking, its own time | "
                 f"{results['tracking_seconds']:.2f} | {100 * share:.1f}% of the dense run | "
                 f"≤ {100 * TRACKING_TARGET:g}%: "
                 + ("met" if share <= TRACKING_TARGET else "**missed**") + " |")
    return "\n".join(lines)


def publish(results: dict[str, Any], readme: Path | None) -> None:
    table = markdown(results)
    click.echo(table)
    if readme is not None:
        for page, text in fill_blocks(readme, {"during-bench": table}).items():
            page.write_text(text, encoding="utf-8")


@click.command()
@click.option("--repeats", default=3, show_default=True)
@click.option("--images", default=60_000, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "bench/results/during.json")
@click.option("--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also write the during-bench block (README.md or the docs page holding it).")
@click.option("--render", is_flag=True, help="Run nothing: the block from the saved --out.")
def main(repeats: int, images: int, out: Path, readme: Path | None, render: bool) -> None:
    if render:
        publish(json.loads(out.read_text()), readme)
        return
    cfg = load_params(ROOT / paths.PARAMS)
    d, cpu = cfg.during, torch.device("cpu")
    x, y = load_split(ROOT / paths.DATA_DIR, "train", images)
    xt, yt = load_split(ROOT / paths.DATA_DIR, "t10k", 1000)
    data = Split(to_inputs(x, cpu), to_targets(y, cpu), to_inputs(xt, cpu), to_targets(yt, cpu))
    recipe = dataclasses.replace(cfg.train, epochs=1, seed=0)
    every, eb_every = d.every, d.earlybird_every
    start, end = bounds(-(-images // recipe.batch_size), d.start, d.end)
    init = tuple(layer.with_weight(layer.weight.detach())
                 for layer in build_model(cfg.model, 0, cpu).layers())
    weights = [layer.weight for layer in init]

    def study_loop() -> float:
        model = Network(init)
        return train(model, data.x, data.y, data.x_test, data.y_test, recipe,
                     progress=False).seconds

    def dynamic(make: Callable[[], sparse.Method]) -> Callable[[], float]:
        return lambda: sparse.train_dynamic(init, data, recipe, make())[1].seconds

    runs = {"dense (the study's loop)": study_loop,
            "dense (this study's loop, no mask)": dynamic(sparse.Method),
            "gradual magnitude to 0.9": dynamic(lambda: sparse.Gradual(0.9, start, end, every,
                                                                       "decreasing")),
            "set at 0.9": dynamic(lambda: sparse.Regrow(0.9, every, end, d.drop_fraction,
                                                        "random", 0)),
            "rigl at 0.9": dynamic(lambda: sparse.Regrow(0.9, every, end, d.drop_fraction,
                                                         "gradient", 0)),
            "static random mask at 0.9": dynamic(lambda: sparse.Static(
                sparse.random_masks(weights, 0.9, 0)))}
    results: dict[str, Any] = {"machine": describe().as_dict(), "repeats": repeats,
                               "images": images, "every": every, "seconds": {}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    tracked: list[tuple[float, float]] = []
    for r in range(repeats):  # interleaved: a slow spell of the machine hits every variant
        for name, fn in runs.items():
            times[name].append(fn())
            click.echo(f"repeat {r + 1}: {name}: {times[name][-1]:.2f} s", err=True)
        bird = sparse.EarlyBird(d.earlybird_sparsity, eb_every)
        tracked.append(_tracked(bird, init, data, recipe))
    results["seconds"] = {name: round(statistics.median(v), 3) for name, v in times.items()}
    results["tracking_seconds"] = round(statistics.median(s for s, _ in tracked), 3)
    results["tracking_share"] = round(statistics.median(s / t for s, t in tracked), 4)
    results["seconds"]["early-bird tracking run (dense)"] = round(
        statistics.median(t for _, t in tracked), 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    publish(results, readme)


def _tracked(bird: sparse.EarlyBird, init: Any, data: Split, recipe: Any) -> tuple[float, float]:
    """The dense run with early-bird tracking: (tracking seconds, the run's seconds)."""
    total = sparse.train_dynamic(init, data, recipe, bird)[1].seconds
    return bird.seconds, total


if __name__ == "__main__":
    main()
