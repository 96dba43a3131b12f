"""params.yaml validation: defaults, one-line errors naming the key, and the CLI behaviour."""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from prunelab.config import Params, check_device, grid_step
from prunelab.errors import ParamsError
from prunelab.studies.archs.study import KEYS as ARCHS_KEYS
from prunelab.studies.during.study import KEYS as DURING_KEYS
from prunelab.studies.registry import load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "params.yaml"
GRID = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)

Raw = dict[str, Any]


@pytest.fixture(scope="module")
def raw_params() -> Raw:
    """The repository's params.yaml as a plain mapping."""
    return yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))


def write_params(tmp_path: Path, raw: Raw) -> Path:
    """Dump ``raw`` as params.yaml in tmp_path."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_repository_params_are_the_documented_defaults() -> None:
    """params.yaml holds the study's settings."""
    p = load_params(PARAMS_FILE)
    assert isinstance(p, Params)
    assert p.data.train_size is None and p.data.test_size is None
    assert p.model.arch == "mlp"
    assert p.model.mlp.hidden == (1000, 1000, 500, 200)
    assert p.model.lenet5.channels == (6, 16) and p.model.lenet5.fc == (120, 84)
    assert p.train.epochs == 3
    assert p.train.lr == 0.001
    assert p.train.batch_size == 100
    assert p.train.seed == 0 and p.train.seeds == (0,)  # one seed: the default run stays fast
    assert p.train.device == "auto"
    assert p.prune.sparsities == GRID
    assert p.prune.scope == "layer"
    assert p.prune.weight_criteria == ("magnitude", "random", "largest", "wanda", "obd", "obs")
    assert p.prune.unit_criteria == ("l2", "random", "largest", "activation", "l2_refit")
    assert p.prune.calibration_size == 1024


def test_for_seed_picks_one_replicate(tmp_path: Path, raw_params: Raw) -> None:
    """train.seeds keeps its order (the first is the single-net studies' seed); for_seed
    gives a replicate's params, and refuses a seed that is not in the list."""
    raw = copy.deepcopy(raw_params)
    raw["train"]["seeds"] = [4, 0, 2]
    p = load_params(write_params(tmp_path, raw))
    assert p.train.seeds == (4, 0, 2) and p.train.seed == 4
    assert p.for_seed(2).train.seed == 2 and p.for_seed(2).train.seeds == (4, 0, 2)
    assert p.for_seed(2).prune == p.prune
    with pytest.raises(ParamsError, match=r"train\.seeds = \[4, 0, 2\].*\(3\)"):
        p.for_seed(3)


def test_flat_gives_dotted_keys() -> None:
    """Params.flat() maps 'section.key' (nested: 'model.mlp.hidden') to values, tuples as
    lists."""
    flat = load_params(PARAMS_FILE).flat()
    assert set(flat) == {
        "data.train_size", "data.test_size", "model.arch", "model.mlp.hidden",
        "model.lenet5.channels", "model.lenet5.fc", "model.resnet.widths",
        "model.resnet.blocks", "model.lstm.hidden", "train.epochs", "train.lr",
        "train.batch_size", "train.seed", "train.device", "train.seeds", "prune.sparsities",
        "prune.scope",
        "prune.weight_criteria", "prune.unit_criteria", "prune.calibration_size",
        "finetune.epochs", "finetune.lr", "finetune.weight_criteria", "finetune.unit_criteria",
        "imp.rounds", "imp.rate", "imp.output_rate", "imp.rewind", "imp.controls",
        "imp.eval_every", "atinit.seeds", "atinit.methods", "atinit.rounds",
        "atinit.control_rounds",
        "atinit.controls", "atinit.batches", "atinit.eval_every", "atinit.supermask_inits",
        "atinit.supermask_keep", "atinit.supermask_epochs", "atinit.supermask_lr",
        *(f"during.{k}" for k in DURING_KEYS), "l0.lambdas",
        *(f"archs.{k}" for k in ARCHS_KEYS),
    }
    assert flat["train.lr"] == 0.001
    assert flat["prune.sparsities"] == list(GRID)
    assert flat["model.arch"] == "mlp"
    assert flat["model.mlp.hidden"] == [1000, 1000, 500, 200]
    assert flat["model.lenet5.channels"] == [6, 16]
    assert flat["model.lenet5.fc"] == [120, 84]
    assert flat["prune.scope"] == "layer"


def test_unsorted_grid_is_sorted(tmp_path: Path, raw_params: Raw) -> None:
    """The grid comes back sorted; ints are read as floats."""
    raw = copy.deepcopy(raw_params)
    raw["prune"]["sparsities"] = [0.9, 0, 0.25, 0.5]
    assert load_params(write_params(tmp_path, raw)).prune.sparsities == (0.0, 0.25, 0.5, 0.9)


def test_small_run_values_are_accepted(tmp_path: Path, raw_params: Raw) -> None:
    """Sizes, other widths, global scope and a cuda:N device name are valid."""
    raw = copy.deepcopy(raw_params)
    raw["data"] = {"train_size": 2000, "test_size": 1000}
    raw["model"]["mlp"]["hidden"] = [64, 32]
    raw["train"]["device"] = "cuda:1"
    raw["prune"]["scope"] = "global"
    p = load_params(write_params(tmp_path, raw))
    assert (p.data.train_size, p.data.test_size) == (2000, 1000)
    assert p.model.mlp.hidden == (64, 32)
    assert p.train.device == "cuda:1"
    assert p.prune.scope == "global"


def setter(section: str, key: str, value: Any) -> Callable[[Raw], None]:
    """A mutation of the parsed params that sets one value."""

    def mutate(raw: Raw) -> None:
        raw[section][key] = value

    return mutate


def nested_setter(section: str, sub: str, key: str, value: Any) -> Callable[[Raw], None]:
    """A mutation that sets one value of a nested section (``model.mlp.hidden``)."""

    def mutate(raw: Raw) -> None:
        raw[section][sub][key] = value

    return mutate


def deleter(section: str, key: str) -> Callable[[Raw], None]:
    """A mutation that removes one key."""

    def mutate(raw: Raw) -> None:
        del raw[section][key]

    return mutate


def add_top(raw: Raw) -> None:
    """Add an unknown top-level section."""
    raw["optimizer"] = {"name": "sgd"}


BAD = [
    # (id, mutation, key named in the message, offending value shown in it)
    ("sparsity-1", setter("prune", "sparsities", [0.0, 1.0]), "prune.sparsities", "1.0"),
    ("sparsity-neg", setter("prune", "sparsities", [-0.1, 0.5]), "prune.sparsities", "-0.1"),
    ("sparsity-dup", setter("prune", "sparsities", [0.0, 0.5, 0.5]), "prune.sparsities", "0.5"),
    ("sparsity-nan", setter("prune", "sparsities", [math.nan]), "prune.sparsities", "nan"),
    ("sparsity-str", setter("prune", "sparsities", ["0.5"]), "prune.sparsities", "'0.5'"),
    ("sparsity-empty", setter("prune", "sparsities", []), "prune.sparsities", "[]"),
    ("scope", setter("prune", "scope", "foo"), "prune.scope", "foo"),
    ("epochs-0", setter("train", "epochs", 0), "train.epochs", "0"),
    ("epochs-bool", setter("train", "epochs", True), "train.epochs", "True"),
    ("epochs-str", setter("train", "epochs", "three"), "train.epochs", "three"),
    ("epochs-float", setter("train", "epochs", 3.5), "train.epochs", "3.5"),
    ("lr-0", setter("train", "lr", 0), "train.lr", "0"),
    ("lr-neg", setter("train", "lr", -1), "train.lr", "-1"),
    ("lr-nan", setter("train", "lr", math.nan), "train.lr", "nan"),
    ("lr-inf", setter("train", "lr", math.inf), "train.lr", "inf"),
    ("batch-0", setter("train", "batch_size", 0), "train.batch_size", "0"),
    ("device", setter("train", "device", "tpu"), "train.device", "tpu"),
    ("seeds-empty", setter("train", "seeds", []), "train.seeds", "[]"),
    ("seeds-int", setter("train", "seeds", 3), "train.seeds", "3"),
    ("seeds-dup", setter("train", "seeds", [0, 1, 0]), "train.seeds[2]", "0"),
    ("seeds-neg", setter("train", "seeds", [0, -1]), "train.seeds[1]", "-1"),
    ("seeds-bool", setter("train", "seeds", [True]), "train.seeds[0]", "True"),
    ("seeds-str", setter("train", "seeds", ["1"]), "train.seeds[0]", "'1'"),
    ("seeds-huge", setter("train", "seeds", [2**32]), "train.seeds[0]", "4294967296"),
    ("seeds-too-many", setter("train", "seeds", list(range(101))), "train.seeds", None),
    ("seed-old-key", lambda raw: raw["train"].update(seed=raw["train"].pop("seeds")[0]),
     "'train.seed'", None),
    ("hidden-0", nested_setter("model", "mlp", "hidden", [64, 0]), "model.mlp.hidden[1] = 0",
     "0"),
    ("hidden-empty", nested_setter("model", "mlp", "hidden", []), "model.mlp.hidden", "[]"),
    ("hidden-old-place", setter("model", "hidden", [64, 32]), "'model.hidden'", None),
    ("arch", setter("model", "arch", "vgg"), "model.arch", "vgg"),
    ("channels-3", nested_setter("model", "lenet5", "channels", [6, 16, 32]),
     "model.lenet5.channels", "[6, 16, 32]"),
    ("channels-0", nested_setter("model", "lenet5", "channels", [6, 0]),
     "model.lenet5.channels[1]", "0"),
    ("channels-huge", nested_setter("model", "lenet5", "channels", [6, 1025]),
     "model.lenet5.channels[1]", "1025"),
    ("fc-0", nested_setter("model", "lenet5", "fc", [120, 0]), "model.lenet5.fc[1]", "0"),
    ("missing-arch", deleter("model", "arch"), "model.arch", None),
    ("missing-lenet5", deleter("model", "lenet5"), "model.lenet5", None),
    ("train-size-0", setter("data", "train_size", 0), "data.train_size", "0"),
    ("unknown-top", add_top, "optimizer", None),
    ("unknown-section-key", setter("train", "momentum", 0.9), "train.momentum", None),
    ("missing", deleter("train", "lr"), "train.lr", None),
    ("missing-section-key", deleter("prune", "scope"), "prune.scope", None),
    ("criterion-unknown", setter("prune", "weight_criteria", ["magnitude", "snip"]),
     "prune.weight_criteria[1]", "snip"),
    ("criterion-wrong-granularity", setter("prune", "unit_criteria", ["magnitude"]),
     "prune.unit_criteria[0]", "magnitude"),
    ("criteria-empty", setter("prune", "weight_criteria", []), "prune.weight_criteria", "[]"),
    ("criteria-dup", setter("prune", "unit_criteria", ["l2", "l2"]), "prune.unit_criteria[1]",
     "l2"),
    ("criteria-not-list", setter("prune", "unit_criteria", "l2"), "prune.unit_criteria", "l2"),
    ("calibration-0", setter("prune", "calibration_size", 0), "prune.calibration_size", "0"),
    ("calibration-str", setter("prune", "calibration_size", "1k"), "prune.calibration_size",
     "1k"),
    ("calibration-over-train", setter("data", "train_size", 500), "prune.calibration_size",
     "1024"),
]


@pytest.mark.parametrize(("mutate", "key", "value"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_value_is_one_line_naming_key_and_value(tmp_path: Path, raw_params: Raw,
                                                    mutate: Callable[[Raw], None], key: str,
                                                    value: str | None) -> None:
    """Each bad params.yaml raises ParamsError: one line with the key and the offending value."""
    raw = copy.deepcopy(raw_params)
    mutate(raw)
    with pytest.raises(ParamsError) as info:
        load_params(write_params(tmp_path, raw))
    message = str(info.value)
    assert message and "\n" not in message
    assert key in message
    if value is not None:
        assert value in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "None"),
        ("data: {train_size: null\nmodel: [1, 2\n", "YAML syntax error"),
        ("data:\n  train_size: 1\n   test_size: 2\n", "YAML syntax error"),
        ("- 1\n- 2\n", "[1, 2]"),
    ],
    ids=["empty", "unclosed", "indentation", "list"],
)
def test_unparseable_file_is_one_line(tmp_path: Path, text: str, expected: str) -> None:
    """An empty file, broken YAML or a non-mapping gives a one-line ParamsError."""
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert message and "\n" not in message
    assert expected in message


def test_yaml_error_reports_the_line(tmp_path: Path) -> None:
    """A YAML syntax error names the file and the line."""
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  train_size: null\nmodel: {hidden: [1, 2}\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"line 3"):
        load_params(path)


def test_missing_file_is_a_params_error(tmp_path: Path) -> None:
    """A params.yaml that cannot be read is a ParamsError naming the path."""
    with pytest.raises(ParamsError, match="nope.yaml"):
        load_params(tmp_path / "nope.yaml")


def test_huge_integer_lr_is_a_params_error(tmp_path: Path, raw_params: Raw) -> None:
    """A gigantic integer lr is out of range: ParamsError, not OverflowError."""
    raw = copy.deepcopy(raw_params)
    raw["train"]["lr"] = 10**400
    with pytest.raises(ParamsError, match="train.lr"):
        load_params(write_params(tmp_path, raw))


def test_stage_with_bad_params_prints_one_error_line_and_writes_nothing(tmp_path: Path) -> None:
    """stages/train.py with a broken params.yaml: exit != 0, one 'Error: ' line, no files."""
    text = PARAMS_FILE.read_text(encoding="utf-8")
    assert "  epochs: 3\n" in text
    (tmp_path / "params.yaml").write_text(text.replace("  epochs: 3\n", "  epochs: 0\n"),
                                          encoding="utf-8")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "stages" / "train.py"), "0"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert done.stderr.strip() == lines[0]
    assert lines[0].startswith("Error: ")
    assert "train.epochs" in lines[0] and "0" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


# --- params.yaml means the same to DVC and to the stages -------------------------------------

@pytest.mark.parametrize("text, expected", [("1e-4", 1e-4), ("1.0e-3", 1e-3), ("5E-4", 5e-4),
                                            (".001", 0.001)])
def test_scientific_lr_is_the_number_dvc_reads(tmp_path: Path, text: str,
                                               expected: float) -> None:
    """`lr: 1e-4` is a number for the stages exactly as for DVC's own parser (YAML 1.2;
    PyYAML's 1.1 rules read it as the string '1e-4')."""
    from dvc.utils.serialize import parse_yaml

    source = re.sub(r"(?m)^  lr: 0\.001", f"  lr: {text}",
                    PARAMS_FILE.read_text(encoding="utf-8"))
    assert source.count(f"\n  lr: {text}") == 1
    path = tmp_path / "params.yaml"
    path.write_text(source, encoding="utf-8")
    dvc_view = parse_yaml(source, str(path))["train"]["lr"]
    assert load_params(path).train.lr == dvc_view == pytest.approx(expected)
    if text in ("1e-4", "5E-4"):  # the trap PyYAML falls into: no dot, so not a 1.1 float
        assert isinstance(yaml.safe_load(f"lr: {text}")["lr"], str)


@pytest.mark.parametrize("source", ["/dev/zero", "big"])
def test_oversized_params_file_is_refused_in_one_line(tmp_path: Path, source: str) -> None:
    """A params file over 1 MiB (or an endless device) is refused before it is parsed."""
    if source == "big":
        path = tmp_path / "params.yaml"
        path.write_text("# " + "x" * (1 << 21) + "\n" + PARAMS_FILE.read_text(), encoding="utf-8")
    else:
        path = Path(source)
        if not path.exists():
            pytest.skip("no /dev/zero here")
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert "larger than 1024 KiB" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("grid, clash", [([0.0, 0.0004, 0.9], "0.0004"), ([0, 1e-300], "1e-300"),
                                         ([0.0, 0.9, 0.9004], "0.9004"),
                                         ([0.0015, 0.0025, 0.5], None)])
def test_grid_values_sharing_an_mlflow_step_are_refused(tmp_path: Path, raw_params: Raw,
                                                        grid: list[float],
                                                        clash: str | None) -> None:
    """Two sparsities on one MLflow step (per-mille) would overwrite each other: refused, the
    line naming the value; values 0.001 apart are fine (0.0015 and 0.0025 included, which
    Python's round() would put on one step)."""
    raw = copy.deepcopy(raw_params)
    raw["prune"]["sparsities"] = grid
    path = write_params(tmp_path, raw)
    if clash is None:
        assert len({grid_step(k) for k in load_params(path).prune.sparsities}) == len(grid)
        return
    with pytest.raises(ParamsError, match=r"at least 0\.001 apart") as err:
        load_params(path)
    assert clash in str(err.value) and "prune.sparsities[" in str(err.value)


@given(st.lists(st.floats(0, 0.999999, allow_nan=False), min_size=1, max_size=40, unique=True))
@settings(max_examples=200, deadline=None)
def test_every_accepted_grid_has_distinct_mlflow_steps(grid: list[float]) -> None:
    """Whatever grid validation accepts, no two of its points share an MLflow step."""
    raw = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    raw["prune"]["sparsities"] = grid
    try:
        params = parse_params(raw)
    except ParamsError:
        return
    steps = [grid_step(k) for k in params.prune.sparsities]
    assert len(set(steps)) == len(steps)
    assert steps == sorted(steps)  # the step order is the grid order


def test_check_device_refuses_a_missing_cuda_device() -> None:
    """`validate` catches a CUDA device this machine lacks before any stage runs."""
    import torch

    check_device("cpu")
    check_device("auto")
    missing = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
    with pytest.raises(ParamsError, match="train.device"):
        check_device(missing)


def test_validate_stage_rejects_a_bad_value_in_one_line(tmp_path: Path) -> None:
    """`python stages/validate.py` (the pipeline's first stage) gives one Error line naming
    the key, exits 1, and leaves its output untouched; a good file writes the stamp."""
    for rel in ("stages", "src"):
        os.symlink(ROOT / rel, tmp_path / rel)
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS_FILE.read_text().replace("scope: layer", "scope: globl"))
    stamp = tmp_path / "data" / "params.checked"
    stamp.parent.mkdir()
    stamp.write_text("old stamp\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "stages/validate.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: params.yaml: prune.scope = 'globl' is not allowed: one of layer, global"]
    assert stamp.read_text() == "old stamp\n"
    params.write_text(PARAMS_FILE.read_text())
    done = subprocess.run([sys.executable, "stages/validate.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert stamp.read_text() == (ROOT / "data" / "params.checked").read_text()


def test_yaml_is_parsed_by_ruamels_c_loader() -> None:
    """DVC parses dvc.yaml, dvc.lock and params.yaml with ruamel's "safe" loader, whose C
    parser (ruamel.yaml.clib) ruamel.yaml 0.19 no longer installs (pyproject names it):
    without it every `dvc` command parses in Python, ~5x slower on this project's dvc.lock."""
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser.__name__ == "CParser"
