"""Section 5.1 explained along the way (python -m sims.persona_real.along): each model's accuracy
per split over training; for full fine-tuning, Eq. 5 (the unembedding alone, the states fixed)
against the real step of every parameter at every checkpoint, correlation and sign agreement,
beside the full step's own tangent; and, per IM-RM, the forecast's recall and precision per
evaluation set beside the baseline."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import pyplot, save
from figures.persona import accuracy_panel, split_legend
from figures.persona_real import LABELS, SPLITS, model_name

WHO = {"adam": "A: forecast, AdamW's first step", "gd": "G: forecast, a GD step (Eq. 5's)",
       "baseline": "B: baseline, a response shares no token with the training responses"}


def _agreement_panel(ax, probes) -> None:
    ep = [p["epoch"] for p in probes]
    series = [("eq5_vs_actual", "correlation", "C0", "-", "o", "Eq. 5 vs the real step: correlation"),
              ("eq5_vs_actual", "sign_agreement", "C1", "--", "^", "Eq. 5 vs the real step: sign agreement"),
              ("eq5_vs_actual", "margin_sign_agreement", "C4", "-.", "v",
               "Eq. 5 vs the real step: sign of each pair's margin"),
              ("tangent_vs_actual", "correlation", "C2", ":", "x", "the full step's tangent vs it: correlation")]
    for i, (key, stat, color, ls, marker, label) in enumerate(series):
        ax.plot(ep, [np.nan if p[key][stat] is None else p[key][stat] for p in probes], ls, color=color,
                marker=marker, ms=7 - i, mfc="none", lw=2.2 - 0.4 * i, label=label)
    iv = [(p["epoch"], p["interval"]["sign_agreement"]) for p in probes if p.get("interval")]
    if iv:
        ax.plot(*zip(*iv), ":", color="C3", marker="s", ms=3,
                label="Eq. 5 vs Adam's steps to the next checkpoint: sign agreement")
    ax.axhline(0, color="grey", lw=0.4)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("epoch")
    ax.set_title("IM-RM, paraphrase rewards: Eq. 5 at each checkpoint", fontsize=9)
    ax.legend(fontsize=6, loc="lower left")


def _forecast_panel(ax, spec, scores) -> None:
    """Recall and precision per evaluation set where they are defined; under each set, how many
    pairs ended wrong and how many each forecast flagged (no bar: nothing to divide by)."""
    names = [n for n in scores if n != "train"]
    x = np.arange(len(names))
    width = 0.13
    for j, (who, label) in enumerate(WHO.items()):
        for k, (stat, hatch) in enumerate((("recall", None), ("precision", "//"))):
            vals = [scores[n][who][stat] for n in names]
            ax.bar(x + (2 * j + k - 2.5) * width, [np.nan if v is None else v for v in vals], width,
                   color=f"C{j + 5}", hatch=hatch, edgecolor="white", label=f"{label}: {stat}")
    ax.set_xticks(x, [f"{n}\n{scores[n]['ended_wrong']}/{scores[n]['pairs']} wrong\nflagged A/G/B "
                      + "/".join(str(scores[n][w]["flagged"]) for w in WHO) for n in names], fontsize=6)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{model_name(spec)}\nthe forecast against the end of training (no bar: nothing to divide by)",
                 fontsize=7)
    ax.legend(fontsize=5, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=1, frameon=False)


def draw(results: dict, stem: Path) -> None:
    plt = pyplot()
    specs = list(results["models"])
    probes = results["eq5_along"]["probes"]
    ims = [spec for spec in specs if spec.startswith("im/")]
    top = len(specs) + bool(probes)
    rows = 1 if top + len(ims) <= 4 else 2     # many panels: the forecasts on a row of their own
    cols = top + len(ims) if rows == 1 else max(top, len(ims))
    fig, grid = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    axes = list(grid[0])
    below = axes if rows == 1 else list(grid[1])
    s = results["settings"]
    for spec in specs:
        ax = axes.pop(0)
        hist, st = results["models"][spec]["history"], results["models"][spec]["settings"]
        acc = {n: [[h[n]["accuracy"] for h in hist]] for n in SPLITS}
        accuracy_panel(ax, [h["epoch"] for h in hist], acc, results["paper"].get(spec.partition("/")[0], {}))
        plural = "" if st["epochs"] == 1 else "s"
        ax.set_title(f"{model_name(spec)}\nAdamW lr {st['lr']:g}, {st['epochs']} epoch{plural}",
                     fontsize=9)
        ax.set_ylabel("accuracy (ties 1/2)")
    if probes:
        _agreement_panel(axes.pop(0), probes)
    for spec in ims:
        _forecast_panel(below.pop(0), spec, results["forecast"]["scores"][spec])
    for ax in axes + ([] if rows == 1 else below):
        ax.set_visible(False)
    fig.suptitle(f"Persona on {results['data']['model']} (AdamW, batch {s['batch']}, weight decay 0), one seed; "
                 f"short bars right of the last epoch = the paper's numbers", fontsize=9)
    fig.tight_layout()
    split_legend(fig, LABELS, "paper's number")
    save(fig, Path(stem))
    plt.close(fig)
