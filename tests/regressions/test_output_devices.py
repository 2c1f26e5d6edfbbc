"""Rough edges a new user met (issue 26): what a command does when its output cannot be written,
and when it is done. Each mended in the plumbing (sims/cli.py), which computes no number."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sims import theorem2
from tests.helpers import error_line

ROOT = Path(__file__).resolve().parents[2]


def _file(path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, (plus, minus), n in (("train", (0, 1), 30), ("seen_tokens", (0, 1), 10)):
        arrays[f"{split}_h_prompt"] = rng.standard_normal((n, 6))
        arrays[f"{split}_h_chosen"] = rng.standard_normal((n, 6)) + 1.0
        arrays[f"{split}_h_rejected"] = rng.standard_normal((n, 6)) - 1.0
        arrays[f"{split}_y_chosen"], arrays[f"{split}_y_rejected"] = np.full(n, plus), np.full(n, minus)
    np.savez(path, **arrays)
    return str(path)


def _run(args, cwd, **streams):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "sims.theorem2", *args], cwd=cwd, env=env, **streams)


def test_a_closed_stderr_stops_the_printing_not_the_run(tmp_path):
    """`2>&1 | head -1` on a cold model cache killed the first load after its first note (exit 141,
    no results): a write to a closed stderr raised in the run. Now stderr, like stdout, goes
    quiet when its reader has gone, and the run writes its results (exit 141 as the shell says)."""
    p = _run(["--representations", _file(tmp_path / "r.npz"), "--dim", "5", "--steps", "50", "--out", "o"], tmp_path,
             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    p.stderr.close()                        # the reader goes before the first warning is written
    assert p.wait(timeout=120) == 141
    assert (tmp_path / "o" / "results.json").is_file()


def test_a_full_device_under_stdout_is_one_line_exit_3(tmp_path):
    """`> /dev/full` ended in "internal error, please report: OSError: [Errno 28]" (exit 4). Now
    the run goes on quietly, writes its results, and says so in one line (exit 3)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "w") as full:
        p = _run(["--unseen-tokens", "--steps", "50", "--out", "o"], tmp_path, stdout=full, stderr=subprocess.PIPE,
                 text=True)
        err = p.communicate(timeout=120)[1]
    assert p.returncode == 3, err
    assert "no space left on the device" in error_line(err) and (tmp_path / "o" / "results.json").is_file()


def test_the_main_job_ends_when_its_output_does(tmp_path, monkeypatch):
    """The main job stayed alive for about a second after its last line (the interpreter's teardown
    of torch). A command-line run (argv None) now ends its process once its results and output are
    written, after the exit handlers; a caller in Python gets the exit code back instead."""
    import atexit
    ended, handled = [], []
    monkeypatch.setattr(os, "_exit", lambda code: ended.append(code))
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: handled.append(True))
    monkeypatch.setattr(sys, "argv", ["theorem2", "--unseen-tokens", "--steps", "50", "--out", str(tmp_path / "o")])
    code = theorem2.main()
    assert ended == [code] and handled == [True] and (tmp_path / "o" / "results.json").is_file()
    ended.clear()
    assert theorem2.main(["--unseen-tokens", "--steps", "50", "--out", str(tmp_path / "p")]) in (0, 1) and not ended
