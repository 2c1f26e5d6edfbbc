"""Theorem 2 figure: accuracy on each split over training; EX-RM direction vs the O(1/log t) rate."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import FIGURES, save

SPLIT_STYLE = {"train": "-", "seen_tokens": "--", "unseen_tokens": ":"}


def draw(results: dict, stem: Path) -> None:
    """Draw from a sims.theorem2 results dict to stem.png and stem.pdf."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = results["history"]
    t = np.maximum(np.asarray(h["steps"], dtype=float), 0.8)  # step 0 drawn at the left edge
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for model, color, label in (("ex_rm", "C0", "EX-RM"), ("im_rm", "C3", "IM-RM")):
        for split, acc in h[model].items():
            ax1.plot(t, acc, SPLIT_STYLE[split], color=color, label=f"{label}, {split.replace('_', ' ')}")
    ax1.set_xscale("log")
    ax1.set_ylim(-0.03, 1.03)
    ax1.axhline(0.5, color="grey", lw=0.6)
    ax1.set_xlabel("gradient step")
    ax1.set_ylabel("accuracy (ties count 1/2)")
    ax1.set_title("Accuracy during training (mean over seeds)")
    ax1.legend(fontsize=7)

    d = results["ex_rm_direction"]
    rule = results["config"]["step_rule"]
    steps = np.asarray(d["steps"], dtype=float)
    keep = steps > 0
    ax2.loglog(steps[keep], np.asarray(d["one_minus_cosine"])[keep], color="C0", label=f"EX-RM, {rule} steps")
    if d["one_minus_cosine_constant_step"]:
        const = np.asarray(d["one_minus_cosine_constant_step"])[keep]
        ax2.loglog(steps[keep], const, color="C2", label="EX-RM, constant steps (paper's GD)")
        # O(1/log t) guide through the last constant-step point
        tt = steps[keep]
        guide = const[-1] * np.log(1 + tt[-1]) / np.log(1 + tt)
        ax2.loglog(tt, guide, "k--", lw=0.8, label="c / log t")
    ax2.axhline(results["config"]["direction_tol"], color="grey", lw=0.6, ls=":")
    ax2.set_xlabel("gradient step")
    ax2.set_ylabel("1 - cos(u_t, u*)")
    ax2.set_title("EX-RM direction vs the max-margin separator")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    save(fig, Path(stem))
    plt.close(fig)


def make() -> Path:
    """Rebuild figures/theorem2.{png,pdf} from the default seeded run."""
    from sims.theorem2 import Config, run
    results = run(Config(unseen_tokens=True), log=lambda *_: None)
    draw(results, FIGURES / "theorem2")
    return FIGURES / "theorem2.png"
