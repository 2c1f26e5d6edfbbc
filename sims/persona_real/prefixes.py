"""The answer draws, held and varied one at a time: does the share of training pairs whose
rejected response starts "My judgement:" decide where the top-block IM-RM ranks the paraphrases?

    python -m sims.persona_real.prefixes [--shares 0,0.5,1] [--pools 2]

The official procedure draws each pair's rejected prefix at random between "My judgement: " and
"Considering the statement, I say " (sims.persona_data.NO_PREFIXES). The first token of "My
judgement:" is the first token of the paraphrased chosen answer, "My response would be ...": a
DPO step that lowers the rejected responses' probability lowers that shared first token too,
and with it every paraphrased chosen answer. In an exploratory run of the wording study whose
pools redrew the answers as well as the statements (not kept: the canonical wording run's pools
share their answer draws), that share fell between 0.46 and 0.60 by chance and the pools with more
of it ended lower; this run sets it by construction.

Each pool is the toolkit's statements (the default run's) in one order (pool 0 the official order,
pool p permuted by torch.randperm with seed p, as in sims.persona_real.wording), split by the
official procedure, so that its statements, chosen answers and answer words are the official
draws. Only the rejected prefixes change: a share s of the training pairs, chosen by a seeded
permutation, get "My judgement: ", the others "Considering the statement, I say ", each keeping its
drawn answer word (no / never). The evaluation (test prompts, paraphrases) is as drawn. Each
(pool, share) trains the wording study's reward model, the IM-RM whose top block trains
(im/top_k:1, Adam lr 1e-4, 3 epochs, 32 pairs per step, beta 0.01, one engine seed).
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

import numpy as np

from sims import cli
from sims.cli import UsageError, field
from sims.inputs import POSITIVE, POSITIVE_FINITE, SEED

SPEC = "im/top_k:1"
SPLITS = ("train", "test", "para_train", "para_test")


def _shares_ok(v: str) -> bool:
    try:
        xs = [float(x) for x in v.split(",")]
    except ValueError:
        return False
    return bool(xs) and all(0 <= x <= 1 for x in xs) and len(set(xs)) == len(xs)


@dataclass(frozen=True)
class Config:
    seed: int = field(0, "the order in which training pairs are drawn into steps, and which pairs get the prefix", SEED)
    shares: str = field("0,0.5,1", "shares of the training pairs whose rejected response starts \"My judgement: \" "
                        "(a share s sets round(s * n_train) pairs)",
                        _shares_ok, "must be distinct comma-separated numbers in [0, 1]")
    pools: int = field(2, "pools of statements: orders of the toolkit's statements before the official split (pool 0 "
                       "the official order, so other statements land in train and test)", POSITIVE)
    lr: float = field(1e-4, "AdamW lr of the top block (as in `python -m sims.persona_real`)", POSITIVE_FINITE)
    epochs: int = field(3, "epochs (as in `python -m sims.persona_real`)", POSITIVE)
    batch: int = field(32, "pairs per Adam step (the paper's effective batch)", POSITIVE)
    n_train: int = field(80, "training prompts (official split: 80)", POSITIVE)
    n_test: int = field(40, "test prompts (official split: 40)", (lambda v: v >= 2, "must be >= 2"))
    model: str = field("smollm2", "the model (sims.hf.sources short name, folder or hub id)")

    def validate(self):
        from sims.persona_real.wording import condition_rows
        n = len(condition_rows("toolkit"))
        if self.n_train + self.n_test > n:
            raise UsageError(f"--n-train + --n-test must not exceed {n}, the toolkit's statements")
        counts = [round(float(x) * self.n_train) for x in self.shares.split(",")]
        if len(set(counts)) < len(counts):
            raise UsageError(f"--shares {self.shares}: with --n-train {self.n_train} they set {counts} pairs, two "
                             f"alike (a share s sets round(s * n_train) pairs)")


def with_share(text_train: list[dict], share: float, seed: int) -> tuple[list[dict], float]:
    """The training pairs with round(share * N) rejected responses starting "My judgement: " (a
    seeded choice of which) and the rest "Considering the statement, I say ", each keeping its
    answer word; and the share that results."""
    import torch

    from sims import persona_data as pdata
    my, other = pdata.NO_PREFIXES
    n = len(text_train)
    pick = set(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:round(share * n)].tolist())
    out = []
    for i, p in enumerate(text_train):
        word = next(p["rejected"][len(q):] for q in pdata.NO_PREFIXES if p["rejected"].startswith(q))
        out.append({**p, "rejected": (my if i in pick else other) + word})
    return out, sum(p["rejected"].startswith(my) for p in out) / n


def run(config: Config, log=print) -> dict:
    import json
    import tempfile
    from pathlib import Path

    from sims.hf.model import load, load_tokenizer, pad_token_id
    from sims.hf.pairs import encode_pairs
    from sims.hf.training import TrainConfig, train, variant_of
    from sims.persona_real import _combine
    from sims.persona_real.data import build
    from sims.persona_real.wording import condition_rows, pool_rows
    from sims.progress import progress
    t0 = time.perf_counter()
    model, tok = load(config.model), load_tokenizer(config.model)
    pad = pad_token_id(tok)
    shares = [float(x) for x in config.shares.split(",")]
    jobs = [(p, s) for p in range(config.pools) for s in shares]
    tick = progress(f"trainings (pool x share, {SPEC})", len(jobs))
    runs, seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (pool, share) in enumerate(jobs):
            path = Path(tmp) / f"pool{pool}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in pool_rows(condition_rows("toolkit"), pool)),
                            encoding="utf-8")
            data = build(tok, persona_jsonl=str(path), n_train=config.n_train, n_test=config.n_test, n_shift=1,
                         n_synonym_prompts=1)
            drawn = float(np.mean([p["rejected"].startswith("My judgement") for p in data["text"]["train"]]))
            text, got = with_share(data["text"]["train"], share, config.seed)
            enc = {**data["enc"], "train": encode_pairs(tok, [{k: p[k] for k in ("prompt", "chosen", "rejected")}
                                                              for p in text], eos=False)}
            cfg = TrainConfig(lr=config.lr, epochs=config.epochs, batch_size=config.batch,
                              micro_batch_size=min(16, config.batch), beta=0.01, seed=config.seed)
            t1 = time.perf_counter()
            hist = train(model, "im", variant_of(SPEC.partition("/")[2]), enc["train"], pad_id=pad, config=cfg,
                         evals={s: enc[s] for s in SPLITS}, progress=progress)
            end = hist["checkpoints"][-1]["evals"]
            acc = {s: _combine(s, end[s])["accuracy"] for s in SPLITS}
            runs.append({"pool": pool, "share": share, "share_set": got, "share_drawn": drawn,
                         "accuracy": acc, "loss": hist["loss"][-1]})
            seconds.append(time.perf_counter() - t1)
            log(f"[{time.perf_counter() - t0:7.1f} s] pool {pool} (as drawn: share {drawn:.2f}) share set {got:.2f}: "
                + "  ".join(f"{s} {acc[s]:.3f}" for s in SPLITS)
                + f"  (the last step's mean loss, before its update: {hist['loss'][-1]:.3f})")
            tick(i + 1)
    # a list in the order of --shares (a share's own digits would not make a key the docs can cite)
    by_share = []
    for s in shares:
        rs = [r for r in runs if r["share"] == s]
        by_share.append({"share": s, "share_set": rs[0]["share_set"],
                         **{k: {"mean": float(np.mean([r["accuracy"][k] for r in rs])),
                                "per_pool": [r["accuracy"][k] for r in rs]} for k in SPLITS}})
    checks = checks_for(runs, by_share, shares)
    for c in checks:
        tag = {True: "PASS", False: "FAIL", None: "INFO"}[c["passed"]]
        log(f"  [{tag}] {c['claim']}: predicted {c['predicted']}, measured {c['measured']}")
    return {"config": dataclasses.asdict(config), "spec": SPEC, "runs": runs, "by_share": by_share,
            "paper": {"para_train": 0.022, "para_test": 0.019}, "checks": checks,
            "_run": {"seconds_per_training": seconds}}


def checks_for(runs, by_share, shares) -> list:
    fits = min(r["accuracy"]["train"] for r in runs)
    checks = [{"claim": "The top-block IM-RM fits its training pairs at every share and pool (worst)",
               "predicted": "> 0.9", "measured": fits, "passed": fits > 0.9}]
    if len(shares) > 1:
        at = {b["share"]: b for b in by_share}
        lo, hi = min(shares), max(shares)
        para = lambda s: (at[s]["para_train"]["mean"] + at[s]["para_test"]["mean"]) / 2  # noqa: E731
        per_pool = [all(a > b for a, b in zip(at[lo][k]["per_pool"], at[hi][k]["per_pool"]))
                    for k in ("para_train", "para_test")]
        checks.append({"claim": f"More rejected answers starting \"My judgement:\" lower the paraphrase accuracy "
                                f"(share {lo} against {hi}, mean of both paraphrase splits; lower in every pool)",
                       "predicted": f"accuracy at share {lo} > at share {hi}, in every pool",
                       "measured": [para(lo), para(hi)],
                       "passed": all(per_pool)})
    return checks


def main(argv=None) -> int:
    return cli.simulation_main("persona_real_prefixes", Config, run, __doc__, argv,
                               module="sims.persona_real.prefixes")


if __name__ == "__main__":
    sys.exit(main())
