"""Benchmark: Eq. 5 (theory/dynamics.py) against the best autograd a careful user writes.

    python -m sims.bench_eq5 [--sizes pythia1b,llama3] [--ab 8,64,256] [--device cuda] ...

float32, `--tokens`-long responses (64), A evaluation sequences and B training pairs (A = B), the
reference given as its own log-probability margins (a reference model with its own body).
Two jobs, each timed against its peer in the same run, on the same inputs:

  mini-batch change (A,)   ours: delta_r_im (route "auto")
                           peer: one backward of the mini-batch loss for grad_U L, then one
                                 torch.func.jvp of the evaluation rewards along -eta grad_U L
                                 (micro-batched so the saved activations fit the budget)
  per-example matrix (A,B) ours: reward_change_matrix_im (route "auto", streamed in blocks)
                           peer: torch.func.vmap(torch.func.grad) per-sample gradients of every
                                 evaluation reward and every pair's loss, and their Gram (in
                                 chunks of as many |V| x D gradients as fit the budget;
                                 evaluation gradients are recomputed per training chunk when
                                 not all fit)
  logits                   the product of every position with U, timed to price the floor

The floor of a job is the unavoidable logits product plus the cheaper route's contraction,
in multiply-adds (theory.dynamics.kernel_cost); `floor_s` prices it at the speed the logits
product ran, and `ratio_to_floor` = time / floor_s. Each (case, method) runs in its own
process after one warm-up call; times are medians of --repeats; peak memory is the process's
peak resident memory (CPU) or torch.cuda.max_memory_allocated (CUDA) above the inputs.
The default (Pythia-1B width, A = B = 8) takes a few minutes on 2 CPU cores; the larger cases
are for a GPU (`--device cuda --budget-gib 40`). Timings on a shared machine are noisy: the
load average before and after is recorded beside them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from sims import cli
from sims import inputs
from sims.cli import field

SIZES = {"pythia1b": (50304, 2048), "llama3": (128256, 4096), "tiny": (512, 32)}   # tiny: smoke tests
METHODS = ("logits", "ours_batch", "peer_batch", "ours_matrix", "peer_matrix")
BETA, ETA = 0.1, 1.0


def _csv(kind):
    def parse(text: str):
        return [kind(t) for t in str(text).split(",") if t.strip()]
    return parse


@dataclass(frozen=True)
class Config:
    sizes: str = field("pythia1b", "comma list of vocabulary/width presets: pythia1b (50304, 2048), llama3 (128256, 4096)",
                       lambda s: bool(s) and all(t in SIZES for t in _csv(str)(s)), f"must be a comma list of {sorted(SIZES)}")
    ab: str = field("8", "comma list of A = B (evaluation sequences = training pairs), e.g. 8,64,256",
                    lambda s: _ok_ints(s), "must be a comma list of positive integers")
    tokens: int = field(64, "tokens per response (every sequence)", inputs.POSITIVE)
    repeats: int = field(3, "timed calls per method after one warm-up (the median is reported)", inputs.POSITIVE)
    device: str = field("cpu", "torch device: cpu or cuda[:N]; must exist on this machine")
    budget_gib: float = field(8.0, "memory for streamed temporaries (ours: max_bytes; the peers: micro-batches and "
                              "per-sample-gradient chunks), GiB", inputs.POSITIVE_FINITE)
    seed: int = field(0, "seed of the random inputs", inputs.SEED)
    isolate: bool = field(True, "run each method in its own process, so its peak memory is its own "
                          "(--no-isolate: all in this process, peak memory not measured; for smoke tests)")

    def validate(self):
        inputs.check_device(self.device)

    def memory_bytes(self) -> float:
        """float32 bytes of the largest case: U and its gradient (V x D), the hidden states of
        A + 2B sequences, their logits, and the streaming budget."""
        V, D = max((SIZES[s] for s in _csv(str)(self.sizes)), key=lambda vd: vd[0] * vd[1])
        AB = max(_csv(int)(self.ab))
        return 4 * (3 * V * D + 3 * AB * self.tokens * (D + 2 * V)) + self.budget_gib * 2**30


def _ok_ints(s) -> bool:
    try:
        return bool(_csv(int)(s)) and all(v > 0 for v in _csv(int)(s))
    except ValueError:
        return False


# ---------------------------------------------------------------- one (case, method) in a process

def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _inputs(V, D, K, A, B, device, seed):
    import torch
    from theory.sequences import full
    g = torch.Generator(device=device).manual_seed(seed)
    U = torch.randn(V, D, generator=g, device=device).div_(D**0.5)       # logits ~ N(0, 1)
    mk = lambda n: full(torch.randn(n, K, D, generator=g, device=device), torch.randint(0, V, (n, K), generator=g, device=device))
    ev, plus, minus = mk(A), mk(B), mk(B)
    ref_margins = torch.randn(B, generator=g, device=device)
    return U, ev, plus, minus, ref_margins


def _seq_log_prob(U, h, y):
    """sum_k ln pi(y_k | .) of one sequence, through the full log-softmax.  h (K, D), y (K,)."""
    import torch
    return torch.log_softmax(h @ U.T, dim=-1).gather(-1, y[:, None]).sum()


def peer_batch(U, ev, plus, minus, ref_margins, chunk):
    """One backward for grad_U L (micro-batches of `chunk` pairs, summed), one jvp per chunk
    of evaluation sequences: eta <grad r_a, -grad L> = jvp of r along -eta grad L."""
    import torch
    B = plus.h.shape[0]
    lp = lambda U, s: torch.log_softmax(s.h @ U.T, dim=-1).gather(-1, s.y[..., None])[..., 0].sum(-1)
    Ug = U.detach().requires_grad_(True)
    grad_L = torch.zeros_like(U)
    for b0 in range(0, B, chunk):
        p, m = (type(s)(*(t[b0:b0 + chunk] for t in s)) for s in (plus, minus))
        margin = BETA * (lp(Ug, p) - lp(Ug, m)) - BETA * ref_margins[b0:b0 + chunk]
        loss = torch.nn.functional.softplus(-margin).sum() / B
        grad_L += torch.autograd.grad(loss, Ug)[0]
    out = []
    for a0 in range(0, ev.h.shape[0], chunk):
        e = type(ev)(*(t[a0:a0 + chunk] for t in ev))
        out.append(torch.func.jvp(lambda W: BETA * lp(W, e), (U,), (-ETA * grad_L,))[1])
    return torch.cat(out)


def peer_matrix(U, ev, plus, minus, ref_margins, n_grads):
    """vmap(grad) per-sample gradients and their Gram; at most n_grads |V| x D gradients live."""
    import torch
    from torch.func import grad, vmap
    reward_grads = vmap(grad(lambda U, h, y: BETA * _seq_log_prob(U, h, y)), in_dims=(None, 0, 0))
    pair_loss = lambda U, hp, yp, hm, ym, r: torch.nn.functional.softplus(
        -(BETA * (_seq_log_prob(U, hp, yp) - _seq_log_prob(U, hm, ym)) - BETA * r))
    loss_grads = vmap(grad(pair_loss), in_dims=(None, 0, 0, 0, 0, 0))
    A, B = ev.h.shape[0], plus.h.shape[0]
    if A + B <= n_grads:
        ca, cb = A, B
    else:
        cb = max(1, min(B, n_grads // 2))
        ca = max(1, min(A, n_grads - cb))
    M = torch.empty(A, B, device=U.device, dtype=U.dtype)
    G_eval = None
    for b0 in range(0, B, cb):
        sl = slice(b0, b0 + cb)
        G_train = loss_grads(U, plus.h[sl], plus.y[sl], minus.h[sl], minus.y[sl], ref_margins[sl]).reshape(-1, U.numel())
        for a0 in range(0, A, ca):
            if G_eval is None or ca < A:
                G_eval = reward_grads(U, ev.h[a0:a0 + ca], ev.y[a0:a0 + ca]).reshape(-1, U.numel())
            M[a0:a0 + ca, sl] = -ETA * (G_eval @ G_train.T)
        del G_train
    return M


def worker(method: str, V: int, D: int, K: int, A: int, B: int, repeats: int, device: str,
           budget: int, seed: int) -> dict:
    import torch
    from theory.dynamics import delta_r_im, reward_change_matrix_im
    torch.manual_seed(seed)
    torch.set_grad_enabled(method.startswith("peer"))
    U, ev, plus, minus, rm = _inputs(V, D, K, A, B, device, seed)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    itemsize = 4
    chunk = max(1, budget // (4 * 2 * K * V * itemsize))               # sequences per micro-batch
    n_grads = max(2, budget // (V * D * itemsize))
    kw = dict(beta=BETA, eta=ETA, ref_margins=rm, max_bytes=budget)
    fn = {"logits": lambda: _logits(U, (ev, plus, minus), budget),
          "ours_batch": lambda: delta_r_im(U, ev, plus, minus, **kw),
          "peer_batch": lambda: peer_batch(U, ev, plus, minus, rm, chunk),
          "ours_matrix": lambda: reward_change_matrix_im(U, ev, plus, minus, **kw),
          "peer_matrix": lambda: peer_matrix(U, ev, plus, minus, rm, n_grads)}[method]
    sync()
    base = torch.cuda.memory_allocated() if cuda else _rss_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out, times = fn(), []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    value = None if method == "logits" else out.detach().double().cpu().reshape(-1).tolist()
    torch.set_grad_enabled(True)
    return {"median_s": statistics.median(times), "times_s": times, "peak_extra_bytes": max(0, peak - base),
            "value": value}


def _logits(U, seqs, budget):
    """Every position times U, in row blocks that fit the budget (the floor's product)."""
    import torch
    H = torch.cat([s.h.reshape(-1, U.shape[1]) for s in seqs])
    rows = max(1, budget // (U.shape[0] * 4))
    last = None
    for r0 in range(0, H.shape[0], rows):
        last = H[r0:r0 + rows] @ U.T
    return last


def _worker_main() -> None:
    args = json.loads(sys.argv[1])
    print(json.dumps(worker(**args)))


# ---------------------------------------------------------------- the run

def _load() -> list:
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


def _case(V, D, K, AB, config, log) -> dict:
    from theory.dynamics import kernel_cost
    A = B = AB
    res = {}
    for method in METHODS:
        args = dict(method=method, V=V, D=D, K=K, A=A, B=B, repeats=config.repeats, device=config.device,
                    budget=int(config.budget_gib * 2**30), seed=config.seed)
        if not config.isolate:
            res[method] = worker(**args)
            res[method]["peak_extra_bytes"] = 0
            continue
        cmd = [sys.executable, "-c", "from sims.bench_eq5 import _worker_main; _worker_main()", json.dumps(args)]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
            res[method] = {"skipped": f"worker failed: {tail}"}
            log(f"    {method:12} skipped: {tail}")
            continue
        res[method] = json.loads(done.stdout.strip().splitlines()[-1])
        log(f"    {method:12} {res[method]['median_s']:9.3f} s   peak {res[method]['peak_extra_bytes'] / 2**30:7.3f} GiB")
    logits_madds = (A * K + 2 * B * K) * V * D
    cost = kernel_cost(A, K, 2 * B, K, V, D, paired=True)
    floor = {"batch": logits_madds + min(cost["rho"], (A * K + 2 * B * K) * V * D),
             "matrix": logits_madds + min(cost.values())}
    out = {"V": V, "D": D, "K": K, "A": A, "B": B, "logits_madds": logits_madds, "floor_madds": floor,
           "methods": res}
    if "median_s" in res["logits"]:
        rate = logits_madds / res["logits"]["median_s"]
        out["floor_s"] = {job: floor[job] / rate for job in floor}
    for job in ("batch", "matrix"):
        ours, peer = res[f"ours_{job}"], res[f"peer_{job}"]
        if "median_s" not in ours or "median_s" not in peer:
            continue
        import numpy as np
        a, b = np.asarray(ours["value"]), np.asarray(peer["value"])
        out[job] = {"ours_s": ours["median_s"], "peer_s": peer["median_s"],
                    "ours_over_peer": ours["median_s"] / peer["median_s"],
                    "ours_peak_gib": ours["peak_extra_bytes"] / 2**30, "peer_peak_gib": peer["peak_extra_bytes"] / 2**30,
                    "difference_normwise": float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))}
        if "floor_s" in out:
            out[job]["ours_ratio_to_floor"] = ours["median_s"] / out["floor_s"][job]
            out[job]["peer_ratio_to_floor"] = peer["median_s"] / out["floor_s"][job]
    for r in res.values():
        r.pop("value", None)
    return out


def run(config: Config, log=print) -> dict:
    import torch
    from theory.dynamics import BATCH_ROUTES  # noqa: F401  (the routes "auto" chooses among)
    load_before = _load()
    cases, checks = {}, []
    t0 = time.perf_counter()
    for size in _csv(str)(config.sizes):
        V, D = SIZES[size]
        for AB in _csv(int)(config.ab):
            name = f"{size}_ab{AB}"
            log(f"{name}: |V| = {V}, D = {D}, A = B = {AB}, {config.tokens} tokens, float32, {config.device}")
            cases[name] = c = _case(V, D, config.tokens, AB, config, log)
            for job in ("batch", "matrix"):
                if job not in c:
                    checks.append({"claim": f"{name} {job}: ours no slower than the autograd peer",
                                   "predicted": "ours / peer <= 1", "measured": "skipped (a worker failed: see methods)",
                                   "passed": None})
                    continue
                j = c[job]
                log(f"  {job:6}: ours {j['ours_s']:.3f} s vs peer {j['peer_s']:.3f} s = {j['ours_over_peer']:.2f}x"
                    + (f"; floor {c['floor_s'][job]:.3f} s, ours {j['ours_ratio_to_floor']:.2f}x it" if "floor_s" in c else "")
                    + f"; peak {j['ours_peak_gib']:.2f} vs {j['peer_peak_gib']:.2f} GiB; differ {j['difference_normwise']:.1e}")
                checks.append({"claim": f"{name} {job}: ours no slower than the autograd peer",
                               "predicted": "ours / peer <= 1", "measured": j["ours_over_peer"],
                               "passed": j["ours_over_peer"] <= 1.0})
    load_after = _load()
    log(f"load average before {load_before}, after {load_after} ({os.cpu_count()} cores); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    return {"config": dataclasses.asdict(config), "cases": cases, "checks": checks,
            "machine": {"load_average_before": load_before, "load_average_after": load_after,
                        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "device": config.device, "torch": torch.__version__},
            "_run": {"bench_seconds": time.perf_counter() - t0}}


def main(argv=None) -> int:
    return cli.simulation_main("bench_eq5", Config, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
