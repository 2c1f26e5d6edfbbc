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
    """r_EX(x,y) = <u, h_{x,y}>.  u (*B, D), h (*B, n, D) -> (*B, n).

    Linear in h, so with h = z_i = h_{x,y+} - h_{x,y-} it is the EX-RM margin <u, z_i>.
    """
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


def implicit_reward(log_pi, log_pi_ref=None, *, beta: float, with_scale: bool = False):
    """r_IM(x,y) = beta ln( pi(y|x) / pi_ref(y|x) ) from sequence log-probabilities.  -> same shape.

    The definition of the implicit reward (Section 1; DPO): every IM-RM reward in the toolkit,
    whatever model produced the log-probabilities, goes through here. log_pi_ref=None is the
    paper's no-reference ablation (pi_ref = 1). with_scale=True also returns
    beta (|ln pi| + |ln pi_ref|), the size of what the reward subtracts, which decides ties
    (theory.tolerance); log-probabilities are <= 0, so for a sum over tokens it equals the sum
    of the per-token magnitudes.
    """
    xp = namespace(log_pi)
    r = beta * (log_pi if log_pi_ref is None else log_pi - log_pi_ref)
    if not with_scale:
        return r
    return r, beta * (xp.abs(log_pi) + (0.0 if log_pi_ref is None else xp.abs(log_pi_ref)))


def sequence_log_prob(U, h, y, mask=None):
    """ln pi(y|x) = sum_k ln pi(y_k | x, y<k) over real positions.  -> (*B, n)."""
    return _masked_sum(token_log_probs(U, h, y), mask)


def im_rm_reward(U, h, y, *, beta: float, U_ref=None, mask=None, with_scale: bool = False):
    """r_IM(x,y) = beta * sum_k [ln pi(y_k|.) - ln pi_ref(y_k|.)]  -> (*B, n).

    Policy and reference share the hidden states h (a frozen body, Assumption 1) and differ in
    their unembeddings U and U_ref. U_ref=None is the paper's no-reference ablation. See
    `implicit_reward` for with_scale.
    """
    lp_ref = None if U_ref is None else sequence_log_prob(U_ref, h, y, mask)
    return implicit_reward(sequence_log_prob(U, h, y, mask), lp_ref, beta=beta, with_scale=with_scale)


def bt_loss(r_plus, r_minus):
    """Bradley-Terry loss L = mean_i -ln sigmoid(r(x,y+) - r(x,y-)), over the last axis."""
    xp = namespace(r_plus, r_minus)
    return xp.mean(softplus(r_minus - r_plus), axis=-1)


TIES = {"half": 0.5, "zero": 0.0}
"""How a tie counts in accuracy: "half" as in the paper's official code (the default), "zero" as
in TRL's DPOTrainer metrics, RewardBench and OpenRLHF (only chosen > rejected counts)."""


def accuracy(margins, scale, ties: str = "half"):
    """Pairwise accuracy, and the tie fraction.

    margins = r(x,y+) - r(x,y-), (*B, n); scale bounds what was subtracted to form each
    margin (see theory.tolerance), so rounding noise on a margin that is zero in exact
    arithmetic is a tie. A tie counts TIES[ties]. Returns (accuracy, tie_fraction), each (*B,).
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {sorted(TIES)}, got {ties!r}")
    xp = namespace(margins)
    tie = xp.abs(margins) <= tie_tolerance(margins.dtype, scale)
    win = (margins > 0) & ~tie
    tie_f = xp.astype(tie, margins.dtype)
    return xp.mean(xp.astype(win, margins.dtype) + TIES[ties] * tie_f, axis=-1), xp.mean(tie_f, axis=-1)


NORMALISED_MARGIN_CONVENTION = "mean |r+ - r-| / (unbiased std (ddof=1) of all 2N rewards + 1e-8), as the official code"


def normalised_margin(r_plus, r_minus):
    """Normalised absolute reward margin, as the official code computes it:
    mean |r+ - r-| / (std of all 2N rewards of the evaluation set + 1e-8).

    The std is torch's default, the unbiased one (ddof = 1), over chosen and rejected rewards
    together: `rm_exps/eval/reward_model_evaluator.py` in princeton-pli/exrm-vs-imrm. Per batch
    entry.  -> (*B,)
    """
    xp = namespace(r_plus, r_minus)
    rewards = xp.concat([r_plus, r_minus], axis=-1)
    return xp.mean(xp.abs(r_plus - r_minus), axis=-1) / (xp.std(rewards, axis=-1, correction=1) + 1e-8)
