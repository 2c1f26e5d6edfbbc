"""`python -m sims.hf train` on a tiny random Llama (tests/sims/hf_tiny.py; nothing downloaded):
the run folder, the trained models read back by `sims.hf score`, the truncation rule, the chat
template, bf16 against fp32, gradient checkpointing, two gloo processes against one, and bad
input (one line, exit 2, no folder)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from sims import hf  # noqa: E402
from sims.hf.training import command, precision  # noqa: E402
from tests.helpers import error_line  # noqa: E402
from tests.sims import hf_tiny as T  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/sims/conftest.py
ROOT = Path(__file__).resolve().parents[2]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    tok = T.tokenizer(d / "m")
    T.save(T.model("llama", tied=True, seed=0), tok, d / "m")
    return {"dir": d, "model": str(d / "m"), "train": _jsonl(d / "p.jsonl", T.PAIRS),
            "para": _jsonl(d / "q.jsonl", T.PARAPHRASES)}


def _train(files, out, *extra):
    argv = ["train", "--model", files["model"], "--train", files["train"], "--eval", f"para={files['para']}",
            "--lr", "1e-2", "--batch", "2", "--micro-batch", "1", "--epochs", "2", "--precision", "fp32",
            "--out", str(out), *extra]
    return hf.main(argv)


def test_run_folder_and_the_models_read_back(files, tmp_path, capsys):
    """The folder holds results, run.json, the figure and the models; `score` on each model gives
    the rewards the run's last evaluation recorded (EX-RM by its score head, IM-RM against the
    reference its manifest names)."""
    assert _train(files, tmp_path / "run") == 0
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["hf_train.pdf", "hf_train.png", "models", "results.json",
                                                     "run.json"]
    r = json.loads((run / "results.json").read_text())
    assert r["data"]["chat_template"] is False and {k: r["precision"][k] for k in ("asked", "ran", "why")} == {"asked": "fp32", "ran": "fp32", "why": None}
    for kind in ("ex", "im"):
        last = r["runs"][kind]["0"]["checkpoints"][-1]["evals"]
        assert set(last) == {"train", "para"} and {"accuracy", "accuracy_ties_zero", "normalised_margin",
                                                    "loss", "chosen", "rejected"} <= set(last["para"])
        assert [c["epoch"] for c in r["runs"][kind]["0"]["checkpoints"]] == [0, 1, 2]
        out = tmp_path / f"{kind}.json"
        assert hf.main(["score", "--model", str(run / "models" / f"{kind}-seed0"), "--pairs", files["para"],
                        "--out", str(out)]) == 0
        got = json.loads(out.read_text())["conventions"]["paper"]
        mine = np.array(last["para"]["chosen"] + last["para"]["rejected"])
        theirs = np.array(got["chosen"] + got["rejected"])
        # float32: a reward read back through another forward agrees to its rounding
        np.testing.assert_allclose(theirs, mine, rtol=0, atol=1e-5 * (1 + np.abs(mine).max()))
        assert got["accuracy"] == last["para"]["accuracy"]
    assert "IM-RM trained from" in capsys.readouterr().err


def test_same_seed_same_results_bit_for_bit(files, tmp_path):
    assert _train(files, tmp_path / "a", "--no-save", "--kinds", "im") == 0
    assert _train(files, tmp_path / "b", "--no-save", "--kinds", "im") == 0
    assert (tmp_path / "a/results.json").read_bytes() == (tmp_path / "b/results.json").read_bytes()


def test_truncation_keeps_the_prompts_end_then_the_responses_start():
    enc = [(list(range(10)), [100, 101, 102], [200]), ([1, 2], [3], [4])]
    out, n = command.truncate(enc, 8)
    assert n == 1 and out[1] == enc[1]
    p, c, r = out[0]
    assert p == list(range(5, 10)) and c == [100, 101, 102] and r == [200]     # 5 + 3 = 8
    out, n = command.truncate([(list(range(10)), list(range(100, 120)), [7])], 8)
    p, c, r = out[0]
    assert p == list(range(6, 10)) and c == list(range(100, 104)) and r == [7]  # M // 2 of the prompt kept


def test_truncated_pairs_are_counted(files, tmp_path, capsys):
    assert _train(files, tmp_path / "t", "--no-save", "--kinds", "ex", "--max-length", "6") == 0
    r = json.loads((tmp_path / "t/results.json").read_text())
    assert r["data"]["sets"]["train"]["truncated"] > 0 and r["data"]["sets"]["train"]["tokens_max"] <= 6
    assert "pairs longer than --max-length 6 tokens were truncated" in capsys.readouterr().err


def test_the_chat_template_by_default_and_the_flag_that_turns_it_off(files, tmp_path):
    from transformers import AutoTokenizer
    d = tmp_path / "chat"
    tok = AutoTokenizer.from_pretrained(files["model"])
    tok.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}" \
                        "{% if add_generation_prompt %}assistant : {% endif %}"
    T.save(T.model("llama", tied=True, seed=0), tok, d)
    base = {**files, "model": str(d)}
    assert _train(base, tmp_path / "on", "--no-save", "--kinds", "im") == 0
    assert _train(base, tmp_path / "off", "--no-save", "--kinds", "im", "--no-chat-template") == 0
    on, off = (json.loads((tmp_path / f"{k}/results.json").read_text()) for k in ("on", "off"))
    assert on["data"]["chat_template"] is True and off["data"]["chat_template"] is False
    assert on["data"]["sets"]["train"]["tokens_mean"] > off["data"]["sets"]["train"]["tokens_mean"]


def test_bf16_agrees_with_fp32(tok):
    """bf16 autocast of the body (lm_head, log-softmax and loss in fp32): the same final accuracies
    as fp32 and rewards that correlate, from r = 0 at initialisation in both."""
    from sims.hf import training as tr
    enc = hf.encode_pairs(tok, T.PAIRS + T.PARAPHRASES, eos=True)
    out = {}
    for p in ("fp32", "bf16"):
        cfg = tr.TrainConfig(lr=1e-2, epochs=4, batch_size=4, micro_batch_size=2, beta=0.1, precision=p,
                             checkpoints=(0, 4))
        out[p] = tr.train(T.model("llama", tied=True, seed=0), "im", tr.Full(), enc, pad_id=0, config=cfg,
                          evals={"all": enc})
    first = [out[p]["checkpoints"][0]["evals"]["all"] for p in out]
    assert all(e["chosen"] == [0.0] * len(enc) for e in first)            # r = 0 exactly at the start
    a, b = (out[p]["checkpoints"][-1]["evals"]["all"] for p in ("fp32", "bf16"))
    assert a["accuracy"] == b["accuracy"]
    assert np.corrcoef(a["chosen"] + a["rejected"], b["chosen"] + b["rejected"])[0, 1] > 0.99


def test_gradient_checkpointing_changes_no_loss(tok):
    from sims.hf import training as tr
    enc = hf.encode_pairs(tok, T.PAIRS, eos=True)
    losses = []
    for gc in (False, True):
        cfg = tr.TrainConfig(lr=1e-2, epochs=2, batch_size=2, beta=0.1, gradient_checkpointing=gc)
        losses.append(tr.train(T.model("llama", tied=False, seed=0, dtype=torch.float64), "im", tr.Full(), enc,
                               pad_id=0, config=cfg)["loss"])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-12)


def test_bf16_without_bf16_units_says_so_and_runs_fp32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert precision.resolve("auto", "cpu") == ("fp32", None)
    ran, why = precision.resolve("bf16", "cpu")
    assert ran == "fp32" and "running in fp32" in why
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.resolve("auto", "cpu") == ("bf16", None) and precision.resolve("fp32", "cpu")[0] == "fp32"


@pytest.mark.parametrize("weight", [0.108, 0.02, 3.0])
def test_auto_picks_bf16_only_where_it_sees_the_training(weight, monkeypatch):
    """bf16 spacing: 8 significant bits, so between 2^-8 and 2^-7 of |w|, and a power of 2; auto
    runs bf16 when lr x steps spans VISIBLE spacings of the median weight, fp32 (with a note)
    below; an explicit bf16 runs, warned."""
    s = precision.bf16_spacing(weight)
    assert 2 ** -8 * weight < s <= 2 ** -7 * weight and math.log2(s).is_integer()
    x = torch.tensor(weight, dtype=torch.float32)
    assert float(x.to(torch.bfloat16)) != float((x + 0.75 * s).to(torch.bfloat16))   # one spacing apart
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    edge = precision.VISIBLE * s
    assert precision.resolve("auto", "cpu", drift=edge, weight=weight) == ("bf16", None)
    ran, why = precision.resolve("auto", "cpu", drift=0.99 * edge, weight=weight)
    assert ran == "fp32" and why.startswith("note: --precision auto: fp32")
    ran, why = precision.resolve("bf16", "cpu", drift=0.99 * edge, weight=weight)
    assert ran == "bf16" and why.startswith("warning: --precision bf16") and "--precision fp32" in why


def test_the_weight_profile_reads_every_tensor():
    """The median |w| over every tensor, and the share of weights exactly halfway between two
    bf16 numbers (1 + 2^-8 is; 1 and 1 + 2^-7 are bf16 numbers themselves)."""
    params = [torch.full((3000,), 0.5), torch.full((10,), -2.0), torch.full((2000,), 0.01)]
    assert precision.weight_profile(params)["median_weight"] == pytest.approx(0.5)
    w = torch.tensor([1 + 2 ** -8, 1.0, 1 + 2 ** -7, -(1 + 2 ** -8)])
    assert precision.weight_profile([w])["on_rounding_boundary"] == 0.5
    x = torch.tensor(1 + 2 ** -8)
    assert float((x + 1e-6).to(torch.bfloat16)) - float((x - 1e-6).to(torch.bfloat16)) == 2 ** -7


def test_two_gloo_processes_equal_one(files, tmp_path):
    """torchrun --nproc_per_node 2 (gloo on the CPU, accelerate's DistributedDataParallel): each
    step's pairs split over the processes; losses and final rewards equal one process's run at
    the same global batch, to float32 tolerance."""
    common = ["train", "--model", files["model"], "--train", files["train"], "--eval",
              f"para={files['para']}", "--lr", "1e-2", "--batch", "4", "--micro-batch", "1", "--epochs", "3",
              "--precision", "fp32", "--no-save"]
    assert hf.main([*common, "--out", str(tmp_path / "one")]) == 0     # in this process, on one thread
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(29500 + os.getpid() % 1000), "-m", "sims.hf", *common, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, cwd=ROOT)
    assert two.returncode == 0, two.stderr
    a, b = (json.loads((tmp_path / f"{k}/results.json").read_text()) for k in ("one", "two"))
    assert a["processes"] == 1 and b["processes"] == 2
    for kind in ("ex", "im"):
        ha, hb = a["runs"][kind]["0"], b["runs"][kind]["0"]
        np.testing.assert_allclose(hb["loss"], ha["loss"], rtol=1e-5)
        ea, eb = ha["checkpoints"][-1]["evals"]["para"], hb["checkpoints"][-1]["evals"]["para"]
        np.testing.assert_allclose(eb["chosen"] + eb["rejected"], ea["chosen"] + ea["rejected"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("case", ["empty_eval", "no_name", "same_name", "train_name", "bad_variant", "bad_kind",
                                  "chat_without_template", "unwritable_out", "eval_every", "seeds", "max_length",
                                  "variant_missing_kind", "seed_twice", "conversational_without_template_flag",
                                  "bad_eval_file", "top_k_too_deep", "eval_every_beyond_the_run", "bf16_weights",
                                  "bf16_on_float64", "forecast_without_ex_or_im", "beyond_the_context"])
def test_bad_input_one_line_exit_2_no_folder(case, files, tmp_path, capsys, monkeypatch):
    d = tmp_path
    empty = d / "empty.jsonl"
    empty.write_text("")
    chat = _jsonl(d / "chat.jsonl", [{"prompt": [{"role": "user", "content": "is the sky blue ?"}],
                                      "chosen": [{"role": "assistant", "content": "yes"}],
                                      "rejected": [{"role": "assistant", "content": "no"}]}])
    flags, says = {
        "empty_eval": (["--eval", f"e={empty}"], "holds no pairs"),
        "no_name": (["--eval", files["para"]], "expected NAME=PAIRS"),
        "same_name": (["--eval", f"x={files['para']}", "--eval", f"x={files['para']}"], "two sets are named 'x'"),
        "train_name": (["--eval", f"train={files['para']}"], "'train' names the training pairs"),
        "bad_variant": (["--variant", "ex=unembedding,im=full"], "the unembedding variant trains IM-RMs or EX-GRMs"),
        "bad_kind": (["--kinds", "ex,xx"], "--kinds ex,xx"),
        "chat_without_template": (["--eval", f"c={chat}"], "no chat template"),
        "unwritable_out": (["--out", "/proc/rmgap-run"], "--out /proc/rmgap-run"),
        "eval_every": (["--eval-every", "0"], "--eval-every 0"),
        "seeds": (["--seeds", "1,x"], "--seeds 1,x"),
        "max_length": (["--max-length", "1"], "--max-length"),
        "variant_missing_kind": (["--variant", "ex=head"], "names no variant for im"),
        "seed_twice": (["--seeds", "3,3"], "seed 3 is given twice"),
        "conversational_without_template_flag": (["--eval", f"c={chat}", "--no-chat-template"],
                                                 "--no-chat-template: the --eval c pairs are conversational"),
        "bad_eval_file": (["--eval", f"e={d / 'missing.jsonl'}"], "--eval e: cannot read pairs file"),
        "top_k_too_deep": (["--variant", "top_k:99"], "--variant top_k:99: top_k: k must be between 1"),
        "eval_every_beyond_the_run": (["--eval-every", "99", "--epochs", "2"], "--eval-every 99: the run has 2 epochs"),
        "bf16_weights": (["--dtype", "bfloat16"], "--dtype bfloat16: train keeps the master weights"),
        "bf16_on_float64": (["--dtype", "float64", "--precision", "bf16"], "--dtype is float64"),
        "forecast_without_ex_or_im": (["--forecast", "--kinds", "grm"], "--forecast predicts the EX-RM and the IM-RM"),
        "beyond_the_context": (["--eval", "long=" + _jsonl(d / "long.jsonl", [{**T.PAIRS[0], "prompt": "is the sky blue ? " * 30}])],
                               "--eval long: a prompt + response of"),
    }[case]
    if case not in ("chat_without_template", "conversational_without_template_flag", "top_k_too_deep",
                    "beyond_the_context"):
        def load(*a, **k):      # what a flag or a file decides is refused before a model loads
            raise AssertionError(f"{case}: the model loaded before the refusal")
        monkeypatch.setattr("sims.hf.model.load", load)
    argv = ["train", "--model", files["model"], "--train", files["train"], "--out", str(d / "o"), *flags]   # a later --out wins
    code = hf.main(argv)
    line = error_line(capsys.readouterr().err)
    assert code == 2 and says in line, line
    assert not (d / "o").exists()


def test_the_forecast_predicts_the_first_step_and_is_scored_against_the_end(files, tmp_path, capsys):
    """--forecast (float64, tied embeddings, the tied matrix trains): the IM-RM's predicted margin
    changes are the first order of a real step of the tied matrix, along -grad (gd) and along
    AdamW's first step (adam); the EX-RM's the head's steps from u = 0 on the last-token states;
    after training every pair's outcome, recall and precision agree with a recount from the
    recorded rewards."""
    from sims.hf.model import load, load_tokenizer, run_batches
    from sims.hf.step import actual_reward_change, loss_gradients
    from sims.hf.training.forecast import ADAM_EPS
    assert _train(files, tmp_path / "run", "--no-save", "--forecast", "--dtype", "float64", "--seeds", "0,1") == 0
    out = capsys.readouterr().out
    assert "forecast of the first step" in out and "forecast before training" in out
    assert "  im para: " in out and "  ex para: " in out          # the screen speaks per set, in pairs
    r = json.loads((tmp_path / "run/results.json").read_text())
    fc = r["forecast"]
    assert set(fc["sets"]) == {"train", "para"} and "tied" in fc["method"]["im"]
    model, tok = load(files["model"], dtype="float64"), load_tokenizer(files["model"])
    enc = {n: hf.encode_pairs(tok, rows, eos=False) for n, rows in (("train", T.PAIRS), ("para", T.PARAPHRASES))}
    seqs = [s for p in enc["para"] for s in ((p[0], p[1]), (p[0], p[2]))]
    lp = [run_batches(model, [(p, y[i]) for p, *y in enc["train"]], batch_size=8, pad_id=0,
                      states=False)["logp"].sum(-1) for i in (0, 1)]
    params = ["model.embed_tokens.weight"]
    (g,) = loss_gradients(model, tok, enc["train"], lp[0] - lp[1], beta=0.01, params=params)
    eta = 1e-4
    for step, d in (("gd", g), ("adam", g / (g.abs() + ADAM_EPS))):
        moved = actual_reward_change(model, tok, seqs, [d], beta=0.01, eta=eta, params=params) / eta
        predicted = torch.tensor(fc["sets"]["para"]["margin_change"]["im"][step], dtype=torch.float64)
        torch.testing.assert_close(moved[0::2] - moved[1::2], predicted, rtol=1e-2,
                                   atol=1e-3 * float(predicted.abs().max()))
    # EX-RM: from u = 0 every pair's sigmoid is 1/2, so -grad_u L = sum_i (h_i+ - h_i-) / (2 B)
    last = {n: [run_batches(model, [(p, y[i]) for p, *y in enc[n]], batch_size=8, pad_id=0)["h_last"] for i in (0, 1)]
            for n in ("train", "para")}
    down = (last["train"][0] - last["train"][1]).mean(0) / 2
    dh = last["para"][0] - last["para"][1]
    for step, d in (("gd", down), ("adam", down / (down.abs() + ADAM_EPS))):
        np.testing.assert_allclose(fc["sets"]["para"]["margin_change"]["ex"][step], (dh @ d).tolist(), rtol=1e-9,
                                   atol=1e-12)
    for kind in ("ex", "im"):
        for seed in ("0", "1"):
            end = r["runs"][kind][seed]["checkpoints"][-1]["evals"]["para"]
            margins = np.subtract(end["chosen"], end["rejected"])
            got = r["forecast"]["scores"][kind][seed]["para"]
            wrong = margins <= 0
            assert [p["ended_wrong"] for p in got["per_pair"]] == wrong.tolist()
            for step in ("gd", "adam"):
                flagged = np.array(fc["sets"]["para"]["margin_change"][kind][step]) < 0
                assert got[step]["caught"] == int((flagged & wrong).sum()) and got["ended_wrong"] == int(wrong.sum())
        pooled = r["forecast"]["pooled"][kind]["para"]
        n_wrong = sum(r["forecast"]["scores"][kind][s]["para"]["ended_wrong"] for s in ("0", "1"))
        assert pooled["ended_wrong"] == n_wrong and pooled["pairs"] == 2 * len(T.PARAPHRASES)
        if n_wrong:
            assert pooled["gd"]["recall"] == pooled["gd"]["caught"] / n_wrong


@pytest.mark.parametrize("tied", [False, True])
def test_the_head_only_forecast_is_eq5(tied, tok):
    """Where lm_head alone moves (untied embeddings, or the tied input embedding held), the IM-RM's
    gradient-descent forecast is Eq. 5 on the model's own states (theory.dynamics, float64); only
    the kinds asked are forecast; identical training pairs are left out."""
    from sims.hf.model import pad_token_id, run_batches
    from sims.hf.step import eq5_reward_change
    from sims.hf.training.forecast import forecast
    model = T.model("llama", tied=tied, seed=0).double()
    enc = {"train": hf.encode_pairs(tok, T.PAIRS, eos=False), "para": hf.encode_pairs(tok, T.PARAPHRASES, eos=False)}
    same = {**enc, "train": enc["train"] + [(enc["train"][0][0], enc["train"][0][1], enc["train"][0][1])]}
    fc = forecast(model, tok, same, kinds=["im", "grm"], beta=0.01, hold_input_embedding=tied)
    assert fc["kinds"] == ["im"] and "lm_head alone" in fc["method"]["im"] and "left out" in fc["notes"][0]
    seqs = [s for p in enc["para"] for s in ((p[0], p[1]), (p[0], p[2]))]
    pad = pad_token_id(tok)
    lp = [run_batches(model, [(p, y[i]) for p, *y in enc["train"]], pad_id=pad, states=False)["logp"].sum(-1)
          for i in (0, 1)]
    M, _, _ = eq5_reward_change(model, tok, enc["train"], seqs, lp[0] - lp[1], beta=0.01, eta=1.0)
    eq5 = M.mean(-1)
    np.testing.assert_allclose(fc["sets"]["para"]["margin_change"]["im"]["gd"], (eq5[0::2] - eq5[1::2]).tolist(),
                               rtol=1e-8, atol=1e-14)


def test_forecast_scores_by_hand():
    """Recall and precision, and the baseline's, on a history written by hand."""
    from sims.hf.training.forecast import score
    mc = {"gd": [-1.0, -2.0, 3.0, 4.0], "adam": [1.0, 1.0, -1.0, 1.0]}
    fc = {"sets": {"s": {"margin_change": {"im": mc}, "baseline_flag": [False, True, True, False]}}}
    end = {"chosen": [-1.0, 2.0, -3.0, 4.0], "rejected": [0.0, 0.0, 0.0, 0.0]}     # pairs 0 and 2 end wrong
    zero = {"chosen": [0.0] * 4, "rejected": [0.0] * 4}
    got = score(fc, "im", {"checkpoints": [{"evals": {"s": zero}}, {"evals": {"s": end}}]})["s"]
    assert got["ended_wrong"] == 2 and got["gd"]["moved_as_predicted"] == 0.5 and got["adam"]["moved_as_predicted"] == 0.75
    assert {k: got["gd"][k] for k in ("flagged", "caught", "recall", "precision")} == \
        {"flagged": 2, "caught": 1, "recall": 0.5, "precision": 0.5}
    assert {k: got["adam"][k] for k in ("flagged", "caught", "recall", "precision")} == \
        {"flagged": 1, "caught": 1, "recall": 0.5, "precision": 1.0}
    assert got["baseline"] == {"flagged": 2, "caught": 1, "recall": 0.5, "precision": 0.5}
    assert [p["pair"] for p in got["per_pair"]] == [0, 1, 2, 3]
    # the screen: pairs by set and place, with their predicted changes, before and after training
    from sims.hf.training.forecast import flagged_lines, outcome_lines
    fc["kinds"] = ["im"]
    fc["sets"]["s"]["places"] = ["line 1", "line 2", "line 4", "line 5"]       # a blank line 3
    assert flagged_lines(fc, "im") == ["  im s: 1 of 4 pairs flagged (adam step lowers the margin):",
                                       "    s line 4: predicted margin change gd +3, adam -1"]
    assert flagged_lines(fc, "im", "gd")[1:] == ["    s line 2: predicted margin change gd -2, adam +1",
                                                 "    s line 1: predicted margin change gd -1, adam +1"]
    scored = score(fc, "im", {"checkpoints": [{"evals": {"s": zero}}, {"evals": {"s": end}}]})
    assert outcome_lines(fc, "im", {"0": scored}) == [
        "  im s: pairs flagged (adam) or ended wrong:",
        "    s line 4: predicted -1, ended wrong in 1 of 1 seed (caught)",
        "    s line 1: predicted +1, ended wrong in 1 of 1 seed (missed)"]
    flat = {"gd": [1.0] * 4, "adam": [1.0] * 4}
    none = score({"sets": {"s": {"margin_change": {"im": flat}, "baseline_flag": [False] * 4}}}, "im",
                 {"checkpoints": [{"evals": {"s": zero}}, {"evals": {"s": zero}}]})["s"]
    assert none["gd"]["recall"] == 0.0 and none["gd"]["precision"] is None


def test_an_interrupt_mid_training_leaves_no_folder(files, tmp_path, monkeypatch):
    from sims.hf.training import engine
    real = engine.Trainer._checkpoint

    def interrupted(self, step, callback):
        if step > 0:
            raise KeyboardInterrupt
        return real(self, step, callback)
    monkeypatch.setattr(engine.Trainer, "_checkpoint", interrupted)
    assert _train(files, tmp_path / "run") == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated_weights", "kind_mismatch", "config_missing", "not_an_object",
                                    "bad_beta", "no_reference", "two_labels"])
def test_a_damaged_model_folder_is_refused_in_one_line(damage, files, tmp_path, capsys):
    """`score` on a saved reward model whose weights are cut short, or whose manifest names another
    kind than its weights (an EX-RM read as a causal LM would load a fresh random head and score
    noise), says so in one line with exit 2, and writes nothing."""
    import shutil
    assert _train(files, tmp_path / "run", "--kinds", "ex", "--epochs", "1") == 0
    folder = tmp_path / "ex"
    shutil.copytree(tmp_path / "run" / "models" / "ex-seed0", folder)
    if damage == "truncated_weights":
        w = folder / "model.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
        says = "cannot load the EX-RM"
    elif damage == "kind_mismatch":
        m = json.loads((folder / "rmgap.json").read_text())
        (folder / "rmgap.json").write_text(json.dumps({**m, "kind": "im", "beta": 0.01}))
        says = "not a *ForCausalLM model"
    elif damage == "not_an_object":
        (folder / "rmgap.json").write_text("[1, 2]")
        says = "not an object"
    elif damage in ("bad_beta", "no_reference"):
        m = json.loads((folder / "rmgap.json").read_text())
        m = {**m, "kind": "im", "beta": "0.01" if damage == "bad_beta" else 0.01}
        if damage == "no_reference":
            del m["reference"]
        (folder / "rmgap.json").write_text(json.dumps(m))
        says = "beta must be a number" if damage == "bad_beta" else "names its reference"
    elif damage == "two_labels":
        c = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**c, "id2label": {"0": "a", "1": "b"},
                                                        "label2id": {"a": 0, "b": 1}}))
        says = "with 2 labels"
    else:
        (folder / "config.json").unlink()
        says = "config.json: missing"
    capsys.readouterr()
    out = tmp_path / "s.json"
    code = hf.main(["score", "--model", str(folder), "--pairs", files["para"], "--out", str(out)])
    line = error_line(capsys.readouterr().err)
    assert code == 2 and says in line, line
    assert not out.exists()


def test_compare_two_runs(files, tmp_path, capsys):
    """`compare` of a run with itself: no difference, correlation 1, every pair ranked alike; of
    two learning rates: the differences it reports are the runs' own; bad input in one line."""
    assert _train(files, tmp_path / "a", "--no-save") == 0
    assert _train(files, tmp_path / "b", "--no-save", "--lr", "3e-2") == 0
    assert hf.main(["compare", str(tmp_path / "a"), str(tmp_path / "a" / "results.json"),
                    "--out", str(tmp_path / "same")]) == 0
    same = json.loads((tmp_path / "same" / "results.json").read_text())
    for kind in ("ex", "im"):
        for row in same["summary"][kind].values():
            assert row["accuracy_difference"] == 0 and row["ranked_alike"] == 1
            assert row["reward_correlation"] is None or row["reward_correlation"] == pytest.approx(1, abs=1e-12)
        assert same["kinds"][kind]["0"]["loss_max_difference"] == 0
    assert hf.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ab")]) == 0
    ab = json.loads((tmp_path / "ab" / "results.json").read_text())
    ra, rb = (json.loads((tmp_path / x / "results.json").read_text()) for x in ("a", "b"))
    for kind in ("ex", "im"):
        fa, fb = (r["runs"][kind]["0"]["checkpoints"][-1]["evals"]["para"] for r in (ra, rb))
        row = ab["kinds"][kind]["0"]["sets"]["para"]
        assert row["accuracy"] == [fa["accuracy"], fb["accuracy"]]
        x, y = np.array(fa["chosen"] + fa["rejected"]), np.array(fb["chosen"] + fb["rejected"])
        assert row["reward_correlation"] == pytest.approx(float(np.corrcoef(x, y)[0, 1]), rel=1e-9)
        la, lb = ra["runs"][kind]["0"]["loss"], rb["runs"][kind]["0"]["loss"]
        assert ab["kinds"][kind]["0"]["loss_max_difference"] == pytest.approx(max(abs(p - q) for p, q in zip(la, lb)))
        assert ab["kinds"][kind]["0"]["loss_max_difference"] > 0
    capsys.readouterr()
    assert hf.main(["compare", str(tmp_path / "a"), str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "no results.json of a train run" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "x").exists()


def test_a_sequence_classifier_of_another_toolkit_is_scored_as_an_ex_rm(files, tmp_path, capsys):
    """A *ForSequenceClassification folder with one label and no rmgap.json (what TRL's
    RewardTrainer writes, here with no pad token in its config) is scored by its own head, said
    in a note; the rewards equal the ones its trainer recorded."""
    import shutil
    assert _train(files, tmp_path / "run", "--kinds", "ex", "--epochs", "1", "--no-chat-template") == 0
    folder = tmp_path / "foreign"
    shutil.copytree(tmp_path / "run" / "models" / "ex-seed0", folder)
    (folder / "rmgap.json").unlink()
    c = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**c, "pad_token_id": None}))
    capsys.readouterr()
    out = tmp_path / "s.json"
    assert hf.main(["score", "--model", str(folder), "--pairs", files["para"], "--out", str(out)]) == 0
    assert "without an rmgap.json: scoring it as an EX-RM" in capsys.readouterr().err
    got = json.loads(out.read_text())
    last = json.loads((tmp_path / "run" / "results.json").read_text())["runs"]["ex"]["0"]["checkpoints"][-1]
    mine = np.array(last["evals"]["para"]["chosen"] + last["evals"]["para"]["rejected"])
    theirs = np.array(got["conventions"]["paper"]["chosen"] + got["conventions"]["paper"]["rejected"])
    np.testing.assert_allclose(theirs, mine, rtol=0, atol=1e-5 * (1 + np.abs(mine).max()))
    assert got["kind"] == "ex"


def test_score_takes_the_im_rms_beta_from_its_manifest(files, tmp_path, capsys):
    """An IM-RM trained with beta 0.1 is scored with 0.1 unless --beta says otherwise (a note then)."""
    assert _train(files, tmp_path / "run", "--kinds", "im", "--epochs", "1", "--beta", "0.1") == 0
    model = str(tmp_path / "run" / "models" / "im-seed0")
    assert hf.main(["score", "--model", model, "--pairs", files["para"], "--out", str(tmp_path / "a.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["beta"] == 0.1 and a["kind"] == "im"
    capsys.readouterr()
    assert hf.main(["score", "--model", model, "--pairs", files["para"], "--beta", "0.2",
                    "--out", str(tmp_path / "b.json")]) == 0
    assert "trained with beta 0.1; scoring with --beta 0.2" in capsys.readouterr().err
    b = json.loads((tmp_path / "b.json").read_text())
    np.testing.assert_allclose(np.array(b["conventions"]["paper"]["chosen"]),
                               2 * np.array(a["conventions"]["paper"]["chosen"]), rtol=1e-9)


def test_compare_refuses_what_it_cannot_compare(files, tmp_path, capsys):
    """Other pairs under one set name, a damaged results.json, one or three runs, and an --out that
    would replace a run: one line, exit 2, nothing written. Runs that differ otherwise are
    compared, the difference said in a note."""
    assert _train(files, tmp_path / "a", "--no-save", "--kinds", "im", "--epochs", "1") == 0
    other = _jsonl(tmp_path / "other.jsonl", T.PAIRS[::-1])
    assert hf.main(["train", "--model", files["model"], "--train", files["train"], "--eval", f"para={other}",
                    "--lr", "1e-2", "--batch", "2", "--epochs", "1", "--precision", "fp32", "--kinds", "im,ex",
                    "--no-save", "--out", str(tmp_path / "b")]) == 0
    damaged = tmp_path / "d"
    damaged.mkdir()
    r = json.loads((tmp_path / "a" / "results.json").read_text())
    r["runs"]["im"]["0"]["checkpoints"][-1]["evals"]["para"]["chosen"] = [1.0]
    (damaged / "results.json").write_text(json.dumps(r))
    cases = [([str(tmp_path / "a"), str(tmp_path / "b")], "holds other pairs"),
             ([str(tmp_path / "a"), str(damaged)], "not two lists of as many finite rewards"),
             ([str(tmp_path / "a")], "compare takes two train runs"),
             ([str(tmp_path / "a")] * 3, "compare takes two train runs"),
             ([str(tmp_path / "a"), str(tmp_path / "a"), "--force"], "write the comparison elsewhere")]
    for runs, says in cases:
        capsys.readouterr()
        out = ["--out", str(tmp_path / "a")] if "--force" in runs else ["--out", str(tmp_path / "x")]
        assert hf.main(["compare", *runs, *out]) == 2, says
        line = error_line(capsys.readouterr().err)
        assert says in line, line
        assert not (tmp_path / "x").exists() and (tmp_path / "a" / "results.json").is_file()
    # damaged by hand: each refused in one line (json reads Infinity and NaN as numbers)
    h = r["runs"]["im"]["0"]
    damages = {"sets_as_a_list": ({**r, "data": {**r["data"], "sets": ["para"]}}, "data.sets is not a mapping"),
               "superscript_seed": ({**r, "runs": {"im": {"\u00b2": h}}}, "a seed is a whole number"),
               "infinite_loss": ({**r, "runs": {"im": {"0": {**h, "loss": [float("inf")]}}}}, "finite numbers"),
               "accuracy_above_one": ({**r, "runs": {"im": {"0": {**h, "checkpoints": [
                   {**h["checkpoints"][-1], "evals": {"para": {**h["checkpoints"][-1]["evals"]["para"],
                                                               "accuracy": 7.5}}}]}}}}, "no accuracy in [0, 1]"),
               "nan_reward": ({**r, "runs": {"im": {"0": {**h, "checkpoints": [
                   {**h["checkpoints"][-1], "evals": {"para": {**h["checkpoints"][-1]["evals"]["para"],
                                                               "rejected": [float("nan")] * len(h["checkpoints"][-1]["evals"]["para"]["chosen"])}}}]}}}},
                              "finite rewards")}
    for name, (bad, says) in damages.items():
        (damaged / "results.json").write_text(json.dumps(bad))
        capsys.readouterr()
        assert hf.main(["compare", str(tmp_path / "a"), str(damaged), "--out", str(tmp_path / "x")]) == 2, name
        line = error_line(capsys.readouterr().err)
        assert says in line and "damaged" in line, (name, line)
        assert not (tmp_path / "x").exists()
    assert _train(files, tmp_path / "c", "--no-save", "--epochs", "1", "--lr", "3e-2") == 0
    capsys.readouterr()
    assert hf.main(["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "ac")]) == 0
    err = capsys.readouterr().err
    assert "only run B has the kind ex" in err and "differ in lr" in err
    assert json.loads((tmp_path / "ac" / "results.json").read_text())["notes"]


def test_score_says_an_ex_rm_has_no_beta(files, tmp_path, capsys):
    """--beta on an EX-RM changes nothing: said on stderr, not silently ignored; stdout keeps the table."""
    assert _train(files, tmp_path / "m", "--kinds", "ex", "--epochs", "1") == 0
    capsys.readouterr()
    model = tmp_path / "m" / "models" / "ex-seed0"
    assert hf.main(["score", "--model", str(model), "--pairs", files["para"], "--beta", "0.5",
                    "--out", str(tmp_path / "s.json")]) == 0
    out, err = capsys.readouterr()
    assert "is an EX-RM, whose reward (its head's) has no beta; ignored" in err and "note" not in out
    assert json.loads((tmp_path / "s.json").read_text())["kind"] == "ex"


def test_score_never_writes_over_a_file_of_the_model_it_reads(files, tmp_path, capsys):
    """`score --out MODEL/config.json --force` would leave a model that no longer loads: refused in
    one line, --force or not; the model scores as before."""
    assert _train(files, tmp_path / "run", "--kinds", "ex", "--epochs", "1") == 0
    model = tmp_path / "run" / "models" / "ex-seed0"
    before = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    for name in ("config.json", "rmgap.json"):
        capsys.readouterr()
        code = hf.main(["score", "--model", str(model), "--pairs", files["para"], "--out", str(model / name),
                        "--force"])
        line = error_line(capsys.readouterr().err)
        assert code == 2 and "is a file of the model folder" in line, line
    assert {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()} == before


def test_bench_train_against_trl_on_a_tiny_model(files):
    """bench --train's bookkeeping on a tiny chat model: both trainers' fp32 losses agree, every
    configuration is timed, and the tokens each computes per step are counted the same way: ours
    reads each prompt once, so TRL computes more; the targets' verdicts follow the ratios."""
    pytest.importorskip("trl")
    from transformers import AutoTokenizer

    from sims.hf.pairs import chat_pairs
    from sims.hf.training.bench import TARGETS, bench_train
    tok = AutoTokenizer.from_pretrained(files["model"])
    tok.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}" \
                        "{% if add_generation_prompt %}assistant : {% endif %}"
    model = T.model("llama", tied=True, seed=0)
    chat, applied = chat_pairs(tok, [{**p, "prompt": [{"role": "user", "content": p["prompt"]}],
                                      "chosen": [{"role": "assistant", "content": p["chosen"].strip()}],
                                      "rejected": [{"role": "assistant", "content": p["rejected"].strip()}]}
                                     for p in T.PAIRS])
    assert applied
    r = bench_train(model, tok, chat, steps=3, micro=2, lr=1e-3, beta=0.1, bf16=False, log=lambda m: None)
    for kind in ("im", "ex"):
        k = r["kinds"][kind]
        assert k["loss_agreement"]["agree"], k["loss_agreement"]
        assert set(k["runs"]) == {"ours_fp32", "trl_fp32_defaults", "trl_fp32_best"}
        ours, trl = (k["runs"][n]["tokens_computed_per_step"] for n in ("ours_fp32", "trl_fp32_best"))
        prompts = sum(len(p) for p, _, _ in hf.encode_pairs(tok, chat, eos=False))
        # ours: every real token, each prompt once, and the padding of rows sorted by length
        assert r["tokens_per_step"] - prompts <= ours < r["tokens_per_step"] <= trl
        assert k["ratios"]["tokens_trl_best_over_ours"] == trl / ours
        v = k["targets"]["equal_precision"]
        assert v["target"] == TARGETS["equal_precision"] and v["verdict"] == ("meets" if v["ratio"] >= v["target"]
                                                                           else "misses")
