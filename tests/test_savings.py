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


def test_a_slow_candidate_is_timed_only_until_it_has_lost() -> None:
    """median_seconds stops after three timed calls that each exceed ``give_up`` (the CSR
    layer that has lost against dense), and times every repeat otherwise."""
    import time

    from prunelab.pruning.savings import median_seconds

    calls = []

    def slow() -> None:
        calls.append(1)
        time.sleep(0.002)

    assert median_seconds(slow, 15, warmup=1, give_up=0.001) >= 0.002
    assert len(calls) == 1 + 3
    calls.clear()
    median_seconds(slow, 15, warmup=1, give_up=1.0)
    assert len(calls) == 1 + 15


def test_compressed_sizes_are_zlibs_and_a_blob_is_compressed_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Sizes equal zlib level 6 of each blob, in order, whatever the thread count; a blob
    seen before is not compressed again."""
    import zlib

    from prunelab.pruning import savings

    blobs = [torch.randn(300).numpy().tobytes(), bytes(5000), b"abc" * 999]
    blobs.append(blobs[0])
    expected = [len(zlib.compress(b, 6)) for b in blobs]
    assert savings.compressed_sizes(blobs, workers=2) == expected
    fresh = torch.randn(200).numpy().tobytes()
    fresh_size = len(zlib.compress(fresh, 6))
    seen: list[int] = []
    compress = zlib.compress
    monkeypatch.setattr(savings.zlib, "compress",
                        lambda b, level: seen.append(len(b)) or compress(b, level))
    assert savings.compressed_sizes([*blobs, fresh], workers=1) == [*expected, fresh_size]
    assert seen == [len(fresh)]


def test_speed_rows_test_the_dense_net_once_and_keep_every_figure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sets sharing DenseCopies: their k = 0 rows (the dense net) are tested once between
    them, with the same accuracy as testing each; every other figure is as without sharing."""
    from prunelab.pruning import savings
    from prunelab.pruning.sweep import DenseCopies

    torch.manual_seed(4)
    net = mlp_layers([torch.randn(48, 64) * 0.2, torch.randn(10, 48) * 0.2])
    x, y = torch.randn(200, 64), torch.randint(0, 10, (200,))
    grid = (0.0, 0.5)
    alone = [measure(net, m, "layer", grid, x, y, repeats=1) for m in ("weight", "unit")]
    tested: list[int] = []
    real = savings.accuracy
    monkeypatch.setattr(savings, "accuracy",
                        lambda layers, xs, ys: tested.append(1) or real(layers, xs, ys))
    copies = DenseCopies(net, x, y)
    shared = [measure(net, m, "layer", grid, x, y, repeats=1, copies=copies)
              for m in ("weight", "unit")]
    assert len(tested) == 3  # the dense net once, each k = 0.5 copy once
    timing = {"latency_ms_b1", "latency_ms_b100", "speedup_b1", "speedup_b100"}
    for a_rows, s_rows in zip(alone, shared, strict=True):
        for a, s in zip(a_rows, s_rows, strict=True):
            assert {k: v for k, v in a.items() if k not in timing} == \
                {k: v for k, v in s.items() if k not in timing}
