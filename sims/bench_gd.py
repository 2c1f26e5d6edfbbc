"""Benchmark: closed-form batched GD (sims/training.py) vs a naive autograd loop.

    python -m sims.bench_gd [--steps 200] [--repeats 5]

Same problem (the default sims.theorem2 configuration), same constant-step GD, same
float64 arithmetic. The naive loop is what one would write first: per seed, rewards through
the full log-softmax, `loss.backward()`, a parameter update. The closed form trains all seeds
in one batched computation and drops the softmax, which cancels for single-token pairs.
Reports seed-steps per second (median of repeats) for each and their ratio, and checks that
both end at the same parameters.
"""
from __future__ import annotations

import statistics
import time

import torch

from sims import cli
from sims.representations import synthetic
from sims.theorem2 import Config
from sims.training import train_ex_rm, train_im_rm
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


def main(argv=None) -> int:
    return cli.run_cli(_main, argv)


def _main(argv) -> int:
    ap = cli.Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if args.steps <= 0 or args.repeats <= 0:
        raise cli.UsageError("--steps and --repeats must be > 0")
    config = Config()
    data = problem(config)
    S = config.n_seeds
    times = {"closed_form": [], "naive_autograd": []}
    for _ in range(args.repeats):
        for name, fn in (("closed_form", closed_form), ("naive_autograd", naive_autograd)):
            t0 = time.perf_counter()
            params = fn(data, config, args.steps)
            times[name].append(time.perf_counter() - t0)
            if name == "closed_form":
                ours = params
            else:
                ref = params
    for a, b, what in zip(ours, ref, ("u", "U")):
        err = float((a - b).abs().max() / b.abs().max())
        if not err < 1e-9:
            print(f"error: closed form and autograd disagree on {what} (relative {err:.2e})")
            return 1
    rate = {k: S * args.steps / statistics.median(v) for k, v in times.items()}
    print(f"problem: {S} seeds, n={config.n_train}, D={config.dim}, |V|={config.vocab_size}, "
          f"{args.steps} steps of EX-RM + IM-RM, float64, torch {torch.__version__} on "
          f"{torch.get_num_threads()} threads; median of {args.repeats}")
    for k in times:
        print(f"  {k:15} {rate[k]:10.0f} seed-steps/s   (median {statistics.median(times[k]):.3f} s)")
    print(f"  speed-up {rate['closed_form'] / rate['naive_autograd']:.1f}x  "
          f"(final parameters agree to {err:.1e} relative)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
