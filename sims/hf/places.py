"""Where each pair of a pairs file sits, as a reader finds it: 'line 3' in JSON Lines (from 1,
blank lines counted) or 'row 2' in a Parquet file or `save_to_disk` folder (from 0, as
`dataset[i]`); the screen of `sims.hf step` and `sims.hf train --forecast` names pairs so.

sims.hf.pairs.read_pairs keeps one pair per non-blank JSON line and one per table row, in order,
so the places follow from the file alone (tests/sims/test_hf_formats.py holds the two together).
"""
from __future__ import annotations

from pathlib import Path


def places(path: str, n: int) -> list[str]:
    """The places of the `n` pairs read_pairs(path) returned."""
    from sims.hf.pairs import _split_suffix
    file, _ = _split_suffix(path)
    if file.is_dir() or file.suffix in (".parquet", ".pq"):
        return [f"row {i}" for i in range(n)]
    lines = [i for i, raw in enumerate(Path(file).read_bytes().splitlines(), 1) if raw.strip()]
    return [f"line {i}" for i in lines[:n]]
