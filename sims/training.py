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

IM-RM in dual coordinates. For single-token pairs the margin is linear in U,
m_i = beta <E_i, (U - U_ref) h_i>, and every GD step adds (eta/(beta n)) sum_j w_j E_j h_j^T.
So U_t = U_ref + (eta/(beta n)) E^T (A_t * h) with A_t = sum_{s<t} w_s, and the margins are
m_t = (eta/n) K A_t with the reward kernel K_ij = <E_i, E_j> <h_i, h_j> (Eq. 5 for single
tokens: the softmax terms of rho cancel between y+ and y-). A step then costs n^2 instead of
2 n |V| D; U is formed only when a checkpoint asks for it. The iterates are those of
U <- U - (eta/beta^2) grad L (tests/test_training.py checks this against the primal loop).
"""
from __future__ import annotations

from theory.backend import namespace, softplus
from theory.gradients import bt_weights, ex_rm_grad_from_weights
from theory.rewards import ex_rm_reward

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


def check_finite(x, step: int, model: str, what: str = "a reward margin"):
    """Raise DivergenceError naming the step if x holds NaN or Inf."""
    xp = namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        raise DivergenceError(f"{model} diverged at step {step}: {what} became NaN or Inf")


def train_ex_rm(u0, z, *, lr: float, steps: int, rule: str, checkpoints=(), on_checkpoint=None):
    """GD on the EX-RM head.  u0 (S, D), z (S, n, D)  ->  u (S, D).

    on_checkpoint(step, u) is called at step 0 and at each step in `checkpoints`.
    """
    u, marks = u0, set(checkpoints)
    if on_checkpoint is not None:
        on_checkpoint(0, u)
    for t in range(1, steps + 1):
        m = ex_rm_reward(u, z)                                       # (S, n) margins <u, z_i>
        check_finite(m, t, "EX-RM")
        u = u - lr * ex_rm_grad_from_weights(z, step_weights(m, rule))
        check_finite(u, t, "EX-RM", "the head u")
        if on_checkpoint is not None and t in marks:
            on_checkpoint(t, u)
    return u


def train_im_rm(U_ref, h_x, E, *, beta: float, lr: float, steps: int, rule: str,
                checkpoints=(), on_checkpoint=None):
    """GD on the IM-RM unembedding from U(0) = U_ref (so pi_theta(0) = pi_ref), in dual form.

    U_ref (S, V, D), h_x (S, n, D), E (S, n, V) = e_{y+} - e_{y-}  ->  U (S, V, D).
    """
    xp = namespace(U_ref, h_x)
    n = h_x.shape[-2]
    K = xp.matmul(E, xp.matrix_transpose(E)) * xp.matmul(h_x, xp.matrix_transpose(h_x))  # (S, n, n)
    A = xp.zeros_like(h_x[..., 0])                                   # (S, n) summed step weights
    marks = set(checkpoints)

    def U_at(A):
        return U_ref + (lr / (beta * n)) * xp.matmul(xp.matrix_transpose(E), A[..., None] * h_x)

    if on_checkpoint is not None:
        on_checkpoint(0, U_ref)
    for t in range(1, steps + 1):
        m = (lr / n) * xp.matmul(K, A[..., None])[..., 0]           # (S, n)
        check_finite(m, t, "IM-RM")
        A = A + step_weights(m, rule)
        if on_checkpoint is not None and t in marks:
            on_checkpoint(t, U_at(A))
    return U_at(A)


if __name__ == "__main__":   # `python -m sims.training` would otherwise do nothing and exit 0
    import sys
    print("error: sims.training is a library module (gradient descent for the simulations), not a command; "
          "python -m sims lists the commands", file=sys.stderr)
    raise SystemExit(2)
