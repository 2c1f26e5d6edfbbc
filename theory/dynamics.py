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

Theta is the IM-RM reward kernel (the tangent kernel of ln pi in U). With the residuals
e_{y_k} - pi_k split into their one-hot and probability parts,
    Theta(ybar, v) = sum_kl [1[ybar_k = v_l] - pibar_k(v_l) - pi_l(ybar_k)] <h_k, h_l>  (sparse)
                   + <Qbar, Q>_F,  Q = sum_l pi_l h_l^T (|V| x D), <Qbar, Q>_F = sum_kl <pibar_k, pi_l> <h_k, h_l>.
Two routes compute the dense term (both accurate in float32: the one-hot rows are never mixed
with the small probability rows in one long sum, which is what made contracting the full
gradients sum_k (e_{y_k} - pi_k) h_k^T lose three digits in float32 at |V| = 32000):
  "rho":      the V-long sums <pibar_k, pi_l> of positive terms, cost A N K L (|V| + D);
  "gradient": the Gram of Q over vocabulary slices, cost A N K L D + (A K + N L) |V| D + A N |V| D
              (cheaper for long sequences and many of them).
For the mini-batch change, "loss_gradient" forms the loss gradient grad_U L (|V| x D) once and
applies it to the evaluation positions, cost (A K + 2 B L) |V| D: what one backward plus one
forward-mode product do, without autograd. Every route needs the next-token distributions, the
logits product of the positions involved with U; all stream in blocks under `max_bytes`.
"""
from __future__ import annotations

from theory.backend import asarray_like, device, log_softmax, namespace, one_hot
from theory.gradients import bt_weights, log_prob_grad_from_probs
from theory.rewards import ex_rm_reward, unembed
from theory.sequences import Seqs

ROUTES = ("auto", "rho", "gradient")                  # reward_kernel, reward_change_matrix_im
BATCH_ROUTES = ROUTES + ("loss_gradient",)              # delta_r_im
MAX_BYTES = 2**30      # default budget of the streamed temporaries (see reward_change_matrix_im)


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


def _sparse_rho(pi_bar, y_bar, pi, v):
    """1[ybar_k = v_l] - pibar_k(v_l) - pi_l(ybar_k): rho without <pibar_k, pi_l>.  -> (A, N, K, L)."""
    xp = namespace(pi_bar, pi)
    (A, K, _), (N, L) = pi_bar.shape, v.shape
    eq = xp.astype(y_bar[:, None, :, None] == v[None, :, None, :], pi_bar.dtype)
    bar_at_v = xp.reshape(xp.take(pi_bar, xp.reshape(v, (N * L,)), axis=-1), (A, K, N, L))
    at_ybar = xp.reshape(xp.take(pi, xp.reshape(y_bar, (A * K,)), axis=-1), (N, L, A, K))
    return eq - xp.permute_dims(bar_at_v, (0, 2, 1, 3)) - xp.permute_dims(at_ybar, (2, 0, 3, 1))


def _pair_products(a, b):
    """<a_k, b_l> for every pair of sequences.  a (A, K, X), b (N, L, X)  ->  (A, N, K, L)."""
    xp = namespace(a, b)
    (A, K, _), (N, L, _) = a.shape, b.shape
    return xp.permute_dims(xp.reshape(xp.matmul(_flat(a, 2), xp.matrix_transpose(_flat(b, 2))),
                                      (A, K, N, L)), (0, 2, 1, 3))


def rho_pairs(pi_bar, y_bar, pi, v):
    """rho_kl for every evaluation sequence a and training sequence i.

    pi_bar (A, K, V), y_bar (A, K), pi (N, L, V), v (N, L)  ->  (A, N, K, L).
    """
    return _sparse_rho(pi_bar, y_bar, pi, v) + _pair_products(pi_bar, pi)


def rho(pi_bar, y_bar, pi_v, v):
    """rho_kl(v) of Eq. 5 for one evaluation sequence and one response v.

    pi_bar (K, V) = pi(.|xbar, ybar<k), y_bar (K,), pi_v (L, V) = pi(.|x, v<l), v (L,) -> (K, L).
    """
    return rho_pairs(pi_bar[None], y_bar[None], pi_v[None], v[None])[0, 0]


def kernel_cost(A, K, N, L, V, D, *, paired: bool = False) -> dict:
    """Multiply-adds of each route beyond the shared logits product (see module docstring).

    paired: the N training sequences are B = N/2 pairs (y+, y-), whose Q matrices the
    gradient route subtracts before the Gram (A B |V| D instead of A N |V| D)."""
    gram = A * (N // 2 if paired else N) * V * D
    return {"rho": A * N * K * L * (V + D), "gradient": A * N * K * L * D + (A * K + N * L) * V * D + gram}


def _masked_h(seqs: Seqs):
    xp = namespace(seqs.h)
    return seqs.h * xp.astype(seqs.mask, seqs.h.dtype)[..., None]


def _dense_gram(pi_bar, h_bar, sides, max_bytes: int):
    """sum_s sign_s <Qbar_a, Q_s,i>_F with Q = sum_l pi_l h_l^T, over vocabulary slices so that
    only (A + N) x slice x D entries of the Q matrices exist at once.  -> (A, N)."""
    xp = namespace(pi_bar, h_bar)
    (A, _, V), D = pi_bar.shape, h_bar.shape[-1]
    N = sides[0][0].shape[0]
    rows = max(1, min(V, max_bytes // (pi_bar.dtype.itemsize * D * (A + 3 * N))))
    out = xp.zeros((A, N), dtype=pi_bar.dtype, device=device(pi_bar))
    for v0 in range(0, V, rows):
        sl = slice(v0, min(V, v0 + rows))
        Q_bar = xp.matmul(xp.matrix_transpose(pi_bar[..., sl]), h_bar)              # (A, r, D)
        Q = None
        for pi, h, sign in sides:
            part = xp.matmul(xp.matrix_transpose(pi[..., sl]), h)                   # (N, r, D)
            Q = sign * part if Q is None else Q + sign * part
        out = out + xp.matmul(xp.reshape(Q_bar, (A, -1)), xp.matrix_transpose(xp.reshape(Q, (N, -1))))
    return out


def _kernel(pi_bar, eval_seqs: Seqs, sides, route: str, max_bytes: int = MAX_BYTES):
    """sum_s sign_s Theta(eval a, training sequence i of side s).  sides: [(pi, seqs, sign)]
    with equally many sequences N on each side (the y+ and y- of B pairs)  ->  (A, N)."""
    xp = namespace(pi_bar)
    h_bar = _masked_h(eval_seqs)
    out = None
    for pi, seqs, sign in sides:
        h = _masked_h(seqs)
        coef = _sparse_rho(pi_bar, eval_seqs.y, pi, seqs.y)
        if route == "rho":
            coef = coef + _pair_products(pi_bar, pi)
        term = sign * xp.sum(coef * _pair_products(h_bar, h), axis=(-2, -1))
        out = term if out is None else out + term
    if route == "gradient":
        out = out + _dense_gram(pi_bar, h_bar, [(pi, _masked_h(s), sign) for pi, s, sign in sides],
                                max_bytes)
    return out


def _pick(route: str, cost: dict, routes=ROUTES) -> str:
    if route not in routes:
        raise ValueError(f"route must be one of {routes}, got {route!r}")
    return min(cost, key=cost.get) if route == "auto" else route


def reward_kernel(pi_bar, eval_seqs: Seqs, pi, train_seqs: Seqs, route: str = "auto",
                  max_bytes: int = MAX_BYTES):
    """Theta(a, i) = <grad_U ln pi(ybar_a|xbar_a), grad_U ln pi(v_i|x_i)>_F.  -> (A, N).

    pi_bar (A, K, V), pi (N, L, V): next-token distributions at the sequences' positions.
    route "auto" takes the cheaper of "rho" and "gradient" (kernel_cost); both are accurate
    in float32 (module docstring). The gradient route keeps (A + 3N) r D entries of Q at once,
    r = the vocabulary rows of a slice, chosen so that this fits in max_bytes (at least 1 row).
    """
    (A, K, V), (N, L, D) = pi_bar.shape, train_seqs.h.shape[-3:]
    route = _pick(route, kernel_cost(A, K, N, L, V, D))
    return _kernel(pi_bar, eval_seqs, [(pi, train_seqs, 1.0)], route, max_bytes)


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


def _rows(seqs: Seqs, start: int, stop: int) -> Seqs:
    return Seqs(*(t[start:stop] for t in seqs))


def _block_floats(ca, K, cb, L2, V, D, route) -> int:
    """Entries of the temporaries of one (ca evaluation x cb training pairs) block, without
    the Q slices of the gradient route (the formula of reward_change_matrix_im's docstring)."""
    return 4 * (ca * K + cb * L2) * V + 6 * ca * cb * K * L2


def _blocks(A, K, B, L2, V, D, route, max_bytes, itemsize):
    """Block sizes (ca, cb): halve the larger side until the block fits max_bytes."""
    ca, cb = A, B
    while _block_floats(ca, K, cb, L2, V, D, route) * itemsize > max_bytes and (ca > 1 or cb > 1):
        if cb > 1 and (cb * L2 >= ca * K or ca == 1):
            cb = (cb + 1) // 2
        else:
            ca = (ca + 1) // 2
    return ca, cb


def reward_change_matrix_im(U, eval_seqs: Seqs, plus: Seqs, minus: Seqs, *, beta: float,
                            eta: float, U_ref=None, ref_margins=None, route: str = "auto",
                            max_bytes: int = MAX_BYTES):
    """Eq. 5 per training example: entry (a, i) is the first-order change of r_IM on
    evaluation sequence a after one GD step on example i alone,
    eta beta^2 g_i [Theta(ybar_a, y+_i) - Theta(ybar_a, y-_i)].  -> (A, B).

    U (V, D); eval_seqs (A, K): positions of ybar given xbar; plus / minus (B, L): positions
    of y+_i / y-_i given x_i. The reference: `ref_margins` (B,) = ln pi_ref(y+_i|x_i) -
    ln pi_ref(y-_i|x_i) from the reference model itself, or `U_ref` (exact only for a body
    shared with the policy; see im_rm_bt_weights); neither: the no-reference variant.

    Streams in blocks of ca evaluation sequences x cb training pairs. With L2 = L+ + L- the
    positions of a pair, a block holds at most
        4 (ca K + cb L2) |V| + 6 ca cb K L2 [+ (ca + 3 cb) r D for route "gradient"]
    entries of U's dtype (logits, log-probabilities, probabilities; the position-pair
    coefficients; r vocabulary rows of the Q matrices). ca and cb are halved from (A, B) until
    the first two terms are <= max_bytes / itemsize (or both are 1); r is the largest with
    (ca + 3 cb) r D <= max_bytes / itemsize (at least 1). So the temporaries never exceed
    2 max_bytes (or the ca = cb = r = 1 block), whatever A and B; beyond them only the inputs
    and the (A, B) output. When A > ca the evaluation log-probabilities are recomputed for
    every training block. The blocks change only the order of the work, not what is computed.
    """
    xp = namespace(U)
    (A, K), B, (V, D) = eval_seqs.y.shape, plus.y.shape[0], U.shape
    L2 = plus.y.shape[-1] + minus.y.shape[-1]
    route = _pick(route, kernel_cost(A, K, 2 * B, L2 // 2, V, D, paired=True))
    ca, cb = _blocks(A, K, B, L2, V, D, route, max_bytes, U.dtype.itemsize)
    if ref_margins is not None:
        ref_margins = asarray_like(ref_margins, U)
        if tuple(ref_margins.shape) != (B,):
            raise ValueError(f"ref_margins must have shape {(B,)} (one per training pair), "
                             f"got {tuple(ref_margins.shape)}")
    pi_bar_all, cols = None, []
    for b0 in range(0, B, cb):
        p, m = _rows(plus, b0, b0 + cb), _rows(minus, b0, b0 + cb)
        if ca >= A and pi_bar_all is None:      # one pass over U for both (it is memory-bound)
            logp_bar, logp_plus, logp_minus = next_token_log_probs(U, eval_seqs, p, m)
            pi_bar_all = xp.exp(logp_bar)
            del logp_bar
        else:
            logp_plus, logp_minus = next_token_log_probs(U, p, m)
        g = im_rm_bt_weights(logp_plus, logp_minus, p, m, beta=beta, U_ref=U_ref,
                             ref_margins=None if ref_margins is None else ref_margins[b0:b0 + cb])
        sides = [(xp.exp(logp_plus), p, 1.0), (xp.exp(logp_minus), m, -1.0)]
        del logp_plus, logp_minus
        rows = []
        for a0 in range(0, A, ca):
            ev = _rows(eval_seqs, a0, a0 + ca)
            pi_bar = pi_bar_all if pi_bar_all is not None else xp.exp(next_token_log_probs(U, ev))
            rows.append(_kernel(pi_bar, ev, sides, route, max_bytes) * g[None, :])     # (ca, cb)
        cols.append(xp.concat(rows, axis=0))
    return eta * beta**2 * xp.concat(cols, axis=1)


def _delta_r_loss_gradient(U, eval_seqs: Seqs, plus: Seqs, minus: Seqs, *, beta, eta, U_ref,
                           ref_margins, max_bytes):
    """eta beta^2 / B <Gbar_a, S>_F with S = sum_i g_i (G+_i - G-_i) (|V| x D) formed once."""
    xp = namespace(U)
    (A, K), B, (V, D) = eval_seqs.y.shape, plus.y.shape[0], U.shape
    L2 = plus.y.shape[-1] + minus.y.shape[-1]
    # 4 entries of |V| per position in a block (logits, log-probs, probabilities, residuals)
    positions = max(1, (max_bytes // U.dtype.itemsize - V * D) // (4 * V))
    cb, ca = max(1, positions // L2), max(1, positions // K)
    S = xp.zeros((V, D), dtype=U.dtype, device=device(U))
    keep_bar = cb >= B and A * K + B * L2 <= positions      # all logits in one pass over U
    resid_bar = None
    for b0 in range(0, B, cb):
        p, m = _rows(plus, b0, b0 + cb), _rows(minus, b0, b0 + cb)
        if keep_bar:
            logp_bar, logp_plus, logp_minus = next_token_log_probs(U, eval_seqs, p, m)
            resid_bar = one_hot(eval_seqs.y, V, U) - xp.exp(logp_bar)                 # (A, K, V)
            del logp_bar
        else:
            logp_plus, logp_minus = next_token_log_probs(U, p, m)
        g = im_rm_bt_weights(logp_plus, logp_minus, p, m, beta=beta, U_ref=U_ref,
                             ref_margins=None if ref_margins is None else ref_margins[b0:b0 + cb])
        for logp, s, sign in ((logp_plus, p, 1.0), (logp_minus, m, -1.0)):
            w = sign * g[:, None] * xp.astype(s.mask, U.dtype)                        # (cb, L)
            resid = (one_hot(s.y, V, U) - xp.exp(logp)) * w[..., None]                # (cb, L, V)
            S = S + xp.matmul(xp.matrix_transpose(_flat(resid, 2)), _flat(s.h, 2))   # (V, D)
    out = []
    for a0 in range(0, A, ca):
        ev = _rows(eval_seqs, a0, a0 + ca)
        resid = (resid_bar[a0:a0 + ca] if resid_bar is not None
                 else one_hot(ev.y, V, U) - xp.exp(next_token_log_probs(U, ev)))     # (ca, K, V)
        W = xp.matmul(ev.h, xp.matrix_transpose(S))                                  # (ca, K, V)
        out.append(xp.sum(xp.sum(resid * W, axis=-1) * xp.astype(ev.mask, U.dtype), axis=-1))
    return (eta * beta**2 / B) * xp.concat(out, axis=0)


def delta_r_im(U, eval_seqs: Seqs, plus: Seqs, minus: Seqs, *, beta: float, eta: float,
               U_ref=None, ref_margins=None, route: str = "auto", max_bytes: int = MAX_BYTES):
    """Eq. 5 for a mini-batch step (the mean over its examples).  -> (A,).

    route "loss_gradient" forms the mini-batch loss gradient (|V| x D) once: peak memory
    |V| D + 4 P |V| entries, P = the positions of a block (as many as max_bytes allows, at least
    one sequence). "rho" and "gradient" average reward_change_matrix_im. "auto" takes the
    cheapest by multiply-adds (module docstring).
    """
    xp = namespace(U)
    (A, K), B, (V, D) = eval_seqs.y.shape, plus.y.shape[0], U.shape
    L = (plus.y.shape[-1] + minus.y.shape[-1]) // 2
    cost = kernel_cost(A, K, 2 * B, L, V, D, paired=True)
    cost["loss_gradient"] = (A * K + 2 * B * L) * V * D
    route = _pick(route, cost, BATCH_ROUTES)
    if route == "loss_gradient":
        if ref_margins is not None:
            ref_margins = asarray_like(ref_margins, U)
            if tuple(ref_margins.shape) != (B,):
                raise ValueError(f"ref_margins must have shape {(B,)} (one per training pair), "
                                 f"got {tuple(ref_margins.shape)}")
        return _delta_r_loss_gradient(U, eval_seqs, plus, minus, beta=beta, eta=eta, U_ref=U_ref,
                                      ref_margins=ref_margins, max_bytes=max_bytes)
    return xp.mean(reward_change_matrix_im(U, eval_seqs, plus, minus, beta=beta, eta=eta,
                                           U_ref=U_ref, ref_margins=ref_margins, route=route,
                                           max_bytes=max_bytes), axis=-1)


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
