"""Hamiltonian-cycle data for the Section 3.2 miniature (exact, NumPy).

A graph on n vertices has a planted Hamiltonian cycle (a uniformly random cyclic order) and
every other edge independently with probability p. A response is a vertex order
(v_1, ..., v_n); it is a Hamiltonian cycle when it is a permutation and every consecutive
pair, including (v_n, v_1), is an edge.
"""
from __future__ import annotations

import itertools

import numpy as np


def planted_graphs(rng, count: int, n: int, p: float):
    """Adjacency matrices (count, n, n) bool and the planted cycles (count, n)."""
    adj = rng.random((count, n, n)) < p
    adj = np.triu(adj, 1)
    adj = adj | np.transpose(adj, (0, 2, 1))
    cycles = np.stack([rng.permutation(n) for _ in range(count)])
    rows = np.arange(count)[:, None]
    adj[rows, cycles, np.roll(cycles, -1, axis=1)] = True
    adj[rows, np.roll(cycles, -1, axis=1), cycles] = True
    return adj, cycles


def is_hamiltonian_cycle(adj: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """adj (G, n, n) bool, orders (G, m, n) vertex ids  ->  (G, m): is each a Hamiltonian cycle?"""
    n = adj.shape[-1]
    perm = np.all(np.sort(orders, axis=-1) == np.arange(n), axis=-1)
    g = np.arange(adj.shape[0])[:, None, None]
    edges = adj[g, orders, np.roll(orders, -1, axis=-1)]          # (G, m, n)
    return perm & edges.all(axis=-1)


def random_non_cycles(rng, adj: np.ndarray) -> np.ndarray:
    """One uniformly random vertex order per graph that is not a Hamiltonian cycle (rejection).

    Only a complete graph has no such order (any missing edge can be placed between two
    consecutive vertices); it raises ValueError instead of looping forever.
    """
    count, n = adj.shape[0], adj.shape[-1]
    complete = np.flatnonzero(adj.sum(axis=(1, 2)) == n * (n - 1))
    if complete.size:
        raise ValueError(f"graph {int(complete[0])} is complete: every vertex order is a Hamiltonian "
                         f"cycle, so there is no rejected response (lower p or raise n)")
    out = np.stack([rng.permutation(n) for _ in range(count)])
    bad = is_hamiltonian_cycle(adj, out[:, None, :])[:, 0]
    while bad.any():
        out[bad] = np.stack([rng.permutation(n) for _ in range(int(bad.sum()))])
        bad = is_hamiltonian_cycle(adj, out[:, None, :])[:, 0]
    return out


def all_orders(n: int) -> np.ndarray:
    """Every permutation of n vertices.  (n!, n)."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64)
