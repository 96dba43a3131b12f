"""Cache keys for code: which prunelab modules a module uses, and a digest of what they compute.

A saved result (an IMP round) is reused only while the code that computed it is unchanged.
The digest is keyed by what the code *is*, not where it lives: each module's syntax tree with
its docstrings dropped and every ``prunelab`` import reduced to the names it imports, so moving
a module to another sub-package (and rewriting the imports that name it), renaming its file, or
editing a comment keeps the key; changing a line that computes changes it.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "prunelab"
ROOT = Path(__file__).resolve().parents[1]  # src/prunelab


def module_file(name: str) -> Path | None:
    """The source file of a prunelab module (a package's ``__init__.py``), or None; found
    without importing anything (prunelab's own folder: the one this module was loaded from)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


# A prunelab import statement: (None, modules) for ``import a.b``, (module, names) for ``from
# module import names``.
_Statement = tuple[str | None, tuple[str, ...]]


@cache
def _statements(source: str) -> tuple[_Statement, ...]:
    """The prunelab import statements of a module's source. Keyed by the text itself, so an
    edited file is parsed again: a pipeline render asks for the same ~100 files ~2,400 times."""
    found: list[_Statement] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = tuple(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
            if names:
                found.append((None, names))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == PACKAGE:
            found.append((node.module, tuple(a.name for a in node.names)))
    return tuple(found)


def imports_in(source: str) -> set[str]:
    """The prunelab modules a module's source imports (``from a import b``: ``a.b`` when that is
    a module, else ``a``; decided against the files as they are now)."""
    found: set[str] = set()
    for module, names in _statements(source):
        if module is None:
            found |= set(names)
            continue
        for name in names:
            sub = f"{module}.{name}"
            found.add(sub if module_file(sub) else module)
    return found


def imports_of(root: str) -> set[str]:
    """Every prunelab module ``root`` imports, directly or through other prunelab modules
    (``root`` included; parent packages' ``__init__`` files too, since importing runs them)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen or (path := module_file(name)) is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(imports_in(path.read_text(encoding="utf-8")))
    return seen


def shaping(root: str, excluded: Iterable[str]) -> set[str]:
    """The modules ``root`` imports (:func:`imports_of`) less the ``excluded`` ones and
    everything under them (``a.b`` excludes ``a.b.c``): the code a cached result depends on."""
    skip = tuple(excluded)
    return {m for m in imports_of(root)
            if not any(m == x or m.startswith(x + ".") for x in skip)}


def _names_package(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.module == PACKAGE
    return any(a.name == PACKAGE for a in node.names)


class _Normalise(ast.NodeTransformer):
    """Drops docstrings and where prunelab imports come from (only the names stay)."""

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.module and node.module.split(".")[0] == PACKAGE:
            node.module = PACKAGE
        return node

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE:
                alias.name = PACKAGE
        return node

    def visit_Module(self, node: ast.Module) -> ast.AST:
        """The module's own prunelab imports as one sorted import (their order is the linter's,
        and a move reorders them)."""
        self.generic_visit(node)
        mine = [n for n in node.body if isinstance(n, ast.Import | ast.ImportFrom)
                and _names_package(n)]
        names = sorted({(a.name, a.asname or "") for n in mine for a in n.names})
        node.body = [ast.ImportFrom(PACKAGE, [ast.alias(n, a or None) for n, a in names], 0),
                     *(n for n in node.body if n not in mine)] if mine else node.body
        return node

    def generic_visit(self, node: ast.AST) -> ast.AST:
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                and isinstance(first.value.value, str):
            node.body = body[1:]  # type: ignore[attr-defined]  (dumped, never compiled)
        return super().generic_visit(node)


def source_digest(source: str) -> str:
    """sha256 of one module's normalised syntax tree."""
    tree = _Normalise().visit(ast.parse(source))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


EMPTY = source_digest("")


def code_digest(modules: Iterable[str]) -> str:
    """One digest of several modules' code, independent of their names, files and order."""
    digests = []
    for name in modules:
        path = module_file(name)
        if path is None:
            raise ValueError(f"{name} is not a module of this installation")
        digest = source_digest(path.read_text(encoding="utf-8"))
        if digest != EMPTY:  # a package's docstring-only __init__ computes nothing
            digests.append(digest)
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()
