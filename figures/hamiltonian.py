"""Section 3.2 miniature figure: verification accuracy and generation success over training."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import pyplot, save


def draw(results: dict, stem: Path) -> None:
    plt = pyplot()

    h = results["history"]
    x = [e.get("epoch", 0.0) for e in h]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(x, [e["im_rm"]["accuracy"] for e in h], "o-", color="C3", label="IM-RM")
    ax1.plot(x, [e["ex_rm"]["accuracy"] for e in h], "s-", color="C0", label="EX-RM")
    ax1.axhline(0.5, color="grey", lw=0.6)
    ax1.set_ylim(0.4, 1.02)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("test verification accuracy")
    ax1.set_title(f"Verifying Hamiltonian cycles (n = {results['config']['n']})")
    ax1.legend()
    gen = np.array([e["im_rm"]["generation"] for e in h])
    ax2.semilogy(x, np.maximum(gen, 1e-12), "o-", color="C3", label="pi_theta(C|x), IM-RM policy")
    if "generation_ref" in h[0]["im_rm"]:
        ax2.semilogy(x, [e["im_rm"]["generation_ref"] for e in h], "--", color="grey", label="pi_ref(C|x)")
        ax2.semilogy(x, [e["im_rm"]["theorem1_bound"] for e in h], ":", color="k",
                     label="bound pi_ref(C|x) exp(max_C r / beta)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("P(generate a Hamiltonian cycle), test mean")
    ax2.set_title(f"Generating ({h[-1]['im_rm'].get('method', '')})")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    save(fig, Path(stem))
    plt.close(fig)

