"""Fixed hidden representations for single-token responses (Assumptions 1 and 2).

Synthetic generative model (every vector is drawn per seed, entries N(0, 1/D) unless said):
  * meaning direction m (unit); token v has class c_v = +1 (preferred, first half of the
    vocabulary) or -1 (dispreferred, second half).
  * token part     e_v = (meaning_strength / 2) c_v m + token_noise xi_v
  * prompt part    p_x = sqrt(prompt_similarity) pbar + sqrt(1 - prompt_similarity) zeta_x
                   (so distinct prompts have cosine ~ prompt_similarity)
  * IM-RM          h_x = p_x, the position that predicts the response token
  * EX-RM          h_{x,y} = p_x + e_y + pair_noise eps_{x,y}
  * reference      U_ref = U(0), entries N(0, init_scale^2 / D)
Of each class, the first n_seen/2 tokens are "seen" (they form the training pairs), the next
n_unseen/2 are "unseen"; further tokens exist only in the softmax. A pair takes a prompt, a
preferred token as y+ and a dispreferred one as y-. Splits: `train` (n_train prompts, seen
tokens), `seen_tokens` (n_test new prompts, seen tokens), `unseen_tokens` (n_test new
prompts, unseen tokens). With meaning_strength = 0 no direction separates the classes, and
nothing can generalise to unseen tokens (the theorem's condition fails).

File format (`load_pairs`), a NumPy .npz with, for each split S in train, seen_tokens and
(optionally) unseen_tokens:
  S_h_prompt (n, D)  hidden state at the last prompt position (predicts the response token)
  S_h_chosen (n, D), S_h_rejected (n, D)   hidden state at the end of prompt + response
  S_y_chosen (n,), S_y_rejected (n,)       integer token ids of the one-token responses
and optionally U_ref (V, D), the model's unembedding (default: zeros, a uniform pi_ref).
The unseen_tokens split must use no token that occurs in train. Hidden states are real
(float or integer) arrays; token ids are integers.
"""
from __future__ import annotations

import difflib
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims.inputs import UsageError, check_memory, read_npz, real_matrix, token_ids

SPLITS = ("train", "seen_tokens", "unseen_tokens")
FIELDS = ("h_prompt", "h_chosen", "h_rejected", "y_chosen", "y_rejected")
# every array a file may hold: sims.hf representations also writes shifted_* (kept for analyse)
# and each split's response lengths, S_n_tokens_chosen / _rejected (read by neither; no near miss)
KNOWN_KEYS = tuple(f"{s}_{k}" for s in (*SPLITS, "shifted")
                   for k in (*FIELDS, "n_tokens_chosen", "n_tokens_rejected")) + ("U_ref",)


def near_misses(keys) -> dict:
    """Arrays of a file that are not read but look like a misspelt known name -> that name
    (unseen_token_h_prompt -> unseen_tokens_h_prompt): such a split would be silently ignored."""
    out = {}
    for k in keys:
        if k not in KNOWN_KEYS:
            close = difflib.get_close_matches(k, KNOWN_KEYS, n=1, cutoff=0.8)
            if close:
                out[k] = close[0]
    return out


def _by_split(misses: dict) -> dict:
    """unseen_token_h_prompt -> unseen_tokens_h_prompt, ... (all five) as unseen_token_* -> unseen_tokens_*."""
    out = {}
    for k, v in misses.items():
        f = next((f for f in FIELDS if v.endswith("_" + f) and k.endswith("_" + f)), None)
        if f is None:
            out[k] = v
        else:
            out[k[:-len(f)] + "*"] = v[:-len(f)] + "*"
    return out


@dataclass(frozen=True)
class Pairs:
    """One split, stacked over seeds: h_x, h_plus, h_minus (S, n, D); y_plus, y_minus (S, n)."""
    h_x: np.ndarray
    h_plus: np.ndarray
    h_minus: np.ndarray
    y_plus: np.ndarray
    y_minus: np.ndarray


@dataclass(frozen=True)
class Problem:
    splits: dict            # name -> Pairs
    U_ref: np.ndarray       # (S, V, D)
    vocab_size: int
    seen_tokens: np.ndarray  # token ids that occur in training


def _gauss(rng, *shape, D):
    return rng.standard_normal(shape) / np.sqrt(D)


def synthetic(*, seeds, dim, vocab_size, n_seen, n_unseen, n_train, n_test,
              meaning_strength, token_noise, pair_noise, prompt_similarity,
              init_scale) -> Problem:
    """The generative model of the module docstring, one independent draw per seed."""
    D, V, half = dim, vocab_size, vocab_size // 2
    ks, ku = n_seen // 2, n_unseen // 2
    pref_seen, disp_seen = np.arange(ks), half + np.arange(ks)
    pref_unseen, disp_unseen = ks + np.arange(ku), half + ks + np.arange(ku)
    draws = {name: [] for name in SPLITS}
    U_ref = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        m = rng.standard_normal(D)
        m /= np.linalg.norm(m)
        c = np.where(np.arange(V) < half, 1.0, -1.0)
        e = 0.5 * meaning_strength * c[:, None] * m + token_noise * _gauss(rng, V, D, D=D)
        pbar = _gauss(rng, D, D=D)
        U_ref.append(init_scale * _gauss(rng, V, D, D=D))
        for name, n, (pref, disp) in (("train", n_train, (pref_seen, disp_seen)),
                                      ("seen_tokens", n_test, (pref_seen, disp_seen)),
                                      ("unseen_tokens", n_test, (pref_unseen, disp_unseen))):
            p = np.sqrt(prompt_similarity) * pbar + np.sqrt(1 - prompt_similarity) * _gauss(rng, n, D, D=D)
            yp, ym = rng.choice(pref, n), rng.choice(disp, n)
            hp = p + e[yp] + pair_noise * _gauss(rng, n, D, D=D)
            hm = p + e[ym] + pair_noise * _gauss(rng, n, D, D=D)
            draws[name].append((p, hp, hm, yp, ym))
    splits = {name: Pairs(*(np.stack(a) for a in zip(*draws[name]))) for name in SPLITS}
    return Problem(splits=splits, U_ref=np.stack(U_ref), vocab_size=V,
                   seen_tokens=np.concatenate([pref_seen, disp_seen]))


def load_pairs(path: str, dtype: str = "float64") -> Problem:
    """Representations from an .npz file (format in the module docstring), as one 'seed'.

    Every array is checked (sims.inputs) before use: a file that cannot be used raises
    UsageError with a one-line reason naming the array. `dtype` is the precision the run will
    use: entries so large that inner products overflow it are refused. Cached on the file's
    path, size and modification time, so validating a config and running it read it once.
    """
    p = Path(path)
    stat = p.stat() if p.is_file() else None
    key = (str(p.resolve()) if stat else path, stat.st_size if stat else None,
           stat.st_mtime_ns if stat else None, dtype)
    return _load_pairs(key)


@functools.lru_cache(maxsize=2)
def _load_pairs(key) -> Problem:
    path, _, _, dtype = key
    data = read_npz(path, "representation file")
    misses = near_misses(data)
    splits, D = {}, None
    for name in SPLITS:
        keys = [f"{name}_{k}" for k in ("h_prompt", "h_chosen", "h_rejected", "y_chosen", "y_rejected")]
        present = [k in data for k in keys]
        if not any(present) and name == "unseen_tokens":
            continue
        if not all(present):
            missing = [k for k, p in zip(keys, present) if not p]
            typos = [f"{k} for {v}" for k, v in misses.items() if v in missing]
            raise UsageError(f"representation file {path} lacks {', '.join(missing)} "
                             f"(it has: {', '.join(sorted(data)) or 'no arrays'}"
                             f"{'; misspelt? ' + ', '.join(typos) if typos else ''})")
        hx = real_matrix(keys[0], data[keys[0]], cols=D, dtype=np.dtype(dtype))
        n, D = hx.shape
        hp, hm = (real_matrix(k, data[k], rows=n, cols=D, dtype=np.dtype(dtype)) for k in keys[1:3])
        yp, ym = (token_ids(k, data[k], rows=n) for k in keys[3:])
        splits[name] = Pairs(*(a[None] for a in (hx, hp, hm, yp, ym)))
    V = 1 + max(int(max(p.y_plus.max(), p.y_minus.max())) for p in splits.values())
    U_ref = data.get("U_ref")
    if U_ref is None:
        check_memory(8 * V * D * 6, f"the vocabulary implied by the largest token id ({V - 1}), "
                     f"|V| = {V} x D = {D},")
        U_ref = np.zeros((V, D))
    else:
        if U_ref.ndim != 2 or U_ref.shape[1] != D or U_ref.shape[0] < V:
            raise UsageError(f"U_ref has shape {U_ref.shape}, expected (V, {D}) with V > {V - 1}, "
                             f"the largest token id")
        U_ref = real_matrix("U_ref", U_ref, cols=D, dtype=np.dtype(dtype))
    if misses:   # cached per file, so a run warns once
        named = _by_split(misses)
        print(f"warning: representation file {path}: {', '.join(named)} {'is' if len(named) == 1 else 'are'} "
              f"not read (did you mean {', '.join(dict.fromkeys(named.values()))}?)", file=sys.stderr)
    seen = np.union1d(splits["train"].y_plus, splits["train"].y_minus)
    if "unseen_tokens" in splits:
        u = splits["unseen_tokens"]
        clash = np.intersect1d(np.union1d(u.y_plus, u.y_minus), seen)
        if clash.size:
            raise UsageError(f"unseen_tokens uses tokens that occur in train: {clash[:5].tolist()}")
    return Problem(splits=splits, U_ref=np.asarray(U_ref, dtype=np.float64)[None],
                   vocab_size=int(U_ref.shape[0]), seen_tokens=seen)
