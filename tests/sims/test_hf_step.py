"""sims.hf step and representations on tiny random models (float64; nothing downloaded).

Oracles: the autograd tangent eta <grad r, -grad L> (per response, reverse mode), and the
actual change of the rewards after one gradient step of a real model whose lm_head alone
trains (Eq. 5 is first order: its error shrinks as eta^2).
"""
import json
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from sims import hf  # noqa: E402
from sims.cli import UsageError  # noqa: E402
from sims.hf.step import step  # noqa: E402
from tests.sims import hf_tiny as T  # noqa: E402
from tests.helpers import error_line

BETA = 0.5


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/sims/conftest.py


def _eval_seqs(tok):
    enc = hf.encode_pairs(tok, T.PARAPHRASES, eos=False)
    return [s for pair in zip(*hf.split_responses(enc)) for s in pair]


def _logps(model, seqs):
    return hf.run_batches(model, seqs, states=False)["logp"].sum(-1)


def _dpo_step_change(model, ref, tok, eta, param):
    """Rewards' actual change after one GD step (lr eta, mean DPO loss) on `param` alone."""
    train = hf.encode_pairs(tok, T.PAIRS, eos=False)
    chosen, rejected = hf.split_responses(train)
    evals = _eval_seqs(tok)
    ref_m = _logps(ref, chosen) - _logps(ref, rejected)
    head = hf.head_of(model)
    W = dict(model.named_parameters())[param]
    W.requires_grad_(True)
    lp = lambda seqs: hf.forward(model, head, hf.collate(seqs))[1].sum(-1)
    loss = torch.nn.functional.softplus(-BETA * (lp(chosen) - lp(rejected) - ref_m)).mean()
    (g,) = torch.autograd.grad(loss, W)
    W.requires_grad_(False)
    before = _logps(model, evals)
    with torch.no_grad():
        W -= eta * g
    after = _logps(model, evals)
    with torch.no_grad():
        W += eta * g
    return BETA * (after - before)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_eq5_is_the_first_order_change_of_a_real_step(kind, tok):
    m = T.model(kind, tied=False, seed=0, dtype=torch.float64)
    ref = T.model(kind, tied=False, seed=1, dtype=torch.float64)      # its own body: enters via g only
    errors = []
    for eta in (2e-2, 1e-2):
        res = step(m, ref, tok, T.PAIRS, T.PARAPHRASES, beta=BETA, eta=eta)
        assert res["method"] == "eq5" and not res["tied_embeddings"]
        pred = torch.tensor([r["delta_r_im"] for r in res["responses"]], dtype=torch.float64)
        actual = _dpo_step_change(m, ref, tok, eta, "lm_head.weight")
        errors.append(float((pred - actual).abs().max() / actual.abs().max()))
        # the exact tangent by autograd through the model agrees with Eq. 5 to rounding
        auto = step(m, ref, tok, T.PAIRS, T.PARAPHRASES, beta=BETA, eta=eta, method="autograd")
        np.testing.assert_allclose([r["delta_r_im"] for r in auto["responses"]], pred.numpy(), rtol=1e-9, atol=1e-15)
    assert errors[0] < 0.1
    assert 1.6 < errors[0] / errors[1] < 2.4, errors     # relative error O(eta): the change is first order


def test_wrong_way_listing(tok):
    m = T.model("llama", tied=False, seed=0, dtype=torch.float64)
    ref = T.model("llama", tied=False, seed=1, dtype=torch.float64)
    res = step(m, ref, tok, T.PAIRS, T.PARAPHRASES, beta=BETA, eta=1e-2)
    assert len(res["responses"]) == 2 * len(T.PARAPHRASES)
    for r in res["responses"]:
        want = 1 if r["response"] == "chosen" else -1
        assert r["wrong_way_im"] == (r["delta_r_im"] * want < 0)
    assert [w["pair"] for w in res["wrong_way"]] == [r["pair"] for r in res["responses"] if r["wrong_way_im"]]
    for w in res["wrong_way"]:
        for k in ("rho_chosen", "rho_rejected"):
            assert -2 <= w[k]["min"] <= w[k]["mean"] <= w[k]["max"] <= 2


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_tied_embeddings_warn_and_use_the_exact_tangent(kind, tok):
    m = T.model(kind, tied=True, seed=0, dtype=torch.float64)
    ref = T.model(kind, tied=True, seed=1, dtype=torch.float64)
    eta = 1e-2
    with pytest.warns(UserWarning, match="tied input and output embeddings"):
        res = step(m, ref, tok, T.PAIRS, T.PARAPHRASES, beta=BETA, eta=eta)
    assert res["method"] == "autograd" and res["tied_embeddings"]
    got = torch.tensor([r["delta_r_im"] for r in res["responses"]], dtype=torch.float64)
    # oracle: per-response reverse-mode gradients over the tied matrix, dotted with -eta grad L
    name = hf.head_of(m).name
    W = dict(m.named_parameters())[name]
    head = hf.head_of(m)
    chosen, rejected = hf.split_responses(hf.encode_pairs(tok, T.PAIRS, eos=False))
    ref_m = _logps(ref, chosen) - _logps(ref, rejected)
    W.requires_grad_(True)
    lp = lambda seqs: hf.forward(m, head, hf.collate(seqs))[1].sum(-1)
    loss = torch.nn.functional.softplus(-BETA * (lp(chosen) - lp(rejected) - ref_m)).mean()
    (gL,) = torch.autograd.grad(loss, W)
    want = torch.stack([(torch.autograd.grad(BETA * lp([s])[0], W)[0] * (-eta * gL)).sum()
                        for s in _eval_seqs(tok)])
    W.requires_grad_(False)
    # Llama's RMSNorm computes in float32 even in a float64 model: gradients through the body
    # (the tied matrix is also the input embedding) agree to float32 rounding there
    rtol = 1e-9 if kind == "gpt2" else 100 * float(np.finfo(np.float32).eps)
    torch.testing.assert_close(got, want, rtol=rtol, atol=1e-15)
    # and the head-only Eq. 5 misses the input side's share
    head_only = torch.tensor([r["delta_r_im_eq5_head_only"] for r in res["responses"]], dtype=torch.float64)
    assert (head_only - got).abs().max() > 0.05 * got.abs().max()
    # the real step of the tied matrix: the tangent is its first-order change
    actual = _dpo_step_change(m, ref, tok, eta, name)
    assert (got - actual).abs().max() < 0.1 * actual.abs().max()


def test_representations_file_feeds_theorem2_and_footnote3(tok, tmp_path, capsys):
    m = T.model("llama", tied=False, seed=0)
    path = T.save(m, tok, tmp_path / "m")
    # one-token paraphrases: their (first) tokens never occur in training, Theorem 2's unseen tokens
    shifted = [{"prompt": p["prompt"], "chosen": c, "rejected": r} for p, c, r in
               zip(T.PARAPHRASES * 2, [" certainly", " absolutely"] * 3, [" not really", " maybe", " bad"] * 2)]
    train, para = T.write_jsonl(tmp_path / "t.jsonl", T.PAIRS), T.write_jsonl(tmp_path / "s.jsonl", shifted)
    out = tmp_path / "reps.npz"
    assert hf.main(["representations", "--model", path, "--train", train, "--heldout", train,
                    "--shifted", para, "--out", str(out), "--analyse"]) == 0
    from sims.representations import load_pairs
    prob = load_pairs(str(out))                                   # the format theorem2 reads, as it is
    assert "unseen_tokens" in prob.splits                        # the paraphrases' first tokens are new
    with np.load(out) as f:
        a = {k: f[k] for k in f.files}
    D = m.config.hidden_size
    assert a["train_h_chosen"].shape == (len(T.PAIRS), D) and a["shifted_y_chosen"].shape == (len(shifted),)
    # h_prompt is the state lm_head consumes at the last prompt position
    (p, c, _), = hf.encode_pairs(tok, T.PAIRS[:1], eos=False)
    hs = m(torch.tensor([p + c]), output_hidden_states=True).hidden_states[-1][0]
    np.testing.assert_allclose(a["train_h_prompt"][0], hs[len(p) - 1].detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a["train_h_chosen"][0], hs[-1].detach().numpy(), rtol=1e-6, atol=1e-6)
    assert a["train_y_chosen"][0] == c[0]
    r = json.loads(out.with_suffix(".json").read_text())
    assert r["u_star"]["certificate_worst"] < 1e-6
    # Footnote 3 statistics against a direct computation
    from theory.max_margin import max_margin
    ustar = max_margin(a["train_h_chosen"] - a["train_h_rejected"]).u
    Z = a["shifted_h_chosen"] - a["shifted_h_rejected"]
    cos = Z @ ustar / np.linalg.norm(Z, axis=1) / np.linalg.norm(ustar)
    s = r["splits"]["shifted"]
    assert s["cosine"]["mean"] == pytest.approx(cos.mean(), rel=1e-6)
    assert s["cosine"]["median"] == pytest.approx(np.median(cos), rel=1e-6)
    assert s["cosine"]["fraction_positive"] == np.mean(cos > 0)
    assert s["u_star_accuracy_ties_zero"] == np.mean(Z @ ustar > 0)
    assert r["splits"]["train"]["u_star_accuracy"] == 1.0
    # theorem2 takes the file as it is
    from sims import theorem2
    capsys.readouterr()
    code = theorem2.main(["--representations", str(out), "--unseen-tokens", "--steps", "200",
                          "--checkpoints", "4", "--out", str(tmp_path / "t2")])
    assert code in (0, 1)                                         # runs; the checks are the model's business
    assert json.loads((tmp_path / "t2" / "results.json").read_text())["models"]["im_rm"]["unseen_tokens"]["tie_fraction"] == 1.0
    # multi-token paraphrases that share a first token with training: no unseen_tokens split
    arrays, notes = hf.write_representations(m, tok, train=T.PAIRS, shifted=T.PARAPHRASES)
    assert "unseen_tokens_h_chosen" not in arrays and "shifted_h_chosen" in arrays
    assert "seen_tokens_h_chosen" in arrays and any("share" in n for n in notes)


def test_cli_step_and_bad_input(tok, tmp_path, capsys):
    path = T.save(T.model("gpt2", tied=True, seed=0), tok, tmp_path / "m")
    ref = T.save(T.model("gpt2", tied=True, seed=1), tok, tmp_path / "r")
    train, ev = T.write_jsonl(tmp_path / "t.jsonl", T.PAIRS), T.write_jsonl(tmp_path / "e.jsonl", T.PARAPHRASES)
    out = tmp_path / "step.json"
    assert hf.main(["step", "--model", path, "--ref", ref, "--train", train, "--eval", ev, "--out", str(out)]) == 0
    screen = capsys.readouterr()
    err = screen.err
    # the screen speaks in pairs, each named by its line in --eval, with its margin change
    res = json.loads(out.read_text())
    lose = [i for i, d in enumerate(res["eval_margin_change_im"]) if d < 0]
    assert f"{len(lose)} of {len(T.PARAPHRASES)} evaluation pairs lose margin" in screen.out
    assert res["eval_places"] == ["line 1", "line 2", "line 3"]
    for i in lose:
        assert f"  line {i + 1}: margin change IM {res['eval_margin_change_im'][i]:+.3g}" in screen.out
    assert "warning: tied input and output embeddings" in err
    assert json.loads(out.read_text())["method"] == "autograd"
    for argv in (["step", "--model", path, "--ref", ref, "--train", train, "--eval", ev, "--eta", "0",
                  "--out", str(tmp_path / "x.json")],
                 ["analyse", "--representations", str(tmp_path / "none.npz"), "--out", str(tmp_path / "y.json")],
                 ["representations", "--model", path, "--train", train, "--out", str(tmp_path / "z.npz")]):
        assert hf.main(argv) == 2, argv
        error_line(capsys.readouterr().err)


@pytest.mark.parametrize("tied", [False, True])
def test_identical_training_pairs_move_nothing(tok, tied):
    """From the third fresh-user trial: a training pair with chosen == rejected has a DPO
    gradient of exactly 0, but computed it was 1e-18 noise that `step` counted as responses
    moving the wrong way. The step on the mean over B pairs, one of them identical, is the step
    on the other B - 1 with eta scaled by (B - 1) / B; every pair identical is refused."""
    m = T.model("llama", tied=tied, seed=0, dtype=torch.float64)
    ref = T.model("llama", tied=tied, seed=1, dtype=torch.float64)
    same = {**T.PAIRS[0], "rejected": T.PAIRS[0]["chosen"]}
    B, eta = len(T.PAIRS) + 1, 1e-2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                   # the tied-embeddings notice
        mixed = step(m, ref, tok, [same, *T.PAIRS], T.PARAPHRASES, beta=BETA, eta=eta)
        plain = step(m, ref, tok, T.PAIRS, T.PARAPHRASES, beta=BETA, eta=eta * (B - 1) / B)
        assert mixed["identical_training_pairs"] == 1 and mixed["eta"] == eta and mixed["n_train"] == B
        np.testing.assert_allclose([r["delta_r_im"] for r in mixed["responses"]],
                                   [r["delta_r_im"] for r in plain["responses"]], rtol=1e-12, atol=0)
        with pytest.raises(UsageError, match="every training pair has chosen == rejected"):
            step(m, ref, tok, [same], T.PARAPHRASES, beta=BETA, eta=eta)


def test_eq5_asked_on_tied_embeddings_says_what_it_computed(tok):
    """--method eq5 on a tied model computes Eq. 5 on lm_head alone, and its warning and notes say
    so (not that it used the autograd tangent); --method autograd says it used the tangent."""
    m = T.model("llama", tied=True, seed=0, dtype=torch.float64)
    for method, says, extra in (("eq5", "as --method eq5 asks", False), ("autograd", "using the exact autograd", True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = step(m, m, tok, T.PAIRS, T.PARAPHRASES, beta=BETA, eta=1e-2, method=method)
        assert any(says in str(w.message) for w in caught) and res["method"] == method
        assert ("delta_r_im_eq5_head_only" in res["responses"][0]) == extra
        assert (method in res["notes"][0]) or ("tangent" in res["notes"][0])
