"""sims.theorem2 end to end: the default run at a small size, bad flags, determinism, no overwrite."""
import json

import numpy as np
import pytest

from sims import theorem2
from sims.representations import synthetic

SMALL = ["--unseen-tokens", "--steps", "300", "--dim", "32", "--n-train", "40", "--n-test", "40",
         "--n-seeds", "2", "--checkpoints", "8"]


def run(tmp_path, *args, name="out"):
    out = tmp_path / name
    code = theorem2.main([*SMALL, *args, "--out", str(out)])
    return code, out


def test_default_run_small(tmp_path, capsys):
    code, out = run(tmp_path)
    assert code == 0
    r = json.loads((out / "results.json").read_text())
    for model in ("ex_rm", "im_rm"):
        for split in ("train", "seen_tokens", "unseen_tokens"):
            assert set(r["models"][model][split]) >= {"accuracy", "tie_fraction", "mean_margin"}
    assert r["models"]["im_rm"]["unseen_tokens"]["accuracy"] == 0.5
    assert r["models"]["im_rm"]["unseen_tokens"]["tie_fraction"] == 1.0
    assert r["models"]["ex_rm"]["unseen_tokens"]["accuracy"] == r["max_margin"]["unseen_tokens_accuracy"] == 1.0
    assert r["ex_rm_direction"]["one_minus_cosine"][-1] <= 1e-3
    assert r["im_rm_unseen_max_abs_margin_change"] < 1e-12
    assert all(c["passed"] for c in r["checks"]) and len(r["checks"]) == 7
    assert (out / "theorem2.png").stat().st_size > 0 and (out / "theorem2.pdf").exists()
    text = capsys.readouterr().out
    assert "PASS" in text and "FAIL" not in text and text.startswith("seed 0") and "config:" not in text


def test_same_seed_same_results(tmp_path):
    _, a = run(tmp_path, name="a")
    _, b = run(tmp_path, name="b")
    assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()
    _, c = run(tmp_path, "--seed", "7", name="c")
    assert (a / "results.json").read_bytes() != (c / "results.json").read_bytes()


def test_never_overwrites_without_force(tmp_path, capsys):
    code, out = run(tmp_path)
    before = (out / "results.json").read_bytes()
    code2, _ = run(tmp_path, "--seed", "3")
    err = capsys.readouterr().err
    assert code2 == 2 and "--force" in err and (out / "results.json").read_bytes() == before
    code3, _ = run(tmp_path, "--seed", "3", "--force")
    assert code3 == 0 and (out / "results.json").read_bytes() != before


def test_default_folder_is_new_each_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert theorem2.main(SMALL) == 0
    assert theorem2.main(SMALL) == 0
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_an_overflowing_lr_is_refused_before_it_runs(tmp_path, capsys):
    """--lr 1e308 diverged at step 1; 1e300 ran to margins of 9e300 whose normalised margin
    printed as 0: the range is checked up front (divergence inside it is still caught by step)."""
    for lr in ("1e308", "1e300", "1e-320"):
        code, out = run(tmp_path, "--lr", lr, "--step-rule", "constant")
        err = capsys.readouterr().err
        assert code == 2 and "--lr must be in [1e-06, 1e+12]" in err and len(err.strip().splitlines()) == 1
        assert not out.exists()   # no empty results folder left behind


def test_meaning_not_encoded_ex_rm_fails_too(tmp_path):
    """The theorem's condition matters: with no meaning direction, u* (and EX-RM) is near chance."""
    code, out = run(tmp_path, "--meaning-strength", "0", "--n-seeds", "4", "--steps", "2000")
    r = json.loads((out / "results.json").read_text())
    assert code == 0  # the predictions (EX-RM = u*, IM-RM = 1/2) still hold
    assert r["models"]["ex_rm"]["unseen_tokens"]["accuracy"] < 0.8


def _write_npz(path, problem, drop=()):
    arrays = {}
    for split, p in problem.splits.items():
        for key, a in (("h_prompt", p.h_x), ("h_chosen", p.h_plus), ("h_rejected", p.h_minus),
                       ("y_chosen", p.y_plus), ("y_rejected", p.y_minus)):
            arrays[f"{split}_{key}"] = a[0]
    arrays["U_ref"] = problem.U_ref[0]
    np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})


def test_representation_file(tmp_path, capsys):
    p = synthetic(seeds=[5], dim=16, vocab_size=20, n_seen=8, n_unseen=6, n_train=30, n_test=25,
                  meaning_strength=1.0, token_noise=1.0, pair_noise=0.3, prompt_similarity=0.5, init_scale=1.0)
    good = tmp_path / "reps.npz"
    _write_npz(good, p)
    code, out = run(tmp_path, "--representations", str(good))
    r = json.loads((out / "results.json").read_text())
    assert code == 0 and r["models"]["im_rm"]["unseen_tokens"]["tie_fraction"] == 1.0
    bad = tmp_path / "bad.npz"
    _write_npz(bad, p, drop=("train_h_chosen",))
    code, _ = run(tmp_path, "--representations", str(bad), name="o2")
    assert code == 2 and "lacks train_h_chosen" in capsys.readouterr().err


def test_numpy_backend_float32(tmp_path):
    code, out = run(tmp_path, "--backend", "numpy", "--dtype", "float32")
    r = json.loads((out / "results.json").read_text())
    assert code == 0 and r["models"]["im_rm"]["unseen_tokens"]["tie_fraction"] == 1.0


def test_benchmark_smoke(capsys):
    from sims import bench_gd
    assert bench_gd.main(["--steps", "3", "--repeats", "1"]) == 0
    assert "speed-up" in capsys.readouterr().out
    assert bench_gd.main(["--steps", "0"]) == 2


def test_threads_restored_after_a_run(tmp_path):
    """The run picks its thread count by size (theory/threads.py) and gives it back."""
    import torch
    before = torch.get_num_threads()
    assert run(tmp_path)[0] == 0
    assert torch.get_num_threads() == before
