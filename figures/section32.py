"""Section 3.2 on a real model (python -m sims.section32.generation): the IM-RM verifies, its policy
does not generate. Left, on one scale: the IM-RM's test accuracy as a verifier against the share
of test graphs on which one sample of its policy (temperature 1) is a Hamiltonian cycle, and the
reference's share, with Clopper-Pearson 95% intervals; the paper's numbers (Pythia-1B) hollow.
Right, in log10: the exact probability of generating a cycle, pi(C|x), for the reference and the
policy, and Theorem 1's bound on it, each the median over test graphs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import pyplot, save


def draw(results: dict, stem: Path) -> None:
    plt = pyplot()
    seeds = sorted(results["seeds"], key=int)
    ref, paper = results["reference_model"], results["paper"]
    fig, (rate, mass) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})

    def bar(ax, x, value, interval, colour, label):
        ax.bar(x, value, 0.6, color=colour, alpha=0.75, label=label)
        if interval is not None:
            ax.errorbar(x, value, yerr=[[value - interval[0]], [interval[1] - value]], fmt="none", ecolor="k",
                        lw=0.8, capsize=3)

    x = 0
    ticks = []
    for s in seeds:
        v = results["seeds"][s]
        bar(rate, x, v["test_accuracy"], None, "C3", "IM-RM: verifies (test accuracy)" if s == seeds[0] else None)
        bar(rate, x + 1, v["sampled"]["rate"], v["sampled"]["interval"], "C1",
            "IM-RM's policy: a sample is a cycle" if s == seeds[0] else None)
        ticks += [(x, f"verify\nseed {s}"), (x + 1, f"generate\nseed {s}")]
        x += 2
    bar(rate, x, ref["sampled"]["rate"], ref["sampled"]["interval"], "grey", "reference: a sample is a cycle")
    ticks.append((x, "generate\nreference"))
    rate.plot([0], [paper["im_test_accuracy"]], "o", mfc="none", mec="k", ms=8,
              label=f"paper ({paper['model']}, {paper['epochs']} epochs)")
    rate.plot([1], [paper["im_valid_samples"]], "o", mfc="none", mec="k", ms=8)
    rate.axhline(0.5, color="grey", lw=0.6, ls=":")
    rate.set_xticks(*zip(*ticks), fontsize=8)
    rate.set_ylim(0, 1.05)
    rate.set_ylabel("share of the test graphs")
    rate.legend(fontsize=7, loc="upper right")
    rate.set_title(f"accuracy: the run's whole test set; samples: {results['config']['graphs']} test graphs", fontsize=9)

    labels, values, colours = ["pi_ref(C|x)"], [ref["exact"]["median_log10_mass"]], ["grey"]
    for s in seeds:
        e = results["seeds"][s]["exact"]
        labels += [f"pi(C|x)\nseed {s}", f"Theorem 1\nbound, seed {s}"]
        values += [e["median_log10_mass"], e["median_log10_bound"]]
        colours += ["C1", "k"]
    mass.bar(np.arange(len(values)), values, 0.6, color=colours, alpha=0.75)
    mass.set_xticks(np.arange(len(values)), labels, fontsize=8)
    mass.axhline(0, color="grey", lw=0.6)
    mass.set_ylabel("median over graphs, log10")
    held = all(results["seeds"][s]["exact"]["bound_holds"] for s in seeds)
    mass.set_title(f"P(generate a cycle); the bound {'held' if held else 'FAILED'} on every graph", fontsize=9)
    fig.suptitle("Section 3.2 on the real model: verifying Hamiltonian cycles against generating them", fontsize=9)
    fig.tight_layout()
    save(fig, Path(stem))
    plt.close(fig)
