"""Command lines generated from frozen config dataclasses, and the run-folder rules.

A field's `metadata["help"]` is its flag's help; `metadata["check"]` a (predicate, message)
pair validated before the run (a check made by sims.inputs.one_of lists its choices in --help).
Exit codes: 0 every check passed; 1 a check failed (the run still writes its results); 2 a
usage error (one line `error: ...`); 3 a numerical or solver failure, or a full disk, that is
not the user's fault (one line `error: ...`); 4 a bug in rmgap (one line); 130 interrupted
(Ctrl-C); 143 terminated (SIGTERM); 141 stdout was closed by its reader (`| head`): the run
went on quietly and its results were written. Every input is checked by sims/inputs.py before
anything is allocated.

A run writes results.json (deterministic: the same seed gives the same bytes on one machine;
across processors, results agree to their stated tolerances: docs/tests.md), arrays.npz
(vectors a user may reuse, e.g. u*), run.json (wall times, argv, the hash of the code that
ran, the versions of Python and the libraries) and its figure. All or nothing (sims/atomic.py):
they are written into a hidden sibling folder renamed into place at the end, so an interrupt,
a signal, a full disk or a failing figure leaves no folder, and --force replaces an old run's
folder whole. sims never import figures: the figure's drawer is found through the
`rmgap.figures` entry-point group (pyproject.toml), so dependencies point figures -> sims only
while a run still leaves its figure beside its results.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import errno
import inspect
import json
import os
import signal
import sys
import time
from pathlib import Path

from sims import atomic, inputs
from sims.inputs import RunError, ToolkitWarning, UsageError  # noqa: F401  (re-exported: sims raise these)

EXIT = {"passed": 0, "check_failed": 1, "usage": 2, "run_error": 3, "internal": 4, "interrupted": 130,
        "broken_pipe": 141, "terminated": 143}


def field(default, help: str, check=None, message: str = ""):
    """A config field with its help text and an optional validity check: `check` is a
    predicate (with `message` saying what the value must be) or a (predicate, message) pair
    from sims.inputs (POSITIVE, SEED, in_range(...), ...)."""
    if isinstance(check, tuple):
        check, message = check
    return dataclasses.field(default=default, metadata={"help": help, "check": (check, message)})


def positive(x):
    return x > 0


def validate(config) -> None:
    """Raise UsageError naming the first flag whose value fails its check, then run the
    config's own cross-flag `validate()` and refuse a run whose `memory_bytes()` estimate
    exceeds the memory available."""
    inputs.check_environment()      # RMGAP_THREADS, read as a number by theory/threads.py
    for f in dataclasses.fields(config):
        check, message = f.metadata.get("check", (None, ""))
        value = getattr(config, f.name)
        try:
            ok = check is None or check(value)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise UsageError(f"{inputs.flag(f.name)} {message} (got {value!r})")
    post = getattr(config, "validate", None)
    if post is not None:
        post()
    estimate = getattr(config, "memory_bytes", None)
    if estimate is not None:
        inputs.check_memory(estimate(), "this run", getattr(config, "device", "cpu"))


# Flags whose value is a file a command reads: an --out naming one of them would have the
# results replace it (with --force), so every command's parser refuses that.
INPUT_FLAGS = ("representations", "pairs", "train", "heldout", "shifted", "eval", "persona_jsonl")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of usage + message
        raise UsageError(f"{message} (see --help)")

    def parse_args(self, args=None, namespace=None):
        # subcommands' parsers are reached through parse_known_args: this runs once, on the whole
        ns = super().parse_args(args, namespace)
        inputs.check_not_an_input(getattr(ns, "out", None), {inputs.flag(k): getattr(ns, k, None) for k in INPUT_FLAGS})
        return ns


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring verbatim as the description; each flag's one default appended
    (flags whose default is None say in their help what happens instead)."""

    def _get_help_string(self, action):
        if action.default is None or action.default == "":
            return action.help
        return super()._get_help_string(action)


def parser_for(config_cls, description: str, prog: str | None = None) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=description, formatter_class=HelpFormatter)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "").replace("%", "%%")     # argparse %-formats a help string
        choices = getattr(f.metadata.get("check", (None, ""))[0], "choices", None)
        if choices:   # listed, not enforced here: validate() names the flag in its one line
            help_ += f" (one of: {', '.join(map(str, choices))})"
        if f.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        else:
            kind = {"int": int, "float": float, "str": str}.get(f.type, f.type)
            p.add_argument(flag, type=kind, default=f.default, help=help_, metavar=f.name.upper())
    p.add_argument("--out", type=str, default=None,
                   help="results folder (default: a new folder runs/<name>-<time>)")
    p.add_argument("--force", action="store_true", help="replace an existing --out run folder, whole")
    return p


def parse(config_cls, description: str, argv=None, prog: str | None = None):
    """(config, out, force) from the command line, validated (UsageError on bad values). A
    config with an `effective()` method is replaced by what it returns: the sizes actually
    run (e.g. those of a representation file), so the printed and recorded config is true.
    An `effective(given)` is also told the fields given on the command line (a preset refuses
    a flag it would override, even one given at its default value)."""
    parser = parser_for(config_cls, description, prog)
    ns = vars(parser.parse_args(argv))
    out, force = ns.pop("out"), ns.pop("force")
    config = config_cls(**ns)
    validate(config)
    effective = getattr(config, "effective", None)
    if effective is None:
        return config, out, force
    if "given" in inspect.signature(effective).parameters:    # a preset that must know what was typed
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        return effective(given=set(vars(parser.parse_args(argv)))), out, force
    return effective(), out, force


def plan_folder(name: str, out: str | None, force: bool) -> Path:
    """The folder results will go to, checked now and created only when the run has finished
    (so a run that fails leaves nothing behind). A given folder that already holds files is
    refused unless `force`; the default is a new folder runs/<name>-<timestamp>[-k]."""
    inputs.check_out(out, force)
    if out is not None:
        return Path(out)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{name}-{stamp}"
    k = 1
    while base.with_name(f"{base.name}-{k}" if k > 1 else base.name).exists():   # two runs in one second
        k += 1
    base = base.with_name(f"{base.name}-{k}" if k > 1 else base.name)
    inputs.check_out(str(base), False)
    return base


def results_folder(planned: Path, given: bool, force: bool) -> atomic.Staged:
    """`with results_folder(...) as s:` write into s.path; the folder appears at s.final,
    whole, when the block ends, or not at all (sims/atomic.py)."""
    return atomic.Staged(planned, replace=given and force, numbered=not given)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def machine() -> dict:
    """The processor a run measured on (its name, cores, and the bf16 units a timing depends on:
    AVX-512 BF16 doubles bf16 matrix products over fp32, AMX multiplies them several times)."""
    import os
    name, flags = None, []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name is None:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    return {"processor": name, "cores": os.cpu_count(),
            "bf16_units": ", ".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags) or "none"}


def versions() -> dict:
    """Python's and the numerical libraries' versions, and the processor (run.json): results that
    differ in the last digits from the committed ones usually differ in these."""
    import platform
    from importlib import metadata
    out = {"python": platform.python_version(), "platform": platform.platform(), "machine": machine()}
    names = ["numpy", "scipy", "torch", "cvxpy", "matplotlib"]
    names += [m for m in ("transformers",) if m in sys.modules]
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is so that it unwinds like Ctrl-C (nothing left behind)."""


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)    # a second SIGTERM ends it at once
    raise Terminated()


class _Output:
    """sys.stdout or sys.stderr while a command runs. Once its reader has gone (`| head -1`:
    EPIPE), or its device is full (`> /dev/full`: ENOSPC), what is printed goes to /dev/null
    instead of raising, so the run goes on to write its results; `broken` then makes the exit
    code 141, as the shell reports a writer its pipe stopped, and `full` makes it 3, said in one
    line (on stderr, when stderr is not the stream that failed)."""

    def __init__(self, stream):
        self._stream, self.broken, self.full = stream, False, False

    def _lost(self, exc: OSError):
        if isinstance(exc, BrokenPipeError):
            self.broken = True
        elif exc.errno == errno.ENOSPC:
            self.full = True
        else:
            raise exc
        try:   # the buffered rest, and the interpreter's last flush, go nowhere instead
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text):
        if not (self.broken or self.full):
            try:
                return self._stream.write(text)
            except OSError as exc:
                self._lost(exc)
        return len(text)

    def flush(self):
        if not (self.broken or self.full):
            try:
                self._stream.flush()
            except OSError as exc:
                self._lost(exc)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def run_cli(main_body, argv=None) -> int:
    """Call main_body(argv) and turn every failure into one line on stderr and an exit code:
    UsageError 2, RunError 3, MemoryError 3, Ctrl-C 130, SIGTERM 143; any other exception is a
    bug in rmgap: one line, exit code 4 (RMGAP_TRACEBACK=1 shows the traceback). A closed
    stdout or stderr stops the printing, not the run: exit code 141 once it has finished; a full
    device under stdout or stderr stops it too, and the run ends with exit code 3 and one line."""
    handler = None
    try:
        handler = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:    # not the main thread: SIGTERM keeps its default
        pass
    stdout, stderr = sys.stdout, sys.stderr = _Output(sys.stdout), _Output(sys.stderr)
    try:
        code = _run(main_body, argv)
        stdout.flush()
        stderr.flush()
    finally:
        sys.stdout, sys.stderr = stdout._stream, stderr._stream
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
    full = [name for name, s in (("standard output", stdout), ("standard error", stderr)) if s.full]
    if full and code in (0, 1):
        with contextlib.suppress(OSError, ValueError):
            print(f"error: {' and '.join(full)}: no space left on the device written to (a full disk, or "
                  f"/dev/full); the run went on and wrote its results", file=sys.stderr, flush=True)
        code = EXIT["run_error"]
    elif (stdout.broken or stderr.broken) and code in (0, 1):
        code = EXIT["broken_pipe"]
    if argv is None:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the command-line process as soon as it is done: its results are written and its
    output flushed, so the interpreter's teardown (torch's and its thread pools', which a user
    waits through in silence) is skipped, after the exit handlers run. Only for the command line (argv None): a
    caller in Python (the tests, figures' reruns) gets the code back."""
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _run(main_body, argv) -> int:
    try:
        return main_body(argv) or 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT["usage"]
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT["run_error"]
    except MemoryError:
        print("error: out of memory during the run; choose smaller sizes", file=sys.stderr)
        return EXIT["run_error"]
    except Terminated:
        print("error: terminated (SIGTERM)", file=sys.stderr)
        return EXIT["terminated"]
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT["interrupted"]
    except BrokenPipeError:   # written past sys.stdout (its .buffer, say): stop quietly, as the shell does
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT["broken_pipe"]
    except Exception as exc:  # noqa: BLE001  (a bug: one line unless asked for the traceback)
        if os.environ.get("RMGAP_TRACEBACK"):
            raise
        print(f"error: internal error, please report: {type(exc).__name__}: {exc} "
              f"(RMGAP_TRACEBACK=1 shows the traceback)".replace("\n", " "), file=sys.stderr)
        return EXIT["internal"]


def drawer(name: str):
    """The figure function registered for `name` in the `rmgap.figures` entry points, or None."""
    from importlib.metadata import entry_points
    for ep in entry_points(group="rmgap.figures"):
        if ep.name == name:
            return ep.load()
    return None


def write_results(folder: Path, results: dict) -> None:
    """results.json, and arrays.npz from results["_arrays"] (popped) when there are any."""
    import numpy as np
    arrays = results.pop("_arrays", None)
    write_json(folder / "results.json", results)
    if arrays:
        np.savez(folder / "arrays.npz", **{k: np.asarray(v) for k, v in arrays.items()})


def exit_code(results: dict) -> int:
    """0 when no check failed, 1 when one did (checks with passed None only inform)."""
    return EXIT["check_failed"] if any(c["passed"] is False for c in results.get("checks", [])) else EXIT["passed"]


def simulation_main(name: str, config_cls, run, description: str, argv=None, module: str | None = None) -> int:
    """The command line of a simulation: parse and validate the config, pick a fresh results
    folder, run (which prints the predictions beside the measurements), write results.json,
    arrays.npz and run.json, draw the figure. Exit code 0 when no check failed, 1 when one
    did, 2 for bad input, 3 for a numerical or solver failure."""
    from sims.provenance import code_hash
    module = module or f"sims.{name}"

    def body(argv):
        config, out, force = parse(config_cls, description, argv, prog=f"python -m {module}")
        folder = plan_folder(name, out, force)
        if getattr(config, "seed", None) is not None:   # None: a file's draw replaces the seeds
            print(f"seed {config.seed} (every flag's value is recorded in results.json)")
        t0 = time.perf_counter()
        import numpy as np
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is checked
            results = run(config)                                             # explicitly, by step
        inputs.check_results_finite(results)
        extra = results.pop("_run", {})
        draw = drawer(name)
        with results_folder(folder, given=out is not None, force=force) as staged:
            write_results(staged.path, results)
            if draw is not None:
                draw(results, staged.path / name)
            write_json(staged.path / "run.json", {"wall_seconds": time.perf_counter() - t0, **extra,
                                                  "module": module, "code_hash": code_hash(module),
                                                  "versions": versions(),
                                                  "argv": list(sys.argv[1:] if argv is None else argv)})
        folder = staged.final
        figure = f"  figure: {folder / name}.png" if draw else ""
        print(f"results: {folder / 'results.json'}" + figure)
        return exit_code(results)
    return run_cli(body, argv)
