"""Section 5.2's comparison, with the uncertainty a 60-pair set carries: EX-RM against IM-RM per
evaluation set and per kind of shift, read from a `python -m sims.hf train` run.

    python -m sims.section52.report --run RUN_FOLDER[,RUN_FOLDER...] [--bootstrap 2000]

RUN_FOLDER holds a results.json written by `python -m sims.hf train --kinds ex,im` (any
variant, one or more seeds) whose evaluation sets are named as in data/section52/ (indist,
paraphrase, french, spanish, math, code; others are reported ungrouped). Several folders pool
their runs: one per kind compares runs trained apart (a frozen head and a frozen unembedding
want different learning rates, and one `sims.hf train` run takes one), and a kind's seeds may
come from several folders that trained it alike (more seeds, run later); every folder's
evaluation pairs must agree. At the run's last
checkpoint, every pair of every seed is scored c = 1 when r(chosen) > r(rejected), 1/2 on a
tie, 0 otherwise (the official accuracy). Then, per set and per group (in distribution,
token-level shift, domain shift: the group pools its sets' pairs):

  * accuracy, the mean of c over seeds and pairs, with a 95% bootstrap interval that resamples
    seeds and pairs (both with replacement; percentile interval);
  * EX - IM on the same pairs: the mean over pairs of d_i = mean over seeds of c_EX - c_IM, its
    bootstrap interval (the same resampled pairs and seeds for both kinds), and a two-sided
    p-value by sign flips of the d_i (under "no difference" each pair's EX and IM are
    exchangeable; 20000 random flips, or every flip where there are fewer);
  * the smallest difference this many pairs resolves: 2.8 x the standard error of the mean d_i
    (a two-sided 5% test with 80% power), beside the paper's gaps of 0.06-0.10;
  * the normalised margin (the official statistic, the engine's), mean over seeds.

Beside each group, the paper's averages over six LMs of 1B-8B, and its reading: IM-RMs are worse
in distribution and under token-level shift, comparable or better under domain shift. A
difference whose interval holds 0 is reported as not resolved, whichever way it leans.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sims import cli
from sims.cli import UsageError, field
from sims.inputs import POSITIVE, SEED
from sims.section52.card import GROUPS

KINDS = ("ex", "im")
# ../shared/paper_notes.md section 5.2: averages over six LMs of 1B-8B (EX / IM)
PAPER = {"in distribution": {"accuracy": {"ex": 0.752, "im": 0.646}, "normalised_margin": {"ex": 1.014, "im": 0.813},
                             "reading": "EX-RM better"},
         "token-level shift": {"accuracy": {"ex": 0.665, "im": 0.602}, "normalised_margin": {"ex": 0.976, "im": 0.763},
                               "reading": "EX-RM better"},
         "domain shift": {"accuracy": {"ex": 0.621, "im": 0.720}, "normalised_margin": {"ex": 0.807, "im": 0.726},
                          "reading": "IM-RM comparable or better"}}
FLIPS = 20000
MAX_BOOTSTRAP = 100_000      # each draw resamples every pair: past this the interval stops moving
MIN_BOOTSTRAP = 100          # a 95% interval's ends are the 2.5% and 97.5% points of the draws
POWER_FACTOR = 2.8          # z_{0.975} + z_{0.8} = 1.960 + 0.842: a 5% two-sided test with 80% power


def correct(chosen, rejected) -> np.ndarray:
    """1 where the chosen response's reward is higher, 1/2 on a tie, 0 otherwise."""
    c, r = np.asarray(chosen, dtype=float), np.asarray(rejected, dtype=float)
    return (c > r) + 0.5 * (c == r)


def bootstrap_mean(x: np.ndarray, draws: int, rng) -> tuple[float, float]:
    """95% percentile interval of the mean of x (seeds x pairs), seeds and pairs resampled."""
    s, n = x.shape
    means = np.empty(draws)
    for b in range(draws):
        means[b] = x[rng.integers(0, s, s)][:, rng.integers(0, n, n)].mean()
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def sign_flip_p(d: np.ndarray, rng, flips: int = FLIPS) -> float:
    """Two-sided p-value of mean(d) under random signs (every sign pattern when 2^n <= flips)."""
    d = np.asarray(d, dtype=float)
    n, observed = len(d), abs(d.mean())
    if n == 0 or not d.any():
        return 1.0
    if 2 ** n <= flips:
        signs = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        return float(np.mean(np.abs((signs * d).mean(1)) >= observed - 1e-12))
    signs = rng.choice((-1.0, 1.0), size=(flips, n))
    # the observed signs count as one draw, so p is never 0
    return float((1 + np.sum(np.abs((signs * d).mean(1)) >= observed - 1e-12)) / (flips + 1))


def paired(x_ex: np.ndarray, x_im: np.ndarray, draws: int, rng) -> dict:
    """EX - IM on the same pairs (seeds x pairs arrays; a kind's seeds may differ in number)."""
    d = x_ex.mean(0) - x_im.mean(0)
    n = len(d)
    boots = np.empty(draws)
    for b in range(draws):
        pairs = rng.integers(0, n, n)
        e = x_ex[rng.integers(0, len(x_ex), len(x_ex))][:, pairs].mean()
        i = x_im[rng.integers(0, len(x_im), len(x_im))][:, pairs].mean()
        boots[b] = e - i
    lo, hi = np.percentile(boots, [2.5, 97.5])
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else None        # one pair: no spread to measure
    return {"difference": float(d.mean()), "interval": [float(lo), float(hi)], "p": sign_flip_p(d, rng),
            "standard_error": se, "resolvable": None if se is None else POWER_FACTOR * se,
            "resolved": bool(lo > 0 or hi < 0),
            "pairs": n, "discordant": int(np.sum(d != 0))}


@dataclass(frozen=True)
class Config:
    run: str = field("", "a `python -m sims.hf train` results folder with kinds ex and im, or several folders, "
                     "comma-separated, that hold them between them: one kind per folder, or more seeds of "
                     "the same training (a folder's name may not hold a comma)")
    bootstrap: int = field(2000, f"bootstrap draws (at least {MIN_BOOTSTRAP}: fewer cannot place a 95% "
                           f"interval's ends; at most {MAX_BOOTSTRAP})",
                           (lambda v: MIN_BOOTSTRAP <= v <= MAX_BOOTSTRAP, f"must be in {MIN_BOOTSTRAP}..{MAX_BOOTSTRAP}"))
    seed: int = field(0, "the bootstrap's and the sign flips' generator", SEED)

    def validate(self):
        if not self.run:
            raise UsageError("--run: give a `python -m sims.hf train` results folder")
        folders = self.run.split(",")
        if "" in folders:
            raise UsageError(f"--run {self.run}: an empty name in the list (a leading, trailing or doubled comma)")
        if len({Path(f).resolve() for f in folders}) < len(folders):
            raise UsageError(f"--run {self.run}: a folder named twice")
        for f in folders:
            if not Path(f).is_dir():
                raise UsageError(f"--run {f}: not a folder (give the run's folder, which holds its results.json)")
            if not (Path(f) / "results.json").is_file():
                raise UsageError(f"--run {f}: no results.json there")
        # every check of the runs' contents, before the run starts
        scores(load_run(self.run))


def _read(folder: str) -> dict:
    """A results.json of `sims.hf train`, its runs keyed by integer seeds (as strings, written as
    int() reads them, so that "01" and "1" are one seed)."""
    try:
        r = json.loads((Path(folder) / "results.json").read_text())
        if not isinstance(r, dict) or not isinstance(r["runs"], dict):
            raise TypeError("runs is not a mapping")
        for name in ("data", "variants", "precision", "config"):
            if not isinstance(r.get(name) or {}, dict):
                raise TypeError(f"{name} is not a mapping")
        runs = {}
        for kind, seeds in r["runs"].items():
            if not isinstance(seeds, dict) or not all(isinstance(v, dict) for v in seeds.values()):
                raise TypeError(f"runs.{kind} is not a mapping of seeds to runs")
            runs[kind] = {}
            for key, one in seeds.items():
                seed, config = int(key), one.get("config") or {}
                if not isinstance(config, dict) or config.get("seed", seed) != seed:
                    raise ValueError(f"runs.{kind}.{key} holds a run whose config says seed "
                                     f"{config.get('seed') if isinstance(config, dict) else config!r}")
                if str(seed) in runs[kind]:
                    raise ValueError(f"runs.{kind}: seed {seed} twice")
                runs[kind][str(seed)] = one
        r["runs"] = runs
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"--run {folder}: not a `python -m sims.hf train` results file ({type(exc).__name__}: "
                         f"{exc})") from None
    return r


def _training(r: dict, kind: str, seeds: dict) -> tuple:
    """What must agree for seeds to pool: the model, the training pairs, the settings (the run's
    and each seed's, its seed left out), the variant and the precision that ran."""
    per_seed = {json.dumps({k: v for k, v in (one.get("config") or {}).items() if k != "seed"}, sort_keys=True)
                for one in seeds.values()}
    return (r.get("model"), json.dumps((r.get("data") or {}).get("train"), sort_keys=True),
            json.dumps(r.get("config"), sort_keys=True), json.dumps((r.get("variants") or {}).get(kind), sort_keys=True),
            (r.get("precision") or {}).get("ran"), tuple(sorted(per_seed)))


def load_run(run: str) -> dict:
    """The runs of both kinds, pooled over one folder or several, checked: both kinds present; every
    folder of one model, trained on the same pairs and evaluated on the same sets; a kind's seeds
    pooled only from runs trained alike (`_training`), each seed from one folder."""
    parts = [(f, _read(f)) for f in run.split(",")]
    runs, variants, folders, alike = {}, {}, {}, {}
    first = parts[0]
    for folder, r in parts:
        if r.get("model") != first[1].get("model"):
            raise UsageError(f"--run {run}: {first[0]} holds runs of {first[1].get('model')!r} and {folder} of "
                             f"{r.get('model')!r}; compare runs of one model")
        if (r.get("data") or {}).get("train") != (first[1].get("data") or {}).get("train"):
            raise UsageError(f"--run {run}: {first[0]} and {folder} were trained on different pairs; compare runs "
                             f"of one --train file")
        if (r.get("data") or {}).get("sets") != (first[1].get("data") or {}).get("sets"):
            raise UsageError(f"--run {run}: {first[0]} and {folder} were evaluated on different sets or pairs; "
                             f"train every run on the same --eval files")
        for kind, seeds in r["runs"].items():
            if kind not in KINDS or not seeds:
                continue
            how = _training(r, kind, seeds)
            if alike.setdefault(kind, (folder, how))[1] != how:
                other = alike[kind][0]
                what = [n for n, x, y in zip(("model", "training pairs", "settings", "variant", "precision",
                                              "settings of a seed"), alike[kind][1], how) if x != y]
                raise UsageError(f"--run {run}: the {kind} runs in {other} and {folder} were trained with "
                                 f"different {', '.join(what)}; pool the seeds of one training only")
            twice = sorted(set(seeds) & set(runs.get(kind, {})), key=int)
            if twice:
                raise UsageError(f"--run {run}: seed {twice[0]} of the {kind} runs is in two folders")
            runs.setdefault(kind, {}).update(seeds)
            variants[kind] = (r.get("variants") or {}).get(kind)
            folders.setdefault(kind, []).append(folder)
    missing = [k for k in KINDS if k not in runs]
    if missing:
        raise UsageError(f"--run {run}: no {' or '.join(missing)} runs there; train with --kinds ex,im")
    return {"runs": runs, "variants": variants, "model": first[1].get("model"),
            "folders": {k: ",".join(folders[k]) for k in KINDS}}


def _finite_number(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x):
        raise ValueError(f"{what}: {x!r} is not a finite number")
    return float(x)


def scores(r: dict) -> dict:
    """kind -> set -> (seeds x pairs array of c, mean normalised margin over seeds), at each
    seed's last checkpoint, the training pairs left out. UsageError in one line for runs the
    report cannot read: no checkpoints, no evaluation set, a set one kind lacks, an empty set,
    sets that differ between seeds or kinds, rewards or margins that are not finite numbers."""
    out = {}
    for kind in KINDS:
        where = r.get("folders", {}).get(kind, "the run")
        try:
            seeds = sorted(r["runs"][kind], key=int)
            ends = [r["runs"][kind][s]["checkpoints"][-1]["evals"] for s in seeds]
            names = [n for n in ends[0] if n != "train"]
            if any(sorted(n for n in e if n != "train") != sorted(names) for e in ends):
                raise ValueError("its seeds were evaluated on different sets")
            out[kind] = {}
            for name in names:
                rows = [(np.asarray(e[name]["chosen"], dtype=float), np.asarray(e[name]["rejected"], dtype=float))
                        for e in ends]
                if any(c.ndim != 1 or c.shape != rj.shape or c.shape != rows[0][0].shape for c, rj in rows):
                    raise ValueError(f"set {name!r}: its seeds or responses hold different numbers of pairs")
                if rows[0][0].size == 0:
                    raise ValueError(f"set {name!r}: no pairs")
                if not all(np.isfinite(c).all() and np.isfinite(rj).all() for c, rj in rows):
                    raise ValueError(f"set {name!r}: a reward that is not a finite number")
                margin = np.mean([_finite_number(e[name]["normalised_margin"], f"set {name!r}: normalised_margin")
                                  for e in ends])
                out[kind][name] = (np.stack([correct(c, rj) for c, rj in rows]), float(margin))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(f"--run {where}: its {kind} runs cannot be read ({type(exc).__name__}: {exc})") from None
        if not out[kind]:
            raise UsageError(f"--run {where}: its {kind} runs were evaluated on no set besides the training pairs; "
                             f"train with --eval NAME=PAIRS")
    one = [n for n in out["ex"] if n not in out["im"]] + [n for n in out["im"] if n not in out["ex"]]
    if one:
        has = "EX-RM" if one[0] in out["ex"] else "IM-RM"
        raise UsageError(f"--run {r.get('folders', {}).get('ex')}: set {one[0]!r} was evaluated for the {has} only; "
                         f"evaluate both kinds on the same --eval sets")
    bad = [n for n in out["ex"] if out["ex"][n][0].shape[1] != out["im"][n][0].shape[1]]
    if bad:
        raise UsageError(f"--run: set {bad[0]!r} holds {out['ex'][bad[0]][0].shape[1]} pairs for the EX-RM and "
                         f"{out['im'][bad[0]][0].shape[1]} for the IM-RM; train both on the same --eval files")
    return out


def report(r: dict, draws: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    both = scores(r)
    x = {k: {n: c for n, (c, _) in both[k].items()} for k in KINDS}
    margins = {k: {n: nm for n, (_, nm) in both[k].items()} for k in KINDS}
    # the groups' order, then any set of another name
    order = [n for members in GROUPS.values() for n in members]
    sets = sorted(x["ex"], key=lambda n: (order.index(n) if n in order else len(order), n))
    groups = {g: [n for n in members if n in sets] for g, members in GROUPS.items()}
    groups = {g: m for g, m in groups.items() if m}

    def row(ex, im):
        return {"accuracy": {"ex": float(ex.mean()), "im": float(im.mean())},
                "interval": {"ex": bootstrap_mean(ex, draws, rng), "im": bootstrap_mean(im, draws, rng)},
                "ex_minus_im": paired(ex, im, draws, rng), "pairs": ex.shape[1],
                "seeds": {"ex": ex.shape[0], "im": im.shape[0]}}

    by_set = {n: {**row(x["ex"][n], x["im"][n]), "normalised_margin": {k: margins[k][n] for k in KINDS}}
              for n in sets}
    by_group = {}
    for g, members in groups.items():
        ex = np.concatenate([x["ex"][n] for n in members], axis=1)
        im = np.concatenate([x["im"][n] for n in members], axis=1)
        sizes = [x["ex"][n].shape[1] for n in members]
        nm = {k: float(np.average([margins[k][n] for n in members], weights=sizes)) for k in KINDS}
        res = row(ex, im)
        d = res["ex_minus_im"]
        ours = ("not resolved" if not d["resolved"] else "EX-RM better" if d["difference"] > 0 else "IM-RM better")
        by_group[g] = {**res, "sets": members, "normalised_margin": nm, "reading": ours, "paper": PAPER[g]}
    grouped = {n for m in groups.values() for n in m}
    return {"sets": by_set, "groups": by_group, "ungrouped": [n for n in sets if n not in grouped],
            "variants": r.get("variants"), "seeds": {k: sorted(r["runs"][k], key=int) for k in KINDS},
            "model": r.get("model"), "folders": r.get("folders")}


def run(config: Config, log=print) -> dict:
    r = load_run(config.run)
    out = report(r, config.bootstrap, config.seed)
    def line(name, v, tail=""):
        d = v["ex_minus_im"]
        log(f"  {name:18} EX {v['accuracy']['ex']:.3f} IM {v['accuracy']['im']:.3f}  EX-IM {d['difference']:+.3f} "
            f"(95% interval {d['interval'][0]:+.3f} to {d['interval'][1]:+.3f}, p {d['p']:.3f}; resolvable "
            f"{'n/a' if d['resolvable'] is None else format(d['resolvable'], '.3f')}, {v['pairs']} pairs){tail}")

    for k in KINDS:
        v = (out["variants"] or {}).get(k)
        log(f"{dict(ex='EX-RM', im='IM-RM')[k]}: {v.get('name') if isinstance(v, dict) else v or '?'}, "
            f"seeds {', '.join(out['seeds'][k])}, from {out['folders'][k]}")
    log("per set:")
    for n, v in out["sets"].items():
        line(n, v, "" if n not in out["ungrouped"] else "  (in no group: its name is none of the data's)")
    log("per group:")
    for g, v in out["groups"].items():
        line(g, v, f": {v['reading']} (paper: {v['paper']['reading']})")
    checks = [{"claim": f"{g}: the paper's reading ({v['paper']['reading']})", "predicted": v["paper"]["reading"],
               "measured": v["reading"],
               "passed": None if v["reading"] == "not resolved" else
               (v["reading"] == "EX-RM better") == (v["paper"]["reading"] == "EX-RM better")}
              for g, v in out["groups"].items()]
    against = [c["claim"].split(":")[0] for c in checks if c["passed"] is False]
    if against:
        log(f"against the paper's reading (exit 1): {', '.join(against)}")
    return {"config": {"run": config.run, "bootstrap": config.bootstrap, "seed": config.seed}, **out,
            "paper": PAPER, "checks": checks}


def _out_is_no_run(argv) -> None:
    """--out may not be a --run folder or a folder above one: with --force the report would replace
    the training run it reads (sims.cli guards the toolkit's file flags; --run is this command's)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--out")
    parser.add_argument("--run", default="")
    ns, _ = parser.parse_known_args(argv)
    if not ns.out:
        return
    out = Path(ns.out).expanduser().resolve()
    for f in filter(None, ns.run.split(",")):
        folder = Path(f).expanduser().resolve()
        if out == folder or out in folder.parents:
            raise UsageError(f"--out {ns.out} holds the --run folder {f}: the report would replace the run it "
                             f"reads; give another --out")


def main(argv=None) -> int:
    try:
        _out_is_no_run(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return cli.EXIT["usage"]
    return cli.simulation_main("section52_report", Config, run, __doc__, argv, module="sims.section52.report")


if __name__ == "__main__":
    sys.exit(main())
