"""Every number a reader sees comes from a results file, and the results come from the code.

README.md, paper_checks.md and the pages of docs/ quote measured numbers only through ledger
markers (figures/ledger.py); the canonical results in results/ are committed with the hash of the code
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


def test_every_page_with_numbers_is_rendered_and_checked():
    """A page holding markers that the ledger does not list would keep numbers no test compares."""
    pages = [*ROOT.glob("*.md"), *ROOT.glob("docs/**/*.md")]
    unlisted = [str(p.relative_to(ROOT)) for p in pages if ledger.MARKER.search(p.read_text()) and p not in ledger.DOCUMENTS]
    assert not unlisted, f"add to figures/ledger.py's DOCUMENTS: {unlisted}"
    assert {ROOT / "README.md", ROOT / "paper_checks.md"} < set(ledger.DOCUMENTS)


def test_drift_names_the_page_and_the_number(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!--=theorem1:responses-->4095<!--/-->")
    assert ledger.drift(page) == [f"{page}: theorem1:responses says '4095', results give '4096'"]


def test_every_canonical_run_is_cited_committed_and_fresh():
    cited = set().union(*(ledger.runs_cited(doc) for doc in ledger.DOCUMENTS))
    known = set(RUNS) | set(ledger.MEASUREMENTS)
    assert cited <= known, f"markers cite runs that are not canonical: {cited - known}"
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


# Quantities that are rounding noise, not results. Their digits are whatever one processor's
# kernels (AVX-512 or AVX2 BLAS, torch's vectorised log-softmax) happened to round, so each is
# held to the bound its code promises, never to the committed number. A bound is a number (the
# check's own tolerance: |value| <= bound) or the path of the check whose `passed` states the
# promise (a check's `passed` is a result, compared exactly). Patterns are fnmatch globs on paths.
from theory.max_margin import CERTIFICATE_TOL as _KKT   # the check "u* is certified"
ROUNDING = {
    "theorem2": {
        "im_rm_unseen_margin_change_over_tie_tolerance": 1.0,          # within the tie tolerance
        "im_rm_unseen_max_abs_margin_change": "checks.4.passed",
        "checks.4.measured": "checks.4.passed",
        "checks.4.tolerance": "checks.4.passed",                       # it quotes the largest ratio
        # every unseen pair is a tie, so their margins (and the margins' mean) are tie-sized noise
        "models.im_rm.unseen_tokens.mean_margin": "checks.3.passed",
        "models.im_rm.unseen_tokens.normalised_margin": "checks.3.passed",
        "models.im_rm.unseen_tokens.per_seed.mean_margin.*": "checks.3.passed",
        "models.im_rm.unseen_tokens.per_seed.normalised_margin.*": "checks.3.passed",
        "checks.6.measured": _KKT,
        "max_margin.certificate_worst": _KKT,
        "max_margin.certificate_max.*": _KKT,
    },
    "dynamics": {
        "checks.0.measured": 64,                                        # eps units (sims.dynamics)
        "random_model.ex_rm.max_error_in_eps_units": 64,
        "checks.1.measured": 1e-10,                                     # relative to the tangent
        "random_model.im_rm.max_error_vs_tangent_relative": 1e-10,
    },
    "theorem1": {
        "checks.5.measured": 1e-9,                                      # max |log error|
        "conditionals_max_log_error": 1e-9,
        "margin_max_error": 2e-9,                                       # 1e-9 x (1 + delta)
    },
}

def _rounding_bound(name: str, path: str):
    from fnmatch import fnmatchcase
    return next((b for pat, b in ROUNDING.get(name, {}).items() if fnmatchcase(path, pat)), None)


def _get(tree, path: str):
    for key in path.split("."):
        tree = tree[int(key)] if isinstance(tree, list) else tree[key]
    return tree


def _close(name, a, b, fresh=None, path=""):
    """`a` (fresh) agrees with `b` (committed). Identical code and seed give identical bytes on one
    machine (docs/tests.md); another processor's kernels reorder and fuse sums (~1e-16 relative),
    which loss-normalised GD amplifies to ~2e-9 over 2000 steps (tests/sims/test_training.py), so
    results agree to 1e-6 relative. Rounding noise is held to its bound (ROUNDING), not compared."""
    fresh = a if fresh is None else fresh
    bound = _rounding_bound(name, path.lstrip("."))
    if bound is not None:
        if isinstance(bound, str):
            assert _get(fresh, bound) is True, f"{path}: rounding noise whose bound is {bound}, which is False"
        else:
            assert isinstance(a, (int, float)) and abs(a) <= bound, f"{path}: {a} exceeds its rounding bound {bound}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(name, a[k], b[k], fresh, f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(name, x, y, fresh, f"{path}.{i}")
    elif isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        assert math.isclose(a, b, rel_tol=1e-6), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def test_rounding_noise_is_held_to_its_bound_not_its_digits():
    """A noise value that differs from the committed one passes within its bound, fails above it;
    a result that differs fails. (A noise value missing from ROUNDING shows up in CI's second pass,
    under another instruction set.)"""
    committed = {"im_rm_unseen_margin_change_over_tie_tolerance": 0.0125, "checks": [{"passed": True}] * 7,
                 "models": {"im_rm": {"unseen_tokens": {"accuracy": 0.5}}}}
    other = json.loads(json.dumps(committed))
    other["im_rm_unseen_margin_change_over_tie_tolerance"] = 0.9
    _close("theorem2", other, committed)
    other["im_rm_unseen_margin_change_over_tie_tolerance"] = 1.5
    with pytest.raises(AssertionError, match="exceeds its rounding bound"):
        _close("theorem2", other, committed)
    other["im_rm_unseen_margin_change_over_tie_tolerance"] = 0.0125
    other["models"]["im_rm"]["unseen_tokens"]["accuracy"] = 0.51
    with pytest.raises(AssertionError, match="accuracy: 0.51 vs 0.5"):
        _close("theorem2", other, committed)


@pytest.mark.parametrize("name", [n for n, r in RUNS.items() if r.fast])
def test_fast_runs_reproduce_their_committed_results(name, tmp_path):
    import importlib
    run = RUNS[name]
    importlib.import_module(run.module).main([*run.argv, "--out", str(tmp_path / "out")])
    fresh = json.loads((tmp_path / "out/results.json").read_text())
    _close(name, fresh, json.loads((RESULTS / name / "results.json").read_text()))


@pytest.mark.parametrize("name", list(DRAWN))
def test_figures_are_drawn_from_results_byte_for_byte(name, tmp_path):
    run, draw = DRAWN[name]
    draw(json.loads((RESULTS / run / "results.json").read_text()), tmp_path / name)
    for ext in (".png", ".pdf"):
        assert (tmp_path / name).with_suffix(ext).read_bytes() == (FIGURES / name).with_suffix(ext).read_bytes(), \
            f"figures/{name}{ext} differs from a redraw: run `python -m figures {name}`"


def test_no_document_points_outside_the_repository():
    """docs/ pages reach the figures as ../figures/x.png; no path may climb above the repository."""
    for doc in [*ledger.DOCUMENTS, *ROOT.glob("docs/*.md")]:
        for path in re.findall(r"(?:\.\./)+[^\s)`'\"<>|]*", doc.read_text()):
            assert (doc.parent / path).resolve().is_relative_to(ROOT), \
                f"{doc.relative_to(ROOT)} refers to {path}, outside the repository"


@pytest.mark.parametrize("name", sorted(ledger.MEASUREMENTS))
def test_measurements_record_their_command_and_a_commit_of_this_history(name):
    """A measurement of the tree (the suite's memory and time) says what it ran and on which
    commit; that commit is an ancestor of the checkout, so the numbers come from this history."""
    import subprocess
    path = RESULTS / name / "results.json"
    if not path.is_file():   # the measuring run itself, before its first record (a page citing it fails drift)
        pytest.skip(f"results/{name} not measured yet: {ledger.MEASUREMENTS[name]}")
    r = json.loads(path.read_text())
    assert " ".join(r["command"]) in ledger.MEASUREMENTS[name] and r["exit_code"] == 0
    commit = r["commit"].split()[0]
    git = subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", commit, "HEAD"], capture_output=True)
    if git.returncode == 128:   # no git, or a shallow clone that lacks the commit's object
        pytest.skip(f"cannot look {commit} up in this checkout: {git.stderr.decode().strip()[:80]}")
    assert git.returncode == 0, f"results/{name} measured {commit}, which is not in this checkout's history"


def test_a_run_that_keeps_its_models_leaves_them_beside_its_results(tmp_path, monkeypatch):
    """rerun copies results.json, run.json and arrays.npz; a run whose models a later run reads
    (Section 3.2's generation study) keeps RUN/models/ too, which .gitignore leaves out of commits."""
    import subprocess
    import sys
    import types
    from pathlib import Path
    import figures.__main__ as fm

    def main(argv):
        out = Path(argv[argv.index("--out") + 1])
        (out / "models" / "im-seed0").mkdir(parents=True)
        (out / "models" / "im-seed0" / "weights").write_text("w")
        (out / "results.json").write_text("{}")
        (out / "run.json").write_text("{}")
        return 0

    monkeypatch.setitem(sys.modules, "fake_training_run", types.SimpleNamespace(main=main))
    monkeypatch.setattr(fm, "RESULTS", tmp_path / "results")
    for name, keep in (("kept", True), ("dropped", False)):
        monkeypatch.setitem(fm.RUNS, name, fm.Run("fake_training_run", keep_models=keep))
        fm.rerun(name)
    assert (tmp_path / "results/kept/models/im-seed0/weights").read_text() == "w"
    assert not (tmp_path / "results/dropped/models").exists()
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "results/section32/models/im-seed0/x"])
    assert ignored.returncode == 0, "results/*/models/ must stay out of git: a saved SmolLM2 is 540 MB"
