"""Theorem 1's construction, exactly, over random autoregressive reference models."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from tests.helpers import convert
from theory.backend import to_numpy
from theory.rewards import implicit_reward
from theory.theorem1 import (all_sequences, closed_form_correct_mass, correct_mass, generation_bound,
                             log_correct_mass, sequence_log_probs, tilt, tilted_conditionals)


def random_reference(rng, V, T, peak):
    """An autoregressive pi_ref: next-token logits from a random table indexed by the prefix."""
    table = {}

    def cond(prefixes):
        out = []
        for p in map(tuple, prefixes):
            if p not in table:
                z = peak * rng.standard_normal(V)
                table[p] = z - np.logaddexp.reduce(z)
            out.append(table[p])
        return np.array(out)
    return cond


construction = dict(V=st.integers(2, 4), T=st.integers(1, 4), peak=st.floats(0.0, 4.0),
                    frac=st.floats(0.0, 1.0), beta=st.floats(0.01, 2.0), delta=st.floats(0.01, 5.0),
                    seed=st.integers(0, 2**16))


def draw(V, T, peak, frac, seed):
    rng = np.random.default_rng(seed)
    seqs = all_sequences(V, T)
    log_ref = sequence_log_probs(random_reference(rng, V, T, peak), seqs)
    correct = rng.random(len(seqs)) < frac
    correct[rng.integers(len(seqs))] = True           # at least one correct ...
    if correct.all():
        correct[0] = False                             # ... and one incorrect response
    return seqs, log_ref, correct


@given(**construction)
def test_margin_is_exactly_delta_and_bound_holds(backend, V, T, peak, frac, beta, delta, seed):
    seqs, log_ref, correct = draw(V, T, peak, frac, seed)
    assert np.isclose(np.logaddexp.reduce(log_ref), 0.0, atol=1e-12)    # pi_ref is a distribution
    log_pi = to_numpy(tilt(convert(backend, log_ref), convert(backend, correct), delta=delta, beta=beta))
    r = implicit_reward(log_pi, log_ref, beta=beta)
    # every correct response beats every incorrect one by exactly delta: accuracy 1
    assert np.allclose(r[correct][:, None] - r[~correct][None, :], delta, rtol=0, atol=1e-9 * (1 + delta))
    p_ref, p = correct_mass(log_ref, correct), correct_mass(log_pi, correct)
    assert p == pytest.approx(closed_form_correct_mass(p_ref, delta=delta, beta=beta), rel=1e-9)
    assert p <= np.exp(delta / beta) * p_ref * (1 + 1e-12)
    # the bound for any policy is attained by the tilted one: max_C r = delta - beta ln Z
    bound = generation_bound(float(log_correct_mass(log_ref, correct)), float(r[correct].max()), beta=beta)
    assert p == pytest.approx(bound, rel=1e-9)


@given(V=st.integers(2, 4), T=st.integers(1, 4), seed=st.integers(0, 2**16), beta=st.floats(0.05, 2.0))
def test_generation_bound_holds_for_any_policy(backend, V, T, seed, beta):
    """pi(C) <= pi_ref(C) exp(max_C r / beta) for an arbitrary policy, not only the tilted one."""
    rng = np.random.default_rng(seed)
    seqs = all_sequences(V, T)
    log_ref = sequence_log_probs(random_reference(rng, V, T, 2.0), seqs)
    log_pi = sequence_log_probs(random_reference(rng, V, T, 2.0), seqs)
    correct = rng.random(len(seqs)) < 0.3
    correct[0] = True
    r = implicit_reward(log_pi, log_ref, beta=beta)
    bound = generation_bound(convert(backend, log_correct_mass(log_ref, correct)),
                             convert(backend, r[correct].max()), beta=beta)
    assert correct_mass(log_pi, correct) <= float(bound) * (1 + 1e-12)


@given(**construction)
def test_tilted_model_is_autoregressive(backend, V, T, peak, frac, beta, delta, seed):
    seqs, log_ref, correct = draw(V, T, peak, frac, seed)
    log_pi = tilt(log_ref, correct, delta=delta, beta=beta)
    cond = to_numpy(tilted_conditionals(convert(backend, log_ref), convert(backend, correct), V, delta=delta, beta=beta))
    np.testing.assert_allclose(cond.sum(axis=1), log_pi, atol=1e-9)
    # each conditional is a distribution over the next token: brute force over the prefixes
    for k in range(T):
        for prefix in {tuple(s[:k]) for s in seqs}:
            rows = [i for i, s in enumerate(seqs) if tuple(s[:k]) == prefix]
            nxt = {int(seqs[i, k]): cond[i, k] for i in rows}
            assert np.isclose(np.logaddexp.reduce(list(nxt.values())), 0.0, atol=1e-9)


@given(beta=st.floats(0.05, 2.0), delta=st.floats(0.05, 3.0))
def test_bound_becomes_tight_as_reference_mass_vanishes(beta, delta):
    ratios = [closed_form_correct_mass(p, delta=delta, beta=beta) / (np.exp(delta / beta) * p)
              for p in (1e-2, 1e-4, 1e-6, 1e-8)]
    assert all(a < b for a, b in zip(ratios, ratios[1:])) and ratios[-1] > 1 - 1e-6 * np.exp(delta / beta)
