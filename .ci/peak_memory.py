"""Peak memory of a command and every process it starts: python .ci/peak_memory.py CMD ARGS...

Samples the summed VmRSS of the command's process tree every 0.2 s (Linux /proc) and prints the
peak, the wall time and the load average on stderr; exits with the command's exit code. What
docs/tests.md states of the suite was measured with it: python .ci/peak_memory.py python -m pytest -q
"""
import os
import subprocess
import sys
import time

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

t0 = time.time()
p = subprocess.Popen(sys.argv[1:])
peak = 0
while p.poll() is None:
    peak = max(peak, tree(p.pid))
    time.sleep(0.2)
print(f"TREEPEAK rc={p.returncode} peak_MB={peak/1024:.0f} wall_s={time.time()-t0:.0f} load={os.getloadavg()}", file=sys.stderr)
sys.exit(p.returncode)
