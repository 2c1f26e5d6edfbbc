"""Theorem 2 replayed: an IM-RM cannot generalise to unseen tokens; an EX-RM can.

    python -m sims.theorem2 --unseen-tokens

Single-token responses on fixed hidden representations (sims/representations.py). Both
reward models train by full-batch gradient descent with closed-form gradients
(sims/training.py), all seeds in one batched computation. Predictions (paper_notes §3):
  * IM-RM: the margin of every pair of unseen tokens stays at its initial value (0, since
    pi_theta(0) = pi_ref), so accuracy is exactly 1/2 and every pair is a tie.
  * EX-RM: u(t)/||u(t)|| -> u*/||u*||, the hard-margin separator of the training differences,
    so EX-RM ranks unseen pairs as u* does (accuracy 1 when meaning is encoded). Under the
    paper's constant step the direction converges only at O(1/log t) (Soudry et al. 2018), so
    --direction-check auto tests there that 1 - cos falls, and says how many steps the limit needs.
The table gives each prediction as a number: u*'s accuracy for EX-RM; for IM-RM the tie value
on unseen tokens and, on seen tokens, the accuracy after one step by Eq. 5.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from sims import cli
from sims.cli import UsageError, field
from sims.inputs import (NONNEGATIVE_FINITE, POSITIVE, POSITIVE_FINITE, SEED, SEED_LIMIT, check_device,
                         flag, in_range, one_of)
from sims.representations import SPLITS, load_pairs, synthetic
from sims.training import STEP_RULES, DivergenceError, check_finite, train_ex_rm, train_im_rm
from theory import threads
from theory.backend import asarray_like, namespace, to_numpy
from theory.tolerance import TIE_ULPS, tie_tolerance
from theory.gradients import token_difference
from theory.max_margin import NotSeparableError, SolverError, direction_gap, max_margin
from theory.rewards import NORMALISED_MARGIN_CONVENTION, TIES, accuracy, ex_rm_reward, ex_rm_reward_scale, im_rm_reward, normalised_margin


DIRECTION_CHECKS = ("auto", "limit", "rate")
# The synthetic model's knobs: a --representations file sets the sizes and replaces the rest
# (Config.effective), so a value given for one of them is not used.
FILE_OVERRIDES = ("seed", "n_seeds", "dim", "vocab_size", "n_seen", "n_unseen", "n_train", "n_test",
                  "meaning_strength", "token_noise", "pair_noise", "prompt_similarity", "init_scale")


def warn(message: str) -> None:
    """A `warning:` line on stderr: the run goes on, but its input is not what it seems."""
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class Config:
    seed: int = field(0, "first seed; seeds seed .. seed+n_seeds-1 run as one batch", SEED)
    n_seeds: int = field(5, "independent draws trained together", POSITIVE)
    unseen_tokens: bool = field(False, "also evaluate pairs whose tokens never occur in training (always on "
                                "when --representations has an unseen_tokens split)")
    dim: int = field(128, "hidden dimension D", POSITIVE)
    vocab_size: int = field(64, "vocabulary size |V| (half preferred, half dispreferred)", POSITIVE)
    n_seen: int = field(32, "tokens used in training pairs (even)", POSITIVE)
    n_unseen: int = field(16, "held-out tokens for --unseen-tokens (even)", POSITIVE)
    n_train: int = field(200, "training pairs (one per prompt)", POSITIVE)
    n_test: int = field(200, "evaluation pairs per held-out split", POSITIVE)
    meaning_strength: float = field(1.0, "how strongly token meaning is encoded in h_{x,y} (0: not at all)",
                                    NONNEGATIVE_FINITE)
    token_noise: float = field(1.0, "size of the token-specific part of h_{x,y}", NONNEGATIVE_FINITE)
    pair_noise: float = field(0.5, "size of the per-(prompt, response) noise in h_{x,y}", NONNEGATIVE_FINITE)
    prompt_similarity: float = field(0.5, "cosine between different prompts' representations",
                                     in_range(0, 1, closed_hi=False))
    init_scale: float = field(1.0, "scale of the reference unembedding U_ref = U(0)", NONNEGATIVE_FINITE)
    beta: float = field(0.1, "IM-RM temperature beta (IM-RM steps use lr / beta^2: outside [1e-8, 1e8] they "
                        "overflow or vanish)", in_range(1e-8, 1e8))
    lr: float = field(1.0, "learning rate eta (IM-RM steps use eta / beta^2); in [1e-6, 1e12]: below, the rewards "
                      "shrink towards the 1e-8 that the normalised margin adds to their std (the official "
                      "convention) and float32 rounds the IM-RM's steps away; above, margins approach overflow",
                      in_range(1e-6, 1e12))
    steps: int = field(2000, "gradient steps", POSITIVE)
    step_rule: str = field("normalized", f"step size rule: {' or '.join(STEP_RULES)} (sims/training.py)",
                           one_of(*STEP_RULES))
    direction_tol: float = field(1e-3, "PASS threshold for 1 - cos(u_T, u*) (the limit check); below 2, which "
                                 "1 - cos never exceeds", (lambda v: 0 < v < 2, "must be in (0, 2)"))
    direction_check: str = field("auto", "what the EX-RM direction check tests: limit (1 - cos(u_T, u*) <= "
                                 "--direction-tol), rate (1 - cos falls at every checkpoint of the last decade "
                                 "of steps, as the O(1/log t) convergence of the constant step does long before "
                                 "it reaches any small tolerance), or auto (limit under normalized steps, rate "
                                 "under constant)", one_of(*DIRECTION_CHECKS))
    checkpoints: int = field(40, "log-spaced evaluation steps: about this many distinct steps, at most --steps, "
                             "plus step 0 and the last", POSITIVE)
    ties: str = field("half", "how a tie counts in accuracy: half (the paper's code) or zero (TRL, RewardBench, "
                      "OpenRLHF)", one_of(*TIES))
    representations: str = field("", "an .npz of hidden representations (format: docs/representations.md); "
                                 "replaces the synthetic model")
    backend: str = field("torch", "array backend: torch or numpy", one_of("torch", "numpy"))
    device: str = field("cpu", "torch device (cpu, cuda, cuda:1, ...); must exist on this machine")
    dtype: str = field("float64", "float64 or float32", one_of("float64", "float32"))

    def validate(self):
        for name in ("n_seen", "n_unseen"):
            if getattr(self, name) % 2:
                raise UsageError(f"--{name.replace('_', '-')} must be even (half preferred, half dispreferred)")
        if self.n_seen + self.n_unseen > 2 * (self.vocab_size // 2):
            raise UsageError(f"--n-seen + --n-unseen ({self.n_seen + self.n_unseen}) exceeds the vocabulary "
                             f"(--vocab-size {self.vocab_size})")
        if self.seed + self.n_seeds > SEED_LIMIT:
            raise UsageError(f"--seed + --n-seeds must not exceed {SEED_LIMIT} (seeds are {self.seed}.."
                             f"{self.seed + self.n_seeds - 1})")
        check_device(self.device, self.backend)
        if direction_mode(self) == "rate" and len(rate_window(self.steps, self.checkpoints)) < 2:
            why = "--direction-check rate" if self.direction_check == "rate" else \
                "--step-rule constant checks the direction's rate (--direction-check auto), which"
            raise UsageError(f"{why} compares the checkpoints of the last decade of steps [T/10, T], and "
                             f"--steps {self.steps} --checkpoints {self.checkpoints} put fewer than two there: "
                             f"raise --checkpoints or --steps" + ("" if self.direction_check == "rate" else
                                                                 ", or give --direction-check limit"))
        if self.representations:
            ignored = [f for f in dataclasses.fields(self)
                       if f.name in FILE_OVERRIDES and getattr(self, f.name) != f.default]
            if ignored:
                warn(f"--representations {self.representations} sets the sizes and replaces the synthetic "
                     f"model: {', '.join(flag(f.name) + ' ' + str(getattr(self, f.name)) for f in ignored)} "
                     f"{'is' if len(ignored) == 1 else 'are'} not used")
            problem = load_pairs(self.representations, self.dtype)   # validates every array
            if self.unseen_tokens and "unseen_tokens" not in problem.splits:
                raise UsageError("--unseen-tokens: the representation file has no unseen_tokens split")
        # Overflow that validation can foresee: the EX-RM margin grows like log(t) / margin
        # under GD, harmless; the IM-RM logits are beta-free, but U_ref * h must stay finite.
        big = float(np.finfo(getattr(np, self.dtype)).max)
        scale = max(self.init_scale, 1e-300) * (self.meaning_strength + self.token_noise + self.pair_noise + 1)
        if not self.representations and scale * scale * 16 > big:
            raise UsageError(f"--init-scale and the noise/meaning knobs are so large that logits overflow "
                             f"{self.dtype} (init_scale * (meaning + noises + 1) = {scale:.3g})")

    def effective(self) -> "Config":
        """The sizes actually run: from the representation file when one is given (one draw;
        the synthetic model's knobs do not apply and are recorded as None)."""
        if not self.representations:
            return self
        problem = load_pairs(self.representations, self.dtype)
        pairs = {s: p.y_plus.shape[-1] for s, p in problem.splits.items()}
        tests = {n for s, n in pairs.items() if s != "train"}
        return dataclasses.replace(
            self, seed=None, n_seeds=1, unseen_tokens="unseen_tokens" in problem.splits,
            dim=int(problem.splits["train"].h_x.shape[-1]), vocab_size=problem.vocab_size,
            n_train=pairs["train"], n_test=tests.pop() if len(tests) == 1 else None,
            n_seen=None, n_unseen=None, meaning_strength=None, token_noise=None, pair_noise=None,
            prompt_similarity=None, init_scale=None)

    def memory_bytes(self) -> float:
        """Peak bytes, roughly: the pairs (three (n, D) arrays per split, a backend copy), the
        unembeddings U_ref, U, its gradient and step (V x D each, per draw), the logits of
        the evaluated pairs (n x V), and u*'s QR (n x D, n x n) in float64."""
        c = self.effective()
        item = 8 if self.dtype == "float64" else 4
        n_all = c.n_train + 2 * (c.n_test or c.n_train)
        per_draw = 6 * n_all * c.dim + 6 * c.vocab_size * c.dim + 4 * n_all * c.vocab_size
        return item * c.n_seeds * per_draw + 8 * (4 * c.n_train * c.dim + 2 * c.n_train ** 2)


def checkpoint_steps(steps: int, k: int) -> list[int]:
    """About k log-spaced steps in [1, steps], always including `steps`."""
    marks = {int(round(v)) for v in np.geomspace(1, steps, num=min(k, steps))}
    return sorted(marks | {steps})


def _to_backend(problem, config):
    """The problem's arrays in the configured backend, dtype and device."""
    if config.backend == "numpy":
        dtype = getattr(np, config.dtype)
        conv = lambda a: np.asarray(a, dtype=dtype if a.dtype.kind == "f" else np.int64)
    else:
        import torch
        dtype = getattr(torch, config.dtype)
        conv = lambda a: torch.as_tensor(a, dtype=dtype if a.dtype.kind == "f" else torch.int64,
                                         device=config.device)
    splits = {name: {k: conv(v) for k, v in dataclasses.asdict(p).items()}
              for name, p in problem.splits.items()}
    return splits, conv(problem.U_ref)


def _im_margins(U, U_ref, pairs, beta):
    """IM-RM margins r(x,y+) - r(x,y-) through the full log-softmax reward, and the tie scale."""
    h = pairs["h_x"][..., None, :]                                  # (S, n, 1, D)
    yp, ym = pairs["y_plus"][..., None], pairs["y_minus"][..., None]
    r_p, s_p = im_rm_reward(U, h, yp, beta=beta, U_ref=U_ref, with_scale=True)
    r_m, s_m = im_rm_reward(U, h, ym, beta=beta, U_ref=U_ref, with_scale=True)
    return r_p, r_m, s_p + s_m


def _ex_margins(u, pairs):
    r_p, r_m = ex_rm_reward(u, pairs["h_plus"]), ex_rm_reward(u, pairs["h_minus"])
    return r_p, r_m, ex_rm_reward_scale(u, pairs["h_plus"]) + ex_rm_reward_scale(u, pairs["h_minus"])


def _metrics(r_p, r_m, scale, ties_count: str = "half"):
    acc, ties = accuracy(r_p - r_m, scale, ties_count)
    return {"accuracy": to_numpy(acc), "tie_fraction": to_numpy(ties),
            "mean_margin": to_numpy(namespace(r_p).mean(r_p - r_m, axis=-1)),
            "normalised_margin": to_numpy(normalised_margin(r_p, r_m))}


def _summary(per_seed: dict) -> dict:
    """Mean over seeds of each metric, and the per-seed values."""
    out = {k: float(np.mean(v)) for k, v in per_seed.items()}
    out["per_seed"] = {k: [float(x) for x in v] for k, v in per_seed.items()}
    return out


def _cos_gap(u, u_star):
    """1 - cos(u, u*) per seed, in float64 (theory.max_margin.direction_gap).  u (S, D) any backend."""
    return direction_gap(to_numpy(u).astype(np.float64), u_star)


def run(config: Config, log=print) -> dict:
    """Train, evaluate and check; returns the results dict written to results.json.
    Threads are chosen by the size of the largest operation, the IM-RM logits (S, n, V, D):
    one for the default problem, so a busy machine does not stall it (theory/threads.py)."""
    size = config.n_seeds * max(config.n_train, config.n_test or 0) * config.vocab_size * config.dim
    if config.backend == "torch":
        import torch  # noqa: F401  before the limit, so that it sets torch's threads too
    with threads.limit(threads.for_work(size)):
        return _run(config, log)


def _run(config: Config, log=print) -> dict:
    if config.representations:
        problem = load_pairs(config.representations, config.dtype)    # validated by Config
    else:
        seeds = range(config.seed, config.seed + config.n_seeds)
        problem = synthetic(seeds=seeds, dim=config.dim, vocab_size=config.vocab_size,
                            n_seen=config.n_seen, n_unseen=config.n_unseen, n_train=config.n_train,
                            n_test=config.n_test, meaning_strength=config.meaning_strength,
                            token_noise=config.token_noise, pair_noise=config.pair_noise,
                            prompt_similarity=config.prompt_similarity, init_scale=config.init_scale)
    # A file's unseen-token split is always evaluated (config.effective sets unseen_tokens).
    splits_used = [s for s in SPLITS if s != "unseen_tokens" or config.unseen_tokens]
    identical = identical_tokens(problem, splits_used)
    im_predicted = im_rm_predictions(problem, splits_used, identical, config.ties)
    data, U_ref = _to_backend(problem, config)
    train = data["train"]
    xp = namespace(U_ref)
    z = train["h_plus"] - train["h_minus"]                          # (S, n, D)
    S = z.shape[0]

    # u* for each seed (the EX-RM's limit direction) and what it predicts on each split.
    try:
        mm = [max_margin(zs) for zs in to_numpy(z).astype(np.float64)]
    except NotSeparableError as exc:
        raise UsageError(f"EX-RM condition of Theorem 2 fails: {exc}") from None
    except SolverError as exc:
        raise cli.RunError(f"cannot compute u*: {exc}") from None
    u_star = np.stack([r.u for r in mm])                           # (S, D)
    u_star_acc = {s: _metrics(*_ex_margins(asarray_like(u_star, z), data[s]), config.ties)["accuracy"]
                  for s in splits_used}

    marks = checkpoint_steps(config.steps, config.checkpoints)
    history = {"steps": [], "ex_rm": {s: [] for s in splits_used}, "im_rm": {s: [] for s in splits_used},
               "one_minus_cosine": [], "one_minus_cosine_constant_step": []}

    def finite_metrics(metrics, t, model, split):
        for key, value in metrics.items():
            check_finite(value, t, model, f"the {key.replace('_', ' ')} on {split}")
        return metrics

    def ex_checkpoint(t, u):
        history["steps"].append(t)
        history["one_minus_cosine"].append(_cos_gap(u, u_star).tolist() if t else [1.0] * S)
        for s in splits_used:
            metrics = finite_metrics(_metrics(*_ex_margins(u, data[s]), config.ties), t, "EX-RM", s)
            history["ex_rm"][s].append(metrics["accuracy"].tolist())

    unseen_margins0 = {}
    max_change = [0.0, 0.0]  # max |m_t - m_0|, and the same in units of the tie tolerance

    def im_checkpoint(t, U):
        for s in splits_used:
            r_p, r_m, scale = _im_margins(U, U_ref, data[s], config.beta)
            metrics = finite_metrics(_metrics(r_p, r_m, scale, config.ties), t, "IM-RM", s)
            history["im_rm"][s].append(metrics["accuracy"].tolist())
            if s == "unseen_tokens":
                margin = to_numpy(r_p - r_m)
                change = np.abs(margin - unseen_margins0.setdefault("m", margin))
                tol = to_numpy(tie_tolerance(r_p.dtype, scale))
                max_change[0] = max(max_change[0], float(np.max(change)))
                max_change[1] = max(max_change[1], float(np.max(change / tol)))

    t0 = time.perf_counter()
    u0 = xp.zeros_like(z[:, 0, :])                                   # r_EX = 0 at init, like r_IM
    try:
        u = train_ex_rm(u0, z, lr=config.lr, steps=config.steps, rule=config.step_rule,
                        checkpoints=marks, on_checkpoint=ex_checkpoint)
        E = token_difference(train["y_plus"], train["y_minus"], problem.vocab_size, z)
        U = train_im_rm(U_ref, train["h_x"], E, beta=config.beta, lr=config.lr, steps=config.steps,
                        rule=config.step_rule, checkpoints=marks, on_checkpoint=im_checkpoint)
        if config.step_rule != "constant":  # the paper's constant-step GD, for the O(1/log t) rate
            train_ex_rm(u0, z, lr=config.lr, steps=config.steps, rule="constant", checkpoints=marks,
                        on_checkpoint=lambda t, v: history["one_minus_cosine_constant_step"].append(
                            _cos_gap(v, u_star).tolist() if t else [1.0] * S))
    except DivergenceError as exc:
        raise UsageError(f"{exc}; lower --lr") from None
    train_seconds = time.perf_counter() - t0

    models = {"ex_rm": {}, "im_rm": {}}
    for s in SPLITS:
        if s not in splits_used:
            models["ex_rm"][s] = models["im_rm"][s] = None
            continue
        models["ex_rm"][s] = _summary(_metrics(*_ex_margins(u, data[s]), config.ties))
        models["im_rm"][s] = _summary(_metrics(*_im_margins(U, U_ref, data[s], config.beta), config.ties))

    gap = _cos_gap(u, u_star)
    unseen_rows = np.setdiff1d(np.arange(problem.vocab_size), problem.seen_tokens)
    rows_moved = float(np.max(np.abs(to_numpy(U)[:, unseen_rows] - to_numpy(U_ref)[:, unseen_rows]))) \
        if unseen_rows.size else 0.0
    results = {
        "config": dataclasses.asdict(config),
        "sizes": {"draws": S, "dim": int(z.shape[-1]), "vocab_size": problem.vocab_size,
                  "source": config.representations or "synthetic",
                  "pairs": {s: int(data[s]["y_plus"].shape[-1]) for s in splits_used},
                  "evaluated": splits_used},
        "conventions": {"ties": config.ties, "normalised_margin": NORMALISED_MARGIN_CONVENTION},
        "models": models,
        "max_margin": {
            "train_accuracy": float(np.mean(u_star_acc["train"])),
            "seen_tokens_accuracy": float(np.mean(u_star_acc["seen_tokens"])),
            "unseen_tokens_accuracy": float(np.mean(u_star_acc["unseen_tokens"])) if config.unseen_tokens else None,
            "margin": float(np.mean([r.margin for r in mm])),
            "per_seed_margin": [r.margin for r in mm],
            "support_vectors": [int(r.support.size) for r in mm],
            "certificate_max": {k: max(r.certificate[k] for r in mm) for k in mm[0].certificate},
            "certificate_worst": max(max(r.certificate.values()) for r in mm),
        },
        "ex_rm_direction": {
            "steps": history["steps"],
            "one_minus_cosine": [float(np.mean(v)) for v in history["one_minus_cosine"]],
            "one_minus_cosine_constant_step": [float(np.mean(v)) for v in history["one_minus_cosine_constant_step"]],
            "final_per_seed": gap.tolist(),
        },
        "history": {"steps": history["steps"],
                    "ex_rm": {s: [float(np.mean(a)) for a in v] for s, v in history["ex_rm"].items()},
                    "im_rm": {s: [float(np.mean(a)) for a in v] for s, v in history["im_rm"].items()}},
        "im_rm_unseen_max_abs_margin_change": max_change[0] if config.unseen_tokens else None,
        "im_rm_unseen_margin_change_over_tie_tolerance": max_change[1] if config.unseen_tokens else None,
        "im_rm_unseen_rows_max_abs_change": rows_moved,
        "im_rm_predicted": im_predicted,
    }
    results["checks"] = checks(results, u_star_acc, u, u_star, data, config,
                               per_seed_gap=np.asarray(history["one_minus_cosine"], float))
    log_table(results, log)
    results["_run"] = {"train_seconds": train_seconds}
    results["_arrays"] = {"u_star": u_star, "alpha": np.stack([r.alpha for r in mm]),
                          "u_final": to_numpy(u).astype(np.float64)}
    return results


def identical_tokens(problem, splits) -> dict:
    """Per split, the fraction of pairs with y+ = y-: E = e_y+ - e_y- = 0, so the IM-RM margin
    of such a pair is 0 at every step (a tie) and a training pair of this kind teaches IM-RM
    nothing. Only a representation file can hold them; each split that does gets a warning."""
    out, counts = {}, []
    for s in splits:
        same = problem.splits[s].y_plus == problem.splits[s].y_minus     # (S, n)
        out[s] = float(np.mean(same))
        if same.any():
            counts.append(f"{s} {int(same.sum())} of {same.size}")
    if counts:
        warn(f"pairs with y_chosen == y_rejected ({', '.join(counts)}): their IM-RM margin is 0 at every step "
             f"(e_y+ - e_y- = 0), so IM-RM ties them, and the predictions count them as ties")
    return out


def im_rm_predictions(problem, splits, identical: dict, ties: str) -> dict:
    """What the IM-RM is predicted to score on each split, as numbers.
      * train: -> 1 as steps grow (single-token margins are linear in U; the pairs are taken to
        be separable there), except pairs with y+ = y-, which tie forever.
      * every split, after step 1 (Eq. 5): at U_ref every margin is 0, so every training pair
        weighs the same and an evaluated pair's margin moves by (eta / n) sum_j K_ij, with
        K_ij = <E_i, E_j> <h_x_i, h_x_j> (sims/training.py). Its sign is IM-RM's first ranking:
        how a pair's reward moves with the prompts' similarity <h_xbar, h_x>. A pair whose tokens
        no training pair uses gets exactly 0, a tie (Theorem 2's unseen tokens)."""
    tie = TIES[ties]
    train = problem.splits["train"]
    # sum_j K_ij = <M[y+_i] - M[y-_i], h_x_i> with M = sum_j E_j h_x_j^T, the first step's direction
    S, V, D = train.h_x.shape[0], problem.vocab_size, train.h_x.shape[-1]
    M, M_abs = np.zeros((S, V, D)), np.zeros((S, V, D))
    for k in range(S):
        h = np.asarray(train.h_x[k], np.float64)
        for ids, sign in ((train.y_plus[k], 1.0), (train.y_minus[k], -1.0)):
            np.add.at(M[k], ids, sign * h)
            np.add.at(M_abs[k], ids, np.abs(h))
    first = {}
    for s in splits:
        p = problem.splits[s]
        h = np.asarray(p.h_x, np.float64)                              # (S, n, D)
        rows = lambda A, ids: np.take_along_axis(A, ids[..., None].astype(np.int64), axis=1)
        drift = np.sum((rows(M, p.y_plus) - rows(M, p.y_minus)) * h, axis=-1)              # (S, n)
        scale = np.sum((rows(M_abs, p.y_plus) + rows(M_abs, p.y_minus)) * np.abs(h), axis=-1)
        first[s] = float(np.mean(accuracy(drift, scale, ties)[0]))
    same = identical["train"]
    return {"train_limit": tie if same == 1.0 else (1 - same) + same * tie,
            "first_step": first, "identical_tokens": identical}


def direction_mode(config) -> str:
    """limit or rate: auto tests the limit under loss-normalised steps, the rate under the
    constant step (whose O(1/log t) convergence reaches no small tolerance in feasible steps)."""
    if config.direction_check != "auto":
        return config.direction_check
    return "rate" if config.step_rule == "constant" else "limit"


def checks(results, u_star_acc, u, u_star, data, config, per_seed_gap=None) -> list[dict]:
    """Theorem 2's predictions next to what was measured; `tolerance` says what a PASS needed.
    per_seed_gap (checkpoints, S): 1 - cos(u_t, u*) at each checkpoint (for the rate check)."""
    out = []
    ex, im = results["models"]["ex_rm"], results["models"]["im_rm"]
    gap = float(np.max(results["ex_rm_direction"]["final_per_seed"]))
    if direction_mode(config) == "rate":
        direction = rate_check(results["ex_rm_direction"], per_seed_gap, config)
    else:
        direction = {"claim": "EX-RM converges in direction to the hard-margin separator u* (max over seeds of 1 - cos(u_T, u*))",
                     "predicted": f"-> 0 (PASS if <= {config.direction_tol:g})", "measured": gap,
                     "passed": gap <= config.direction_tol, "tolerance": f"measured <= {config.direction_tol:g}"}
        if not direction["passed"]:
            direction["hint"] = steps_hint(results["ex_rm_direction"]["steps"], per_seed_gap, config)
    out.append(direction)
    out.append({"claim": "EX-RM fits the training pairs (u* separates them)", "predicted": 1.0,
                "measured": ex["train"]["accuracy"], "passed": ex["train"]["accuracy"] == 1.0,
                "tolerance": "measured == 1 exactly"})
    if not config.unseen_tokens:
        return out + [certificate_check(results)]
    # EX-RM ranks unseen pairs as u* does: exact except pairs that u*'s direction error cannot decide.
    pairs = data["unseen_tokens"]
    zu = to_numpy(pairs["h_plus"] - pairs["h_minus"]).astype(np.float64)
    delta = np.sqrt(2 * np.maximum(results["ex_rm_direction"]["final_per_seed"], 0))[:, None]
    unit = u_star / np.linalg.norm(u_star, axis=-1, keepdims=True)
    # pairs whose margin under u*'s direction is within u_T's angular error of zero
    undecided = float(np.mean(np.abs(ex_rm_reward(unit, zu)) <= delta * np.linalg.norm(zu, axis=-1)))
    measured, predicted = ex["unseen_tokens"]["accuracy"], float(np.mean(u_star_acc["unseen_tokens"]))
    out.append({"claim": "EX-RM accuracy on unseen tokens equals u*'s",
                "predicted": predicted, "measured": measured,
                "passed": abs(measured - predicted) <= undecided + 1e-12,
                "tolerance": f"|measured - predicted| <= {undecided:.3g} + 1e-12, the share of pairs that u_T's "
                             f"direction error cannot decide"})
    acc, ties = im["unseen_tokens"]["accuracy"], im["unseen_tokens"]["tie_fraction"]
    tie_value = TIES[config.ties]
    out.append({"claim": f"IM-RM accuracy on unseen tokens is exactly {tie_value:g} (every pair a tie, ties count {config.ties})",
                "predicted": f"accuracy {tie_value:g}, tie fraction 1.0", "measured": f"accuracy {acc:g}, tie fraction {ties:g}",
                "passed": acc == tie_value and ties == 1.0, "tolerance": "exact equality"})
    change, rows = results["im_rm_unseen_max_abs_margin_change"], results["im_rm_unseen_rows_max_abs_change"]
    out.append({"claim": "IM-RM margins of unseen pairs never move (max |change| over the checkpoints)",
                "predicted": "0 (to rounding: within the tie tolerance)", "measured": change,
                "passed": results["im_rm_unseen_margin_change_over_tie_tolerance"] <= 1.0,
                "tolerance": f"every |change| <= the tie tolerance {TIE_ULPS:g} eps x the margin's scale; largest "
                             f"ratio {results['im_rm_unseen_margin_change_over_tie_tolerance']:.2g}"})
    out.append({"claim": "IM-RM unembedding rows of unseen tokens never move (max |U_T - U_0|)",
                "predicted": 0.0, "measured": rows, "passed": rows == 0.0, "tolerance": "measured == 0 exactly"})
    return out + [certificate_check(results)]


def rate_window(steps: int, checkpoints: int) -> list[int]:
    """The checkpoints the rate check compares: those of the last decade of steps [T/10, T]."""
    return [t for t in checkpoint_steps(steps, checkpoints) if t >= max(1.0, steps / 10)]


def rate_check(direction: dict, per_seed_gap, config) -> dict:
    """The direction check of the rate: per seed, 1 - cos(u_t, u*) falls at every checkpoint of
    the last decade of steps [T/10, T] (Config.validate makes sure it holds two). Under the
    paper's constant step the direction converges at O(1/log t) (Soudry et al. 2018): 2000 steps
    bring 1 - cos from about 0.06 to 0.035 on the default problem, and 1e-3 would take some
    10^100 steps, so the limit is out of reach but the fall is not; there the printed prediction
    is the c / log t envelope through the decade's first checkpoint, an estimate (the iterates
    are still far from the asymptotic regime). Under loss-normalised steps the fall is a power
    law in t, and the check tests the same fall."""
    steps = np.asarray(direction["steps"])
    keep = steps >= max(1.0, config.steps / 10)
    t, g = steps[keep], per_seed_gap[keep]                                 # (k,), (k, S)
    t0, T = int(t[0]), int(t[-1])
    rise = float(np.max(np.diff(g, axis=0))) if t.size >= 2 else 0.0
    if config.step_rule == "constant":
        how = "under the constant step, slowly (O(1/log t))"
        envelope = f"; c / log t through step {t0} gives about {np.max(g[0]) * np.log(t0) / np.log(T):.3g} at step {T}" \
            if t0 > 1 and T > t0 else ""
    else:
        how, envelope = "under loss-normalised steps", ""
    return {"claim": f"EX-RM approaches the hard-margin separator u* {how}: 1 - cos(u_t, u*) falls at every "
                     f"checkpoint of steps {t0}..{T}, every seed",
            "predicted": f"falls{envelope}", "measured": float(np.max(g[-1])), "largest_rise": rise,
            "passed": bool(t.size >= 2 and rise <= 1e-12 and np.all(g[-1] < g[0])),
            "tolerance": f"no rise above 1e-12 between checkpoints {t0}..{T} and lower at {T} than at {t0}",
            "expected": steps_hint(direction["steps"], per_seed_gap, config)}


def _round_up(x: float) -> int:
    """x rounded up to two significant digits (237.2 -> 240, 12345 -> 13000): a step count to
    suggest, not to be read to the last digit."""
    unit = 10 ** max(0, int(math.floor(math.log10(x))) - 1)
    return int(math.ceil(x / unit) * unit)


def steps_hint(steps, per_seed_gap, config) -> str:
    """How many steps the direction would need to reach --direction-tol, extrapolated from the
    worst seed's rate (the checks measure the worst seed): a power law in t under
    loss-normalised steps (fitted to the last checkpoints), and c / log t under the paper's
    constant step (Soudry et al. 2018), whose need is astronomical. No extrapolation from fewer
    than three checkpoints or under ten steps: the first steps are far from the asymptotic
    regime (two steps fit t^-0.05 and would ask for 10^33 steps).
    steps (k,) checkpoint steps from 0; per_seed_gap (k, S) 1 - cos(u_t, u*) there."""
    t = np.asarray(steps[1:], float)
    gap = np.max(np.asarray(per_seed_gap, float)[1:], axis=-1)
    ok = (t > 0) & (gap > 0)
    t, gap = t[ok], gap[ok]
    tol = config.direction_tol
    if not t.size:
        return f"1 - cos(u_t, u*) is 0 at every checkpoint: it meets --direction-tol {tol:g}"
    T = int(t[-1])
    if gap[-1] <= tol:
        return f"1 - cos is already {gap[-1]:.3g} at step {T}, within --direction-tol {tol:g}"
    if config.step_rule == "constant":
        # 1 - cos ~ c / log t: reaching tol takes log t = log(t_T) * gap_T / tol
        exponent = np.log10(np.e) * np.log(t[-1]) * gap[-1] / tol
        return (f"under the constant step the direction converges at O(1/log t): 1 - cos ~ c / log t with c = "
                f"{gap[-1] * np.log(t[-1]):.3g}, so reaching {tol:g} takes about 10^{exponent:.0f} "
                f"steps; " + ("the limit check (--direction-check limit) cannot pass in feasible steps; the "
                              "default loss-normalised steps reach the limit" if direction_mode(config) == "rate" else
                              "run the default loss-normalised steps to check the limit, or --direction-check rate "
                              "to test the fall"))
    if t.size < 3 or T < 10:
        return (f"1 - cos fell from 1 at step 0 to {gap[-1]:.3g} at step {T}: too few steps to extrapolate a rate "
                f"to {tol:g}; raise --steps")
    t, gap = t[-6:], gap[-6:]
    if not gap[-1] < gap[0]:
        return (f"1 - cos did not fall over steps {int(t[0])}..{T} (it is {gap[-1]:.3g}): the direction is not "
                f"converging at this --lr")
    slope = np.polyfit(np.log(t), np.log(gap), 1)[0]                   # gap ~ t^slope
    if slope > -0.01:
        return (f"1 - cos has barely moved over steps {int(t[0])}..{T} (t^{slope:.2g}, at {gap[-1]:.3g}): the "
                f"steps are too small to converge; raise --lr")
    log_need = math.log10(t[-1]) + math.log10(tol / gap[-1]) / slope   # in logs: no overflow
    if log_need > 9:
        return (f"1 - cos was falling as t^{slope:.2f}, too slowly: reaching {tol:g} would take about "
                f"10^{log_need:.0f} steps")
    return f"1 - cos was still falling as t^{slope:.2f}: about --steps {_round_up(10 ** log_need)} would reach {tol:g}"


def certificate_check(results) -> dict:
    worst = results["max_margin"]["certificate_worst"]
    return {"claim": "u* is certified: worst KKT residual or duality gap over seeds",
            "predicted": "<= 1e-9", "measured": worst, "passed": worst <= 1e-9, "tolerance": "measured <= 1e-9"}


def log_table(results, log):
    cfg, sz = results["config"], results["sizes"]
    what = (f"seeds {cfg['seed']}..{cfg['seed'] + cfg['n_seeds'] - 1}" if sz["source"] == "synthetic"
            else f"representations {sz['source']} (1 draw)")
    pairs = ", ".join(f"{k} {v}" for k, v in sz["pairs"].items())
    log(f"Theorem 2 replay  ({what}, D={sz['dim']}, |V|={sz['vocab_size']}, pairs: {pairs}, "
        f"steps={cfg['steps']}, rule={cfg['step_rule']}, backend={cfg['backend']}, ties count {cfg['ties']})")
    skipped = [x for x in SPLITS if x not in sz["evaluated"]]
    if skipped:
        why = "the file has no such split" if sz["source"] != "synthetic" else "pass --unseen-tokens"
        log(f"evaluated: {', '.join(sz['evaluated'])}; not evaluated: {', '.join(skipped)} ({why})")
    mm, im = results["max_margin"], results["im_rm_predicted"]
    tie, same = TIES[cfg["ties"]], im["identical_tokens"]
    if same["train"] == 1.0:
        im_train = f"{tie:.3f}, all ties (every y+ = y-: U never moves)"
    elif same["train"]:
        im_train = f"-> {im['train_limit']:.3f} (separable; the y+ = y- pairs tie)"
    else:
        im_train = "-> 1 as steps grow (separable)"
    first = im["first_step"]
    predictions = {("ex_rm", "train"): "1 (u* separates)",
                   ("ex_rm", "seen_tokens"): f"u*: {mm['seen_tokens_accuracy']:.3f}",
                   ("ex_rm", "unseen_tokens"): f"u*: {mm['unseen_tokens_accuracy']:.3f}" if mm["unseen_tokens_accuracy"] is not None else "",
                   ("im_rm", "train"): im_train,
                   ("im_rm", "seen_tokens"): (f"{tie:.3f}, all ties (U never moves)" if same["train"] == 1.0 else
                                              f"step 1 (Eq. 5): {first['seen_tokens']:.3f}, then moves with <h_xbar, h_x>"),
                   # every pair a tie, counted as the run's convention counts a tie
                   ("im_rm", "unseen_tokens"): f"{tie:.3f}, all ties"}
    log(f"{'model':6} {'split':14} {'accuracy':>8} {'ties':>6} {'mean margin':>12} {'norm. margin':>12}   Theorem 2 predicts")
    for model, name in (("ex_rm", "EX-RM"), ("im_rm", "IM-RM")):
        for s, m in results["models"][model].items():
            if m is None:
                continue
            log(f"{name:6} {s:14} {m['accuracy']:8.3f} {m['tie_fraction']:6.3f} {m['mean_margin']:12.4g} "
                f"{m['normalised_margin']:12.4g}   {predictions[(model, s)]}")
    log("checks:")
    for c in results["checks"]:
        predicted = c["predicted"].split(" (PASS if")[0] if isinstance(c["predicted"], str) else c["predicted"]
        log(f"  {'PASS' if c['passed'] else 'FAIL'} ({c['tolerance']})  {c['claim']}: predicted {_fmt(predicted)}, "
            f"measured {_fmt(c['measured'])}")
        for key in ("expected", "hint"):
            if c.get(key):
                log(f"         {key}: {c[key]}")


def _fmt(value) -> str:
    """A number at 4 significant digits for the screen (results.json keeps full precision)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv=None) -> int:
    return cli.simulation_main("theorem2", Config, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
