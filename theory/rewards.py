"""Reward models, the Bradley-Terry loss and the evaluation metrics of Section 1.

Shapes: a leading batch `*B` (e.g. seeds) is allowed everywhere and broadcasts.
    u : (*B, D)            EX-RM head
    U : (*B, V, D)         unembedding (IM-RM parameters); U_ref the reference model's
    h : (*B, n, D)         EX-RM: hidden representation of the whole sequence h_{x,y}
    h : (*B, n, L, D)      IM-RM: h_{x,y<k}, the position that predicts token k
    y : (*B, n, L)         token ids; mask (*B, n, L) marks real tokens (None: all real)
"""
from __future__ import annotations

from theory.backend import log_softmax, namespace, softplus
from theory.tolerance import tie_tolerance


def ex_rm_reward(u, h):
    """r_EX(x,y) = <u, h_{x,y}>.  u (*B, D), h (*B, n, D) -> (*B, n)."""
    xp = namespace(u, h)
    return xp.matmul(h, u[..., None])[..., 0]


def ex_rm_reward_scale(u, h):
    """sum_d |u_d h_d|: bounds the rounding error of <u, h> (for tie decisions)."""
    xp = namespace(u, h)
    return xp.matmul(xp.abs(h), xp.abs(u)[..., None])[..., 0]


def unembed(U, h):
    """Logits U h for every position.  U (*B, V, D), h (*B, n, L, D) -> (*B, n, L, V)."""
    xp = namespace(U, h)
    Ut = xp.matrix_transpose(U)
    if U.ndim == 2:
        return xp.matmul(h, Ut)
    # One (n*L, D) @ (D, V) product per batch entry; broadcasting Ut over (n, L) instead
    # would run n*L tiny products.
    n, L, D = h.shape[-3:]
    out = xp.matmul(xp.reshape(h, (*h.shape[:-3], n * L, D)), Ut)
    return xp.reshape(out, (*out.shape[:-2], n, L, U.shape[-2]))


def token_log_probs(U, h, y):
    """ln pi(y_k | x, y<k) = ln softmax(U h_{x,y<k})[y_k].  -> (*B, n, L)."""
    xp = namespace(U, h)
    logp = log_softmax(unembed(U, h), axis=-1)
    return xp.take_along_axis(logp, xp.astype(y, xp.int64)[..., None], axis=-1)[..., 0]


def _masked_sum(x, mask):
    xp = namespace(x)
    return xp.sum(x if mask is None else x * xp.astype(mask, x.dtype), axis=-1)


def im_rm_reward(U, h, y, *, beta: float, U_ref=None, mask=None, with_scale: bool = False):
    """r_IM(x,y) = beta * sum_k [ln pi(y_k|.) - ln pi_ref(y_k|.)]  -> (*B, n).

    U_ref=None is the paper's no-reference ablation (pi_ref = 1, ln pi_ref = 0).
    with_scale=True also returns beta * sum_k (|ln pi| + |ln pi_ref|), the size of what the
    reward subtracts, which decides ties (theory.tolerance).
    """
    xp = namespace(U, h)
    lp = token_log_probs(U, h, y)
    lp_ref = xp.zeros_like(lp) if U_ref is None else token_log_probs(U_ref, h, y)
    r = beta * _masked_sum(lp - lp_ref, mask)
    if not with_scale:
        return r
    return r, beta * _masked_sum(xp.abs(lp) + xp.abs(lp_ref), mask)


def bt_loss(r_plus, r_minus):
    """Bradley-Terry loss L = mean_i -ln sigmoid(r(x,y+) - r(x,y-)), over the last axis."""
    xp = namespace(r_plus, r_minus)
    return xp.mean(softplus(r_minus - r_plus), axis=-1)


def accuracy(margins, scale):
    """Pairwise accuracy with ties counted 1/2 (official code), and the tie fraction.

    margins = r(x,y+) - r(x,y-), (*B, n); scale bounds what was subtracted to form each
    margin (see theory.tolerance). Returns (accuracy, tie_fraction), each (*B,).
    """
    xp = namespace(margins)
    tie = xp.abs(margins) <= tie_tolerance(margins.dtype, scale)
    win = (margins > 0) & ~tie
    tie_f = xp.astype(tie, margins.dtype)
    return xp.mean(xp.astype(win, margins.dtype) + 0.5 * tie_f, axis=-1), xp.mean(tie_f, axis=-1)


def normalised_margin(r_plus, r_minus):
    """Official code's normalised absolute margin: mean |r+ - r-| / (std of all rewards + 1e-8).

    The std is over every reward of the evaluation set (chosen and rejected together), the
    population std (ddof = 0), per batch entry.  -> (*B,)
    """
    xp = namespace(r_plus, r_minus)
    rewards = xp.concat([r_plus, r_minus], axis=-1)
    return xp.mean(xp.abs(r_plus - r_minus), axis=-1) / (xp.std(rewards, axis=-1) + 1e-8)
