"""The architectures study: its params section, its sweep over a graph net, and what its figure
and section show."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunelab.config import Params
from prunelab.errors import ParamsError
from prunelab.models.archs import build
from prunelab.models.archs.base import Input, Widths
from prunelab.studies.archs import compare, run
from prunelab.studies.archs.study import KEYS, parse

GOOD = {"archs": ["mlp", "lstm"], "datasets": ["mnist1d"], "seeds": [0, 1], "mnist_epochs": 3,
        "mnist1d_epochs": 100, "resnet_mnist_epochs": 5, "resnet_shift": 2,
        "resnet_widths": [16, 32, 64], "resnet_blocks": 1,
        "lstm_hidden": 128, "resnet_lr": 0.003, "lstm_lr": 0.003, "schedule": "onecycle",
        "compact_sparsity": 0.5, "weight_criteria": ["magnitude", "random", "wanda", "obd"],
        "unit_criteria": ["l2", "random", "activation"]}
CRITERIA = {"weight": ("magnitude", "random", "wanda", "obd"),
            "unit": ("l2", "random", "activation")}


def test_the_section_parses_and_names_each_bad_value() -> None:
    cfg = parse(dict(GOOD), Params.__new__(Params))
    assert cfg.archs == ("mlp", "lstm") and cfg.lr("resnet", 0.001) == 0.003
    assert cfg.lr("mlp", 0.001) == 0.001 and cfg.epochs("mnist1d", "mlp") == 100
    assert cfg.schedule_of("lstm") == "onecycle" and cfg.schedule_of("mlp") == "constant"
    assert cfg.criteria == CRITERIA
    assert (cfg.epochs("mnist", "resnet"), cfg.epochs("mnist", "lstm")) == (5, 3)
    assert (cfg.shift("mnist", "resnet"), cfg.shift("mnist1d", "resnet"),
            cfg.shift("mnist", "cnn")) == (2, 0, 0)
    assert set(KEYS) == set(GOOD)
    for key, bad, said in [("archs", ["vgg"], "archs.archs[0] = 'vgg'"),
                           ("datasets", [], "archs.datasets = []"),
                           ("seeds", [0, 0], "archs.seeds[1] = 0"),
                           ("resnet_widths", [16, 0], "archs.resnet_widths[1] = 0"),
                           ("lstm_lr", 0, "archs.lstm_lr = 0"),
                           ("compact_sparsity", 1.0, "archs.compact_sparsity = 1.0"),
                           ("schedule", "step", "archs.schedule = 'step'"),
                           ("resnet_shift", -1, "archs.resnet_shift = -1"),
                           ("resnet_mnist_epochs", 0, "archs.resnet_mnist_epochs = 0"),
                           ("weight_criteria", ["magnitude", "l2"],
                            "archs.weight_criteria[1] = 'l2'"),
                           ("unit_criteria", [], "archs.unit_criteria = []")]:
        with pytest.raises(ParamsError, match=re.escape(f"params.yaml: {said} is not allowed")):
            parse({**GOOD, key: bad}, Params.__new__(Params))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 3), st.integers(3, 9), st.integers(3, 9),
       st.integers(0, 3), st.integers(0, 2**31))
def test_a_shifted_image_is_the_image_translated_by_at_most_the_shift(
        b: int, c: int, h: int, w: int, pixels: int, seed: int) -> None:
    """Every shifted image equals its image moved by one offset within +-pixels in each
    direction, zero-filled (found by trying every offset); no shift is the identity."""
    x = torch.rand(b, c * h * w) + 0.5  # no zeros: a moved-in zero is the padding
    out = run.shifted(x, (c, h, w), pixels, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape
    for img, moved in zip(x.view(b, c, h, w), out.view(b, c, h, w), strict=True):
        matches = []
        for dy in range(-pixels, pixels + 1):
            for dx in range(-pixels, pixels + 1):
                want = torch.zeros_like(img)
                want[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
                    img[:, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
                matches.append(torch.equal(moved, want))
        assert sum(matches) >= 1
    if pixels == 0:
        assert torch.equal(out, x)


def test_shifts_change_the_images_not_the_data_order_and_need_images() -> None:
    """With shifts the net sees other images in the same order (its own stream); a 1-D
    input is refused in one line."""
    torch.manual_seed(0)
    x, y = torch.rand(60, 1 * 6 * 6), torch.randint(0, 10, (60,))
    data = run.Data(x, y, x, y)
    widths = Widths(mlp_hidden=(8,))
    nets = [build("mlp", Input((1, 6, 6)), widths, 0) for _ in range(3)]
    for net, shift in zip(nets, (0, 0, 1), strict=True):
        run.fit(net, data, 1, 0.01, 20, 0, shift=shift)
    a, b, c = (torch.cat([p.flatten() for p in n.parameters()]) for n in nets)
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="random shifts are for images"):
        run.fit(build("mlp", Input((1, 40)), widths, 0), run.Data(
            torch.rand(10, 40), y[:10], torch.rand(10, 40), y[:10]), 1, 0.01, 5, 0, shift=1)


@pytest.fixture(scope="module")
def swept() -> tuple[list[dict], list[dict]]:
    torch.manual_seed(0)
    x, y = torch.randn(400, 40), torch.randint(0, 10, (400,))
    data = run.Data(x[:300], y[:300], x[300:], y[300:])
    widths = Widths(mlp_hidden=(32, 16), lstm_hidden=8)
    curve, table = [], []
    for arch in ("mlp", "lstm"):
        for seed in (0, 1):
            net = build(arch, Input((1, 40)), widths, seed)
            seconds = run.fit(net, data, 1, 0.003, 50, seed)
            dense = run.accuracy(net, data.x_test, data.y_test)
            key = {"dataset": "mnist1d", "arch": arch, "seed": seed}
            context = run.gc.GraphContext(net, *run.calibration(data, 64, seed), seed)
            rows = [{**key, **r} for r in run.sweep(context, data, [0.0, 0.5, 0.9], CRITERIA)]
            curve += rows
            table.append({**key, "epochs": 1, "train_seconds": seconds, "dense_accuracy": dense,
                          **run.summary(rows, dense),
                          **run.compaction(net, data, 0.5, seed, repeats=3)})
    return curve, table


def test_the_sweep_covers_every_arm_and_starts_dense(swept) -> None:
    curve, table = swept
    arms = {(r["granularity"], r["criterion"], r["scope"]) for r in curve}
    assert arms == set(run.arms(CRITERIA)) and len(arms) == 14
    for r in curve:
        if r["sparsity"] == 0.0:
            dense = next(t for t in table if (t["arch"], t["seed"]) == (r["arch"], r["seed"])
                         )["dense_accuracy"]
            assert r["accuracy"] == dense and r["effective_sparsity"] == 0.0
        else:  # the output layer stays dense: nominal sparsity below k, liveness at least it
            assert 0 < r["nominal_sparsity"] <= r["sparsity"] <= 1
            assert r["effective_sparsity"] >= r["nominal_sparsity"]
    lstm = next(t for t in table if t["arch"] == "lstm")
    assert lstm["compact_widths"] == "4" and lstm["compact_macs"] < lstm["dense_macs"]


def test_the_figure_draws_each_arch_and_its_control_from_the_curve(swept) -> None:
    curve, _ = swept
    fig = compare.draw(curve)
    axes = fig.axes
    assert len(axes) == 2  # one dataset: weight and unit pruning
    for ax, (gr, crit) in zip(axes, (("weight", "magnitude"), ("unit", "l2")), strict=True):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {f"{a} {c}" for a in ("MLP", "LSTM") for c in (crit, "random")}
        want = [[r for r in curve if (r["arch"], r["granularity"], r["criterion"], r["scope"],
                                      r["seed"]) == ("lstm", gr, crit, "layer", s)]
                for s in (0, 1)]
        line = lines[f"LSTM {crit}"]  # the mean over the seeds, k by k
        assert list(line.get_xdata()) == pytest.approx(
            [(a["effective_sparsity"] + b["effective_sparsity"]) / 2 for a, b in zip(*want)])
        assert list(line.get_ydata()) == pytest.approx(
            [(a["accuracy"] + b["accuracy"]) / 2 for a, b in zip(*want)])
        assert lines[f"LSTM {crit}"].get_linestyle() == "-"
        assert lines["LSTM random"].get_linestyle() == ":"


def test_the_section_says_what_the_table_shows(swept) -> None:
    _, table = swept
    text = compare.section(table, "../plots/archs.png")
    assert "| MNIST-1D | LSTM | 2 |" in text and "![" in text and "Seeds 0, 1" in text
    key = "weight.magnitude.layer.k_within_1pt"
    k = {(t["arch"], t["seed"]): t[key] for t in table}
    diff = ((k["lstm", 0] - k["mlp", 0]) + (k["lstm", 1] - k["mlp", 1])) / 2
    assert f"weight pruning holds to k = {(k['lstm', 0] + k['lstm', 1]) / 2:.2f} (minus the " \
           f"MLP's: {diff:+.2f}, " in text


def test_refitting_criteria_are_refused_with_the_reason_in_one_line() -> None:
    for key, name in (("weight_criteria", "obs"), ("unit_criteria", "l2_refit")):
        with pytest.raises(ParamsError) as err:
            parse({**GOOD, key: ["random", name]}, Params.__new__(Params))
        line = str(err.value)
        assert "\n" not in line and f"archs.{key}[1] = {name!r} is not allowed" in line
        assert "re-fits each layer of a chain" in line and "allowed: " in line


def test_the_section_tables_every_criterion_against_its_control(swept) -> None:
    _, table = swept
    text = compare.section(table, "../plots/archs.png")
    assert "| dataset | arch | weight: magnitude | weight: random | weight: wanda | " \
           "weight: obd | unit: l2 | unit: random | unit: activation |" in text
    k = [t["weight.obd.global.k_within_1pt"] for t in table
         if (t["arch"], t["dataset"]) == ("lstm", "mnist1d")]
    row = [line for line in text.splitlines() if line.startswith("| MNIST-1D | LSTM | ")][-1]
    cells = row.split(" | ")
    assert cells[5].split(" / ")[1].startswith(f"{sum(k) / 2:.2f}")  # obd, global scope
    assert "- MNIST-1D, LSTM: the furthest-holding criterion, weight: " in text
