"""Theorem 2 on a real pretrained model's hidden states (frozen backbone, single-token answers).

    python -m sims.hf theorem2 [--model smollm2] [--steps 10000] [--out DIR]

The prompts are the toolkit's own persona statements (sims.statements), each asked with the
model's chat template; the responses are one token each (Assumption 2). Per topic, the first
TRAIN_PER_TOPIC statements are training prompts and the rest are new prompts. Splits, in the
file format of sims/representations.py:
  * train: training prompts, chosen in {Yes, Sure}, rejected in {No, Never} (every combination);
  * seen_tokens: new prompts, the same answer words;
  * unseen_tokens: new prompts, answer words that never occur in training
    (chosen {Certainly, Indeed}, rejected {Not, False}: sims.statements.ANSWERS).
The states come from the model itself (sims.hf.answers): h_x predicts the answer, h_{x,y} is the
state at the answer. The run then
  1. measures what Theorem 2's EX-RM condition asks of the representations: cosines between
     the states of synonym answers (raw, and centred per prompt), and u* of the training
     differences with the official Footnote 3 statistics (cos(u*, h(y+) - h(y-)));
  2. replays training on those states with sims.theorem2 (EX-RM: gradient descent on a linear
     head; IM-RM: gradient descent on the unembedding rows, initialised at the model's own):
     the IM-RM must tie every unseen pair exactly, the EX-RM must follow u*.
Only the rows of the answer tokens are kept of the unembedding: with one shared prompt per pair,
the softmax normaliser cancels in every Bradley-Terry margin (paper_notes Sec. 3), so the other
rows of U never enter a margin or a gradient of one.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from sims import atomic
from sims.hf.answers import progress_line, single_token_states
from sims.hf.model import head_of
from sims.hf.yesno import TRAIN_PER_TOPIC, chat_prompts, prompt_split

SPLIT_WORDS = {"train": ("train_chosen", "train_rejected"), "seen_tokens": ("train_chosen", "train_rejected"),
               "unseen_tokens": ("unseen_chosen", "unseen_rejected")}


def representation_arrays(model, tokenizer, *, train_per_topic: int = TRAIN_PER_TOPIC, per_topic: int | None = None,
                          batch_size: int = 8, progress=None) -> tuple[dict, dict]:
    """(arrays in sims/representations.py's format, the raw states): every (prompt, answer) state
    once, then every chosen x rejected combination of a split's words as a pair. Token ids are
    renumbered 0..A-1 in ANSWERS order, and U_ref holds the answers' rows of the unembedding."""
    from sims.statements import ANSWERS
    words = [w for key in ANSWERS for w in ANSWERS[key]]
    train_q, new_q = prompt_split(train_per_topic, per_topic)
    prompts = chat_prompts(tokenizer, train_q + new_q)
    h_x, h, ids = single_token_states(model, tokenizer, prompts, words, batch_size=batch_size, progress=progress)
    head = head_of(model)
    U, hh = head.theory_form(h)
    _, hx = head.theory_form(h_x)
    h, h_x = hh.double().cpu().numpy(), hx.double().cpu().numpy()
    U = U[ids.cpu()].double().cpu().numpy()                                  # (A, D[+1])
    index = {w: i for i, w in enumerate(words)}
    n_train = len(train_q)
    rows = {"train": np.arange(n_train), "seen_tokens": np.arange(n_train, len(prompts)),
            "unseen_tokens": np.arange(n_train, len(prompts))}
    arrays = {"U_ref": U}
    for split, (c_key, r_key) in SPLIT_WORDS.items():
        combos = [(index[c], index[r]) for c in ANSWERS[c_key] for r in ANSWERS[r_key]]
        p = np.repeat(rows[split], len(combos))
        c = np.tile([a for a, _ in combos], len(rows[split]))
        r = np.tile([b for _, b in combos], len(rows[split]))
        arrays.update({f"{split}_h_prompt": h_x[p], f"{split}_h_chosen": h[p, c], f"{split}_h_rejected": h[p, r],
                       f"{split}_y_chosen": c.astype(np.int64), f"{split}_y_rejected": r.astype(np.int64)})
    states = {"h_prompt": h_x, "h": h, "words": words, "token_ids": ids.tolist(), "n_train_prompts": n_train,
              "torch_dtype": str(next(model.parameters()).dtype).replace("torch.", "")}
    return arrays, states


def synonym_cosines(h: np.ndarray, words: list[str], rows: np.ndarray) -> dict:
    """Mean over prompts of the cosine between two answers' states h (P, A, D), raw and centred
    (each prompt's mean over the answers removed: what is left is what the answer adds)."""
    out = {}
    for kind, x in (("raw", h[rows]), ("centred", h[rows] - h[rows].mean(1, keepdims=True))):
        unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
        C = np.einsum("pad,pbd->ab", unit, unit) / len(rows)                 # (A, A)
        out[kind] = {"matrix": C.round(6).tolist(), "words": words}
    return out


def group_summary(C: list[list[float]], words: list[str]) -> dict:
    """Mean centred cosine within the affirmative words, within the negative ones, and across."""
    from sims.statements import ANSWERS
    pos = [words.index(w) for k in ("train_chosen", "unseen_chosen") for w in ANSWERS[k]]
    neg = [words.index(w) for k in ("train_rejected", "unseen_rejected") for w in ANSWERS[k]]
    C = np.asarray(C)
    within = lambda g: float(np.mean([C[a, b] for a in g for b in g if a < b]))
    return {"within_affirmative": within(pos), "within_negative": within(neg),
            "across": float(np.mean([C[a, b] for a in pos for b in neg]))}


def run(model, tokenizer, *, model_name: str, steps: int = 10000, direction_tol: float = 1e-3,
        batch_size: int = 8, train_per_topic: int = TRAIN_PER_TOPIC, per_topic: int | None = None,
        save_representations: str | None = None, log=print) -> dict:
    """The whole run: states, synonym cosines, u* and Footnote 3, the Theorem 2 replay, checks."""
    from sims import theorem2
    from sims.hf.representations import analyse
    progress = progress_line("states")
    arrays, states = representation_arrays(model, tokenizer, train_per_topic=train_per_topic, per_topic=per_topic,
                                           batch_size=batch_size, progress=progress)
    words = states["words"]
    new_rows = np.arange(states["n_train_prompts"], states["h"].shape[0])
    cos = synonym_cosines(states["h"], words, new_rows)
    cos["centred_summary"] = group_summary(cos["centred"]["matrix"], words)
    cos["raw_summary"] = group_summary(cos["raw"]["matrix"], words)
    footnote3 = analyse(arrays)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(save_representations) if save_representations else Path(tmp) / "representations.npz"
        with atomic.file(path) as staged, open(staged, "wb") as f:    # never a half-written file
            np.savez(f, **arrays)
        config = theorem2.Config(representations=str(path), unseen_tokens=True, steps=steps,
                                 direction_tol=direction_tol).effective()
        replay = theorem2.run(config, log=log)
    replay.pop("_arrays", None)
    replay.pop("_run", None)
    replay["config"]["representations"] = save_representations or f"(built in memory from {model_name})"
    replay["sizes"]["source"] = model_name
    im_unseen = replay["models"]["im_rm"]["unseen_tokens"]
    ex_unseen = replay["models"]["ex_rm"]["unseen_tokens"]
    log(f"synonym states (centred cosine, new prompts): within affirmative "
        f"{cos['centred_summary']['within_affirmative']:+.3f}, within negative "
        f"{cos['centred_summary']['within_negative']:+.3f}, across {cos['centred_summary']['across']:+.3f}")
    for split, s in footnote3["splits"].items():
        c = s["cosine"]
        log(f"Footnote 3, {split:13}: u* accuracy {s['u_star_accuracy']:.3f}; cos(u*, h+ - h-) mean "
            f"{c['mean']:+.3f}, quartiles {c['q25']:+.3f} {c['median']:+.3f} {c['q75']:+.3f}, positive "
            f"{c['fraction_positive']:.3f}")
    return {"model": model_name, "words": words, "token_ids": states["token_ids"],
            "dtype": states["torch_dtype"],
            "prompts": {"train": int(states["n_train_prompts"]), "new": int(new_rows.size),
                        "train_per_topic": train_per_topic, "per_topic": per_topic},
            "synonym_cosines": cos, "footnote3": footnote3, "replay": replay,
            "summary": {"im_rm_unseen_accuracy": im_unseen["accuracy"], "im_rm_unseen_tie_fraction": im_unseen["tie_fraction"],
                        "ex_rm_unseen_accuracy": ex_unseen["accuracy"],
                        "u_star_unseen_accuracy": replay["max_margin"]["unseen_tokens_accuracy"]},
            "checks": replay["checks"]}


def answer_differences(model_name: str, *, batch_size: int = 8, max_prompts: int | None = None) -> np.ndarray:
    """Z (n, D) float64: h(x, a+) - h(x, a-) for every affirmative a+ and negative a- of
    sims.statements.ANSWERS (4 x 4) and every persona and factual prompt: the largest set of
    real-model training differences the toolkit's own sentences give, for timing u*."""
    from sims import statements
    from sims.hf.model import load, load_tokenizer
    model, tok = load(model_name, what="--backbone"), load_tokenizer(model_name, what="--backbone")
    pos = [w for k in ("train_chosen", "unseen_chosen") for w in statements.ANSWERS[k]]
    neg = [w for k in ("train_rejected", "unseen_rejected") for w in statements.ANSWERS[k]]
    questions = [q for kind in ("persona", "factual") for _, q in statements.prompts(kind)][:max_prompts]
    progress = progress_line("states")
    _, h, _ = single_token_states(model, tok, chat_prompts(tok, questions), pos + neg, batch_size=batch_size,
                                  progress=progress)
    h = h.double().cpu().numpy()                                             # (P, 8, D)
    A = len(pos)
    return (h[:, :A, None, :] - h[:, None, A:, :]).reshape(-1, h.shape[-1])
