"""sims.dynamics end to end at a small size, and its flags."""
import json

import pytest

from sims import dynamics


def test_small_run_passes_its_checks(tmp_path, capsys):
    out = tmp_path / "d"
    assert dynamics.main(["--n-eval", "30", "--vocab-size", "12", "--dim", "12", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert all(c["passed"] for c in r["checks"]) and len(r["checks"]) == 6
    assert r["paraphrase"]["delta_r_im"] < 0 < r["paraphrase"]["delta_r_ex"]
    assert (out / "dynamics.png").exists() and "FAIL" not in capsys.readouterr().out


def test_same_seed_same_results(tmp_path):
    args = ["--n-eval", "20", "--vocab-size", "10"]
    dynamics.main([*args, "--out", str(tmp_path / "a")])
    dynamics.main([*args, "--out", str(tmp_path / "b")])
    assert (tmp_path / "a/results.json").read_bytes() == (tmp_path / "b/results.json").read_bytes()
