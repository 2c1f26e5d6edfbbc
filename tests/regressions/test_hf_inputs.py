"""From a fresh-user trial of the real-model commands (issues 16 and 17): inputs that reached
exit 4 ("internal error") or that the help did not describe. Each case: exit 2, one line naming
the array or flag, nothing written."""
import numpy as np
import pytest

pytest.importorskip("transformers")
from sims.hf import cli as hf_cli  # noqa: E402


def test_analyse_names_a_split_whose_arrays_disagree_in_shape(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "r.npz", train_h_chosen=rng.standard_normal((10, 8)) + 1,
             train_h_rejected=rng.standard_normal((10, 8)) - 1,
             seen_tokens_h_chosen=rng.standard_normal((5, 6)), seen_tokens_h_rejected=rng.standard_normal((5, 8)))
    code = hf_cli.main(["analyse", "--representations", str(tmp_path / "r.npz"), "--out", str(tmp_path / "a.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "seen_tokens_h_chosen has shape (5, 6)" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npz"]


def test_analyse_names_a_missing_half_of_a_split(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "r.npz", train_h_chosen=rng.standard_normal((10, 8)) + 1,
             train_h_rejected=rng.standard_normal((10, 8)) - 1, shifted_h_chosen=rng.standard_normal((5, 8)))
    code = hf_cli.main(["analyse", "--representations", str(tmp_path / "r.npz"), "--out", str(tmp_path / "a.json")])
    assert code == 2 and "lacks shifted_h_rejected" in capsys.readouterr().err


@pytest.mark.parametrize("hidden", ["1000", "100"])
def test_bench_random_width_must_split_into_heads(hidden, tmp_path, capsys):
    code = hf_cli.main(["bench", "--model", "random", "--hidden", hidden, "--n-pairs", "1", "--length", "8",
                        "--out", str(tmp_path / "b")])
    assert code == 2 and "--hidden of --model random must be at most 64 or a multiple of 64" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_step_help_states_the_eta_range(capsys):
    with pytest.raises(SystemExit):
        hf_cli.main(["step", "--help"])
    assert "learning rate of the step, in [1e-30, 1e4]" in " ".join(capsys.readouterr().out.split())


def test_boolean_hidden_states_are_refused_by_analyse_and_theorem2(tmp_path, capsys):
    """From the second fresh-user trial: bool arrays reached NumPy's bool subtraction (exit 4)
    in `hf analyse`, while sims.theorem2 ran on them; both now refuse them in one line."""
    from sims import theorem2
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n, toks in (("train", 10, (0, 1)), ("seen_tokens", 4, (0, 1))):
        arrays[f"{s}_h_prompt"] = rng.standard_normal((n, 4)) > 0
        arrays[f"{s}_h_chosen"] = rng.standard_normal((n, 4)) > 0
        arrays[f"{s}_h_rejected"] = rng.standard_normal((n, 4)) > 0
        arrays[f"{s}_y_chosen"], arrays[f"{s}_y_rejected"] = np.full(n, toks[0]), np.full(n, toks[1])
    np.savez(tmp_path / "b.npz", **arrays)
    assert hf_cli.main(["analyse", "--representations", str(tmp_path / "b.npz"), "--out", str(tmp_path / "a.json")]) == 2
    assert "must hold real numbers (got dtype bool)" in capsys.readouterr().err
    assert theorem2.main(["--representations", str(tmp_path / "b.npz"), "--out", str(tmp_path / "t")]) == 2
    assert "must hold real numbers (got dtype bool)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npz"]
