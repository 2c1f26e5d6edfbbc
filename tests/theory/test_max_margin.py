"""The hard-margin separator: cvxpy answer vs an independent SciPy solve, its certificate
re-derived here from the KKT conditions, and non-separable data reported as such."""
import time

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.optimize import linprog, minimize

from tests.helpers import convert
from theory.max_margin import CERTIFICATE_TOL, NotSeparableError, direction_gap, max_margin


def separable(n, D, seed, strength=2.0):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal(D)
    m /= np.linalg.norm(m)
    return strength * m + rng.standard_normal((n, D)) / np.sqrt(D)


def scipy_primal(Z):
    """min ||u||^2 s.t. Z u >= 1 with SciPy's SLSQP (no cvxpy involved), from the LS start."""
    u0 = np.linalg.lstsq(Z, np.ones(len(Z)), rcond=None)[0] * 2
    res = minimize(lambda u: (u @ u, 2 * u), u0, jac=True, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda u: Z @ u - 1.0, "jac": lambda u: Z}],
                   options=dict(ftol=1e-15, maxiter=2000))
    return res.x


@given(n=st.integers(2, 40), D=st.integers(2, 40), seed=st.integers(0, 2**16))
def test_matches_independent_dual_and_kkt(n, D, seed):
    Z = separable(n, D, seed)
    try:
        r = max_margin(Z)
    except NotSeparableError:   # then an independent LP must find no u with Z u >= 1 either
        lp = linprog(np.zeros(D), A_ub=-Z, b_ub=-np.ones(n), bounds=[(None, None)] * D)
        assert lp.status == 2
        return
    u_ref = scipy_primal(Z)
    np.testing.assert_allclose(r.u, u_ref, rtol=1e-5, atol=1e-5 * np.linalg.norm(u_ref))
    # KKT, checked from scratch: feasibility, a >= 0, u = Z^T a, complementary slackness.
    m = Z @ r.u
    assert m.min() >= 1 - 1e-7
    assert r.alpha.min() >= 0
    np.testing.assert_allclose(Z.T @ r.alpha, r.u, atol=1e-6 * np.linalg.norm(r.u))
    assert np.max(np.abs(r.alpha * (m - 1))) <= 1e-6 * r.alpha.sum()
    assert r.margin == pytest.approx(1 / np.linalg.norm(u_ref), rel=1e-5)
    # the support vectors are the active constraints
    assert np.all(np.abs(m[r.support] - 1) < 1e-6)
    assert max(r.certificate.values()) < 1e-6


def test_backends_give_the_same_separator(backend):
    Z = separable(30, 10, 0)
    np.testing.assert_allclose(max_margin(convert(backend, Z)).u, max_margin(Z).u, rtol=1e-9)


@pytest.mark.parametrize("Z", [
    np.array([[1.0, 0.0], [-1.0, 0.0]]),                          # z and -z
    np.array([[1.0, 2.0], [0.0, 0.0]]),                           # a zero difference
    np.vstack([separable(50, 5, 1), -separable(50, 5, 2)]),        # two opposed clouds
])
def test_non_separable_raises(Z):
    with pytest.raises(NotSeparableError, match="not linearly separable"):
        max_margin(Z)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="NaN"):
        max_margin(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        max_margin(np.zeros(3))


@pytest.mark.slow
@pytest.mark.parametrize("n,D", [(2000, 4096), (4096, 256)])
def test_large_in_seconds(n, D):
    Z = separable(n, D, 3)
    t0 = time.perf_counter()
    r = max_margin(Z)
    assert time.perf_counter() - t0 < 30.0
    assert (Z @ r.u).min() >= 1 - 1e-7 and max(r.certificate.values()) < 1e-6


# The active-set method (default) against the cvxpy QP, its handover, and its own
# non-separability proof.

@given(n=st.integers(2, 60), D=st.integers(2, 60), seed=st.integers(0, 2**16))
def test_active_set_matches_qp_with_certificate(n, D, seed):
    Z = separable(n, D, seed)
    try:
        r = max_margin(Z)
    except NotSeparableError:
        with pytest.raises(NotSeparableError):
            max_margin(Z, method="qp")
        return
    q = max_margin(Z, method="qp")
    assert max(r.certificate.values()) <= CERTIFICATE_TOL
    np.testing.assert_allclose(r.u, q.u, rtol=1e-6, atol=1e-6 * np.linalg.norm(q.u))
    assert direction_gap(r.u, q.u) <= 1e-9


def test_active_set_is_exact_on_a_large_problem():
    Z = separable(600, 300, 4, strength=0.3)
    r = max_margin(Z)
    assert r.method == "active_set"
    assert max(r.certificate.values()) <= 1e-12          # a linear solve, not a tolerance


def test_dependent_support_vectors():
    """Duplicated and scaled rows make K_SS singular; the answer stays certified."""
    Z = separable(30, 10, 0)
    for Z2 in (np.vstack([Z, Z]), np.vstack([Z, 2 * Z, Z + 1e-3])):
        r = max_margin(Z2)
        assert max(r.certificate.values()) <= CERTIFICATE_TOL
        np.testing.assert_allclose(r.u, max_margin(Z).u, rtol=1e-6)


def test_non_separable_proved_without_the_qp(monkeypatch):
    """More Gaussian differences than 2 D: not separable (Cover); the active-set method shows
    it by a dual vector (no cvxpy call), which liblinear at large C would not."""
    import theory.max_margin as mm
    monkeypatch.setattr(mm, "_max_margin_qp", lambda *a, **k: pytest.fail("QP fallback used"))
    Z = np.random.default_rng(0).standard_normal((600, 100))
    with pytest.raises(NotSeparableError, match="not linearly separable.*margin <="):
        max_margin(Z)


def test_zero_difference_named():
    with pytest.raises(NotSeparableError, match="z_1 = 0"):
        max_margin(np.array([[1.0, 2.0], [0.0, 0.0]]))


def test_unknown_method():
    with pytest.raises(ValueError, match="method"):
        max_margin(np.eye(2), method="liblinear")


@pytest.mark.parametrize("method", ["active_set", "qp"])
@pytest.mark.parametrize("scale", [1e-6, 1.0, 300.0, 1e6])
def test_units_of_the_features_do_not_matter(method, scale):
    """u*(s Z) = u*(Z) / s, certified, whatever the scale (a fresh user's features at std 30
    once failed the QP's certificate: its tolerances are absolute)."""
    rng = np.random.default_rng(3)
    Z = (rng.standard_normal((40, 16)) + 1.0) - (rng.standard_normal((40, 16)) - 1.0)
    base, scaled = max_margin(Z, method=method), max_margin(scale * Z, method=method)
    assert max(scaled.certificate.values()) <= 1e-9
    np.testing.assert_allclose(scaled.u * scale, base.u, rtol=1e-7, atol=0)


# The squared-hinge separation test that decides degenerate working sets.

@given(n=st.integers(2, 40), D=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_separation_test_agrees_with_an_lp(n, D, seed):
    """Its verdict against an independent LP (is there u with Z u >= 1?); a "not separable"
    verdict carries a >= 0 whose bound is checked here from Z."""
    from theory.max_margin import NOT_SEPARABLE_TOL, _separation_test
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, D)) + rng.uniform(0, 1) * rng.standard_normal(D)
    verdict, a = _separation_test(Z)
    lp = linprog(np.zeros(D), A_ub=-Z, b_ub=-np.ones(n), bounds=[(None, None)] * D)
    if verdict == "not separable":
        assert a.min() >= 0 and a.sum() > 0
        assert np.linalg.norm(Z.T @ a) / a.sum() <= NOT_SEPARABLE_TOL * np.linalg.norm(Z, axis=1).max()
        assert lp.status == 2
    elif verdict == "separable":
        assert lp.status == 0
        assert a.min() >= 0


def test_large_non_separable_working_set_proved_quickly(monkeypatch):
    """n = 5 D Gaussian differences: the active set's K_SS turns singular, and the squared-hinge
    test proves the working set (and so every pair) non-separable without the QP. It once
    cycled at 2 D and handed over to the QP: 576 s at n = 10000, D = 2048."""
    import theory.max_margin as mm
    monkeypatch.setattr(mm, "_max_margin_qp", lambda *a, **k: pytest.fail("QP fallback used"))
    Z = np.random.default_rng(0).standard_normal((2500, 512)) / np.sqrt(512)
    with pytest.raises(NotSeparableError, match="margin <= .* x max"):
        max_margin(Z)


def test_near_the_separability_threshold_the_active_set_finishes(monkeypatch):
    """Small problems near Cover's threshold (n up to 3 D): the active set decides by itself
    (degenerate working sets go through the separation test, block pivoting does not cycle);
    the QP takes over in at most 2% of them (3 of 600 when measured; 189 of 600 before)."""
    import theory.max_margin as mm
    calls = []
    qp = mm._max_margin_qp
    monkeypatch.setattr(mm, "_max_margin_qp", lambda *a, **k: calls.append(1) or qp(*a, **k))
    rng = np.random.default_rng(1)
    for _ in range(200):
        D = int(rng.integers(2, 7))
        n = int(rng.integers(2, 3 * D + 2))
        Z = rng.standard_normal((n, D)) + rng.uniform(0, 0.5) * rng.standard_normal(D)
        try:
            r = max_margin(Z)
        except NotSeparableError:
            lp = linprog(np.zeros(D), A_ub=-Z, b_ub=-np.ones(n), bounds=[(None, None)] * D)
            assert lp.status == 2
            continue
        assert max(r.certificate.values()) <= CERTIFICATE_TOL or r.method == "qp"
    assert len(calls) <= 4


@pytest.mark.parametrize("spread", [2.0, 3.0])
def test_features_of_very_different_scales_stay_certified(spread):
    """Columns scaled over 10^(2 spread) (hidden states have outlier dimensions): K_SS is
    ill-conditioned, and the support is re-solved by QR so that margins still reach 1 to
    rounding (the Cholesky answer alone missed by 4e-9 and handed over to the QP)."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=16)
    X = rng.normal(size=(50, 16))
    X *= np.sign(X @ w)[:, None]
    Z = X * np.logspace(-spread, spread, 16)
    r = max_margin(Z)
    assert r.method == "active_set"
    assert max(r.certificate.values()) <= CERTIFICATE_TOL
    assert (Z @ r.u).min() >= 1 - 1e-9


@pytest.mark.parametrize("Z,match", [
    (np.ones((3, 2)) * 1e200, "rescale the features"),
    (np.ones((3, 2)) * 1e-200, "rescale the features"),
    (np.ones((3, 2)) * (1 + 1j), "real numbers"),
    (np.zeros((3, 0)), "non-empty"),
])
def test_unrepresentable_input_is_refused(Z, match):
    with pytest.raises(ValueError, match=match):
        max_margin(Z)


def test_all_zero_differences_carry_their_bound():
    with pytest.raises(NotSeparableError, match="every z_i = 0") as info:
        max_margin(np.zeros((4, 3)))
    assert info.value.margin_bound == 0.0 and info.value.pairs_in_proof == 1
