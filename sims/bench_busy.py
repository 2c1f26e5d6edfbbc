"""Benchmark: wall times on an idle machine and beside one competing CPU-bound process.

    python -m sims.bench_busy [--rounds 3] [--competitors 1]

Two jobs, each run in a fresh Python process: "main" = `python -m sims.theorem2
--unseen-tokens` (whole command, imports included), "max_margin" = theory.max_margin on the
structured differences at n = 2000, D = 4096 (the call alone, timed inside the process).
Each runs --rounds times idle, then --rounds times while the benchmark keeps --competitors
CPU-bound processes (`while True: pass`) running, which it starts and stops itself. Threads
are chosen by problem size (theory/threads.py); --contrast also runs every job with
RMGAP_THREADS = all cores, the old behaviour, to show what the choice avoids.
Reports medians, the busy / idle ratio (target <= 1.5) and the load average.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import sims.bench_max_margin  # noqa: F401  the jobs run this code in subprocesses: imported so that
import sims.theorem2  # noqa: F401          the run's code hash (sims.provenance) covers it
from sims import cli
from sims import inputs
from sims.cli import field, positive
from theory.threads import available_cores

TARGET_RATIO = 1.5
MAX_MARGIN_JOB = """
import json, time
from sims.bench_max_margin import structured
from theory.max_margin import max_margin
Z = structured(2000, 4096, 0)
max_margin(Z[:4])                      # imports and thread pools outside the timing
t0 = time.perf_counter(); max_margin(Z); print(json.dumps(time.perf_counter() - t0))
"""


@dataclass(frozen=True)
class BenchConfig:
    rounds: int = field(3, "timed runs of each job in each condition (the median is reported)", positive, "must be > 0")
    competitors: int = field(1, "CPU-bound processes running beside the job when busy (at most 4 per core)",
                             inputs.in_range(1, 4 * (os.cpu_count() or 1)))
    contrast: bool = field(True, "also run each job with every core's threads (RMGAP_THREADS = cores)")


def main_job(env) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sims.theorem2", "--unseen-tokens", "--out", f"{tmp}/out"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def max_margin_job(env) -> float:
    out = subprocess.run([sys.executable, "-c", MAX_MARGIN_JOB], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1]))


def measure(job, env, rounds, competitors) -> list:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(competitors)]
    try:
        time.sleep(0.5 if procs else 0.0)
        return [job(env) for _ in range(rounds)]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run(config: BenchConfig, log=print) -> dict:
    cores = available_cores()
    settings = {"auto": {k: v for k, v in os.environ.items() if k != "RMGAP_THREADS"}}
    if config.contrast:
        settings["all_cores"] = {**settings["auto"], "RMGAP_THREADS": str(cores)}
    jobs = {"main": main_job, "max_margin": max_margin_job}
    out, checks = {}, []
    log(f"{cores} cores, {config.competitors} competing process(es), median of {config.rounds}; "
        f"load average {os.getloadavg()[0]:.2f}")
    for setting, env in settings.items():
        for name, job in jobs.items():
            idle = measure(job, env, config.rounds, 0)
            load_idle = os.getloadavg()[0]
            busy = measure(job, env, config.rounds, config.competitors)
            row = {"idle_seconds": statistics.median(idle), "busy_seconds": statistics.median(busy),
                   "idle_times": idle, "busy_times": busy, "loadavg_after_idle": load_idle,
                   "loadavg_after_busy": os.getloadavg()[0]}
            row["ratio"] = row["busy_seconds"] / row["idle_seconds"]
            out.setdefault(setting, {})[name] = row
            log(f"  {setting:9} {name:10} idle {row['idle_seconds']:7.2f} s   busy {row['busy_seconds']:7.2f} s   "
                f"ratio {row['ratio']:.2f}   (load {load_idle:.1f} / {row['loadavg_after_busy']:.1f})")
            if setting == "auto":
                checks.append({"claim": f"{name}: busy / idle wall time with {config.competitors} competing "
                                        f"process(es)", "predicted": f"<= {TARGET_RATIO}",
                               "measured": row["ratio"], "passed": row["ratio"] <= TARGET_RATIO})
    main_idle = out["auto"]["main"]["idle_seconds"]
    checks.append({"claim": "main job idle wall time", "predicted": "< 15 s", "measured": main_idle,
                   "passed": main_idle < 15.0})
    return {"config": dataclasses.asdict(config), "cores": cores, "settings": out, "checks": checks}


def main(argv=None) -> int:
    return cli.simulation_main("bench_busy", BenchConfig, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
