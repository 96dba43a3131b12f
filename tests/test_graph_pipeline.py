"""model.arch resnet and lstm in the main pipeline: config, model files, training, the one-shot
sweep, one-layer sensitivity and the realised speed-up of graph-family nets."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import click
import pytest
import torch
import yaml
from repo_helpers import SMALL_PARAMS, SessionBaseline, dvc, error_lines, read_json

from prunelab import paths
from prunelab.config import LSTMConfig, ResNetConfig, TrainConfig, parse_params
from prunelab.errors import DataError, ParamsError, PrunelabError
from prunelab.models.archs.base import GraphNet
from prunelab.models.networks import (
    MNIST_INPUT,
    build_model,
    graph_blob,
    load_model,
    load_net,
    model_accuracy,
    model_blob,
)
from prunelab.pruning.families import prune_curves, speed_rows, timed_sets
from prunelab.runtime.declare import Stage
from prunelab.studies.sensitivity import summary, sweep_layers
from prunelab.tracking.stage import open_run
from prunelab.training.loop import train

GRID = (0.0, 0.5, 0.9)


def params(arch: str, **prune: object) -> dict:
    raw = copy.deepcopy(SMALL_PARAMS)
    raw["model"].update(arch=arch, resnet={"widths": [4, 8], "blocks": 1}, lstm={"hidden": 8})
    raw["train"]["device"] = "cpu"
    raw["prune"].update(sparsities=list(GRID), calibration_size=32, **prune)
    return raw


def cfg_of(arch: str, **prune: object):
    return parse_params(params(arch, **prune))


def data(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, MNIST_INPUT.features, generator=gen), torch.randint(0, 10, (n,),
                                                                              generator=gen)


def trained(arch: str) -> GraphNet:
    cfg = cfg_of(arch)
    net = build_model(cfg.model, 0, torch.device("cpu"))
    x, y = data()
    train(net, x, y, x[:100], y[:100], TrainConfig(epochs=1, lr=0.01, batch_size=50),
          progress=False)
    return net  # type: ignore[return-value]


@pytest.fixture(scope="module", params=["resnet", "lstm"])
def net(request: pytest.FixtureRequest) -> tuple[str, GraphNet]:
    return request.param, trained(request.param)


def test_config_takes_both_graph_archs_and_names_a_bad_key() -> None:
    cfg = cfg_of("resnet")
    assert cfg.model.graph and cfg.model.resnet == ResNetConfig(widths=(4, 8), blocks=1)
    assert cfg_of("lstm").model.lstm == LSTMConfig(hidden=8) and not cfg_of("mlp").model.graph
    for key, value, words in (("resnet", {"widths": [4, 8], "blocks": 0}, "model.resnet.blocks"),
                              ("resnet", {"widths": [], "blocks": 1}, "model.resnet.widths"),
                              ("lstm", {"hidden": "x"}, "model.lstm.hidden"),
                              ("lstm", {"hidden": 8, "layers": 2}, "model.lstm.layers")):
        raw = params("mlp")
        raw["model"][key] = value
        with pytest.raises(ParamsError, match=words.replace(".", r"\.")) as err:
            parse_params(raw)
        assert "\n" not in str(err.value)
    raw = params("mlp")
    del raw["model"]["lstm"]
    with pytest.raises(ParamsError, match="missing key 'model.lstm'"):
        parse_params(raw)


def test_model_file_round_trips_and_refuses_damage(net: tuple[str, GraphNet],
                                                   tmp_path: Path) -> None:
    arch, model = net
    path = tmp_path / "model.pt"
    path.write_bytes(model_blob(model, arch))
    assert path.read_bytes() == graph_blob(model, arch)  # same weights, same bytes
    back = load_model(path)
    assert isinstance(back, type(model)) and back.sizes == model.sizes
    for k, w in model.state().items():
        assert torch.equal(back.state()[k], w)
    x, _ = data(20, seed=1)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    with pytest.raises(PrunelabError, match="chain nets only") as err:
        load_net(path)  # the chain-only loader: one line, no traceback
    assert "\n" not in str(err.value)
    payload = torch.load(path, weights_only=True)
    first = next(iter(payload["state"]))
    payload["state"][first] = payload["state"][first][:1]  # a weight of the wrong shape
    torch.save(payload, path)
    with pytest.raises(DataError, match="not a prunelab model file"):
        load_model(path)


def test_training_a_graph_net_is_seeded_and_learns() -> None:
    x, y = data()
    y = (x[:, -28:].sum(1) > 0).long()  # a learnable rule: the sign of the last row's sum
    runs = []
    for _ in range(2):
        model = build_model(cfg_of("lstm").model, 3, torch.device("cpu"))
        result = train(model, x, y, x, y, TrainConfig(epochs=3, lr=0.01, batch_size=50, seed=3),
                       progress=False)
        runs.append((result, model))
    (a, ma), (b, mb) = runs
    assert a.step_losses == b.step_losses and a.history == b.history
    assert all(torch.equal(p, q) for p, q in zip(ma.parameters(), mb.parameters()))
    assert a.history[-1].test_accuracy > 60 and a.step_losses[-1] < a.step_losses[0]
    assert a.history[-1].test_accuracy == round(model_accuracy(ma, x, y), 4)


def test_prune_curves_of_a_graph_net_skip_chain_refits_with_a_line(
        net: tuple[str, GraphNet], mnist_dir: Path) -> None:
    arch, model = net
    x, y = data(200, seed=2)
    notes: list[str] = []
    for method, names in (("weight", ["magnitude", "random", "wanda", "obs"]),
                          ("unit", ["l2", "activation", "l2_refit"])):
        cfg = cfg_of(arch, **{f"{method}_criteria": names})
        curves, dense = prune_curves(model, method, cfg, x, y, mnist_dir,  # calibration
                                     torch.device("cpu"), notes.append)
        assert list(curves) == names[:-1]
        assert dense == round(model_accuracy(model, x, y), 4)
        for points in curves.values():
            assert [p.sparsity for p in points] == list(GRID)
            assert points[0].accuracy == dense and points[0].nominal_sparsity == 0.0
            nominal = [p.nominal_sparsity for p in points]
            assert nominal == sorted(nominal) and nominal[-1] > 0.3
            assert all(p.effective_sparsity >= p.nominal_sparsity for p in points)
    assert [n.split(" ")[0] for n in notes] == ["obs", "l2_refit"]
    assert all(f"model.arch = {arch}" in n and "\n" not in n for n in notes)
    with pytest.raises(PrunelabError, match="prune.weight_criteria has no criterion"):
        prune_curves(model, "weight", cfg_of(arch, weight_criteria=["obs"]), x, y,
                     mnist_dir, torch.device("cpu"))


def test_speed_rows_compact_units_and_match_the_masked_net(net: tuple[str, GraphNet]) -> None:
    arch, model = net
    x, y = data(200, seed=4)
    cfg = cfg_of(arch)
    cfg = replace(cfg, prune=replace(cfg.prune, sparsities=(0.0, 0.5)))
    rows, dense = speed_rows(model, cfg, x, y, paths.DATA_DIR, torch.device("cpu"))
    assert [(r["method"], r["criterion"], r["scope"]) for r in rows][::2] == timed_sets(cfg)
    assert len(timed_sets(cfg)) == 4  # the study's criteria in both scopes; no chain refit
    units = [r for r in rows if r["method"] == "unit"]
    assert all(r["formats"] == "compact" for r in units)
    assert units[1]["stored_params"] < units[0]["stored_params"]  # k = 0.5 is smaller
    assert units[1]["flops_per_sample"] < units[0]["flops_per_sample"]
    assert all(float(r["max_abs_diff_vs_masked"]) < 1e-3 for r in rows)
    assert all(float(r["speedup_b100"]) > 0 for r in rows)
    assert units[0]["accuracy"] == dense


def test_sensitivity_of_a_graph_net_covers_every_part_and_group(
        net: tuple[str, GraphNet]) -> None:
    arch, model = net
    x, y = data(200, seed=5)
    points, output = sweep_layers(model, GRID, x, y)
    graph = model.graph()
    assert output == graph.output
    weight = {p.name for p in points if p.method == "weight"}
    unit = {p.name for p in points if p.method == "unit"}
    assert weight == {p.name for p in graph.parts} and unit == set(graph.groups)
    dense = round(model_accuracy(model, x, y), 4)
    assert all(p.accuracy == dense for p in points if p.sparsity == 0.0)
    assert all(p.removed_share_of_all > 0 for p in points if p.sparsity == 0.9)
    metrics = summary(points, dense, output_layer=output)
    assert metrics["weight"]["output_layer"] == output
    if arch == "resnet":  # a stage's channels: every block's last conv and the projection
        s0 = next(p for p in points if p.method == "unit" and p.name == "s0")
        assert s0.shape.count("+") == 1


def test_chain_only_stages_refuse_a_graph_arch_in_one_line(tmp_path: Path) -> None:
    file = tmp_path / "params.yaml"
    file.write_text(yaml.safe_dump(params("resnet")), encoding="utf-8")
    stage = Stage("imp", "x", "stages/imp.py", chain_only=True)
    with pytest.raises(click.ClickException, match="model.arch = resnet is not allowed for "
                       "stage imp: it runs chain nets only") as err, open_run(stage, params=file):
        pass  # refused before the MLflow run opens
    assert "\n" not in err.value.message


@pytest.mark.e2e
def test_dvc_repro_runs_the_study_on_an_lstm(session_baseline: SessionBaseline,
                                            tmp_path: Path) -> None:
    """`model.arch: lstm` through the whole main pipeline: trained, pruned with every criterion
    that applies (obs and l2_refit left out with a line each), sensitivity, speed, report."""
    repo = session_baseline.copy_to(tmp_path / "repo")
    raw = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    raw["model"]["arch"], raw["model"]["lstm"] = "lstm", {"hidden": 16}
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    done = dvc(repo, "repro", check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "obs not run on model.arch = lstm" in out and "l2_refit not run" in out
    assert not error_lines(out)
    curve = (repo / paths.prune_curve("weight", 0)).read_text(encoding="utf-8")
    assert "magnitude" in curve and ",obs," not in curve
    assert isinstance(load_model(repo / paths.model(0)), GraphNet)
    sens = read_json(repo / paths.SENSITIVITY_METRICS)
    assert {"ih", "hh", "fc"} <= set(sens["weight"]) and "h" in sens["unit"]
    speed = (repo / paths.SPEED_CURVE).read_text(encoding="utf-8")
    assert "compact" in speed
    assert "lstm" in (repo / "reports" / "study.md").read_text(encoding="utf-8").lower()


def test_compare_figure_of_more_than_two_runs_draws_the_study_criteria(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Four architectures x eleven criteria would be 44 lines a panel: beyond two runs the
    figure draws the study's criteria (magnitude, l2), one line style per run."""
    from prunelab.reporting import figures

    drawn: list = []
    monkeypatch.setattr(figures, "png", lambda fig: drawn.append(fig) or b"")

    def curve(accs: list[float]) -> list[dict[str, float]]:
        return [{"sparsity": k, "accuracy": a, "effective_sparsity": k, "nominal_sparsity": k}
                for k, a in zip((0.0, 0.5), accs, strict=True)]

    runs = [(label, {"weight": {"magnitude": curve([97, 96]), "random": curve([97, 90])},
                     "unit": {"l2": curve([97, 80]), "random": curve([97, 70])}})
            for label in ("MLP", "ResNet", "LSTM")]
    figures.arch_figure(runs)
    figures.arch_figure(runs[:2])
    three, two = ({line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
                  for fig in drawn)
    assert set(three) == {f"{r}: {c}" for r in ("MLP", "ResNet", "LSTM")
                          for c in ("magnitude", "l2")}
    assert len({line.get_linestyle() for line in three.values()}) == 3
    assert len({line.get_color() for line in three.values()}) == 3  # a colour per run
    assert list(three["ResNet: l2"].get_ydata()) == [97, 80]
    assert "MLP: random" in two and "ResNet: random" in two
    for fig in drawn:
        figures.pyplot().close(fig)
