"""Full-batch gradient descent on the Bradley-Terry loss with the closed-form gradients.

Seeds form a leading batch axis, so every seed trains in the same tensor operations.
Step rules:
  * "constant":   theta <- theta - eta grad L                       (the paper's setting)
  * "normalized": theta <- theta - (eta / L(theta)) grad L          (Nacson et al. 2019;
    Ji & Telgarsky 2021). The same implicit bias (the max-margin direction) but reached at a
    polynomial rather than an O(1/log t) rate. grad L / L is computed from log-weights,
    since L itself underflows once the margins pass ~745.
IM-RM steps use eta / beta^2: by Eq. 5 its reward kernel carries beta^2, so this makes one
step move IM-RM rewards as far as one EX-RM step moves EX-RM rewards.
"""
from __future__ import annotations

from theory.backend import namespace, softplus
from theory.gradients import (bt_weights, ex_rm_grad_from_weights, im_rm_single_token_grad,
                              im_rm_single_token_margins)

STEP_RULES = ("normalized", "constant")


class DivergenceError(RuntimeError):
    """Parameters became NaN or Inf."""


def _log_softplus_neg(m):
    """ln softplus(-m) = ln ln(1 + e^-m), stable for large m (where it is -m to 1e-13)."""
    xp = namespace(m)
    big = m > 30.0
    safe = xp.where(big, xp.zeros_like(m), m)
    return xp.where(big, -m, xp.log(softplus(-safe)))


def step_weights(margins, rule: str):
    """Per-pair weights w with  -grad L (scaled by the rule) = (1/n) sum_i w_i grad m_i.

    constant: w = g;  normalized: w = g / L = exp(ln g - ln mean_j softplus(-m_j)).
    """
    if rule == "constant":
        return bt_weights(margins)
    xp = namespace(margins)
    log_g = -softplus(margins)
    log_l = _log_softplus_neg(margins)
    top = xp.max(log_l, axis=-1, keepdims=True)
    log_mean_l = top + xp.log(xp.mean(xp.exp(log_l - top), axis=-1, keepdims=True))
    return xp.exp(log_g - log_mean_l)


def _check_finite(margins, step: int, model: str):
    xp = namespace(margins)
    if not bool(xp.all(xp.isfinite(margins))):
        raise DivergenceError(f"{model} diverged at step {step}: a reward margin became NaN or Inf")


def train_ex_rm(u0, z, *, lr: float, steps: int, rule: str, checkpoints=(), on_checkpoint=None):
    """GD on the EX-RM head.  u0 (S, D), z (S, n, D)  ->  u (S, D).

    on_checkpoint(step, u) is called at step 0 and at each step in `checkpoints`.
    """
    xp = namespace(u0, z)
    u, marks = u0, set(checkpoints)
    if on_checkpoint is not None:
        on_checkpoint(0, u)
    for t in range(1, steps + 1):
        m = xp.matmul(z, u[..., None])[..., 0]                       # (S, n)
        _check_finite(m, t, "EX-RM")
        u = u - lr * ex_rm_grad_from_weights(z, step_weights(m, rule))
        if on_checkpoint is not None and t in marks:
            on_checkpoint(t, u)
    return u


def train_im_rm(U_ref, h_x, E, *, beta: float, lr: float, steps: int, rule: str,
                checkpoints=(), on_checkpoint=None):
    """GD on the IM-RM unembedding from U(0) = U_ref (so pi_theta(0) = pi_ref).

    U_ref (S, V, D), h_x (S, n, D), E (S, n, V) = e_{y+} - e_{y-}  ->  U (S, V, D).
    """
    U, marks = U_ref, set(checkpoints)
    margins_ref = im_rm_single_token_margins(U_ref, h_x, E, beta=beta)
    if on_checkpoint is not None:
        on_checkpoint(0, U)
    for t in range(1, steps + 1):
        m = im_rm_single_token_margins(U, h_x, E, beta=beta, margins_ref=margins_ref)
        _check_finite(m, t, "IM-RM")
        U = U - (lr / beta**2) * im_rm_single_token_grad(h_x, E, step_weights(m, rule), beta=beta)
        if on_checkpoint is not None and t in marks:
            on_checkpoint(t, U)
    return U
