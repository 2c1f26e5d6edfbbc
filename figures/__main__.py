"""python -m figures [name ...]: rebuild the paper figures (all of them by default)."""
import sys

from figures import dynamics, hamiltonian, theorem2

FIGURES = {"theorem2": theorem2.make, "dynamics": dynamics.make, "hamiltonian": hamiltonian.make}


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        print(f"error: unknown figure {unknown[0]!r}; choose from {', '.join(FIGURES)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"{name}: {FIGURES[name]()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
