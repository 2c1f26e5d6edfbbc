"""Section 5.2's comparison (sims.section52.report): its statistics against definitions and hand
cases, a fake `sims.hf train` run read end to end, and bad runs refused in one line."""
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from sims.section52 import report
from tests.helpers import error_line


def test_correct_counts_a_tie_as_half():
    assert report.correct([1.0, 0.0, 2.0], [0.0, 0.0, 3.0]).tolist() == [1.0, 0.5, 0.0]


@pytest.mark.parametrize("d", [[1, 1, 1], [1, -1, 0.5, 0], [0.5, 0.5, -1, 1, 1]])
def test_sign_flip_p_is_the_share_of_sign_patterns_at_least_as_extreme(d):
    d = np.array(d, dtype=float)
    patterns = [np.array(s) for s in itertools.product((-1, 1), repeat=len(d))]
    brute = np.mean([abs((s * d).mean()) >= abs(d.mean()) - 1e-12 for s in patterns])
    assert report.sign_flip_p(d, np.random.default_rng(0)) == pytest.approx(brute, abs=1e-15)


def test_sign_flip_p_sampled_for_many_pairs():
    rng = np.random.default_rng(1)
    assert report.sign_flip_p(np.ones(40), rng) == pytest.approx(1 / (report.FLIPS + 1))  # only the observed one
    assert report.sign_flip_p(np.zeros(40), rng) == 1.0
    # a symmetric d is at the centre of its flips
    assert report.sign_flip_p(np.array([1.0, -1.0] * 20), rng) == 1.0


def test_bootstrap_interval_of_a_coin_has_the_binomial_width():
    rng = np.random.default_rng(0)
    x = (rng.random((1, 400)) < 0.5).astype(float)
    lo, hi = report.bootstrap_mean(x, 2000, rng)
    se = np.sqrt(x.mean() * (1 - x.mean()) / 400)
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)        # percentile interval, 2000 draws
    assert report.bootstrap_mean(np.ones((3, 10)), 50, rng) == (1.0, 1.0)


def test_paired_difference_and_what_it_resolves():
    rng = np.random.default_rng(0)
    same = np.array([[1, 0, 1, 0.5] * 10])
    p = report.paired(same, same, 500, rng)
    assert p["difference"] == 0 and p["p"] == 1.0 and not p["resolved"] and p["discordant"] == 0
    ex, im = np.ones((2, 60)), np.zeros((3, 60))
    p = report.paired(ex, im, 500, rng)
    assert p["difference"] == 1.0 and p["resolved"] and p["interval"] == [1.0, 1.0] and p["standard_error"] == 0
    d = np.r_[np.ones(15), np.zeros(45)]                         # EX right, IM wrong on 15 of 60
    p = report.paired(d[None], np.zeros((1, 60)), 500, rng)
    assert p["standard_error"] == pytest.approx(d.std(ddof=1) / np.sqrt(60))
    assert p["resolvable"] == pytest.approx(2.8 * p["standard_error"])


TRAIN = {"chosen": [1.0], "rejected": [0.0], "normalised_margin": 1.0}


def _run(tmp_path, per_kind, name="run", digests=None, first_seed=0, lr=1e-5):
    """A results.json shaped as `sims.hf train` writes it: runs[kind][seed].checkpoints[-1].evals."""
    runs = {}
    for kind, seeds in per_kind.items():
        runs[kind] = {}
        for s, sets in enumerate(seeds, start=first_seed):
            evals = {n: {"chosen": c, "rejected": [0.0] * len(c), "normalised_margin": 1.0 + s}
                     for n, c in sets.items()}
            runs[kind][str(s)] = {"checkpoints": [{"evals": {}}, {"evals": {"train": TRAIN, **evals}}]}
    (tmp_path / name).mkdir()
    results = {"runs": runs, "model": "fake", "data": {"sets": digests, "train": {"digest": "t"}},
               "config": {"lr": lr}, "variants": {k: {"name": "full"} for k in per_kind}}
    (tmp_path / name / "results.json").write_text(json.dumps(results))
    return str(tmp_path / name)


def test_a_fake_run_end_to_end(tmp_path):
    n = 60
    right, wrong = [1.0] * n, [-1.0] * n
    half = [1.0] * (n // 2) + [-1.0] * (n // 2)
    ex = {"indist": right, "paraphrase": right, "french": half, "math": wrong, "code": half, "extra": right}
    im = {"indist": half, "paraphrase": wrong, "french": half, "math": right, "code": half, "extra": right}
    folder = _run(tmp_path, {"ex": [ex, ex], "im": [im]})
    code = report.main(["--run", folder, "--bootstrap", "200", "--out", str(tmp_path / "o")])
    r = json.loads((tmp_path / "o/results.json").read_text())
    g = r["groups"]
    assert g["in distribution"]["sets"] == ["indist"] and g["token-level shift"]["sets"] == ["paraphrase", "french"]
    assert g["token-level shift"]["accuracy"] == {"ex": 0.75, "im": 0.25} and g["token-level shift"]["pairs"] == 2 * n
    assert g["in distribution"]["reading"] == "EX-RM better"
    assert g["domain shift"]["reading"] == "IM-RM better" and g["domain shift"]["accuracy"]["im"] == 0.75
    assert r["ungrouped"] == ["extra"] and "train" not in r["sets"]
    assert r["sets"]["indist"]["normalised_margin"] == {"ex": 1.5, "im": 1.0}          # mean over seeds
    assert r["sets"]["indist"]["seeds"] == {"ex": 2, "im": 1}
    # every group agrees with the paper's reading here
    assert code == 0 and all(c["passed"] for c in r["checks"])
    # the figure draws from this report: one panel of accuracy per group, one of EX - IM
    from figures import section52
    section52.draw(r, tmp_path / "fig")
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def test_two_folders_one_kind_each(tmp_path):
    """A frozen head and a frozen unembedding train apart (one lr each): the report reads both."""
    ex = {"indist": [1.0] * 8, "math": [-1.0] * 8}
    im = {"indist": [-1.0] * 8, "math": [1.0] * 8}
    a = _run(tmp_path, {"ex": [ex]}, "a", digests={"indist": "d1"})
    b = _run(tmp_path, {"im": [im]}, "b", digests={"indist": "d1"})
    assert report.main(["--run", f"{a},{b}", "--bootstrap", "100", "--out", str(tmp_path / "o")]) == 0
    r = json.loads((tmp_path / "o/results.json").read_text())
    assert r["folders"] == {"ex": a, "im": b}
    assert r["groups"]["in distribution"]["accuracy"] == {"ex": 1.0, "im": 0.0}


def test_seeds_pooled_from_two_folders(tmp_path):
    """A third seed run a session later, in a folder of its own, joins the first two: every pair's
    c is averaged over all three seeds, as if one run had trained them."""
    right, wrong = {"indist": [1.0] * 4}, {"indist": [-1.0] * 4}
    a = _run(tmp_path, {"ex": [right, right], "im": [wrong, wrong]}, "a", digests={"indist": "d1"})
    b = _run(tmp_path, {"ex": [wrong], "im": [right]}, "b", digests={"indist": "d1"}, first_seed=2)
    one = _run(tmp_path, {"ex": [right, right, wrong], "im": [wrong, wrong, right]}, "one", digests={"indist": "d1"})
    argv = ["--bootstrap", "100", "--out"]
    assert report.main(["--run", f"{a},{b}", *argv, str(tmp_path / "o")]) == 0
    assert report.main(["--run", one, *argv, str(tmp_path / "p")]) == 0
    r, q = (json.loads((tmp_path / o / "results.json").read_text()) for o in ("o", "p"))
    assert r["seeds"] == {"ex": ["0", "1", "2"], "im": ["0", "1", "2"]} and r["folders"] == {"ex": f"{a},{b}",
                                                                                        "im": f"{a},{b}"}
    assert r["groups"]["in distribution"]["accuracy"] == pytest.approx({"ex": 2 / 3, "im": 1 / 3})
    assert r["sets"]["indist"]["normalised_margin"] == q["sets"]["indist"]["normalised_margin"] == {"ex": 2.0,
                                                                                                    "im": 2.0}
    assert r["groups"] == q["groups"]


@pytest.mark.parametrize("what,says", [("nothing", "--run: give"), ("nofile", "no results.json"),
                                       ("afile", "not a folder"), ("noevals", "no set besides the training pairs"),
                                       ("nan", "not a finite number"), ("ragged", "different numbers of pairs"),
                                       ("sizes", "holds 2 pairs for the EX-RM and 3 for the IM-RM"),
                                       ("bigboot", "--bootstrap"),
                                       ("samekind", "seed 0 of the ex runs is in two folders"),
                                       ("unlike", "were trained with different settings"),
                                       ("othersets", "evaluated on different sets or pairs"),
                                       ("three", "a folder named twice"),
                                       ("notjson", "not a `python -m sims.hf train` results file"),
                                       ("onekind", "no im runs")])
def test_bad_runs(what, says, tmp_path, capsys):
    argv = ["--bootstrap", "100", "--out", str(tmp_path / "o")]
    if what == "nofile":
        argv += ["--run", str(tmp_path)]
    elif what == "notjson":
        (tmp_path / "results.json").write_text("{not json")
        argv += ["--run", str(tmp_path)]
    elif what == "afile":
        (tmp_path / "results.json").write_text("{}")
        argv += ["--run", str(tmp_path / "results.json")]
    elif what == "noevals":
        argv += ["--run", _run(tmp_path, {"ex": [{}], "im": [{}]})]
    elif what == "nan":
        argv += ["--run", _run(tmp_path, {"ex": [{"indist": [float("nan")]}], "im": [{"indist": [1.0]}]})]
    elif what == "ragged":
        two_sizes = [{"indist": [1.0]}, {"indist": [1.0, 2.0]}]
        argv += ["--run", _run(tmp_path, {"ex": two_sizes, "im": [{"indist": [1.0]}]})]
    elif what == "sizes":
        argv += ["--run", _run(tmp_path, {"ex": [{"indist": [1.0] * 2}], "im": [{"indist": [1.0] * 3}]})]
    elif what == "bigboot":
        one = [{"indist": [1.0]}]
        argv = ["--bootstrap", "1000000000", "--run", _run(tmp_path, {"ex": one, "im": one}),
                "--out", str(tmp_path / "o")]
    elif what == "onekind":
        argv += ["--run", _run(tmp_path, {"ex": [{"indist": [1.0]}]})]
    elif what in ("samekind", "unlike", "othersets", "three"):
        a = _run(tmp_path, {"ex": [{"indist": [1.0]}]}, "a", digests={"indist": "d1"})
        b = _run(tmp_path, {"ex" if what in ("samekind", "unlike") else "im": [{"indist": [1.0]}]}, "b",
                 digests={"indist": "d2" if what == "othersets" else "d1"}, first_seed=int(what == "unlike"),
                 lr=1e-4 if what == "unlike" else 1e-5)
        argv += ["--run", f"{a},{b}" + (f",{a}" if what == "three" else "")]
    assert report.main(argv) == 2
    assert says in error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def _edit(folder, change):
    path = Path(folder) / "results.json"
    r = json.loads(path.read_text())
    change(r)
    path.write_text(json.dumps(r))


ONE = {"indist": [1.0, -1.0]}


@pytest.mark.parametrize("what,says", [
    ("seed01", "seed 1 of the ex runs is in two folders"),          # "01" and "1" are one seed
    ("seedsays", "config says seed 0"),                              # a key that is not its run's seed
    ("seedlr", "different settings of a seed"),                      # one seed's own settings differ
    ("model", "compare runs of one model"),                          # EX of one model against IM of another
    ("trainpairs", "were trained on different pairs"),
    ("exonly", "set 'math' was evaluated for the EX-RM only"),
    ("empty", "no pairs"),
    ("nomargin", "cannot be read"),
    ("nanmargin", "not a finite number"),
    ("runslist", "not a `python -m sims.hf train` results file"),
    ("datalist", "data is not a mapping"),
    ("comma", "an empty name in the list"),
    ("oneboot", "--bootstrap"),
    ("outisrun", "would replace the run it reads"),
    ("outabove", "would replace the run it reads")])
def test_runs_that_must_not_be_read_or_pooled(what, says, tmp_path, capsys):
    """Each of these once gave a silently wrong report, a traceback-like internal error, or (--out
    on the run it reads, with --force) deleted the training run."""
    a = _run(tmp_path, {"ex": [ONE, ONE], "im": [ONE]}, "a", digests={"indist": "d1"})
    b = _run(tmp_path, {"ex": [ONE]}, "b", digests={"indist": "d1"}, first_seed=1)
    for f, first in ((a, 0), (b, 1)):       # each run's own config, as sims.hf train writes it
        _edit(f, lambda r: [one.setdefault("config", {"seed": int(s), "lr": 1e-5})
                            for seeds in r["runs"].values() for s, one in seeds.items()])
    run, out, extra = a, str(tmp_path / "o"), []
    if what == "seed01":
        _edit(b, lambda r: r["runs"].update(ex={"01": r["runs"]["ex"]["1"]}))
        run = f"{a},{b}"
    elif what == "seedsays":
        _edit(a, lambda r: r["runs"]["ex"]["1"]["config"].update(seed=0))
    elif what == "seedlr":
        _edit(b, lambda r: r["runs"].update(ex={"5": {**r["runs"]["ex"]["1"], "config": {"seed": 5, "lr": 1e-4}}}))
        run = f"{a},{b}"
    elif what == "model":
        _edit(b, lambda r: r.update(model="another"))
        _edit(a, lambda r: r["runs"].pop("ex"))
        run = f"{a},{b}"
    elif what == "trainpairs":
        _edit(b, lambda r: r["data"].update(train={"digest": "other"}))
        _edit(a, lambda r: r["runs"].pop("ex"))
        run = f"{a},{b}"
    elif what == "exonly":
        _edit(a, lambda r: [one["checkpoints"][-1]["evals"].update(math=one["checkpoints"][-1]["evals"]["indist"])
                            for one in r["runs"]["ex"].values()])
    elif what == "empty":
        _edit(a, lambda r: [one["checkpoints"][-1]["evals"]["indist"].update(chosen=[], rejected=[])
                            for seeds in r["runs"].values() for one in seeds.values()])
    elif what in ("nomargin", "nanmargin"):
        _edit(a, lambda r: r["runs"]["im"]["0"]["checkpoints"][-1]["evals"]["indist"].update(
            normalised_margin=float("nan") if what == "nanmargin" else None))
    elif what == "runslist":
        _edit(a, lambda r: r["runs"].update(ex=[1, 2]))
    elif what == "datalist":
        _edit(a, lambda r: r.update(data=[1]))
    elif what == "comma":
        run = f"{a},"
    elif what == "oneboot":
        extra = ["--bootstrap", "1"]
    elif what in ("outisrun", "outabove"):
        out, extra = (a if what == "outisrun" else str(tmp_path)), ["--force"]
    assert report.main(["--run", run, "--out", out, *extra]) == 2
    assert says in error_line(capsys.readouterr().err)
    assert (Path(a) / "results.json").is_file()
    assert not (tmp_path / "o").exists()
