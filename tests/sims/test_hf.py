"""sims.hf on tiny random GPT-2 and Llama models built in the test (nothing downloaded).

The oracles: the model's own forward (hidden_states, logits) for the states and padding;
TRL's DPOTrainer (its tokenisation, collator and log-probability code) for the rewards; one
sequence at a time for RewardBench's reference-free variants.
"""
import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from sims import hf  # noqa: E402
from tests.sims import hf_tiny as T  # noqa: E402
from tests.helpers import error_line

MODELS = [("gpt2", False), ("gpt2", True), ("llama", False), ("llama", True)]
EPS32 = float(np.finfo(np.float32).eps)


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/sims/conftest.py


@pytest.mark.parametrize("kind,tied", MODELS)
def test_states_are_what_lm_head_consumes_with_either_padding(kind, tied, tok):
    m = T.model(kind, tied=tied, seed=0, dtype=torch.float64)
    assert hf.head_of(m).tied is tied
    enc = hf.encode_pairs(tok, T.PAIRS, eos=True)
    seqs = hf.split_responses(enc)[0] + hf.split_responses(enc)[1]
    right = hf.run_batches(m, seqs, batch_size=3, side="right")
    left = hf.run_batches(m, seqs, batch_size=8, side="left")
    for i, (p, r) in enumerate(seqs):
        ids = torch.tensor([p + r])
        out = m(ids, output_hidden_states=True)
        K = len(r)
        h_ref = out.hidden_states[-1][0, len(p) - 1:len(p) - 1 + K]        # after the final norm
        lp_ref = torch.log_softmax(out.logits[0, len(p) - 1:-1], -1).gather(-1, ids[0, len(p):, None])[:, 0]
        for got in (right, left):
            torch.testing.assert_close(got["h"][i, :K], h_ref, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(got["logp"][i, :K], lp_ref, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(got["h_last"][i], out.hidden_states[-1][0, -1], rtol=1e-12, atol=1e-12)
            assert got["mask"][i].sum() == K and torch.all(got["h"][i, K:] == 0)


def _trl_rewards(model, ref, tok, beta, tmp_path):
    """Per-pair chosen/rejected rewards and the batch metrics, from TRL's own code."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, report_to=[], use_cpu=True,
                     bf16=False, fp16=False, save_strategy="no")
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(T.PAIRS),
                         processing_class=tok)
    ds = trainer.train_dataset
    batch = trainer.data_collator([ds[i] for i in range(len(ds))])
    trainer.model.eval()
    pc, pr = trainer.compute_ref_log_probs(trainer.model, batch)     # TRL's sequence log-probs
    rc, rr = trainer.compute_ref_log_probs(trainer.ref_model, batch)
    trainer._compute_loss(trainer.model, batch, return_outputs=False)  # logs TRL's reward metrics
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    return (beta * (pc - rc)).double(), (beta * (pr - rr)).double(), metrics, (pc.abs() + rc.abs(), pr.abs() + rr.abs())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind,tied", MODELS)
def test_score_matches_trl(kind, tied, dtype, tok, tmp_path):
    beta = 0.1
    m, ref = T.model(kind, tied=tied, seed=0, dtype=dtype), T.model(kind, tied=tied, seed=1, dtype=dtype)
    ours = hf.score(m, ref, tok, T.PAIRS, beta=beta, batch_size=3)["conventions"]["trl"]
    c, r, metrics, (sc, sr) = _trl_rewards(m, ref, tok, beta, tmp_path)
    # TRL computes log-probs in float32 (its fused lm head), whatever the model's dtype
    for mine, trl, size in ((ours["chosen"], c, sc), (ours["rejected"], r, sr)):
        err = (torch.tensor(mine, dtype=torch.float64) - trl).abs()
        assert torch.all(err <= 8 * EPS32 * beta * size.double()), (err, size)
    assert ours["accuracy"] == pytest.approx(metrics["rewards/accuracies"], abs=0)   # ties count 0 in both
    assert np.mean(ours["chosen"]) == pytest.approx(metrics["rewards/chosen"], rel=1e-5, abs=1e-6)
    assert np.mean(ours["rejected"]) == pytest.approx(metrics["rewards/rejected"], rel=1e-5, abs=1e-6)
    margins = np.subtract(ours["chosen"], ours["rejected"])
    assert margins.mean() == pytest.approx(metrics["rewards/margins"], rel=1e-5, abs=1e-6)


def test_score_conventions(tok):
    m, ref = T.model("llama", tied=False, seed=0, dtype=torch.float64), T.model("llama", tied=False, seed=1, dtype=torch.float64)
    beta = 0.05
    res = hf.score(m, ref, tok, T.PAIRS, beta=beta)["conventions"]
    assert set(res) == set(hf.CONVENTIONS)
    # RewardBench with a reference is TRL's reward without beta
    np.testing.assert_allclose(np.array(res["rewardbench"]["chosen"]) * beta, res["trl"]["chosen"], rtol=1e-12)
    # reference-free variants, one unpadded sequence at a time
    for i, (p, c, _) in enumerate(hf.encode_pairs(tok, T.PAIRS, eos=True)):
        ids = torch.tensor([p + c])
        lp = torch.log_softmax(m(ids).logits[0, len(p) - 1:-1], -1).gather(-1, ids[0, len(p):, None])[:, 0]
        assert res["rewardbench_ref_free_sum"]["chosen"][i] == pytest.approx(lp.sum().item(), rel=1e-12)
        assert res["rewardbench_ref_free_avg"]["chosen"][i] == pytest.approx(lp.mean().item(), rel=1e-12)
        assert res["rewardbench_ref_free_norm"]["chosen"][i] == pytest.approx(-lp.norm().item(), rel=1e-12)
    # the paper's: no EOS appended, ties 1/2; normalised margin as theory.rewards computes it
    from theory.rewards import normalised_margin
    rp, rm = (torch.tensor(res["paper"][k], dtype=torch.float64) for k in ("chosen", "rejected"))
    assert res["paper"]["normalised_margin"] == pytest.approx(float(normalised_margin(rp, rm)), rel=1e-12)
    assert res["paper"]["ties"] == "half" and res["trl"]["ties"] == "zero"
    assert res["paper"]["chosen"] != res["trl"]["chosen"]              # EOS moves the rewards


def test_policy_equal_to_reference_is_all_ties(tok):
    m = T.model("gpt2", tied=True, seed=0)
    res = hf.score(m, m, tok, T.PAIRS, beta=0.1)["conventions"]
    assert res["paper"]["tie_fraction"] == 1.0 and res["paper"]["accuracy"] == 0.5
    assert res["trl"]["accuracy"] == 0.0


def test_conversational_pairs(tok):
    tok = type(tok).from_pretrained(tok.name_or_path) if tok.name_or_path else tok
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}assistant : {% endif %}")
    pairs = [{"prompt": [{"role": "user", "content": "is the sky blue ?"}],
              "chosen": [{"role": "assistant", "content": "yes"}],
              "rejected": [{"role": "assistant", "content": "no"}]}]
    (p, c, r), = hf.encode_pairs(tok, pairs, eos=True)
    assert tok.decode(c).strip() == "yes" and tok.decode(r).strip() == "no"


def test_cli_score_and_bad_input(tok, tmp_path, capsys):
    path = T.save(T.model("gpt2", tied=False, seed=0), tok, tmp_path / "m")
    ref = T.save(T.model("gpt2", tied=False, seed=1), tok, tmp_path / "r")
    pairs = T.write_jsonl(tmp_path / "p.jsonl", T.PAIRS)
    out = tmp_path / "s.json"
    assert hf.main(["score", "--model", path, "--ref", ref, "--pairs", pairs, "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert len(r["conventions"]["paper"]["chosen"]) == len(T.PAIRS)
    capsys.readouterr()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b"}\n')
    for argv in (["score", "--model", path, "--pairs", str(bad), "--out", str(tmp_path / "x.json")],
                 ["score", "--model", path, "--pairs", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "x.json")],
                 ["score", "--model", str(tmp_path / "nomodel"), "--pairs", pairs, "--out", str(tmp_path / "x.json")],
                 ["score", "--model", path, "--pairs", pairs, "--beta", "-1", "--out", str(tmp_path / "x.json")],
                 ["score", "--model", path, "--pairs", pairs, "--out", str(out)],
                 ["nonsense"]):
        assert hf.main(argv) == 2, argv
        error_line(capsys.readouterr().err)
