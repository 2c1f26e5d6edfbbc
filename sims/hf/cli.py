"""The command line of `python -m sims.hf` (the module docstring of sims.hf is its help)."""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import sims.hf as package
from sims import inputs
from sims.cli import HelpFormatter, Parser, UsageError, run_cli
from sims.hf.bench import bench
from sims.hf.model import load, load_tokenizer
from sims.hf.pairs import read_pairs
from sims.hf.representations import analyse, load_npz, write_representations
from sims.hf.scoring import score
from sims.hf.step import step

DTYPES = ("float32", "float64", "bfloat16", "float16")
PADDING = ("right", "left")

def _common(p, model=True):
    if model:
        p.add_argument("--model", required=True, help="policy model: a folder or hub id")
        p.add_argument("--tokenizer", default=None, help="tokenizer (default: the model's)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="weights' dtype")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--padding-side", default="right", choices=PADDING, help="where padding goes")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--force", action="store_true", help="overwrite --out")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m sims.hf", description=package.__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    add = sub.add_parser
    sub.add_parser = lambda name, **kw: add(name, description=kw.get("help"), formatter_class=HelpFormatter, **kw)
    s = sub.add_parser("score", help="implicit rewards, accuracy and margins under six conventions (paper, "
                       "trl, rewardbench, and RewardBench's reference-free sum / avg / norm)")
    _common(s)
    s.add_argument("--ref", default=None, help="reference model (default: none, pi_ref = 1)")
    s.add_argument("--pairs", required=True, help="preference pairs (JSON Lines)")
    s.add_argument("--beta", type=float, default=0.01, help="DPO beta, in [1e-30, 1e30]")
    r = sub.add_parser("representations", help="write the .npz that sims.theorem2 --representations reads "
                       "(needs --heldout, --shifted or both)")
    _common(r)
    r.add_argument("--train", required=True, help="training pairs (JSON Lines)")
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
    t = sub.add_parser("step", help="Eq. 5 on the model: responses whose IM-RM reward moves the wrong way")
    _common(t)
    t.add_argument("--ref", required=True, help="reference model (its own log-probabilities enter g)")
    t.add_argument("--train", required=True, help="training pairs of the step (JSON Lines)")
    t.add_argument("--eval", required=True, help="evaluation pairs (JSON Lines)")
    t.add_argument("--beta", type=float, default=0.01, help="DPO beta, in [1e-30, 1e30]")
    t.add_argument("--eta", type=float, default=1e-3, help="learning rate of the step")
    t.add_argument("--eos", action="store_true", help="append EOS to plain-text responses (TRL)")
    t.add_argument("--method", default="auto", choices=("auto", "eq5", "autograd"),
                   help="auto: Eq. 5 for an untied linear head, the exact autograd tangent otherwise")
    b = sub.add_parser("bench", help="time and memory of score's forward and Eq. 5 on a random Llama")
    _common(b, model=False)
    for action in b._actions:
        if action.dest == "out":
            action.required, action.help = False, "results folder (default: a new folder runs/hf_bench-<time>)"

    b.add_argument("--hidden", type=int, default=512, help="hidden width")
    b.add_argument("--layers", type=int, default=8, help="layers")
    b.add_argument("--vocab", type=int, default=32000, help="vocabulary size")
    b.add_argument("--n-pairs", type=int, default=16, help="pairs")
    b.add_argument("--length", type=int, default=128, help="tokens per prompt + response")
    return p


def _out(path: str, force: bool) -> Path:
    out = inputs.check_out_file(path, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _write_json(path: Path, obj) -> None:
    inputs.check_results_finite(obj)   # NaN / Inf would be invalid JSON and a silently wrong answer
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def _positive(name, v):
    inputs.check_number(name, v, inputs.POSITIVE_FINITE)


def body(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "bench":
        return _bench_main(args, argv)
    out = inputs.check_out_file(args.out, args.force)   # checked now, written when the results exist
    if args.command == "analyse":
        result = analyse(load_npz(args.representations))
        _write_json(out, {"source": args.representations, **result})
        _print_analysis(result)
        print(f"results: {out}")
        return 0
    _positive("batch-size", args.batch_size)
    inputs.check_device(args.device)
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
    if args.command == "representations":
        if not (args.heldout or args.shifted):
            raise UsageError("give --heldout, --shifted or both (the file needs a seen_tokens split)")
        if args.analyse:
            inputs.check_out_file(str(out.with_suffix(".json")), args.force)
    model = load(args.model, dtype=args.dtype, device=args.device)
    tok = load_tokenizer(args.tokenizer or args.model)
    common = {"batch_size": args.batch_size, "side": args.padding_side}
    if args.command == "score":
        pairs = files["pairs"]
        ref = load(args.ref, dtype=args.dtype, device=args.device) if args.ref else None
        result = score(model, ref, tok, pairs, beta=args.beta, **common)
        _write_json(out, {"model": args.model, "ref": args.ref, "pairs": args.pairs, **result})
        print(f"{'convention':26} {'accuracy':>8} {'ties':>6} {'norm. margin':>12}")
        for name, c in result["conventions"].items():
            print(f"{name:26} {c['accuracy']:8.3f} {c['tie_fraction']:6.3f} {c['normalised_margin']:12.4g}")
    elif args.command == "representations":
        sets = {k: files.get(k) for k in ("train", "heldout", "shifted")}
        arrays, notes = write_representations(model, tok, **sets, eos=args.eos, unembedding=args.unembedding, **common)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:
            np.savez(f, **arrays)
        for n in notes:
            print(f"note: {n}")
        print(f"representations: {out}  (python -m sims.theorem2 --representations {out})")
        if args.analyse:
            result = analyse(arrays)
            js = _out(str(out.with_suffix(".json")), args.force)
            _write_json(js, {"source": str(out), **result})
            _print_analysis(result)
            print(f"analysis: {js}")
    elif args.command == "step":
        ref = load(args.ref, dtype=args.dtype, device=args.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = step(model, ref, tok, files["train"], files["eval"], beta=args.beta,
                          eta=args.eta, eos=args.eos, method=args.method, **common)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        _write_json(out, {"model": args.model, "ref": args.ref, **result})
        print(f"{len(result['wrong_way'])} of {2 * result['n_eval']} evaluation responses move the wrong way "
              f"under IM-RM (EX-RM: {result['wrong_way_fraction_ex']:.3f} of them); method {result['method']}")
        for w in result["wrong_way"]:
            rho = f", rho vs y+ min {w['rho_chosen']['min']:.3f}" if "rho_chosen" in w else ""
            print(f"  pair {w['pair']} {w['response']}: delta r_IM {w['delta_r_im']:+.3g}, "
                  f"delta r_EX {w['delta_r_ex']:+.3g}{rho}")
    print(f"results: {out}")
    return 0


def _bench_main(args, argv) -> int:
    """bench writes a results folder (results.json, run.json) like a simulation, so that the
    README can quote it as a canonical run."""
    from sims.cli import make_folder, plan_folder, write_json
    from sims.provenance import code_hash
    for k in ("batch_size", "hidden", "layers", "vocab", "n_pairs", "length"):
        _positive(k.replace("_", "-"), getattr(args, k))
    inputs.check_device(args.device)
    # weights, their gradient-free copy and the logits of one batch (float32 or float64)
    item = 8 if args.dtype == "float64" else 4
    params = args.layers * 12 * args.hidden ** 2 + 2 * args.vocab * args.hidden
    inputs.check_memory(item * (3 * params + 4 * args.batch_size * args.length * (args.vocab + 16 * args.hidden)
                                + 2 * args.n_pairs * args.length * (args.hidden + 4)),
                        "this benchmark", args.device)
    folder = plan_folder("hf_bench", args.out, args.force)
    t0 = time.perf_counter()
    result = bench(hidden=args.hidden, layers=args.layers, vocab=args.vocab, n_pairs=args.n_pairs,
                   length=args.length, dtype=args.dtype, device=args.device)
    folder = make_folder(folder, given=args.out is not None)
    write_json(folder / "results.json", result)
    write_json(folder / "run.json", {"wall_seconds": time.perf_counter() - t0, "module": "sims.hf",
                                     "code_hash": code_hash("sims.hf"),
                                     "argv": list(sys.argv[1:] if argv is None else argv)})
    print(json.dumps(result, indent=2))
    print(f"results: {folder / 'results.json'}")
    return 0


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
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    import huggingface_hub   # its download retries would print lines before our one error line
    huggingface_hub.utils.logging.set_verbosity_error()
    return run_cli(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
