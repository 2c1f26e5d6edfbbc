"""Issue 18, all or nothing: a run's folder (or an sims.hf --out file) appears complete or not
at all, whatever stops it (Ctrl-C, SIGTERM, a full disk, a failing figure); --force replaces a
folder whole; a closed stdout does not lose the results. Also: no raw config dict on screen,
choices in --help, library versions in run.json."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sims import atomic, cli, theorem1, theorem2
from tests.helpers import error_line

ROOT = Path(__file__).resolve().parents[2]
TINY_T2 = ["--unseen-tokens", "--steps", "50", "--dim", "8", "--n-train", "10", "--n-test", "10",
           "--n-seeds", "1", "--checkpoints", "4"]
RUN_FILES = {"results.json", "run.json"}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _left(folder: Path) -> list[str]:
    """Everything in `folder`, hidden names included (a staged sibling must not remain)."""
    return sorted(p.name for p in folder.iterdir())


def _one_line(err: str, needle: str) -> None:
    assert needle in error_line(err), err


# ---- interrupts while the figure is drawn ---------------------------------------------------

SLOW_DRAWER = textwrap.dedent("""
    import sys, time
    from sims import cli, theorem1
    def slow(results, path):   # a figure half written, then a long wait for the signal
        path.with_suffix(".png").write_text("half a figure")
        print("drawing", file=sys.stderr, flush=True)
        time.sleep(60)
    cli.drawer = lambda name: slow
    raise SystemExit(theorem1.main(sys.argv[1:]))
""")


@pytest.mark.parametrize("sig,code,needle", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated (SIGTERM)")],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_drawing_leaves_nothing(tmp_path, sig, code, needle):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # a shell's background job (nohup ... &, a CI step) starts with SIGINT ignored, and Python keeps
    # an ignored SIGINT ignored: give the child the default, as a terminal's foreground job has
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DRAWER, "--out", "deep/run"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stderr.readline().strip() == "drawing"
        assert (tmp_path / "deep").is_dir()   # the staged sibling exists meanwhile
        proc.send_signal(sig)
        err = proc.stderr.read()
        assert proc.wait(timeout=30) == code
    finally:
        proc.kill()
    _one_line(err, needle)
    assert _left(tmp_path) == []    # not even the parent folder it created


def test_ctrl_c_in_process_leaves_nothing(workdir, monkeypatch, capsys):
    def interrupted(results, path):
        path.with_suffix(".png").write_text("x")
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "drawer", lambda name: interrupted)
    assert theorem1.main(["--out", "o"]) == 130
    _one_line(capsys.readouterr().err, "interrupted")
    assert _left(workdir) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # run_cli put SIGTERM's handler back


# ---- a full disk, a failing figure ----------------------------------------------------------

def test_full_disk_is_exit_3_and_leaves_nothing(workdir, monkeypatch, capsys):
    real = cli.write_json

    def full(path, obj):   # results.json goes through, run.json meets a full disk
        if path.name == "run.json":
            path.write_text("{")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, obj)
    monkeypatch.setattr(cli, "write_json", full)
    assert theorem1.main(["--out", "runs_here/o"]) == 3
    _one_line(capsys.readouterr().err, "no space left on the disk of")
    assert _left(workdir) == []
    assert theorem1.main([]) == 3   # the default runs/<name>-<time>: runs/ is not left either
    capsys.readouterr()
    assert _left(workdir) == []


def test_a_failing_figure_is_exit_4_and_leaves_nothing(workdir, monkeypatch, capsys):
    def broken(results, path):
        path.with_suffix(".png").write_text("x")
        raise ValueError("a drawing bug")
    monkeypatch.setattr(cli, "drawer", lambda name: broken)
    assert theorem1.main(["--out", "o"]) == 4
    _one_line(capsys.readouterr().err, "a drawing bug")
    assert _left(workdir) == []


# ---- --force replaces a folder whole --------------------------------------------------------

def test_force_into_another_simulations_folder_replaces_it_whole(workdir, capsys):
    assert theorem2.main([*TINY_T2, "--out", "o"]) in (0, 1)   # 50 steps: its direction check may fail
    assert {"arrays.npz", "theorem2.png", "theorem2.pdf"} <= set(_left(workdir / "o"))
    assert theorem1.main(["--out", "o"]) == 2          # refused without --force, untouched
    assert "theorem2.png" in _left(workdir / "o")
    assert theorem1.main(["--out", "o", "--force"]) == 0
    assert set(_left(workdir / "o")) == RUN_FILES       # nothing of theorem2's run remains
    assert json.loads((workdir / "o/run.json").read_text())["module"] == "sims.theorem1"
    assert _left(workdir) == ["o"]


@pytest.mark.parametrize("extra,needle", [("notes.txt", "holds notes.txt, which no run writes"),
                                          ("sub/", "holds sub, which no run writes"),
                                          ("mine.json", "holds mine.json, which no run writes"),
                                          ("notes.npz", "holds notes.npz, which no run writes")])
def test_force_never_replaces_a_folder_holding_other_files(workdir, capsys, extra, needle):
    (workdir / "o").mkdir()
    (workdir / "o/results.json").write_text("{}")
    (workdir / "o/run.json").write_text('{"module": "sims.theorem1", "code_hash": "x"}')
    (workdir / "o" / extra.rstrip("/")).mkdir() if extra.endswith("/") else (workdir / "o" / extra).write_text("x")
    assert theorem1.main(["--out", "o", "--force"]) == 2
    _one_line(capsys.readouterr().err, needle)
    assert (workdir / "o/results.json").read_text() == "{}"


def test_the_current_folder_is_filled_and_replaced_in_place(workdir, monkeypatch, capsys):
    """`--out .` cannot be renamed away (it is where the shell stands): its files are swapped."""
    assert theorem1.main(["--out", "."]) == 0
    assert set(_left(workdir)) == RUN_FILES
    before = (workdir / "results.json").read_bytes()
    monkeypatch.setattr(cli, "drawer", lambda name: lambda r, p: (p.with_suffix(".png").write_text("x"),
                                                                  _raise(KeyboardInterrupt)))
    assert theorem1.main(["--out", ".", "--force", "--seed", "3"]) == 130
    assert set(_left(workdir)) == RUN_FILES and (workdir / "results.json").read_bytes() == before
    monkeypatch.undo()
    monkeypatch.chdir(workdir)
    assert theorem1.main(["--out", ".", "--force", "--seed", "3"]) == 0
    assert set(_left(workdir)) == RUN_FILES and (workdir / "results.json").read_bytes() != before


def _raise(exc):
    raise exc


def test_an_empty_given_folder_is_filled(workdir, capsys):
    (workdir / "o").mkdir()
    assert theorem1.main(["--out", "o"]) == 0
    assert set(_left(workdir / "o")) == RUN_FILES and _left(workdir) == ["o"]


def test_a_killed_runs_leftovers_do_not_confuse_the_next(workdir, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()   # a pid that has exited
    stale = workdir / f".o.partial-{dead}-abcd"
    stale.mkdir()
    (stale / "results.json").write_text("{")
    live = workdir / f".o.partial-{os.getppid()}-abcd"   # a running process's: left alone
    live.mkdir()
    assert theorem1.main(["--out", "o"]) == 0
    assert _left(workdir) == [live.name, "o"]


# ---- a closed stdout ------------------------------------------------------------------------

@pytest.mark.parametrize("unbuffered", [False, True], ids=["closed-at-exit", "closed-mid-run"])
def test_closed_stdout_still_writes_results_and_exits_141(tmp_path, unbuffered):
    """`python -m sims.theorem1 | head -1`: the reader is gone before anything is printed (so
    deterministic); unbuffered, the first print meets it mid-run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1" if unbuffered else ""}
    proc = subprocess.Popen([sys.executable, "-m", "sims.theorem1", "--out", "o"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""    # quietly
    assert set(_left(tmp_path / "o")) == RUN_FILES
    json.loads((tmp_path / "o/results.json").read_text())


# ---- output, help and run.json --------------------------------------------------------------

def test_no_raw_config_dict_on_screen(workdir, capsys):
    assert theorem1.main(["--out", "o"]) == 0
    out = capsys.readouterr().out
    assert "config:" not in out and "{'seed'" not in out and out.startswith("seed 0")
    assert json.loads((workdir / "o/results.json").read_text())["config"]["seed"] == 0


def test_run_json_records_the_versions(workdir, capsys):
    assert theorem1.main(["--out", "o"]) == 0
    versions = json.loads((workdir / "o/run.json").read_text())["versions"]
    for name in ("python", "numpy", "scipy", "torch", "cvxpy"):
        assert versions[name], name
    # and the processor, which timings and last digits depend on (read from /proc/cpuinfo)
    m = versions["machine"]
    assert m["cores"] >= 1 and m["bf16_units"] in ("none", "avx512_bf16", "amx_bf16", "avx512_bf16, amx_bf16")
    flags = next((l.split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
    assert ("amx_bf16" in m["bf16_units"]) == ("amx_bf16" in flags)
    umask = os.umask(0)
    os.umask(umask)
    assert (workdir / "o").stat().st_mode & 0o777 == 0o777 & ~umask   # not the staging's private 0700


@pytest.mark.parametrize("flag,choices", [("--ties", "half, zero"), ("--step-rule", "normalized, constant"),
                                          ("--backend", "torch, numpy"), ("--dtype", "float64, float32")])
def test_help_lists_the_choices(flag, choices):
    text = " ".join(cli.parser_for(theorem2.Config, theorem2.__doc__).format_help().split())
    assert f"(one of: {choices})" in text.split(flag + " ", 2)[-1].split(" --", 1)[0]


# ---- sims.hf --out FILE ---------------------------------------------------------------------

def test_a_staged_file_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "a" / "out.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic.file(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert _left(tmp_path) == []
    target.parent.mkdir()
    target.write_text("old")
    with pytest.raises(atomic.RunError, match="no space left on the disk of"):
        with atomic.file(target) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old" and _left(target.parent) == ["out.json"]
    with atomic.file(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and _left(target.parent) == ["out.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_hf_analyse_full_disk_leaves_no_file(workdir, monkeypatch, capsys):
    pytest.importorskip("transformers")
    from tests.test_inputs import good_arrays
    from sims.hf import cli as hf_cli
    np.savez(workdir / "r.npz", **good_arrays(np.random.default_rng(0)))
    real = Path.write_text

    def full(self, text, *a, **kw):
        real(self, text[: len(text) // 2], *a, **kw)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_text", full)
    assert hf_cli.main(["analyse", "--representations", "r.npz", "--out", "out/a.json"]) == 3
    _one_line(capsys.readouterr().err, "no space left")
    assert _left(workdir) == ["r.npz"]
    monkeypatch.setattr(Path, "write_text", real)
    assert hf_cli.main(["analyse", "--representations", "r.npz", "--out", "out/a.json"]) == 0
    assert _left(workdir / "out") == ["a.json"]


def test_a_canonical_rerun_replaces_its_results_folder_whole(tmp_path, monkeypatch, capsys):
    import figures.__main__ as fm
    monkeypatch.setattr(fm, "RESULTS", tmp_path)
    (tmp_path / "theorem1").mkdir()
    (tmp_path / "theorem1/arrays.npz").write_text("an older run's")
    fm.rerun("theorem1")
    assert set(_left(tmp_path / "theorem1")) == RUN_FILES and _left(tmp_path) == ["theorem1"]
    meta = json.loads((tmp_path / "theorem1/run.json").read_text())
    assert meta["argv"] == [] and meta["versions"]["numpy"]


def test_force_never_deletes_the_files_of_a_folder_no_run_wrote(workdir, capsys):
    """From the second fresh-user trial: a user's thesis.pdf and config.json carry a run's
    extensions, but the folder holds no run.json of a run, so --force refuses it whole."""
    (workdir / "x").mkdir()
    (workdir / "x/thesis.pdf").write_text("t")
    (workdir / "x/config.json").write_text("{}")
    assert theorem1.main(["--out", "x", "--force"]) == 2
    _one_line(capsys.readouterr().err, "holds files but no run.json of a run")
    assert _left(workdir / "x") == ["config.json", "thesis.pdf"]


def test_an_out_file_with_a_trailing_slash_is_a_folder(tmp_path, capsys):
    pytest.importorskip("transformers")
    from sims.hf import cli as hf_cli
    out = f"{tmp_path}/newdir/"
    assert hf_cli.main(["analyse", "--representations", str(tmp_path / "r.npz"), "--out", out]) == 2
    _one_line(capsys.readouterr().err, "ends with '/', a folder; give a file name")
    assert _left(tmp_path) == []
