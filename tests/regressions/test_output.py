"""Issue 18, output and help: what a run prints says what was predicted, in numbers, with the
tolerance a PASS used; degenerate inputs get a `warning:` line; help matches behaviour. One
row per problem: the exit code, the message's subject, and whether a results folder is left."""
import re
import subprocess
import sys

import numpy as np
import pytest

from sims import theorem2
from tests.test_inputs import good_arrays

TINY = ["--unseen-tokens", "--steps", "300", "--dim", "16", "--n-train", "24", "--n-test", "24",
        "--n-seeds", "1", "--checkpoints", "8"]


def _file(tmp_path, name, **changes):
    """A valid representation file (tests/test_inputs.py) with some arrays changed or renamed."""
    arrays = good_arrays(np.random.default_rng(0))
    for old, new in changes.pop("rename", {}).items():
        arrays = {k.replace(old, new): v for k, v in arrays.items()}
    for key, fn in changes.items():
        arrays[key] = fn(arrays)
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return str(path)


def _same_tokens(tmp_path):
    return _file(tmp_path, "same", train_y_rejected=lambda a: a["train_y_chosen"].copy())


CASES = {  # name -> (argv builder, exit code, stream, substrings, substrings that must be absent, folder left)
    # the prediction follows the tie convention (0, not 0.5, when a tie counts zero)
    "ties_zero": (lambda p: [*TINY, "--ties", "zero"], 0, "out",
                  ["0.000, all ties", "IM-RM accuracy on unseen tokens is exactly 0"], ["0.500, all ties"], True),
    # every IM-RM training pair a tie: predicted as such, and said
    "same_tokens": (lambda p: ["--representations", _same_tokens(p), "--steps", "50"], 0, "both",
                    ["warning: pairs with y_chosen == y_rejected (train 6 of 6)", "0.500, all ties (every y+ = y-"],
                    ["-> 1 as steps grow"], True),
    # flags a representation file overrides are named
    "overridden_flags": (lambda p: ["--representations", _file(p, "ok"), "--steps", "50", "--dim", "7",
                                    "--n-seeds", "3", "--meaning-strength", "2"], 0, "err",
                         ["warning: --representations", "--n-seeds 3", "--dim 7", "--meaning-strength 2.0",
                          "are not used"], [], True),
    "file_flags_not_given": (lambda p: ["--representations", _file(p, "ok"), "--steps", "50", "--beta", "0.5"],
                             0, "err", [], ["warning"], True),
    # a misspelt split is named with the name it misses
    "misspelt_split": (lambda p: ["--representations", _file(p, "typo", rename={"unseen_tokens": "unseen_token"}),
                                  "--steps", "50"], 0, "err",
                       ["warning: representation file", "unseen_token_* is not read", "did you mean unseen_tokens_*"],
                       [], True),
    "misspelt_required_key": (lambda p: ["--representations", _file(p, "typo2", rename={"train_h_prompt": "train_h_promt"}),
                                         "--steps", "50"], 2, "err",
                              ["lacks train_h_prompt", "misspelt? train_h_promt for train_h_prompt"], [], False),
    # the paper's constant step: the expected outcome is said, and the rate check passes
    "constant_step": (lambda p: [*TINY, "--step-rule", "constant"], 0, "out",
                      ["PASS (no rise above 1e-12", "u* under the constant step, slowly (O(1/log t))",
                       "expected: under the constant step", "takes about 10^"], ["FAIL"], True),
    # ... and the limit check, when asked for, fails with the reason
    "constant_step_limit": (lambda p: [*TINY, "--step-rule", "constant", "--direction-check", "limit"], 1, "out",
                            ["FAIL (measured <= 0.001)", "hint: under the constant step", "O(1/log t)",
                             "--direction-check rate"], [], True),
    "bad_direction_check": (lambda p: [*TINY, "--direction-check", "fast"], 2, "err",
                            ["--direction-check must be one of"], [], False),
    # from the second trial: the rate check under the default steps names those steps, and a
    # tolerance already met is said as met (it was "about --steps 1000 would reach 0.001")
    "rate_normalized": (lambda p: [*TINY, "--direction-check", "rate"], 0, "out",
                        ["u* under loss-normalised steps: 1 - cos(u_t, u*) falls"],
                        ["constant step", "FAIL"], True),
    "rate_tolerance_met": (lambda p: [*TINY, "--direction-check", "rate", "--direction-tol", "0.5"], 0, "out",
                           ["within --direction-tol 0.5"], ["would reach"], True),
    # ... and one checkpoint in the last decade fails no check by construction: it is refused
    "rate_one_checkpoint": (lambda p: [*TINY, "--direction-check", "rate", "--checkpoints", "1"], 2, "err",
                            ["--direction-check rate compares the checkpoints of the last decade",
                             "put fewer than two there: raise --checkpoints or --steps"], [], False),
    "constant_auto_one_checkpoint": (lambda p: [*TINY, "--step-rule", "constant", "--checkpoints", "1"], 2, "err",
                                     ["--step-rule constant checks the direction's rate", "--direction-check limit"],
                                     [], False),
    # a step or two cannot show a rate: no blame on --lr, no 10^33 steps
    "one_step": (lambda p: [*TINY, "--steps", "1", "--checkpoints", "1"], 1, "out",
                 ["hint: 1 - cos fell from 1 at step 0 to", "too few steps to extrapolate a rate", "raise --steps"],
                 ["--lr", "would reach"], True),
    "two_steps": (lambda p: [*TINY, "--steps", "2"], 1, "out", ["too few steps to extrapolate a rate"],
                  ["--lr", "would reach"], True),
    # the third trial: a tolerance 1 - cos cannot exceed made the check vacuous; the response
    # lengths sims.hf representations writes were warned as near misses of y_chosen / y_rejected
    "direction_tol_vacuous": (lambda p: [*TINY, "--direction-tol", "5"], 2, "err",
                              ["--direction-tol must be in (0, 2)"], [], False),
    "toolkit_keys_no_near_miss": (lambda p: ["--representations", _file(
        p, "lengths", **{f"{s}_n_tokens_{c}": (lambda a, s=s: np.ones(len(a[f"{s}_y_chosen"]), dtype=np.int64))
                         for s in ("train", "seen_tokens", "unseen_tokens") for c in ("chosen", "rejected")}),
        "--steps", "50"], 0, "err", [], ["warning", "did you mean"], True),
    "tiny_lr": (lambda p: [*TINY, "--lr", "1e-6"], 1, "out",
                ["1 - cos has barely moved", "the steps are too small to converge; raise --lr"], ["10^inf"], True),
}


@pytest.mark.parametrize("name", CASES)
def test_theorem2_output(name, tmp_path, capsys):
    argv, code, stream, present, absent, folder = CASES[name]
    out = tmp_path / "out"
    assert theorem2.main([*argv(tmp_path), "--out", str(out)]) == code
    captured = capsys.readouterr()
    text = {"out": captured.out, "err": captured.err, "both": captured.out + captured.err}[stream]
    for s in present:
        assert s in text, (s, text)
    for s in absent:
        assert s not in text, (s, text)
    assert out.exists() == folder
    if code == 2:
        assert captured.err.count("error:") == 1 and "Traceback" not in captured.err


def test_numbers_printed_at_four_digits_with_the_tolerance(tmp_path, capsys):
    assert theorem2.main([*TINY, "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    checks = text[text.index("checks:"):].splitlines()[1:-1]
    assert checks and all(line.strip().startswith("PASS (") for line in checks)
    printed = text[text.index("Theorem 2 replay"):text.index("results:")]
    digits = [m.replace(".", "").lstrip("0") for m in re.findall(r"\d+\.\d+", printed)]
    assert max(map(len, digits)) <= 4, printed                       # no 0.5429999999999999
    # the IM-RM on seen tokens: a number (Eq. 5 at step 1) where "moves with <h_xbar, h_x>" stood alone
    assert re.search(r"step 1 \(Eq\. 5\): [01]\.\d{3}", text)
    import json
    r = json.loads((tmp_path / "o" / "results.json").read_text())
    assert all("tolerance" in c for c in r["checks"])
    assert set(r["im_rm_predicted"]["first_step"]) == {"train", "seen_tokens", "unseen_tokens"}
    assert r["im_rm_predicted"]["first_step"]["unseen_tokens"] == 0.5   # every unseen pair ties at step 1


def test_first_step_prediction_is_eq5_of_one_real_step(tmp_path):
    """The step-1 prediction is the sign of a real GD step's margin change (one step, tiny eta)."""
    r = theorem2.run(theorem2.Config(**{"unseen_tokens": True, "steps": 1, "lr": 1e-3, "dim": 16, "n_train": 24,
                                        "n_test": 24, "n_seeds": 1, "checkpoints": 1}), log=lambda *_: None)
    for split in ("train", "seen_tokens", "unseen_tokens"):
        assert r["im_rm_predicted"]["first_step"][split] == r["models"]["im_rm"][split]["accuracy"]


def test_training_module_is_not_a_command():
    done = subprocess.run([sys.executable, "-m", "sims.training", "--help"], capture_output=True, text=True)
    assert done.returncode == 2 and "library module" in done.stderr and "python -m sims" in done.stderr


def test_exit_codes_listed(capsys):
    from sims.__main__ import main
    assert main() == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out and "141" in out and "130" in out


def _help(argv, capsys):
    hf = pytest.importorskip("sims.hf")
    with pytest.raises(SystemExit) as exc:
        hf.cli.body([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_hf_help_matches_behaviour(capsys):
    top = _help([], capsys)
    assert "141" in top and "bench.json" not in top
    bench = _help(["bench"], capsys)
    assert "results folder" in bench and "bench.json" not in bench
    score = _help(["score"], capsys)
    assert "five without" in re.sub(r"\s+", " ", top) and "reference" in score


@pytest.fixture(scope="module")
def tiny_tied(tmp_path_factory):
    """A tiny tied-embedding Llama with its tokenizer and pairs (tests/sims/hf_tiny.py)."""
    pytest.importorskip("transformers")
    from tests.sims import hf_tiny
    root = tmp_path_factory.mktemp("tied")
    tok = hf_tiny.tokenizer(root / "tok")
    path = hf_tiny.save(hf_tiny.model("llama", tied=True, seed=0), tok, root / "llama")
    return path, hf_tiny.write_jsonl(root / "pairs.jsonl", hf_tiny.PAIRS)


def test_hf_step_on_tied_model_shows_only_the_toolkits_warning(tiny_tied, tmp_path, capfd):
    from sims import hf
    model, pairs = tiny_tied
    out = tmp_path / "step.json"
    assert hf.main(["step", "--model", model, "--train", pairs, "--eval", pairs, "--out", str(out)]) == 0
    err = capfd.readouterr().err
    assert "tied input and output embeddings" in err and "Deprecat" not in err and out.exists()
    assert [line for line in err.splitlines() if line.strip()] == [l for l in err.splitlines() if l.startswith("warning:")]


def test_hf_score_without_ref_names_what_it_leaves_out(tiny_tied, tmp_path, capsys):
    from sims import hf
    model, pairs = tiny_tied
    out = tmp_path / "scores.json"
    assert hf.main(["score", "--model", model, "--pairs", pairs, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5 of the 6 conventions: rewardbench is left out" in text and "--ref" in text
    import json
    assert "rewardbench" in json.loads(out.read_text())["left_out"]


def test_hf_bench_out_json_is_a_folder(tmp_path, capsys):
    hf = pytest.importorskip("sims.hf")
    out = tmp_path / "bench.json"
    assert hf.main(["bench", "--model", "random", "--hidden", "16", "--layers", "1", "--vocab", "64",
                    "--n-pairs", "2", "--length", "4", "--out", str(out)]) == 0
    assert "bench writes a results folder" in capsys.readouterr().err and (out / "results.json").is_file()


def test_dynamics_states_the_tolerance_of_every_check(tmp_path, capsys):
    """From the second fresh-user trial: sims.dynamics printed 'predicted 4.0, measured 4.004'
    with no pass band, and its results had no tolerance field (theorem2's and theorem1's do)."""
    import json

    from sims import dynamics
    assert dynamics.main(["--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    checks = json.loads((tmp_path / "d/results.json").read_text())["checks"]
    assert all(c.get("tolerance") for c in checks)
    assert out.count("(tolerance: ") == len(checks) and "3.5 <= measured <= 4.5" in out


def test_step_estimate_is_not_rounded_to_thousands():
    """1 - cos = 0.3333 / t reaches 1e-3 at t = 333.3: suggested as 340 (it was 1000)."""
    t = np.geomspace(1, 100, 12)
    steps, gap = [0, *t], np.array([[1.0], *(0.3333 / t[:, None])])
    config = theorem2.Config(steps=100)
    assert theorem2.steps_hint(steps, gap, config).endswith("t^-1.00: about --steps 340 would reach 0.001")
    assert [theorem2._round_up(x) for x in (7, 99.1, 237.2, 12345)] == [7, 100, 240, 13000]
    # the worst seed is what the check measures, so it is what the hint extrapolates
    two = np.concatenate([gap, gap * 3], axis=1)
    assert "about --steps 1000 would reach" in theorem2.steps_hint(steps, two, config)
