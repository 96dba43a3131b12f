"""The package's shape: sub-packages in layers that import only downward, no cycles, small
functions; code fingerprints that survive moving a module."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prunelab.runtime import fingerprint as fp

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "prunelab"

# Bottom to top: a module may import from its own layer's package or any layer below, never
# above. `__main__` (the command line) sits on top of everything.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "paths"}),
    frozenset({"config"}),
    frozenset({"runtime"}),
    frozenset({"data", "models", "tracking"}),
    frozenset({"training", "pruning"}),
    frozenset({"reporting"}),
    frozenset({"studies"}),
    frozenset({"__main__"}),
)
LEVEL = {top: i for i, layer in enumerate(LAYERS) for top in layer}


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def top(name: str) -> str:
    """prunelab.pruning.masks -> pruning."""
    return name.split(".")[1]


def test_every_top_level_name_has_a_layer() -> None:
    tops = {top(m) for m in modules() if m != "prunelab"}
    assert tops == set(LEVEL), f"new top-level names to place in LAYERS: {tops ^ set(LEVEL)}"


def test_the_top_level_is_sub_packages_and_a_few_core_modules() -> None:
    """A newcomer finds where a change goes by folder: only the core modules stay flat."""
    flat = {p.stem for p in SRC.glob("*.py")} - {"__init__", "__main__"}
    assert flat == {"errors", "paths", "config"}, flat


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_imports_upward(name: str) -> None:
    if name == "prunelab":
        return
    mine = LEVEL[top(name)]
    for imported in fp.imports_in(modules()[name].read_text(encoding="utf-8")):
        if imported == "prunelab":
            continue
        theirs = LEVEL[top(imported)]
        same_package = top(imported) == top(name)
        assert theirs < mine or same_package, f"{name} imports {imported} (a layer above)"


def test_the_import_graph_has_no_cycles() -> None:
    graph = {name: fp.imports_in(path.read_text(encoding="utf-8"))
             for name, path in modules().items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: tuple[str, ...]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, "import cycle: " + " -> ".join((*trail, node))
        state[node] = 1
        for nxt in graph.get(node, ()):
            visit(nxt, (*trail, node))
        state[node] = 2

    for node in graph:
        visit(node, ())


def test_no_function_over_50_lines() -> None:
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > 50:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, long


# --- fingerprints by module --------------------------------------------------------------------

SOURCE = textwrap.dedent('''
    """A module."""
    from prunelab.models.layers import Net  # the net
    import prunelab.runtime.rng

    def f(x):
        """Twice x."""
        return 2 * x
''')


def test_a_digest_ignores_where_imports_come_from_comments_and_docstrings() -> None:
    moved = SOURCE.replace("prunelab.models.layers", "prunelab.layers") \
        .replace("prunelab.runtime.rng", "prunelab.seeds").replace("# the net", "")
    redoc = SOURCE.replace("Twice x.", "Doubles x.")
    assert fp.source_digest(moved) == fp.source_digest(SOURCE)
    assert fp.source_digest(redoc) == fp.source_digest(SOURCE)


def test_a_digest_changes_with_the_code() -> None:
    assert fp.source_digest(SOURCE.replace("2 * x", "3 * x")) != fp.source_digest(SOURCE)
    assert fp.source_digest(SOURCE.replace("import Net", "import Layer")) \
        != fp.source_digest(SOURCE)


def test_imports_of_follows_sub_packages() -> None:
    found = fp.imports_of("prunelab.studies.imp")
    assert {"prunelab.pruning.masks", "prunelab.models.layers", "prunelab.training.loop",
            "prunelab.studies.retraining", "prunelab.config"} <= found
    assert "prunelab.reporting.figures" not in found


def test_shaping_drops_an_excluded_package_with_its_sub_modules() -> None:
    """The at-init arms' code key leaves out the one-shot criteria (a package) and the files
    helpers, but keeps every module that computes an arm."""
    from prunelab.studies.atinit import arms

    found = fp.shaping("prunelab.studies.atinit.arms", arms.NOT_SHAPING)
    assert not {m for m in found if m.startswith("prunelab.pruning.criteria")}
    assert not found & {"prunelab.runtime.files", "prunelab.pruning.sweep"}
    assert {"prunelab.studies.atinit.scores", "prunelab.studies.atinit.supermask",
            "prunelab.studies.retraining", "prunelab.training.loop"} <= found


def test_the_imp_fingerprint_survives_moving_a_module(tmp_path: Path) -> None:
    """Move prunelab/training/loop.py to prunelab/fit.py in a copy of the package, rewrite the
    imports that name it, and ask that copy for the IMP code digest: it is unchanged."""
    copy = tmp_path / "src"
    shutil.copytree(SRC, copy / "prunelab", ignore=shutil.ignore_patterns("__pycache__"))
    pkg = copy / "prunelab"
    (pkg / "training" / "loop.py").rename(pkg / "fit.py")
    for path in pkg.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("prunelab.training.loop", "prunelab.fit"), encoding="utf-8")
    ask = ("from prunelab.runtime.fingerprint import code_digest;"
           "from prunelab.studies import imp; print(code_digest(imp.shaping_modules()))")

    def digest(src: Path) -> str:
        out = subprocess.run([sys.executable, "-c", ask], cwd=tmp_path, check=True, text=True,
                             capture_output=True, env={"PYTHONPATH": str(src), "PATH": ""})
        return out.stdout.strip()

    original = digest(SRC.parent)
    assert digest(copy) == original
    (pkg / "fit.py").write_text((pkg / "fit.py").read_text().replace("zero_grad", "zero_grad "),
                                encoding="utf-8")  # whitespace inside code: same tree
    assert digest(copy) == original
