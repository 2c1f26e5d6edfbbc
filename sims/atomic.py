"""All or nothing: a run's results folder, or a results file, appears complete or not at all.

Everything is written into a hidden sibling (`.NAME.partial-PID-XXXX`, same parent, so same
file system) and renamed into place at the end; a rename is atomic. Whatever stops the writing
(Ctrl-C, SIGTERM, a full disk, a figure that fails to draw) removes the sibling instead, so
the folder never exists half-written. `--force` replaces a folder whole: the old one is moved
aside (`.NAME.old-PID-XXXX`), the new one renamed in, then the old one removed, so two runs'
files never mix. The two renames run with SIGINT and SIGTERM held back, so an interrupt cannot
fall between them. (An existing folder that cannot be renamed, such as `--out .`, is staged
inside itself and its files swapped, each a rename, with the signals held.) A sibling left
by a killed process (SIGKILL, power loss) is removed by the
next run that writes beside it, once its process no longer exists.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
from pathlib import Path

from sims.inputs import STAGED, RunError, UsageError

NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
CANNOT_WRITE = NO_SPACE | {errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


@contextlib.contextmanager
def signals_held():
    """SIGINT and SIGTERM wait (and are delivered on leaving) while a few renames run."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):    # Windows: nothing to hold
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True    # someone else's process, or unknowable: leave its files alone
    return True


def remove_stale(parent: Path) -> None:
    """Remove the hidden siblings in `parent` whose writing process has died."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for e in entries:
        m = STAGED.match(e.name)
        if m and not _alive(int(m.group(2))):
            _remove(e)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _missing_parents(path: Path) -> list[Path]:
    """The ancestors of `path` that do not exist yet, outermost first."""
    missing = []
    for p in path.parents:
        if p.exists():
            break
        missing.append(p)
    return missing[::-1]


def _write_error(exc: OSError, where: Path) -> RunError | None:
    """A full disk or an unwritable file system, as one line naming the folder (exit 3)."""
    if exc.errno in NO_SPACE:
        return RunError(f"no space left on the disk of {where} while writing the results; nothing was "
                        f"written (free some space, or choose another --out)")
    if exc.errno in CANNOT_WRITE:
        return RunError(f"cannot write the results under {where} ({exc.strerror}); nothing was written")
    return None


class Staged:
    """`with Staged(target, kind) as s:` write into `s.path`; on a clean exit it becomes
    `target` (and `s.final` says where it went), on any exception it is removed.

    kind "folder": a folder. `replace` allows an existing `target` (checked to be a run's
    folder by sims.inputs.check_out) to be replaced whole; `numbered` picks `target-2`, `-3`, ...
    when `target` appeared meanwhile (the default runs/<name>-<time>). kind "file": a file,
    written through the path `s.path` in the same folder and renamed over `target`.

    An existing folder that cannot be renamed (a mount point, the current folder, one whose
    parent is not writable) is staged inside itself instead: its old files are moved aside and
    the new ones in, each a rename, all with the signals held."""

    def __init__(self, target: Path, kind: str = "folder", *, replace: bool = False, numbered: bool = False):
        self.target = Path(target)
        self.kind, self.replace, self.numbered = kind, replace, numbered
        self.final = self.path = None

    def __enter__(self) -> "Staged":
        self.where = where = Path(os.path.realpath(self.target))
        self.created = _missing_parents(where)
        here = Path.cwd().resolve()
        self.in_place = (self.kind == "folder" and not self.numbered and where.is_dir()
                         and (os.path.ismount(where) or where in (here, *here.parents)))
        with signals_held():    # an interrupt now would leave the sibling made just before it
            try:
                try:
                    self._stage()
                except PermissionError:
                    if not (self.kind == "folder" and where.is_dir() and not self.in_place):
                        raise
                    self.in_place = True    # the parent is not ours to write in, the folder is
                    self._stage()
            except OSError as exc:
                self._undo()
                raise (_write_error(exc, where.parent) or exc) from None
        return self

    def _stage(self) -> None:
        where = self.where
        self.parent = where if self.in_place else where.parent
        self.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(self.parent)
        prefix = f".{where.name}.partial-{os.getpid()}-"
        if self.kind == "folder":
            self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, dir=self.parent)
            os.close(fd)
            self.path = Path(name)
        # mkdtemp and mkstemp keep them private (0700, 0600); the result gets the usual mode
        self.path.chmod((0o777 if self.kind == "folder" else 0o666) & ~_umask())

    def __exit__(self, kind, exc, tb):
        with signals_held():    # a pending interrupt arrives after the folder is whole or gone
            if kind is None:
                try:
                    self.final = self._publish()
                    return False
                except BaseException as e:    # noqa: BLE001  (undone, then raised)
                    exc = e
            self._undo()
        if isinstance(exc, OSError) and (mapped := _write_error(exc, self.parent)) is not None:
            raise mapped from None
        if kind is None:
            raise exc
        return False

    def _undo(self) -> None:
        if self.path is not None:
            _remove(self.path)
        for p in reversed(self.created):    # innermost first; one that holds files stays
            with contextlib.suppress(OSError):
                p.rmdir()

    def _publish(self) -> Path:
        where = self.where
        if self.kind == "file":
            os.replace(self.path, where)
            return self.target
        if self.numbered:
            base, k = where, 1
            while where.exists():
                k += 1
                where = base.with_name(f"{base.name}-{k}")
            os.rename(self.path, where)
            return self.target.with_name(where.name)
        if self.in_place:
            self._swap_contents()
        elif where.exists():
            self._refuse_if_gained(where.iterdir())
            aside = Path(tempfile.mkdtemp(prefix=f".{where.name}.old-{os.getpid()}-", dir=self.parent))
            os.replace(where, aside)    # onto the empty placeholder: the old run, whole, aside
            try:
                os.rename(self.path, where)
            except BaseException:
                os.replace(aside, where)
                raise
            _remove(aside)
        else:
            os.rename(self.path, where)
        return self.target

    def _refuse_if_gained(self, entries) -> None:
        if not self.replace and any(not STAGED.match(e.name) for e in entries):
            raise UsageError(f"--out {self.target} gained files during the run; pass --force to replace it")

    def _swap_contents(self) -> None:
        where = self.where
        old = [e for e in where.iterdir() if not STAGED.match(e.name)]
        self._refuse_if_gained(old)
        aside = Path(tempfile.mkdtemp(prefix=f".{where.name}.old-{os.getpid()}-", dir=where))
        moved_old, moved_new = [], []
        try:
            for e in old:
                os.replace(e, aside / e.name)
                moved_old.append(e.name)
            for e in list(self.path.iterdir()):
                os.replace(e, where / e.name)
                moved_new.append(e.name)
        except BaseException:    # put everything back as it was
            for n in moved_new:
                os.replace(where / n, self.path / n)
            for n in moved_old:
                os.replace(aside / n, where / n)
            _remove(aside)
            raise
        _remove(aside)
        _remove(self.path)


@contextlib.contextmanager
def file(target: Path):
    """Yield a temporary path beside `target`; on success it becomes `target` (replacing any
    file there), on failure nothing is left."""
    with Staged(target, "file") as s:
        yield s.path
