"""Section 3.2 on a real model (issue 25, item 4): the Hamiltonian pairs as text, every cycle of a
graph found, the prompt-cached log-probs equal to whole-sequence ones, and the generation study
end to end on a tiny random Llama trained by `python -m sims.hf train`."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sims.graphs import all_orders, is_hamiltonian_cycle, planted_graphs
from sims.section32 import data

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("n,p,seed", [(5, 0.3, 0), (6, 0.4, 1), (6, 0.9, 2), (7, 0.2, 3)])
def test_cycle_orders_are_every_hamiltonian_order(n, p, seed):
    adj, _ = planted_graphs(np.random.default_rng(seed), 4, n, p)
    orders = all_orders(n)
    for a in adj:
        brute = orders[is_hamiltonian_cycle(a[None], orders[None])[0]]
        found = data.cycle_orders(a)
        assert len(found) == len(brute) and {tuple(o) for o in found} == {tuple(o) for o in brute}


def test_parse_and_validity():
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]
    assert data.parse_order(" 0 1 2 3 ", 4) == [0, 1, 2, 3]
    assert data.parse_order("0, 1, 2, 3", 4) == [0, 1, 2, 3]
    for bad in ("0 1 2", "0 1 2 3 0", "0 1 2 4", "0 1 2 x", "cycle: 0 1 2 3", ""):
        assert data.parse_order(bad, 4) is None, bad
    assert data.is_valid("1 2 3 0", edges, 4) and data.is_valid("3 2 1 0", edges, 4)
    assert not data.is_valid("0 1 3 2", edges, 4)           # 1-3 is no edge
    assert not data.is_valid("0 1 1 2", edges, 4)           # not a permutation


def test_the_committed_pairs_are_what_the_generator_writes(tmp_path):
    assert data.main(["--out", str(tmp_path)]) == 0
    for name in ("train", "test"):
        committed = (ROOT / "data/section32" / f"{name}.jsonl").read_bytes()
        assert hashlib.sha256((tmp_path / f"{name}.jsonl").read_bytes()).digest() == hashlib.sha256(committed).digest()
    rows = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 200 and all(data.is_valid(r["chosen"], r["edges"], 10) for r in rows)
    assert not any(data.is_valid(r["rejected"], r["edges"], 10) for r in rows)
    train = {json.loads(line)["prompt"] for line in (tmp_path / "train.jsonl").read_text().splitlines()}
    assert len(train) == 1000 and not train & {r["prompt"] for r in rows}     # separate graphs


@pytest.mark.parametrize("argv,says", [(["--vertices", "11"], "--vertices"), (["--p", "1"], "--p"),
                                       (["--n-test", "0"], "--n-train and --n-test"), (["--seed", "-1"], "--seed")])
def test_bad_flags_one_line(argv, says, tmp_path, capsys):
    assert data.main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and not (tmp_path / "o").exists()


# --- a tiny model: a word-level tokenizer that reads the task's text --------------------------

def _tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = ("an undirected graph has the vertices to and edges give a hamiltonian cycle : every vertex once , "
             "in order visits them separated by spaces . - An Give").split() + [str(i) for i in range(10)]
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *dict.fromkeys(words)])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                  eos_token="<eos>")
    tok.save_pretrained(path)
    return tok


@pytest.fixture
def tiny(tmp_path):
    pytest.importorskip("transformers")
    from tests.sims import hf_tiny as T
    tok = _tokenizer(tmp_path / "m")
    m = T.model("llama", tied=True, seed=0, vocab=64)
    m.config.max_position_embeddings = 256
    T.save(m, tok, tmp_path / "m")
    return tmp_path / "m", tok


def test_cached_log_probs_equal_whole_sequences(tiny):
    import torch

    from sims.hf.model import load, run_batches
    from sims.section32.generation import response_log_probs
    folder, tok = tiny
    model = load(str(folder))
    prompt = tok("an undirected graph has the vertices 0 to 4 .")["input_ids"]
    responses = [tok(t)["input_ids"] for t in ("0 1 2 3 4", "4 3", "2 0 1 3 4 <eos>", "1")]
    cached = response_log_probs(model, prompt, responses, batch_size=3)
    whole = run_batches(model, [(prompt, r) for r in responses], batch_size=2, states=False)
    expect = (whole["logp"].double() * whole["mask"]).sum(-1).numpy()
    # float32 forward passes of two shapes: rounding of the logits' size, summed over <= 6 tokens
    assert np.allclose(cached, expect, rtol=0, atol=1e-4 * max(1.0, np.abs(expect).max()))
    assert torch.isfinite(torch.tensor(cached)).all()


@pytest.mark.usefixtures("one_thread")
def test_generation_end_to_end_on_a_tiny_model(tiny, tmp_path):
    from sims import hf
    from sims.section32 import generation
    folder, _ = tiny
    assert data.main(["--out", str(tmp_path / "d"), "--n-train", "4", "--n-test", "3", "--vertices", "6",
                      "--p", "0.3"]) == 0
    argv = ["train", "--model", str(folder), "--train", str(tmp_path / "d/train.jsonl"),
            "--eval", f"test={tmp_path / 'd/test.jsonl'}", "--kinds", "im", "--lr", "1e-2", "--batch", "2",
            "--micro-batch", "2", "--epochs", "1", "--precision", "fp32", "--out", str(tmp_path / "run")]
    assert hf.main(argv) == 0
    code = generation.main(["--run", str(tmp_path / "run"), "--pairs", str(tmp_path / "d/test.jsonl"),
                            "--max-new-tokens", "8", "--out", str(tmp_path / "g")])
    r = json.loads((tmp_path / "g/results.json").read_text())
    assert code == 0 and r["checks"][0]["passed"] is True          # Theorem 1's bound on every graph
    s = r["seeds"]["0"]
    assert s["sampled"]["graphs"] == 3 and 0 <= s["sampled"]["rate"] <= 1
    assert 0 < s["exact"]["mass"] <= 1 and s["exact"]["largest_excess_nats"] <= generation.BOUND_SLACK
    train = json.loads((tmp_path / "run/results.json").read_text())
    assert s["test_accuracy"] == train["runs"]["im"]["0"]["checkpoints"][-1]["evals"]["test"]["accuracy"]
    assert r["orders"] == [len(data.cycle_orders(data.adjacency(json.loads(line)["edges"], 6)))
                           for line in (tmp_path / "d/test.jsonl").read_text().splitlines()]
    arrays = np.load(tmp_path / "g/arrays.npz")
    assert np.all(arrays["seed0_log_mass"] <= arrays["seed0_log_bound"] + generation.BOUND_SLACK)
    assert arrays["log_ref_mass"].shape == (3,) and list(arrays["orders"]) == r["orders"]
    # the results may not land on the training run (with --force they would replace it)
    for out in (tmp_path / "run", tmp_path / "run/sub", tmp_path):
        assert generation.main(["--run", str(tmp_path / "run"), "--pairs", str(tmp_path / "d/test.jsonl"),
                                "--out", str(out), "--force"]) == 2
    assert (tmp_path / "run/models/im-seed0").is_dir()
    # the run evaluated its test set on another file: refused
    other = tmp_path / "other.jsonl"
    other.write_text((tmp_path / "d/test.jsonl").read_text().splitlines()[0] + "\n")
    assert generation.main(["--run", str(tmp_path / "run"), "--pairs", str(other), "--out", str(tmp_path / "g2")]) == 2


@pytest.mark.parametrize("row,says", [
    ({"edges": [[0.5, 1.7]]}, "integer vertex ids"), ({"edges": [[True, False]]}, "integer vertex ids"),
    ({"edges": [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]}, "not a Hamiltonian cycle"),
    ({"chosen": "a b c d e f"}, "not a Hamiltonian cycle"), ({"edges": [[0, 9]]}, "do not fit")])
def test_generation_refuses_bad_pairs_in_one_line(row, says, tmp_path, capsys):
    from sims.section32 import generation
    assert data.main(["--out", str(tmp_path / "d"), "--n-train", "2", "--n-test", "2", "--vertices", "6", "--p", "0.3"]) == 0
    good = json.loads((tmp_path / "d/test.jsonl").read_text().splitlines()[0])
    (tmp_path / "bad.jsonl").write_text(json.dumps({**good, **row}) + "\n")
    (tmp_path / "run").mkdir()
    assert generation.main(["--run", str(tmp_path / "run"), "--pairs", str(tmp_path / "bad.jsonl"),
                            "--out", str(tmp_path / "g")]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and says in err[0] and not (tmp_path / "g").exists()


@pytest.mark.parametrize("what", ["no run", "no-save run", "not a folder", "runs a list", "no checkpoints"])
def test_generation_refuses_bad_runs_in_one_line(what, tmp_path, capsys):
    from sims.section32 import generation
    pairs = tmp_path / "d"
    assert data.main(["--out", str(pairs), "--n-train", "2", "--n-test", "2", "--vertices", "6", "--p", "0.3"]) == 0
    run = tmp_path / "run"
    if what == "no-save run":
        run.mkdir()
        (run / "results.json").write_text(json.dumps({"runs": {"im": {"0": {"checkpoints": [{"evals": {}}]}}}}))
    elif what == "not a folder":
        run.write_text("x")
    elif what in ("runs a list", "no checkpoints"):
        run.mkdir()
        im = [] if what == "runs a list" else {"0": {"checkpoints": []}}
        (run / "results.json").write_text(json.dumps({"runs": {"im": im or [{"x": 1}]}}))
    argv = ["--pairs", str(pairs / "test.jsonl"), "--out", str(tmp_path / "g")] + ([] if what == "no run" else
                                                                                   ["--run", str(run)])
    assert generation.main(argv) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and "--run" in err[0] and not (tmp_path / "g").exists()
