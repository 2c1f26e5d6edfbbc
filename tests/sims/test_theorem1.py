"""sims.theorem1 end to end at a small size: checks pass, exit codes, the enumeration limit."""
import json


def test_sim_default_small(tmp_path, capsys):
    from sims import theorem1
    assert theorem1.main(["--length", "4", "--out", str(tmp_path / "t")]) == 0
    assert "FAIL" not in capsys.readouterr().out
    r = json.loads((tmp_path / "t/results.json").read_text())
    assert [c["passed"] for c in r["checks"]] == [True] * 6
    assert r["pi_correct"] <= r["bound"] * (1 + 1e-12) and abs(r["margin_max_error"]) < 1e-9
    assert theorem1.main(["--vocab", "50", "--length", "9", "--out", str(tmp_path / "u")]) == 2
    assert not (tmp_path / "u").exists()
