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
spaces ("3 0 7 ..."). Both files are written or neither; an --out that holds them already
needs --force. The same flags write the same bytes (tests/sims/test_section32.py regenerates the committed files and compares them).
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from sims import atomic, cli
from sims.cli import UsageError
from sims.graphs import is_hamiltonian_cycle, planted_graphs, random_non_cycles

OUT = Path("data/section32")
MIN_VERTICES = 4        # on 3 the planted cycle is the whole (complete) graph: no rejected order
MAX_VERTICES = 10       # the prompt's vertex names are single digits, one token each
MAX_PAIRS = 100_000     # per split; past this the rows stop fitting a laptop's memory
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
    """Both files or neither: each is written beside its target and renamed over it only once both
    are written (sims.atomic); a folder made for them goes again if that fails."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name, count in (("train", n_train), ("test", n_test)):
        try:
            splits[name] = pairs(rng, count, vertices, p)
        except ValueError as exc:         # a complete graph: sims.graphs.random_non_cycles
            raise UsageError(f"{name} {str(exc).split(' (')[0]}: lower --p or raise --vertices") from None
    text = {name: "".join(json.dumps(r) + "\n" for r in rows) for name, rows in splits.items()}
    try:
        with atomic.file(out / "train.jsonl") as a, atomic.file(out / "test.jsonl") as b:
            a.write_text(text["train"])
            b.write_text(text["test"])
    except OSError as exc:
        raise cli.RunError(f"--out {out}: cannot write ({exc.strerror or exc}); nothing was written") from None
    return {name: len(rows) for name, rows in splits.items()}


def check(args) -> None:
    if not 1 <= args.n_train <= MAX_PAIRS or not 1 <= args.n_test <= MAX_PAIRS:
        raise UsageError(f"--n-train and --n-test: each in 1..{MAX_PAIRS}")
    if not MIN_VERTICES <= args.vertices <= MAX_VERTICES:
        raise UsageError(f"--vertices {args.vertices}: must be in {MIN_VERTICES}..{MAX_VERTICES} (a vertex is one "
                         f"digit; on 3 vertices the planted cycle is the whole graph)")
    if not math.isfinite(args.p) or not 0 <= args.p < 1:
        raise UsageError(f"--p {args.p}: must be in [0, 1) (at 1 every vertex order is a cycle: no rejected response)")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed {args.seed}: must be in 0 .. {2**32 - 1}")
    if not args.out.strip():
        raise UsageError("--out must name a folder (got an empty string)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: a file is there, not a folder")
    there = [f for f in ("train.jsonl", "test.jsonl") if (out / f).exists()]
    if there and not args.force:
        raise UsageError(f"--out {args.out}: holds {' and '.join(there)} already; --force replaces them")
    if any((out / f).is_dir() for f in there):
        raise UsageError(f"--out {args.out}: {there[0]} there is a folder, not a file")


def main(argv=None) -> int:
    ap = cli.Parser(prog="python -m sims.section32.data", description=__doc__,
                    formatter_class=cli.HelpFormatter)
    ap.add_argument("--out", default=str(OUT), help="folder for train.jsonl and test.jsonl")
    ap.add_argument("--force", action="store_true", help="replace train.jsonl and test.jsonl in --out")
    ap.add_argument("--n-train", type=int, default=1000, help="training pairs (the paper's 1000)")
    ap.add_argument("--n-test", type=int, default=200, help="test pairs (the paper's 200)")
    ap.add_argument("--vertices", type=int, default=10,
                    help=f"vertices per graph, {MIN_VERTICES}..{MAX_VERTICES} (the paper's 10)")
    ap.add_argument("--p", type=float, default=0.2, help="probability of each edge off the planted cycle, in "
                    "[0, 1) (the paper's 0.2)")
    ap.add_argument("--seed", type=int, default=0, help="the generator's seed")

    def body(argv):
        args = ap.parse_args(argv)
        check(args)
        counts = write(Path(args.out), n_train=args.n_train, n_test=args.n_test, vertices=args.vertices,
                       p=args.p, seed=args.seed)
        print(f"wrote {counts['train']} training and {counts['test']} test pairs to {Path(args.out).resolve()}")
        return 0
    return cli.run_cli(body, argv)


if __name__ == "__main__":
    sys.exit(main())
