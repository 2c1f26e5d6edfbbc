"""Every number a reader sees comes from a results file, and the results come from the code.

README.md and paper_checks.md quote measured numbers only through ledger markers
(figures/ledger.py); the canonical results in results/ are committed with the hash of the code
that made them; figures are drawn from those results, byte for byte.
"""
import json
import math
import re

import pytest

from figures import FIGURES, RESULTS, ROOT, ledger
from figures.__main__ import DRAWN, RUNS, status


def test_documents_agree_with_their_results():
    problems = [line for doc in ledger.DOCUMENTS for line in ledger.drift(doc)]
    assert not problems, "run `python -m figures --no-runs` to re-render:\n" + "\n".join(problems)


def test_every_canonical_run_is_cited_committed_and_fresh():
    cited = set().union(*(ledger.runs_cited(doc) for doc in ledger.DOCUMENTS))
    assert cited <= set(RUNS), f"markers cite runs that are not canonical: {cited - set(RUNS)}"
    stale = {name: status(name) for name in RUNS if status(name) != "fresh"}
    assert not stale, f"run `python -m figures` (it reruns these): {stale}"


def test_marker_syntax_and_errors(tmp_path):
    text = "<!--=theorem1:checks.0.passed:status-->x<!--/--> and <!--=theorem1:run.json:wall_seconds:.1f-->y<!--/-->"
    out = ledger.render(text)
    assert out.startswith("<!--=theorem1:checks.0.passed:status-->PASS<!--/-->")
    assert re.search(r"wall_seconds:\.1f-->\d+\.\d<!--/-->", out)
    with pytest.raises(ledger.LedgerError, match="no 'checks.99.passed'"):
        ledger.render("<!--=theorem1:checks.99.passed-->?<!--/-->")
    with pytest.raises(ledger.LedgerError, match="does not exist"):
        ledger.render("<!--=nosuchrun:a-->?<!--/-->")


def _close(a, b, path=""):
    """Equal up to rounding. Identical code and seed give identical bytes on one machine; another
    BLAS or thread count reorders sums (~1e-16 relative), which loss-normalised GD amplifies up to
    ~2e-9 over 2000 steps (tests/sims/test_training.py). So floats agree to 1e-6 relative, and
    values that are themselves rounding noise (tie margins, KKT residuals, ~1e-14) to 1e-12 absolute."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}.{i}")
    elif isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


@pytest.mark.parametrize("name", [n for n, r in RUNS.items() if r.fast])
def test_fast_runs_reproduce_their_committed_results(name, tmp_path):
    import importlib
    run = RUNS[name]
    importlib.import_module(run.module).main([*run.argv, "--out", str(tmp_path / "out")])
    fresh = json.loads((tmp_path / "out/results.json").read_text())
    _close(fresh, json.loads((RESULTS / name / "results.json").read_text()))


@pytest.mark.parametrize("name", list(DRAWN))
def test_figures_are_drawn_from_results_byte_for_byte(name, tmp_path):
    run, draw = DRAWN[name]
    draw(json.loads((RESULTS / run / "results.json").read_text()), tmp_path / name)
    for ext in (".png", ".pdf"):
        assert (tmp_path / name).with_suffix(ext).read_bytes() == (FIGURES / name).with_suffix(ext).read_bytes(), \
            f"figures/{name}{ext} differs from a redraw: run `python -m figures {name}`"


def test_no_document_points_outside_the_repository():
    for doc in [*ledger.DOCUMENTS, *ROOT.glob("docs/*.md")]:
        assert "../" not in doc.read_text(), f"{doc.name} refers to a path outside the repository"
