"""Section 5.2 on the toolkit's set (python -m sims.section52.report): accuracy per kind of shift,
the EX-RM beside the IM-RM with their 95% bootstrap intervals (over pairs and seeds), the
paper's averages over six LMs of 1B-8B as hollow markers, and the paired EX - IM difference
with its interval in a second panel."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import pyplot, save

KINDS = {"ex": ("EX-RM", "C0"), "im": ("IM-RM", "C3")}
ORDER = ("in distribution", "token-level shift", "domain shift")     # the paper's; results.json sorts keys


def draw(results: dict, stem: Path) -> None:
    plt = pyplot()
    groups = [g for g in ORDER if g in results["groups"]]
    x = np.arange(len(groups))
    fig, (acc, diff) = plt.subplots(1, 2, figsize=(9.5, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    for j, (k, (label, colour)) in enumerate(KINDS.items()):
        xs = x + (j - 0.5) * 0.36
        v = [results["groups"][g] for g in groups]
        mean = np.array([r["accuracy"][k] for r in v])
        lo, hi = (np.array([r["interval"][k][i] for r in v]) for i in (0, 1))
        acc.bar(xs, mean, 0.34, color=colour, alpha=0.75, label=f"{label} (here)")
        acc.errorbar(xs, mean, yerr=[mean - lo, hi - mean], fmt="none", ecolor="k", lw=0.8, capsize=3)
        acc.plot(xs, [r["paper"]["accuracy"][k] for r in v], "o", mfc="none", mec="k", ms=7,
                 label="paper (average of six 1B-8B LMs)" if j == 0 else None)
    acc.axhline(0.5, color="grey", lw=0.6, ls=":")
    acc.set_xticks(x, [f"{g}\n({results['groups'][g]['pairs']} pairs)" for g in groups], fontsize=8)
    acc.set_ylim(0, 1.05)
    acc.set_ylabel("accuracy (ties 1/2)")
    acc.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    d = [results["groups"][g]["ex_minus_im"] for g in groups]
    mean = np.array([r["difference"] for r in d])
    lo, hi = (np.array([r["interval"][i] for r in d]) for i in (0, 1))
    diff.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt="s", color="k", capsize=3, label="here, 95% interval")
    diff.plot(x, [results["groups"][g]["paper"]["accuracy"]["ex"] - results["groups"][g]["paper"]["accuracy"]["im"]
                  for g in groups], "o", mfc="none", mec="k", ms=7, label="paper")
    diff.axhline(0, color="grey", lw=0.6)
    diff.set_xticks(x, groups, fontsize=8)
    diff.set_ylabel("EX-RM minus IM-RM accuracy")
    diff.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    v = results.get("variants") or {}
    what = ", ".join(f"{KINDS[k][0]} {v[k]['name'] if isinstance(v.get(k), dict) else v.get(k, '?')}" for k in KINDS)
    seeds = results["seeds"]
    fig.suptitle(f"Section 5.2 on {results.get('model') or 'the model'}: {what}; seeds EX {len(seeds['ex'])}, "
                 f"IM {len(seeds['im'])}", fontsize=9)
    fig.tight_layout()
    save(fig, Path(stem))
    plt.close(fig)
