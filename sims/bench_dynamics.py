"""Benchmark: closed-form Delta r (Eq. 5, theory/dynamics.py) vs the autograd oracle at LLM size.

    python -m sims.bench_dynamics [--size llama3|pythia1b] [--tokens 16] [--repeats 3] [--device cpu]

One evaluation sequence and one training pair (y+, y-), each `--tokens` long, float32, with a
reference model (DPO's IM-RM). Three computations on the same inputs:
  closed_form  theory.dynamics.delta_r_im (the rho route; never forms a |V| x D matrix)
  oracle       theory.oracle.delta_r_im_tangent: eta <grad r, -grad L> by torch autograd
  logits       the unavoidable part: one product of all positions with U and of the training
               positions with U_ref (reading U dominates at this size)
Each runs in its own process, so its peak memory above the inputs is its own: peak resident
memory (CPU) or torch.cuda.max_memory_allocated (CUDA), minus what the inputs occupy. Times
are medians over --repeats runs after one warm-up run.
"""
from __future__ import annotations

import argparse  # noqa: F401  (argparse.SUPPRESS)
import json
import resource
import statistics
import subprocess
import sys
import time

SIZES = {"llama3": (128256, 4096), "pythia1b": (50304, 2048)}


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _inputs(V, D, K, device):
    import torch
    from theory.sequences import full
    g = torch.Generator(device=device).manual_seed(0)
    U = torch.randn(V, D, generator=g, device=device).div_(D**0.5)      # in place: no temporaries
    U_ref = torch.randn(V, D, generator=g, device=device).div_(D**0.5)
    mk = lambda: full(torch.randn(1, K, D, generator=g, device=device),
                      torch.randint(0, V, (1, K), generator=g, device=device))
    return U, U_ref, mk(), mk(), mk()


def worker(method: str, V: int, D: int, K: int, repeats: int, device: str) -> dict:
    import torch
    from theory import oracle
    from theory.dynamics import delta_r_im
    from theory.rewards import unembed
    torch.set_grad_enabled(method == "oracle")
    U, U_ref, bar, plus, minus = _inputs(V, D, K, device)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def logits():
        H = torch.cat([bar.h[0], plus.h[0], minus.h[0]])
        return unembed(U, H), unembed(U_ref, H[K:])

    fn = {"closed_form": lambda: delta_r_im(U, bar, plus, minus, beta=0.1, eta=1.0, U_ref=U_ref),
          "oracle": lambda: oracle.delta_r_im_tangent(U, bar, plus, minus, beta=0.1, eta=1.0, U_ref=U_ref),
          "logits": logits}[method]
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
    value = None if method == "logits" else float(out[0])
    return {"median_s": statistics.median(times), "times_s": times, "peak_extra_bytes": peak - base,
            "inputs_bytes": 2 * V * D * 4, "value": value}


def main(argv=None) -> int:
    from sims import cli
    return cli.run_cli(_main, argv)


def _main(argv) -> int:
    from sims import cli
    from sims import inputs
    ap = cli.Parser(prog="python -m sims.bench_dynamics", description=__doc__,
                    formatter_class=cli.HelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="llama3", help="vocabulary and width preset")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per sequence")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per method (the median is reported)")
    ap.add_argument("--device", default="cpu", help="torch device; must exist on this machine")
    ap.add_argument("--worker", choices=["closed_form", "oracle", "logits"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    inputs.check_number("tokens", args.tokens, inputs.POSITIVE)
    inputs.check_number("repeats", args.repeats, inputs.POSITIVE)
    inputs.check_device(args.device)
    V, D = SIZES[args.size]
    # U, U_ref and the oracle's gradients (V x D float32 each), and the logits of 3 sequences
    inputs.check_memory(4 * (6 * V * D + 9 * args.tokens * (V + D)), "this benchmark", args.device)
    if args.worker:
        print(json.dumps(worker(args.worker, V, D, args.tokens, args.repeats, args.device)))
        return 0
    res = {}
    for method in ("logits", "closed_form", "oracle"):
        cmd = [sys.executable, "-m", "sims.bench_dynamics", "--worker", method, "--size", args.size,
               "--tokens", str(args.tokens), "--repeats", str(args.repeats), "--device", args.device]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"error: {method} worker failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 1
        res[method] = json.loads(done.stdout)
    c, o, lg = res["closed_form"], res["oracle"], res["logits"]
    gib = lambda b: b / 2**30
    print(f"{args.size}: |V|={V}, D={D}, {args.tokens} tokens per sequence, float32, device {args.device}, "
          f"median of {args.repeats}; inputs U and U_ref {gib(c['inputs_bytes']):.2f} GiB")
    for name, r in res.items():
        print(f"  {name:12} {r['median_s']:8.3f} s   peak memory above inputs {gib(r['peak_extra_bytes']):7.3f} GiB")
    rel = abs(c["value"] - o["value"]) / max(abs(o["value"]), 1e-30)
    print(f"  oracle / closed form: {o['median_s'] / c['median_s']:.1f}x time, "
          f"closed form / oracle peak memory: {c['peak_extra_bytes'] / max(o['peak_extra_bytes'], 1):.3f}; "
          f"closed form / logits: {c['median_s'] / lg['median_s']:.2f}x; "
          f"Delta r {c['value']:.6g} vs {o['value']:.6g} (relative {rel:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
