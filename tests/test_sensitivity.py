"""Per-layer sensitivity (prunelab.studies.sensitivity, the `sensitivity` stage and its figure): one
layer pruned at a time, the others dense, on MLPs and LeNet-5."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import torch
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from prunelab import paths
from prunelab.config import MLPConfig, ModelConfig
from prunelab.models.layers import Net, mlp_layers
from prunelab.models.networks import accuracy, build_model, lenet5_geometry, save_net
from prunelab.pruning.compaction import fast_equivalent
from prunelab.pruning.criteria.registry import criterion
from prunelab.pruning.masks import unit_mask, weight_mask
from prunelab.reporting.figures import sensitivity_figure
from prunelab.studies.sensitivity import (
    CURVE_COLUMNS,
    SensitivityPoint,
    curve_rows,
    headline,
    layer_masks,
    layer_names,
    layer_sweep,
    prune_layer,
    sensitive_layers,
    summary,
)
from prunelab.tracking.runs import SWITCH

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")

MAIN = Path(__file__).resolve().parents[1]
FAST = settings(max_examples=25, deadline=None, database=None)
DENOM = 1000  # k = p / DENOM, so floor(k * n) is (p * n) // DENOM exactly
GRID = (0.0, 0.25, 0.5, 0.9, 0.99)


def mlp(sizes: tuple[int, ...] = (784, 24, 16, 10), seed: int = 0) -> Net:
    """A random bias-free MLP (no exact zeros: every zero after pruning was pruned)."""
    g = torch.Generator().manual_seed(seed)
    return mlp_layers([torch.randn(o, i, generator=g) / math.sqrt(i) + 1e-3
                       for i, o in zip(sizes, sizes[1:])])


def lenet(channels: tuple[int, int] = (3, 4), fc: tuple[int, ...] = (6,), seed: int = 0) -> Net:
    """LeNet-5's geometry with random weights (no exact zeros)."""
    g = torch.Generator().manual_seed(seed)
    net = []
    for layer, shape in lenet5_geometry(channels, fc):
        w = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        net.append(layer.with_weight(torch.where(w == 0, torch.ones_like(w), w)))
    return tuple(net)


def images(n: int = 300, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Random inputs (n, 784) and labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)


def snapshot(net: Net) -> list[Tensor]:
    return [layer.weight.clone() for layer in net]


def zero_units(w: Tensor) -> int:
    """Units (rows, conv output channels) whose incoming weights are all zero."""
    return int((w.flatten(1) == 0).all(dim=1).sum())


# --- one layer pruned, the rest untouched -----------------------------------------------------


@FAST
@given(p=st.integers(0, DENOM - 1), granularity=st.sampled_from(["weight", "unit"]),
       arch=st.sampled_from(["mlp", "lenet5"]))
def test_one_layer_pruned_exactly_others_bit_identical(p: int, granularity: str,
                                                       arch: str) -> None:
    net = mlp() if arch == "mlp" else lenet()
    before = snapshot(net)
    k = p / DENOM
    for i in sensitive_layers(net, granularity):
        (_, mask), = layer_masks(net, i, granularity, [k])
        pruned = prune_layer(net, i, mask)
        w = pruned[i].weight
        if granularity == "weight":
            assert int((w == 0).sum()) == (p * w.numel()) // DENOM
            assert torch.equal(mask, weight_mask(net[i].weight, k))  # the smallest |w|
        else:
            assert zero_units(w) == (p * w.shape[0]) // DENOM  # whole rows / channels
            assert int((w == 0).sum()) == zero_units(w) * math.prod(w.shape[1:])
            assert torch.equal(mask, unit_mask(net[i].weight, k))  # the smallest L2 norms
        for j, (layer, original) in enumerate(zip(pruned, before)):
            if j != i:
                assert torch.equal(layer.weight, original)
    for layer, original in zip(net, before):  # the input net is untouched
        assert torch.equal(layer.weight, original)


@pytest.mark.parametrize("granularity", ["weight", "unit"])
def test_k0_is_the_dense_net(granularity: str) -> None:
    net = mlp()
    x, y = images()
    for i in sensitive_layers(net, granularity):
        (_, mask), = layer_masks(net, i, granularity, [0.0])
        assert bool(mask.all())
        assert all(torch.equal(a.weight, b.weight) for a, b in zip(prune_layer(net, i, mask), net))
    points = layer_sweep(net, granularity, [0.0, 0.5], x, y)
    dense = round(accuracy(net, x, y), 4)
    assert [p.accuracy for p in points if p.sparsity == 0.0] == \
        [dense] * len(sensitive_layers(net, granularity))
    assert all(p.removed_share_of_all == 0.0 for p in points if p.sparsity == 0.0)


def test_units_skip_the_output_layer_weights_do_not() -> None:
    net = mlp()
    x, y = images()
    assert list(sensitive_layers(net, "unit")) == [0, 1]
    assert list(sensitive_layers(net, "weight")) == [0, 1, 2]
    assert {p.layer for p in layer_sweep(net, "unit", GRID, x, y)} == {0, 1}
    assert {p.layer for p in layer_sweep(net, "weight", GRID, x, y)} == {0, 1, 2}
    with pytest.raises(ValueError, match="granularity"):
        sensitive_layers(net, "channel")


@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
@pytest.mark.parametrize("granularity", ["weight", "unit"])
def test_sweep_matches_testing_the_whole_pruned_net(arch: str, granularity: str) -> None:
    """Starting from the dense layers' output (and, for units, after the pruned layer) is an
    exact shortcut: every point equals testing the whole pruned copy from the images."""
    net = mlp() if arch == "mlp" else lenet()
    x, y = images()
    points = layer_sweep(net, granularity, GRID, x, y)
    assert len(points) == len(GRID) * len(sensitive_layers(net, granularity))
    total = sum(layer.weight.numel() for layer in net)
    for p in points:
        (_, mask), = layer_masks(net, p.layer, granularity, [p.sparsity])
        whole = prune_layer(net, p.layer, mask)
        assert p.accuracy == round(accuracy(fast_equivalent(whole), x, y), 4)
        assert p.accuracy == round(accuracy(whole, x, y), 4)
        zeroed = sum(int((a.weight == 0).sum()) for a in whole)
        assert p.removed_share_of_all == round(zeroed / total, 6)


def test_lenet_names_shapes_and_whole_channels() -> None:
    net = lenet((3, 4), (6,))
    assert layer_names(net) == ["conv1", "conv2", "fc1", "fc2"]
    assert layer_names(mlp()) == ["fc1", "fc2", "fc3"]
    x, y = images(64)
    points = layer_sweep(net, "unit", [0.0, 0.5], x, y)
    assert [(p.name, p.shape, p.weights) for p in points if p.sparsity == 0.5] == [
        ("conv1", "3x1x5x5", 75), ("conv2", "4x3x5x5", 300), ("fc1", "6x100", 600)]
    (_, mask), = layer_masks(net, 1, "unit", [0.5])
    w = prune_layer(net, 1, mask)[1].weight  # (4, 3, 5, 5): two whole output channels
    assert zero_units(w) == 2 and int((w == 0).sum()) == 2 * 75


def test_criterion_that_reconstructs_is_refused() -> None:
    x, y = images(16)
    with pytest.raises(ValueError, match="obs"):
        layer_sweep(mlp(), "weight", [0.5], x, y, criterion("weight", "obs"))


# --- the summary --------------------------------------------------------------------------------


def table(method: str, curves: dict[str, list[float]],
          grid: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9)) -> list[SensitivityPoint]:
    """Hand-made points: one accuracy per grid value for each named layer, in order."""
    return [SensitivityPoint(method, i, name, "1x1", 1, k, acc, 0.0)
            for i, (name, accs) in enumerate(curves.items())
            for k, acc in zip(grid, accs, strict=True)]


def test_summary_holds_contiguously_and_names_the_first_to_break() -> None:
    points = table("weight", {
        "fc1": [90.0, 89.5, 88.0, 89.9],  # breaks at 0.8 (0.9 recovers: not counted)
        "fc2": [90.0, 89.0, 89.0, 80.0],  # holds to 0.8 (exactly 1 point below counts)
        "fc3": [90.0, 89.9, 85.0, 85.0],  # holds to 0.5, like fc1: the earlier layer wins
    }) + table("unit", {
        "fc1": [90.0, 90.0, 90.0, 90.0],  # holds over the whole grid
        "fc2": [88.5, 90.0, 90.0, 90.0],  # fails at the first k already
    })
    s = summary(points, 90.0)
    assert s["dense_accuracy"] == 90.0
    assert s["weight"]["breaks_first"] == "fc1"
    assert s["weight"]["tied"] == "fc1,fc3"  # both hold to 0.5 only
    assert s["weight"]["output_layer"] == "fc3"  # the weight sweep's last layer
    assert s["weight"]["breaks_first_hidden"] == "fc1" and s["weight"]["tied_hidden"] == "fc1"
    held = {name: v["max_sparsity_within_1pt"] for name, v in s["weight"].items()
            if isinstance(v, dict)}
    assert held == {"fc1": 0.5, "fc2": 0.8, "fc3": 0.5}
    assert s["weight"]["fc2"]["accuracy"] == {"0.0": 90.0, "0.5": 89.0, "0.8": 89.0, "0.9": 80.0}
    assert s["unit"]["breaks_first"] == "fc2" and s["unit"]["tied"] == "fc2"
    assert s["unit"]["output_layer"] == "fc3"  # not swept by units: named from the weights
    assert s["unit"]["breaks_first_hidden"] == "fc2" and s["unit"]["tied_hidden"] == "fc2"
    assert s["unit"]["fc2"]["max_sparsity_within_1pt"] is None
    assert s["unit"]["fc1"]["max_sparsity_within_1pt"] == 0.9
    assert headline(s, "unit") == ("sensitivity unit: breaks first: fc2 (alone within 1 point "
                                   "of dense up to k: fc1 0.9, fc2 none)")
    json.dumps(s)  # plain JSON for `dvc metrics`


def test_summary_says_none_when_no_layer_breaks() -> None:
    s = summary(table("unit", {"fc1": [90.0] * 4, "fc2": [89.5] * 4}), 90.0)
    assert s["unit"]["breaks_first"] is None and s["unit"]["tied"] is None
    assert s["unit"]["breaks_first_hidden"] is None and s["unit"]["tied_hidden"] is None
    assert s["unit"]["output_layer"] is None  # no weight sweep and none given


def test_the_output_layer_breaking_first_names_the_first_hidden_layer_too() -> None:
    """Weight pruning sweeps the output layer, which the study keeps dense: when it breaks
    first, breaks_first_hidden names the earliest-breaking hidden layer."""
    points = table("weight", {
        "fc1": [90.0, 89.5, 88.0, 85.0],  # holds to 0.5
        "fc2": [90.0, 89.9, 89.5, 89.0],  # holds over the whole grid
        "fc3": [90.0, 89.5, 89.0, 88.0],  # holds to 0.8
        "fc4": [90.0, 89.9, 87.0, 80.0],  # holds to 0.5, like fc1: fc1 is the earlier
        "fc5": [90.0, 85.0, 80.0, 70.0],  # the output layer: holds to 0 only
    }) + table("unit", {"fc1": [90.0, 90.0, 89.5, 80.0], "fc2": [90.0, 90.0, 90.0, 90.0]})
    s = summary(points, 90.0, output_layer="fc5")
    weight = s["weight"]
    assert (weight["breaks_first"], weight["tied"], weight["output_layer"]) == (
        "fc5", "fc5", "fc5")
    assert (weight["breaks_first_hidden"], weight["tied_hidden"]) == ("fc1", "fc1,fc4")
    assert {n: v["max_sparsity_within_1pt"] for n, v in weight.items()
            if isinstance(v, dict)} == {"fc1": 0.5, "fc2": 0.9, "fc3": 0.8, "fc4": 0.5,
                                        "fc5": 0.0}
    unit = s["unit"]  # hidden layers only: the hidden fields are the plain ones
    assert (unit["breaks_first"], unit["tied"], unit["output_layer"]) == ("fc1", "fc1", "fc5")
    assert (unit["breaks_first_hidden"], unit["tied_hidden"]) == ("fc1", "fc1")
    # inferred from the weight sweep's last layer when not given: the same
    assert summary(points, 90.0) == s
    assert headline(s, "weight").startswith(
        "sensitivity weight: breaks first: fc5, the output layer (kept dense by the study); "
        "among hidden layers fc1 (alone within 1 point of dense up to k: fc1 0.5, fc2 0.9, ")
    assert headline(s, "unit").startswith("sensitivity unit: breaks first: fc1 (alone")
    # only the output layer breaks: no hidden layer to name
    alone = summary(table("weight", {"fc1": [90.0] * 4, "fc2": [90.0, 85.0, 80.0, 70.0]}),
                    90.0)
    assert (alone["weight"]["breaks_first"], alone["weight"]["breaks_first_hidden"],
            alone["weight"]["tied_hidden"]) == ("fc2", None, None)
    assert "among hidden layers none" in headline(alone, "weight")
    json.dumps(s)  # plain JSON for `dvc metrics`


# --- figure and stage -----------------------------------------------------------------------


def test_figure_is_a_png_from_points_or_csv_text() -> None:
    x, y = images(64)
    points = [p for m in ("weight", "unit") for p in layer_sweep(mlp(), m, GRID, x, y)]
    rows = curve_rows(points)
    assert list(rows[0]) == list(CURVE_COLUMNS)
    assert sensitivity_figure(rows).startswith(b"\x89PNG\r\n\x1a\n")
    as_text = [{k: str(v) for k, v in row.items()} for row in rows]  # as csv.DictReader gives
    assert sensitivity_figure(as_text, 50.0).startswith(b"\x89PNG\r\n\x1a\n")


def stage_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sensitivity_stage",
                                                  MAIN / "stages" / "sensitivity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stage_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_dir: Path) -> Path:
    """A working directory as DVC gives the stage: params.yaml (500 test images), MNIST, no
    model yet; MLflow off."""
    params = yaml.safe_load((MAIN / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["test_size"] = 500
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copyfile(mnist_dir / name, tmp_path / "data" / "mnist" / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SWITCH, "off")
    return tmp_path


def test_stage_end_to_end(stage_dir: Path) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    seed = params["train"]["seeds"][0]
    model = build_model(ModelConfig(mlp=MLPConfig(hidden=(32, 16))), 0, torch.device("cpu"))
    save_net(model.layers(), paths.model(seed))
    result = CliRunner().invoke(stage_module().main, [])
    assert result.exit_code == 0, result.output + result.stderr
    with paths.SENSITIVITY_CURVE.open(newline="") as f:
        rows = list(csv.DictReader(f))
    grid = params["prune"]["sparsities"]
    assert list(rows[0]) == list(CURVE_COLUMNS)
    assert len(rows) == len(grid) * (3 + 2)  # weight: 3 layers, unit: the 2 hidden ones
    metrics = json.loads(paths.SENSITIVITY_METRICS.read_text())
    assert set(metrics) == {"dense_accuracy", "weight", "unit"}
    fields = {"breaks_first", "tied", "output_layer", "breaks_first_hidden", "tied_hidden"}
    assert set(metrics["unit"]) == fields | {"fc1", "fc2"}
    assert set(metrics["weight"]) == fields | {"fc1", "fc2", "fc3"}
    assert metrics["weight"]["output_layer"] == metrics["unit"]["output_layer"] == "fc3"
    assert paths.SENSITIVITY_FIGURE.read_bytes().startswith(b"\x89PNG")
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["sensitivity weight", "sensitivity unit"]
    assert all("breaks first" in line for line in lines)


def test_stage_without_model_is_one_error_line(stage_dir: Path) -> None:
    result = CliRunner().invoke(stage_module().main, [])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.pt: missing" in lines[0], result.stderr
    assert not paths.SENSITIVITY_CURVE.exists() and not paths.SENSITIVITY_METRICS.exists()
