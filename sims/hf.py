"""Your own model: the toolkit's analyses on a Hugging Face causal LM (the `[hf]` extra).

    python -m sims.hf score --model M --ref R --pairs pairs.jsonl --beta 0.01 --out scores.json
    python -m sims.hf representations --model M --train train.jsonl --heldout test.jsonl \\
        --shifted paraphrases.jsonl --out reps.npz --analyse
    python -m sims.hf analyse --representations reps.npz --out footnote3.json
    python -m sims.hf step --model M --ref R --train train.jsonl --eval eval.jsonl \\
        --beta 0.01 --eta 1e-3 --out step.json
    python -m sims.hf bench --out bench.json

A model is a local folder or a hub id (`from_pretrained`); its tokenizer comes from the same
place unless --tokenizer says otherwise. Pairs are JSON Lines with `prompt`, `chosen`,
`rejected`: strings (TRL's standard format) or lists of {"role", "content"} messages (TRL's
conversational format, rendered with the tokenizer's chat template).

What the adapter reads from the model (one forward pass per batch):
  * h_{x,y<k}: the hidden state lm_head consumes (after the final norm), captured at its input,
    at the position before each response token (the one-token shift); prompt positions masked.
  * tokenisation as TRL's DPOTrainer: prompt and prompt + response tokenised, the response
    starting where they diverge; EOS appended to plain-text responses when asked (TRL does).
  * padding on either side: position ids count real tokens only, so a padded row computes
    what the unpadded sequence does.
  * the unembedding: lm_head's weight, its bias, a logit scale (Cohere, Granite) and a final
    soft-cap (Gemma 2); checked against the model's own logits on every batch. Tied input and
    output embeddings are detected (they break Assumption 1 for `step`).
theory/ never imports transformers: this module turns the model into arrays and calls theory/.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims import inputs
from sims.cli import HelpFormatter, Parser, RunError, UsageError, run_cli

DTYPES = ("float32", "float64", "bfloat16", "float16")
PADDING = ("right", "left")


# --------------------------------------------------------------------------- pairs and tokens

def read_pairs(path: str) -> list[dict]:
    """Preference pairs from JSON Lines: each line {"prompt", "chosen", "rejected"}, all strings
    or all message lists. UsageError naming the file and line for anything else."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read pairs file {path!r}: {exc.strerror or exc}") from None
    pairs = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{i}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not {"prompt", "chosen", "rejected"} <= row.keys():
            raise UsageError(f"{path}:{i}: needs the keys prompt, chosen and rejected")
        kinds = {_kind(row[k]) for k in ("prompt", "chosen", "rejected")}
        if len(kinds) != 1 or None in kinds:
            raise UsageError(f"{path}:{i}: prompt, chosen and rejected must all be strings or all "
                             f"lists of {{role, content}} messages")
        pairs.append({k: row[k] for k in ("prompt", "chosen", "rejected")})
    if not pairs:
        raise UsageError(f"pairs file {path!r} holds no pairs")
    return pairs


def _kind(value):
    if isinstance(value, str):
        return "text"
    if isinstance(value, list) and value and all(isinstance(m, dict) and {"role", "content"} <= m.keys()
                                                 for m in value):
        return "messages"
    return None


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for s, t in zip(a, b):
        if s != t:
            break
        n += 1
    return n


def _ids(tokenizer, text_or_messages, **chat):
    if isinstance(text_or_messages, str):
        return list(tokenizer(text_or_messages)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError("conversational pairs need a tokenizer with a chat template")
    out = tokenizer.apply_chat_template(text_or_messages, tokenize=True, return_dict=True, **chat)
    return list(out["input_ids"])


def encode_pairs(tokenizer, pairs: list[dict], *, eos: bool) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt_ids, chosen_ids, rejected_ids) per pair, as TRL's DPOTrainer tokenises: the
    prompt alone and prompt + response, the response starting where the two diverge. eos=True
    appends the EOS token to plain-text responses that lack it (TRL's convention; conversational
    responses end with the chat template's own end-of-turn)."""
    if eos and tokenizer.eos_token is None:
        raise UsageError("--eos: the tokenizer has no EOS token")
    out = []
    for p in pairs:
        chosen, rejected = p["chosen"], p["rejected"]
        if isinstance(p["prompt"], str):
            if eos:
                chosen = chosen if chosen.endswith(tokenizer.eos_token) else chosen + tokenizer.eos_token
                rejected = rejected if rejected.endswith(tokenizer.eos_token) else rejected + tokenizer.eos_token
            prompt = _ids(tokenizer, p["prompt"])
            full_c, full_r = _ids(tokenizer, p["prompt"] + chosen), _ids(tokenizer, p["prompt"] + rejected)
        else:
            prompt = _ids(tokenizer, p["prompt"], add_generation_prompt=True)
            full_c, full_r = _ids(tokenizer, p["prompt"] + chosen), _ids(tokenizer, p["prompt"] + rejected)
        n = min(_common_prefix(prompt, full_c), _common_prefix(prompt, full_r))
        if n == 0:
            raise UsageError("a prompt tokenises to nothing shared with its responses: the first "
                             "response token needs a position before it")
        if len(full_c) == n or len(full_r) == n:
            raise UsageError(f"an empty response after tokenisation (prompt {str(p['prompt'])[:40]!r})")
        out.append((full_c[:n], full_c[n:], full_r[n:]))
    return out


# --------------------------------------------------------------------------- the model

def _check_source(name: str, what: str) -> None:
    """A local path (it starts with /, . or ~, or exists) must be a folder; anything else is a hub id."""
    p = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) or p.exists():
        if not p.is_dir():
            raise UsageError(f"{what} {name}: no such folder")


def load(name: str, *, dtype: str = "float32", device: str = "cpu"):
    """A causal LM from a folder or hub id, in eval mode (dropout off)."""
    _check_source(name, "--model/--ref")
    import torch
    from transformers import AutoModelForCausalLM
    kwargs = {"dtype": getattr(torch, dtype)}
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval()


def load_tokenizer(name: str):
    _check_source(name, "--tokenizer")
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load tokenizer {name!r}: {str(exc).splitlines()[0]}") from None


@dataclass(frozen=True)
class Head:
    """The unembedding: logits = softcap(scale * (W h + b)).  W (V, D), b (V,) or None."""
    weight: object
    bias: object
    scale: float
    softcap: float | None
    tied: bool
    name: str             # the parameter name of W (for torch.func)

    def logits(self, h):
        import torch
        z = h @ self.weight.T
        if self.bias is not None:
            z = z + self.bias
        z = z * self.scale
        return z if self.softcap is None else self.softcap * torch.tanh(z / self.softcap)

    @property
    def linear(self) -> bool:
        """Eq. 5's closed form needs logits linear in the unembedding (no soft-cap)."""
        return self.softcap is None

    def theory_form(self, h):
        """(U, h') with U h' == the logits: the bias as a column of U over a constant 1, the
        scale folded into h'. Training W and b by gradient descent is training this U.
        h (..., D) -> U (V, D[+1]), h' (..., D[+1])."""
        import torch
        U, hh = self.weight, h * self.scale
        if self.bias is not None:
            U = torch.cat([U, self.bias[:, None]], dim=1)
            hh = torch.cat([hh, torch.full_like(hh[..., :1], self.scale)], dim=-1)
        return U.detach(), hh


def head_of(model) -> Head:
    """lm_head's weight, bias, logit scale and soft-cap, and whether it is tied to the input
    embedding (the same tensor)."""
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None or not hasattr(out, "weight"):
        raise UsageError(f"{type(model).__name__} has no output embedding (lm_head)")
    cfg = model.config
    scale = float(getattr(cfg, "logit_scale", None) or 1.0)                    # Cohere: logits * s
    if getattr(cfg, "logits_scaling", None):                                  # Granite: logits / s
        scale /= float(cfg.logits_scaling)
    cap = getattr(cfg, "final_logit_softcapping", None)                       # Gemma 2
    tied = inp is not None and out.weight.data_ptr() == inp.weight.data_ptr()
    name = next((n for n, p in model.named_parameters() if p is out.weight), None)
    return Head(out.weight, getattr(out, "bias", None), scale, float(cap) if cap else None, tied, name)


@dataclass
class Batch:
    """Prompt + response sequences padded into one batch, and where their responses are."""
    input_ids: object       # (B, T)
    attention_mask: object  # (B, T)
    position_ids: object    # (B, T) real tokens counted from 0; padding on either side
    at: object              # (B, L) position of the state that predicts response token k
    y: object               # (B, L) response tokens (0 where masked)
    mask: object            # (B, L) bool, real response tokens
    last: object            # (B,) position of the last real token (EX-RM's h_{x,y})

    def model_inputs(self):
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids, "use_cache": False}


def collate(seqs: list[tuple[list[int], list[int]]], *, pad_id: int = 0, side: str = "right",
            device="cpu") -> Batch:
    """(prompt_ids, response_ids) pairs -> a padded Batch."""
    import torch
    T = max(len(p) + len(r) for p, r in seqs)
    L = max(len(r) for _, r in seqs)
    B = len(seqs)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    att = torch.zeros((B, T), dtype=torch.long)
    at = torch.zeros((B, L), dtype=torch.long)
    y = torch.zeros((B, L), dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.bool)
    last = torch.zeros(B, dtype=torch.long)
    for i, (p, r) in enumerate(seqs):
        n = len(p) + len(r)
        off = 0 if side == "right" else T - n
        ids[i, off:off + n] = torch.tensor(p + r)
        att[i, off:off + n] = 1
        K = len(r)
        at[i, :K] = off + len(p) - 1 + torch.arange(K)      # the state before each response token
        y[i, :K] = torch.tensor(r)
        mask[i, :K] = True
        last[i] = off + n - 1
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    return Batch(*(t.to(device) for t in (ids, att, pos, at, y, mask, last)))


def forward(model, head: Head, batch: Batch, *, check: bool = True):
    """One forward pass: (h (B, L, D) states lm_head consumes before each response token,
    token log-probs (B, L) (0 where masked), h_last (B, D) the state at the last token).
    Differentiable when called under autograd. check=True compares the unembedding
    reconstructed from `head` with the model's own logits (RunError if they differ)."""
    import torch
    captured = {}

    def hook(module, args):
        captured["h"] = args[0]

    handle = model.get_output_embeddings().register_forward_pre_hook(hook)
    try:
        logits = model(**batch.model_inputs()).logits
    finally:
        handle.remove()
    H = captured["h"]                                                      # (B, T, D)
    if H.shape[1] != batch.input_ids.shape[1]:
        raise RunError(f"{type(model).__name__}: lm_head saw {H.shape[1]} positions, not "
                       f"{batch.input_ids.shape[1]}")
    rows = torch.arange(H.shape[0], device=H.device)[:, None]
    h = H[rows, batch.at] * batch.mask[..., None]                          # (B, L, D), 0 where masked
    z = logits[rows, batch.at]                                             # (B, L, V)
    if check:
        _check_head(model, head, h, z, batch.mask)
    logp = torch.log_softmax(z.to(torch.promote_types(z.dtype, torch.float32)), dim=-1)
    lp = logp.gather(-1, batch.y[..., None])[..., 0] * batch.mask
    return h, lp, H[rows[:, 0], batch.last]


def _check_head(model, head, h, z, mask):
    import torch
    with torch.no_grad():
        mine = head.logits(h)[mask].double()
        theirs = z[mask].double()
        eps = torch.finfo(z.dtype).eps
        size = theirs.abs().max().item() + 1.0
        err = (mine - theirs).abs().max().item()
    if err > 1e3 * eps * size * math.sqrt(h.shape[-1]):
        raise RunError(f"{type(model).__name__}: the unembedding read from lm_head (weight, bias, "
                       f"scale {head.scale:g}, soft-cap {head.softcap}) does not reproduce the "
                       f"model's logits (max difference {err:.3g}); this architecture's head is "
                       f"not supported")


def run_batches(model, seqs, *, batch_size: int = 8, side: str = "right", pad_id: int = 0,
                states: bool = True):
    """forward() over `seqs` in batches, without gradients. Returns numpy-free torch tensors:
    h (N, L, D) or None, logp (N, L), mask (N, L), y (N, L), h_last (N, D) or None, in the
    model's dtype (log-probs at least float32)."""
    import torch
    head = head_of(model)
    device = next(model.parameters()).device
    L = max(len(r) for _, r in seqs)
    parts = {"h": [], "logp": [], "mask": [], "y": [], "h_last": []}
    with torch.no_grad():
        for s in range(0, len(seqs), batch_size):
            chunk = seqs[s:s + batch_size]
            b = collate(chunk, pad_id=pad_id, side=side, device=device)
            h, lp, hl = forward(model, head, b)
            pad = L - b.y.shape[1]
            parts["logp"].append(torch.nn.functional.pad(lp, (0, pad)))
            parts["mask"].append(torch.nn.functional.pad(b.mask, (0, pad)))
            parts["y"].append(torch.nn.functional.pad(b.y, (0, pad)))
            if states:
                parts["h"].append(torch.nn.functional.pad(h, (0, 0, 0, pad)))
                parts["h_last"].append(hl)
    return {k: torch.cat(v) if v else None for k, v in parts.items()}


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _split(encoded):
    """Encoded pairs -> (chosen seqs, rejected seqs) as (prompt, response) lists."""
    return [(p, c) for p, c, _ in encoded], [(p, r) for p, _, r in encoded]


# --------------------------------------------------------------------------- score

CONVENTIONS = {
    "paper": "r = beta ln(pi/pi_ref) summed over response tokens, responses as given (no EOS "
             "appended), ties count 1/2 (the official code)",
    "trl": "r = beta ln(pi/pi_ref) summed over response tokens, EOS appended, ties count 0 "
           "(DPOTrainer's rewards/accuracies)",
    "rewardbench": "r = ln(pi/pi_ref) summed (no beta), EOS appended, ties count 0",
    "rewardbench_ref_free_sum": "r = ln pi summed over response tokens (no reference), EOS, ties 0",
    "rewardbench_ref_free_avg": "r = mean token ln pi (no reference), EOS, ties 0",
    "rewardbench_ref_free_norm": "r = -||(ln pi_k)_k||_2 over response tokens (no reference), EOS, ties 0",
}


def sequence_scores(model, tokenizer, pairs, *, eos: bool, batch_size: int, side: str) -> dict:
    """Per pair and response: summed log-prob, token count, and the 2-norm of token log-probs."""
    import torch
    enc = encode_pairs(tokenizer, pairs, eos=eos)
    out = {}
    for name, seqs in zip(("chosen", "rejected"), _split(enc)):
        r = run_batches(model, seqs, batch_size=batch_size, side=side, pad_id=_pad_id(tokenizer),
                        states=False)
        lp = r["logp"].double()
        out[name] = {"sum": lp.sum(-1), "count": r["mask"].sum(-1).double(),
                     "norm": torch.linalg.vector_norm(lp, dim=-1), "abs": lp.abs().sum(-1)}
    return out


def _metrics(r_plus, r_minus, scale, ties):
    from theory.rewards import accuracy, normalised_margin
    acc, tie = accuracy(r_plus - r_minus, scale, ties)
    nm = normalised_margin(r_plus, r_minus) if r_plus.shape[0] > 1 else float("nan")
    return {"accuracy": float(acc), "tie_fraction": float(tie), "normalised_margin": float(nm),
            "mean_margin": float((r_plus - r_minus).mean())}


def score(model, ref, tokenizer, pairs, *, beta: float, batch_size: int = 8, side: str = "right") -> dict:
    """Implicit rewards of every pair under the paper's, TRL's and RewardBench's conventions,
    with accuracy and normalised margin (theory.rewards). ref=None: no reference (pi_ref = 1,
    the paper's ablation; RewardBench's ref-free variants)."""
    import torch
    from theory.rewards import implicit_reward
    s = {}
    for eos in (False, True):
        s[eos] = {"policy": sequence_scores(model, tokenizer, pairs, eos=eos, batch_size=batch_size, side=side)}
        if ref is not None:
            s[eos]["ref"] = sequence_scores(ref, tokenizer, pairs, eos=eos, batch_size=batch_size, side=side)

    def im(eos, b):
        rs = []
        for resp in ("chosen", "rejected"):
            lp = s[eos]["policy"][resp]["sum"]
            lr = s[eos]["ref"][resp]["sum"] if ref is not None else None
            r, _ = implicit_reward(lp, lr, beta=b, with_scale=True)
            # ln pi is a sum of per-token terms: its rounding scales with their magnitudes
            scale = b * (s[eos]["policy"][resp]["abs"] + (s[eos]["ref"][resp]["abs"] if ref is not None else 0))
            rs.append((r, scale))
        (rp, sp), (rm, sm) = rs
        return rp, rm, sp + sm

    conv = {"paper": (*im(False, beta), "half"), "trl": (*im(True, beta), "zero")}
    if ref is not None:
        conv["rewardbench"] = (*im(True, 1.0), "zero")
    pol = s[True]["policy"]
    c, r = pol["chosen"], pol["rejected"]
    conv["rewardbench_ref_free_sum"] = (c["sum"], r["sum"], c["abs"] + r["abs"], "zero")
    conv["rewardbench_ref_free_avg"] = (c["sum"] / c["count"], r["sum"] / r["count"],
                                        c["abs"] / c["count"] + r["abs"] / r["count"], "zero")
    conv["rewardbench_ref_free_norm"] = (-c["norm"], -r["norm"], c["norm"] + r["norm"], "zero")
    results = {"beta": beta, "n_pairs": len(pairs), "reference": ref is not None, "conventions": {}}
    for name, (rp, rm, scale, ties) in conv.items():
        desc = CONVENTIONS[name] if ref is not None or "ref_free" in name else \
            CONVENTIONS[name].replace("ln(pi/pi_ref)", "ln pi (no reference: pi_ref = 1)")
        results["conventions"][name] = {"description": desc, "ties": ties, **_metrics(rp, rm, scale, ties),
                                        "chosen": rp.tolist(), "rejected": rm.tolist()}
    return results


# --------------------------------------------------------------------------- representations

def pair_representations(model, tokenizer, pairs, *, eos: bool = False, batch_size: int = 8,
                         side: str = "right") -> dict:
    """The arrays of sims/representations.py's file format for one split:
    h_prompt (n, D) the state at the last prompt position (it predicts the first response
    token), h_chosen / h_rejected (n, D) the state at the last token of prompt + response,
    y_chosen / y_rejected (n,) the first response token (Assumption 2's single token), and
    n_tokens_chosen / n_tokens_rejected (n,) the response lengths."""
    enc = encode_pairs(tokenizer, pairs, eos=eos)
    out = {}
    for name, seqs in zip(("chosen", "rejected"), _split(enc)):
        r = run_batches(model, seqs, batch_size=batch_size, side=side, pad_id=_pad_id(tokenizer))
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
        raise UsageError(f"the training differences are not separable, so u* does not exist: {exc}") from None
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
    """The arrays of a representation file (sims.inputs.read_npz checks the file itself)."""
    arrays = inputs.read_npz(path, "representation file")
    for k in ("train_h_chosen", "train_h_rejected"):
        if k not in arrays:
            raise UsageError(f"representation file {path} lacks {k}")
        inputs.real_matrix(k, arrays[k], rows=arrays["train_h_chosen"].shape[0] if arrays["train_h_chosen"].ndim else None)
    return arrays


# --------------------------------------------------------------------------- step (Eq. 5)

def _sequence_logps(model, head, batches):
    import torch
    return torch.cat([forward(model, head, b, check=False)[1].sum(-1) for b in batches])


def tangent_reward_change(model, tokenizer, train_enc, eval_seqs, ref_margins, *, beta, eta,
                          params: list[str], batch_size=8, side="right"):
    """The exact first-order change eta <grad r_IM(eval), -grad L> over the named parameters,
    by autograd through the whole model: grad L by reverse mode, then all evaluation rewards'
    derivative along -eta grad L by one forward-mode pass (torch.func.jvp). With tied input and
    output embeddings, passing the tied matrix's name moves both uses, as training does."""
    import torch
    from torch.func import functional_call, jvp
    head = head_of(model)
    device = next(model.parameters()).device
    pad = _pad_id(tokenizer)
    chosen, rejected = _split(train_enc)
    mk = lambda seqs: [collate(seqs[s:s + batch_size], pad_id=pad, side=side, device=device)
                       for s in range(0, len(seqs), batch_size)]
    bc, br, be = mk(chosen), mk(rejected), mk(eval_seqs)
    named = dict(model.named_parameters())
    missing = [p for p in params if p not in named]
    if missing:
        raise UsageError(f"no parameter named {missing[0]!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [named[p] for p in params]
    for p in trainable:
        p.requires_grad_(True)
    try:
        m = beta * (_sequence_logps(model, head, bc) - _sequence_logps(model, head, br)
                    - ref_margins.to(device))
        loss = torch.nn.functional.softplus(-m).mean()
        grads = torch.autograd.grad(loss, trainable)
    finally:
        for p in trainable:
            p.requires_grad_(False)
    primals = {n: named[n].detach() for n in params}
    tangents = {n: -eta * g for n, g in zip(params, grads)}

    def rewards(ps):
        return beta * torch.cat([forward_fn(ps, b) for b in be])

    def forward_fn(ps, b):
        captured = {}
        handle = model.get_output_embeddings().register_forward_pre_hook(
            lambda mod, args: captured.__setitem__("h", args[0]))
        try:
            logits = functional_call(model, ps, args=(), kwargs=b.model_inputs()).logits
        finally:
            handle.remove()
        rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
        z = logits[rows, b.at]
        lp = torch.log_softmax(z, -1).gather(-1, b.y[..., None])[..., 0] * b.mask
        return lp.sum(-1)

    # forward-mode AD is not implemented for the fused attention kernels; the math kernel is
    # plain differentiable operations, in the model's own dtype
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.MATH):
        _, dr = jvp(rewards, (primals,), (tangents,))
    return dr.detach()


def eq5_reward_change(model, tokenizer, train_enc, eval_seqs, ref_margins, *, beta, eta,
                      batch_size=8, side="right", route="auto"):
    """Eq. 5 on the model's own states (theory.dynamics.reward_change_matrix_im), training the
    unembedding alone (weight and bias; a logit scale folded into the states). Returns the
    (A, B) matrix of per-example changes and the Seqs it was computed on."""
    from theory.sequences import Seqs
    from theory.dynamics import reward_change_matrix_im
    head = head_of(model)
    if not head.linear:
        raise UsageError("Eq. 5's closed form needs logits linear in lm_head; this head has a soft-cap "
                         "(use --method autograd)")
    pad = _pad_id(tokenizer)
    chosen, rejected = _split(train_enc)
    seqs = []
    for group in (eval_seqs, chosen, rejected):
        r = run_batches(model, group, batch_size=batch_size, side=side, pad_id=pad)
        U, hh = head.theory_form(r["h"])
        seqs.append(Seqs(hh, r["y"], r["mask"]))
    M = reward_change_matrix_im(U, *seqs, beta=beta, eta=eta, ref_margins=ref_margins.to(U.dtype),
                                route=route)
    return M, seqs, U


def _rho_summary(U, bar, plus, minus, a, i):
    """rho of Eq. 5 between evaluation response a and training pair i's y+ and y- (theory.dynamics.rho)."""
    import torch
    from theory.dynamics import next_token_log_probs, rho
    out = {}
    pb = torch.exp(next_token_log_probs(U, type(bar)(bar.h[a:a + 1], bar.y[a:a + 1], bar.mask[a:a + 1])))[0]
    K = int(bar.mask[a].sum())
    for name, s in (("chosen", plus), ("rejected", minus)):
        Lk = int(s.mask[i].sum())
        pv = torch.exp(next_token_log_probs(U, type(s)(s.h[i:i + 1], s.y[i:i + 1], s.mask[i:i + 1])))[0]
        R = rho(pb[:K], bar.y[a, :K], pv[:Lk], s.y[i, :Lk])
        out[f"rho_{name}"] = {"min": float(R.min()), "mean": float(R.mean()), "max": float(R.max()),
                              "matrix": R.tolist() if R.numel() <= 256 else None}
    return out


def step(model, ref, tokenizer, train, evals, *, beta: float, eta: float, eos: bool = False,
         batch_size: int = 8, side: str = "right", method: str = "auto") -> dict:
    """One DPO gradient step (learning rate eta, the mean loss over the training pairs): how
    the IM-RM reward of each evaluation response moves (Eq. 5, with the reference's own
    log-probability margins), beside the EX-RM's (a head u = 0 on the last-token states), and
    the responses that move the wrong way (a chosen one down, a rejected one up)."""
    import torch
    from theory.dynamics import reward_change_matrix_ex
    head = head_of(model)
    train_enc = encode_pairs(tokenizer, train, eos=eos)
    eval_enc = encode_pairs(tokenizer, evals, eos=eos)
    eval_seqs = [s for pair in zip(*_split(eval_enc)) for s in pair]       # chosen, rejected, ...
    chosen, rejected = _split(train_enc)
    pad = _pad_id(tokenizer)
    lr = [run_batches(ref, g, batch_size=batch_size, side=side, pad_id=pad, states=False)["logp"]
          .double().sum(-1) for g in (chosen, rejected)]
    ref_margins = lr[0] - lr[1]                                            # (B,)
    notes = []
    if method == "auto":
        method = "eq5" if head.linear and not head.tied else "autograd"
    if head.tied:
        warnings.warn("tied input and output embeddings: training the unembedding also moves the "
                      "inputs, so Assumption 1 (fixed hidden states) fails and Eq. 5 on lm_head alone "
                      "is not the step's first-order change; using the exact autograd tangent over "
                      "the tied matrix instead", stacklevel=2)
        notes.append("tied embeddings: delta_r_im is the exact autograd tangent over the tied matrix; "
                     "delta_r_im_eq5_head_only is Eq. 5 on lm_head alone, for comparison")
    M, seqs, U = eq5_reward_change(model, tokenizer, train_enc, eval_seqs, ref_margins, beta=beta,
                                   eta=eta, batch_size=batch_size, side=side) if head.linear else (None, None, None)
    eq5 = M.mean(-1) if M is not None else None
    if method == "autograd":
        params = [head.name] + ([n for n, p in model.named_parameters() if p is head.bias] if head.bias is not None else [])
        exact = tangent_reward_change(model, tokenizer, train_enc, eval_seqs, ref_margins.to(head.weight.dtype),
                                      beta=beta, eta=eta, params=params, batch_size=batch_size, side=side)
    else:
        exact = eq5
    # EX-RM: u = 0 (its initialisation, r_EX = 0 like r_IM), last-token states of the same body
    hl = [run_batches(model, g, batch_size=batch_size, side=side, pad_id=pad)["h_last"].double()
          for g in (eval_seqs, chosen, rejected)]
    ex = reward_change_matrix_ex(torch.zeros_like(hl[0][0]), *hl, eta=eta).mean(-1)
    responses, wrong = [], []
    for a in range(len(eval_seqs)):
        pair, kind = divmod(a, 2)
        want = 1.0 if kind == 0 else -1.0
        d = float(exact[a])
        row = {"pair": pair, "response": "chosen" if kind == 0 else "rejected", "delta_r_im": d,
               "delta_r_ex": float(ex[a]), "wrong_way_im": d * want < 0, "wrong_way_ex": float(ex[a]) * want < 0}
        if eq5 is not None and head.tied:
            row["delta_r_im_eq5_head_only"] = float(eq5[a])
        responses.append(row)
        if row["wrong_way_im"]:
            entry = dict(row)
            if M is not None:
                # the training pair that pushes this response hardest the wrong way, and its rho
                i = int(torch.argmin(M[a] * want))
                entry["worst_training_pair"] = i
                entry.update(_rho_summary(U, seqs[0], seqs[1], seqs[2], a, i))
            wrong.append(entry)
    margins = [responses[2 * p]["delta_r_im"] - responses[2 * p + 1]["delta_r_im"] for p in range(len(evals))]
    return {"beta": beta, "eta": eta, "method": method, "tied_embeddings": head.tied,
            "n_train": len(train), "n_eval": len(evals), "notes": notes,
            "wrong_way_fraction_im": float(np.mean([r["wrong_way_im"] for r in responses])),
            "wrong_way_fraction_ex": float(np.mean([r["wrong_way_ex"] for r in responses])),
            "eval_margin_change_im": margins, "responses": responses, "wrong_way": wrong}


# --------------------------------------------------------------------------- bench

def bench(*, hidden: int, layers: int, vocab: int, n_pairs: int, length: int, dtype: str,
          device: str, seed: int = 0) -> dict:
    """Time and peak memory on a random (untied) Llama of the given size: the forward pass that
    `score` and `representations` make per response, and Eq. 5 (`step`'s closed form) for
    n_pairs training pairs against their chosen responses, states included. A reference model
    costs one more forward pass per response; the model's own weights dominate the memory."""
    import resource
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                      num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                      num_key_value_heads=max(1, hidden // 64), tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(getattr(torch, dtype)).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(seed)
    half = length // 2
    seqs = [(rng.integers(1, vocab, half).tolist(), rng.integers(1, vocab, half).tolist(),
             rng.integers(1, vocab, half).tolist()) for _ in range(n_pairs)]

    class Tok:  # pre-tokenised pairs: the bench measures the model, not the tokenizer
        pad_token_id, eos_token = 0, None
    times = {}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for group in _split(seqs):
        run_batches(model, group, batch_size=8, pad_id=0)
    times["forward_seconds_per_pair"] = (time.perf_counter() - t0) / n_pairs
    from theory.sequences import Seqs
    from theory.dynamics import reward_change_matrix_im
    head = head_of(model)
    t0 = time.perf_counter()
    parts = []
    for group in (_split(seqs)[0], *_split(seqs)):
        r = run_batches(model, group, batch_size=8, pad_id=0)
        U, hh = head.theory_form(r["h"])
        parts.append(Seqs(hh, r["y"], r["mask"]))
    reward_change_matrix_im(U, *parts, beta=0.01, eta=1e-3, ref_margins=torch.zeros(n_pairs, dtype=U.dtype,
                                                                                      device=U.device))
    times["eq5_seconds"] = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"config": {"hidden": hidden, "layers": layers, "vocab": vocab, "n_pairs": n_pairs,
                       "tokens_per_sequence": 2 * half, "dtype": dtype, "device": device},
            "parameters": n_params, "parameters_billions": n_params / 1e9,
            "peak_memory_gib": peak / 2**30,
            "memory_kind": "torch.cuda.max_memory_allocated" if device.startswith("cuda") else "process max RSS",
            **times}


# --------------------------------------------------------------------------- command line

def _common(p, model=True):
    if model:
        p.add_argument("--model", required=True, help="policy model: a folder or hub id")
        p.add_argument("--tokenizer", default=None, help="tokenizer (default: the model's)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="weights' dtype")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--padding-side", default="right", choices=PADDING, help="where padding goes")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--force", action="store_true", help="overwrite --out")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m sims.hf", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    add = sub.add_parser
    sub.add_parser = lambda name, **kw: add(name, description=kw.get("help"), formatter_class=HelpFormatter, **kw)
    s = sub.add_parser("score", help="implicit rewards, accuracy and margins under six conventions (paper, "
                       "trl, rewardbench, and RewardBench's reference-free sum / avg / norm)")
    _common(s)
    s.add_argument("--ref", default=None, help="reference model (default: none, pi_ref = 1)")
    s.add_argument("--pairs", required=True, help="preference pairs (JSON Lines)")
    s.add_argument("--beta", type=float, default=0.01, help="DPO beta, in [1e-30, 1e30]")
    r = sub.add_parser("representations", help="write the .npz that sims.theorem2 --representations reads "
                       "(needs --heldout, --shifted or both)")
    _common(r)
    r.add_argument("--train", required=True, help="training pairs (JSON Lines)")
    r.add_argument("--heldout", default=None, help="held-out pairs -> the seen_tokens split")
    r.add_argument("--shifted", default=None, help="shifted pairs (e.g. paraphrases) -> shifted_* (and "
                   "unseen_tokens when their tokens never occur in training)")
    r.add_argument("--eos", action="store_true", help="append EOS to plain-text responses (TRL)")
    r.add_argument("--unembedding", action="store_true", help="also write U_ref, lm_head's weight")
    r.add_argument("--analyse", action="store_true", help="also run `analyse`, written beside --out as .json")
    a = sub.add_parser("analyse", help="u* with its certificate, and the Footnote 3 statistics")
    a.add_argument("--representations", required=True, help="an .npz written by `representations`")
    a.add_argument("--out", required=True, help="output .json")
    a.add_argument("--force", action="store_true", help="overwrite --out")
    t = sub.add_parser("step", help="Eq. 5 on the model: responses whose IM-RM reward moves the wrong way")
    _common(t)
    t.add_argument("--ref", required=True, help="reference model (its own log-probabilities enter g)")
    t.add_argument("--train", required=True, help="training pairs of the step (JSON Lines)")
    t.add_argument("--eval", required=True, help="evaluation pairs (JSON Lines)")
    t.add_argument("--beta", type=float, default=0.01, help="DPO beta, in [1e-30, 1e30]")
    t.add_argument("--eta", type=float, default=1e-3, help="learning rate of the step")
    t.add_argument("--eos", action="store_true", help="append EOS to plain-text responses (TRL)")
    t.add_argument("--method", default="auto", choices=("auto", "eq5", "autograd"),
                   help="auto: Eq. 5 for an untied linear head, the exact autograd tangent otherwise")
    b = sub.add_parser("bench", help="time and memory of score's forward and Eq. 5 on a random Llama")
    _common(b, model=False)
    for action in b._actions:
        if action.dest == "out":
            action.required, action.help = False, "results folder (default: a new folder runs/hf_bench-<time>)"

    b.add_argument("--hidden", type=int, default=512, help="hidden width")
    b.add_argument("--layers", type=int, default=8, help="layers")
    b.add_argument("--vocab", type=int, default=32000, help="vocabulary size")
    b.add_argument("--n-pairs", type=int, default=16, help="pairs")
    b.add_argument("--length", type=int, default=128, help="tokens per prompt + response")
    return p


def _out(path: str, force: bool) -> Path:
    out = inputs.check_out_file(path, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _write_json(path: Path, obj) -> None:
    inputs.check_results_finite(obj)   # NaN / Inf would be invalid JSON and a silently wrong answer
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def _positive(name, v):
    inputs.check_number(name, v, inputs.POSITIVE_FINITE)


def body(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "bench":
        return _bench_main(args, argv)
    out = inputs.check_out_file(args.out, args.force)   # checked now, written when the results exist
    if args.command == "analyse":
        result = analyse(load_npz(args.representations))
        _write_json(out, {"source": args.representations, **result})
        _print_analysis(result)
        print(f"results: {out}")
        return 0
    _positive("batch-size", args.batch_size)
    inputs.check_device(args.device)
    # every input is checked before a model loads
    files = {k: read_pairs(getattr(args, k)) for k in ("pairs", "train", "heldout", "shifted", "eval")
             if getattr(args, k, None)}
    for k in ("beta", "eta"):
        if hasattr(args, k):
            _positive(k, getattr(args, k))
    if hasattr(args, "beta"):   # float32 rewards beta ln pi/pi_ref lose all precision or overflow outside
        inputs.check_number("beta", args.beta, inputs.in_range(1e-30, 1e30))
    if args.command == "representations":
        if not (args.heldout or args.shifted):
            raise UsageError("give --heldout, --shifted or both (the file needs a seen_tokens split)")
        if args.analyse:
            inputs.check_out_file(str(out.with_suffix(".json")), args.force)
    model = load(args.model, dtype=args.dtype, device=args.device)
    tok = load_tokenizer(args.tokenizer or args.model)
    common = {"batch_size": args.batch_size, "side": args.padding_side}
    if args.command == "score":
        pairs = files["pairs"]
        ref = load(args.ref, dtype=args.dtype, device=args.device) if args.ref else None
        result = score(model, ref, tok, pairs, beta=args.beta, **common)
        _write_json(out, {"model": args.model, "ref": args.ref, "pairs": args.pairs, **result})
        print(f"{'convention':26} {'accuracy':>8} {'ties':>6} {'norm. margin':>12}")
        for name, c in result["conventions"].items():
            print(f"{name:26} {c['accuracy']:8.3f} {c['tie_fraction']:6.3f} {c['normalised_margin']:12.4g}")
    elif args.command == "representations":
        sets = {k: files.get(k) for k in ("train", "heldout", "shifted")}
        arrays, notes = write_representations(model, tok, **sets, eos=args.eos, unembedding=args.unembedding, **common)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:
            np.savez(f, **arrays)
        for n in notes:
            print(f"note: {n}")
        print(f"representations: {out}  (python -m sims.theorem2 --representations {out})")
        if args.analyse:
            result = analyse(arrays)
            js = _out(str(out.with_suffix(".json")), args.force)
            _write_json(js, {"source": str(out), **result})
            _print_analysis(result)
            print(f"analysis: {js}")
    elif args.command == "step":
        ref = load(args.ref, dtype=args.dtype, device=args.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = step(model, ref, tok, files["train"], files["eval"], beta=args.beta,
                          eta=args.eta, eos=args.eos, method=args.method, **common)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        _write_json(out, {"model": args.model, "ref": args.ref, **result})
        print(f"{len(result['wrong_way'])} of {2 * result['n_eval']} evaluation responses move the wrong way "
              f"under IM-RM (EX-RM: {result['wrong_way_fraction_ex']:.3f} of them); method {result['method']}")
        for w in result["wrong_way"]:
            rho = f", rho vs y+ min {w['rho_chosen']['min']:.3f}" if "rho_chosen" in w else ""
            print(f"  pair {w['pair']} {w['response']}: delta r_IM {w['delta_r_im']:+.3g}, "
                  f"delta r_EX {w['delta_r_ex']:+.3g}{rho}")
    print(f"results: {out}")
    return 0


def _bench_main(args, argv) -> int:
    """bench writes a results folder (results.json, run.json) like a simulation, so that the
    README can quote it as a canonical run."""
    from sims.cli import make_folder, plan_folder, write_json
    from sims.provenance import code_hash
    for k in ("batch_size", "hidden", "layers", "vocab", "n_pairs", "length"):
        _positive(k.replace("_", "-"), getattr(args, k))
    inputs.check_device(args.device)
    # weights, their gradient-free copy and the logits of one batch (float32 or float64)
    item = 8 if args.dtype == "float64" else 4
    params = args.layers * 12 * args.hidden ** 2 + 2 * args.vocab * args.hidden
    inputs.check_memory(item * (3 * params + 4 * args.batch_size * args.length * (args.vocab + 16 * args.hidden)
                                + 2 * args.n_pairs * args.length * (args.hidden + 4)),
                        "this benchmark", args.device)
    folder = plan_folder("hf_bench", args.out, args.force)
    t0 = time.perf_counter()
    result = bench(hidden=args.hidden, layers=args.layers, vocab=args.vocab, n_pairs=args.n_pairs,
                   length=args.length, dtype=args.dtype, device=args.device)
    folder = make_folder(folder, given=args.out is not None)
    write_json(folder / "results.json", result)
    write_json(folder / "run.json", {"wall_seconds": time.perf_counter() - t0, "module": "sims.hf",
                                     "code_hash": code_hash("sims.hf"),
                                     "argv": list(sys.argv[1:] if argv is None else argv)})
    print(json.dumps(result, indent=2))
    print(f"results: {folder / 'results.json'}")
    return 0


def _print_analysis(result):
    u = result["u_star"]
    print(f"u*: margin {u['margin']:.4g}, {u['support_vectors']} support vectors, certificate worst "
          f"{u['certificate_worst']:.2g}")
    for split, s in result["splits"].items():
        c = s["cosine"]
        print(f"  {split:14} u* accuracy {s['u_star_accuracy']:.3f}; cos(u*, h+ - h-) mean {c['mean']:+.3f}, "
              f"quartiles {c['q25']:+.3f} {c['median']:+.3f} {c['q75']:+.3f}, positive {c['fraction_positive']:.3f}")


def main(argv=None) -> int:
    try:
        import transformers
    except ImportError:
        print("error: sims.hf needs transformers: pip install -e '.[hf]'", file=sys.stderr)
        return 2
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    import huggingface_hub   # its download retries would print lines before our one error line
    huggingface_hub.utils.logging.set_verbosity_error()
    return run_cli(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
