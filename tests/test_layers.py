"""Dependencies point one way: theory <- sims <- figures (style point 1)."""
import ast

from figures import ROOT

RANK = {"theory": 0, "sims": 1, "figures": 2}


def test_no_import_runs_back_up_the_layers():
    back = []
    for layer, rank in RANK.items():
        for f in (ROOT / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                back += [f"{f.relative_to(ROOT)} imports {m}" for m in names
                         if RANK.get(m.split(".")[0], -1) > rank]
    assert not back, back


def test_theory_imports_no_model_library_or_plotting():
    """theory/ is mathematics: transformers stays in sims/hf.py, matplotlib in figures/."""
    for f in (ROOT / "theory").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(m.split(".")[0] in ("transformers", "trl", "matplotlib") for m in names), f.name
