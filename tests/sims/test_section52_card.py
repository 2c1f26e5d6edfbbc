"""The data card of the Section 5.2 set (sims.section52.card): the official token-overlap statistic
against its definition, a small folder's card checked by hand, and bad folders refused in one line."""
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sims.section52 import card
from tests.helpers import error_line

seqs = st.lists(st.integers(0, 6), max_size=12)


@given(seqs, seqs)
def test_token_overlap_is_its_double_sum(a, b):
    direct = sum(x == y for x in a for y in b) / (len(a) * len(b)) if a and b else 0.0
    assert card.token_overlap(a, b) == pytest.approx(direct, abs=1e-15)
    assert card.token_overlap(a, b) == pytest.approx(card.token_overlap(b, a), abs=1e-15)


def test_token_overlap_by_hand():
    assert card.token_overlap([1, 2, 3, 4], [1, 2, 3, 4]) == 4 / 16       # distinct tokens: 1 / |a|, not 1
    assert card.token_overlap([5, 5], [5, 5, 5]) == 1.0
    assert card.token_overlap([1, 2], [3, 4]) == 0.0


def _folder(tmp_path, **edit):
    rows = {
        "train": [{"prompt": f"How do I fix thing {i}?", "chosen": "Tighten the screw a little.",
                   "rejected": "Hit it hard with a hammer."} for i in range(4)],
        "indist": [{"prompt": "How do I clean a kettle?", "chosen": "Boil water with vinegar, then rinse it twice.",
                    "rejected": "Scrub the element with steel wool while it is on."},
                   {"prompt": "Why is my basil wilting?", "chosen": "It is thirsty: water the soil until it drains.",
                    "rejected": "Basil wilts when it gets too much light, so keep it in a cupboard."}],
        "math": [{"prompt": "What is 2 + 3?", "chosen": "2 + 3 = 5.", "rejected": "2 + 3 = 6."}],
        "code": [{"prompt": "Write a function that doubles x.", "chosen": "def d(x):\n    return 2 * x",
                  "rejected": "def d(x):\n    return x + 2"}],
    }
    rows["paraphrase"] = [{**r, "chosen": r["chosen"].upper(), "source_index": i} for i, r in enumerate(rows["indist"])]
    rows["french"] = [{**r, "source_index": i} for i, r in enumerate(rows["indist"])]
    rows["spanish"] = [{**r, "source_index": 1 - i} for i, r in enumerate(rows["indist"])]
    rows.update(edit)
    for name, rs in rows.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    return rows


def test_card_of_a_small_folder(tmp_path):
    (tmp_path / "d").mkdir()
    rows = _folder(tmp_path / "d")
    code = card.main(["--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")])
    r = json.loads((tmp_path / "o/results.json").read_text())
    assert code == 0 and all(c["passed"] for c in r["checks"])
    assert r["files"]["train"]["pairs"] == 4 and r["files"]["indist"]["pairs"] == 2
    # french copies its source row for row: its overlap is the source's against itself
    assert r["overlap"]["french"]["vs_source"] == pytest.approx(r["overlap"]["source"]["vs_itself"], abs=1e-12)
    # spanish names the other row as its source: the source against the next row (2 rows: each other)
    assert r["overlap"]["spanish"]["vs_source"] == pytest.approx(r["overlap"]["source"]["vs_next_row"], abs=1e-12)
    assert r["nearest_training_prompt"]["indist"]["exact_repeats"] == 0
    assert r["files"]["math"]["words"] == {"chosen": 5.0, "rejected": 5.0}       # "2 + 3 = 5." by spaces
    assert rows["indist"][0]["prompt"] == "How do I clean a kettle?"


def test_a_repeated_prompt_fails_its_check(tmp_path):
    (tmp_path / "d").mkdir()
    dup = {"prompt": "How do I fix thing 0?", "chosen": "a b", "rejected": "c d"}
    _folder(tmp_path / "d", math=[dup, dup])
    assert card.main(["--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")]) == 1
    r = json.loads((tmp_path / "o/results.json").read_text())
    failed = {c["claim"] for c in r["checks"] if not c["passed"]}
    assert failed == {"every file's prompts are distinct", "no evaluation prompt is a training prompt"}


@pytest.mark.parametrize("edit,says", [
    ("nofolder", "no such folder"),
    ("nofile", "missing code.jsonl"),
    ({"french": [{"prompt": "p", "chosen": "a", "rejected": "b"}]}, "no integer source_index"),
    ({"french": [{"prompt": "p", "chosen": "a", "rejected": "b", "source_index": 7}]}, "source_index 7"),
    ({"math": [{"prompt": "p", "chosen": "a"}]}, "math.jsonl"),
])
def test_bad_folders(edit, says, tmp_path, capsys):
    d = tmp_path / "d"
    if edit != "nofolder":
        d.mkdir()
        _folder(d, **(edit if isinstance(edit, dict) else {}))
        if edit == "nofile":
            (d / "code.jsonl").unlink()
    assert card.main(["--data", str(d), "--out", str(tmp_path / "o")]) == 2
    assert says in error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_the_canonical_card_is_of_the_files_in_the_repository():
    """The code hash of a run does not cover data files: the card records their sha256 instead,
    and a file changed without rerunning `python -m sims.section52.card` fails here."""
    import hashlib

    from figures import RESULTS, ROOT
    path = RESULTS / "section52_card" / "results.json"
    if not path.exists():
        pytest.skip("the canonical run section52_card has no results here")
    files = json.loads(path.read_text())["files"]
    assert set(files) == set(card.FILES)
    for name, f in files.items():
        data = (ROOT / "data" / "section52" / f"{name}.jsonl").read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"], (
            f"data/section52/{name}.jsonl changed since the card: rerun `python -m figures --rerun section52_card`")
