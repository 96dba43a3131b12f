"""The architectures study's costs and recipe checks, on the machine it runs on.

`python bench/archs.py` times training of each architecture (params.yaml's widths and learning
rates) on real MNIST: --steps optimizer steps, median of --repeats runs, interleaved, as a
ratio to the MLP's; then the whole four-architecture MNIST-1D training at archs.mnist1d_epochs
(one run). Target (issue: residual and recurrent nets): per arch on MNIST <= 4x the MLP's; the
four on MNIST-1D <= 5 min.

`--tune` instead reruns the recipe choices on validation splits carved from the TRAINING sets
(never the test sets): the ResNet's and the LSTM's learning rate (the study's 0.001 against
0.003) and schedule (constant, cosine, one-cycle; MNIST, 3 epochs, validated on the last 6,000
training images), the MNIST-1D epochs (constant lr, continued) and params.yaml's schedule on
MNIST-1D (validated on the last 400 training signals). Writes bench/results/archs[_tune].json; with
--readme README.md, the `archs-bench` (or `archs-tune`) block of docs/architectures.md.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import click
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "stages"))
import _repo  # noqa: E402,F401

from prunelab import paths  # noqa: E402
from prunelab.data import mnist1d  # noqa: E402
from prunelab.data.mnist import load_split  # noqa: E402
from prunelab.models.archs import build  # noqa: E402
from prunelab.models.archs.base import Input  # noqa: E402
from prunelab.models.networks import to_inputs, to_targets  # noqa: E402
from prunelab.reporting.tables import fill_blocks  # noqa: E402
from prunelab.reporting.verdicts import paired  # noqa: E402
from prunelab.runtime.machine import describe  # noqa: E402
from prunelab.studies.archs import study as archs  # noqa: E402
from prunelab.studies.archs.run import Data, accuracy, fit  # noqa: E402
from prunelab.studies.registry import load_params  # noqa: E402

IMAGE, SIGNAL = Input((1, 28, 28)), Input((1, mnist1d.LENGTH))


def mnist(validation: int = 0) -> Data:
    """MNIST on the CPU; with ``validation``, the last that many TRAINING images as the
    held-out set (the test set is never opened)."""
    x, y = load_split(paths.DATA_DIR, "train")
    x, y = to_inputs(x, "cpu"), to_targets(y, "cpu")
    if validation:
        return Data(x[:-validation], y[:-validation], x[-validation:], y[-validation:])
    xt, yt = load_split(paths.DATA_DIR, "t10k")
    return Data(x, y, to_inputs(xt, "cpu"), to_targets(yt, "cpu"))


def signals(validation: int = 0) -> Data:
    a = {k: torch.from_numpy(v) for k, v in mnist1d.load(archs.DATA).items()}
    if validation:
        x, y = a["x_train"], a["y_train"]
        return Data(x[:-validation], y[:-validation], x[-validation:], y[-validation:])
    return Data(a["x_train"], a["y_train"], a["x_test"], a["y_test"])


def timing(steps: int, repeats: int) -> dict[str, Any]:
    cfg = load_params()
    widths, data = archs.widths(cfg), mnist()
    batch = cfg.train.batch_size
    sub = Data(data.x[: steps * batch], data.y[: steps * batch], data.x_test, data.y_test)
    seconds: dict[str, list[float]] = {a: [] for a in cfg.archs.archs}
    for r in range(repeats):  # interleaved: drifts of the machine hit every arch alike
        for arch in cfg.archs.archs:
            net = build(arch, IMAGE, widths, r)
            seconds[arch].append(fit(net, sub, 1, cfg.archs.lr(arch, cfg.train.lr), batch, r,
                                     cfg.archs.schedule_of(arch), cfg.archs.shift("mnist", arch)))
    med = {a: statistics.median(s) for a, s in seconds.items()}
    start = time.perf_counter()
    d1 = signals()
    per_arch = {}
    for arch in cfg.archs.archs:
        net = build(arch, SIGNAL, widths, 0)
        per_arch[arch] = fit(net, d1, cfg.archs.mnist1d_epochs,
                             cfg.archs.lr(arch, cfg.train.lr), batch, 0,
                             cfg.archs.schedule_of(arch))
    return {"machine": describe().as_dict(), "steps": steps, "repeats": repeats,
            "mnist_seconds": med,
            "mnist_epochs": {a: cfg.archs.epochs("mnist", a) for a in cfg.archs.archs},
            "mnist1d_seconds": per_arch, "mnist1d_epochs": cfg.archs.mnist1d_epochs,
            "mnist1d_wall": time.perf_counter() - start}


def tune() -> dict[str, Any]:
    cfg = load_params()
    widths, batch, rows = archs.widths(cfg), cfg.train.batch_size, []
    val = mnist(validation=6000)
    deeper = dataclasses.replace(widths, resnet_blocks=widths.resnet_blocks + 1)
    runs = [(a, widths, lr, "constant") for a in ("cnn", "resnet", "lstm") for lr in (0.001, 0.003)
            ] + [("resnet", deeper, 0.003, "constant")] + [
        (a, widths, lr, sched) for a in ("resnet", "lstm")
        for lr, sched in ((0.003, "cosine"), (0.003, "onecycle"), (0.006, "onecycle"))]
    for arch, w, lr, sched in runs:
        net = build(arch, IMAGE, w, 0)
        fit(net, val, 3, lr, batch, 0, sched)
        rows.append({"dataset": "mnist", "arch": arch, "blocks": w.resnet_blocks if arch ==
                     "resnet" else "", "lr": lr, "schedule": sched, "epochs": 3,
                     "validation_accuracy": accuracy(net, val.x_test, val.y_test)})
    val1 = signals(validation=400)
    for arch in cfg.archs.archs:
        lr, net, done = cfg.archs.lr(arch, cfg.train.lr), build(arch, SIGNAL, widths, 0), 0
        for epochs in (30, 60, 100, 150):
            fit(net, val1, epochs - done, lr, batch, done)  # continues; each leg reshuffled
            done = epochs
            rows.append({"dataset": "mnist1d", "arch": arch, "blocks": widths.resnet_blocks if
                         arch == "resnet" else "", "lr": lr, "schedule": "constant",
                         "epochs": epochs,
                         "validation_accuracy": accuracy(net, val1.x_test, val1.y_test)})
    for arch, lr, sched in [(a, lr, s) for a in ("resnet", "lstm") for lr, s in (
            (0.003, "constant"), (cfg.archs.lr(a, cfg.train.lr), cfg.archs.schedule_of(a)))]:
        net = build(arch, SIGNAL, widths, 0)  # fresh, at params.yaml's epochs
        fit(net, val1, cfg.archs.mnist1d_epochs, lr, batch, 0, sched)
        rows.append({"dataset": "mnist1d", "arch": arch, "blocks": widths.resnet_blocks if
                     arch == "resnet" else "", "lr": lr, "schedule": sched,
                     "epochs": cfg.archs.mnist1d_epochs,
                     "validation_accuracy": accuracy(net, val1.x_test, val1.y_test)})
    return {"machine": describe().as_dict(), "rows": rows}


VALIDATION = 6000  # MNIST training images held out for the ResNet's options
# The ResNet's options against its MNIST target (99.3% dense): a label and what differs from
# params.yaml's recipe (widths, blocks per stage, lr, epochs, shift pixels), one-cycle schedule;
# the first is the recipe itself. An earlier screen (commit 5322bb5, same protocol) tried wider
# stages (24-48-96, 32-64-128) and 4 epochs: each about +0.1 point, intervals across zero.
RESNET_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("the recipe", {}),
    ("3 epochs, no shifts (the earlier recipe)", {"epochs": 3, "shift": 0}),
    ("5 epochs, no shifts", {"shift": 0}),
    ("3 epochs, shifts", {"epochs": 3}),
)


def resnet_options(seeds: tuple[int, ...]) -> dict[str, Any]:
    """Each ResNet option trained on MNIST less its last 6,000 training images and validated on
    those (the test set is never opened), once per seed (its init and data order), with its
    training time against the MLP's at the study's recipe on the same split (first seed)."""
    cfg = load_params()
    widths, batch, val = archs.widths(cfg), cfg.train.batch_size, mnist(VALIDATION)
    mlp = build("mlp", IMAGE, widths, seeds[0])
    mlp_seconds = fit(mlp, val, cfg.train.epochs, cfg.train.lr, batch, seeds[0], "constant")
    recipe = {"widths": widths.resnet_widths, "blocks": widths.resnet_blocks,
              "lr": cfg.archs.resnet_lr, "epochs": cfg.archs.epochs("mnist", "resnet"),
              "shift": cfg.archs.shift("mnist", "resnet")}
    rows = []
    for seed in seeds:
        for label, changes in RESNET_OPTIONS:
            o = {**recipe, **changes}
            option = dataclasses.replace(widths, resnet_widths=tuple(o["widths"]),
                                         resnet_blocks=o["blocks"])
            net = build("resnet", IMAGE, option, seed)
            seconds = fit(net, val, o["epochs"], o["lr"], batch, seed,
                          cfg.archs.schedule_of("resnet"), o["shift"])
            rows.append({"option": label, "seed": seed, **o, "widths": list(o["widths"]),
                         "seconds": seconds,
                         "validation_accuracy": accuracy(net, val.x_test, val.y_test)})
    return {"machine": describe().as_dict(), "mlp_seconds": mlp_seconds,
            "mlp_epochs": cfg.train.epochs, "seeds": list(seeds), "rows": rows}


def resnet_md(r: dict[str, Any]) -> str:
    """One line per option: its validation accuracy (mean over the seeds), its gain over the
    recipe paired seed by seed with the 95% interval of that mean, and its training time."""
    seeds, by = r["seeds"], {}
    for row in r["rows"]:
        by.setdefault(row["option"], {})[row["seed"]] = row
    recipe = by[RESNET_OPTIONS[0][0]]
    means = {label: statistics.fmean(x["validation_accuracy"] for x in rows.values())
             for label, rows in by.items()}
    lines = ["The ResNet against its MNIST target (99.3%), `python bench/archs.py --resnet "
             f"--seeds {','.join(map(str, seeds))}`: validation accuracy on the last 6,000 "
             f"training images, mean over {len(seeds)} seed(s) (each its own init and data "
             "order); the gain over the recipe is paired seed by seed, with its 95% "
             "t-interval; training time (first seed) against the MLP's "
             f"{r['mlp_epochs']} epochs on the same split ({r['mlp_seconds']:.0f} s; "
             "target ≤ 4x).", "",
             "| option | widths | blocks | lr | epochs | shift (px) | validation accuracy | gain "
             "over the recipe [95% CI] | verdict | training time |", "|---" * 10 + "|"]
    for label, rows in by.items():
        first = rows[seeds[0]]
        gain = paired([rows[s]["validation_accuracy"] - recipe[s]["validation_accuracy"]
                       for s in seeds], "better", "worse", "no difference shown")
        ci = ("" if gain["ci_low"] is None else
              f" [{gain['ci_low']:+.2f}, {gain['ci_high']:+.2f}]")
        cells = (("—", "—") if rows is recipe else
                 (f"{gain['difference']:+.2f}{ci}", gain["verdict"]))
        ratio = first["seconds"] / r["mlp_seconds"]
        lines.append(f"| {label} | {'-'.join(map(str, first['widths']))} | {first['blocks']} | "
                     f"{first['lr']} | {first['epochs']} | ±{first['shift']} | "
                     f"{means[label]:.2f} | {cells[0]} | "
                     f"{cells[1]} | "
                     f"{first['seconds']:.0f} s = {ratio:.1f}x the MLP |")
    best = max(means, key=means.__getitem__)
    lines += ["", f"Best mean: {best}. The target is a test accuracy; a validation mean "
              "≥ 99.3% only says the option is worth a run of the study."]
    return "\n".join(lines)


def timing_md(r: dict[str, Any]) -> str:
    m, base = r["machine"], r["mnist_seconds"]["mlp"]
    lines = [f"Measured on {m['cores']} cores ({m['cpu']}), `python bench/archs.py`: "
             f"{r['steps']} training steps on MNIST, median of {r['repeats']} interleaved runs; "
             f"MNIST-1D at {r['mnist1d_epochs']} epochs, one run. A whole MNIST training at "
             "each arch's recipe (its epochs; the ResNet's images shifted, as timed) against "
             "the MLP's.", "",
             "| arch | MNIST: seconds | per step over the MLP | recipe epochs | whole training "
             "over the MLP's | target ≤ 4x | MNIST-1D: seconds |", "|---" * 7 + "|"]
    epochs = r["mnist_epochs"]
    for arch, s in r["mnist_seconds"].items():
        ratio = s * epochs[arch] / (base * epochs["mlp"])
        lines.append(f"| {arch} | {s:.2f} | {s / base:.2f}x | {epochs[arch]} | {ratio:.2f}x | "
                     f"{'met' if ratio <= 4 else '**missed**'}"
                     f" | {r['mnist1d_seconds'][arch]:.1f} |")
    total = r["mnist1d_wall"]
    lines += ["", f"All four on MNIST-1D: {total:.0f} s (target ≤ 300 s: "
              f"{'met' if total <= 300 else '**missed**'})."]
    return "\n".join(lines)


def tune_md(r: dict[str, Any]) -> str:
    lines = ["Validation accuracy (%) on splits carved from the training sets, `python "
             "bench/archs.py --tune` (seed 0, one run each):", "",
             "| dataset | arch | ResNet blocks per stage | lr | schedule | epochs | validation "
             "accuracy |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {x['dataset']} | {x['arch']} | {x['blocks']} | {x['lr']:g} | "
              f"{x.get('schedule', 'constant')} | {x['epochs']} | "
              f"{x['validation_accuracy']:.2f} |" for x in r["rows"]]
    return "\n".join(lines)


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(dict.fromkeys(int(x) for x in text.split(",")))
    except ValueError:
        raise click.BadParameter(f"{text!r}: comma-separated integers, e.g. 0,1,2",
                                 param_hint="--seeds") from None
    if any(s < 0 for s in seeds):
        raise click.BadParameter(f"{text!r}: seeds are >= 0", param_hint="--seeds")
    return seeds


@click.command(help=__doc__)
@click.option("--steps", default=200, show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--tune", "tuning", is_flag=True, help="the recipe checks on validation splits")
@click.option("--resnet", is_flag=True, help="the ResNet's options against its MNIST target, "
              "on the validation split")
@click.option("--seeds", default="0", show_default=True,
              help="with --resnet: comma-separated seeds, each option trained once per seed")
@click.option("--readme", type=click.Path(path_type=Path), default=None)
@click.option("--saved", is_flag=True, help="write the block from the last saved results "
              "(bench/results/archs[_tune].json) instead of measuring")
def main(steps: int, repeats: int, tuning: bool, resnet: bool, seeds: str,
         readme: Path | None, saved: bool) -> None:
    if tuning and resnet:
        raise click.UsageError("--tune and --resnet: one at a time")
    name, measure, render, block = (
        ("archs_tune", tune, tune_md, "archs-tune") if tuning else
        ("archs_resnet", lambda: resnet_options(parse_seeds(seeds)), resnet_md,
         "archs-resnet") if resnet else
        ("archs", lambda: timing(steps, repeats), timing_md, "archs-bench"))
    out = ROOT / "bench" / "results" / f"{name}.json"
    if saved:
        result = json.loads(out.read_text(encoding="utf-8"))
    else:
        result = measure()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    text = render(result)
    click.echo(text)
    if readme is not None:
        for page, new in fill_blocks(readme, {block: text}).items():
            page.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
