"""Peak memory of a command and every process it starts:

    python .ci/peak_memory.py [--record FILE] CMD ARGS...

Samples the summed VmRSS of the command's process tree every 0.2 s (Linux /proc) and prints the
peak, the wall time and the load average on stderr; exits with the command's exit code. With
--record FILE it also writes them as JSON (with the command's last output line, pytest's
summary, the machine's cores and the commit measured), for pages to render. What
docs/tests.md states of the suite is rendered from the file this writes:

    python .ci/peak_memory.py --record results/suite/results.json python -m pytest -q
"""
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path


def kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += kb(p)
        stack += children(p)
    return total


def pytest_counts(line: str) -> dict:
    """{'passed': 587, 'skipped': 4, ...} from pytest's summary line (empty for other commands)."""
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)", line)}


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" with uncommitted changes" if dirty else "")


def main(argv):
    record = None
    if argv[:1] == ["--record"]:
        if len(argv) < 3:
            print("usage: python .ci/peak_memory.py [--record FILE] CMD ARGS...", file=sys.stderr)
            return 2
        record, argv = Path(argv[1]), argv[2:]
    if not argv:
        print("usage: python .ci/peak_memory.py [--record FILE] CMD ARGS...", file=sys.stderr)
        return 2
    if record is not None:   # before the command: a 4-minute suite is not run for a record it cannot write
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: --record {record}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    measured = commit()
    load0, t0 = os.getloadavg(), time.time()
    try:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1)
    except OSError as exc:   # a command that does not exist or cannot run: one line, the shell's 127
        print(f"error: cannot run {argv[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    last = [""]

    def forward():   # the command's output as it comes, keeping its last line for the record
        for line in p.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.strip():
                last[0] = line.strip()
    reader = threading.Thread(target=forward, daemon=True)
    reader.start()
    peak = 0
    while p.poll() is None:
        peak = max(peak, tree(p.pid))
        time.sleep(0.2)
    reader.join()
    wall, load1 = time.time() - t0, os.getloadavg()
    print(f"TREEPEAK rc={p.returncode} peak_MB={peak / 1024:.0f} wall_s={wall:.0f} load={load1}", file=sys.stderr)
    if record is not None:
        tmp = record.with_name(f".{record.name}.tmp")
        tmp.write_text(json.dumps({
            "command": argv, "exit_code": p.returncode, "peak_mib": round(peak / 1024),
            "peak_gib": peak / 1024 ** 2, "wall_seconds": wall, "minutes": divmod(round(wall), 60)[0],
            "seconds": divmod(round(wall), 60)[1], "load_average_start": load0[0], "load_average_end": load1[0],
            "last_line": last[0], "counts": pytest_counts(last[0]), "cpus": os.cpu_count(),
            "python": platform.python_version(), "commit": measured,
            "date": datetime.date.today().isoformat()}, indent=2, sort_keys=True) + "\n")
        tmp.replace(record)
    return p.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
