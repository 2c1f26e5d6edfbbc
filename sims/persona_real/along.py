"""Section 5.1's full fine-tuning, explained along the way: the forecast before training and
Eq. 5 at every checkpoint.

    python -m sims.persona_real.along [--models ex/full,im/full] [--lr-full 1e-6] [--eval-every 5]
    python -m sims.persona_real.along --models ex/head,im/unembedding,im/top_k:1

At its defaults it fully fine-tunes two 135M-parameter models for 50 epochs: on a CPU that is
hours (docs/persona-real.md gives the measured time); `--models im/full` halves it. The partial
variants of `python -m sims.persona_real` (head, unembedding, top_k:K) train at that command's
default learning rates and epochs, so the forecast is scored on the Section 5.1 runs that exist
too; the Eq. 5 probe below follows full fine-tuning only (the partial variants have their own, in
sims.persona_real).

The same data, model, loss and optimiser as `python -m sims.persona_real --paper` (AdamW, weight
decay 0, 32 pairs per step, beta 0.01, fp32, 50 epochs), with two measurements added:

  * the forecast (sims/hf/training/forecast.py): before training, every evaluation pair's margin
    change under the first step of each kind from its initialisation (IM-RM: the exact tangent
    over the tied embedding matrix, SmolLM2's embeddings being tied, or Eq. 5 on lm_head alone
    for the unembedding variant, whose input embedding is held; EX-RM: the head u from 0),
    for a gradient-descent step and for AdamW's first step. A pair is flagged when the step
    lowers its margin. After training, per evaluation set: recall (flagged pairs that ended
    wrong / pairs that ended wrong) and precision (flagged pairs that ended wrong / flagged
    pairs), beside the baseline "a response shares no token with the training responses".
    Paraphrased sets are scored per listed pair (chosen and rejected as the split lists them),
    not over the 2 x 2 combinations the accuracy pools. The forecast is the issue's: the tied
    matrix alone moves in it, where full fine-tuning moves every parameter; the probe below
    measures what that leaves out.
  * Eq. 5 along training (IM-RM): at every checkpoint, the change of the paraphrase rewards (the
    first n_probe_prompts training prompts, 4 responses each) under one full-batch GD step of
    the mean loss over every training pair, three ways: Eq. 5 on the checkpoint's own states and
    unembedding (theory.dynamics.reward_change_matrix_im: the paper's explanation, the states
    fixed); the exact first order of the full step (every parameter, autograd, forward mode);
    and the real step of every parameter (float32, its size set so that the largest change is
    about 1e-2 in log-probability). Also Eq. 5's prediction against what Adam's mini-batch
    steps in fact did to those rewards until the next checkpoint. The correlation and the sign
    agreement say how far the paper's explanation reaches once every parameter moves.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

from sims import cli
from sims.cli import UsageError, field
from sims.inputs import POSITIVE, POSITIVE_FINITE, SEED

PROBED = "im/full"            # the spec the Eq. 5 probe follows
PROBE_TARGET = 1e-2          # largest log-probability change of the real probe step


def _variant(spec: str):
    """The variant of a spec 'kind/variant' of the Bradley-Terry kinds (the forecast's), or None."""
    from sims.hf.training.variants import check_kind, variant_of
    kind, _, var = spec.partition("/")
    try:
        v = variant_of(var)
        check_kind(kind, v)
    except UsageError:
        return None
    return v if kind in ("ex", "im") else None


def _specs_ok(v: str) -> bool:
    parts = v.split(",")
    return bool(v) and all(_variant(p) is not None for p in parts) and len(set(parts)) == len(parts)


@dataclass(frozen=True)
class Config:
    seed: int = field(0, "the engine's shuffle", SEED)
    models: str = field("ex/full,im/full", "kind/variant, comma-separated: ex/head, im/unembedding[:hold|:train], "
                        "ex|im/top_k:K, ex|im/full", _specs_ok,
                        "must be distinct kind/variant specs, comma-separated: ex/head, im/unembedding[:hold|:train], "
                        "ex/top_k:K, im/top_k:K, ex/full or im/full")
    lr_full: float = field(1e-6, "AdamW lr of full fine-tuning (the paper's 1e-6)", POSITIVE_FINITE)
    epochs: int = field(50, "epochs of full fine-tuning (the paper's 50)", POSITIVE)
    lr_head: float = field(1e-3, "AdamW lr, EX-RM head (sims.persona_real's)", POSITIVE_FINITE)
    lr_unembedding: float = field(1e-4, "AdamW lr, IM-RM unembedding (sims.persona_real's)", POSITIVE_FINITE)
    lr_top_k: float = field(1e-4, "AdamW lr, top_k (sims.persona_real's)", POSITIVE_FINITE)
    epochs_cached: int = field(20, "epochs of head and unembedding:hold (sims.persona_real's)", POSITIVE)
    epochs_forward: int = field(3, "epochs of top_k and unembedding:train (sims.persona_real's)", POSITIVE)
    eval_every: int = field(5, "evaluate and probe every N epochs, and at the start and the end", POSITIVE)
    batch: int = field(32, "pairs per AdamW step (the paper's)", POSITIVE)
    micro_batch: int = field(16, "pairs per forward/backward (memory only)", POSITIVE)
    beta: float = field(0.01, "IM-RM beta (the paper: 0.01)", POSITIVE_FINITE)
    n_train: int = field(80, "training prompts (official split: 80)", POSITIVE)
    n_test: int = field(40, "test prompts (official split: 40)", (lambda v: v >= 2, "must be >= 2"))
    n_shift: int = field(66, "domain-shift prompts (factual questions, at most 66)",
                         (lambda v: 1 <= v <= 66, "must be in 1..66"))
    persona_jsonl: str = field("", "an Anthropic persona JSONL: its `question` rows whose answer_matching_behavior "
                               "is Yes replace the toolkit's statements")
    n_probe_prompts: int = field(8, "training prompts whose paraphrases the Eq. 5 probe follows (4 responses each)",
                                 POSITIVE)
    model: str = field("smollm2", "the model (sims.hf.sources short name, folder or hub id)")

    def validate(self):
        if self.n_probe_prompts > self.n_train:
            raise UsageError(f"--n-probe-prompts ({self.n_probe_prompts}) must not exceed --n-train {self.n_train}: give "
                             f"--n-probe-prompts {self.n_train} or fewer")
        n = len(persona_rows(self.persona_jsonl))
        if self.n_train + self.n_test > n:
            raise UsageError(f"--n-train {self.n_train} + --n-test {self.n_test} must not exceed the {n} persona "
                             f"statements" + (f" of {self.persona_jsonl} (its rows whose answer_matching_behavior is "
                                              f"Yes)" if self.persona_jsonl else ""))

    def checkpoints(self, epochs: int | None = None) -> tuple[int, ...]:
        """Every eval_every-th epoch, the start and the end (an eval_every past the end: those two)."""
        epochs = self.epochs if epochs is None else epochs
        return tuple(sorted(set(range(0, epochs + 1, self.eval_every)) | {epochs}))

    def settings(self, spec: str) -> dict:
        """A spec's variant, learning rate, epochs and checkpoints (the partial variants: as
        sims.persona_real trains them), and which forecast route its kind and variant take."""
        v = _variant(spec)
        kind = spec.partition("/")[0]
        lr = {"head": self.lr_head, "unembedding": self.lr_unembedding, "top_k": self.lr_top_k,
              "full": self.lr_full}[v.name]
        held = v.name == "head" or (v.name == "unembedding" and v.tied == "hold")
        epochs = self.epochs if v.name == "full" else self.epochs_cached if held else self.epochs_forward
        # the IM-RM's first step: Eq. 5 on lm_head where the input embedding is held, else the tied
        # tangent (SmolLM2 ties them); the EX-RM's is the head's whatever trains beside it
        route = "hold" if kind == "im" and v.name == "unembedding" and v.tied == "hold" else "tied"
        return {"variant": v, "lr": lr, "epochs": epochs, "checkpoints": self.checkpoints(epochs), "route": route}


def persona_rows(path: str) -> list[dict]:
    """The persona rows a run splits: the toolkit's statements, or the Yes rows of a persona JSONL,
    each question a non-empty string (checked before the model loads)."""
    from pathlib import Path

    from sims import persona_data as pdata
    from sims.persona_real.data import persona_rows as toolkit_rows
    if not path:
        return toolkit_rows()
    if Path(path).is_dir():
        raise UsageError(f"--persona-jsonl {path}: a folder, not a JSONL file")
    if not Path(path).is_file():
        raise UsageError(f"--persona-jsonl {path}: no such file")
    try:
        rows = pdata.load_persona_jsonl(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--persona-jsonl {path}: {exc}") from None
    bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r["question"], str) or not r["question"].strip()),
               None)
    if bad is not None:
        raise UsageError(f"--persona-jsonl {path}: the {bad}th Yes row's `question` is not a non-empty string")
    seen = len({r["question"] for r in rows})
    if seen < len(rows):
        raise UsageError(f"--persona-jsonl {path}: {len(rows) - seen} of its {len(rows)} Yes rows repeat a question "
                         f"(a repeated prompt can land in both the train and the test split)")
    return rows


def probe(model, tokenizer, enc_train, eval_seqs, ref_margins, *, beta: float, pad: int) -> dict:
    """At a checkpoint of the IM-RM: the change of the eval rewards beta ln pi(y|x) per unit eta
    under one GD step of every parameter on the mean DPO loss over enc_train, predicted by Eq. 5
    (the unembedding alone, the states fixed), by the exact tangent of the full step, and taken
    for real. The model's parameters and their requires_grad flags are left as they were."""
    import torch

    from sims.hf.model import head_of, run_batches
    from sims.hf.pairs import split_responses
    from sims.hf.step import _agreement, actual_reward_change, loss_gradients, tangent_reward_change
    from sims.persona_real.explain import large_sign_agreement
    from theory.dynamics import reward_change_matrix_im
    from theory.sequences import Seqs
    head = head_of(model)
    quiet = lambda done, total: None    # noqa: E731  (the engine's own progress line covers the checkpoint)
    parts = [run_batches(model, s, pad_id=pad, progress=quiet) for s in (eval_seqs, *split_responses(enc_train))]
    U, _ = head.theory_form(parts[0]["h"][:1])
    seqs = [Seqs(head.theory_form(r["h"])[1], r["y"], r["mask"]) for r in parts]
    with torch.no_grad():
        eq5 = reward_change_matrix_im(U.detach(), *seqs, beta=beta, eta=1.0,
                                      ref_margins=ref_margins.to(U.dtype)).mean(-1).double()
    named = [n for n, _ in model.named_parameters()]
    flags = [p.requires_grad for p in model.parameters()]
    try:
        grads = loss_gradients(model, tokenizer, enc_train, ref_margins, beta=beta, params=named)
        tangent = tangent_reward_change(model, tokenizer, enc_train, eval_seqs, ref_margins, beta=beta, eta=1.0,
                                        params=named, grads=grads).double()
        eta = PROBE_TARGET * beta / float(tangent.abs().max())
        actual = actual_reward_change(model, tokenizer, eval_seqs, grads, beta=beta, eta=eta, params=named).double() / eta
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    n = len(eval_seqs) // 2        # chosen then rejected: each pair's margin change, what decides its ranking
    margin = lambda x: x[:n] - x[n:]                           # noqa: E731
    return {"eta": eta, "eq5": eq5, "tangent": tangent, "actual": actual,
            "eq5_vs_actual": {**_agreement(eq5, actual), "sign_agreement_large": large_sign_agreement(eq5, actual),
                              "margin_sign_agreement": _sign(margin(eq5), margin(actual))},
            "tangent_margin_sign_agreement": _sign(margin(tangent), margin(actual)),
            "tangent_vs_actual": _agreement(tangent, actual), "eq5_vs_tangent": _agreement(eq5, tangent)}


def _flagged(fc: dict) -> dict:
    from sims.hf.training import forecast as fcst
    return {k: {n: {st: sum(d < 0 for d in f["margin_change"][k][st]) for st in fcst.STEPS}
                for n, f in fc["sets"].items()} for k in fc["kinds"]}


def _sign(pred, actual) -> float:
    return float((pred.sign() == actual.sign()).double().mean())


def run(config: Config, log=print) -> dict:
    import torch

    from sims.hf.model import load, load_tokenizer, pad_token_id, run_batches
    from sims.hf.pairs import split_responses
    from sims.hf.step import _agreement
    from sims.hf.training import TrainConfig, train
    from sims.hf.training import forecast as fcst
    from sims.persona_real import PAPER, _combine
    from sims.persona_real.data import SPLITS, build
    from sims.progress import progress
    t0 = time.perf_counter()
    clock = lambda: f"[{time.perf_counter() - t0:6.1f} s]"     # noqa: E731
    model, tok = load(config.model), load_tokenizer(config.model)
    pad = pad_token_id(tok)
    data = build(tok, persona_jsonl=config.persona_jsonl or None, n_train=config.n_train, n_test=config.n_test,
                 n_shift=config.n_shift, n_synonym_prompts=1)
    enc = data["enc"]
    specs = config.models.split(",")
    settings = {spec: config.settings(spec) for spec in specs}
    log(f"{clock()} {config.model}: {data['sizes']} pairs from {data['source']}")

    # before training: the forecast of both kinds (whichever trains), every evaluation pair, by the
    # tied route; and the IM-RM's by Eq. 5 on lm_head alone where an unembedding:hold variant trains
    routes = ["tied"] + (["hold"] if any(st["route"] == "hold" for st in settings.values()) else [])
    fcs = {}
    for route in routes:
        log(f"{clock()} forecast ({route}): the first step of each kind from its initialisation"
            + (" (minutes: autograd through the model over every evaluation pair)" if route == "tied" else ""))
        fcs[route] = fcst.forecast(model, tok, {n: enc[n] for n in SPLITS},
                                   kinds=list(fcst.FORECAST_KINDS) if route == "tied" else ["im"], beta=config.beta,
                                   hold_input_embedding=route == "hold", batch_size=config.micro_batch)
        for kind in fcs[route]["kinds"]:
            for line in fcst.flagged_lines(fcs[route], kind, limit=3):
                log(line)

    # the probe's rows: the paraphrases of the first probe prompts (chosen, then rejected)
    P = config.n_probe_prompts
    para = enc["para_train"][:2 * P]
    eval_seqs = [(p, c) for p, c, _ in para] + [(p, r) for p, _, r in para]
    with torch.no_grad():
        ref = [run_batches(model, g, pad_id=pad, states=False)["logp"].sum(-1) for g in split_responses(enc["train"])]
    ref_margins = ref[0] - ref[1]

    per_spec, seconds, probes, scores = {}, {}, [], {}
    for spec in specs:
        kind, st = spec.partition("/")[0], settings[spec]
        cfg = TrainConfig(lr=st["lr"], epochs=st["epochs"], batch_size=config.batch,
                          micro_batch_size=config.micro_batch, beta=config.beta, seed=config.seed,
                          checkpoints=st["checkpoints"])
        prev = {}

        def callback(record, rm, spec=spec, prev=prev):
            if spec != PROBED:
                return
            ev = record["evals"]["para_train"]
            now = torch.tensor(ev["chosen"][:2 * P] + ev["rejected"][:2 * P], dtype=torch.float64)
            if prev:     # Eq. 5 at the last checkpoint against what Adam did since
                probes[-1]["interval"] = {**_agreement(prev["eq5"], now - prev["r"]),
                                          "epochs": [probes[-1]["epoch"], record["epoch"]]}
            pr = probe(rm.model, tok, enc["train"], eval_seqs, ref_margins, beta=config.beta, pad=pad)
            probes.append({"epoch": record["epoch"], "eta": pr["eta"],
                           **{k: pr[k] for k in ("eq5_vs_actual", "tangent_vs_actual", "eq5_vs_tangent",
                                                 "tangent_margin_sign_agreement")},
                           **{k: pr[k].tolist() for k in ("eq5", "tangent", "actual")}})
            prev.update(eq5=pr["eq5"], r=now)
            a = pr["eq5_vs_actual"]
            log(f"{clock()}   epoch {record['epoch']:g}: Eq. 5 vs the real full step: correlation "
                f"{a['correlation'] if a['correlation'] is None else round(a['correlation'], 3)}, sign "
                f"{a['sign_agreement']:.3f} (per pair's margin {a['margin_sign_agreement']:.3f}); the full step's "
                f"tangent vs it: correlation {pr['tangent_vs_actual']['correlation']:.4f}, margin sign "
                f"{pr['tangent_margin_sign_agreement']:.3f}")

        t1 = time.perf_counter()
        hist = train(model, kind, st["variant"], enc["train"], pad_id=pad, config=cfg,
                     evals={n: enc[n] for n in SPLITS}, callback=callback, progress=progress)
        seconds[spec] = time.perf_counter() - t1
        history = [{"epoch": c["epoch"], **{n: _combine(n, c["evals"][n]) for n in SPLITS}}
                   for c in hist["checkpoints"]]
        per_spec[spec] = {"history": history, "loss": hist["loss"],
                          "settings": {"variant": st["variant"].name if st["variant"].name != "unembedding" else
                                       f"unembedding:{st['variant'].tied}", "lr": st["lr"], "epochs": st["epochs"],
                                       "checkpoints": list(st["checkpoints"]), "forecast_route": st["route"]}}
        scores[spec] = fcst.score(fcs[st["route"]], kind, hist)
        f = history[-1]
        log(f"{clock()} {spec} ({seconds[spec]:.0f} s): " + "  ".join(f"{n} {f[n]['accuracy']:.3f}" for n in SPLITS)
            + f"  (the last step's mean loss, before its update: {hist['loss'][-1]:.3f})")
        for name, row in scores[spec].items():
            log(fcst.describe(name, kind, row))

    checks = checks_for(per_spec, probes)
    for c in checks:
        tag = {True: "PASS", False: "FAIL", None: "INFO"}[c["passed"]]
        log(f"  [{tag}] {c['claim']}: predicted {c['predicted']}, measured {c['measured']}")
    return {"config": dataclasses.asdict(config), "paper": PAPER,
            "settings": {"batch": config.batch, "beta": config.beta, "optimiser": "AdamW, weight decay 0 (= Adam)",
                         "precision": "fp32"},
            "data": {"source": data["source"], "sizes": data["sizes"], "examples": data["examples"],
                     "model": config.model},
            "models": per_spec,
            # per route: the forecast, and per kind, set and step how many pairs the step would push
            # the wrong way; per spec: its route's forecast scored against its own end of training
            "forecast": {"routes": {r: {**f, "flagged": _flagged(f)} for r, f in fcs.items()}, "scores": scores},
            "eq5_along": {"rows": f"paraphrases of the first {P} training prompts ({4 * P} responses)",
                          "probes": probes},
            "conventions": {"forecast_scoring": "per listed pair of each split; wrong = final margin <= 0",
                            "paraphrase_accuracy": "pooled over the 2 x 2 (yes-like, no-like) combinations",
                            "probe": "one full-batch GD step (float32) of every parameter on the mean DPO loss over "
                                     "every training pair, from the checkpoint"},
            "checks": checks, "_run": {"seconds_per_model": seconds}}


def checks_for(per_spec: dict, probes: list) -> list:
    checks = []

    def add(claim, predicted, measured, passed):
        checks.append({"claim": claim, "predicted": predicted, "measured": measured, "passed": passed})

    for spec, v in per_spec.items():
        end = v["history"][-1]
        add(f"{spec} fits its training pairs", "> 0.9", end["train"]["accuracy"], end["train"]["accuracy"] > 0.9)
        pt, pe = end["para_train"]["accuracy"], end["para_test"]["accuracy"]
        if "/top_k:" in spec or spec.endswith(":train"):
            # the paper's reading is made for full fine-tuning and Assumption 1's variants; between the
            # two the outcome hangs on the answers drawn (docs/persona-real.md): measured, not claimed
            add(f"{spec} on paraphrased answers", "(measured)", [pt, pe], None)
        elif spec.startswith("ex"):
            add(f"{spec} generalises to paraphrased answers (paper: 1.00 / 1.00)", "> 0.9 on both", [pt, pe],
                pt > 0.9 and pe > 0.9)
        else:
            add(f"{spec} is below chance on paraphrased answers (paper: 0.022 / 0.019)", "< 0.5 on both", [pt, pe],
                pt < 0.5 and pe < 0.5)
    if probes:
        add("The full step's exact tangent predicts the real full step at every checkpoint (the probe's own check)",
            "correlation > 0.99", [p["tangent_vs_actual"]["correlation"] for p in probes],
            min(p["tangent_vs_actual"]["correlation"] or 0 for p in probes) > 0.99)
        add("Eq. 5 (unembedding alone) against the real step of every parameter, per checkpoint (correlation)",
            "(measured: Assumption 1 dropped)", [p["eq5_vs_actual"]["correlation"] for p in probes], None)
        add("Eq. 5 against the real full step: sign agreement per checkpoint", "(measured)",
            [p["eq5_vs_actual"]["sign_agreement"] for p in probes], None)
        add("Eq. 5 against the real full step: sign of each pair's margin change, per checkpoint", "(measured)",
            [p["eq5_vs_actual"]["margin_sign_agreement"] for p in probes], None)
    return checks


def main(argv=None) -> int:
    return cli.simulation_main("persona_real_along", Config, run, __doc__, argv, module="sims.persona_real.along")


if __name__ == "__main__":
    sys.exit(main())
