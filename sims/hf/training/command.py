"""`python -m sims.hf train`: the researcher's own experiment in one command.

Reward models of the kinds asked (EX-RM, IM-RM, EX-GRM) trained from one model on the given
pairs, with the paper's optimiser by default, evaluated on every named set after every epoch (or
every N steps), and written as one run folder:
  results.json  the configuration, the data (sizes, lengths, truncations, the chat template),
                and per kind and seed every checkpoint's evaluations: every pair's rewards,
                accuracy (a tie counting 1/2, and 0 as TRL does), the official normalised margin,
                the mean margin and the loss; the loss of every step; with --forecast, the
                predicted first-step margin change of every evaluation pair and how it came
                out (sims/hf/training/forecast.py)
  run.json      wall time, versions, argv, the code's hash
  hf_train.png/.pdf   accuracy on each evaluation set over training, EX-RM beside IM-RM
  models/KIND-seedS/  the trained reward models as transformers folders (sims/hf/training/export.py)

Truncation (--max-length M): a prompt + response longer than M tokens loses the prompt's first
tokens, down to no fewer than its last M // 2; a response still too long loses its last tokens.
The count of pairs truncated is printed and recorded.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from sims import inputs
from sims.cli import UsageError
from sims.progress import progress

NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
DEFAULT_MAX_LENGTH = 1024


def add_parser(sub, common, pair_formats: str):
    t = sub.add_parser("train", help="train EX-RMs, IM-RMs (and EX-GRMs) from one model on your pairs, evaluate "
                       "them on your sets after every epoch, and write the trained models (docs/train.md)")
    common(t, out="hf_train")
    t.add_argument("--train", required=True, help=f"training pairs ({pair_formats}; FOLDER:SPLIT picks a split)")
    t.add_argument("--eval", action="append", default=[], dest="eval_sets", metavar="NAME=PAIRS",
                   help="an evaluation set, repeatable (the training pairs are evaluated as 'train')")
    t.add_argument("--kinds", default="ex,im", help="comma-separated: ex (EX-RM), im (IM-RM), grm (EX-GRM)")
    t.add_argument("--variant", default="full", help="what trains: head, unembedding[:hold|:train], top_k:K or "
                   "full for every kind that can train it, or one per kind, e.g. ex=head,im=unembedding")
    t.add_argument("--lr", type=float, default=1e-6, help="AdamW's learning rate (weight decay 0, no scheduler, no "
                   "clipping: the official code's)")
    t.add_argument("--batch", type=int, default=32, help="pairs per optimiser step (--batch-size is the evaluation's "
                   "sequences per forward)")
    t.add_argument("--micro-batch", type=int, default=8, help="pairs per forward/backward (memory only: the "
                   "step's gradient is the same)")
    t.add_argument("--epochs", type=int, default=5, help="epochs (Section 5.2's 5; Section 5.1 used 50)")
    t.add_argument("--beta", type=float, default=0.01, help="the IM-RM's beta, in [1e-30, 1e30]")
    t.add_argument("--seeds", default="0", help="comma-separated seeds (the shuffle and torch's generator)")
    t.add_argument("--eval-every", default="1", help="evaluate every N epochs ('2') or N steps ('10steps'), "
                   "and at the start and the end")
    t.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="most tokens of prompt + response; a "
                   "longer pair loses its prompt's first tokens (keeping at least the last half of --max-length), "
                   "then its response's last tokens; the count truncated is printed and recorded")
    t.add_argument("--no-chat-template", action="store_true", help="plain-text pairs as plain text (by default a "
                   "model with a chat template gets it: prompt as the user turn, response as the assistant's, as the "
                   "official code)")
    t.add_argument("--eos", action="store_true", help="append EOS to plain-text responses (TRL; with "
                   "--no-chat-template)")
    t.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 autocast where the processor or GPU has bf16 units and the run moves the weights "
                        "enough for a bf16 forward to see it (lr x steps over the median weight's bf16 spacing, "
                        "docs/train.md), else fp32 (the paper's lr 1e-6 over 150 steps: fp32); master weights, "
                        "log-softmax, rewards and losses stay in float32 (float64 with --dtype float64)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="recompute the blocks' activations in the "
                   "backward (less memory, about a third more time)")
    t.add_argument("--no-save", action="store_true", help="do not write the trained models (results only)")
    t.add_argument("--forecast", action="store_true", help="before training, predict per evaluation pair the sign "
                   "of each kind's first-step margin change, for a gradient-descent step and for AdamW's first step "
                   "(IM-RM: lm_head alone, Eq. 5, or the exact tangent where the tied matrix trains; EX-RM: its head "
                   "from u = 0); after it, record which pairs moved as predicted and ended wrong, and the forecast's "
                   "recall and precision beside a token-overlap baseline (docs/train.md)")
    return t


def _eval_sets(specs: list[str]) -> dict[str, str]:
    sets = {}
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not eq or not name or not path:
            raise UsageError(f"--eval {spec}: expected NAME=PAIRS (e.g. --eval paraphrase=para.jsonl)")
        if not NAME.match(name):
            raise UsageError(f"--eval {spec}: a set's name is letters, digits, '_', '.' or '-', got {name!r}")
        if name == "train":
            raise UsageError(f"--eval {spec}: 'train' names the training pairs, which are evaluated anyway; "
                             f"choose another name")
        if name in sets:
            raise UsageError(f"--eval {spec}: two sets are named {name!r}")
        sets[name] = path
    return sets


def _eval_every(text: str) -> tuple[int, str]:
    m = re.fullmatch(r"\s*(\d+)\s*(steps?|epochs?)?\s*", text)
    if not m or int(m.group(1)) < 1:
        raise UsageError(f"--eval-every {text}: expected a positive number of epochs ('2') or steps ('10steps')")
    return int(m.group(1)), "step" if (m.group(2) or "epoch").startswith("step") else "epoch"


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise UsageError(f"--seeds {text}: expected comma-separated whole numbers, e.g. 0,1,2") from None
    out = [s for s in seeds if s < 0 or s >= 2 ** 32]
    if out:
        raise UsageError(f"--seeds {text}: {out[0]} is outside [0, 2^32)")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise UsageError(f"--seeds {text}: seed {twice[0]} is given twice (it would train the same model again)")
    return seeds


def check(args) -> dict:
    """Every flag and input file, before a model loads: the plan of the run."""
    from sims.hf.pairs import read_pairs
    from sims.hf.places import places as where
    from sims.hf.training.variants import KINDS, variants_for
    for k in ("batch", "micro_batch", "epochs", "batch_size"):
        inputs.check_number(k.replace("_", "-"), getattr(args, k), inputs.in_range(1, 10 ** 9))
    inputs.check_number("lr", args.lr, inputs.in_range(1e-12, 1.0))
    inputs.check_number("beta", args.beta, inputs.in_range(1e-30, 1e30))
    inputs.check_number("max-length", args.max_length, inputs.in_range(2, 10 ** 7))
    if args.dtype not in ("float32", "float64"):
        raise UsageError(f"--dtype {args.dtype}: train keeps the master weights, log-softmax, rewards and losses in "
                         f"float32 (or float64), as the official code; for bf16 arithmetic give --precision bf16 "
                         f"(autocast of the body)")
    if args.dtype == "float64" and args.precision == "bf16":
        raise UsageError("--precision bf16 autocasts a float32 model, and --dtype is float64: give --precision fp32 "
                         "(or auto) to train in float64")
    kinds = [k.strip() for k in args.kinds.split(",")]
    bad = [k for k in kinds if k not in KINDS]
    if bad or len(set(kinds)) != len(kinds):
        raise UsageError(f"--kinds {args.kinds}: comma-separated, each once, of {', '.join(KINDS)}")
    try:
        variants = variants_for(kinds, args.variant)
    except UsageError as exc:
        raise UsageError(f"--variant {args.variant}: {exc}") from None
    sets = _eval_sets(args.eval_sets)
    inputs.check_not_an_input(args.out, {"--train": args.train, **{f"--eval {n}": p for n, p in sets.items()}})
    every, unit = _eval_every(args.eval_every)
    seeds = _seeds(args.seeds)
    if args.forecast and not set(kinds) & {"ex", "im"}:
        raise UsageError(f"--forecast predicts the EX-RM and the IM-RM; --kinds {args.kinds} names neither")
    files, places, notes = {}, {}, []
    for name, path in {"train": args.train, **sets}.items():
        try:
            files[name], ignored = read_pairs(path)
            places[name] = where(path, len(files[name]))
        except UsageError as exc:
            raise UsageError(f"{_set_name(name)}: {exc}") from None
        if ignored:
            notes.append(f"{_set_name(name)} {path}: ignored columns {', '.join(map(str, ignored))}")
    return {"kinds": kinds, "variants": variants, "sets": sets, "seeds": seeds, "files": files, "places": places,
            "notes": notes,
            **_checkpoints(every, unit, args, len(files["train"]))}


def _set_name(name: str) -> str:
    """How a message names a set: by the flag that gave it."""
    return "--train" if name == "train" else f"--eval {name}"


def truncate(encoded, max_length: int) -> tuple[list, int]:
    """The module docstring's rule, per pair: (pairs, how many were truncated)."""
    out, n = [], 0
    for p, c, r in encoded:
        longest = max(len(c), len(r))
        if len(p) + longest <= max_length:
            out.append((p, c, r))
            continue
        n += 1
        keep = max(max_length - longest, min(len(p), max_length // 2))
        p = p[len(p) - keep:]
        room = max_length - len(p)
        out.append((p, c[:room], r[:room]))
    return out, n


def encode(tokenizer, plan: dict, args, kinds: list[str]) -> dict:
    """Encoded pairs per set (and the EX-GRM's verification pairs), with what was done to them."""
    import numpy as np

    from sims.hf.pairs import chat_pairs, encode_pairs
    from sims.hf.training.verifier import as_text, grm_pairs, verdict_tokens
    data = {"sets": {}, "grm_sets": {}, "info": {}}
    applied = None
    for name, pairs in plan["files"].items():
        if args.no_chat_template and not isinstance(pairs[0]["prompt"], str):
            raise UsageError(f"--no-chat-template: the {_set_name(name)} pairs are conversational (lists of messages), "
                             f"which only a chat template renders; give plain-text pairs, or drop the flag")
        text, templ = chat_pairs(tokenizer, pairs, not args.no_chat_template)
        applied = templ if applied is None else applied
        if templ != applied:
            raise UsageError(f"{_set_name(name)}: its pairs are {'conversational' if templ else 'plain text'}, and the "
                             f"training pairs are not: one run renders every set one way")
        enc, cut = truncate(encode_pairs(tokenizer, text, eos=args.eos and not templ), args.max_length)
        lengths = np.array([len(p) + max(len(c), len(r)) for p, c, r in enc])
        data["sets"][name] = enc
        data["info"][name] = {"pairs": len(enc), "truncated": cut, "tokens_mean": float(lengths.mean()),
                              "tokens_max": int(lengths.max()), "digest": digest(enc)}
        if "grm" in kinds:
            gp = grm_pairs(tokenizer, [as_text(p["prompt"]) for p in pairs],
                           [{"chosen": as_text(p["chosen"]), "rejected": as_text(p["rejected"])} for p in pairs])
            data["grm_sets"][name] = truncate(encode_pairs(tokenizer, gp, eos=False), args.max_length)[0]
    if args.eos and applied:
        print("warning: --eos: the chat template ends each response with its own end of turn; --eos applies to "
              "plain text only (with --no-chat-template)", file=sys.stderr)
    data["chat_template"] = applied
    data["verdict_tokens"] = verdict_tokens(tokenizer) if "grm" in kinds else None
    return data


def digest(encoded) -> str:
    """A short fingerprint of a set's token ids as trained or evaluated: `compare` refuses two runs
    whose sets of one name hold different pairs (or the same pairs rendered differently)."""
    import hashlib
    return hashlib.sha256(json.dumps([[list(map(int, x)) for x in pair] for pair in encoded]).encode()).hexdigest()[:16]


def run(args, argv) -> int:
    """The command: checks, loads, trains every kind and seed, writes the run folder."""

    from sims.cli import drawer, plan_folder, results_folder, versions, write_json
    from sims.hf.model import check_context, load, load_tokenizer, pad_token_id
    from sims.hf.training import precision as prec
    from sims.hf.training.engine import TrainConfig, Trainer, world
    from sims.hf.training.export import save
    from sims.hf.training.states import check_top_blocks
    from sims.hf.training.variants import Full, TopBlocks, Unembedding, describe
    from sims.provenance import code_hash
    plan = check(args)
    rank, processes = world()
    folder = plan_folder("hf_train", args.out, args.force) if rank == 0 else None
    for n in plan["notes"]:
        print(f"note: {n}", file=sys.stderr)
    t0 = time.perf_counter()
    model = load(args.model, dtype=args.dtype, device=args.device, gguf_file=args.gguf_file)
    tok = load_tokenizer(args.tokenizer or args.model, None if args.tokenizer else args.gguf_file,
                         what="--tokenizer" if args.tokenizer else "--model")
    for kind, v in plan["variants"].items():
        if isinstance(v, TopBlocks):
            try:
                check_top_blocks(model, v.k)
            except UsageError as exc:
                raise UsageError(f"--variant {args.variant}: {exc}") from None
        if args.gradient_checkpointing and not isinstance(v, (TopBlocks, Full)):
            print(f"note: --gradient-checkpointing: the {kind} run's {v.name} variant trains no decoder block, so "
                  f"there is nothing to recompute; it has no effect there", file=sys.stderr)
    steps = args.epochs * -(-len(plan["files"]["train"]) // args.batch)
    weights = prec.weight_profile(model.parameters())
    # a float64 model asked for exact arithmetic: auto runs it as it is (check() refused bf16)
    run_precision, why = prec.resolve("fp32" if args.dtype == "float64" else args.precision, args.device,
                                      drift=args.lr * steps, weight=weights["median_weight"])
    data = encode(tok, plan, args, plan["kinds"])
    for name, enc in [*data["sets"].items(), *data["grm_sets"].items()]:   # before any forward pass
        try:
            check_context(model, [(p, max(c, r, key=len)) for p, c, r in enc])
        except UsageError as exc:
            raise UsageError(f"{_set_name(name)}: {str(exc).replace('sequence', 'pair')} (or lower --max-length, "
                             f"{args.max_length} now)") from None
    if why:             # said once nothing else can refuse the run
        print(why, file=sys.stderr, flush=True)
    for name, info in data["info"].items():
        if info["truncated"]:
            print(f"note: {name}: {info['truncated']} of {info['pairs']} pairs longer than --max-length "
                  f"{args.max_length} tokens were truncated (the prompt's start first)", file=sys.stderr)
    pad = pad_token_id(tok)
    reference = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    results = {"model": args.model, "kinds": plan["kinds"], "seeds": plan["seeds"],
               "variants": {k: describe(v) for k, v in plan["variants"].items()},
               "config": {"lr": args.lr, "epochs": args.epochs, "batch": args.batch, "beta": args.beta,
                          "micro_batch": min(args.micro_batch, args.batch), "eval_every": args.eval_every,
                          "gradient_checkpointing": args.gradient_checkpointing},
               "precision": {"asked": args.precision, "ran": run_precision, "why": why, "drift": args.lr * steps,
                             "weights": weights},
               "data": {"train": args.train, "eval": plan["sets"], "chat_template": data["chat_template"],
                        "eos": bool(args.eos and not data["chat_template"]), "max_length": args.max_length,
                        "sets": data["info"]},
               "runs": {}}
    seconds = {}
    say = print if rank == 0 else (lambda *a, **k: None)      # the first process speaks for all
    fc = None
    if args.forecast and rank == 0:
        from sims.hf.training import forecast as fcst
        print("progress: forecast: the first step of each kind from its initialisation (gradient descent and "
              "AdamW), per evaluation pair", file=sys.stderr, flush=True)
        t1 = time.perf_counter()
        im = plan["variants"].get("im")
        fc = fcst.forecast(model, tok, data["sets"], kinds=plan["kinds"], beta=args.beta, batch_size=args.batch_size,
                           hold_input_embedding=isinstance(im, Unembedding) and im.tied == "hold")
        seconds["forecast"] = time.perf_counter() - t1
        for name, f in fc["sets"].items():
            f["places"] = plan["places"][name]
        print("forecast before training (margin change per pair, per unit lr; gd: gradient descent, adam: AdamW's "
              "first step):")
        for kind in fc["kinds"]:
            for line in fcst.flagged_lines(fc, kind):
                print(line)
        results["forecast"] = {**fc, "scores": {}, "pooled": {}}
    results["processes"] = processes
    draw = drawer("hf_train")
    saved = 0
    # the folder is staged from the start, so each model is written as soon as it is trained (one
    # in memory at a time); an error or an interrupt removes the staged folder whole
    # under `accelerate launch` every process trains its share, and the first one writes
    with (results_folder(folder, given=args.out is not None, force=args.force) if rank == 0 else _Nowhere()) as staged:
        for seed in plan["seeds"]:
            for kind in plan["kinds"]:
                sets = data["grm_sets"] if kind == "grm" else data["sets"]
                cfg = TrainConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch,
                                  micro_batch_size=min(args.micro_batch, args.batch), beta=args.beta, seed=seed,
                                  eval_batch_size=args.batch_size,
                                  grm_tokens=data["verdict_tokens"] if kind == "grm" else None,
                                  precision=run_precision, gradient_checkpointing=args.gradient_checkpointing,
                                  checkpoints=plan["checkpoints"], unit=plan["unit"])
                label = f"{kind}-seed{seed}"
                say(f"{label}: {plan['variants'][kind].name}, {_count(len(sets['train']), 'pair')}, {_count(args.epochs, 'epoch')}, "
                      f"{run_precision}", file=sys.stderr)
                t1 = time.perf_counter()
                trainer = Trainer(model, kind, plan["variants"][kind], sets["train"], pad_id=pad, config=cfg,
                                  evals=sets, progress=progress if rank == 0 else None)
                history = trainer.run()
                results["runs"].setdefault(kind, {})[str(seed)] = history
                if fc is not None and kind in fcst.FORECAST_KINDS:
                    results["forecast"]["scores"].setdefault(kind, {})[str(seed)] = fcst.score(fc, kind, history)
                seconds[label] = time.perf_counter() - t1
                say(final_line(label, history))
                if not args.no_save and rank == 0:
                    print(f"progress: writing {label} to models/{label}", file=sys.stderr, flush=True)
                    save(trainer.reward_model, staged.path / "models" / label, tok, reference=reference,
                         chat_template=data["chat_template"])
                    saved += 1
                del trainer
        results["summary"] = summary(results)
        if fc is not None:
            say("forecast of the first step (gd: gradient descent, adam: AdamW's) against the end of training (wrong = "
                "margin <= 0; recall, precision; n/a: nothing to divide by)")
            for kind, by_seed in results["forecast"]["scores"].items():
                results["forecast"]["pooled"][kind] = fcst.pooled(by_seed)
                for name, row in results["forecast"]["pooled"][kind].items():
                    say(fcst.describe(name, kind, row))
                for line in fcst.outcome_lines(fc, kind, by_seed):
                    say(line)
        inputs.check_results_finite(results)
        if rank:
            return 0
        write_json(staged.path / "results.json", results)
        if draw is not None:
            draw(results, staged.path / "hf_train")
        write_json(staged.path / "run.json", {"wall_seconds": time.perf_counter() - t0, "seconds": seconds,
                                              "module": "sims.hf",
                                              "code_hash": code_hash("sims.hf.__main__"), "versions": versions(),
                                              "argv": list(sys.argv[1:] if argv is None else argv)})
    print(f"results: {staged.final / 'results.json'}" + (f"  figure: {staged.final / 'hf_train'}.png" if draw else "")
          + (f"  models: {staged.final / 'models'}" if saved else ""))
    return 0


class _Nowhere:
    """What a process other than the first writes: nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _checkpoints(every: int, unit: str, args, n_train: int) -> dict:
    """When the run evaluates (every `every` epochs or steps, and at the start and the end), checked
    against the run's length before a model loads (every kind trains one pair or verification pair
    per training pair, so all share it)."""
    steps = args.epochs * -(-n_train // args.batch)
    end = args.epochs if unit == "epoch" else steps
    if every > end:
        raise UsageError(f"--eval-every {args.eval_every}: the run has {_count(end, unit)}")
    return {"checkpoints": tuple(sorted(set(range(0, end + 1, every)) | {end})), "unit": unit}


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" + ("" if n == 1 else "s")


def final_line(label: str, history: dict) -> str:
    last = history["checkpoints"][-1]["evals"]
    return f"{label}: " + "  ".join(f"{n} {e['accuracy']:.3f}" for n, e in last.items()) + "  (accuracy, ties 1/2)"


def summary(results: dict) -> dict:
    """Per kind and set: the final accuracy (ties 1/2 and 0) and normalised margin, mean over seeds."""
    import numpy as np
    out = {}
    for kind, by_seed in results["runs"].items():
        finals = [h["checkpoints"][-1]["evals"] for h in by_seed.values()]
        out[kind] = {}
        for name in finals[0]:
            row = {}
            for key in ("accuracy", "accuracy_ties_zero", "normalised_margin"):
                vals = [f[name][key] for f in finals if f[name][key] is not None]
                row[key] = float(np.mean(vals)) if vals else None
            row["initial_accuracy"] = by_seed[next(iter(by_seed))]["checkpoints"][0]["evals"][name]["accuracy"]
            out[kind][name] = row
    return out
