"""Hostile params.yaml: whatever the document, the answer is Params or one clean ParamsError line.

Two levels:

* library: ``parse_params(doc)`` on generated Python documents and ``load_params(path)`` on
  generated raw files (YAML dumps, flow style, token soup, garbage text, binary);
* CLI: the document written as params.yaml and ``python stages/plot.py`` run on it (the cheapest
  stage: it reads no data).

The generators mix valid and invalid documents: wrong types (strings, lists, mappings, None,
booleans, dates, bytes), out-of-range numbers, NaN and infinities, huge integers, huge and empty
grids (up to 20,000 entries), unicode keys and values, unknown and missing keys, deep nesting,
non-mapping top levels, YAML anchors/aliases/tags/merge keys, raw garbage.

The generators include the inputs that crashed the parser when these tests were written
(PyYAML constructor errors on impossible dates and bad !!int/!!float/!!timestamp scalars,
integers past Python's 4300-digit limit, nesting past the recursion limit, a YAML alias bomb);
those are fixed since commit 1ad6b84 and pinned one by one by the regression tests at the end.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from reliability_helpers import MAIN, PYTHON, SMALL_PARAMS, copy_code, env_for

from prunelab.config import Params, grid_step
from prunelab.config import load_params as core_params
from prunelab.errors import ParamsError
from prunelab.studies.registry import load_params, parse_params

LIBRARY_EXAMPLES = 500
TEXT_EXAMPLES = 200
CLI_EXAMPLES = 25

COMMON = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))

SECTIONS: dict[str, tuple[str, ...]] = {
    "data": ("train_size", "test_size"),
    "model": ("arch", "mlp", "lenet5", "resnet", "lstm"),
    "train": ("epochs", "lr", "batch_size", "seeds", "device"),
    "prune": ("sparsities", "scope", "weight_criteria", "unit_criteria", "calibration_size"),
    "finetune": ("epochs", "lr", "weight_criteria", "unit_criteria"),
    "imp": ("rounds", "rate", "output_rate", "rewind", "controls", "eval_every"),
}
# The architectures' own sections inside `model` and their keys.
SUBSECTIONS: dict[str, tuple[str, ...]] = {"mlp": ("hidden",), "lenet5": ("channels", "fc"),
                                           "resnet": ("widths",)}
# The criteria names params.yaml accepts per granularity (README: Criteria).
WEIGHT_CRITERIA = ("magnitude", "random", "largest", "wanda", "obd", "obs")
UNIT_CRITERIA = ("l2", "random", "largest", "activation", "l2_refit")

# --- strategies -------------------------------------------------------------------------------


@st.composite
def valid_docs(draw: st.DrawFn) -> dict[str, Any]:
    """Documents parse_params must accept."""
    doc = draw(st.fixed_dictionaries({
        "data": st.fixed_dictionaries({
            "train_size": st.none() | st.integers(1, 60000),
            "test_size": st.none() | st.integers(1, 10000),
        }),
        "model": st.fixed_dictionaries({
            "arch": st.sampled_from(["mlp", "lenet5", "resnet", "lstm"]),
            "mlp": st.fixed_dictionaries({
                "hidden": st.lists(st.integers(1, 16384), min_size=1, max_size=32)}),
            "lenet5": st.fixed_dictionaries({
                "channels": st.lists(st.integers(1, 1024), min_size=2, max_size=2),
                "fc": st.lists(st.integers(1, 16384), max_size=32)}),
            "resnet": st.fixed_dictionaries({
                "widths": st.lists(st.integers(1, 1024), min_size=1, max_size=4),
                "blocks": st.integers(1, 16)}),
            "lstm": st.fixed_dictionaries({"hidden": st.integers(1, 16384)}),
        }),
        "train": st.fixed_dictionaries({
            "epochs": st.integers(1, 1000),
            "lr": st.floats(min_value=1e-300, max_value=10) | st.integers(1, 10),
            "batch_size": st.integers(1, 60000),
            # Replicates: 1 to 100 distinct seeds, in any order (the first is the single-net
            # studies' seed).
            "seeds": st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=100, unique=True),
            "device": st.sampled_from(["auto", "cpu", "cuda"])
            | st.integers(0, 99).map(lambda i: f"cuda:{i}"),
        }),
        "prune": st.fixed_dictionaries({
            # Distinct MLflow steps (per-mille), not only distinct floats: two sparsities
            # closer than 0.001 would share a step, and the config refuses them.
            "sparsities": st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=40,
                                   unique_by=grid_step),
            "scope": st.sampled_from(["layer", "global"]),
            # Non-empty lists of distinct names of the right granularity, in any order.
            "weight_criteria": st.lists(st.sampled_from(WEIGHT_CRITERIA), min_size=1,
                                        unique=True),
            "unit_criteria": st.lists(st.sampled_from(UNIT_CRITERIA), min_size=1, unique=True),
        }),
    }))
    # Calibration images are training images: at most data.train_size (null: all 60,000).
    available = doc["data"]["train_size"] or 60000
    doc["prune"]["calibration_size"] = draw(st.integers(1, available))
    share = st.floats(0, 1, exclude_min=True, exclude_max=True)
    doc["finetune"] = draw(st.fixed_dictionaries({
        "epochs": st.integers(1, 1000),
        "lr": st.none() | st.floats(min_value=1e-300, max_value=10),
        "weight_criteria": st.lists(st.sampled_from(WEIGHT_CRITERIA), min_size=1, unique=True),
        "unit_criteria": st.lists(st.sampled_from(UNIT_CRITERIA), min_size=1, unique=True),
    }))
    # A late-rewinding step lies within the dense run: epochs x batches per epoch.
    steps = doc["train"]["epochs"] * -(-available // doc["train"]["batch_size"])
    doc["imp"] = draw(st.fixed_dictionaries({
        "rounds": st.integers(1, 100),
        "rate": share,
        "output_rate": share,
        "rewind": st.just("init") | st.integers(0, steps),
        "controls": st.lists(st.sampled_from(["reinit", "random_mask"]), unique=True),
        "eval_every": st.integers(1, 10**6),
    }))
    rounds = draw(st.lists(st.integers(1, 100), min_size=1, max_size=5, unique=True))
    doc["atinit"] = draw(st.fixed_dictionaries({
        "seeds": st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3, unique=True),
        "methods": st.lists(st.sampled_from(["random", "magnitude", "snip", "grasp", "synflow"]),
                            min_size=1, unique=True),
        "rounds": st.just(rounds),
        "control_rounds": st.lists(st.sampled_from(rounds), unique=True),
        "controls": st.lists(st.sampled_from(["shuffled", "reinit", "inverted"]), unique=True),
        "batches": st.integers(1, 100),
        "eval_every": st.integers(1, 10**6),
        "supermask_inits": st.lists(st.sampled_from(["kaiming", "signed_constant"]),
                                    unique=True),
        "supermask_keep": st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.7, 1.0]), unique=True),
        "supermask_epochs": st.integers(1, 1000),
        "supermask_lr": st.floats(min_value=1e-6, max_value=10),
    }))
    sparsities = st.lists(st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.98]), unique=True)
    doc["during"] = draw(st.fixed_dictionaries({
        "method_seeds": st.lists(st.integers(0, 2**32 - 1), max_size=3, unique=True),
        "schedule_seeds": st.lists(st.integers(0, 2**32 - 1), max_size=5, unique=True),
        "shapes": st.lists(st.sampled_from(["decreasing", "constant", "increasing"]),
                           unique=True),
        "final_sparsity": st.floats(0.01, 0.99),
        "sparsities": sparsities,
        "start": st.just(0.1),
        "end": st.floats(0.2, 0.9),
        "every": st.integers(1, 1000),
        "dst_methods": st.lists(st.sampled_from(["set", "rigl", "static"]), unique=True),
        "dst_sparsities": sparsities,
        "drop_fraction": st.floats(0.01, 0.99),
        "earlybird": st.booleans(),
        "earlybird_sparsity": st.floats(0.01, 0.99),
        "earlybird_every": st.integers(1, 1000),
        "earlybird_threshold": st.floats(0.01, 0.99),
        "earlybird_window": st.integers(1, 1000),
        "noise": st.lists(st.sampled_from([0.1, 0.3, 1.0]), unique=True),
        "delete": st.lists(st.sampled_from([0.1, 0.3, 0.5]), unique=True),
        "eval_every": st.integers(1, 10**6),
    }))
    doc["l0"] = {"lambdas": draw(st.lists(st.sampled_from([0.1, 0.5, 2.0, 1000]),
                                          unique=True))}
    doc["archs"] = {"archs": draw(st.lists(st.sampled_from(["mlp", "cnn", "resnet", "lstm"]),
                                           min_size=1, unique=True)),
                    "datasets": draw(st.lists(st.sampled_from(["mnist", "mnist1d"]),
                                              min_size=1, unique=True)),
                    "seeds": draw(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=10,
                                           unique=True)),
                    "mnist_epochs": draw(st.integers(1, 1000)),
                    "mnist1d_epochs": draw(st.integers(1, 10000)),
                    "resnet_mnist_epochs": draw(st.integers(1, 1000)),
                    "resnet_shift": draw(st.integers(0, 8)),
                    "resnet_widths": draw(st.lists(st.integers(1, 512), min_size=1,
                                                   max_size=4)),
                    "resnet_blocks": draw(st.integers(1, 8)),
                    "lstm_hidden": draw(st.integers(1, 4096)),
                    "resnet_lr": draw(st.floats(1e-6, 1.0)), "lstm_lr": draw(st.floats(1e-6, 1.0)),
                    "schedule": draw(st.sampled_from(["constant", "cosine", "onecycle"])),
                    "compact_sparsity": draw(st.floats(0.01, 0.99)),
                    "weight_criteria": draw(st.lists(st.sampled_from(
                        ["magnitude", "random", "largest", "wanda", "obd"]), min_size=1,
                        unique=True)),
                    "unit_criteria": draw(st.lists(st.sampled_from(
                        ["l2", "random", "largest", "activation"]), min_size=1, unique=True))}
    return doc


SPECIAL_STRINGS = ["", " ", "null", "None", "NaN", ".nan", ".inf", "-.inf", "1e309", "0x10",
                   "1_000", "٣", "１", "cuda:", "cuda:-1", "cuda: 1", "cuda:٣", "CPU", "Layer",
                   "layer ", "\n", "\x00", "\u2028", "\r", "\x85", "é", "🙂", "params.yaml",
                   "a\nb", "'", '"', "{", "[", "- x"]


def nested(depth: int, leaf: Any = 0.5, as_dict: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


def grid(n: int, kind: str) -> list[Any]:
    """Sorted distinct sparsities, then spoiled by ``kind`` (up to 20,001 entries)."""
    values: list[Any] = [i / (n + 1) for i in range(n)]
    if kind == "reversed":
        values.reverse()
    elif kind == "duplicate" and values:
        values.append(values[-1])
    elif kind == "one":
        values.append(1.0)
    elif kind == "nan":
        values.append(math.nan)
    elif kind == "string":
        values.append("0.5")
    elif kind == "bool":
        values.append(False)
    elif kind == "negative":
        values.insert(0, -1e-12)
    return values


def hostile_values(extreme: bool) -> st.SearchStrategy[Any]:
    """Hostile values; ``extreme`` adds ints past 4300 digits and nesting past the recursion
    limit (Python objects only: yaml.safe_dump cannot write those)."""
    huge_digits = st.integers(20, 6000) if extreme else st.integers(20, 4000)
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
        huge_digits.map(lambda d: 10**d), huge_digits.map(lambda d: -(10**d) + 1),
        st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1e308]),
        st.text(max_size=40), st.sampled_from(SPECIAL_STRINGS), st.binary(max_size=16),
        st.dates(), st.datetimes(),
    )
    keys = st.text(max_size=12) | st.integers() | st.none() | st.booleans() | st.sampled_from(
        ["data", "train", "seed", "seeds", "hidden", "mlp", "lenet5", "channels", "§", "ключ",
         "🙂", ""])
    values = st.recursive(
        scalars, lambda c: st.lists(c, max_size=6) | st.dictionaries(keys, c, max_size=5),
        max_leaves=25)
    depth = st.integers(1, 3000) if extreme else st.integers(1, 60)
    deep = st.builds(nested, depth, st.just(0.5), st.booleans())
    grids = st.builds(grid, st.integers(0, 20000), st.sampled_from(
        ["ok", "reversed", "duplicate", "one", "nan", "string", "bool", "negative"]))
    widths = st.lists(st.integers(-2, 20000) | st.booleans() | st.floats(), max_size=40)
    return st.one_of(values, deep, grids, widths)


@st.composite
def hostile_docs(draw: st.DrawFn, extreme: bool = False) -> Any:
    """A valid document, then (usually) one or more hostile edits."""
    doc: Any = draw(valid_docs())
    values = hostile_values(extreme)
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(
            ["value", "value", "value", "drop", "add", "section", "top", "grid", "hidden",
             "arch"]))
        if not isinstance(doc, dict):
            break
        section = draw(st.sampled_from(sorted(SECTIONS)))
        if edit == "value" and isinstance(doc.get(section), dict):
            key = draw(st.sampled_from(SECTIONS[section]))
            doc[section][key] = draw(values)
        elif edit == "drop":
            target = doc.get(section)
            if isinstance(target, dict) and draw(st.booleans()):
                target.pop(draw(st.sampled_from(SECTIONS[section])), None)
            else:
                doc.pop(section, None)
        elif edit == "add":
            key = draw(st.text(min_size=1, max_size=12) | st.integers() | st.none())
            target = doc.get(section) if draw(st.booleans()) else doc
            if isinstance(target, dict):
                target[key] = draw(values)
        elif edit == "section":
            doc[section] = draw(values)
        elif edit == "top":
            doc = draw(values)
        elif edit == "grid" and isinstance(doc.get("prune"), dict):
            doc["prune"]["sparsities"] = draw(st.builds(grid, st.integers(0, 20000), st.just(
                "ok")))
        elif edit == "hidden" and isinstance(doc.get("model"), dict):
            # Inside an architecture's section (widths/channels, hostile or not), or at the
            # old place (model.hidden: now an unknown key).
            sub = draw(st.sampled_from([*sorted(SUBSECTIONS), None]))
            widths = st.lists(st.integers(1, 16384), max_size=40) | values
            if sub is None:
                doc["model"]["hidden"] = draw(widths)
            elif isinstance(doc["model"].get(sub), dict):
                doc["model"][sub][draw(st.sampled_from(SUBSECTIONS[sub]))] = draw(widths)
        elif edit == "arch" and isinstance(doc.get("model"), dict):
            doc["model"]["arch"] = draw(st.sampled_from(["mlp", "lenet5", "resnet", "vgg", "MLP",
                                                         ""])
                                        | values)
    return doc


TOKENS = ["data", "model", "train", "prune", "train_size", "test_size", "hidden", "arch",
          "mlp", "lenet5", "channels", "fc", "epochs",
          "lr", "batch_size", "seed", "seeds", "device", "sparsities", "scope", "layer", "auto",
          "weight_criteria", "unit_criteria", "calibration_size", "magnitude", "l2", ":", ": ",
          " ", "  ", "\n", "\n  ", "\t", "-", "- ", "[", "]", "{", "}", ",", "'", '"', "null",
          "~", "true", "no", "yes", "on", "1", "0", "0.5", "1e3", "1.0e+3", ".nan", "-.inf",
          "&a ", "*a", "*b", "&b ", "? ", "|", ">", "#", "%YAML 1.1\n", "%TAG ! x:\n", "---\n",
          "...\n", "!!str ", "!!binary ", "!!set ", "!!omap ", "!!pairs ", "!!map ", "!!seq ",
          "!!bool ", "!!null ", "!foo ", "!<x> ", "<<: ", "\\", "\\x", "\x00", "\ufeff", "é",
          "🙂", "\u2028", "\r\n", "=", "%", "@", "`"]


def dump(doc: Any, draw: st.DrawFn) -> str:
    return yaml.safe_dump(doc, allow_unicode=draw(st.booleans()), sort_keys=draw(st.booleans()),
                          default_flow_style=draw(st.sampled_from([False, True, None])))


@st.composite
def params_files(draw: st.DrawFn) -> bytes:
    """Raw params.yaml bytes: dumps of hostile documents, token soup, garbage, binary, and the
    texts that once crashed PyYAML or the parser."""
    kind = draw(st.sampled_from(["dump", "dump", "dump", "tokens", "text", "binary", "splice",
                                 "crash"]))
    if kind == "dump":
        return dump(draw(hostile_docs()), draw).encode()
    if kind == "tokens":
        return "".join(draw(st.lists(st.sampled_from(TOKENS), max_size=80))).encode()
    if kind == "text":
        return draw(st.text(max_size=400)).encode()
    if kind == "binary":
        return draw(st.binary(max_size=400))
    if kind == "crash":
        return draw(st.sampled_from(CRASHING_TEXTS + [alias_bomb(3)])).encode()
    text = dump(draw(valid_docs()), draw)
    at = draw(st.integers(0, len(text)))
    junk = draw(st.sampled_from(TOKENS) | st.text(max_size=8))
    return (text[:at] + junk + text[at:]).encode()


# --- the property ------------------------------------------------------------------------------


def note(text: str) -> None:
    """hypothesis.event() inside a property; nothing in a plain test."""
    with contextlib.suppress(InvalidArgument):
        event(text)


def check_outcome(call: Any) -> Params | ParamsError:
    """Params, or a ParamsError of one line naming params.yaml; anything else fails."""
    try:
        result = call()
    except ParamsError as exc:
        message = str(exc)
        assert "\n" not in message and len(message.splitlines()) == 1, repr(message)
        assert "params.yaml" in message, message
        note("rejected with ParamsError")
        return exc
    assert isinstance(result, Params), result
    note("accepted")
    return result


def load_file(blob: bytes, stage_view: bool = False) -> Params | ParamsError:
    """The whole file checked (the first stage's view), or only its core sections (a stage
    that reads no study section)."""
    load = core_params if stage_view else load_params
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_bytes(blob)
        return check_outcome(lambda: load(path))


@settings(max_examples=LIBRARY_EXAMPLES, **COMMON)
@given(doc=hostile_docs(extreme=True))
def test_parse_params_gives_params_or_one_line_error(doc: Any) -> None:
    """500 generated documents: parse_params returns Params or raises a one-line ParamsError
    naming params.yaml, never another exception."""
    check_outcome(lambda: parse_params(doc))


@settings(max_examples=200, **COMMON)
@given(doc=valid_docs())
def test_valid_documents_are_accepted_and_normalised(doc: dict[str, Any]) -> None:
    """200 valid documents: accepted; the grid comes back sorted, the criteria and the seeds in
    the order given (the process's seed: the first); the model and retraining sections as
    given; flat() has the twenty-seven keys."""
    params = parse_params(doc)
    assert list(params.prune.sparsities) == sorted(float(k) for k in doc["prune"]["sparsities"])
    assert list(params.prune.weight_criteria) == doc["prune"]["weight_criteria"]
    assert list(params.prune.unit_criteria) == doc["prune"]["unit_criteria"]
    assert params.prune.calibration_size == doc["prune"]["calibration_size"]
    model = doc["model"]
    assert params.model.arch == model["arch"]
    assert list(params.model.mlp.hidden) == model["mlp"]["hidden"]
    assert list(params.model.lenet5.channels) == model["lenet5"]["channels"]
    assert list(params.model.lenet5.fc) == model["lenet5"]["fc"]
    assert list(params.model.resnet.widths) == model["resnet"]["widths"]
    assert params.model.resnet.blocks == model["resnet"]["blocks"]
    assert params.model.lstm.hidden == model["lstm"]["hidden"]
    assert params.model.graph == (model["arch"] in ("resnet", "lstm"))
    assert list(params.finetune.weight_criteria) == doc["finetune"]["weight_criteria"]
    assert params.imp.rewind == doc["imp"]["rewind"]
    assert list(params.imp.controls) == doc["imp"]["controls"]
    assert list(params.train.seeds) == doc["train"]["seeds"]
    assert params.train.seed == doc["train"]["seeds"][0]
    flat = params.flat()
    assert len(flat) == 41 + 19 + 1 + 16  # during's 19 keys, l0's one, archs' 16
    assert flat["archs.weight_criteria"] == doc["archs"]["weight_criteria"]
    assert flat["archs.schedule"] == doc["archs"]["schedule"]
    assert list(params.during.shapes) == doc["during"]["shapes"]
    assert list(params.during.sparsities) == sorted(doc["during"]["sparsities"])
    assert flat["train.seeds"] == doc["train"]["seeds"]
    assert flat["train.seed"] == doc["train"]["seeds"][0]
    assert flat["model.mlp.hidden"] == model["mlp"]["hidden"]
    assert flat["model.lenet5.channels"] == model["lenet5"]["channels"]
    assert flat["prune.weight_criteria"] == doc["prune"]["weight_criteria"]


@settings(max_examples=TEXT_EXAMPLES, **COMMON)
@given(blob=params_files())
def test_load_params_on_raw_files(blob: bytes) -> None:
    """200 generated files: load_params returns Params or a one-line ParamsError naming
    params.yaml, never another exception."""
    load_file(blob)


# --- CLI level ---------------------------------------------------------------------------------

_code_root: Path | None = None


def code_root() -> Path:
    """One copy of the project's code per session (so no run writes into the checkout)."""
    global _code_root
    if _code_root is None:
        _code_root = copy_code(Path(tempfile.mkdtemp(prefix="prunelab-params-code-")))
        atexit.register(shutil.rmtree, _code_root, True)
    return _code_root


def run_plot(blob: bytes, tracking: bool) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """params.yaml = blob in a fresh directory; run stages/plot.py there; (result, new files)."""
    code = code_root()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "params.yaml").write_bytes(blob)
        env = env_for(code, PRUNELAB_TRACKING=None if tracking else "off",
                      MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1")
        done = subprocess.run([PYTHON, str(code / "stages" / "plot.py")], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        created = {str(p.relative_to(work)) for p in work.rglob("*")} - {"params.yaml"}
    return done, created


def assert_clean_cli_failure(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), done.stderr[-3000:]
    return lines[0]


@pytest.mark.e2e
@pytest.mark.timeout(900)
@settings(max_examples=CLI_EXAMPLES, **COMMON)
@given(blob=params_files())
def test_stage_cli_on_hostile_params(blob: bytes) -> None:
    """25 generated files as params.yaml for `python stages/plot.py`: always exit != 0 with
    exactly one non-empty stderr line starting 'Error:'; an invalid file (tracking on) creates
    nothing; a valid one fails on the missing curves instead (tracking off)."""
    # The plot stage checks the sections it reads (the core ones): its view of "valid". A
    # section only another study reads, or an unknown one, is the first stage's to reject
    # (every stage depends on it; tests/test_config.py: unknown-top).
    valid = isinstance(load_file(blob, stage_view=True), Params)
    done, created = run_plot(blob, tracking=not valid)
    line = assert_clean_cli_failure(done)
    assert not created, created
    if valid:
        assert "plots/aggregate_" in line and "missing" in line, line
    else:
        assert "params.yaml" in line, line


def test_cli_control_valid_params_fail_only_on_missing_curves() -> None:
    """Control for the CLI property: the repository's own params.yaml gets past validation."""
    done, created = run_plot((MAIN / "params.yaml").read_bytes(), tracking=False)
    line = assert_clean_cli_failure(done)
    assert "plots/aggregate_weight.csv" in line and not created


# --- regression tests: inputs that crashed the parser before commit 1ad6b84 -------------------

GOOD = (MAIN / "params.yaml").read_text(encoding="utf-8") if (MAIN / "params.yaml").exists() \
    else yaml.safe_dump({"data": {"train_size": None, "test_size": None},
                         "model": {"arch": "mlp", "mlp": {"hidden": [8]},
                                   "lenet5": {"channels": [6, 16], "fc": [120, 84]},
                                   "resnet": {"widths": [16, 32, 64], "blocks": 1},
                                   "lstm": {"hidden": 128}},
                         "train": {"epochs": 1, "lr": 0.001, "batch_size": 100, "seeds": [0],
                                   "device": "auto"},
                         "prune": {"sparsities": [0.0], "scope": "layer",
                                   "weight_criteria": ["magnitude"], "unit_criteria": ["l2"],
                                   "calibration_size": 1},
                         "finetune": {"epochs": 1, "lr": None,
                                      "weight_criteria": ["magnitude"], "unit_criteria": ["l2"]},
                         "imp": {"rounds": 1, "rate": 0.2, "output_rate": 0.1,
                                 "rewind": "init", "controls": [], "eval_every": 100},
                         "atinit": {"seeds": [0], "methods": ["random"], "rounds": [1],
                                    "control_rounds": [], "controls": [], "batches": 1,
                                    "eval_every": 100, "supermask_inits": [],
                                    "supermask_keep": [], "supermask_epochs": 1,
                                    "supermask_lr": 0.001},
                         "during": {"method_seeds": [], "schedule_seeds": [], "shapes": [],
                                    "final_sparsity": 0.9, "sparsities": [], "start": 0.1,
                                    "end": 0.7, "every": 1, "dst_methods": [],
                                    "dst_sparsities": [], "drop_fraction": 0.3,
                                    "earlybird": False, "earlybird_sparsity": 0.9,
                                    "earlybird_every": 1, "earlybird_threshold": 0.1,
                                    "earlybird_window": 1, "noise": [], "delete": [],
                                    "eval_every": 1},
                         "l0": {"lambdas": []}, "archs": SMALL_PARAMS["archs"]})


def with_seed(text: str) -> str:
    """GOOD with ``text`` as the one seed of train.seeds (flow style: ``seeds: [text]``)."""
    start = GOOD.index("\ntrain:")  # the train section: archs has a seeds key of its own
    end = re.compile(r"(?m)^\S").search(GOOD, start + len("\ntrain:"))
    stop = end.start() if end else len(GOOD)
    section, n = re.subn(r"(?m)^(\s*seeds:).*$", lambda m: f"{m.group(1)} [{text}]",
                         GOOD[start:stop])
    assert n == 1, "no train.seeds line in params.yaml"
    return GOOD[:start] + section + GOOD[stop:]


def alias_bomb(levels: int) -> str:
    """~500 bytes of YAML whose value expands to 10**levels leaves (shared references)."""
    items = ["&a0 [x, x, x, x, x, x, x, x, x, x]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return ("data: [" + ", ".join(items) + "]\nmodel: {}\ntrain: {}\nprune: {}\nfinetune: {}\n"
            "imp: {}\natinit: {}\nduring: {}\nl0: {}\narchs: {}\n")


# Each raised something other than ParamsError inside load_params (config.py's yaml.safe_load
# call only caught yaml.YAMLError): a traceback instead of one line.
CRASHING_TEXTS = [
    with_seed("2020-13-45"),        # implicit date, impossible month -> ValueError
    with_seed("2024-02-30"),        # impossible day -> ValueError
    with_seed("!!int abc"),         # ValueError
    with_seed("!!float abc"),       # ValueError
    with_seed("!!timestamp abc"),   # AttributeError
    with_seed("0x_"),               # int('', 16) -> ValueError
    with_seed("9" * 5000),          # past 4300 digits -> ValueError
    with_seed("!!bool x"),          # KeyError (found by hypothesis under pytest-xdist)
    with_seed('!!int ""'),          # IndexError
    "[" * 3000 + "]" * 3000,        # RecursionError in PyYAML's composer (last: the CLI test)
]
CRASH_IDS = ["bad-month", "bad-day", "int-tag", "float-tag", "timestamp-tag", "hex-underscore",
             "5000-digits", "bool-tag", "empty-int-tag", "deep-nesting"]


@pytest.mark.parametrize("text", CRASHING_TEXTS, ids=CRASH_IDS)
def test_former_crash_load_params(text: str, tmp_path: Path) -> None:
    """Once ValueError/KeyError/IndexError/AttributeError/RecursionError out of PyYAML; now a
    one-line ParamsError."""
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    assert isinstance(check_outcome(lambda: load_params(path)), ParamsError)


@pytest.mark.parametrize("where", ["data.train_size", "train.seeds", "train.seeds[1]",
                                   "model.mlp.hidden", "model.lenet5.channels",
                                   "prune.sparsities", "deep-model", "deep-top"])
def test_former_crash_parse_params(where: str) -> None:
    """Once ValueError (repr of a >4300-digit int) or RecursionError (repr of deep nesting)
    inside config._show; now a one-line ParamsError."""
    doc: Any = yaml.safe_load(GOOD)
    if where == "model.mlp.hidden":
        doc["model"]["mlp"]["hidden"] = [10**5000]
    elif where == "model.lenet5.channels":
        doc["model"]["lenet5"]["channels"] = [6, 10**5000]
    elif where == "prune.sparsities":
        doc["prune"]["sparsities"] = [0.5, -(10**5000)]
    elif where == "train.seeds[1]":
        doc["train"]["seeds"] = [0, 10**5000]
    elif where == "deep-model":
        doc["model"] = nested(5000)
    elif where == "deep-top":
        doc = nested(5000)
    else:
        section, key = where.split(".")
        doc[section][key] = 10**5000
    assert isinstance(check_outcome(lambda: parse_params(doc)), ParamsError)


@pytest.mark.parametrize("text", CRASHING_TEXTS[:3] + CRASHING_TEXTS[-1:],
                         ids=CRASH_IDS[:3] + CRASH_IDS[-1:])
def test_former_crash_cli(text: str) -> None:
    """The stage once printed a Python traceback for these; now one 'Error:' line."""
    done, created = run_plot(text.encode(), tracking=True)
    assert "params.yaml" in assert_clean_cli_failure(done)
    assert not created


def test_alias_bomb_control_small_expansion_is_a_clean_error() -> None:
    """Control: the same shape with 100 leaves is rejected cleanly and fast."""
    done, created = run_plot(alias_bomb(2).encode(), tracking=True)
    assert "params.yaml: data = " in assert_clean_cli_failure(done) and not created


@pytest.mark.timeout(120)
def test_alias_bomb_is_rejected_quickly() -> None:
    """A 500-byte params.yaml expanding to 10**8 leaves is rejected within 10 s under a 1.5 GB
    address-space cap (config._show once repr()ed the whole value first: minutes of CPU,
    gigabytes of memory)."""
    code = code_root()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "params.yaml").write_text(alias_bomb(8), encoding="utf-8")

        def limit() -> None:
            import resource

            cap = 1536 * 1024**2
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

        env = env_for(code, PRUNELAB_TRACKING="off", MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1",
                      OMP_NUM_THREADS="1")
        try:
            done = subprocess.run([PYTHON, str(code / "stages" / "plot.py")], cwd=tmp, env=env,
                                  capture_output=True, text=True, timeout=10,
                                  stdin=subprocess.DEVNULL, preexec_fn=limit)
        except subprocess.TimeoutExpired:
            pytest.fail("no answer within 10 s")
    assert "params.yaml: data = " in assert_clean_cli_failure(done)
