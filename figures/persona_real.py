"""Section 5.1 on SmolLM2-135M-Instruct (python -m sims.persona_real): accuracy per split over
training for each reward model and variant (mean over seeds, bars = min..max; the paper's
numbers as short bars right of the last epoch; with --paper or full fine-tuning alone, each
model's training loss per step), and the explanation's probe: the predicted
change of each paraphrase reward under one GD step (Eq. 5 / the EX-RM formula) against the
real step."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import pyplot, save
from figures.persona import accuracy_panel, split_legend

SPLITS = ("train", "test", "para_train", "para_test", "domain_shift")
LABELS = {"train": "train pairs", "test": "test prompts", "para_train": "paraphrased, train prompts",
          "para_test": "paraphrased, test prompts", "domain_shift": "domain shift (factual)"}
KINDS = {"ex": "EX-RM", "im": "IM-RM", "grm": "EX-GRM"}


def model_name(spec: str) -> str:
    """A --models entry in words (sims.hf.training.variant_of): 'im/top_k:1' -> 'IM-RM, top 1 block'."""
    kind, _, variant = spec.partition("/")
    name, _, arg = variant.partition(":")
    words = {"head": "head u only", "full": "full fine-tuning",
             "unembedding": "tied unembedding trained" if arg == "train" else "unembedding only (input embedding held)",
             "top_k": f"top {arg} block{'' if arg == '1' else 's'}" + (" and u" if kind == "ex" else "")}
    return f"{KINDS.get(kind, kind)}, {words.get(name, variant)}"


def _count(n, noun: str) -> str:
    return f"{n:g} {noun}{'' if n == 1 else 's'}"


def _loss_panel(ax, per_seed, specs, settings) -> None:
    """Each model's training loss at every Adam step (the mean loss of the step's pairs; one line
    per seed), against epochs, with ln 2 (every pair a tie, where both kinds start)."""
    for i, spec in enumerate(specs):
        for j, r in enumerate(per_seed):
            lo = np.asarray(r["models"][spec]["loss"], dtype=float)
            steps_per_epoch = len(lo) / settings[spec]["epochs"]
            ax.plot(np.arange(1, len(lo) + 1) / steps_per_epoch, lo, color=f"C{i}", lw=1, alpha=0.9,
                    label=model_name(spec) if j == 0 else None)
    ax.axhline(np.log(2), color="grey", lw=0.6, ls="--", label="ln 2 (all ties: the start)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (mean over the step's pairs)")
    ax.set_title("training loss per Adam step", fontsize=9)
    ax.legend(fontsize=6, loc="best")


def draw(results: dict, stem: Path) -> None:
    plt = pyplot()
    per_seed = results["per_seed"]
    specs = list(per_seed[0]["models"])
    probes = results["explanation"]["probe"]
    rows = 2 if any(spec in probes for spec in specs) else 1      # no probe row when nothing was probed
    # full fine-tuning alone (--paper, or its second learning rate): the training loss per step
    # beside the curves (what a learning rate is judged by)
    loss = bool(results["config"].get("paper")) or all(s.endswith("/full") for s in specs)
    cols = len(specs) + loss
    fig, axes = plt.subplots(rows, cols, figsize=(3.9 * cols, 3.8 * rows), squeeze=False)
    if loss:
        _loss_panel(axes[0, -1], per_seed, specs, results["settings"])
        for ax in axes[1:, -1]:
            ax.axis("off")
    for col, spec in enumerate(specs):
        ax = axes[0, col]
        hist = [r["models"][spec]["history"] for r in per_seed]
        acc = {s: [[h[s]["accuracy"] for h in hs] for hs in hist] for s in SPLITS}
        accuracy_panel(ax, [h["epoch"] for h in hist[0]], acc, results["paper"].get(spec.partition("/")[0], {}))
        s = results["settings"][spec]
        ax.set_title(f"{model_name(spec)}\nAdam lr {s['lr']:g}, {_count(s['epochs'], 'epoch')}", fontsize=9)
        ax.set_ylabel("accuracy (ties 1/2)")
        if rows == 1:
            continue
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
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"Persona on {results['data']['model']}: {_count(len(per_seed), 'seed')} (mean; bars min..max); short bars "
                 f"right of the last epoch = the paper's numbers (1B LMs; domain shift: Sec. 5.2's real-data "
                 f"average)", fontsize=9)
    fig.tight_layout()
    split_legend(fig, LABELS, "paper's number")
    save(fig, Path(stem))
    plt.close(fig)
