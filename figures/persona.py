"""Section 5.1 miniature figure: accuracy per split over training for each reward model and
variant (mean over seeds, bars = min..max), against the paper's numbers; rho between the
paraphrase and trained answer tokens, and the backbone's synonym cosines."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from figures import pyplot, save

SPLITS = ("train", "test", "para_train", "para_test", "domain_shift")
LABELS = {"train": "train pairs", "test": "test prompts", "para_train": "paraphrased, train prompts",
          "para_test": "paraphrased, test prompts", "domain_shift": "domain shift"}
KINDS = {"ex_rm": "EX-RM", "im_rm": "IM-RM", "ex_grm": "EX-GRM"}
VARIANTS = {"full": "full fine-tuning", "frozen": "frozen backbone"}
MARKERS = ("o", "s", "^", "v", "D")


def model_name(key: str) -> str:
    """'im_rm/frozen' -> 'IM-RM, frozen backbone'."""
    kind, _, variant = key.partition("/")
    return f"{KINDS.get(kind, kind)}, {VARIANTS.get(variant, variant)}"


def accuracy_panel(ax, epochs, acc: dict, paper: dict, labels: dict = LABELS) -> None:
    """One reward model's accuracy per split over training: the mean over seeds as lines drawn
    thick to thin with their own markers (curves that coincide, e.g. several splits at 1.0, stay
    visible as nested lines), min..max over seeds as error bars shifted a little per split (areas
    would blend into one colour), and the paper's number per split as short bars right of the
    last epoch, side by side.  acc: split -> (seeds, checkpoints); paper: split -> accuracy or None."""
    epochs = np.asarray(epochs, dtype=float)
    span = max(epochs[-1] - epochs[0], 1e-12)
    for i, split in enumerate(acc):
        a = np.asarray(acc[split], dtype=float)
        mean = a.mean(0)
        # markers at about a dozen checkpoints, so that per-epoch curves (51 points) stay readable
        ax.plot(epochs, mean, "-", marker=MARKERS[i], ms=9 - 1.5 * i, lw=4.5 - 0.9 * i, color=f"C{i}",
                mfc="none" if i < 2 else f"C{i}", zorder=2 + i, markevery=max(1, len(epochs) // 12))
        if a.shape[0] > 1:
            ax.errorbar(epochs + (i - 2) * 0.012 * span, mean, yerr=[mean - a.min(0), a.max(0) - mean], fmt="none",
                        ecolor=f"C{i}", elinewidth=1, capsize=2, alpha=0.8, zorder=8)
        if paper.get(split) is not None:
            # side by side: several of the paper's numbers share a level (1.00 on four splits)
            ax.plot([epochs[-1] + (0.05 + 0.025 * i) * span], [paper[split]], marker="_", ms=6, mew=2.5,
                    color=f"C{i}", zorder=10)
    if not any(paper.get(s) is not None for s in acc):
        ax.text(0.98, 0.03, "no paper number", transform=ax.transAxes, ha="right", va="bottom", fontsize=6,
                color="grey")
    ax.axhline(0.5, color="grey", lw=0.6)
    ax.set_xlim(epochs[0] - 0.04 * span, epochs[-1] + 0.2 * span)
    ax.set_xticks([t for t in ax.get_xticks() if epochs[0] <= t <= epochs[-1]])   # none under the paper's bars
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("epoch")


def split_legend(fig, labels: dict, paper_text: str) -> None:
    """One legend for every accuracy panel, below the figure (no panel hides a curve under it)."""
    handles = [Line2D([], [], marker=MARKERS[i], ms=9 - 1.5 * i, lw=4.5 - 0.9 * i, color=f"C{i}",
                      mfc="none" if i < 2 else f"C{i}", label=text) for i, text in enumerate(labels.values())]
    handles += [Line2D([], [], color="k", marker="|", ms=8, ls="none", label="min..max over seeds"),
                Line2D([], [], color="k", marker="_", ms=6, mew=2.5, ls="none", label=paper_text),
                Line2D([], [], color="grey", lw=0.6, label="chance")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), fontsize=7,
               frameon=False)


def _heat(ax, fig, rows, cols, M, title):
    """M on a colour scale symmetric about 0 and fitted to M's own range (a fixed +-1 would
    leave values near -0.1 white), each cell annotated."""
    M = np.asarray(M, dtype=float)
    vmax = max(float(np.max(np.abs(M))), 1e-12)
    im = ax.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set_xticks(range(len(cols)), cols, rotation=45, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for (i, j), v in np.ndenumerate(M):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                color="white" if abs(v) > 0.6 * vmax else "black")
    ax.set_title(f"{title}\n(colour scale +-{vmax:.2f})")
    fig.colorbar(im, ax=ax, fraction=0.046)


def draw(results: dict, stem: Path) -> None:
    plt = pyplot()
    per_seed = results["per_seed"]
    variants = results["config"]["variants"].split(",")
    paper = results.get("paper", {})
    fig, axes = plt.subplots(3, len(variants) + 1, figsize=(4.2 * (len(variants) + 1), 9.8), squeeze=False)
    for col, variant in enumerate(variants):
        for row, kind in enumerate(KINDS):
            ax = axes[row, col]
            key = f"{kind}/{variant}"
            if key not in per_seed[0]["models"]:
                ax.axis("off")
                continue
            epochs = [h["epoch"] for h in per_seed[0]["models"][key]["history"]]
            acc = {s: [[h[s]["accuracy"] for h in r["models"][key]["history"]] for r in per_seed] for s in SPLITS}
            ref = {**paper.get(kind, {}), "domain_shift": paper.get("real_data_domain_shift", {}).get(kind)}
            accuracy_panel(ax, epochs, acc, ref if kind in paper else {})
            ax.set_title(model_name(key) + (" (tied U)" if results["config"]["tied"] else ""))
            ax.set_ylabel("accuracy")
    s = results["summary"]
    words = list(s["rho_init"])
    trained = list(next(iter(s["rho_init"].values())))
    M = [[s["rho_init"][w][t] for t in trained] for w in words]
    _heat(axes[0, -1], fig, words, trained, M, "rho at init (paraphrase vs trained answer position)")
    key = "im_rm/frozen" if "im_rm/frozen" in per_seed[0]["models"] else "im_rm/full"
    rf = [r["models"][key]["rho_final"] for r in per_seed]
    M = [[float(np.mean([r[w][t] for r in rf])) for t in trained] for w in words]
    _heat(axes[1, -1], fig, words, trained, M, f"rho after training ({model_name(key)})")
    syn = np.mean([r["synonyms"]["centred"]["matrix"] for r in per_seed], axis=0)
    names = per_seed[0]["synonyms"]["words"]
    _heat(axes[2, -1], fig, names, names, syn, "backbone: cosine of centred last states")
    fig.suptitle(f"Persona miniature: {len(per_seed)} seeds (mean; bars min..max); short bars right of the last "
                 f"epoch = the paper's numbers (1B LMs; domain shift: Sec. 5.2's real-data average)")
    fig.tight_layout()
    split_legend(fig, LABELS, "paper's number")
    save(fig, Path(stem))
    plt.close(fig)
