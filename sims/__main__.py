"""python -m sims: the simulations and benchmarks, one line each (each has its own --help)."""
import importlib
import pkgutil

import sims

EXIT_CODES = ("exit codes: 0 every check passed; 1 a check failed (results still written); 2 bad input (one "
              "`error:` line); 3 a numerical or solver failure that is not the input's fault; 4 a bug in rmgap; "
              "130 interrupted (Ctrl-C); 143 terminated (SIGTERM); 141 the reader closed stdout (e.g. `| head`)")


def main() -> int:
    print("python -m sims.NAME [--help]   (the main job: python -m sims.theorem2 --unseen-tokens)\n")
    for info in sorted(pkgutil.iter_modules(sims.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            mod = importlib.import_module(f"sims.{info.name}")
        except ImportError as exc:        # an optional dependency (e.g. transformers) is missing
            print(f"  sims.{info.name:22} (needs a missing package: {exc.name})")
            continue
        if not hasattr(mod, "main"):      # a library module of the simulations, not a command
            continue
        doc = mod.__doc__ or ""
        print(f"  sims.{info.name:22} {doc.strip().splitlines()[0] if doc.strip() else ''}")
    print(f"\n{EXIT_CODES}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
