"""Theorem 1 (reconstructed): verifying needs no generating.

Construction. For a prompt x, a reference LM pi_ref over a finite response space Y and the
correct responses C subset Y, tilt the reference towards C:

    pi(y|x) = pi_ref(y|x) exp((delta/beta) 1[y in C]) / Z(x),
    Z(x) = 1 + (e^{delta/beta} - 1) pi_ref(C|x).

Its IM-RM is r(x,y) = beta ln pi/pi_ref = delta 1[y in C] - beta ln Z(x): every correct
response beats every incorrect one by exactly delta, yet

    pi(C|x) = e^{delta/beta} pi_ref(C|x) / Z(x) <= e^{delta/beta} pi_ref(C|x),

so if pi_ref almost never generates a correct response, neither does pi. The tilted pi is
again autoregressive: pi(y_k|y<k) = pi_ref(y_k|y<k) W(y<=k) / W(y<k) with
W(prefix) = E_{pi_ref}[exp((delta/beta) 1[y in C]) | prefix].

The bound behind it holds for every policy (`generation_bound`): since pi = pi_ref e^{r/beta},
pi(C|x) = sum_{y in C} pi_ref(y|x) e^{r(x,y)/beta} <= pi_ref(C|x) exp(max_{y in C} r(x,y)/beta).

Everything here is exact (enumerated), for an autoregressive pi_ref given by its conditional
log-probabilities over all sequences of a fixed length T over a vocabulary of size V, listed in
the lexicographic order of `all_sequences`. Arrays may be NumPy or torch.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from theory.backend import logsumexp, namespace


def all_sequences(V: int, T: int) -> np.ndarray:
    """Every response of length T over V tokens, in lexicographic order.  -> (V**T, T) int64."""
    return np.array(list(itertools.product(range(V), repeat=T)), dtype=np.int64).reshape(-1, T)


def sequence_log_probs(cond_log_probs, seqs):
    """ln pi(y) = sum_k ln pi(y_k | y<k) for an autoregressive model given as a function
    cond_log_probs(prefixes (N, k)) -> (N, V) of next-token log-probabilities.  -> (N,)."""
    xp = namespace(seqs)
    terms = [xp.take_along_axis(cond_log_probs(seqs[:, :k]), seqs[:, k:k + 1], axis=-1)[:, 0]
             for k in range(seqs.shape[1])]
    return sum(terms[1:], terms[0])


def tilt(log_pi_ref, correct, *, delta: float, beta: float):
    """ln pi of the tilted distribution over the enumerated responses (exact, normalised)."""
    xp = namespace(log_pi_ref)
    logits = log_pi_ref + (delta / beta) * xp.astype(correct, log_pi_ref.dtype)
    return logits - logsumexp(logits, axis=-1)


def log_correct_mass(log_pi, correct):
    """ln pi(C|x), summed in log space so that tiny masses keep their precision (-inf if C is empty)."""
    xp = namespace(log_pi)
    return logsumexp(xp.where(correct, log_pi, xp.full_like(log_pi, -math.inf)), axis=-1)


def correct_mass(log_pi, correct) -> float:
    """pi(C|x) as a float."""
    return float(math.exp(float(log_correct_mass(log_pi, correct))))


def closed_form_correct_mass(p_ref_C: float, *, delta: float, beta: float) -> float:
    """pi(C|x) of the tilted model: e^{delta/beta} p / (1 + (e^{delta/beta} - 1) p)."""
    a = math.exp(delta / beta)
    return a * p_ref_C / (1 + (a - 1) * p_ref_C)


def generation_bound(log_p_ref_C, max_r_C, *, beta: float):
    """pi_ref(C|x) exp(max_{y in C} r(x,y) / beta): bounds pi(C|x) for any policy pi whose
    IM-RM is r (module docstring). Arrays broadcast; scalars give a float."""
    if isinstance(log_p_ref_C, float) and isinstance(max_r_C, float):
        return math.exp(log_p_ref_C + max_r_C / beta)
    xp = namespace(log_p_ref_C, max_r_C)
    return xp.exp(log_p_ref_C + max_r_C / beta)


def tilted_conditionals(log_pi_ref, correct, V: int, *, delta: float, beta: float):
    """ln pi(y_k | y<k) of the tilted model for every enumerated sequence and position, from
    prefix sums of the tilted mass (shows pi is itself an autoregressive LM).  -> (N, T).

    In lexicographic order the sequences sharing a prefix of length k form contiguous blocks
    of V^(T-k), so the mass of every prefix is a logsumexp over one reshape.
    """
    xp = namespace(log_pi_ref)
    N = log_pi_ref.shape[0]
    T = round(math.log(N, V))
    log_w = log_pi_ref + (delta / beta) * xp.astype(correct, log_pi_ref.dtype)   # unnormalised
    prefix = [xp.reshape(logsumexp(xp.reshape(log_w, (V ** k, V ** (T - k))), axis=-1), (V ** k, 1))
              for k in range(T + 1)]                              # ln W(prefix of length k)
    per_seq = [xp.reshape(xp.broadcast_to(m, (V ** k, V ** (T - k))), (N,)) for k, m in enumerate(prefix)]
    return xp.stack([per_seq[k + 1] - per_seq[k] for k in range(T)], axis=-1)
