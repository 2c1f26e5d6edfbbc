"""Section 5.1 miniature figure: accuracy per split over training for each reward model and
variant (mean over seeds, band = min..max), rho between the paraphrase and trained answer
tokens, and the backbone's synonym cosines."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import pyplot, save

SPLITS = ("train", "test", "para_train", "para_test", "domain_shift")
LABELS = {"train": "train pairs", "test": "test prompts", "para_train": "paraphrased, train prompts",
          "para_test": "paraphrased, test prompts", "domain_shift": "domain shift"}
KINDS = {"ex_rm": "EX-RM", "im_rm": "IM-RM", "ex_grm": "EX-GRM"}
MARKERS = ("o", "s", "^", "v", "D")


def _heat(ax, fig, rows, cols, M, title, vmax):
    im = ax.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set_xticks(range(len(cols)), cols, rotation=45, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{M[i][j]:.2f}", ha="center", va="center", fontsize=6)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)


def draw(results: dict, stem: Path) -> None:
    plt = pyplot()
    per_seed = results["per_seed"]
    variants = results["config"]["variants"].split(",")
    fig, axes = plt.subplots(3, len(variants) + 1, figsize=(4.2 * (len(variants) + 1), 9.5), squeeze=False)
    for col, variant in enumerate(variants):
        for row, kind in enumerate(KINDS):
            ax = axes[row, col]
            key = f"{kind}/{variant}"
            if key not in per_seed[0]["models"]:
                ax.axis("off")
                continue
            epochs = [h["epoch"] for h in per_seed[0]["models"][key]["history"]]
            for i, split in enumerate(SPLITS):
                a = np.array([[h[split]["accuracy"] for h in r["models"][key]["history"]] for r in per_seed])
                # thick to thin, with their own markers: curves that coincide (e.g. several
                # splits at 1.0) stay visible as nested lines instead of hiding each other
                ax.plot(epochs, a.mean(0), "-", marker=MARKERS[i], ms=9 - 1.5 * i, lw=4.5 - 0.9 * i,
                        color=f"C{i}", mfc="none" if i < 2 else f"C{i}", label=LABELS[split], zorder=2 + i)
                ax.fill_between(epochs, a.min(0), a.max(0), color=f"C{i}", alpha=0.15, lw=0)
            ax.axhline(0.5, color="grey", lw=0.6)
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(f"{KINDS[kind]}, {variant}" + (" (tied U)" if results["config"]["tied"] else ""))
            ax.set_xlabel("epoch")
            ax.set_ylabel("accuracy")
            if row == 0 and col == 0:
                ax.legend(fontsize=6)
    s = results["summary"]
    words = list(s["rho_init"])
    trained = list(next(iter(s["rho_init"].values())))
    M = [[s["rho_init"][w][t] for t in trained] for w in words]
    _heat(axes[0, -1], fig, words, trained, M, "rho at init (paraphrase vs trained answer position)", 1.0)
    key = "im_rm/frozen" if "im_rm/frozen" in per_seed[0]["models"] else "im_rm/full"
    rf = [r["models"][key]["rho_final"] for r in per_seed]
    M = [[float(np.mean([r[w][t] for r in rf])) for t in trained] for w in words]
    _heat(axes[1, -1], fig, words, trained, M, f"rho after training ({key})", 1.0)
    syn = np.mean([r["synonyms"]["centred"]["matrix"] for r in per_seed], axis=0)
    names = per_seed[0]["synonyms"]["words"]
    _heat(axes[2, -1], fig, names, names, syn.tolist(), "backbone: cosine of centred last states", 1.0)
    fig.suptitle(f"Persona miniature: {len(per_seed)} seeds (mean, band min..max; coinciding curves drawn "
                 f"thick to thin); chance = grey line")
    fig.tight_layout()
    save(fig, Path(stem))
    plt.close(fig)
