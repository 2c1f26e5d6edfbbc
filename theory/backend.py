"""One implementation for every backend: NumPy arrays and torch tensors (CPU or CUDA).

Functions in `theory/` take arrays of either kind and return the same kind; they find the
namespace with `namespace(...)` (the array-API standard via `array_api_compat`, as SciPy and
scikit-learn do). `to_numpy` is the one edge where arrays leave their backend (cvxpy,
matplotlib, JSON).
"""
from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, device, is_torch_array

__all__ = ["namespace", "to_numpy", "device", "is_torch_array", "log_softmax", "logsumexp",
           "sigmoid", "softplus", "one_hot", "asarray_like"]


def namespace(*arrays):
    """The array-API namespace shared by `arrays` (None entries are ignored)."""
    return array_namespace(*[a for a in arrays if a is not None])


def to_numpy(x) -> np.ndarray:
    """NumPy copy of an array of any backend/device (the edge for cvxpy, matplotlib, JSON)."""
    if is_torch_array(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def asarray_like(values, like):
    """`values` as an array of the backend, dtype and device of `like`."""
    xp = namespace(like)
    return xp.asarray(values, dtype=like.dtype, device=device(like))


def log_softmax(logits, axis: int = -1):
    """ln softmax(logits) along `axis`, shifted by the max so exp never overflows."""
    xp = namespace(logits)
    shifted = logits - xp.max(logits, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def logsumexp(x, axis: int = -1, keepdims: bool = False):
    """ln sum exp(x) along `axis`, shifted by the max (a row of -inf gives -inf, not NaN)."""
    xp = namespace(x)
    top = xp.max(x, axis=axis, keepdims=True)
    top = xp.where(xp.isfinite(top), top, xp.zeros_like(top))
    out = xp.log(xp.sum(xp.exp(x - top), axis=axis, keepdims=True)) + top
    return out if keepdims else xp.squeeze(out, axis=axis)


def softplus(x):
    """ln(1 + e^x) without overflow."""
    xp = namespace(x)
    return xp.logaddexp(xp.zeros_like(x), x)


def sigmoid(x):
    """1 / (1 + e^-x), computed as exp(-softplus(-x)) so it is stable for any sign."""
    xp = namespace(x)
    return xp.exp(-softplus(-x))


def one_hot(tokens, vocab_size: int, like):
    """e_{tokens}: (..., vocab_size) in the dtype/device of `like`; tokens are integer ids."""
    xp = namespace(like)
    vocab = xp.arange(vocab_size, device=device(like))
    return xp.astype(tokens[..., None] == vocab, like.dtype)
