"""Eq. 5 and the EX-RM identity against the autograd oracle (theory/oracle.py), with Hypothesis."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from tests.helpers import convert
from theory import oracle
from theory.backend import to_numpy
from theory.dynamics import (delta_r_ex, delta_r_im, kernel_cost, next_token_log_probs, pooled,
                             reward_change_matrix_ex, reward_change_matrix_im, reward_kernel, rho)
from theory.sequences import Seqs, full, pack
from theory.tolerance import assert_close, default_rtol


def draw_problem(rng, *, V, D, A, B, K, L, overlap, peak, ref, dtype=np.float64):
    """Random U, evaluation and training sequences. overlap: 'none' (ybar shares no token with
    the training responses), 'partial' (one shared pool), 'identical' (ybar = y+)."""
    U = peak * rng.standard_normal((V, D)) / np.sqrt(D)
    U_ref = rng.standard_normal((V, D)) / np.sqrt(D) if ref else None
    half = max(1, V // 2)
    pool_bar, pool_train = ((np.arange(half), np.arange(half, V)) if overlap == "none" and V >= 2
                            else (np.arange(V), np.arange(V)))
    lens = lambda n, m: rng.integers(1, m + 1, n)
    h = lambda n: rng.standard_normal((n, D)).astype(dtype)
    plus_l = lens(B, L)
    plus = ([h(n) for n in plus_l], [rng.choice(pool_train, n) for n in plus_l])
    minus_l = lens(B, L)
    minus = ([h(n) for n in minus_l], [rng.choice(pool_train, n) for n in minus_l])
    if overlap == "identical":
        bar = ([x.copy() for x in plus[0][:1]] * A, [y.copy() for y in plus[1][:1]] * A)
    else:
        bar_l = lens(A, K)
        bar = ([h(n) for n in bar_l], [rng.choice(pool_bar, n) for n in bar_l])
    return U.astype(dtype), None if U_ref is None else U_ref.astype(dtype), bar, plus, minus


def as_seqs(backend, parts, dtype=None):
    return pack([convert(backend, h, dtype) for h in parts[0]], [convert(backend, y) for y in parts[1]])


problems = dict(V=st.integers(2, 12), D=st.integers(1, 6), A=st.integers(1, 3), B=st.integers(1, 3),
                K=st.integers(1, 4), L=st.integers(1, 4), overlap=st.sampled_from(["none", "partial", "identical"]),
                peak=st.sampled_from([0.1, 1.0, 10.0]), ref=st.booleans(), seed=st.integers(0, 2**16))


@given(**problems, route=st.sampled_from(["auto", "rho", "gradient", "loss_gradient"]), beta=st.floats(0.05, 2.0))
def test_eq5_equals_autograd_tangent(backend, V, D, A, B, K, L, overlap, peak, ref, seed, route, beta):
    rng = np.random.default_rng(seed)
    U, U_ref, bar, plus, minus = draw_problem(rng, V=V, D=D, A=A, B=B, K=K, L=L, overlap=overlap, peak=peak, ref=ref)
    eta = 0.1
    got = delta_r_im(convert(backend, U), as_seqs(backend, bar), as_seqs(backend, plus), as_seqs(backend, minus),
                     beta=beta, eta=eta, U_ref=None if U_ref is None else convert(backend, U_ref), route=route)
    T = lambda parts: as_seqs("torch-cpu", parts)
    Ut, Urt = torch.as_tensor(U), None if U_ref is None else torch.as_tensor(U_ref)
    want, scale = oracle.delta_r_im_tangent(Ut, T(bar), T(plus), T(minus), beta=beta, eta=eta, U_ref=Urt,
                                            with_scale=True)
    # Rounding is judged on the larger of |Delta r|'s Cauchy-Schwarz bound and the size of the
    # terms summed: with nearly one-hot pi, rho = 1 - pi - pi + <pi, pi> cancels O(1) terms
    # (on both sides: autograd's e_y - pi cancels the same way).
    hh = sum(np.abs(np.concatenate(bar[0]) @ np.concatenate(p[0]).T).sum() for p in (plus, minus))
    scale = max(scale, eta * beta**2 * 4 * hh)
    assert np.max(np.abs(to_numpy(got) - want.numpy())) <= 1e-10 * scale


@given(V=st.integers(2, 12), D=st.integers(1, 6), K=st.integers(1, 5), L=st.integers(1, 5),
       peak=st.sampled_from([0.1, 1.0, 10.0]), seed=st.integers(0, 2**16))
def test_routes_agree_and_float32_within_tolerance(V, D, K, L, peak, seed):
    rng = np.random.default_rng(seed)
    U, _, bar, plus, _ = draw_problem(rng, V=V, D=D, A=3, B=3, K=K, L=L, overlap="partial", peak=peak, ref=False)
    out = {}
    for dt in (np.float64, np.float32):
        Ub, sb, sp = torch.as_tensor(U.astype(dt)), as_seqs("torch-cpu", bar, dt), as_seqs("torch-cpu", plus, dt)
        pb, pp = next_token_log_probs(Ub, sb).exp(), next_token_log_probs(Ub, sp).exp()
        out[dt] = {r: reward_kernel(pb, sb, pp, sp, route=r).double().numpy() for r in ("rho", "gradient")}
    scale = np.max(np.abs(out[np.float64]["gradient"])) + 1.0
    assert np.max(np.abs(out[np.float64]["rho"] - out[np.float64]["gradient"])) <= 1e-12 * scale
    # float32: the dtype's tolerance, on the scale of the kernel (terms are O(K L |h|^2))
    scale32 = np.max(np.abs(out[np.float64]["rho"])) + K * L * D
    for r in ("rho", "gradient"):
        assert np.max(np.abs(out[np.float32][r] - out[np.float64][r])) <= default_rtol(np.float32) * scale32


def test_auto_route_picks_the_cheaper():
    assert min(kernel_cost(1, 16, 1, 16, 128256, 4096).items(), key=lambda kv: kv[1])[0] == "rho"
    assert min(kernel_cost(500, 8, 500, 8, 10, 4).items(), key=lambda kv: kv[1])[0] == "gradient"
    # Pythia-1B width, 64-token responses, 256 x 256: the Gram beats K L = 4096 V-long sums
    assert min(kernel_cost(256, 64, 512, 64, 50304, 2048, paired=True).items(), key=lambda kv: kv[1])[0] == "gradient"


def _float32_problem(V=8192, D=256, K=32, A=4, B=4, seed=0):
    """Random float64 LM-like inputs (logits ~ N(0, 1), no shared tokens by chance) at a size
    where contracting full per-sequence gradients sum_k (e_y - pi) h^T in float32 loses
    three digits (normwise ~1e-4 here, 1.7e-3 at |V| = 32000, D = 512)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(V, D, generator=g, dtype=torch.float64) / D**0.5
    mk = lambda n: full(torch.randn(n, K, D, generator=g, dtype=torch.float64), torch.randint(0, V, (n, K), generator=g))
    return U, mk(A), mk(B), mk(B), torch.randn(B, generator=g, dtype=torch.float64)


def _as(dt, *seqs):
    return [Seqs(s.h.to(dt), s.y, s.mask) for s in seqs]


def test_every_route_accurate_in_float32():
    """Each route in float32 against the float64 result, normwise at default_rtol(float32). The
    naive full-gradient contraction these routes replaced is not asserted to fail: how far its
    float32 sums drift depends on the kernel's summation order (AVX2 or AVX-512 BLAS), which the
    mathematics does not fix."""
    U, ev, p, m, rm = _float32_problem()
    kw = dict(beta=0.1, eta=1.0, ref_margins=rm)
    M64 = reward_change_matrix_im(U, ev, p, m, route="rho", **kw)
    U32, ev32, p32, m32 = U.float(), *_as(torch.float32, ev, p, m)
    for route in ("rho", "gradient"):
        assert_close(reward_change_matrix_im(U32, ev32, p32, m32, route=route, **kw).double(), M64,
                     rtol=default_rtol(np.float32), err_msg=route)
    for route in ("rho", "gradient", "loss_gradient"):
        assert_close(delta_r_im(U32, ev32, p32, m32, route=route, **kw).double(), M64.mean(1),
                     rtol=default_rtol(np.float32), err_msg=route)
    # the kernel alone, both routes, against float64
    pb, pp = (next_token_log_probs(U, s).exp() for s in (ev, p))
    pb32, pp32 = (next_token_log_probs(U32, s).exp() for s in (ev32, p32))
    K64 = reward_kernel(pb, ev, pp, p, route="rho")
    for route in ("rho", "gradient"):
        assert_close(reward_kernel(pb32, ev32, pp32, p32, route=route).double(), K64,
                     rtol=default_rtol(np.float32), err_msg=route)


@pytest.mark.parametrize("route", ["rho", "gradient", "loss_gradient"])
def test_streamed_blocks_give_the_same_result(route):
    """A memory budget that forces blocks of one sequence (and vocabulary slices of a few rows)
    changes only the order of the work: the same matrix and mini-batch change."""
    U, ev, p, m, rm = _float32_problem(V=64, D=8, K=5, A=5, B=3, seed=3)
    kw = dict(beta=0.3, eta=0.1, ref_margins=rm, route=route)
    tiny = 8 * 64 * 8 * 4          # far below one block: every block is one sequence / pair
    if route != "loss_gradient":
        whole = reward_change_matrix_im(U, ev, p, m, **kw)
        assert_close(reward_change_matrix_im(U, ev, p, m, max_bytes=tiny, **kw), whole)
    whole = delta_r_im(U, ev, p, m, **kw)
    assert_close(delta_r_im(U, ev, p, m, max_bytes=tiny, **kw), whole)
    assert_close(delta_r_im(U, ev, p, m, max_bytes=U.shape[0] * U.shape[1] * 8 + 4 * 64 * 8 * 7, **kw), whole)


def test_block_sizes_respect_the_stated_bound():
    from theory.dynamics import _block_floats, _blocks
    for route in ("rho", "gradient"):
        ca, cb = _blocks(256, 64, 256, 128, 50304, 2048, route, 2**30, 4)
        assert _block_floats(ca, 64, cb, 128, 50304, 2048, route) * 4 <= 2**30
        assert (ca, cb) != (256, 256) and ca >= 1 and cb >= 1
        assert _blocks(8, 4, 8, 8, 100, 16, route, 2**30, 4) == (8, 8)      # fits: one block


@given(D=st.integers(1, 8), A=st.integers(1, 4), B=st.integers(1, 4), L=st.integers(1, 5),
       how=st.sampled_from(["last", "mean"]), seed=st.integers(0, 2**16))
def test_ex_rm_prediction_is_exact(backend, D, A, B, L, how, seed):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(D)
    reps = []
    for n in (A, B, B):
        hs = [rng.standard_normal((int(rng.integers(1, L + 1)), D)) for _ in range(n)]
        s = pack(hs, [np.zeros(len(h), int) for h in hs])
        reps.append(pooled(s.h, s.mask, how))
    h_bar, hp, hm = reps
    eta = float(rng.uniform(0.01, 2.0))
    got = delta_r_ex(convert(backend, u), convert(backend, h_bar), convert(backend, hp), convert(backend, hm), eta=eta)
    want = oracle.delta_r_ex_actual(torch.as_tensor(u), torch.as_tensor(h_bar), torch.as_tensor(hp),
                                    torch.as_tensor(hm), eta=eta)
    scale = eta * np.abs(h_bar).sum(-1).max() * np.abs(hp - hm).max() + 1e-300
    assert np.max(np.abs(to_numpy(got) - want.numpy())) <= 64 * np.finfo(float).eps * scale


def test_change_matrix_columns_are_single_example_steps():
    """Column i of the matrix is the step on example i alone; the batch step is their mean."""
    rng = np.random.default_rng(5)
    U, U_ref, bar, plus, minus = draw_problem(rng, V=7, D=4, A=3, B=3, K=3, L=3, overlap="partial", peak=1.0, ref=True)
    s = lambda parts: as_seqs("numpy", parts)
    M = reward_change_matrix_im(U, s(bar), s(plus), s(minus), beta=0.5, eta=0.1, U_ref=U_ref)
    for i in range(3):
        one = lambda parts: as_seqs("numpy", ([parts[0][i]], [parts[1][i]]))
        np.testing.assert_allclose(M[:, i], delta_r_im(U, s(bar), one(plus), one(minus), beta=0.5, eta=0.1,
                                                       U_ref=U_ref), rtol=1e-12)
    np.testing.assert_allclose(M.mean(1), delta_r_im(U, s(bar), s(plus), s(minus), beta=0.5, eta=0.1, U_ref=U_ref))

    # EX-RM: column i is the exact change after a real GD step on example i alone (autograd)
    u, h = rng.standard_normal(4), rng.standard_normal((5, 4))
    hp, hm = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    Mex = reward_change_matrix_ex(u, h, hp, hm, eta=0.3)
    T = torch.as_tensor
    for i in range(3):
        want = oracle.delta_r_ex_actual(T(u), T(h), T(hp[i:i + 1]), T(hm[i:i + 1]), eta=0.3).numpy()
        np.testing.assert_allclose(Mex[:, i], want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(Mex.mean(1), delta_r_ex(u, h, hp, hm, eta=0.3), rtol=1e-12)


def test_pooling_last_and_mean():
    s = pack([np.arange(6.0).reshape(3, 2), np.arange(2.0).reshape(1, 2)], [np.zeros(3, int), np.zeros(1, int)])
    np.testing.assert_array_equal(pooled(s.h, s.mask, "last"), [[4.0, 5.0], [0.0, 1.0]])
    np.testing.assert_array_equal(pooled(s.h, s.mask, "mean"), [[2.0, 3.0], [0.0, 1.0]])


@given(**problems)
def test_im_rm_remainder_is_second_order(V, D, A, B, K, L, overlap, peak, ref, seed):
    """actual - predicted = O(eta^2): halving eta divides the gap by about 4."""
    rng = np.random.default_rng(seed)
    U, U_ref, bar, plus, minus = draw_problem(rng, V=V, D=D, A=A, B=B, K=K, L=L, overlap=overlap, peak=peak, ref=ref)
    T = lambda parts: as_seqs("torch-cpu", parts)
    Ut, Urt = torch.as_tensor(U), None if U_ref is None else torch.as_tensor(U_ref)
    gaps = []
    for eta in (1e-3, 5e-4):
        pred = delta_r_im(Ut, T(bar), T(plus), T(minus), beta=0.5, eta=eta, U_ref=Urt)
        act = oracle.delta_r_im_actual(Ut, T(bar), T(plus), T(minus), beta=0.5, eta=eta, U_ref=Urt)
        gaps.append(np.abs((act - pred).numpy()))
    big = gaps[0] > 1e-12          # where the remainder stands above float64 rounding
    assert np.all(gaps[0][~big] <= 1e-11)
    if big.any():
        ratio = gaps[0][big] / gaps[1][big]
        assert np.all((ratio > 3.6) & (ratio < 4.4)), ratio


@given(V=st.integers(2, 30), K=st.integers(1, 5), L=st.integers(1, 5), peak=st.floats(0.01, 20.0),
       seed=st.integers(0, 2**16))
def test_rho_range_diagonal_and_backends(V, K, L, peak, seed):
    rng = np.random.default_rng(seed)
    soft = lambda n: (lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))(peak * rng.standard_normal((n, V)))
    pb, pv, yb, v = soft(K), soft(L), rng.integers(0, V, K), rng.integers(0, V, L)
    r = rho(pb, yb, pv, v)
    assert r.shape == (K, L) and np.all(r >= -2 - 1e-12) and np.all(r <= 2 + 1e-12)
    # brute force from the definition <e_ybar - pibar, e_v - pi>
    E = np.eye(V)
    brute = np.array([[(E[yb[k]] - pb[k]) @ (E[v[l]] - pv[l]) for l in range(L)] for k in range(K)])
    np.testing.assert_allclose(r, brute, atol=1e-14)
    # identical positions: rho = ||e_y - pi||^2 > 0
    diag = np.diag(rho(pb, yb, pb, yb))
    np.testing.assert_allclose(diag, np.sum((E[yb] - pb) ** 2, -1), atol=1e-14)
    # > 0; the closed form 1 - 2 pi(y) + ||pi||^2 cancels to within eps of 0 when pi is nearly one-hot
    assert np.all(diag[np.sum((E[yb] - pb) ** 2, -1) > 1e-12] > 0)
    np.testing.assert_allclose(to_numpy(rho(*(torch.as_tensor(a) for a in (pb, yb, pv, v)))), r, atol=1e-14)


def test_rho_negative_for_paraphrase_tokens():
    """Synonyms a, b with probability p each at both positions, the rest r = 1 - 2p on a third
    token: rho(a, b) = 0 - p - p + (2p^2 + r^2), negative (-1/2 when p = 1/2)."""
    for p in (0.5, 0.4, 0.3):
        pi = np.array([[p, p, 1 - 2 * p]])
        want = -2 * p + 2 * p**2 + (1 - 2 * p) ** 2
        assert want < 0 and rho(pi, np.array([0]), pi, np.array([1]))[0, 0] == pytest.approx(want, abs=1e-15)


@given(**problems)
def test_reference_model_enters_only_through_g(V, D, A, B, K, L, overlap, peak, ref, seed):
    rng = np.random.default_rng(seed)
    U, _, bar, plus, minus = draw_problem(rng, V=V, D=D, A=A, B=1, K=K, L=L, overlap=overlap, peak=peak, ref=False)
    U_ref = rng.standard_normal((V, D))
    s = lambda parts: as_seqs("numpy", parts)
    d_ref = delta_r_im(U, s(bar), s(plus), s(minus), beta=0.7, eta=0.1, U_ref=U_ref)
    d_none = delta_r_im(U, s(bar), s(plus), s(minus), beta=0.7, eta=0.1)
    # one example: Delta r = eta beta^2 g Theta, so Delta r / g does not depend on the reference
    from theory.dynamics import im_rm_bt_weights
    g = lambda Ur: im_rm_bt_weights(next_token_log_probs(U, s(plus)), next_token_log_probs(U, s(minus)),
                                    s(plus), s(minus), beta=0.7, U_ref=Ur)[0]
    np.testing.assert_allclose(d_ref / g(U_ref), d_none / g(None), rtol=1e-12, atol=1e-300)


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
@pytest.mark.parametrize("V,D", [pytest.param(128256, 4096, id="llama3", marks=pytest.mark.large),   # ~11 GB
                                 pytest.param(50304, 2048, id="pythia1b")])                        # ~2 GB
def test_llm_sized_eq5_float32(V, D, device):
    """Eq. 5 at real vocabulary and width, 16-token responses, float32, vs the autograd oracle.

    float32 tolerance: both sides sum ~|V| D products of the gradients, so they may differ by
    a few eps32 * log2(|V| D) relative to the Cauchy-Schwarz scale eta ||grad r|| ||grad L||;
    default_rtol(float32) = 6.3e-6 bounds that (log2(|V| D) ~ 29, eps32 = 1.2e-7).
    """
    from sims.bench_dynamics import _inputs
    U, U_ref, bar, plus, minus = _inputs(V, D, 16, device)
    got = delta_r_im(U, bar, plus, minus, beta=0.1, eta=1.0, U_ref=U_ref)
    want, scale = oracle.delta_r_im_tangent(U, bar, plus, minus, beta=0.1, eta=1.0, U_ref=U_ref, with_scale=True)
    assert float((got - want).abs().max()) <= default_rtol(np.float32) * scale


@given(**{k: v for k, v in problems.items() if k != "ref"}, route=st.sampled_from(["rho", "gradient", "loss_gradient"]))
def test_reference_with_its_own_body_enters_as_ref_margins(V, D, A, B, K, L, overlap, peak, seed, route):
    """A real reference model has its own body: its hidden states differ from the policy's.
    Given as its own log-probability margins, Eq. 5 equals the autograd tangent of the DPO loss
    whose reference terms are constants (the reference's own states are drawn apart from the
    policy's, so a reference head on the policy's states would give another g)."""
    from theory.rewards import bt_loss, im_rm_reward
    rng = np.random.default_rng(seed)
    U, _, bar, plus, minus = draw_problem(rng, V=V, D=D, A=A, B=B, K=K, L=L, overlap=overlap, peak=peak, ref=False)
    U_ref = rng.standard_normal((V, D)) / np.sqrt(D)
    other_body = lambda parts: ([h + rng.standard_normal(h.shape) for h in parts[0]], parts[1])
    ref_plus, ref_minus = other_body(plus), other_body(minus)          # the reference's own states
    T = lambda parts: as_seqs("torch-cpu", parts)
    beta, eta = 0.7, 0.1
    lp = lambda M, s: im_rm_reward(M, s.h, s.y, beta=1.0, mask=s.mask)   # sum_k ln pi(y_k|.)
    Ur = torch.as_tensor(U_ref)
    ref_margins = lp(Ur, T(ref_plus)) - lp(Ur, T(ref_minus))              # (B,)
    got = delta_r_im(torch.as_tensor(U), T(bar), T(plus), T(minus), beta=beta, eta=eta,
                     ref_margins=ref_margins, route=route)
    Ut = torch.as_tensor(U).requires_grad_(True)
    loss = bt_loss(beta * (lp(Ut, T(plus)) - lp(Ur, T(ref_plus))), beta * (lp(Ut, T(minus)) - lp(Ur, T(ref_minus))))
    (grad_L,) = torch.autograd.grad(loss, Ut)
    want, norms = [], []
    for a in range(A):
        (grad_r,) = torch.autograd.grad(beta * lp(Ut, T(([bar[0][a]], [bar[1][a]]))).sum(), Ut)
        want.append(-eta * torch.sum(grad_r * grad_L))
        norms.append(float(torch.linalg.vector_norm(grad_r)))
    scale = eta * max(norms) * float(torch.linalg.vector_norm(grad_L))
    np.testing.assert_allclose(to_numpy(got), to_numpy(torch.stack(want)), rtol=0, atol=1e-10 * max(scale, 1e-300) + 1e-300)
    with pytest.raises(ValueError, match="not both"):
        delta_r_im(torch.as_tensor(U), T(bar), T(plus), T(minus), beta=beta, eta=eta, U_ref=Ur,
                   ref_margins=ref_margins)
    with pytest.raises(ValueError, match="one per training"):
        delta_r_im(torch.as_tensor(U), T(bar), T(plus), T(minus), beta=beta, eta=eta,
                   ref_margins=ref_margins[:0])
