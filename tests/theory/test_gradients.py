"""Closed-form Bradley-Terry gradients against torch autograd (float64), on every backend."""
import numpy as np
import torch
from hypothesis import given, strategies as st

from tests.helpers import convert
from theory.backend import to_numpy
from theory.gradients import (ex_rm_grad, im_rm_log_prob_grad, im_rm_single_token_grad,
                              im_rm_single_token_margins, bt_weights, token_difference)
from theory.rewards import bt_loss, ex_rm_reward, im_rm_reward
from theory.tolerance import assert_close, tie_tolerance

sizes = dict(n=st.integers(1, 6), V=st.integers(2, 10), D=st.integers(1, 8), seed=st.integers(0, 2**16))


@given(**sizes)
def test_ex_rm_grad_matches_autograd(backend, n, V, D, seed):
    rng = np.random.default_rng(seed)
    u, hp, hm = rng.standard_normal(D), rng.standard_normal((n, D)), rng.standard_normal((n, D))
    ut = torch.tensor(u, requires_grad=True)
    bt_loss(ex_rm_reward(ut, torch.tensor(hp)), ex_rm_reward(ut, torch.tensor(hm))).backward()
    got = ex_rm_grad(convert(backend, u), convert(backend, hp - hm))
    assert_close(got, ut.grad.numpy())


@given(**sizes, ref=st.booleans(), beta=st.floats(0.01, 2.0))
def test_im_rm_single_token_grad_matches_autograd(backend, n, V, D, seed, ref, beta):
    """Autograd goes through the full log-softmax reward; the closed form drops the softmax."""
    rng = np.random.default_rng(seed)
    U, U_ref = rng.standard_normal((V, D)), rng.standard_normal((V, D))
    hx, yp, ym = rng.standard_normal((n, D)), rng.integers(0, V, n), rng.integers(0, V, n)
    Ut = torch.tensor(U, requires_grad=True)
    Ur = torch.tensor(U_ref) if ref else None
    h = torch.tensor(hx)[:, None, :]
    rp, sp = im_rm_reward(Ut, h, torch.tensor(yp)[:, None], beta=beta, U_ref=Ur, with_scale=True)
    rm, sm = im_rm_reward(Ut, h, torch.tensor(ym)[:, None], beta=beta, U_ref=Ur, with_scale=True)
    bt_loss(rp, rm).backward()

    Ub, hb = convert(backend, U), convert(backend, hx)
    E = token_difference(convert(backend, yp), convert(backend, ym), V, hb)
    m_ref = im_rm_single_token_margins(convert(backend, U_ref), hb, E, beta=beta) if ref else None
    m = im_rm_single_token_margins(Ub, hb, E, beta=beta, margins_ref=m_ref)
    # the autograd side subtracts log-probabilities of size `scale`: judge rounding on that
    assert_close(m, (rp - rm).detach().numpy(), atol=float(tie_tolerance(torch.float64, (sp + sm).detach().max())))
    got = im_rm_single_token_grad(hb, E, bt_weights(m), beta=beta)
    # autograd sums per-pair terms g_i beta/n (e_y - pi) h_i that cancel (exactly so when
    # y+ = y-): judge rounding on their size, not on the possibly much smaller result
    g = to_numpy(bt_weights(m))
    terms = beta / n * np.max(g) * 4 * np.abs(hx).max()
    assert_close(got, Ut.grad.numpy(), atol=64 * np.finfo(float).eps * terms)


@given(**sizes, L=st.integers(1, 5))
def test_log_prob_grad_matches_autograd(backend, n, V, D, seed, L):
    rng = np.random.default_rng(seed)
    U, h, y = rng.standard_normal((V, D)), rng.standard_normal((n, L, D)), rng.integers(0, V, (n, L))
    mask = rng.random((n, L)) < 0.8
    want = []
    for i in range(n):
        Ut = torch.tensor(U, requires_grad=True)
        r = im_rm_reward(Ut, torch.tensor(h[i:i + 1]), torch.tensor(y[i:i + 1]), beta=1.0,
                         mask=torch.tensor(mask[i:i + 1]))
        (g,) = torch.autograd.grad(r.sum(), Ut)
        want.append(g.numpy())
    got = im_rm_log_prob_grad(convert(backend, U), convert(backend, h), convert(backend, y),
                              mask=convert(backend, mask))
    # entries are sums of (1[v = y_k] - pi_k(v)) h_k: with nearly one-hot pi both sides cancel
    # O(|h|) terms, so rounding is judged on sum_k |h_k| (entrywise bound on the terms)
    assert_close(got, np.stack(want), atol=64 * np.finfo(float).eps * np.abs(h).sum(axis=1).max())


def test_unseen_rows_get_exactly_zero_gradient(backend):
    rng = np.random.default_rng(0)
    V, D, n = 12, 5, 30
    hx = convert(backend, rng.standard_normal((n, D)))
    yp, ym = rng.integers(0, 4, n), rng.integers(4, 8, n)     # tokens 8..11 never used
    E = token_difference(convert(backend, yp), convert(backend, ym), V, hx)
    g = convert(backend, rng.random(n))
    grad = to_numpy(im_rm_single_token_grad(hx, E, g, beta=0.7))
    assert np.all(grad[8:] == 0.0)
    assert np.all(np.abs(grad[:8]).sum(axis=1) > 0)
