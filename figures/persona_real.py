"""Section 5.1 on SmolLM2-135M-Instruct (python -m sims.persona_real): accuracy per split over
training for each reward model and variant (mean over seeds, band = min..max; the paper's
numbers as dashed marks at the right edge), and the explanation's probe: the predicted change of
each paraphrase reward under one GD step (Eq. 5 / the EX-RM formula) against the real step."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import pyplot, save

SPLITS = ("train", "test", "para_train", "para_test", "domain_shift")
LABELS = {"train": "train pairs", "test": "test prompts", "para_train": "paraphrased, train prompts",
          "para_test": "paraphrased, test prompts", "domain_shift": "domain shift (factual)"}
MARKERS = ("o", "s", "^", "v", "D")


def draw(results: dict, stem: Path) -> None:
    plt = pyplot()
    per_seed = results["per_seed"]
    specs = list(per_seed[0]["models"])
    probes = results["explanation"]["probe"]
    fig, axes = plt.subplots(2, len(specs), figsize=(3.8 * len(specs), 7.2), squeeze=False)
    for col, spec in enumerate(specs):
        ax = axes[0, col]
        hist = [r["models"][spec]["history"] for r in per_seed]
        epochs = [h["epoch"] for h in hist[0]]
        for i, split in enumerate(SPLITS):
            a = np.array([[h[split]["accuracy"] for h in hs] for hs in hist])
            ax.plot(epochs, a.mean(0), "-", marker=MARKERS[i], ms=8 - 1.2 * i, lw=3.5 - 0.6 * i, color=f"C{i}",
                    mfc="none" if i < 2 else f"C{i}", label=LABELS[split], zorder=2 + i)
            ax.fill_between(epochs, a.min(0), a.max(0), color=f"C{i}", alpha=0.15, lw=0)
            paper = results["paper"][spec[:2]][split]
            ax.plot([epochs[-1]], [paper], marker="_", ms=18, mew=2, color=f"C{i}", zorder=10)
        ax.axhline(0.5, color="grey", lw=0.6)
        ax.set_ylim(-0.03, 1.03)
        s = results["settings"][spec]
        ax.set_title(f"{spec} (Adam lr {s['lr']:g})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (ties 1/2)")
        if col == 0:
            ax.legend(fontsize=6, loc="center left")
        ax = axes[1, col]
        if spec not in probes:
            ax.axis("off")
            continue
        for j, p in enumerate(probes[spec]):
            pred, act = np.asarray(p["pred"]), np.asarray(p["actual"])
            ax.scatter(pred, act, s=12, color=f"C{j}", label=f"epoch {p['epoch']:g}: sign "
                       f"{p['probe'].get('sign_agreement_large', p['probe']['sign_agreement']):.2f}, corr {p['probe']['correlation'] or 0:.2f}")
        lim = max(1e-12, max(np.abs(np.asarray(p["pred"] + p["actual"])).max() for p in probes[spec]))
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.6)
        ax.axhline(0, color="grey", lw=0.4)
        ax.axvline(0, color="grey", lw=0.4)
        ax.set_xlabel(("Eq. 5 (lm_head only)" if spec[:2] == "im" else "EX-RM formula") + " per unit eta")
        ax.set_ylabel("real GD step / eta")
        ax.set_title("paraphrase rewards: predicted vs one real step", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(f"Persona on {results['data']['model']}: {len(per_seed)} seeds (mean, band min..max); "
                 f"short bars = the paper's numbers (domain shift: Sec. 5.2 real-data average); grey = chance",
                 fontsize=9)
    fig.tight_layout()
    save(fig, Path(stem))
    plt.close(fig)
