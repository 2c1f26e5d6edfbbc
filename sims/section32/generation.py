"""Section 3.2 on a real model: does the IM-RM's policy generate the cycles its reward verifies?

    python -m sims.section32.generation --run RUN [--pairs data/section32/test.jsonl]

RUN is a `python -m sims.hf train` folder that trained IM-RMs on the Hamiltonian pairs of
`python -m sims.section32.data` and saved them (models/im-seedS/, without --no-save). For each
seed's IM-RM r = beta ln(pi/pi_ref) and each test graph x, with C the set of every vertex order
that is a Hamiltonian cycle of x (all of them, by depth-first search: each cycle from every
start vertex, in both directions):

  * sampled: one response of the policy pi, and one of the reference pi_ref, at temperature 1
    with no top-k or top-p (the official evaluator), up to --max-new-tokens; a sample counts when
    it names a Hamiltonian cycle of x (sims.section32.data.is_valid). Rates with Clopper-Pearson
    95% intervals.
  * exact: pi(C|x) and pi_ref(C|x), the probability of generating some cycle and then ending
    the turn, summed over every y in C from its tokens as the run encoded its pairs (the chat
    template's end of turn included), and Theorem 1's bound pi(C|x) <= pi_ref(C|x) exp(max_{y in C}
    r(x,y) / beta) (theory.theorem1.generation_bound) checked on every graph. The bound holds for
    any policy whose IM-RM is r; what it says is how small pi(C|x) stays unless the reward of
    some cycle reaches beta ln(1 / pi_ref(C|x)).
  * the verifier's test accuracy, as the run measured it (its evaluation set --eval NAME).

Every response of a graph shares its prompt: the prompt runs once per batch and its key/value
cache serves every response (equal to scoring prompt + response whole; tested).
Paper (Pythia-1B, 1000 training pairs, 15 epochs): IM-RM test accuracy 0.993, no valid cycle
among its policy's samples.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims import cli
from sims.cli import UsageError, field
from sims.inputs import POSITIVE, SEED
from sims.section32.data import adjacency, cycle_orders, is_valid, order_text

PAPER = {"im_test_accuracy": 0.993, "im_valid_samples": 0.0, "model": "Pythia-1B", "n_train": 1000, "epochs": 15}
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>")
BOUND_SLACK = 1e-3     # nats: float32 log-probs summed over ~20 response tokens, against a bound of the same sums


@dataclass(frozen=True)
class Config:
    run: str = field("", "a `python -m sims.hf train` folder whose IM-RMs were saved (models/im-seedS/)")
    pairs: str = field("data/section32/test.jsonl", "the test pairs, with their `edges` column "
                       "(python -m sims.section32.data)")
    eval_set: str = field("test", "the run's evaluation set that holds these pairs (--eval NAME=...), for "
                          "the verifier's accuracy")
    graphs: int = field(0, "score this many test graphs (the first ones); 0: every one", (lambda v: v >= 0, "must be >= 0"))
    max_new_tokens: int = field(48, "most tokens a sample may take (SmolLM2 writes a cycle of 10 vertices and "
                                "its end of turn in 20)", POSITIVE)
    batch_size: int = field(64, "responses per forward pass", POSITIVE)
    device: str = field("cpu", "torch device for both models")
    seed: int = field(0, "the samplers' generator", SEED)

    def validate(self):
        if not self.run:
            raise UsageError("--run: give a `python -m sims.hf train` folder that saved its IM-RMs")
        from sims.inputs import check_device
        check_device(self.device)
        read_rows(self.pairs)
        saved(self.run, self.eval_set, self.pairs)


def read_rows(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--pairs {path}: no such file (write it with python -m sims.section32.data)")
    rows = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UsageError(f"--pairs {path} line {i}: not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(row.get("edges"), list):
            raise UsageError(f"--pairs {path} line {i}: needs a text prompt and the graph's edges "
                             f"(python -m sims.section32.data writes them)")
        edges = row["edges"]
        if not all(isinstance(e, list) and len(e) == 2 and all(type(v) is int for v in e) for e in edges):
            raise UsageError(f"--pairs {path} line {i}: edges must be [a, b] pairs of integer vertex ids")
        n = len(str(row.get("chosen", "")).split())
        if n < 3 or any(not (0 <= a < n and 0 <= b < n) or a == b for a, b in edges):
            raise UsageError(f"--pairs {path} line {i}: its edges do not fit its {n}-vertex chosen cycle")
        if not is_valid(str(row["chosen"]), edges, n):
            raise UsageError(f"--pairs {path} line {i}: its chosen response is not a Hamiltonian cycle of its edges "
                             f"(python -m sims.section32.data writes pairs whose chosen response is one)")
        rows.append({"prompt": row["prompt"], "edges": [tuple(e) for e in edges], "n": n})
    if not rows:
        raise UsageError(f"--pairs {path}: no pairs")
    return rows


def saved(run: str, eval_set: str, pairs: str) -> dict:
    """seed -> (model folder, manifest, the run's accuracy on eval_set), for every saved IM-RM;
    the run must have evaluated eval_set on the file --pairs names (the same bytes)."""
    from sims.hf.training.export import read_manifest
    folder = Path(run)
    try:
        results = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        raise UsageError(f"--run {run}: no readable results.json (give the folder `python -m sims.hf train` wrote)") \
            from None
    runs = (results.get("runs") or {}).get("im") if isinstance(results, dict) else None
    if not runs:
        raise UsageError(f"--run {run}: it trained no IM-RM (train with --kinds im or ex,im)")
    if not isinstance(runs, dict) or not all(
            isinstance(r, dict) and isinstance(r.get("checkpoints"), list) and r["checkpoints"]
            and isinstance(r["checkpoints"][-1], dict) and isinstance(r["checkpoints"][-1].get("evals"), dict)
            for r in runs.values()):
        raise UsageError(f"--run {run}: its results.json is not one `python -m sims.hf train` wrote (runs.im.SEED."
                         f"checkpoints[-1].evals missing)")
    used = ((results.get("data") or {}).get("eval") or {}).get(eval_set)
    if isinstance(used, str) and Path(used).is_file() and Path(used).read_bytes() != Path(pairs).read_bytes():
        raise UsageError(f"--pairs {pairs}: the run evaluated {eval_set!r} on {used}, another file; give that one, "
                         f"or name the set that holds these pairs with --eval-set")
    out = {}
    for seed, r in runs.items():
        model = folder / "models" / f"im-seed{seed}"
        if not model.is_dir():
            raise UsageError(f"--run {run}: no saved IM-RM at {model} (the run used --no-save?)")
        manifest = read_manifest(model)
        if manifest is None or manifest["kind"] != "im":
            raise UsageError(f"{model}: not a saved IM-RM (no rmgap.json of kind im)")
        evals = r["checkpoints"][-1]["evals"]
        if eval_set not in evals:
            raise UsageError(f"--eval-set {eval_set}: the run evaluated {', '.join(sorted(evals))}; name the set "
                             f"that holds the test pairs")
        out[int(seed)] = (model, manifest, evals[eval_set]["accuracy"], bool((results.get("data") or {}).get("eos")))
    return out


def response_log_probs(model, prompt: list[int], responses: list[list[int]], batch_size: int):
    """ln pi(y | prompt) for each response: the prompt's key/value cache, once per batch, serves
    every response in it (right padding: a causal model's real positions never see it)."""
    import warnings

    import torch
    out, dev = [], next(model.parameters()).device
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)       # past_key_values' rename, as persona_real.states
        for s in range(0, len(responses), batch_size):
            chunk = responses[s:s + batch_size]
            first = model(input_ids=torch.tensor([prompt], device=dev), use_cache=True, logits_to_keep=1)
            cache = first.past_key_values
            cache.batch_repeat_interleave(len(chunk))
            L = max(len(r) for r in chunk)
            y = torch.tensor([r + [0] * (L - len(r)) for r in chunk], device=dev)
            mask = torch.tensor([[1.0] * len(r) + [0.0] * (L - len(r)) for r in chunk], device=dev)
            logits = model(y[:, :-1], past_key_values=cache, use_cache=True).logits if L > 1 else None
            z = first.logits[:, -1:].float().expand(len(chunk), 1, -1)
            if logits is not None:
                z = torch.cat([z, logits.float()], 1)
            lp = torch.log_softmax(z, -1).gather(-1, y[..., None])[..., 0]
            out.append((lp * mask).sum(-1).double().cpu())
    return torch.cat(out).numpy()


def stop_tokens(tok) -> list[int]:
    """The tokens that end a sample: EOS, and a chat template's end of turn where the vocabulary has one."""
    ids = {tok.eos_token_id} | {tok.get_vocab()[t] for t in END_OF_TURN if t in tok.get_vocab()}
    ids.discard(None)
    if not ids:
        raise UsageError("the tokenizer has no EOS token: a sample would have no end")
    return sorted(ids)


def _until_stop(response: list[int], stop: list[int]) -> list[int]:
    """A response up to and with its first stop token: the event "generate y, then end the turn"
    that a sample is (the template's newline after its end of turn is never sampled)."""
    for i, t in enumerate(response):
        if t in stop:
            return response[:i + 1]
    return response


def clopper_pearson(k: int, n: int) -> list[float]:
    from scipy import stats
    lo = 0.0 if k == 0 else float(stats.beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(0.975, k + 1, n - k))
    return [lo, hi]


def sample(model, prompts: list[list[int]], *, max_new_tokens: int, seed: int, eos: list[int]) -> list[list[int]]:
    """One response per prompt at temperature 1, no top-k, no top-p."""
    import torch
    torch.manual_seed(seed)
    out, dev = [], next(model.parameters()).device
    for p in prompts:
        ids = model.generate(torch.tensor([p], device=dev), attention_mask=torch.ones(1, len(p), dtype=torch.long,
                                                                                     device=dev),
                             do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                             eos_token_id=eos, pad_token_id=eos[0])
        out.append(ids[0, len(p):].tolist())
    return out


def run(config: Config, log=print) -> dict:
    from theory.theorem1 import generation_bound
    from sims.hf.model import load, load_tokenizer
    from sims.hf.pairs import chat_pairs, encode_pairs
    from sims.progress import progress
    from scipy.special import logsumexp
    rows = read_rows(config.pairs)
    if config.graphs > len(rows):
        log(f"--graphs {config.graphs}: {config.pairs} holds {len(rows)}; scoring all of them")
    rows = rows[:config.graphs] if config.graphs else rows
    models = saved(config.run, config.eval_set, config.pairs)
    first, eos_appended = next(iter(models.values()))[1], next(iter(models.values()))[3]
    beta, reference = first["beta"], first["reference"]
    tok = load_tokenizer(str(next(iter(models.values()))[0]))
    eos = stop_tokens(tok)
    orders = [cycle_orders(adjacency(r["edges"], r["n"])) for r in rows]
    log(f"{len(rows)} test graphs, {sum(len(o) for o in orders)} Hamiltonian vertex orders in all "
        f"(median {int(np.median([len(o) for o in orders]))} per graph)")
    encoded = []
    for r, o in zip(rows, orders):
        texts = [order_text(v) for v in o]
        pairs, _ = chat_pairs(tok, [{"prompt": r["prompt"], "chosen": t, "rejected": t} for t in texts],
                              use=first["chat_template"])
        enc = encode_pairs(tok, pairs, eos=eos_appended)          # as the run encoded its pairs
        encoded.append((enc[0][0], [_until_stop(c, eos) for _, c, _ in enc]))

    def measure(model, label):
        tick = progress(f"{label}: log-probs of every cycle", len(rows), unit=" graphs")
        lp = []
        for g, (prompt, resp) in enumerate(encoded):
            lp.append(response_log_probs(model, prompt, resp, config.batch_size))
            tick(g + 1)
        tick = progress(f"{label}: sampling", 1)
        samples = sample(model, [p for p, _ in encoded], max_new_tokens=config.max_new_tokens, seed=config.seed,
                         eos=eos)
        tick(1)
        texts = [tok.decode(s, skip_special_tokens=True) for s in samples]
        valid = [is_valid(t, r["edges"], r["n"]) for t, r in zip(texts, rows)]
        return lp, texts, valid

    try:
        ref_model = load(reference, device=config.device)
    except UsageError as exc:
        raise UsageError(f"the run's reference model {reference!r} (its rmgap.json) cannot be loaded: "
                         f"{str(exc).split(': ', 1)[-1]}") from None
    ref_lp, ref_texts, ref_valid = measure(ref_model, "reference")
    del ref_model
    out = {}
    arrays = {"log_ref_mass": [float(logsumexp(a)) for a in ref_lp]}
    for seed, (folder, manifest, accuracy, _) in sorted(models.items()):
        pol_lp, texts, valid = measure(load(str(folder), device=config.device), f"IM-RM seed {seed}")
        log_c = np.array([logsumexp(a) for a in pol_lp])
        log_c_ref = np.array([logsumexp(a) for a in ref_lp])
        max_r = np.array([beta * float(np.max(a - b)) for a, b in zip(pol_lp, ref_lp)])
        # ln of theory.theorem1.generation_bound, kept in logs: these masses underflow float64
        log_bound = log_c_ref + max_r / beta
        assert np.allclose(np.exp(log_bound[:3]), generation_bound(log_c_ref[:3], max_r[:3], beta=beta), rtol=1e-9)
        k = int(sum(valid))
        arrays.update({f"seed{seed}_log_mass": log_c, f"seed{seed}_max_reward_over_beta": max_r / beta,
                       f"seed{seed}_log_bound": log_bound, f"seed{seed}_valid_sample": np.array(valid)})
        out[seed] = {
            "test_accuracy": accuracy,
            "sampled": {"valid": k, "graphs": len(rows), "rate": k / len(rows), "interval": clopper_pearson(k, len(rows)),
                        "examples": texts[:5]},
            "exact": {"mass": float(np.mean(np.exp(log_c))), "median_log10_mass": float(np.median(log_c) / math.log(10)),
                      "median_max_reward_over_beta": float(np.median(max_r / beta)),
                      "median_log10_bound": float(np.median(log_bound) / math.log(10)),
                      "bound_holds": bool(np.all(log_c <= log_bound + BOUND_SLACK)),
                      "largest_excess_nats": float(np.max(log_c - log_bound))},
        }
        log(f"IM-RM seed {seed}: test accuracy {accuracy:.3f}; valid samples {k}/{len(rows)}; mean pi(C|x) "
            f"{out[seed]['exact']['mass']:.3g} (reference {float(np.mean(np.exp(log_c_ref))):.3g}); Theorem 1 bound "
            f"{'holds' if out[seed]['exact']['bound_holds'] else 'FAILS'} on every graph")
    k_ref = int(sum(ref_valid))
    reference_row = {"sampled": {"valid": k_ref, "graphs": len(rows), "rate": k_ref / len(rows),
                                 "interval": clopper_pearson(k_ref, len(rows)), "examples": ref_texts[:5]},
                     "exact": {"mass": float(np.mean(np.exp([logsumexp(a) for a in ref_lp]))),
                               "median_log10_mass": float(np.median([logsumexp(a) for a in ref_lp]) / math.log(10))}}
    log(f"reference ({reference}): valid samples {k_ref}/{len(rows)}")
    checks = [{"claim": f"Theorem 1: pi(C|x) <= pi_ref(C|x) exp(max_C r / beta) on every test graph (seed {s})",
               "predicted": "holds", "measured": "holds" if v["exact"]["bound_holds"] else
               f"exceeded by {v['exact']['largest_excess_nats']:.2g} nats", "passed": v["exact"]["bound_holds"]}
              for s, v in out.items()]
    return {"config": {"run": config.run, "pairs": config.pairs, "graphs": len(rows),
                       "max_new_tokens": config.max_new_tokens, "seed": config.seed},
            "beta": beta, "reference": reference, "orders": [len(o) for o in orders],
            "seeds": {str(s): v for s, v in out.items()}, "reference_model": reference_row,
            "paper": PAPER, "checks": checks, "_arrays": {**arrays, "orders": np.array([len(o) for o in orders])}}


def _value(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a[len(flag) + 1:]
    return None


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    out, run_ = _value(args, "--out"), _value(args, "--run")
    if out and run_:
        o, r = Path(out).resolve(), Path(run_).resolve()
        if o == r or r in o.parents or o in r.parents:
            print(f"error: --out {out}: the training run {run_} is there; results go to a folder of their own",
                  file=sys.stderr)
            return cli.EXIT["usage"]
    return cli.simulation_main("section32_generation", Config, run, __doc__, argv, module="sims.section32.generation")


if __name__ == "__main__":
    sys.exit(main())
