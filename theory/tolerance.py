"""Tolerances from the dtype, in one place (style point 5; cf. SciPy's `xp_assert_close`).

* `default_rtol(dtype) = eps ** 0.75`: 1.8e-12 for float64, 6.3e-6 for float32. Leaves room for the
  rounding of reductions over thousands of terms while staying far below any modelling error
  (an O(eta^2) remainder, a wrong sign of a token coefficient).
* Ties. A reward margin that is exactly zero in exact arithmetic (an IM-RM margin on unseen
  tokens, Theorem 2) comes out of floating point as +-1e-16-sized noise, because it is a
  difference of quantities of size `scale` (log-probabilities, inner products). A margin is a
  tie when `|margin| <= TIE_ULPS * eps * scale`, where `scale` bounds the magnitudes that were
  subtracted to form it. TIE_ULPS = 64 covers the few roundings of a log-softmax and of a dot
  product's partial sums (their error is a small multiple of eps * scale); any true margin
  above it is a genuine preference, any below it is rounding.
"""
from __future__ import annotations

import numpy as np

from theory.backend import to_numpy

TIE_ULPS = 64.0


def eps(dtype) -> float:
    """Machine epsilon of a NumPy or torch floating dtype."""
    if type(dtype).__module__.startswith("torch"):
        import torch
        return float(torch.finfo(dtype).eps)
    return float(np.finfo(dtype).eps)


def default_rtol(dtype) -> float:
    """Default relative tolerance for comparing two computations of the same quantity."""
    return eps(dtype) ** 0.75


def tie_tolerance(dtype, scale):
    """Margins with |margin| below this are ties (see module docstring). `scale` broadcasts."""
    return TIE_ULPS * eps(dtype) * scale


def assert_close(actual, desired, *, rtol=None, atol=0.0, err_msg: str = ""):
    """Assert `actual` ~= `desired` elementwise, with rtol from the dtype unless given.

    Comparison is relative to the largest |desired| entry (a norm-wise check), so entries that
    are near zero by cancellation are judged on the scale of the whole array.
    """
    a, d = to_numpy(actual), to_numpy(desired)
    dtype = np.result_type(a.dtype, d.dtype) if a.dtype.kind == "f" else np.float64
    tol = default_rtol(dtype) if rtol is None else rtol
    if a.shape != d.shape:
        raise AssertionError(f"shape mismatch {a.shape} vs {d.shape} {err_msg}")
    scale = float(np.max(np.abs(d))) if d.size else 0.0
    err = float(np.max(np.abs(a - d))) if d.size else 0.0
    if not (err <= atol + tol * scale) or not np.all(np.isfinite(a)):
        raise AssertionError(
            f"max abs error {err:.3e} > atol {atol:.1e} + rtol {tol:.1e} * scale {scale:.3e} {err_msg}")

