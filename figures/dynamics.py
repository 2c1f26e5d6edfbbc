"""Section 4 figure: predicted vs actual reward changes; rho for a paraphrase pair."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import pyplot, save


def draw(results: dict, stem: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    eta = results["config"]["eta"]
    for ax, model, title in ((axes[0], "ex_rm", "EX-RM: exact"), (axes[1], "im_rm", "IM-RM: Eq. 5, first order")):
        d = results["random_model"][model]
        p, a = np.asarray(d["predicted"]), np.asarray(d["actual"])
        lim = np.max(np.abs(np.concatenate([p, a]))) * 1.05
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.7)
        ax.scatter(p, a, s=8, color="C0" if model == "ex_rm" else "C3")
        ax.set_xlabel("predicted Delta r (closed form)")
        ax.set_ylabel(f"actual Delta r after one step (eta = {eta:g})")
        ax.set_title(title)
    par = results["paraphrase"]
    R = np.asarray(par["rho"])
    vmax = max(np.max(np.abs(R)), 1e-12)
    im = axes[2].imshow(R, cmap="RdBu", vmin=-vmax, vmax=vmax)
    axes[2].set_xticks(range(R.shape[1]), [f"y+ {t}" for t in par["y_plus"]], rotation=45)
    axes[2].set_yticks(range(R.shape[0]), [f"ybar {t}" for t in par["y_bar"]])
    for (k, l), v in np.ndenumerate(R):
        axes[2].text(l, k, f"{v:.2f}", ha="center", va="center", fontsize=7,
                     color="white" if abs(v) > 0.5 * vmax else "black")
    axes[2].set_title(f"rho_kl: paraphrase (synonyms) vs y+\n"
                      f"Delta r_IM = {par['delta_r_im']:.3g} < 0,  Delta r_EX = {par['delta_r_ex']:.3g} > 0")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    fig.tight_layout()
    save(fig, Path(stem))
    plt.close(fig)

