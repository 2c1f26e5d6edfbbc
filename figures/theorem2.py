"""Theorem 2 figure: accuracy on each split over training (one panel per split) against what
Theorem 2 predicts there, and the EX-RM direction against the max-margin separator, with the
O(1/log t) rate of constant-step GD."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from figures import pyplot, save

SPLITS = {"train": "training pairs", "seen_tokens": "new prompts, seen tokens",
          "unseen_tokens": "new prompts, unseen tokens"}
NAMES = {"ex_rm": "EX-RM", "im_rm": "IM-RM"}
# EX-RM a wide pale band, IM-RM a thin dark line with markers: where they coincide both show.
STYLE = {"ex_rm": dict(color="C0", lw=5, alpha=0.45), "im_rm": dict(color="C3", lw=1.2, marker="x", ms=4)}
# Predicted levels are dashed in the model's colour; the two dash patterns interleave, so two
# predictions at one level (both 1 on the training pairs) show as alternating blue and red.
DASH = {"ex_rm": (0, (4, 4)), "im_rm": (4, (4, 4))}


def what_ran(results: dict) -> str:
    cfg, sizes = results["config"], results.get("sizes", {})
    if sizes.get("source", "synthetic") != "synthetic":
        return f"one draw: {Path(sizes['source']).name}"
    return f"mean over {cfg['n_seeds']} seeds ({cfg['seed']}..{cfg['seed'] + cfg['n_seeds'] - 1})"


def predicted(results: dict, model: str, split: str) -> tuple[float | None, str]:
    """Theorem 2's level for one model on one split, and its legend text (paper_notes §3)."""
    tie_value = 0.5 if results["config"].get("ties", "half") == "half" else 0.0
    if model == "ex_rm":           # EX-RM ranks as u*, its limit direction, does
        level = results["max_margin"].get(f"{split}_accuracy")
        return level, ("" if level is None else f"u*'s accuracy {level:.3f}")
    if split == "train":
        return 1.0, "-> 1 (separable)"
    if split == "unseen_tokens":
        return tie_value, f"{tie_value:.3f} (every pair a tie)"
    return None, "no level (moves with <h_xbar, h_x>)"


def _accuracy_panel(ax, results: dict, split: str, steps, chance_in_legend: bool) -> None:
    h = results["history"]
    ax.axhline(0.5, color="grey", lw=0.8, ls=":", zorder=0, label="chance" if chance_in_legend else None)
    curves = {m: np.asarray(h[m][split], dtype=float) for m in NAMES}
    handles = []
    for model, name in NAMES.items():
        acc = curves[model]
        handles += ax.plot(steps, acc, **STYLE[model], markevery=4, label=f"{name} measured (end {acc[-1]:.3f})")
        level, text = predicted(results, model, split)
        if level is None:       # the legend still says why no line is drawn
            handles.append(Line2D([], [], ls="none", label=f"{name} predicted: {text}"))
        else:
            handles.append(ax.axhline(level, color=STYLE[model]["color"], lw=1.0, ls=DASH[model], zorder=3,
                                      label=f"{name} predicted: {text}"))
    if chance_in_legend:
        handles = ax.get_lines()[:1] + handles
    coincide = np.allclose(curves["ex_rm"], curves["im_rm"], rtol=0, atol=1e-9)
    ax.legend(handles=handles, loc="best", fontsize=6,
              title="EX-RM and IM-RM coincide\n(wide band, thin line)" if coincide else None, title_fontsize=6)
    # symlog: linear through step 0 (initialisation), logarithmic from step 1 on
    ax.set_xscale("symlog", linthresh=1, linscale=0.4)
    ax.set_xlim(0, steps[-1] * 2)   # room for the predicted levels past the last step
    ax.set_ylim(-0.04, 1.08)
    ax.set_title(SPLITS[split])
    ax.set_xlabel("gradient step (0 = initialisation)")


def _positive(t, y):
    """The points a log axis can show, and how many it cannot (1 - cos exactly 0)."""
    y = np.asarray(y, dtype=float)
    ok = y > 0
    return t[ok], y[ok], int(np.sum(~ok))


def _direction_panel(ax, results: dict) -> None:
    d = results["ex_rm_direction"]
    rule, tol = results["config"]["step_rule"], results["config"]["direction_tol"]
    keep = np.asarray(d["steps"]) > 0          # u(0) = 0 has no direction
    t_all = np.asarray(d["steps"], dtype=float)[keep]
    ax.set_title("EX-RM direction vs the max-margin u*")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("1 - cos(u_t, u*)")
    t, gap, zeros = _positive(t_all, np.asarray(d["one_minus_cosine"])[keep])
    if t.size == 0:
        # a log axis cannot show zeros: say so instead of leaving an empty panel
        dim = results.get("sizes", {}).get("dim")
        why = " (D = 1: every u_t is parallel to u*)" if dim == 1 else ""
        text = textwrap.fill(f"1 - cos(u_t, u*) is 0 at every step{why}: nothing to draw on a log axis", 32)
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    note = f"; {zeros} checkpoints at exactly 0 not drawn" if zeros else ""
    ax.loglog(t, gap, color="C0", label=f"{rule} steps (this run{note})")
    tc, const = t, gap                       # the paper's constant-step GD: this run's, or its own
    if d["one_minus_cosine_constant_step"]:
        tc, const, zeros_c = _positive(t_all, np.asarray(d["one_minus_cosine_constant_step"])[keep])
        if tc.size:
            note = f"; {zeros_c} at exactly 0 not drawn" if zeros_c else ""
            ax.loglog(tc, const, color="C2", label=f"constant steps (the paper's GD{note})")
    if tc.size and (rule == "constant" or d["one_minus_cosine_constant_step"]):
        ax.loglog(tc, const[-1] * np.log(1 + tc[-1]) / np.log(1 + tc), "k--", lw=0.8, label="c / log t")
    ax.axhline(tol, color="grey", lw=0.6, ls=":", label=f"PASS threshold {tol:g}")
    ax.legend(loc="best", fontsize=6)


def draw(results: dict, stem: Path) -> None:
    """Draw from a sims.theorem2 results dict to stem.png and stem.pdf."""
    plt = pyplot()
    h = results["history"]
    splits = [s for s in SPLITS if s in h["ex_rm"]]
    steps = np.asarray(h["steps"], dtype=float)
    fig, axes = plt.subplots(1, len(splits) + 1, figsize=(3.6 * (len(splits) + 1), 3.6))
    ties = results["config"].get("ties", "half")
    for i, (ax, split) in enumerate(zip(axes, splits)):
        _accuracy_panel(ax, results, split, steps, chance_in_legend=i == 0)
    axes[0].set_ylabel(f"accuracy (a tie counts {'1/2' if ties == 'half' else '0'})")
    _direction_panel(axes[-1], results)
    im_says = "stays at chance" if ties == "half" else "ties every pair (a tie counts 0)"
    fig.suptitle(f"Theorem 2 replay, {what_ran(results)}: IM-RM {im_says} on unseen tokens, "
                 f"EX-RM follows u*  (dashed: Theorem 2's prediction)", fontsize=10)
    fig.tight_layout()
    save(fig, Path(stem))
    plt.close(fig)


def draw_real(results: dict, stem: Path) -> None:
    """The same figure from a `python -m sims.hf theorem2` results dict (its replay on a real
    model's states)."""
    draw(results["replay"], stem)
