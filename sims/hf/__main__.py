"""python -m sims.hf: see sims/hf/__init__.py."""
from sims.hf.cli import main

raise SystemExit(main())
