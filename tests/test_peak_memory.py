""".ci/peak_memory.py, which measures the suite for docs/tests.md: the record it writes (pytest's
counts from the last line, the command's exit code, a peak and a wall time), and one error line
for a command that cannot run or a record that cannot be written (checked before the command)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = str(ROOT / ".ci" / "peak_memory.py")


def _run(*argv):
    return subprocess.run([sys.executable, TOOL, *argv], capture_output=True, text=True, cwd=ROOT)


def test_record_holds_pytest_counts_and_exit_code(tmp_path):
    out = tmp_path / "deep" / "r.json"
    r = _run("--record", str(out), sys.executable, "-c",
             "import sys; print('12 passed, 3 skipped, 1 deselected in 0.5s'); sys.exit(1)")
    assert r.returncode == 1 and "12 passed" in r.stdout
    rec = json.loads(out.read_text())
    assert rec["counts"] == {"passed": 12, "skipped": 3, "deselected": 1} and rec["exit_code"] == 1
    assert rec["peak_mib"] >= 0 and rec["wall_seconds"] > 0 and rec["minutes"] * 60 + rec["seconds"] == round(rec["wall_seconds"])
    assert rec["command"][0] == sys.executable and not list(out.parent.glob(".*.tmp"))


def test_bad_command_and_unwritable_record_are_one_line(tmp_path):
    r = _run("--record", str(tmp_path / "r.json"), "no-such-command-here")
    assert r.returncode == 127 and r.stderr.strip().startswith("error: cannot run") and "Traceback" not in r.stderr
    (tmp_path / "file").write_text("x")
    ran = tmp_path / "ran"
    r = _run("--record", str(tmp_path / "file" / "r.json"), sys.executable, "-c", f"open({str(ran)!r}, 'w')")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --record") and "Traceback" not in r.stderr
    assert not ran.exists() and not (tmp_path / "r.json").exists()   # refused before the command ran
