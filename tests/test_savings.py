"""What pruning buys: realised models compute the masked net's outputs; counts on small nets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prunelab.errors import PrunelabError
from prunelab.models.layers import Layer, Net, forward, mlp_layers
from prunelab.pruning.masks import Pruner, apply_masks
from prunelab.pruning.savings import (
    Realised,
    check_equivalence,
    faster_format,
    flops_per_sample,
    measure,
    realise,
    stored_bytes,
    stored_params,
    summarise,
)

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
ROOT = Path(__file__).resolve().parents[1]


def small_net() -> Net:
    """4 -> 3 -> 2 -> 2 with every weight nonzero: 12 + 6 + 4 = 22 weights."""
    torch.manual_seed(0)
    return mlp_layers([torch.randn(3, 4) + 3.0, torch.randn(2, 3) + 3.0,
                       torch.randn(2, 2) + 3.0])


def test_dense_counts_on_a_hand_worked_net() -> None:
    """Dense: 22 stored numbers, 2 x 22 = 44 FLOPs per sample."""
    model = Realised(tuple(small_net()))
    assert stored_params(model) == 22
    assert flops_per_sample(model) == 44
    assert model.formats == "dense,dense,dense"


def test_unit_compaction_counts_on_a_hand_worked_net() -> None:
    """Dropping one of 3 hidden units removes its row (4) and the next layer's column (2)."""
    w = small_net()
    w[0].weight[1] = 0.0  # unit 1 of the first hidden layer is dead
    model = realise(w, "unit")
    assert [tuple(m.weight.shape) for m in model.layers] == [(2, 4), (2, 2), (2, 2)]
    assert stored_params(model) == 8 + 4 + 4
    assert flops_per_sample(model) == 2 * 16
    x = torch.randn(5, 4)
    assert torch.allclose(forward(model.layers, x), forward(w, x), atol=1e-6)


def test_csr_counts_only_nonzeros() -> None:
    """A CSR layer stores and multiplies only its nonzeros."""
    w = torch.zeros(50, 40)
    w[torch.arange(50), torch.arange(50) % 40] = 1.0  # 50 nonzeros
    sparse = Realised((faster_format(Layer(w), 100),))
    if sparse.formats == "csr":
        assert stored_params(sparse) == 50
    assert flops_per_sample(sparse) == 100  # theoretical: zeros are never multiplied


@pytest.mark.parametrize("method", ["weight", "unit"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_realised_model_matches_the_masked_one(method: str, sparsity: float) -> None:
    """Compaction (units) and dense/CSR storage (weights) give the masked net's outputs."""
    torch.manual_seed(1)
    net = mlp_layers([torch.randn(64, 32), torch.randn(48, 64), torch.randn(10, 48)])
    masked = apply_masks(net, Pruner(net, method, "layer").masks(sparsity))
    model = realise(masked, method)
    x = torch.randn(20, 32)
    assert torch.allclose(forward(model.layers, x), forward(masked, x), atol=1e-4)
    assert flops_per_sample(model) <= 2 * sum(int(la.weight.count_nonzero()) for la in masked)


def test_sizes_shrink_with_unit_pruning() -> None:
    """Bytes on disk, raw and compressed, fall as units are removed."""
    torch.manual_seed(2)
    net = mlp_layers([torch.randn(64, 32), torch.randn(48, 64), torch.randn(10, 48)])
    pruner = Pruner(net, "unit", "layer")
    sizes = [stored_bytes(realise(apply_masks(net, pruner.masks(k)), "unit"))
             for k in (0.0, 0.5, 0.9)]
    assert sizes[0][0] > sizes[1][0] > sizes[2][0]
    assert all(packed <= raw + 200 for raw, packed in sizes)


def test_measure_rows_and_summary() -> None:
    """measure gives one row per sparsity with every figure; summarise reads them back."""
    torch.manual_seed(3)
    net = mlp_layers([torch.randn(32, 784) * 0.05, torch.randn(16, 32) * 0.2,
                      torch.randn(10, 16) * 0.2])
    x, y = torch.randn(200, 784), torch.randint(0, 10, (200,))
    rows = measure(net, "unit", "layer", (0.0, 0.5), x, y, repeats=3)
    assert [r["sparsity"] for r in rows] == [0.0, 0.5]
    for row in rows:
        for key in ("accuracy", "bytes", "bytes_compressed", "flops_per_sample",
                    "latency_ms_b1", "latency_ms_b100", "speedup_b1", "speedup_b100"):
            assert float(row[key]) >= 0, key  # type: ignore[arg-type]
        assert float(row["max_abs_diff_vs_masked"]) < 1e-4  # type: ignore[arg-type]
    assert rows[1]["flops_per_sample"] < rows[0]["flops_per_sample"]
    summary = summarise(rows, float(rows[0]["accuracy"]))  # type: ignore[arg-type]
    assert set(summary) == {"unit_l2_layer"}
    assert summary["unit_l2_layer"] == {"speedup_b100_at_max": max(  # type: ignore[index]
        r["speedup_b100"] for r in rows
        if float(r["accuracy"]) >= float(rows[0]["accuracy"]) - 1  # type: ignore[arg-type]
        and r["sparsity"] == max(q["sparsity"] for q in rows  # type: ignore[type-var]
                                 if float(q["accuracy"]) >= float(rows[0]["accuracy"]) - 1))}
    check_equivalence(rows)  # realised == masked: no error
    bad = [{**rows[1], "max_abs_diff_vs_masked": 0.5}]
    with pytest.raises(PrunelabError, match="differs from the masked net"):
        check_equivalence(bad)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_benchmark_runs_end_to_end_on_a_tiny_budget(tmp_path: Path, mnist_dir: Path) -> None:
    """`bench/run.py --quick` produces every section of its JSON (figures not asserted)."""
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick",
                           "--out", str(out), "--data", str(mnist_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) >= {"machine", "train", "batch_scaling", "sweeps", "grid_scaling",
                            "reference", "profile", "dvc", "lenet5", "masked", "threads"}
    assert results["train"]["seconds"] > 0 and results["dvc"]["repro_noop_seconds"] > 0
    assert all(stage["ok"] for stage in results["dvc"]["stages"].values()), results["dvc"]
    lenet = results["lenet5"]
    assert lenet["train"]["seconds"] > 0 and lenet["unit_k0.5"]["speedup"] > 0
    assert lenet["unit_k0.5"]["max_abs_diff_vs_masked"] <= 1e-4  # it timed the same function
    assert results["masked"]["masked_weights_stayed_zero"] is True
    assert "| train" in done.stdout


@pytest.mark.parametrize(("granularity", "name"), [("weight", "obs"), ("unit", "l2_refit")])
def test_reconstructed_models_are_realised_and_match_their_pruned_twin(granularity: str,
                                                                       name: str) -> None:
    """The speed stage realises reconstructing criteria too (obs: dense/CSR layers; l2_refit:
    compacted): same logits as the reconstructed net, and l2_refit's compacted net is as small
    as l2's at the same k."""
    from prunelab.pruning.criteria.base import Context
    from prunelab.pruning.criteria.registry import criterion

    torch.manual_seed(5)
    net = mlp_layers([torch.randn(48, 64) * 0.2, torch.randn(24, 48) * 0.2,
                      torch.randn(10, 24) * 0.2])
    x, y = torch.randn(300, 64), torch.randint(0, 10, (300,))
    context = Context(net, x[:128], y[:128], seed=0)
    rows = measure(net, granularity, "layer", (0.0, 0.5, 0.9), x, y, repeats=2,
                   criterion=criterion(granularity, name), context=context)  # type: ignore[arg-type]
    assert [r["criterion"] for r in rows] == [name] * 3
    check_equivalence(rows)
    assert all(float(r["max_abs_diff_vs_masked"]) < 1e-4 for r in rows)  # type: ignore[arg-type]
    if granularity == "unit":
        plain = measure(net, "unit", "layer", (0.0, 0.5, 0.9), x, y, repeats=2)
        assert [r["stored_params"] for r in rows] == [r["stored_params"] for r in plain]
        assert rows[2]["stored_params"] < rows[0]["stored_params"]
