"""Shared configuration: the backend parametrisation, Hypothesis profiles, the large tests and
the suite's memory (helpers: tests/helpers.py).

Profiles (style point 6): "ci" (default) is derandomized and small, so every run checks
the same examples; "thorough" explores (RMGAP_HYPOTHESIS_PROFILE=thorough pytest).

Tests marked `large` need more than the 4 GB the default suite fits in; they run only when -m
names them (`pytest -m large`, or `-m "large or not large"` for everything) or a test id names
them. Deselecting here rather than by `-m "not large"` in addopts keeps them out of runs with
the user's own -m (`-m slow`), which would replace an addopts -m.
"""
import ctypes
import ctypes.util
import gc
import os
import sys

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                          print_blob=True)
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("RMGAP_HYPOTHESIS_PROFILE", "ci"))

BACKENDS = ["numpy", "torch-cpu"] + (["torch-cuda"] if torch.cuda.is_available() else [])


def pytest_generate_tests(metafunc):
    # A parametrisation, not a fixture, so Hypothesis tests can take it too.
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS)


_LARGE = pytest.StashKey[int]()   # how many large tests were left out


def _named(item, args):
    """Whether a test id given on the command line (path::name, with or without [params]) names item."""
    nodeid = item.nodeid
    return any(nodeid == a or nodeid.startswith(a + "[") or nodeid.startswith(a + "::") for a in args)


def pytest_collection_modifyitems(config, items):
    if "large" in (config.option.markexpr or ""):
        return
    ids = [os.path.relpath(a.split("::")[0], config.rootpath).replace(os.sep, "/") + "::" + a.split("::", 1)[1]
           for a in config.args if "::" in a]
    large = [i for i in items if i.get_closest_marker("large") and not _named(i, ids)]
    if large:
        config.hook.pytest_deselected(items=large)
        items[:] = [i for i in items if i not in large]
        config.stash[_LARGE] = len(large)


def pytest_terminal_summary(terminalreporter, config):
    if config.stash.get(_LARGE, 0):
        n = config.stash[_LARGE]
        terminalreporter.write_line(f"{n} large test{'s' * (n != 1)} (over 4 GB of memory) left out: "
                                    "python -m pytest -m large")


# Memory back to the system between tests. glibc keeps freed blocks below its mmap threshold
# (which grows to 32 MB after large frees) in the heap: after the SmolLM2 tests the process held
# 1.7 GB that it had freed (0.9 GB after a trim), and the suite's peak is that plus the next
# test's own. A trim, when the resident size has grown 128 MiB since the last one, costs ~50 ms.
_libc = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform.startswith("linux") else None
_trim = getattr(_libc, "malloc_trim", None)   # glibc only
_floor = [0]                                  # resident bytes after the last trim


def _resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield                                     # after the test's fixtures are torn down
    if _trim is None:
        return
    resident = _resident_bytes()
    if resident > _floor[0] + (128 << 20):
        gc.collect()
        _trim(0)
        _floor[0] = _resident_bytes()
    else:
        _floor[0] = min(_floor[0], resident)
