"""The paper's explanation (Section 4) measured on the real model while it trains.

  * synonyms: cosine of the last-token states of the same prompt + prefix + each answer word,
    centred per prompt (sims.hf.theorem2.synonym_cosines): do yes/sure/certainly/absolutely
    share a direction that no/never/not really/nope do not?
  * rho (Eq. 5, theory.dynamics.rho_pairs) between the position that predicts a paraphrase
    answer word and the one that predicts a trained answer word, from the model's own
    next-token distributions there, averaged per (paraphrase word, trained word).
  * the probe: at a checkpoint, the predicted change of every paraphrase reward under one
    full-batch GD step (IM-RM: Eq. 5 on the current states and U, theory.dynamics.
    reward_change_matrix_im; EX-RM: eta g <h, h+ - h->, reward_change_matrix_ex) against a real
    GD step of the variant's own trainable parameters from the checkpoint model (float32; eta
    chosen so the largest change is ~1e-2 in log-probability, ~1e3 times the rounding of a
    summed log-probability), and against the actual change over the next training interval
    (Adam, mini-batches). Under Assumption 1 (head / unembedding hold) the prediction is the
    step's exact first order; for top_k it is what the theory would say, and the agreement
    measures how far it carries once the states move.
  * the tangent at initialisation: the exact first-order change over the tied embedding
    matrix (sims.hf.step.tangent_reward_change: what training lm_head does to a tied model,
    inputs included) and Eq. 5 on lm_head alone, both against the real step of the tied matrix.
"""
from __future__ import annotations

import numpy as np

from sims.hf.model import head_of
from sims.hf.step import _agreement
from sims.persona_real.data import WORDS
from sims.persona_real.states import top_states

PROBE_TARGET = 1e-2          # largest log-probability change of the probe step


def synonyms(shared, rows, n_prompts: int) -> dict:
    from sims.hf.theorem2 import synonym_cosines
    h = shared.h_last[rows].double().numpy().reshape(n_prompts, len(WORDS), -1)      # (P, 8, D)
    out = synonym_cosines(h, list(WORDS), np.arange(n_prompts))
    for kind in ("raw", "centred"):
        C = np.asarray(out[kind]["matrix"])
        within = lambda g, C=C: float(np.mean([C[a, b] for a in g for b in g if a < b]))
        out[f"{kind}_summary"] = {"within_yes": within(range(4)), "within_no": within(range(4, 8)),
                                  "across": float(C[:4, 4:].mean())}
    return out


def answer_word(shared, rows, word_tokens) -> tuple[list[str], list[int]]:
    """The answer word of each row's response and the index of the response position that
    predicts the word's first token."""
    words, at = [], []
    for i in rows:
        r = shared.seqs[i][1]
        w = next(w for w in sorted(WORDS, key=lambda w: -len(word_tokens[w]))
                 if r[-len(word_tokens[w]):] == word_tokens[w])
        words.append(w)
        at.append(len(r) - len(word_tokens[w]))
    return words, at


def rho_table(U, h_bar, bar_rows, h_v, v_rows, shared, word_tokens) -> dict:
    """Mean rho between every (paraphrase row, trained row), per (paraphrase word, trained word).
    h_bar (A, L, D) and h_v (N, L, D) the states of those rows, U (V, D)."""
    import torch

    from theory.dynamics import rho_pairs
    U, h_bar, h_v = U.detach(), h_bar.detach(), h_v.detach()
    out = {}
    sides = []
    for h, rows in ((h_bar, bar_rows), (h_v, v_rows)):
        words, at = answer_word(shared, rows, word_tokens)
        idx = torch.arange(len(rows))
        pi = torch.softmax((h[idx, at] @ U.T).double(), -1)                    # (n, V)
        y = shared.y[rows][idx, torch.tensor(at)]
        sides.append((words, pi[:, None], y[:, None]))
    (wb, pb, yb), (wv, pv, yv) = sides
    R = rho_pairs(pb, yb, pv, yv)[..., 0, 0]                                   # (A, N)
    for a in dict.fromkeys(wb):
        out[a] = {}
        ra = R[[i for i, w in enumerate(wb) if w == a]]
        for t in dict.fromkeys(wv):
            out[a][t] = float(ra[:, [i for i, w in enumerate(wv) if w == t]].mean())
    return out


def current_states(model, shared, k, rows):
    """(h, h_last) of the checkpoint model: the shared states (frozen body) or its top k blocks."""
    if k is None:
        d = shared.final(rows)
        return d["h"], d["h_last"]
    return top_states(model, shared, k, rows)


def trainable(model, kind, k):
    """The variant's own parameters at a checkpoint (u is handled by the caller)."""
    if k is None:
        return [] if kind == "ex" else [head_of(model).weight]
    L = len(model.model.layers)
    return [p for b in model.model.layers[L - k:] for p in b.parameters()] + list(model.model.norm.parameters())


def probe(kind, model, u, shared, k, rows, ref_margins, *, beta: float, eta: float | None = None) -> dict:
    """Predicted (theory, first order per unit eta) and actual (one real GD step, divided by its
    eta) change of the rewards of rows["eval"], the step taken on the mean loss over the training
    pairs rows["plus"], rows["minus"]. Returns the two vectors, eta and their agreement."""
    import torch

    from theory.dynamics import reward_change_matrix_ex, reward_change_matrix_im
    from theory.sequences import Seqs
    head = head_of(model)
    U = head.weight.detach()
    finals = {s: shared.final(r) for s, r in rows.items()}
    y = {s: (d["y"], d["mask"]) for s, d in finals.items()}

    def logp(s, h):
        lp = torch.log_softmax(head.logits(h), -1).gather(-1, y[s][0][..., None])[..., 0]
        return (lp * y[s][1]).sum(-1)

    with torch.no_grad():
        st = {s: current_states(model, shared, k, r) for s, r in rows.items()}
        if kind == "im":
            seqs = [Seqs(st[s][0], *y[s]) for s in ("eval", "plus", "minus")]
            pred = reward_change_matrix_im(U, *seqs, beta=beta, eta=1.0, ref_margins=ref_margins.to(U.dtype)).mean(-1)
        else:
            pred = reward_change_matrix_ex(u, st["eval"][1], st["plus"][1], st["minus"][1], eta=1.0).mean(-1)
    params = trainable(model, kind, k)
    uu = None
    if kind == "ex":
        uu = u.detach().clone().requires_grad_(True)
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            hp, hm = (current_states(model, shared, k, rows[s]) for s in ("plus", "minus"))
            if kind == "im":
                m = beta * (logp("plus", hp[0]) - logp("minus", hm[0]) - ref_margins.to(U.dtype))
            else:
                m = hp[1] @ uu - hm[1] @ uu
            loss = torch.nn.functional.softplus(-m).mean()
            grads = torch.autograd.grad(loss, params + ([uu] if uu is not None else []))

        def reward():
            h, hl = current_states(model, shared, k, rows["eval"])
            return beta * logp("eval", h) if kind == "im" else hl @ uu

        with torch.no_grad():
            before = reward()
            saved = [p.detach().clone() for p in params] + ([uu.detach().clone()] if uu is not None else [])
            ps = params + ([uu] if uu is not None else [])
            step = eta if eta is not None else 1.0
            for attempt in range(2):
                for p, g in zip(ps, grads):
                    p.sub_(step * g)
                change = reward() - before
                for p, s in zip(ps, saved):
                    p.copy_(s)
                size = float(change.abs().max()) / (beta if kind == "im" else 1.0)
                if eta is not None or size == 0 or 1e-3 <= size <= 1e-1:
                    break
                step *= PROBE_TARGET / size
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    actual = (change / step).double()
    return {"pred": pred.double(), "actual": actual, "eta": step, "largest_change": size,
            **_agreement(pred.double(), actual), "sign_agreement_large": large_sign_agreement(pred.double(), actual)}


def large_sign_agreement(pred, actual) -> float:
    """Sign agreement over the responses whose predicted change is at least 1% of the largest
    (a float32 step leaves smaller changes at the rounding of the rewards)."""
    big = pred.abs() >= 1e-2 * pred.abs().max()
    return float((pred[big].sign() == actual[big].sign()).double().mean())


def tangent_at_init(model, tokenizer, shared, enc_train, eval_seqs, ref_margins, *, beta: float) -> dict:
    """At the start model (tied embeddings): the exact tangent over the tied matrix, and Eq. 5
    on lm_head alone, against a real GD step of the tied matrix (what Unembedding("train") does)."""
    import torch

    from sims.hf.step import actual_reward_change, loss_gradients, tangent_reward_change
    from theory.dynamics import reward_change_matrix_im
    from theory.sequences import Seqs
    head = head_of(model)
    name = [head.name]
    ref = ref_margins.to(head.weight.dtype)
    grads = loss_gradients(model, tokenizer, enc_train, ref, beta=beta, params=name)
    tan1 = tangent_reward_change(model, tokenizer, enc_train, eval_seqs, ref, beta=beta, eta=1.0,
                                 params=name, grads=grads).double()
    eta = PROBE_TARGET * beta / float(tan1.abs().max())
    actual = actual_reward_change(model, tokenizer, eval_seqs, grads, beta=beta, eta=eta, params=name).double() / eta
    rows = {s: shared.index(q) for s, q in (("eval", eval_seqs), ("plus", [(p, c) for p, c, _ in enc_train]),
                                           ("minus", [(p, r) for p, _, r in enc_train]))}
    finals = [shared.final(rows[s]) for s in ("eval", "plus", "minus")]
    seqs = [Seqs(d["h"], d["y"], d["mask"]) for d in finals]
    with torch.no_grad():
        eq5 = reward_change_matrix_im(head.weight.detach(), *seqs, beta=beta, eta=1.0, ref_margins=ref).mean(-1).double()
    return {"eta": eta, "n_train_pairs": len(enc_train), "n_eval": len(eval_seqs),
            "tangent_vs_actual": _agreement(tan1, actual), "eq5_head_only_vs_actual": _agreement(eq5, actual),
            "eq5_vs_tangent": _agreement(eq5, tan1),
            "pred_tangent": tan1.tolist(), "pred_eq5": eq5.tolist(), "actual": actual.tolist()}
