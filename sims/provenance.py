"""What produced a result: the source files a simulation runs, hashed.

A canonical result (results/NAME/) is stale when the code that made it has changed. The code is
the simulation's module and every module of this repository it imports, transitively (found by
reading import statements, so lazy imports inside functions count too); figures/ is never part
of it, since drawing does not change a result. Neither is the command-line plumbing (PLUMBING):
it parses flags into the simulation's own Config, checks inputs before a run (accepting or
refusing them) and writes the run's folder, but computes no number of a result; so a change to
how runs are checked or written does not make an hour of benchmarks stale. What guards it
instead: tests/test_ledger.py reruns the fast canonical runs through it and compares their
results with the committed ones, and the plumbing's own tests (tests/test_inputs.py,
tests/regressions/).
"""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("theory", "sims")
PLUMBING = ("sims/cli.py", "sims/atomic.py", "sims/inputs.py")   # flags, input checks, run folders


def _path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}   # `from sims import cli`
    return {m for m in out if m.split(".")[0] in PACKAGES}


def source_files(module: str) -> list[Path]:
    """The repository's source files that `module` runs, sorted."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        path = _path(m)
        if path is None:
            continue
        seen[m] = path
        todo += sorted(_imports(ast.parse(path.read_text())))
        parent = m.rpartition(".")[0]
        if parent:
            todo.append(parent)
    return sorted(set(seen.values()))


def code_hash(module: str) -> str:
    """sha256 over the relative paths and contents of `source_files(module)`, PLUMBING left out."""
    h = hashlib.sha256()
    for p in source_files(module):
        rel = p.relative_to(ROOT).as_posix()
        if rel not in PLUMBING:
            h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()
