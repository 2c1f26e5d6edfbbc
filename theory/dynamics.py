"""Learning dynamics of Section 4: how one gradient step moves the reward of another pair.

Assumption 1 (fixed hidden representations). For a training example (x, y+, y-) with
g = sigmoid(r(x,y-) - r(x,y+)) and learning rate eta, the change of the reward of (xbar, ybar):

  EX-RM (exact, r_EX is linear in u):
      Delta r_EX(xbar,ybar) = eta g <h_{xbar,ybar}, h_{x,y+} - h_{x,y-}>
  IM-RM (Eq. 5, to first order in eta):
      Delta r_IM(xbar,ybar) = eta g beta^2 [ Theta(ybar, y+) - Theta(ybar, y-) ] + O(eta^2)
      Theta(ybar, v) = sum_k sum_l rho_kl(v) <h_{xbar,ybar<k}, h_{x,v<l}>
                     = <grad_U ln pi(ybar|xbar), grad_U ln pi(v|x)>_F
      rho_kl(v) = <e_{ybar_k} - pi(.|xbar,ybar<k), e_{v_l} - pi(.|x,v<l)>
                = 1[ybar_k = v_l] - pibar_k(v_l) - pi_l(ybar_k) + <pibar_k, pi_l>,  in [-2, 2].
  A mini-batch step is the mean over its examples, each with its own g. The reference model
  has no gradient: it enters only through g.

Theta is the IM-RM reward kernel (the tangent kernel of ln pi in U). Two routes compute it:
  "rho":      from rho and <h, h'> position pairs, cost A N K L (|V| + D); never forms a
              |V| x D matrix (the cheap route at LLM vocabulary sizes);
  "gradient": contract per-sequence gradients G = sum_k (e_{y_k} - pi_k) h_k^T (|V| x D each),
              cost (A K + N L) |V| D + A N |V| D (cheaper for many short sequences, small |V| D).
Both need the next-token distributions, the logits product of the positions involved with U.
"""
from __future__ import annotations

from theory.backend import asarray_like, log_softmax, namespace, one_hot
from theory.gradients import bt_weights, log_prob_grad_from_probs
from theory.rewards import ex_rm_reward, unembed
from theory.sequences import Seqs

ROUTES = ("auto", "rho", "gradient")


def next_token_log_probs(U, *seqs: Seqs):
    """ln pi(.|x, y<k) at every position of each Seqs.  U (V, D)  ->  (N, L, V) per Seqs.

    All positions go through one product with U: at LLM sizes reading U (|V| x D) costs more
    than the arithmetic, so one pass over it for every sequence set is the unavoidable cost.
    """
    xp = namespace(U)
    flat = [xp.reshape(s.h, (-1, s.h.shape[-1])) for s in seqs]
    logp = log_softmax(unembed(U, xp.concat(flat, axis=0)), axis=-1)     # (sum N L, V)
    out, start = [], 0
    for s, f in zip(seqs, flat):
        out.append(xp.reshape(logp[start:start + f.shape[0]], (*s.h.shape[:-1], U.shape[0])))
        start += f.shape[0]
    return out if len(out) > 1 else out[0]


def _flat(x, n_lead: int):
    xp = namespace(x)
    lead = 1
    for s in x.shape[:n_lead]:
        lead *= s
    return xp.reshape(x, (lead, *x.shape[n_lead:]))


def rho_pairs(pi_bar, y_bar, pi, v):
    """rho_kl for every evaluation sequence a and training sequence i.

    pi_bar (A, K, V), y_bar (A, K), pi (N, L, V), v (N, L)  ->  (A, N, K, L).
    """
    xp = namespace(pi_bar, pi)
    (A, K, _), (N, L) = pi_bar.shape, v.shape
    eq = xp.astype(y_bar[:, None, :, None] == v[None, :, None, :], pi_bar.dtype)
    bar_at_v = xp.reshape(xp.take(pi_bar, xp.reshape(v, (N * L,)), axis=-1), (A, K, N, L))
    at_ybar = xp.reshape(xp.take(pi, xp.reshape(y_bar, (A * K,)), axis=-1), (N, L, A, K))
    inner = xp.reshape(xp.matmul(_flat(pi_bar, 2), xp.matrix_transpose(_flat(pi, 2))), (A, K, N, L))
    return (eq - xp.permute_dims(bar_at_v, (0, 2, 1, 3)) - xp.permute_dims(at_ybar, (2, 0, 3, 1))
            + xp.permute_dims(inner, (0, 2, 1, 3)))


def rho(pi_bar, y_bar, pi_v, v):
    """rho_kl(v) of Eq. 5 for one evaluation sequence and one response v.

    pi_bar (K, V) = pi(.|xbar, ybar<k), y_bar (K,), pi_v (L, V) = pi(.|x, v<l), v (L,) -> (K, L).
    """
    return rho_pairs(pi_bar[None], y_bar[None], pi_v[None], v[None])[0, 0]


def kernel_cost(A, K, N, L, V, D) -> dict:
    """Multiply-adds of each route beyond the shared logits product (see module docstring)."""
    return {"rho": A * N * K * L * (V + D), "gradient": (A * K + N * L) * V * D + A * N * V * D}


def reward_kernel(pi_bar, eval_seqs: Seqs, pi, train_seqs: Seqs, route: str = "auto"):
    """Theta(a, i) = <grad_U ln pi(ybar_a|xbar_a), grad_U ln pi(v_i|x_i)>_F.  -> (A, N).

    pi_bar (A, K, V), pi (N, L, V): next-token distributions at the sequences' positions.
    """
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    xp = namespace(pi_bar, pi)
    (A, K, V), (N, L, D) = pi_bar.shape, train_seqs.h.shape[-3:]
    if route == "auto":
        cost = kernel_cost(A, K, N, L, V, D)
        route = min(cost, key=cost.get)
    mbar, m = xp.astype(eval_seqs.mask, pi.dtype), xp.astype(train_seqs.mask, pi.dtype)
    if route == "rho":
        hh = xp.reshape(xp.matmul(_flat(eval_seqs.h, 2), xp.matrix_transpose(_flat(train_seqs.h, 2))),
                        (A, K, N, L))
        w = xp.permute_dims(hh, (0, 2, 1, 3)) * mbar[:, None, :, None] * m[None, :, None, :]
        return xp.sum(rho_pairs(pi_bar, eval_seqs.y, pi, train_seqs.y) * w, axis=(-2, -1))
    G_bar = sequence_log_prob_grads(pi_bar, eval_seqs)              # (A, V, D)
    G = sequence_log_prob_grads(pi, train_seqs)                     # (N, V, D)
    return xp.matmul(xp.reshape(G_bar, (A, V * D)), xp.matrix_transpose(xp.reshape(G, (N, V * D))))


def sequence_log_prob_grads(pi, seqs: Seqs):
    """grad_U ln pi(y|x) per sequence (theory.gradients).  pi (N, L, V) -> (N, V, D)."""
    return log_prob_grad_from_probs(pi, seqs.h, seqs.y, seqs.mask)


def _sequence_log_probs(logp, seqs: Seqs):
    """sum_k ln pi(y_k|.) over real positions, from log-probabilities (N, L, V)  ->  (N,)."""
    xp = namespace(logp)
    lp = xp.take_along_axis(logp, xp.astype(seqs.y, xp.int64)[..., None], axis=-1)[..., 0]
    return xp.sum(lp * xp.astype(seqs.mask, logp.dtype), axis=-1)


def im_rm_bt_weights(logp_plus, logp_minus, plus: Seqs, minus: Seqs, *, beta: float,
                     U_ref=None, ref_margins=None):
    """g_i = sigmoid(r(x_i,y-_i) - r(x_i,y+_i)) from the current log-probabilities.

    The reference enters Eq. 5 only here, through g. Give it as `ref_margins` (B,):
    ln pi_ref(y+_i|x_i) - ln pi_ref(y-_i|x_i), computed by the reference model itself (its own
    body and head: the general case). `U_ref` (V, D) instead applies a reference head to the
    policy's hidden states: exact only when policy and reference share one frozen body
    (Assumption 1); for a real reference model with its own body it is wrong.
    """
    xp = namespace(logp_plus)
    m = beta * (_sequence_log_probs(logp_plus, plus) - _sequence_log_probs(logp_minus, minus))
    if U_ref is not None and ref_margins is not None:
        raise ValueError("give the reference as U_ref or as ref_margins, not both")
    if ref_margins is not None:
        ref_margins = asarray_like(ref_margins, m)
        if tuple(ref_margins.shape) != tuple(m.shape):
            raise ValueError(f"ref_margins must have shape {tuple(m.shape)} (one per training "
                             f"pair), got {tuple(ref_margins.shape)}")
        m = m - beta * ref_margins
    elif U_ref is not None:
        ref_plus, ref_minus = next_token_log_probs(U_ref, plus, minus)
        m = m - beta * (_sequence_log_probs(ref_plus, plus) - _sequence_log_probs(ref_minus, minus))
    return bt_weights(m)


def reward_change_matrix_im(U, eval_seqs: Seqs, plus: Seqs, minus: Seqs, *, beta: float,
                            eta: float, U_ref=None, ref_margins=None, route: str = "auto"):
    """Eq. 5 per training example: entry (a, i) is the first-order change of r_IM on
    evaluation sequence a after one GD step on example i alone,
    eta beta^2 g_i [Theta(ybar_a, y+_i) - Theta(ybar_a, y-_i)].  -> (A, B).

    U (V, D); eval_seqs (A, K): positions of ybar given xbar; plus / minus (B, L): positions
    of y+_i / y-_i given x_i. The reference: `ref_margins` (B,) = ln pi_ref(y+_i|x_i) -
    ln pi_ref(y-_i|x_i) from the reference model itself, or `U_ref` (exact only for a body
    shared with the policy; see im_rm_bt_weights); neither: the no-reference variant.
    """
    xp = namespace(U)
    logp_bar, logp_plus, logp_minus = next_token_log_probs(U, eval_seqs, plus, minus)
    g = im_rm_bt_weights(logp_plus, logp_minus, plus, minus, beta=beta, U_ref=U_ref,
                          ref_margins=ref_margins)                                   # (B,)
    pi_bar = xp.exp(logp_bar)
    theta = (reward_kernel(pi_bar, eval_seqs, xp.exp(logp_plus), plus, route)
             - reward_kernel(pi_bar, eval_seqs, xp.exp(logp_minus), minus, route))       # (A, B)
    return eta * beta**2 * theta * g[None, :]


def delta_r_im(U, eval_seqs: Seqs, plus: Seqs, minus: Seqs, *, beta: float, eta: float,
               U_ref=None, ref_margins=None, route: str = "auto"):
    """Eq. 5 for a mini-batch step (the mean over its examples).  -> (A,)."""
    xp = namespace(U)
    return xp.mean(reward_change_matrix_im(U, eval_seqs, plus, minus, beta=beta, eta=eta,
                                           U_ref=U_ref, ref_margins=ref_margins,
                                           route=route), axis=-1)


def pooled(h, mask, how: str = "last"):
    """EX-RM representation of each sequence: the last real position ("last", h_{x,y}) or the
    mean over real positions ("mean", the paper's averaged-head ablation).  (N, L, D) -> (N, D)."""
    xp = namespace(h)
    m = xp.astype(mask, h.dtype)
    if how == "mean":
        return xp.sum(h * m[..., None], axis=-2) / xp.sum(m, axis=-1)[..., None]
    if how != "last":
        raise ValueError(f"pooling must be 'last' or 'mean', got {how!r}")
    last = xp.astype(xp.sum(m, axis=-1), xp.int64) - 1                 # (N,)
    return xp.sum(h * one_hot(last, h.shape[-2], h)[..., None], axis=-2)


def reward_change_matrix_ex(u, h_bar, h_plus, h_minus, *, eta: float):
    """Entry (a, i): exact change of r_EX on a after one GD step on example i alone,
    eta g_i <h_bar_a, h+_i - h-_i>.  u (D,), h_bar (A, D), h_plus / h_minus (B, D) the
    EX-RM representations (see `pooled`)  ->  (A, B)."""
    xp = namespace(u, h_bar)
    z = h_plus - h_minus                                              # (B, D)
    g = bt_weights(ex_rm_reward(u, z))                                # (B,)
    return eta * xp.matmul(h_bar, xp.matrix_transpose(z)) * g[None, :]


def delta_r_ex(u, h_bar, h_plus, h_minus, *, eta: float):
    """Exact change of r_EX after one GD step on the mini-batch (the mean).  -> (A,)."""
    xp = namespace(u, h_bar)
    return xp.mean(reward_change_matrix_ex(u, h_bar, h_plus, h_minus, eta=eta), axis=-1)
