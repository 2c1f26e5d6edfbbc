"""The hard-margin separator that gradient descent on EX-RM converges to (Theorem 2).

    u* = argmin ||u||^2  s.t.  <u, z_i> >= 1  for all i        (no bias)
    dual:  max_a  sum_i a_i - 1/2 a^T K a,  a >= 0,  K = Z Z^T;   u* = Z^T a

Default method ("active_set"): an exact active-set solve of the dual on a working set of
pairs. On a working set W (the pairs with the smallest margins to begin with) the dual is
solved by the primal-dual active-set (semismooth Newton) iteration: guess the support S,
solve K_SS a_S = 1 (a Cholesky factorisation, |S| <= rank Z), move to S every pair whose
margin is below 1 and out of it every pair whose a_i < 0, until the guess reproduces itself.
Then the margins of all n pairs are computed (one product Z u); violated pairs join W and
the next round starts from the current a. Each round's answer is exact (a linear solve, not
an iterative tolerance), so the separator comes out at rounding level, certificate
included. Only K_WW for the working set is formed (the n x n Gram matrix only when more than
half the pairs are needed).

Non-separable data: any weights a >= 0 bound every separator's margin. By weak duality every
unit w has min_i <w, z_i> <= <w, Z^T a> / sum a <= ||Z^T a|| / sum a, so when that bound is
below NOT_SEPARABLE_TOL * max ||z_i|| we raise NotSeparableError, naming it (Gordan's
alternative: the pairs are separable exactly when no a >= 0, a != 0 has Z^T a = 0).
A singular K_SS (more candidate support vectors than rank Z) is the sign that the working set
may not be separable. `_separation_test` then decides, on the working set, by the squared-hinge
path (below); a non-separable working set proves the whole set non-separable. When it finds a
separator instead, K_SS gets a tiny ridge and the iteration goes on. The working set grows
geometrically, by half its size once it exceeds D, so a proof needs only a little more than
the 2 D pairs (Cover) at which Gaussian differences stop being separable.

Squared-hinge path (`_separation_test`): for C > 0 minimise the strictly convex
    f_C(u) = 1/2 ||u||^2 + C/2 sum_i (1 - <u, z_i>)_+^2
by Newton's method with an exact line search (finite on this piecewise quadratic). At its
minimum u = C Z^T a with a = (1 - Z u)_+ >= 0, so ||Z^T a|| / sum a = ||u|| / (C sum a): on
non-separable pairs u stays bounded and sum a bounded below as C grows, so the bound falls
like 1/C; on separable pairs Z u > 0 once C is large enough. Both are checked after every
Newton step (any u gives a valid a), and C grows until one of them holds.

Fallback ("qp", also selectable): cvxpy (Clarabel) on the working set in the smaller of two
equivalent coordinates (D > n: Z^T = Q R, solve for w = Q^T u), then an active-set polish.
The active-set method hands over to it whenever it cannot finish exactly (an iteration that
does not settle, which happens on some low-dimensional problems, or a certificate above
CERTIFICATE_TOL). The QP reports infeasible data as NotSeparableError too: never a silent
soft-margin answer.

The answer carries a certificate (KKT residuals, duality gap) computed from Z, u*, a alone,
so a test can verify it without trusting the solver.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory import threads
from theory.backend import asarray_like, namespace, to_numpy

METHODS = ("active_set", "qp")
CERTIFICATE_TOL = 1e-9     # every relative KKT residual and the duality gap of an answer
RIDGE = 1e-13              # added to a singular K_SS, times its mean diagonal
# Pairs count as not separable when no separator can have a margin above this times max ||z_i||
# (a separator that thin would have ||u*|| > 1e8 / max ||z_i||, beyond what float64 certifies).
NOT_SEPARABLE_TOL = 1e-8
SCALE_RANGE = (1e-150, 1e150)  # largest |entry| of Z that u* and its dual weights can represent


class NotSeparableError(ValueError):
    """No u satisfies <u, z_i> >= 1 for all i: the differences are not linearly separable.
    "Not separable" is to float64 precision: no separator has a margin above
    NOT_SEPARABLE_TOL x max ||z_i||. When proved by dual weights a >= 0 it carries
    `margin_bound` (||Z^T a|| / sum a relative to max ||z_i||, a bound on every separator's
    margin) and `pairs_in_proof` (a_i > 0); both are None when the QP fallback decided."""

    margin_bound: float | None = None
    pairs_in_proof: int | None = None


class SolverError(RuntimeError):
    """The QP solver did not return an optimal solution."""


@dataclass(frozen=True)
class MaxMarginResult:
    u: np.ndarray             # (D,) u*
    alpha: np.ndarray         # (n,) dual variables, u* = Z^T alpha
    margin: float             # geometric margin 1 / ||u*|| = min_i <u*, z_i> / ||u*||
    support: np.ndarray       # support vectors: active constraints (<u*, z_i> = 1) with a_i > 0
    certificate: dict         # see `certificate`
    method: str = "active_set"  # the method that produced the answer ("qp" after a fallback)


def certificate(Z, u, alpha) -> dict:
    """KKT residuals and duality gap of (u, alpha) for the hard-margin problem, all relative.

    stationarity  ||u - Z^T a|| / ||u||;  primal  max(0, 1 - min_i <u,z_i>);
    dual  max(0, -min a);  complementarity  max_i |a_i (<u,z_i> - 1)| / sum a;
    gap  (1/2||u||^2 - (sum a - 1/2||Z^T a||^2)) / (1/2||u||^2).
    """
    Z, u, a = (np.asarray(to_numpy(v), dtype=np.float64) for v in (Z, u, alpha))
    m = Z @ u
    Za = Z.T @ a
    primal = 0.5 * u @ u
    dual = a.sum() - 0.5 * Za @ Za
    return {
        "stationarity": float(np.linalg.norm(u - Za) / max(np.linalg.norm(u), 1e-300)),
        "primal_infeasibility": float(max(0.0, 1.0 - m.min())),
        "dual_infeasibility": float(max(0.0, -a.min())),
        "complementarity": float(np.max(np.abs(a * (m - 1.0))) / max(a.sum(), 1e-300)),
        "duality_gap": float(abs(primal - dual) / max(primal, 1e-300)),
    }


def _solve_restricted(A, rows):
    """min ||w||^2 s.t. A[rows] w >= 1 with cvxpy. Returns (w, lambda) or raises."""
    import cvxpy as cp

    w = cp.Variable(A.shape[1])
    con = A[rows] @ w >= 1.0
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(w)), [con])
    try:
        prob.solve(solver=cp.CLARABEL)
    except cp.error.SolverError as exc:
        raise SolverError(f"max-margin QP: solver failed ({exc})") from exc
    if prob.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        raise NotSeparableError(
            f"the training differences z_i are not linearly separable through the origin "
            f"(the hard-margin QP on {len(rows)} of them is infeasible at the solver's tolerance: "
            f"data separable only with a margin near {NOT_SEPARABLE_TOL:.0e} x max ||z_i|| or below "
            f"are reported so too)")
    if prob.status != cp.OPTIMAL or w.value is None:
        raise SolverError(f"max-margin QP: solver status {prob.status!r}")
    return np.asarray(w.value), np.asarray(con.dual_value)


def _polish(Z, u, alpha, active_tol: float = 1e-6, rounds: int = 20):
    """Refine the interior-point answer by an active-set iteration. On the active set S the
    KKT conditions are equalities, Z_S Z_S^T a_S = 1 (a linear solve); pairs the refined u
    violates join S, pairs with negative a leave it. Keep the refined point only if it is a
    valid KKT point with smaller residuals than the solver's."""
    S = np.flatnonzero(Z @ u <= 1.0 + active_tol)
    for _ in range(rounds):
        if S.size == 0:
            return u, alpha
        a_S = np.linalg.lstsq(Z[S] @ Z[S].T, np.ones(S.size), rcond=None)[0]
        if a_S.min() < 0:
            S = np.delete(S, np.argmin(a_S))
            continue
        u_p = Z[S].T @ a_S
        violated = np.flatnonzero(Z @ u_p < 1.0 - 1e-12)
        if violated.size == 0:
            a = np.zeros_like(alpha)
            a[S] = a_S
            old, new = certificate(Z, u, alpha), certificate(Z, u_p, a)
            return (u_p, a) if max(new.values()) < max(old.values()) else (u, alpha)
        S = np.union1d(S, violated)
    return u, alpha


def _max_margin_qp(Z, *, feasibility_tol: float = 1e-7, initial_working_set: int = 128,
                   max_rounds: int = 100):
    """The cvxpy (Clarabel) working-set solve plus polish (module docstring). Z float64 (n, D)."""
    n, D = Z.shape
    if D > n:  # u* is in the row space of Z: n unknowns instead of D
        Q, R = np.linalg.qr(Z.T)                                   # Z^T = Q R, Q (D, n)
        A = R.T                                                    # Z u = A (Q^T u)
    else:
        Q, A = None, Z
    # Seed the working set with the pairs least aligned with the mean difference.
    score = A @ A.mean(axis=0)
    rows = np.sort(np.argsort(score)[: min(n, initial_working_set)])
    for _ in range(max_rounds):
        w, lam = _solve_restricted(A, rows)
        m = A @ w
        violated = np.flatnonzero(m < 1.0 - feasibility_tol)
        if violated.size == 0:
            break
        add = violated[np.argsort(m[violated])][: max(initial_working_set, rows.size)]
        rows = np.union1d(rows, add)
    else:
        raise SolverError(f"max-margin working set did not converge in {max_rounds} rounds")
    alpha = np.zeros(n)
    alpha[rows] = np.maximum(lam, 0.0)   # the objective is 1/2||w||^2: a = lambda
    u = w if Q is None else Q @ w
    return _polish(Z, u, alpha)


class _Handover(Exception):
    """The active-set method cannot finish exactly; the QP takes over (module docstring)."""


class _Degenerate(Exception):
    """K_SS is singular: more candidate support vectors than the rank of Z (module docstring)."""


def _exact_line_search(u, d, m, Zd, C, max_iter: int = 60):
    """argmin_t>=0 of 1/2||u + t d||^2 + C/2 sum (1 - m - t Zd)_+^2 (m = Z u, Zd = Z d): Newton
    on the derivative, which is continuous, piecewise linear and increasing, from t = 1."""
    ud, dd, t = u @ d, d @ d, 1.0
    for _ in range(max_iter):
        r = 1.0 - m - t * Zd
        act = r > 0
        slope = dd + C * (Zd[act] @ Zd[act])
        t_new = max(t - (ud + t * dd - C * (r[act] @ Zd[act])) / slope, 0.0)
        if abs(t_new - t) <= 1e-12 * max(1.0, t):
            return t_new
        t = t_new
    return t


def _separation_test(Z, C0: float = 1e2, C_max: float = 1e16, C_refine: float = 1e8,
                     newton_steps: int = 100):
    """Decide whether the rows of Z (n, D) are separable through the origin by the
    squared-hinge path (module docstring). Returns ("separable", a) when some u has Z u > 0,
    with a >= 0 the path's estimate of the hard-margin dual once C >= C_refine and the pairs
    with margin < 1 stay the same over a 100-fold rise of C (then they are the hard-margin
    support: a start for the active set),
    ("not separable", a) with a >= 0 and ||Z^T a|| / sum a <= NOT_SEPARABLE_TOL * max ||z_i||,
    or ("undecided", None) when C reaches C_max first.

    Rows are scaled to norm <= 1 (the bound is relative to max ||z_i||). The Hessian
    I + C Z_A^T Z_A (A: pairs with margin < 1) is a D x D Cholesky; when most pairs are in A
    (n > D) it is formed as Z^T Z minus the few outside A."""
    import scipy.linalg as sl
    n, D = Z.shape
    s = np.sqrt(np.einsum("ij,ij->i", Z, Z)).max()
    Zs = Z / s
    full = Zs.T @ Zs if n > D else None                           # Z^T Z, reused every step
    u, C, steps, bound, separable, level_A = np.zeros(D), C0, 0, np.inf, False, None
    while C <= C_max and steps < newton_steps:
        previous = None
        while steps < newton_steps:
            steps += 1
            m = Zs @ u
            a = np.maximum(1.0 - m, 0.0)
            separable = separable or m.min() > 0
            if not separable:
                bound = np.linalg.norm(Zs.T @ a) / a.sum()
                if bound <= NOT_SEPARABLE_TOL:
                    return "not separable", a
            A = np.flatnonzero(a > 0)
            if A.size == 0 or (previous is not None and np.array_equal(A, previous)):
                break                                              # f_C minimised: raise C
            previous = A
            if full is not None and 2 * A.size > n:
                out = np.flatnonzero(a == 0)
                H = C * (full - Zs[out].T @ Zs[out])
            else:
                H = C * (Zs[A].T @ Zs[A])
            H[np.diag_indices(D)] += 1.0
            grad = u - C * (Zs[A].T @ a[A])
            d = -sl.cho_solve(sl.cho_factor(H, check_finite=False), grad, check_finite=False)
            u = u + _exact_line_search(u, d, m, Zs @ d, C) * d
        A = np.flatnonzero(Zs @ u < 1.0)
        if separable and C >= C_refine and (A.size == 0 or np.array_equal(A, level_A)):
            # the active set no longer changes with C: it is the hard-margin support. The dual
            # of f_C is C (1 - Z u)_+; C a / s^2 estimates the dual of the rows of Z.
            return "separable", C * np.maximum(1.0 - Zs @ u, 0.0) / s**2
        level_A = A
        # Near the minimum the bound falls like 1/C: jump towards where it would pass, at most
        # 1000x (a larger jump leaves Newton far from the new minimum, crawling in tiny steps).
        C *= 100.0 if separable else min(max(100.0, 10.0 * bound / NOT_SEPARABLE_TOL), 1e3)
    return ("separable", None) if separable else ("undecided", None)


def _restricted_dual(G, a, max_iter: int = 50, tol: float = 1e-12, ridge_allowed: bool = True,
                     backup: int = 3):
    """Exact solution of  min 1/2 a^T G a - 1^T a,  a >= 0  (G = K_WW) by the primal-dual
    active-set iteration, started from `a`. Returns a (|W|,).

    A singular K_SS (dependent support vectors, or a dual unbounded because the pairs are not
    separable) gets a ridge RIDGE * mean(diag G) and the iteration goes on; it also stops at
    a >= 0 whose margin bound sqrt(a^T G a) / sum a is below NOT_SEPARABLE_TOL * max ||z_i||
    (the caller re-checks that bound from Z). With ridge_allowed False a singular K_SS raises
    _Degenerate instead. Raises _Handover when it does not settle.

    Block exchanges (every infeasible index changes side) are kept while they reduce the
    number of infeasible indices; after `backup` exchanges that do not, one index changes side
    at a time (the largest infeasible, Murty's rule), which terminates for positive-definite
    K (Kim & Park's block principal pivoting, 2011)."""
    import scipy.linalg as sl
    d = np.diag(G).copy()                                          # scales a against the margins
    if d.min() <= 0:
        raise _Handover("a zero difference z_i")
    ridge = 0.0
    slack = G @ a - 1.0                                            # margins - 1 on W
    S = a * d - slack > 0
    fewest, left = np.inf, backup
    for _ in range(max_iter):
        idx = np.flatnonzero(S)
        a = np.zeros_like(a)
        if idx.size == 0:
            raise _Handover("empty active set")
        G_SS = G[np.ix_(idx, idx)]
        try:
            if ridge:
                G_SS[np.diag_indices_from(G_SS)] += ridge
            factor = sl.cho_factor(G_SS, check_finite=False)
            pivots = np.abs(np.diag(factor[0])) ** 2
            if not ridge and pivots.min() <= RIDGE * pivots.max():   # singular to rounding
                raise np.linalg.LinAlgError
            a_S = sl.cho_solve(factor, np.ones(idx.size), check_finite=False)
            # one step of iterative refinement: an ill-conditioned K_SS (features of very
            # different scales) otherwise leaves margins off 1 by cond(K_SS) * eps
            a_S += sl.cho_solve(factor, 1.0 - G_SS @ a_S, check_finite=False)
            a[idx] = a_S
            if not np.all(np.isfinite(a)):
                raise np.linalg.LinAlgError
        except (np.linalg.LinAlgError, ValueError):
            if ridge:
                raise _Handover("K_SS is singular even with a ridge") from None
            if not ridge_allowed:
                raise _Degenerate from None
            ridge = RIDGE * d.mean()
            continue
        Ga = G @ a
        slack = Ga - 1.0
        if ridge and a.min() >= 0 and np.sqrt(max(a @ Ga, 0.0)) <= NOT_SEPARABLE_TOL * np.sqrt(d.max()) * a.sum():
            return a        # numerically non-separable: the caller checks the bound from Z
        infeasible = (S & (a < 0)) | (~S & (slack < -tol))
        count = int(np.count_nonzero(infeasible))
        if count == 0:
            return a
        if count < fewest:
            fewest, left = count, backup
            S = S ^ infeasible
        elif left > 0:
            left -= 1
            S = S ^ infeasible
        else:
            i = np.flatnonzero(infeasible)[-1]
            S[i] = not S[i]
    raise _Handover(f"the active-set iteration did not settle in {max_iter} steps")


def _support_solve(Z, alpha):
    """Re-solve the KKT equalities on the support S = {alpha > 0} in primal form: u is the
    minimum-norm solution of Z_S u = 1, by a QR factorisation Z_S^T = Q R (u = Q R^-T 1,
    a_S = R^-1 R^-T 1). Its error grows with cond(Z_S), not cond(K_SS) = cond(Z_S)^2, which
    matters for features of very different scales. Returns (u, alpha)."""
    import scipy.linalg as sl
    S = np.flatnonzero(alpha > 0)
    Q, R = np.linalg.qr(Z[S].T)                                    # Z_S^T = Q R
    w = sl.solve_triangular(R, np.ones(S.size), trans="T", check_finite=False)
    a = np.zeros_like(alpha)
    a[S] = sl.solve_triangular(R, w, check_finite=False)
    return Q @ w, a


def _max_margin_active_set(Z, *, initial_working_set: int = 512, feasibility_tol: float = 1e-10,
                           max_rounds: int = 50):
    """The working-set active-set method (module docstring). Z float64 (n, D) -> (u, alpha)."""
    n, D = Z.shape
    norms = np.sqrt(np.einsum("ij,ij->i", Z, Z))                   # (n,)
    if norms.min() == 0:
        exc = NotSeparableError(f"the training differences z_i are not linearly separable through the origin: "
                                f"z_{int(np.argmin(norms))} = 0, so <u, z_i> = 0 < 1 for every u")
        exc.margin_bound, exc.pairs_in_proof = 0.0, 1
        raise exc
    # Seed W with the pairs least aligned with the mean difference (the likely support).
    score = (Z @ Z.mean(axis=0)) / norms
    W = np.argsort(score)[: min(n, initial_working_set)]
    ZW = Z[W]                                                      # (|W|, D)
    G = ZW @ ZW.T                                                  # K_WW
    a = np.zeros(W.size)
    for _ in range(max_rounds):
        try:
            a = _restricted_dual(G, a, ridge_allowed=False)
        except _Degenerate:
            verdict, v = _separation_test(ZW)
            if verdict == "not separable":
                a = v                                              # checked from Z just below
            else:
                start = a if v is None else v
                try:
                    a = _restricted_dual(G, start, ridge_allowed=False)
                except _Degenerate:
                    a = _restricted_dual(G, start)
        u = ZW.T @ a                                               # (D,)
        # Weak duality: every unit w has min_i <w, z_i> <= <w, Z_W^T a> / sum a <= this bound.
        bound = np.linalg.norm(u) / a.sum()
        if a.min() >= 0 and bound <= NOT_SEPARABLE_TOL * norms.max():
            exc = NotSeparableError(
                f"the training differences z_i are not linearly separable through the origin: "
                f"dual weights on {np.count_nonzero(a)} of them show that any separator would have "
                f"margin <= {bound / norms.max():.1e} x max ||z_i|| (the threshold is "
                f"{NOT_SEPARABLE_TOL:.0e}: below it float64 cannot certify a separator)")
            exc.margin_bound, exc.pairs_in_proof = float(bound / norms.max()), int(np.count_nonzero(a))
            raise exc
        m = Z @ u                                                  # (n,) margins
        inW = np.zeros(n, bool)
        inW[W] = True
        if np.any(m[W] < 1.0 - feasibility_tol) and np.count_nonzero(a) <= D:
            u, a = _support_solve(ZW, a)     # K_SS too ill-conditioned for its Cholesky
            m = Z @ u
        if np.any(m[W] < 1.0 - 1e-6):       # a ridge answer: W's own constraints not met
            raise _Handover("the restricted solve left pairs of the working set violated")
        # Pairs of W a hair below 1 are rounding in an ill-conditioned K_SS: max_margin
        # re-solves on the support by QR (_support_solve) if the certificate asks for it.
        violated = np.flatnonzero((m < 1.0 - feasibility_tol) & ~inW)
        if violated.size == 0:
            alpha = np.zeros(n)
            alpha[W] = a
            return u, alpha
        # Double the working set while it is below D; beyond D (more pairs than can be support
        # vectors, so the extra ones test separability) grow it by half.
        grow = W.size if W.size < D else W.size // 2
        add = violated[np.argsort(m[violated])][: max(initial_working_set, grow)]
        if W.size + add.size > n // 2 and n <= D:   # most pairs will be needed: take them all now
            add = np.setdiff1d(np.arange(n), W, assume_unique=True)
        Zadd = Z[add]
        B = Zadd @ ZW.T                                            # (k, |W|)
        G = np.block([[G, B.T], [B, Zadd @ Zadd.T]])
        W, ZW, a = np.concatenate([W, add]), np.vstack([ZW, Zadd]), np.concatenate([a, np.zeros(add.size)])
    raise _Handover(f"the working set did not settle in {max_rounds} rounds")


def max_margin(Z, *, method: str = "active_set", feasibility_tol: float = 1e-7,
               initial_working_set: int = 128, max_rounds: int = 100) -> MaxMarginResult:
    """Hard-margin separator of the rows of Z (n, D), any backend; returns NumPy arrays.

    method "active_set" (default; hands over to "qp" when it cannot finish exactly) or "qp"
    (module docstring). feasibility_tol, initial_working_set and max_rounds tune "qp".
    BLAS threads are chosen by the problem size (theory/threads.py).
    Raises NotSeparableError when no separator exists, SolverError when the solver fails.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    Z = np.asarray(to_numpy(Z))
    if np.iscomplexobj(Z) or Z.dtype.kind not in "fiub":
        raise ValueError(f"Z must hold real numbers, got dtype {Z.dtype}")
    Z = Z.astype(np.float64, copy=False)
    if Z.ndim != 2 or Z.shape[0] == 0 or Z.shape[1] == 0:
        raise ValueError(f"Z must be a non-empty (n, D) matrix, got shape {Z.shape}")
    if not np.all(np.isfinite(Z)):
        raise ValueError("Z contains NaN or Inf")
    n, D = Z.shape
    # Far from unit scale, solve on Z / s and scale back (u* = u*(Z/s) / s, a = a(Z/s) / s^2)
    # so that Gram entries and dual weights cannot over- or underflow (the methods' own
    # tolerances are relative already; near unit scale the copy of Z is not worth its time).
    s = float(np.max(np.abs(Z)))
    if s == 0.0:
        exc = NotSeparableError("the training differences z_i are not linearly separable through the "
                                "origin: every z_i = 0, so <u, z_i> = 0 < 1 for every u")
        exc.margin_bound, exc.pairs_in_proof = 0.0, 1
        raise exc
    if not SCALE_RANGE[0] <= s <= SCALE_RANGE[1]:
        raise ValueError(f"Z's largest entry is {s:.1e}: rescale the features into "
                         f"[{SCALE_RANGE[0]:.0e}, {SCALE_RANGE[1]:.0e}] (u* scales as 1/|Z| and its "
                         f"dual weights as 1/|Z|^2, which would over- or underflow float64)")
    if 1e-20 <= s <= 1e20:
        s, Zs = 1.0, Z
    else:
        Zs = Z / s
    # The largest operation: a Gram matrix / Cholesky of about min(n, D) support vectors
    # (active set), or the QR of Z^T (qp).
    work = float(min(n, D)) ** 2 * D if method == "active_set" else float(n) * D * min(n, D)
    with threads.limit(threads.for_work(work)):
        cert = None
        if method == "active_set":
            try:
                u, alpha = _max_margin_active_set(Zs)
                cert = certificate(Zs, u, alpha)
                if not max(cert.values()) <= CERTIFICATE_TOL and np.count_nonzero(alpha) <= D:
                    u2, alpha2 = _support_solve(Zs, alpha)
                    cert2 = certificate(Zs, u2, alpha2)
                    if max(cert2.values()) < max(cert.values()):
                        u, alpha, cert = u2, alpha2, cert2
                if not max(cert.values()) <= CERTIFICATE_TOL:
                    raise _Handover(f"certificate {max(cert.values()):.1e} > {CERTIFICATE_TOL:.0e}")
            except _Handover:
                method, cert = "qp", None
        if method == "qp":
            # The interior-point solver's tolerances are absolute: rows of norm <= 1.
            r = float(np.max(np.linalg.norm(Zs, axis=1)))
            u, alpha = _max_margin_qp(Zs / r, feasibility_tol=feasibility_tol,
                                      initial_working_set=initial_working_set, max_rounds=max_rounds)
            u, alpha = u / r, alpha / r**2
        if s != 1.0 or cert is None:
            u, alpha = u / s, alpha / s**2
            cert = certificate(Z, u, alpha)    # of the answer in the caller's units
        m = Z @ u
    # Support vectors: active constraints that carry dual weight.
    support = np.flatnonzero((m <= 1.0 + 1e-6) & (alpha > 0))
    return MaxMarginResult(u=u, alpha=alpha, margin=float(1.0 / np.linalg.norm(u)),
                           support=support, certificate=cert, method=method)


def direction_gap(u, u_star):
    """1 - cos(u, u*): how far the EX-RM head points from the max-margin direction (Theorem 2:
    -> 0 under GD). u, u_star (*B, D), any backend (u_star is converted to u's)  ->  (*B,).
    A zero u (no direction yet, e.g. u(0) = 0) gives 1."""
    xp = namespace(u)
    u_star = asarray_like(u_star, u)
    norms = xp.linalg.vector_norm(u, axis=-1) * xp.linalg.vector_norm(u_star, axis=-1)
    dot = xp.sum(u * u_star, axis=-1)
    safe = xp.where(norms > 0, norms, xp.ones_like(norms))
    return 1.0 - xp.where(norms > 0, dot / safe, xp.zeros_like(dot))
