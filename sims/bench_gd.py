"""Benchmark: closed-form batched GD (sims/training.py) vs a naive autograd loop.

    python -m sims.bench_gd [--steps 200] [--repeats 5]  (results in a new runs/ folder)

Same problem (the default sims.theorem2 configuration), same constant-step GD, same
float64 arithmetic. The naive loop is what one would write first: per seed, rewards through
the full log-softmax, `loss.backward()`, a parameter update. The closed form trains all seeds
in one batched computation and drops the softmax, which cancels for single-token pairs.
Reports seed-steps per second (median of repeats) for each and their ratio, and checks that
both end at the same parameters.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass

import torch

from sims import cli
from sims.cli import field, positive
from sims.representations import synthetic
from sims.theorem2 import Config
from sims.training import train_ex_rm, train_im_rm
from theory import threads
from theory.gradients import token_difference
from theory.rewards import bt_loss, ex_rm_reward, im_rm_reward


def problem(config: Config):
    p = synthetic(seeds=range(config.seed, config.seed + config.n_seeds), dim=config.dim,
                  vocab_size=config.vocab_size, n_seen=config.n_seen, n_unseen=config.n_unseen,
                  n_train=config.n_train, n_test=config.n_test, meaning_strength=config.meaning_strength,
                  token_noise=config.token_noise, pair_noise=config.pair_noise,
                  prompt_similarity=config.prompt_similarity, init_scale=config.init_scale)
    t = p.splits["train"]
    as_t = lambda a: torch.as_tensor(a)
    return as_t(t.h_x), as_t(t.h_plus - t.h_minus), as_t(t.h_plus), as_t(t.h_minus), \
        as_t(t.y_plus), as_t(t.y_minus), as_t(p.U_ref), p.vocab_size


def closed_form(data, config, steps):
    hx, z, _, _, yp, ym, U_ref, V = data
    u = train_ex_rm(torch.zeros_like(z[:, 0]), z, lr=config.lr, steps=steps, rule="constant")
    E = token_difference(yp, ym, V, hx)
    U = train_im_rm(U_ref, hx, E, beta=config.beta, lr=config.lr, steps=steps, rule="constant")
    return u, U


def naive_autograd(data, config, steps):
    hx, _, hp, hm, yp, ym, U_ref, _ = data
    us, Us = [], []
    for s in range(hx.shape[0]):
        u = torch.zeros(hp.shape[-1], dtype=hp.dtype, requires_grad=True)
        U = U_ref[s].clone().requires_grad_(True)
        h = hx[s][:, None, :]
        for _ in range(steps):
            loss = bt_loss(ex_rm_reward(u, hp[s]), ex_rm_reward(u, hm[s]))
            (g,) = torch.autograd.grad(loss, u)
            with torch.no_grad():
                u -= config.lr * g
            loss = bt_loss(im_rm_reward(U, h, yp[s][:, None], beta=config.beta, U_ref=U_ref[s]),
                           im_rm_reward(U, h, ym[s][:, None], beta=config.beta, U_ref=U_ref[s]))
            (G,) = torch.autograd.grad(loss, U)
            with torch.no_grad():
                U -= (config.lr / config.beta**2) * G
        us.append(u.detach())
        Us.append(U.detach())
    return torch.stack(us), torch.stack(Us)


@dataclass(frozen=True)
class BenchConfig:
    steps: int = field(200, "constant-size GD steps of EX-RM and IM-RM per timed run", positive, "must be > 0")
    repeats: int = field(5, "timed runs of each method (the median is reported)", positive, "must be > 0")


def run(config: BenchConfig, log=print) -> dict:
    """Threads chosen by problem size, as sims.theorem2 does (theory/threads.py)."""
    c = Config()
    with threads.limit(threads.for_work(c.n_seeds * max(c.n_train, c.n_test) * c.vocab_size * c.dim)):
        return _run(config, log)


def _run(config: BenchConfig, log=print) -> dict:
    problem_config = Config()
    data = problem(problem_config)
    S = problem_config.n_seeds
    times = {"closed_form": [], "naive_autograd": []}
    params = {}
    for _ in range(config.repeats):
        for name, fn in (("closed_form", closed_form), ("naive_autograd", naive_autograd)):
            t0 = time.perf_counter()
            params[name] = fn(data, problem_config, config.steps)
            times[name].append(time.perf_counter() - t0)
    agreement = max(float((a - b).abs().max() / b.abs().max())
                    for a, b in zip(params["closed_form"], params["naive_autograd"]))
    rate = {k: S * config.steps / statistics.median(v) for k, v in times.items()}
    speedup = rate["closed_form"] / rate["naive_autograd"]
    log(f"problem: {S} seeds, n={problem_config.n_train}, D={problem_config.dim}, |V|={problem_config.vocab_size}, "
        f"{config.steps} steps of EX-RM + IM-RM, float64, torch {torch.__version__} on "
        f"{torch.get_num_threads()} threads; median of {config.repeats}")
    for k in times:
        log(f"  {k:15} {rate[k]:10.0f} seed-steps/s   (median {statistics.median(times[k]):.3f} s)")
    log(f"  speed-up {speedup:.1f}x  (final parameters agree to {agreement:.1e} relative)")
    checks = [{"claim": "closed-form batched GD ends at the same parameters as the naive autograd loop",
               "predicted": "relative difference < 1e-9", "measured": agreement, "passed": agreement < 1e-9}]
    return {"config": dataclasses.asdict(config), "problem": dataclasses.asdict(problem_config),
            "seed_steps_per_second": rate, "median_seconds": {k: statistics.median(v) for k, v in times.items()},
            "speedup": speedup, "agreement": agreement, "threads": torch.get_num_threads(), "checks": checks}


def main(argv=None) -> int:
    return cli.simulation_main("bench_gd", BenchConfig, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
