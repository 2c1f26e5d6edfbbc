"""Theorem 1, exact: an IM-RM that separates correct from incorrect responses by delta, whose
policy generates a correct response no more than e^{delta/beta} times as often as pi_ref.

    python -m sims.theorem1

An autoregressive pi_ref over all responses of length T over V tokens (next-token logits drawn
per prefix), a set C of correct responses that pi_ref rarely generates, and the tilted
pi ~ pi_ref exp((delta/beta) 1[y in C]) of theory/theorem1.py, all enumerated exactly.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from sims import cli
from sims.cli import UsageError, field
from sims.inputs import NONNEGATIVE_FINITE, POSITIVE, POSITIVE_FINITE, SEED, at_least
from theory.rewards import implicit_reward
from theory.theorem1 import (all_sequences, closed_form_correct_mass, correct_mass, generation_bound,
                             log_correct_mass, sequence_log_probs, tilt, tilted_conditionals)


@dataclass(frozen=True)
class Config:
    seed: int = field(0, "random seed", SEED)
    vocab: int = field(4, "tokens V", at_least(2))
    length: int = field(6, "response length T (V^T responses are enumerated)", POSITIVE)
    n_correct: int = field(3, "correct responses: the ones pi_ref finds least likely", POSITIVE)
    peak: float = field(2.0, "spread of pi_ref's next-token logits", NONNEGATIVE_FINITE)
    beta: float = field(0.1, "IM-RM beta", POSITIVE_FINITE)
    delta: float = field(1.0, "margin delta (delta / beta must be in [1e-6, 700])", POSITIVE_FINITE)

    def validate(self):
        if self.vocab ** self.length > 2_000_000:
            n = self.vocab ** self.length
            size = f"{n:.3g}" if n < 10**300 else f"about 10^{len(str(n)) - 1}"
            raise UsageError(f"--vocab ** --length = {size} responses; at most 2e6 are enumerated")
        if self.n_correct >= self.vocab ** self.length:
            raise UsageError("--n-correct must leave at least one incorrect response")
        ratio = self.delta / self.beta
        if not 1e-6 <= ratio <= 700:
            raise UsageError(f"--delta / --beta = {ratio:.3g} must be in [1e-6, 700]: e^(delta/beta) must be "
                             f"finite in float64, and delta/beta must stand above the rounding of log-probabilities")

    def memory_bytes(self) -> float:
        """float64 bytes: next-token log-probabilities of every response at every position
        (N x V, N = V^T, a few copies), the responses and per-position tables (N x T), the
        margins between correct and incorrect responses (|C| x N)."""
        N = self.vocab ** self.length
        return 8 * (3 * N * self.vocab + 6 * N * (self.length + 1) + self.n_correct * N)


def run(config: Config, log=print) -> dict:
    rng = np.random.default_rng(config.seed)
    V, T = config.vocab, config.length
    seqs = all_sequences(V, T)
    tables = {}

    def cond(prefixes):   # an autoregressive pi_ref: logits drawn once per prefix
        rows = []
        for p in map(tuple, prefixes):
            if p not in tables:
                z = config.peak * rng.standard_normal(V)
                tables[p] = z - np.logaddexp.reduce(z)
            rows.append(tables[p])
        return np.array(rows)

    log_ref = sequence_log_probs(cond, seqs)
    correct = np.zeros(len(seqs), bool)
    correct[np.argsort(log_ref)[: config.n_correct]] = True
    log_pi = tilt(log_ref, correct, delta=config.delta, beta=config.beta)
    r = implicit_reward(log_pi, log_ref, beta=config.beta)
    margins = r[correct][:, None] - r[~correct][None, :]
    p_ref, p = correct_mass(log_ref, correct), correct_mass(log_pi, correct)
    if p_ref == 0.0:  # not foreseeable from the flags alone: depends on the drawn logits
        raise UsageError(f"--peak {config.peak:g}: pi_ref(C|x) = exp({float(log_correct_mass(log_ref, correct)):.4g}) "
                         f"underflows float64; lower --peak or --length")
    bound = math.exp(config.delta / config.beta) * p_ref
    cond_err = float(np.max(np.abs(tilted_conditionals(log_ref, correct, V, delta=config.delta,
                                                       beta=config.beta).sum(1) - log_pi)))
    # the bound for any policy, pi_ref(C) exp(max_C r / beta), is attained by the tilted pi
    policy_bound = generation_bound(float(log_correct_mass(log_ref, correct)), float(r[correct].max()), beta=config.beta)
    checks = [
        {"claim": "every correct response beats every incorrect one by exactly delta (min, max margin)",
         "predicted": config.delta, "measured": [float(margins.min()), float(margins.max())],
         "passed": bool(np.allclose(margins, config.delta, rtol=0, atol=1e-9 * (1 + config.delta))),
         "tolerance": f"every |margin - delta| <= {1e-9 * (1 + config.delta):.3g} (1e-9 x (1 + delta))"},
        {"claim": "IM-RM accuracy on all (correct, incorrect) pairs", "predicted": 1.0,
         "measured": float(np.mean(margins > 0)), "passed": bool(np.all(margins > 0)),
         "tolerance": "every margin > 0"},
        {"claim": "pi(C|x) <= e^{delta/beta} pi_ref(C|x)", "predicted": f"<= {bound:.6g}", "measured": p,
         "passed": p <= bound * (1 + 1e-12), "tolerance": "measured <= bound x (1 + 1e-12)"},
        {"claim": "pi(C|x) equals e^{d/b} p / (1 + (e^{d/b} - 1) p)", "predicted": closed_form_correct_mass(
            p_ref, delta=config.delta, beta=config.beta), "measured": p,
         "passed": math.isclose(p, closed_form_correct_mass(p_ref, delta=config.delta, beta=config.beta), rel_tol=1e-9),
         "tolerance": "|measured - predicted| <= 1e-9 x predicted"},
        {"claim": "pi(C|x) <= pi_ref(C|x) exp(max_{y in C} r(y)/beta) (any policy; equality for the tilted one)",
         "predicted": policy_bound, "measured": p, "passed": p <= policy_bound * (1 + 1e-12),
         "tolerance": "measured <= predicted x (1 + 1e-12)"},
        {"claim": "the tilted pi is autoregressive: its conditionals multiply to pi(y) (max |log error|)",
         "predicted": 0.0, "measured": cond_err, "passed": cond_err <= 1e-9, "tolerance": "measured <= 1e-9"},
    ]
    log(f"Theorem 1, exact (V={V}, T={T}: {len(seqs)} responses, |C|={config.n_correct}, beta={config.beta}, delta={config.delta})")
    log(f"  pi_ref(C|x) = {p_ref:.4g}   pi(C|x) = {p:.4g}   bound e^(delta/beta) pi_ref(C|x) = {bound:.4g}   "
        f"(pi(C)/bound = {p / bound:.6f})")
    for c in checks:
        log(f"  {'PASS' if c['passed'] else 'FAIL'} ({c['tolerance']})  {c['claim']}: predicted {_fmt(c['predicted'])}, "
            f"measured {_fmt(c['measured'])}")
    return {"config": dataclasses.asdict(config), "responses": len(seqs), "pi_ref_correct": p_ref, "pi_correct": p,
            "bound": bound, "ratio_to_bound": p / bound, "policy_bound": policy_bound,
            "margin_min": float(margins.min()), "margin_max": float(margins.max()),
            "margin_max_error": float(np.max(np.abs(margins - config.delta))),
            "conditionals_max_log_error": cond_err, "checks": checks}


def _fmt(value) -> str:
    """Numbers at 4 significant digits for the screen (results.json keeps full precision)."""
    if isinstance(value, list):
        return "[" + ", ".join(map(_fmt, value)) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv=None) -> int:
    return cli.simulation_main("theorem1", Config, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
