"""Rewards, Bradley-Terry loss and metrics against independent computations."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from tests.helpers import convert
from theory.backend import to_numpy
from theory.rewards import (accuracy, bt_loss, ex_rm_reward, im_rm_reward, implicit_reward,
                            normalised_margin, token_log_probs)
from theory.tolerance import assert_close, tie_tolerance


def _loop_log_probs(U, h, y):
    """ln softmax(U h)[y] position by position with torch (independent of theory/)."""
    U, h = torch.as_tensor(U), torch.as_tensor(h)
    out = np.zeros(y.shape)
    for i in range(y.shape[0]):
        for k in range(y.shape[1]):
            out[i, k] = torch.log_softmax(U @ h[i, k], dim=0)[int(y[i, k])].item()
    return out


@given(n=st.integers(1, 5), L=st.integers(1, 4), V=st.integers(2, 9), D=st.integers(1, 6),
       seed=st.integers(0, 2**16), ref=st.booleans(), masked=st.booleans())
def test_im_rm_reward_matches_loop(backend, n, L, V, D, seed, ref, masked):
    rng = np.random.default_rng(seed)
    U, U_ref = 3 * rng.standard_normal((V, D)), 3 * rng.standard_normal((V, D))
    h, y = rng.standard_normal((n, L, D)), rng.integers(0, V, (n, L))
    mask = (rng.random((n, L)) < 0.7) if masked else np.ones((n, L), bool)
    lp = _loop_log_probs(U, h, y) - (_loop_log_probs(U_ref, h, y) if ref else 0)
    want = 0.3 * np.sum(lp * mask, axis=1)
    got, scale = im_rm_reward(convert(backend, U), convert(backend, h), convert(backend, y), beta=0.3,
                              U_ref=convert(backend, U_ref) if ref else None,
                              mask=convert(backend, mask) if masked else None, with_scale=True)
    assert type(got) is type(convert(backend, U))
    # r subtracts log-probabilities of size `scale`: rounding is judged on that (the tie rule)
    assert_close(got, want, atol=float(np.max(to_numpy(tie_tolerance(np.float64, scale)))))


def test_batched_unembedding_matches_unbatched(backend):
    rng = np.random.default_rng(0)
    U, h, y = rng.standard_normal((3, 7, 4)), rng.standard_normal((3, 5, 2, 4)), rng.integers(0, 7, (3, 5, 2))
    got = token_log_probs(convert(backend, U), convert(backend, h), convert(backend, y))
    want = np.stack([_loop_log_probs(U[s], h[s], y[s]) for s in range(3)])
    assert_close(got, want)


def test_ex_rm_reward_and_bt_loss(backend):
    rng = np.random.default_rng(1)
    u, hp, hm = rng.standard_normal(5), rng.standard_normal((8, 5)), rng.standard_normal((8, 5))
    rp = ex_rm_reward(convert(backend, u), convert(backend, hp))
    rm = ex_rm_reward(convert(backend, u), convert(backend, hm))
    assert_close(rp, hp @ u)
    want = np.mean(-np.log(1 / (1 + np.exp(-(hp @ u - hm @ u)))))
    assert_close(bt_loss(rp, rm), np.asarray(want))


def test_accuracy_counts_ties_half_and_rounding_noise_as_ties(backend):
    margins = convert(backend, [1.0, -1.0, 0.0, 1e-16, -3e-16, 1e-6])
    scale = convert(backend, np.ones(6))
    acc, ties = accuracy(margins, scale)
    # 1e-16 and -3e-16 are rounding noise on a scale of 1: ties; 1e-6 is a real preference.
    assert float(ties) == pytest.approx(3 / 6)
    assert float(acc) == pytest.approx((1 + 0 + 0.5 * 3 + 1) / 6)


def test_tie_tolerance_follows_dtype():
    assert tie_tolerance(np.float32, 1.0) / tie_tolerance(np.float64, 1.0) == pytest.approx(2.0**29)
    assert tie_tolerance(torch.float64, 2.0) == pytest.approx(2 * tie_tolerance(np.float64, 1.0))


def test_normalised_margin_follows_the_official_code(backend):
    """rm_exps/eval/reward_model_evaluator.py: mean |r+ - r-| / (torch's default std + 1e-8);
    torch.std is the unbiased one (ddof = 1), over the 2N rewards together."""
    rng = np.random.default_rng(2)
    rp, rm = rng.standard_normal(10), rng.standard_normal(10)
    t = torch.cat([torch.as_tensor(rp), torch.as_tensor(rm)])
    want = (torch.as_tensor(rp) - torch.as_tensor(rm)).abs().mean() / (t.std() + 1e-8)
    got = normalised_margin(convert(backend, rp), convert(backend, rm))
    assert_close(got, want.numpy())
    # ddof = 0 would differ by sqrt(2N / (2N - 1)) = 1.026 here: far outside the tolerance
    population = np.mean(np.abs(rp - rm)) / (np.std(np.concatenate([rp, rm])) + 1e-8)
    assert abs(float(got) - population) > 1e-3


def test_ties_count_half_or_zero(backend):
    margins = convert(backend, [1.0, -1.0, 0.0, 0.0])
    scale = convert(backend, np.ones(4))
    assert float(accuracy(margins, scale)[0]) == pytest.approx(2 / 4)          # 1 + 0 + 1/2 + 1/2
    assert float(accuracy(margins, scale, "zero")[0]) == pytest.approx(1 / 4)  # TRL, RewardBench
    with pytest.raises(ValueError, match="ties must be"):
        accuracy(margins, scale, "third")


def test_implicit_reward_is_beta_log_ratio(backend):
    rng = np.random.default_rng(4)
    lp, lp_ref = -rng.random(6) * 5, -rng.random(6) * 5
    r, scale = implicit_reward(convert(backend, lp), convert(backend, lp_ref), beta=0.3, with_scale=True)
    assert_close(r, 0.3 * np.log(np.exp(lp) / np.exp(lp_ref)))
    assert_close(scale, 0.3 * (np.abs(lp) + np.abs(lp_ref)))
    assert_close(implicit_reward(convert(backend, lp), beta=0.3), 0.3 * lp)     # no reference


def test_backends_agree():
    rng = np.random.default_rng(3)
    U, h, y = rng.standard_normal((6, 3)), rng.standard_normal((4, 2, 3)), rng.integers(0, 6, (4, 2))
    a = im_rm_reward(U, h, y, beta=0.5)
    b = im_rm_reward(torch.as_tensor(U), torch.as_tensor(h), torch.as_tensor(y), beta=0.5)
    assert_close(to_numpy(b), a)
