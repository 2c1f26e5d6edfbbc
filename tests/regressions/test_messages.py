"""Issue 18, item 2: every cause a new user met as exit 4 ("internal error, please report") or
as a message naming the wrong flag. Each case: the exit code, the flag or input the one line
must name, and no results folder left behind (the table style of tests/test_inputs.py)."""
import json
import time

import pytest
import torch

from sims import cli, dynamics, hamiltonian, inputs, persona
from sims import persona_data as pdata
from theory import threads
from tests.helpers import error_line

PERSONA = ["--n-seeds", "1", "--n-docs", "50", "--pretrain-steps", "5", "--pretrain-batch", "8", "--d-model", "8",
           "--layers", "1", "--n-train", "8", "--n-test", "4", "--n-shift", "4", "--epochs", "1", "--batch", "8",
           "--no-one-token"]
HAMILTONIAN = ["--n", "5", "--p", "0", "--n-train", "32", "--n-test", "4", "--d-model", "8", "--heads", "2",
               "--layers", "1", "--ref-steps", "3", "--epochs", "1", "--batch", "16", "--checkpoints", "1"]
CLIS = {"persona": persona.main, "hamiltonian": hamiltonian.main, "dynamics": dynamics.main}

CASES = [  # (cli, argv, exit code, what the one line must say)
    # the divergence names the training that diverged and its flag; the user's step size: exit 2
    ("hamiltonian", [*HAMILTONIAN, "--ref-lr", "1e10"], 2, "fitting pi_ref diverged at step"),
    ("hamiltonian", [*HAMILTONIAN, "--ref-lr", "1e10"], 2, "lower --ref-lr"),
    ("hamiltonian", [*HAMILTONIAN, "--lr", "1e10"], 2, "the IM-RM diverged at step 2 (NaN or Inf) with --lr 1e+10"),
    ("persona", [*PERSONA, "--pretrain-lr", "1e9"], 2, "pretraining diverged at step"),
    ("persona", [*PERSONA, "--pretrain-lr", "1e9"], 2, "lower --pretrain-lr"),
    ("persona", [*PERSONA, "--lr", "1e9", "--variants", "full"], 2, "reward model diverged at step 1 (NaN or Inf) "
                                                                    "with --lr 1e+09; lower --lr (default"),
    # a step that moves no reward beyond its rounding is refused, never a false FAIL
    ("dynamics", ["--beta", "1e8", "--eta", "1e-300"], 2, "--beta 1e+08: every IM-RM training margin"),
    ("dynamics", ["--beta", "1e4"], 2, "the loss is saturated"),     # was exit 4, ZeroDivisionError
    ("dynamics", ["--eta", "1e-300"], 2, "--eta 1e-300 (with --beta 0.5"),
    ("dynamics", ["--eta", "1e-30", "--beta", "1e-8"], 2, "raise --eta above"),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    n = torch.get_num_threads()
    torch.set_num_threads(1)     # tiny models: a second thread only contends on a shared machine
    yield tmp_path
    torch.set_num_threads(n)


def _one_line(capsys, code, want, needle):
    err = capsys.readouterr().err
    assert code == want, err
    err = error_line(err)
    assert needle in err, err
    assert "internal error" not in err


@pytest.mark.parametrize("cli_name,argv,code,needle", CASES,
                         ids=[f"{c}:{' '.join(a[-4:])}:{i}" for i, (c, a, _, _) in enumerate(CASES)])
def test_message_names_the_cause(workdir, capsys, cli_name, argv, code, needle):
    out = workdir / "out"
    _one_line(capsys, CLIS[cli_name]([*argv, "--out", str(out)]), code, needle)
    assert not out.exists() and not (workdir / "runs").exists()


def test_divergence_rule():
    """A step size set away from its default is the user's choice (exit 2); at the default the
    divergence is numerics the user did not choose (exit 3). Both name the flag."""
    away = inputs.divergence(persona.Config(lr_frozen=5.0), "lr_frozen", "the im_rm frozen reward model", 3)
    assert isinstance(away, inputs.UsageError) and "--lr-frozen 5" in str(away) and "at step 3" in str(away)
    default = inputs.divergence(persona.Config(), "pretrain_lr", "pretraining")
    assert isinstance(default, inputs.RunError) and "at the default --pretrain-lr 0.003" in str(default)


# ---- persona at a small --n-docs (was exit 4: "token 'climbing' is not in the vocabulary") --------

@pytest.mark.parametrize("n_docs", [1, 20, 100])
def test_persona_small_corpus_encodes_every_split(n_docs):
    config = persona.Config(n_docs=n_docs, n_seeds=1)
    for seed in range(3):
        data = persona.build_data(config, torch.Generator().manual_seed(seed))
        assert len(data["vocab"]) == 1 + len(pdata.vocabulary())
        assert len(data["corpus"]) == n_docs


def test_persona_vocabulary_does_not_depend_on_the_corpus():
    """The same words at the default --n-docs, so canonical runs keep their token ids."""
    docs = pdata.corpus(3000, 0.8, 0.25, torch.Generator().manual_seed(0))
    assert pdata.vocabulary(docs) == pdata.vocabulary() == sorted({t for d in docs for t in pdata.tokenize(d)})


def test_persona_one_document_runs(workdir):
    code = persona.main([*PERSONA, "--n-docs", "1", "--variants", "frozen", "--out", "o"])
    assert code in (0, 1) and (workdir / "o/results.json").exists()


# ---- dynamics: an unmeasurable remainder is not measured, a measurable step never a false FAIL ----

@pytest.mark.parametrize("eta", ["1e-3", "1e-5"])
def test_dynamics_small_step_is_no_false_fail(workdir, capsys, eta):
    assert dynamics.main(["--eta", eta, "--out", "o"]) == 0
    r = json.loads((workdir / "o/results.json").read_text())
    assert [c["passed"] for c in r["checks"][:2]] == [True, True]     # EX-RM exact, IM-RM tangent
    remainder = r["checks"][2]
    if eta == "1e-5":
        assert remainder["passed"] is None and "not measurable: at --eta 1e-05" in remainder["measured"]
        assert "[INFO] IM-RM: actual - predicted is O(eta^2)" in capsys.readouterr().out


# ---- environment variables read as numbers ----------------------------------------------------

@pytest.mark.parametrize("value", ["abc", "1e3", "0", "-2", "2.5"])
def test_bad_thread_count_is_named(monkeypatch, capsys, value):
    monkeypatch.setenv("RMGAP_THREADS", value)
    _one_line(capsys, cli.run_cli(lambda argv: inputs.check_environment(), []), 2, f"RMGAP_THREADS")
    monkeypatch.setenv("RMGAP_THREADS", " 3 ")
    assert threads.for_work(1.0) == 3
    inputs.check_environment()


# ---- sims.hf ---------------------------------------------------------------------------------

@pytest.fixture
def tiny_model(tmp_path_factory):
    pytest.importorskip("transformers")
    from tests.sims import hf_tiny
    path = tmp_path_factory.mktemp("tiny")
    return hf_tiny.save(hf_tiny.model("llama", tied=False, seed=0), hf_tiny.tokenizer(path), path)


def test_hf_bench_length_1_before_loading(workdir, capsys):
    from sims import hf
    _one_line(capsys, hf.main(["bench", "--length", "1", "--out", "o"]), 2, "--length must be at least 2")
    assert not (workdir / "o").exists() and not (workdir / "runs").exists()


def test_hf_score_single_pair_has_a_margin(workdir, capsys, tiny_model):
    """One pair still has two rewards: the (ddof = 1) std exists, so the normalised margin is a
    number (sqrt 2 unless they tie, then 0), not NaN or an error."""
    from sims import hf
    from tests.sims import hf_tiny
    for name, pair, want in (("one", hf_tiny.PAIRS[0], 2 ** 0.5),
                             ("same", {"prompt": "is the sky blue ?", "chosen": " yes", "rejected": " yes"}, 0.0)):
        (workdir / f"{name}.jsonl").write_text(json.dumps(pair) + "\n")
        assert hf.main(["score", "--model", tiny_model, "--pairs", f"{name}.jsonl", "--out", f"{name}.json"]) == 0
        r = json.loads((workdir / f"{name}.json").read_text())
        for c in r["conventions"].values():
            assert c["normalised_margin"] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("model,needle", [
    ("typo_dir", "--model typo_dir: no such local folder, .gguf file or short name"),
    ("models/typo", "--model models/typo: no such folder"),      # ./models exists: a local path
    ("a/b/c", "--model a/b/c: no such folder"),                  # a hub id has one slash
    ("./typo_dir", "--model ./typo_dir: no such folder"),
])
def test_hf_missing_local_model_is_named_at_once(workdir, capsys, monkeypatch, model, needle):
    from sims import hf
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (workdir / "models").mkdir()
    (workdir / "pairs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    t0 = time.perf_counter()
    code = hf.main(["score", "--model", model, "--pairs", "pairs.jsonl", "--out", "o.json"])
    assert time.perf_counter() - t0 < 2.0      # no wait for the hub
    _one_line(capsys, code, 2, needle)
    assert not (workdir / "o.json").exists()


def test_hf_hub_failure_says_no_local_folder_either(workdir, monkeypatch):
    pytest.importorskip("transformers")
    import transformers
    from sims.hf import model

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", offline)
    with pytest.raises(inputs.UsageError, match=r"couldn't connect.*\(and there is no local folder typo/dir\)"):
        model.load("typo/dir")


def _commands():
    import importlib
    import pkgutil

    import sims
    out, todo = [], [sims]
    while todo:
        package = todo.pop()
        for info in pkgutil.iter_modules(package.__path__):
            name = f"{package.__name__}.{info.name}"
            if info.name.startswith("_") or info.name == "__main__":
                continue
            module = importlib.import_module(name)
            if hasattr(module, "main"):
                out.append(name)
            if info.ispkg and name not in ("sims.hf",):
                todo.append(module)
    return sorted(set(out))


@pytest.mark.parametrize("name", _commands())
def test_every_command_prints_its_help(name, capsys):
    """`python -m NAME --help` prints the help and exits 0 for every command (a '95%' in a flag's
    help once made argparse's own %-formatting fail with exit 4)."""
    import importlib
    try:
        code = importlib.import_module(name).main(["--help"])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    assert code in (0, None) and "usage:" in out.out and "error" not in out.err, (name, out.err[-300:])
