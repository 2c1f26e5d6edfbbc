"""Helpers shared by the tests (importable as tests.helpers: pyproject puts the root on sys.path)."""
import numpy as np
import torch


def convert(backend: str, a, dtype=None):
    """A NumPy array in the named backend (floats in `dtype`, default float64)."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        a = a.astype(dtype or np.float64)
    if backend == "numpy":
        return a
    return torch.as_tensor(a, device="cuda" if backend == "torch-cuda" else "cpu")


# What a command may print on stderr besides its one error line: notes (the first load's
# one-time conversion of the real model, say) and warnings, each raised when it happens. Tests
# tolerate them rather than route them elsewhere: stderr is where a user watches a run, and a
# note that arrives only on a fresh machine must not make a test depend on a warm cache.
NOT_ERRORS = ("note: ", "warning: ", "progress: ")


def error_line(err: str) -> str:
    """The one `error:` line of a failed command's stderr, which must end it, with no traceback;
    every other line is a note, a warning or a progress line."""
    lines = [line.strip() for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err, err
    assert all(line.startswith(NOT_ERRORS) for line in lines[:-1]), err
    return errors[0]
