"""Hidden representations of single-token pairs (the file sims.theorem2 reads), u* on them, and
the official Footnote 3 statistics."""
from __future__ import annotations

import numpy as np

from sims import inputs
from sims.cli import RunError, UsageError
from sims.hf.model import head_of, pad_token_id, run_batches
from sims.hf.pairs import encode_pairs, split_responses

def pair_representations(model, tokenizer, pairs, *, eos: bool = False, batch_size: int = 8,
                         side: str = "right") -> dict:
    """The arrays of sims/representations.py's file format for one split:
    h_prompt (n, D) the state at the last prompt position (it predicts the first response
    token), h_chosen / h_rejected (n, D) the state at the last token of prompt + response,
    y_chosen / y_rejected (n,) the first response token (Assumption 2's single token), and
    n_tokens_chosen / n_tokens_rejected (n,) the response lengths."""
    enc = encode_pairs(tokenizer, pairs, eos=eos)
    out = {}
    for name, seqs in zip(("chosen", "rejected"), split_responses(enc)):
        r = run_batches(model, seqs, batch_size=batch_size, side=side, pad_id=pad_token_id(tokenizer))
        if name == "chosen":
            out["h_prompt"] = r["h"][:, 0].double().cpu().numpy()
        out[f"h_{name}"] = r["h_last"].double().cpu().numpy()
        out[f"y_{name}"] = r["y"][:, 0].cpu().numpy().astype(np.int64)
        out[f"n_tokens_{name}"] = r["mask"].sum(-1).cpu().numpy().astype(np.int64)
    return out


def write_representations(model, tokenizer, *, train, heldout=None, shifted=None, eos=False,
                          batch_size=8, side="right", unembedding=False) -> tuple[dict, list[str]]:
    """The .npz arrays for `sims.theorem2 --representations` and notes on how splits map.

    train -> `train`; heldout -> `seen_tokens` (the shifted pairs stand in when there is no
    held-out file); shifted -> `shifted_*` always, and `unseen_tokens` too when their response
    tokens never occur in training (Theorem 2's condition)."""
    if heldout is None and shifted is None:
        raise UsageError("give --heldout, --shifted or both (the file needs a seen_tokens split)")
    notes = []
    arrays = {f"train_{k}": v for k, v in pair_representations(model, tokenizer, train, eos=eos,
                                                                batch_size=batch_size, side=side).items()}
    seen = np.union1d(arrays["train_y_chosen"], arrays["train_y_rejected"])
    if heldout is not None:
        arrays.update({f"seen_tokens_{k}": v for k, v in pair_representations(
            model, tokenizer, heldout, eos=eos, batch_size=batch_size, side=side).items()})
    if shifted is not None:
        sh = pair_representations(model, tokenizer, shifted, eos=eos, batch_size=batch_size, side=side)
        arrays.update({f"shifted_{k}": v for k, v in sh.items()})
        clash = np.intersect1d(np.union1d(sh["y_chosen"], sh["y_rejected"]), seen)
        if clash.size == 0:
            arrays.update({f"unseen_tokens_{k}": v for k, v in sh.items()})
            notes.append("shifted pairs use no first response token of training: written as unseen_tokens too")
        else:
            notes.append(f"shifted pairs share {clash.size} first response token(s) with training: not an "
                         f"unseen_tokens split (kept as shifted_*)")
        if heldout is None:
            arrays.update({f"seen_tokens_{k}": v for k, v in sh.items()})
            notes.append("no --heldout: the seen_tokens split holds the shifted pairs")
    if unembedding:
        head = head_of(model)
        if head.bias is not None or head.softcap is not None:
            raise UsageError("--unembedding: this head has a bias or soft-cap, which the file's U_ref cannot hold")
        arrays["U_ref"] = (head.weight.detach().double() * head.scale).cpu().numpy()
    return arrays, notes


def _cosines(u, Z):
    un = np.linalg.norm(u)
    zn = np.linalg.norm(Z, axis=-1)
    return (Z @ u) / np.where(zn > 0, zn * un, 1.0)


def analyse(arrays: dict) -> dict:
    """Theorem 2 and the official Footnote 3 statistics on a representations file: u* of the
    training differences with its certificate (theory.max_margin), and on every other split
    (held-out, shifted) u*'s accuracy (ties 1/2 and 0) and the cosines between u* and the
    pairs' differences h(y+) - h(y-): mean, quartiles, fraction positive."""
    from theory.max_margin import NotSeparableError, SolverError, max_margin
    from theory.rewards import accuracy, ex_rm_reward_scale
    Z = arrays["train_h_chosen"] - arrays["train_h_rejected"]
    try:
        mm = max_margin(Z)
    except NotSeparableError as exc:
        zero = int(np.sum(~np.any(Z, axis=-1)))
        why = f" ({zero} of {Z.shape[0]} training pairs have identical chosen and rejected states: chosen == " \
              f"rejected?)" if zero else ""
        raise UsageError(f"u* does not exist: {exc}{why}") from None
    except SolverError as exc:
        raise RunError(f"cannot compute u*: {exc}") from None
    out = {"u_star": {"margin": mm.margin, "norm": float(np.linalg.norm(mm.u)),
                      "support_vectors": int(mm.support.size), "certificate": mm.certificate,
                      "certificate_worst": max(mm.certificate.values()), "n_train": int(Z.shape[0]),
                      "dim": int(Z.shape[1])}, "splits": {}}
    for split in ("train", "seen_tokens", "unseen_tokens", "shifted"):
        if f"{split}_h_chosen" not in arrays:
            continue
        hp, hm = arrays[f"{split}_h_chosen"], arrays[f"{split}_h_rejected"]
        Zs = hp - hm
        margins = Zs @ mm.u
        scale = ex_rm_reward_scale(mm.u, hp) + ex_rm_reward_scale(mm.u, hm)
        cos = _cosines(mm.u, Zs)
        q = np.quantile(cos, [0.25, 0.5, 0.75])
        out["splits"][split] = {
            "n": int(Zs.shape[0]),
            "u_star_accuracy": float(accuracy(margins, scale, "half")[0]),
            "u_star_accuracy_ties_zero": float(accuracy(margins, scale, "zero")[0]),
            "cosine": {"mean": float(cos.mean()), "q25": float(q[0]), "median": float(q[1]),
                       "q75": float(q[2]), "fraction_positive": float(np.mean(cos > 0))}}
    return out


def load_npz(path: str) -> dict:
    """The arrays of a representation file that analyse reads, checked array by array
    (sims.inputs.read_npz checks the file itself): per split, h_chosen and h_rejected real
    (n, D) matrices of one width D across the splits; train is required."""
    arrays = inputs.read_npz(path, "representation file")
    D = None
    for split in ("train", "seen_tokens", "unseen_tokens", "shifted"):
        keys = (f"{split}_h_chosen", f"{split}_h_rejected")
        missing = [k for k in keys if k not in arrays]
        if split != "train" and len(missing) == 2:
            continue
        if missing:
            raise UsageError(f"representation file {path} lacks {', '.join(missing)}")
        n, D = inputs.real_matrix(keys[0], arrays[keys[0]], cols=D).shape
        inputs.real_matrix(keys[1], arrays[keys[1]], rows=n, cols=D)
    return arrays
