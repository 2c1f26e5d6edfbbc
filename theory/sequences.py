"""Sets of token sequences with their hidden representations, padded once for the user.

A `Seqs` holds N sequences: h (*B, N, L, D), the hidden representation h_{x,y<k} at the
position that predicts token k; y (*B, N, L) the tokens; mask (*B, N, L), True for real
tokens. `pack` builds one from ragged lists, so responses of different lengths share a batch
without hand padding (padded positions carry token 0 and zero vectors, and are masked out).
"""
from __future__ import annotations

from typing import NamedTuple

from theory.backend import device, namespace


class Seqs(NamedTuple):
    h: object      # (*B, N, L, D)
    y: object      # (*B, N, L) integer token ids
    mask: object   # (*B, N, L) bool


def pack(hs, ys) -> Seqs:
    """Pad lists of per-sequence h (L_i, D) and y (L_i,) into a Seqs (same backend as hs)."""
    if len(hs) != len(ys) or not hs:
        raise ValueError(f"pack needs equally many (>0) hidden-state and token arrays, got {len(hs)} and {len(ys)}")
    xp = namespace(*hs)
    dev = device(hs[0])
    L, D = max(h.shape[0] for h in hs), hs[0].shape[-1]
    h_out = xp.zeros((len(hs), L, D), dtype=hs[0].dtype, device=dev)
    y_out = xp.zeros((len(hs), L), dtype=xp.int64, device=dev)
    mask = xp.zeros((len(hs), L), dtype=xp.bool, device=dev)
    for i, (h, y) in enumerate(zip(hs, ys)):
        if h.shape[0] != y.shape[0] or h.shape[-1] != D:
            raise ValueError(f"sequence {i}: h has shape {tuple(h.shape)}, y {tuple(y.shape)}; expected (L, {D}) and (L,)")
        n = h.shape[0]
        h_out[i, :n] = h
        y_out[i, :n] = xp.astype(y, xp.int64)
        mask[i, :n] = True
    return Seqs(h_out, y_out, mask)


def full(h, y) -> Seqs:
    """A Seqs with every position real (h (N, L, D), y (N, L))."""
    xp = namespace(h)
    return Seqs(h, y, xp.ones(y.shape, dtype=xp.bool, device=device(h)))
