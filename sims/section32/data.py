"""The paper's Hamiltonian-cycle pairs (Section 3.2) as text a tokenizer reads.

    python -m sims.section32.data [--out data/section32] [--n-train 1000] [--n-test 200]

Graphs on n = 10 vertices with a planted Hamiltonian cycle and every other edge independently
with probability p = 0.2 (sims.graphs, the miniature's generator); the chosen response is the
planted cycle, the rejected one a uniformly random vertex order that is not a Hamiltonian cycle
of the graph (the paper's task; its 1000 training and 200 test pairs). Train and test graphs
are separate draws of one generator. Each row is {"prompt", "chosen", "rejected", "edges"}:
`sims.hf train` reads the first three and names `edges` as a column it ignores;
`sims.section32.generation` reads `edges` to check what a policy samples.

The text: the prompt lists the edges as "a-b" pairs, smaller vertex first, in order, and asks for
the vertices in the order a cycle visits them; a response is the n vertices separated by single
spaces ("3 0 7 ..."). The files are written whole or not at all; the same flags write the same
bytes (tests/sims/test_section32.py regenerates the committed files and compares them).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from sims import atomic
from sims.cli import EXIT, UsageError
from sims.graphs import is_hamiltonian_cycle, planted_graphs, random_non_cycles

OUT = Path("data/section32")
MAX_VERTICES = 10       # the prompt's vertex names are single digits, one token each
SEPARATORS = re.compile(r"[\s,;\-]+")


def graph_text(adj: np.ndarray) -> str:
    """The prompt for one graph (adjacency (n, n) bool)."""
    n = adj.shape[0]
    edges = ", ".join(f"{a}-{b}" for a, b in zip(*np.nonzero(np.triu(adj, 1))))
    return (f"An undirected graph has the vertices 0 to {n - 1} and the edges {edges}. "
            f"Give a Hamiltonian cycle: every vertex once, in the order the cycle visits them, "
            f"separated by spaces.")


def order_text(order) -> str:
    return " ".join(str(int(v)) for v in order)


def parse_order(text: str, n: int) -> list[int] | None:
    """The vertex order a response names, or None when it is not n vertex ids and nothing else
    (separators may be spaces, commas, semicolons or dashes; anything else makes it invalid)."""
    parts = [p for p in SEPARATORS.split(text.strip()) if p]
    if len(parts) != n or not all(p.isdigit() for p in parts):
        return None
    order = [int(p) for p in parts]
    return order if all(v < n for v in order) else None


def is_valid(text: str, edges, n: int) -> bool:
    """Does the response name a Hamiltonian cycle of the graph with these edges?"""
    order = parse_order(text, n)
    if order is None:
        return False
    return bool(is_hamiltonian_cycle(adjacency(edges, n)[None], np.array(order)[None, None])[0, 0])


def adjacency(edges, n: int) -> np.ndarray:
    adj = np.zeros((n, n), bool)
    for a, b in edges:
        adj[a, b] = adj[b, a] = True
    return adj


def cycle_orders(adj: np.ndarray) -> np.ndarray:
    """Every vertex order that is a Hamiltonian cycle of the graph (each cycle n times, one per
    starting vertex, in both directions), by depth-first search.  -> (m, n) int64."""
    n = adj.shape[0]
    found = []

    def extend(path, seen):
        if len(path) == n:
            if adj[path[-1], path[0]]:
                found.append(list(path))
            return
        for v in np.flatnonzero(adj[path[-1]]):
            if not seen[v]:
                seen[v] = True
                path.append(int(v))
                extend(path, seen)
                path.pop()
                seen[v] = False

    seen = np.zeros(n, bool)
    seen[0] = True
    extend([0], seen)                        # every cycle through vertex 0 first, both directions
    rotations = [np.roll(c, -k) for c in found for k in range(n)]
    return np.array(rotations, dtype=np.int64).reshape(-1, n)


def pairs(rng, count: int, n: int, p: float) -> list[dict]:
    adj, cycles = planted_graphs(rng, count, n, p)
    rejected = random_non_cycles(rng, adj)
    return [{"prompt": graph_text(a), "chosen": order_text(c), "rejected": order_text(r),
             "edges": [[int(x), int(y)] for x, y in zip(*np.nonzero(np.triu(a, 1)))]}
            for a, c, r in zip(adj, cycles, rejected)]


def write(out: Path, *, n_train: int, n_test: int, vertices: int, p: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    splits = {"train": pairs(rng, n_train, vertices, p), "test": pairs(rng, n_test, vertices, p)}
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with atomic.file(out / f"{name}.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {name: len(rows) for name, rows in splits.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.section32.data", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default=str(OUT), help="folder for train.jsonl and test.jsonl")
    ap.add_argument("--n-train", type=int, default=1000, help="training pairs (the paper's 1000)")
    ap.add_argument("--n-test", type=int, default=200, help="test pairs (the paper's 200)")
    ap.add_argument("--vertices", type=int, default=10, help=f"vertices per graph, 3..{MAX_VERTICES} (the paper's 10)")
    ap.add_argument("--p", type=float, default=0.2, help="probability of each edge off the planted cycle, in "
                    "[0, 1) (the paper's 0.2)")
    ap.add_argument("--seed", type=int, default=0, help="the generator's seed")
    args = ap.parse_args(argv)
    try:
        if args.n_train < 1 or args.n_test < 1:
            raise UsageError("--n-train and --n-test: at least 1 pair each")
        if not 3 <= args.vertices <= MAX_VERTICES:
            raise UsageError(f"--vertices {args.vertices}: must be in 3..{MAX_VERTICES} (a vertex is one digit)")
        if not 0 <= args.p < 1:
            raise UsageError(f"--p {args.p}: must be in [0, 1) (at 1 every order is a cycle: no rejected response)")
        if not 0 <= args.seed < 2**32:
            raise UsageError(f"--seed {args.seed}: must be in 0 .. {2**32 - 1}")
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise UsageError(f"--out {args.out}: a file is there, not a folder")
        counts = write(Path(args.out), n_train=args.n_train, n_test=args.n_test, vertices=args.vertices,
                       p=args.p, seed=args.seed)
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT["usage"]
    except OSError as exc:
        print(f"error: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT["usage"]
    print(f"wrote {counts['train']} training and {counts['test']} test pairs to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
