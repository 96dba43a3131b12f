"""The L0 study: the expected L0 norm against a hand computation, the compacted net computing
what the gated net computes, exact widths for l2_refit, and params errors."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from prunelab.config import TrainConfig
from prunelab.data.split import Split
from prunelab.errors import ParamsError
from prunelab.models.layers import Layer, forward
from prunelab.pruning.criteria.base import Context
from prunelab.studies.l0 import gates
from prunelab.studies.l0 import study as l0
from prunelab.studies.registry import parse_params

ROOT = Path(__file__).resolve().parents[1]


def net(seed: int = 0) -> tuple[Layer, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(Layer(torch.randn(o, i, generator=g) * 0.2) for i, o in ((784, 12), (12, 6),
                                                                           (6, 10)))


def split(n: int = 120) -> Split:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)
    return Split(x, y, x[:40], y[:40])


def test_the_expected_l0_share_is_the_hand_computation() -> None:
    model = gates.Gated(net(), 0)
    with torch.no_grad():
        model.log_alpha[0].copy_(torch.linspace(-3, 3, 12))
        model.log_alpha[1].fill_(0.5)
    shift = (2 / 3) * math.log(0.1 / 1.1)  # beta * log(-gamma / zeta)
    p0 = [1 / (1 + math.exp(-(a - shift))) for a in torch.linspace(-3, 3, 12).tolist()]
    p1 = 1 / (1 + math.exp(-(0.5 - shift)))
    expected = (sum(p0) * 784 + 6 * p1 * 12) / (12 * 784 + 6 * 12)
    assert float(model.expected_share().detach()) == pytest.approx(expected, rel=1e-6)


def test_test_gates_close_at_the_stretch_and_open_fully() -> None:
    z = gates.test_gates(torch.tensor([-10.0, math.log(1 / 11), 0.0, 10.0]))
    assert z[0] == 0 and float(z[1]) == pytest.approx(0.0, abs=1e-6)
    assert float(z[2]) == pytest.approx(0.5) and z[3] == 1


def test_the_compacted_net_computes_what_the_gated_net_computes() -> None:
    model = gates.Gated(net(), 0)
    with torch.no_grad():
        model.log_alpha[0].copy_(torch.tensor([5, -5, 0.3, -4, 2, 1, -6, 0, 3, -1, 4, 0.1]))
        model.log_alpha[1].copy_(torch.tensor([-5, 2, 0.5, -3, 1, 6]))
    model.eval()
    x = split().x_test
    small = model.compacted()
    assert [layer.units for layer in small[:-1]] == [
        int((gates.test_gates(a) > 0).sum()) for a in model.log_alpha]
    assert small[0].units < 12 and small[1].units < 6
    with torch.no_grad():
        assert torch.allclose(forward(small, x), model(x), atol=1e-5)


def test_a_trained_gated_net_is_seeded_and_a_larger_penalty_closes_more_units(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gates, "OPEN", -2.2)  # near closing, so a few steps decide
    cfg = TrainConfig(epochs=10, lr=0.01, batch_size=20, seed=0)
    a = gates.train_gated(net(), split(), cfg, 50.0, 7)
    b = gates.train_gated(net(), split(), cfg, 50.0, 7)
    assert a.widths == b.widths and a.accuracy == b.accuracy
    light = gates.train_gated(net(), split(), cfg, 1e-4, 7)
    assert sum(a.widths) < sum(light.widths) <= 18
    assert 0 < a.expected_share < light.expected_share <= 1


def test_l2_refit_at_widths_keeps_exactly_those_widths() -> None:
    dense = net(2)
    data = split()
    context = Context(dense, data.x[:64], data.y[:64], seed=0)
    small = gates.l2_refit_at(dense, (5, 3), context)
    assert [layer.units for layer in small[:-1]] == [5, 3]
    assert small[-1].weight.shape == (10, 3)


def raw_params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize(("value", "message"), [
    ([0.1, -1], "l0.lambdas[1] = -1 is not allowed"),
    ([0.5, 0.5], "l0.lambdas[1] = 0.5 is not allowed"),
    ("0.1", "l0.lambdas = '0.1' is not allowed"),
])
def test_bad_l0_params_are_one_line_naming_the_key(value: Any, message: str) -> None:
    raw = copy.deepcopy(raw_params())
    raw["l0"]["lambdas"] = value
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_params_yaml_l0_section_is_the_default() -> None:
    assert parse_params(raw_params()).l0 == l0.L0Config()


def test_the_section_states_the_comparison_from_the_rows() -> None:
    rows = [{"lambda": 0.1, "widths": "900-800-300-150", "weights_remaining": 60.0,
             "accuracy": 97.5, "speedup_b100": 1.5, "l2_refit_accuracy": 96.0,
             "l2_refit_speedup_b100": 1.5},
            {"lambda": 2.0, "widths": "300-200-100-50", "weights_remaining": 10.0,
             "accuracy": 96.2, "speedup_b100": 6.0, "l2_refit_accuracy": 97.0,
             "l2_refit_speedup_b100": 6.1}]
    text = l0.section(rows, 97.0)
    assert "beat `l2_refit` at the same widths for 1 of 2 lambdas" in text
    assert "widths 300-200-100-50 (lambda 2), 96.20%, 6.00x faster" in text
    assert "| 2 | 300-200-100-50 | 10 | 96.20 | 6.00x | 97.00 | 6.10x |" in text


def test_a_second_sweep_resumes_every_finished_lambda_and_a_new_key_recomputes(
        tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=1, lr=0.01, batch_size=20, seed=0)
    dense, data = net(2), split()
    context = Context(dense, data.x[:64], data.y[:64], seed=0)
    store = gates.Store(tmp_path / "l0", "k")
    first = list(gates.sweep(net(), dense, data, cfg, (0.5, 2.0), context, 0, store))
    assert [r["lambda"] for r, _ in first] == [0.5, 2.0] and not any(d for _, d in first)
    assert all(len(r["history"]) == 0 for r, _ in first)  # 6 steps: no 50th step
    assert (tmp_path / "l0" / ".gitignore").read_text() == "*\n"
    again = list(gates.sweep(net(), dense, data, cfg, (0.5, 2.0, 4.0), context, 0, store))
    assert [d for _, d in again] == [True, True, False]
    assert [r for r, _ in again[:2]] == [r for r, _ in first]
    other = list(gates.sweep(net(), dense, data, cfg, (0.5,), context, 0,
                             gates.Store(tmp_path / "l0", "other")))
    assert not other[0][1]
