"""sims.bench_max_margin and sims.bench_busy at tiny sizes: results written, peers compared or
skipped with a note, non-separable data reported, bad flags refused."""
import json

import numpy as np
import pytest

from sims import bench_busy, bench_max_margin

TINY = ["--dim", "48", "--n", "60", "--rounds", "1"]


def test_bench_max_margin_tiny(tmp_path):
    out = tmp_path / "out"
    # at this size the speed checks only inform (n D < MIN_TIMED_ENTRIES): every check passes
    assert bench_max_margin.main([*TINY, "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    row = r["cases"]["structured_n60"]
    assert row["ours"]["separable"] and row["ours"]["certificate_worst"] <= 1e-9
    for peer in ("liblinear", "cvxopt"):
        entry = row[peer]
        assert "skipped" in entry or entry["one_minus_cos"] <= 1e-6
    assert all(c["passed"] for c in r["checks"] if "certified" in c["claim"])
    assert (out / "run.json").exists()


def test_missing_peer_is_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_max_margin, "missing", lambda module: f"{module} is not installed: skipped")
    r = bench_max_margin.run(bench_max_margin.BenchConfig(dim=16, n=20, rounds=1), log=lambda *a: None)
    for row in r["cases"].values():
        assert "not installed" in row["liblinear"]["skipped"] and "not installed" in row["cvxopt"]["skipped"]


def test_non_separable_case_reported(tmp_path):
    """Gaussian differences, n > 2 D: ours says not separable; liblinear's vector violates."""
    pytest.importorskip("sklearn")
    row = bench_max_margin.bench_case("g", np.random.default_rng(0).standard_normal((300, 40)),
                                      bench_max_margin.BenchConfig(rounds=1, qp_rounds=0), log=lambda *a: None)
    assert not row["ours"]["separable"] and "not linearly separable" in row["ours"]["error"]
    assert row["liblinear"]["violation"] > 0


def test_bad_flags(tmp_path):
    assert bench_max_margin.main(["--rounds", "0"]) == 2
    assert bench_max_margin.main(["--representations", str(tmp_path / "none.npz"), *TINY]) == 2
    assert bench_busy.main(["--competitors", "0"]) == 2


def test_bench_busy_measures_idle_and_busy(monkeypatch):
    monkeypatch.setattr(bench_busy, "main_job", lambda env: 1.0)
    monkeypatch.setattr(bench_busy, "max_margin_job", lambda env: 0.5 if "RMGAP_THREADS" not in env else 0.7)
    r = bench_busy.run(bench_busy.BenchConfig(rounds=1), log=lambda *a: None)
    assert r["settings"]["auto"]["main"]["ratio"] == 1.0
    assert r["settings"]["all_cores"]["max_margin"]["idle_seconds"] == 0.7
    assert all(c["passed"] for c in r["checks"])


def test_solver_failure_is_a_run_error(tmp_path, monkeypatch):
    """The QP fallback failing (features scaled over ~1e6, found by a fresh-user trial) is exit 3
    with one line, not an internal error, and leaves no folder."""
    from theory.max_margin import SolverError

    real = bench_max_margin.max_margin

    def fail(Z):
        if len(Z) <= 2:                     # the warm-up call
            return real(Z)
        raise SolverError("max-margin QP: solver status 'optimal_inaccurate'")
    monkeypatch.setattr(bench_max_margin, "max_margin", fail)
    out = tmp_path / "out"
    assert bench_max_margin.main([*TINY, "--qp-rounds", "0", "--out", str(out)]) == 3
    assert not out.exists()
