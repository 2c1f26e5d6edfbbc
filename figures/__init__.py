"""Paper figures as reproducible artefacts: `python -m figures` rebuilds every one."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "figures"


def save(fig, stem: Path) -> None:
    """PNG for the README, PDF for papers."""
    fig.savefig(stem.with_suffix(".png"), dpi=120, bbox_inches="tight")
    fig.savefig(stem.with_suffix(".pdf"), bbox_inches="tight")
