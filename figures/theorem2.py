"""Theorem 2 figure: accuracy on each split over training (one panel per split), and the EX-RM
direction against the max-margin separator, with the O(1/log t) rate of constant-step GD."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import pyplot, save

SPLITS = {"train": "training pairs", "seen_tokens": "new prompts, seen tokens",
          "unseen_tokens": "new prompts, unseen tokens"}
# EX-RM a wide pale band, IM-RM a thin dark line with markers: where they coincide both show.
STYLE = {"ex_rm": dict(color="C0", lw=5, alpha=0.45, label="EX-RM"),
         "im_rm": dict(color="C3", lw=1.2, marker="x", ms=4, label="IM-RM")}


def what_ran(results: dict) -> str:
    cfg, sizes = results["config"], results.get("sizes", {})
    if sizes.get("source", "synthetic") != "synthetic":
        return f"one draw: {Path(sizes['source']).name}"
    return f"mean over {cfg['n_seeds']} seeds ({cfg['seed']}..{cfg['seed'] + cfg['n_seeds'] - 1})"


def draw(results: dict, stem: Path) -> None:
    """Draw from a sims.theorem2 results dict to stem.png and stem.pdf."""
    plt = pyplot()
    h = results["history"]
    splits = [s for s in SPLITS if s in h["ex_rm"]]
    steps = np.asarray(h["steps"], dtype=float)
    fig, axes = plt.subplots(1, len(splits) + 1, figsize=(3.3 * (len(splits) + 1), 3.4))
    ties = results["config"].get("ties", "half")
    tie_value = 0.5 if ties == "half" else 0.0
    for ax, split in zip(axes, splits):
        ax.axhline(0.5, color="grey", lw=0.8, ls=":", zorder=0)
        # what Theorem 2 predicts: EX-RM ranks as u* does; IM-RM ties every unseen pair
        u_star = results["max_margin"].get(f"{split}_accuracy")
        if u_star is not None:
            ax.axhline(u_star, color="C0", lw=0.9, ls="--", zorder=1, label="predicted: u*'s accuracy")
        if split == "unseen_tokens":
            ax.axhline(tie_value, color="C3", lw=0.9, ls="--", zorder=1, label="predicted: all ties")
        for model in ("ex_rm", "im_rm"):
            acc = np.asarray(h[model][split])
            ax.plot(steps, acc, **STYLE[model], markevery=4)
            ax.annotate(f"{acc[-1]:.3f}", (steps[-1], acc[-1]), xytext=(3, 6 if model == "ex_rm" else -10),
                        textcoords="offset points", color=STYLE[model]["color"], fontsize=7)
        # symlog: linear through step 0 (initialisation), logarithmic from step 1 on
        ax.set_xscale("symlog", linthresh=1, linscale=0.4)
        ax.set_xlim(0, steps[-1] * 3)
        ax.set_ylim(-0.04, 1.08)
        ax.set_title(SPLITS[split])
        ax.set_xlabel("gradient step (0 = initialisation)")
    axes[0].set_ylabel(f"accuracy (a tie counts {'1/2' if ties == 'half' else '0'})")
    axes[0].legend(loc="lower right")
    if "unseen_tokens" in splits:
        axes[splits.index("unseen_tokens")].legend(loc="lower right", fontsize=6)

    ax = axes[-1]
    d = results["ex_rm_direction"]
    rule = results["config"]["step_rule"]
    keep = np.asarray(d["steps"]) > 0          # u(0) = 0 has no direction
    t = np.asarray(d["steps"], dtype=float)[keep]
    ax.loglog(t, np.asarray(d["one_minus_cosine"])[keep], color="C0", label=f"{rule} steps (this run)")
    if d["one_minus_cosine_constant_step"]:
        const = np.asarray(d["one_minus_cosine_constant_step"])[keep]
        ax.loglog(t, const, color="C2", label="constant steps (the paper's GD)")
        ax.loglog(t, const[-1] * np.log(1 + t[-1]) / np.log(1 + t), "k--", lw=0.8, label="c / log t")
    ax.axhline(results["config"]["direction_tol"], color="grey", lw=0.6, ls=":", label="PASS threshold")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("1 - cos(u_t, u*)")
    ax.set_title("EX-RM direction vs the max-margin u*")
    ax.legend(loc="lower left")
    im_says = "stays at chance" if ties == "half" else "ties every pair (a tie counts 0)"
    fig.suptitle(f"Theorem 2 replay, {what_ran(results)}: IM-RM {im_says} on unseen tokens, "
                 f"EX-RM follows u*", fontsize=10)
    fig.tight_layout()
    save(fig, Path(stem))
    plt.close(fig)


def draw_real(results: dict, stem: Path) -> None:
    """The same figure from a `python -m sims.hf theorem2` results dict (its replay on a real
    model's states)."""
    draw(results["replay"], stem)
