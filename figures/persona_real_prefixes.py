"""The answer draws varied one at a time (python -m sims.persona_real.prefixes): the top-block
IM-RM's accuracy on paraphrased answers (and on the test prompts' original answers) against the
share of training pairs whose rejected response starts "My judgement:", one line per pool of
statements, the paper's fully fine-tuned IM-RM as a reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import pyplot, save

SHOWN = {"para_train": "paraphrased, train prompts", "para_test": "paraphrased, test prompts",
         "test": "test prompts (original answers)"}


def draw(results: dict, stem: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(SHOWN), figsize=(3.6 * len(SHOWN), 3.4), squeeze=False)
    pools = sorted({r["pool"] for r in results["runs"]})
    for ax, (split, title) in zip(axes[0], SHOWN.items()):
        for j, pool in enumerate(pools):
            rs = sorted((r for r in results["runs"] if r["pool"] == pool), key=lambda r: r["share_set"])
            ax.plot([r["share_set"] for r in rs], [r["accuracy"][split] for r in rs], "-o", color=f"C{j}", ms=4,
                    label=f"pool {pool} (as drawn: share {rs[0]['share_drawn']:.2f})")
        if split in results["paper"]:
            ax.axhline(results["paper"][split], color="k", lw=0.8, ls=":", label="paper, full fine-tuning (1B)")
        ax.axhline(0.5, color="grey", lw=0.6, label="chance")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xticks(np.unique([r["share_set"] for r in results["runs"]]))
        ax.set_xlabel("share of rejected answers starting \"My judgement:\"")
        ax.set_ylabel("accuracy (ties 1/2)")
        ax.set_title(title, fontsize=9)
    axes[0, 0].legend(fontsize=6, loc="best")
    c = results["config"]
    fig.suptitle(f"Persona on {c['model']}: the top-block IM-RM ({results['spec']}, AdamW lr {c['lr']:g}, "
                 f"{c['epochs']} epoch{'' if c['epochs'] == 1 else 's'}, {c['n_train']} training / {c['n_test']} test "
                 f"prompts), only the rejected prefixes changed", fontsize=9)
    fig.tight_layout()
    save(fig, Path(stem))
    plt.close(fig)
