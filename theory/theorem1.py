"""Theorem 1 (reconstructed, paper_notes §4): verifying needs no generating.

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

Everything here is exact (enumerated), for an autoregressive pi_ref given by its conditional
log-probabilities over all sequences of a fixed length T over a vocabulary of size V.
"""
from __future__ import annotations

import itertools

import numpy as np


def all_sequences(V: int, T: int) -> np.ndarray:
    """Every response of length T over V tokens, in lexicographic order.  -> (V**T, T)."""
    return np.array(list(itertools.product(range(V), repeat=T)), dtype=np.int64).reshape(-1, T)


def sequence_log_probs(cond_log_probs, seqs: np.ndarray) -> np.ndarray:
    """ln pi(y) = sum_k ln pi(y_k | y<k) for an autoregressive model given as a function
    cond_log_probs(prefixes (N, k)) -> (N, V) of next-token log-probabilities.  -> (N,)."""
    total = np.zeros(len(seqs))
    for k in range(seqs.shape[1]):
        total += cond_log_probs(seqs[:, :k])[np.arange(len(seqs)), seqs[:, k]]
    return total


def tilt(log_pi_ref: np.ndarray, correct: np.ndarray, *, delta: float, beta: float) -> np.ndarray:
    """ln pi of the tilted distribution over the enumerated responses (exact, normalised)."""
    logits = log_pi_ref + (delta / beta) * correct.astype(float)
    return logits - np.logaddexp.reduce(logits)


def im_rm_rewards(log_pi: np.ndarray, log_pi_ref: np.ndarray, *, beta: float) -> np.ndarray:
    """r(x,y) = beta ln pi(y|x) / pi_ref(y|x) for every enumerated response."""
    return beta * (log_pi - log_pi_ref)


def correct_mass(log_pi: np.ndarray, correct: np.ndarray) -> float:
    """pi(C|x), summed in log space so that tiny masses keep their precision."""
    return float(np.exp(np.logaddexp.reduce(log_pi[correct]))) if correct.any() else 0.0


def closed_form_correct_mass(p_ref_C: float, *, delta: float, beta: float) -> float:
    """pi(C|x) = e^{delta/beta} p / (1 + (e^{delta/beta} - 1) p)."""
    a = np.exp(delta / beta)
    return a * p_ref_C / (1 + (a - 1) * p_ref_C)


def tilted_conditionals(log_pi_ref: np.ndarray, correct: np.ndarray, seqs: np.ndarray,
                        V: int, *, delta: float, beta: float):
    """ln pi(y_k | y<k) of the tilted model for every enumerated sequence and position,
    from prefix sums of the tilted mass (shows pi is itself an autoregressive LM). -> (N, T)."""
    log_w = log_pi_ref + (delta / beta) * correct.astype(float)      # unnormalised tilted mass
    N, T = seqs.shape
    out = np.zeros((N, T))
    for k in range(T):
        # mass of each prefix y<=k+1 over y<=k: group sequences by prefix (lexicographic order)
        group_next = seqs[:, : k + 1] @ (V ** np.arange(k, -1, -1))
        group_prev = group_next // V
        mass_next = np.full(V ** (k + 1), -np.inf)
        np.logaddexp.at(mass_next, group_next, log_w)
        mass_prev = np.full(V ** k, -np.inf)
        np.logaddexp.at(mass_prev, group_prev, log_w)
        out[:, k] = mass_next[group_next] - mass_prev[group_prev]
    return out
