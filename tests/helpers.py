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
