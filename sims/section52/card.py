"""The data card of the toolkit's Section 5.2 preference set (data/section52/).

    python -m sims.section52.card [--data data/section52] [--model smollm2]

Per file: pairs, mean words and tokens of the chosen and rejected responses (the model's
tokenizer, no special tokens), how often the chosen response is the longer one (a reward
model can learn length instead of substance), and the sha256 of the file, which ties these
numbers to the data they were measured on.

Token overlap, the official code's statistic for its rewrites (princeton-pli/exrm-vs-imrm,
written afresh here): for token sequences a and b,

    overlap(a, b) = (1 / (|a| |b|)) * sum_i sum_j [a_i == b_j] = sum_t n_a(t) n_b(t) / (|a| |b|),

the share of position pairs that hold the same token (n_a(t): how often t occurs in a). It is
not a similarity scaled to 1: a text against itself scores sum_t n_a(t)^2 / |a|^2, small for a
text that repeats few tokens. The official log reports, for UltraFeedback's test responses, 0.048
for each original against ITSELF and 0.023 for each rewrite against its original (chosen against
chosen, rejected against rejected). For each token-level set this card gives the same two means
against its source (the indist row named by source_index), and a third: each source response
against the next row's response of the same side, an unrelated text.

It also checks what a careful reader of the set would: distinct prompts in each file, no
evaluation prompt that is a training prompt, the token-level sets' prompts and sources as the
card promises (paraphrase keeps the prompt; each row names its source), chosen != rejected.
"""
from __future__ import annotations

import hashlib
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sims import cli
from sims.cli import UsageError, field

FILES = ("train", "indist", "paraphrase", "french", "spanish", "math", "code")
SOURCE = "indist"                                   # the token-level sets rewrite its rows
TOKEN_LEVEL = ("paraphrase", "french", "spanish")
GROUPS = {"in distribution": ("indist",), "token-level shift": TOKEN_LEVEL, "domain shift": ("math", "code")}
# the official log of its rewrites (princeton-pli/exrm-vs-imrm, data_files/rewritten/rewrite_gpt-4.1_...):
# UltraFeedback's test split, GPT-4.1 rewrites, counted by the Llama-3.2-1B tokenizer
OFFICIAL = {"rewrite_vs_original": 0.022987820514244958, "original_vs_itself": 0.048172622714191676,
            "rewrite_tokens": {"chosen": 186.565, "rejected": 156.29}, "pairs": 200,
            "split": "UltraFeedback test, GPT-4.1 rewrites, Llama-3.2-1B tokenizer (the official log)"}


def token_overlap(a, b) -> float:
    """sum_i sum_j [a_i == b_j] / (|a| |b|), by token counts (0 for an empty sequence)."""
    if not len(a) or not len(b):
        return 0.0
    ca, cb = Counter(a), Counter(b)
    return sum(n * cb[t] for t, n in ca.items()) / (len(a) * len(b))


@dataclass(frozen=True)
class Config:
    data: str = field("data/section52", "the folder of the set's JSON Lines files (" + ", ".join(FILES) + ")")
    model: str = field("smollm2", "whose tokenizer counts the tokens (sims.hf.sources short name, folder or hub id)")

    def validate(self):
        folder = Path(self.data)
        if not folder.is_dir():
            raise UsageError(f"--data {self.data}: no such folder")
        missing = [f"{n}.jsonl" for n in FILES if not (folder / f"{n}.jsonl").is_file()]
        if missing:
            raise UsageError(f"--data {self.data}: missing {', '.join(missing)}")


def _read(folder: Path) -> dict:
    """name -> (pairs, source indices or None), each file read and checked by sims.hf.pairs."""
    import json

    from sims.hf.pairs import read_pairs
    out = {}
    for name in FILES:
        path = folder / f"{name}.jsonl"
        pairs, _ = read_pairs(str(path))
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        idx = [r.get("source_index") for r in rows]
        if name in TOKEN_LEVEL:
            bad = next((i for i, s in enumerate(idx, 1) if not isinstance(s, int) or isinstance(s, bool)), None)
            if bad is not None:
                raise UsageError(f"{path}: line {bad} has no integer source_index (the {SOURCE} row it rewrites)")
        out[name] = (pairs, idx if name in TOKEN_LEVEL else None)
    n = len(out[SOURCE][0])
    for name in TOKEN_LEVEL:
        bad = [s for s in out[name][1] if not 0 <= s < n]
        if bad:
            raise UsageError(f"{folder / name}.jsonl: source_index {bad[0]} is not a row of {SOURCE}.jsonl "
                             f"({n} rows, from 0)")
    return out


def _words(text: str) -> set[str]:
    return {w.strip(".,;:!?\"'()").lower() for w in text.split()} - {""}


def run(config: Config, log=print) -> dict:
    import numpy as np

    from sims.hf.model import load_tokenizer
    folder = Path(config.data)
    sets = _read(folder)
    tok = load_tokenizer(config.model)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]     # noqa: E731
    enc = {n: [(ids(p["chosen"]), ids(p["rejected"])) for p in pairs] for n, (pairs, _) in sets.items()}

    files = {}
    for name, (pairs, _) in sets.items():
        c, r = zip(*enc[name])
        prompts = [p["prompt"] for p in pairs]
        files[name] = {
            "pairs": len(pairs), "distinct_prompts": len(set(prompts)),
            "sha256": hashlib.sha256((folder / f"{name}.jsonl").read_bytes()).hexdigest(),
            "words": {s: float(np.mean([len(p[s].split()) for p in pairs])) for s in ("chosen", "rejected")},
            "tokens": {"chosen": float(np.mean([len(x) for x in c])), "rejected": float(np.mean([len(x) for x in r])),
                       "prompt": float(np.mean([len(ids(q)) for q in prompts]))},
            "chosen_longer": float(np.mean([len(a) > len(b) for a, b in zip(c, r)])),
            "chosen_equals_rejected": sum(p["chosen"] == p["rejected"] for p in pairs)}
        log(f"  {name:10} {len(pairs):4d} pairs, tokens chosen {files[name]['tokens']['chosen']:5.1f} rejected "
            f"{files[name]['tokens']['rejected']:5.1f}, chosen the longer in {files[name]['chosen_longer']:.2f}")

    src = enc[SOURCE]
    n = len(src)
    itself = [token_overlap(y, y) for pair in src for y in pair]
    unrelated = [token_overlap(src[i][s], src[(i + 1) % n][s]) for i in range(n) for s in (0, 1)] if n > 1 else []
    overlap = {"source": {"vs_itself": float(np.mean(itself)),
                          "vs_next_row": float(np.mean(unrelated)) if unrelated else None}}
    for name in TOKEN_LEVEL:
        pairs, idx = sets[name]
        vals = [token_overlap(y, src[j][s]) for (j, pair) in zip(idx, enc[name]) for s, y in enumerate(pair)]
        overlap[name] = {"vs_source": float(np.mean(vals)),
                         "same_prompt": float(np.mean([p["prompt"] == sets[SOURCE][0][j]["prompt"]
                                                       for p, j in zip(pairs, idx)])),
                         "sources_covered": len(set(idx))}
        log(f"  {name:10} token overlap with its source {overlap[name]['vs_source']:.3f} (the source against itself "
            f"{overlap['source']['vs_itself']:.3f}, against the next row {overlap['source']['vs_next_row']:.3f})")

    # evaluation prompts against the training prompts: exact repeats, and the nearest by word sets
    train_prompts = [p["prompt"] for p in sets["train"][0]]
    train_words = [_words(q) for q in train_prompts]
    near = {}
    for name in ("indist", "math", "code"):
        best = []
        for p in sets[name][0]:
            w = _words(p["prompt"])
            best.append(max(len(w & t) / max(len(w | t), 1) for t in train_words))
        near[name] = {"exact_repeats": sum(p["prompt"] in set(train_prompts) for p in sets[name][0]),
                      "max_jaccard": float(max(best)), "above_half": sum(b > 0.5 for b in best)}

    checks = []

    def add(claim, predicted, measured, passed):
        checks.append({"claim": claim, "predicted": predicted, "measured": measured, "passed": passed})
        log(f"  [{'PASS' if passed else 'FAIL'}] {claim}: {measured}")

    add("every file's prompts are distinct", "distinct = pairs",
        {n: f"{f['distinct_prompts']}/{f['pairs']}" for n, f in files.items()},
        all(f["distinct_prompts"] == f["pairs"] for f in files.values()))
    add("no evaluation prompt is a training prompt", "0", {n: v["exact_repeats"] for n, v in near.items()},
        all(v["exact_repeats"] == 0 for v in near.values()))
    add("chosen and rejected differ in every pair", "0", {n: f["chosen_equals_rejected"] for n, f in files.items()},
        all(f["chosen_equals_rejected"] == 0 for f in files.values()))
    add("each token-level set rewrites every source row once", f"{n} distinct sources",
        {m: overlap[m]["sources_covered"] for m in TOKEN_LEVEL},
        all(overlap[m]["sources_covered"] == n == files[m]["pairs"] for m in TOKEN_LEVEL))
    add("the paraphrases keep their source's prompt", "1.0", overlap["paraphrase"]["same_prompt"],
        overlap["paraphrase"]["same_prompt"] == 1.0)
    add("the paraphrases share fewer tokens with their source than the source with itself (official: 0.023 vs "
        "0.048)", "< vs_itself", [overlap["paraphrase"]["vs_source"], overlap["source"]["vs_itself"]],
        overlap["paraphrase"]["vs_source"] < overlap["source"]["vs_itself"])
    return {"config": {"data": config.data, "model": config.model}, "files": files, "overlap": overlap,
            "nearest_training_prompt": near, "groups": {k: list(v) for k, v in GROUPS.items()},
            "official": OFFICIAL, "checks": checks,
            "conventions": {"tokens": "the tokenizer's ids of the response text alone, no special tokens, no chat "
                                      "template", "overlap": "sum_t n_a(t) n_b(t) / (|a| |b|), averaged over chosen "
                                                             "and rejected", "jaccard": "word sets, lower-cased, "
                                                                                        "punctuation stripped"}}


def main(argv=None) -> int:
    return cli.simulation_main("section52_card", Config, run, __doc__, argv, module="sims.section52.card")


if __name__ == "__main__":
    sys.exit(main())
