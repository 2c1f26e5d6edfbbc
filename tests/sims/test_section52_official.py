"""Section 5.2 on the official data's layout (issue 25, item 3), on a tiny random Llama: the
official code ships `save_to_disk` DatasetDict folders with train/test splits and the columns
prompt/chosen/rejected, its rewrites and translations adding orig_index, orig_chosen and
orig_rejected. `python -m sims.hf train` reads them by FOLDER:SPLIT, names the extra columns it
ignores, and `python -m sims.section52.report` reads the run it writes."""
import json

import pytest

pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
from sims import hf  # noqa: E402
from sims.section52 import report  # noqa: E402
from tests.sims import hf_tiny as T  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/sims/conftest.py


def _folder(path, rows_train, rows_test):
    import contextlib
    import io
    with contextlib.redirect_stderr(io.StringIO()):    # save_to_disk's progress bar
        datasets.DatasetDict(train=datasets.Dataset.from_list(rows_train),
                             test=datasets.Dataset.from_list(rows_test)).save_to_disk(str(path))
    return str(path)


def _rewritten(rows, change):
    return [{"orig_index": i, "prompt": r["prompt"], "chosen": change(r["chosen"]), "rejected": change(r["rejected"]),
             "orig_chosen": r["chosen"], "orig_rejected": r["rejected"]} for i, r in enumerate(rows)]


def test_the_official_layout_end_to_end(tmp_path, capsys):
    tok = T.tokenizer(tmp_path / "m")
    T.save(T.model("llama", tied=True, seed=0), tok, tmp_path / "m")
    pairs = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in T.PAIRS]
    uf = _folder(tmp_path / "ultrafeedback", pairs, pairs[:3])
    rw = _folder(tmp_path / "rewrite", _rewritten(pairs, str.upper), _rewritten(pairs[:3], str.upper))
    fr = _folder(tmp_path / "french", _rewritten(pairs, lambda s: "le " + s), _rewritten(pairs[:3], lambda s: "le " + s))
    math_ = _folder(tmp_path / "math", pairs[:2], pairs[1:3])
    argv = ["train", "--model", str(tmp_path / "m"), "--train", f"{uf}:train", "--eval", f"indist={uf}:test",
            "--eval", f"paraphrase={rw}:test", "--eval", f"french={fr}:test", "--eval", f"math={math_}:test",
            "--lr", "1e-2", "--batch", "2", "--micro-batch", "1", "--epochs", "1", "--precision", "fp32",
            "--no-save", "--out", str(tmp_path / "run")]
    assert hf.main(argv) == 0
    out = capsys.readouterr()
    assert "ignored columns orig_index, orig_chosen, orig_rejected" in out.out + out.err
    r = json.loads((tmp_path / "run/results.json").read_text())
    last = r["runs"]["im"]["0"]["checkpoints"][-1]["evals"]
    assert {n: len(last[n]["chosen"]) for n in ("indist", "paraphrase", "french", "math")} == \
        {"indist": 3, "paraphrase": 3, "french": 3, "math": 2}
    # the comparison reads the run: the official names fall into the paper's groups
    assert report.main(["--run", str(tmp_path / "run"), "--bootstrap", "100", "--out", str(tmp_path / "rep")]) in (0, 1)
    rep = json.loads((tmp_path / "rep/results.json").read_text())
    assert rep["groups"]["token-level shift"]["sets"] == ["paraphrase", "french"]
    assert rep["groups"]["domain shift"]["pairs"] == 2 and rep["groups"]["in distribution"]["pairs"] == 3
