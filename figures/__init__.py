"""Paper figures as reproducible artefacts, drawn from results files only.

`python -m figures` reruns the canonical runs whose results are missing or stale, redraws
every figure from results/, and renders the measured numbers into README.md, docs/*.md and
paper_checks.md. Each `figures/<name>.py` has `draw(results, stem)`; drawing never reruns a
simulation. Files are byte-reproducible: no timestamps or version strings in their metadata.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "figures"
RESULTS = ROOT / "results"

# No creation dates or software versions: the same results give the same bytes.
_METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}


def save(fig, stem: Path) -> None:
    """stem.png for the README (120 dpi) and stem.pdf for papers."""
    import matplotlib
    matplotlib.rcParams["svg.hashsalt"] = "rmgap"
    stem = Path(stem)
    fig.savefig(stem.with_suffix(".png"), dpi=120, bbox_inches="tight", metadata=_METADATA["png"])
    fig.savefig(stem.with_suffix(".pdf"), bbox_inches="tight", metadata=_METADATA["pdf"])


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend, with fixed fonts and sizes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcdefaults()
    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7})
    return plt
