"""Pairs as researchers keep them (issue 16): JSON Lines, Parquet and `save_to_disk` folders give
the same pairs for the same rows, extra columns are named, and bad input is one line, exit 2."""
from __future__ import annotations

import json
import sys

import pytest

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from sims.hf.pairs import read_pairs  # noqa: E402
from sims.hf.places import places  # noqa: E402
from tests.helpers import error_line

STANDARD = [{"prompt": "is the sky blue ?", "chosen": " yes", "rejected": " no"},
            {"prompt": "dogs are good", "chosen": " sure", "rejected": " never"}]
CONVERSATIONAL = [{"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "sky blue ?"}],
                   "chosen": [{"role": "assistant", "content": "yes"}],
                   "rejected": [{"role": "assistant", "content": "no"}]},
                  {"prompt": [{"role": "user", "content": "dogs good ?"}],
                   "chosen": [{"role": "assistant", "content": "sure"}],
                   "rejected": [{"role": "assistant", "content": "never"}]}]
FORMATS = ("jsonl", "parquet", "dataset", "dict_one_split", "dict_two_splits")


@pytest.fixture(autouse=True)
def quiet_saves():
    """save_to_disk draws a progress bar on stderr, where the tests look for one error line."""
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def write(fmt: str, folder, rows, name="pairs") -> str:
    """`rows` in format `fmt` under `folder`; the path to give --pairs."""
    if fmt == "jsonl":
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(folder / f"{name}.jsonl")
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{name}.parquet")
        return str(folder / f"{name}.parquet")
    ds = datasets.Dataset.from_list(rows)
    if fmt == "dataset":
        ds.save_to_disk(str(folder / name))
        return str(folder / name)
    if fmt == "dict_one_split":
        datasets.DatasetDict(train=ds).save_to_disk(str(folder / name))
        return str(folder / name)
    datasets.DatasetDict(train=ds, test=ds.select([0])).save_to_disk(str(folder / name))
    return str(folder / name) + ":train"


@pytest.mark.parametrize("rows", [STANDARD, CONVERSATIONAL], ids=["standard", "conversational"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_gives_the_same_pairs(tmp_path, fmt, rows):
    assert read_pairs(write(fmt, tmp_path, rows)) == (rows, [])


def test_a_split_is_picked_by_its_name(tmp_path):
    path = write("dict_two_splits", tmp_path, STANDARD).removesuffix(":train")
    assert read_pairs(f"{path}:test") == (STANDARD[:1], [])
    # datasets cannot load an empty split back; the other splits still read
    empty = datasets.Dataset.from_list(STANDARD).select([])
    datasets.DatasetDict(train=datasets.Dataset.from_list(STANDARD), test=empty).save_to_disk(str(tmp_path / "e"))
    assert read_pairs(f"{tmp_path / 'e'}:train") == (STANDARD, [])


@pytest.mark.parametrize("fmt", FORMATS)
def test_places_name_each_pair_where_a_reader_finds_it(tmp_path, fmt):
    """JSON Lines: the line, from 1, blank lines counted; tables: the row, from 0 as dataset[i]."""
    if fmt == "jsonl":
        path = tmp_path / "pairs.jsonl"
        path.write_text(json.dumps(STANDARD[0]) + "\n \n" + json.dumps(STANDARD[1]) + "\n\n")
        assert read_pairs(str(path)) == (STANDARD, []) and places(str(path), 2) == ["line 1", "line 3"]
    else:
        path = write(fmt, tmp_path, STANDARD)
        assert read_pairs(path) == (STANDARD, []) and places(path, 2) == ["row 0", "row 1"]


def test_a_file_without_a_suffix_is_json_lines(tmp_path):
    """As a pipe is: `--pairs <(head -100 pairs.jsonl)`."""
    (tmp_path / "pairs").write_text("".join(json.dumps(r) + "\n" for r in STANDARD))
    assert read_pairs(str(tmp_path / "pairs")) == (STANDARD, [])


@pytest.mark.parametrize("fmt", FORMATS)
def test_extra_columns_are_ignored_and_named(tmp_path, fmt):
    rows = [{**r, "score": 0.5 + i, "source": "web"} for i, r in enumerate(STANDARD)]
    assert read_pairs(write(fmt, tmp_path, rows)) == (STANDARD, ["score", "source"])


def _hf_main(argv):
    pytest.importorskip("transformers")
    from sims import hf
    return hf.main(argv)


def test_the_cli_notes_ignored_columns(tmp_path, monkeypatch, capsys):
    """The note comes as the pairs are read, before any model loads (none exists here)."""
    monkeypatch.chdir(tmp_path)
    path = write("parquet", tmp_path, [{**r, "score": 1.0, "source": "web"} for r in STANDARD])
    assert _hf_main(["score", "--model", "/nonexistent/model", "--pairs", path, "--out", "o.json"]) == 2
    assert f"note: {path}: ignored columns score, source" in capsys.readouterr().err   # a note, on stderr as every note


def _bad_files(folder) -> dict[str, str]:
    """Name -> the --pairs argument of a bad input."""
    one = STANDARD[:1]
    (folder / "plain").mkdir()
    (folder / "plain" / "notes.txt").write_text("x")
    (folder / "pairs.csv").write_text("prompt,chosen,rejected\na,b,c\n")
    (folder / "corrupt.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    (folder / "null.jsonl").write_text(json.dumps(one[0]) + "\n" + '{"prompt": null, "chosen": "b", "rejected": "c"}\n')
    (folder / "mixed.jsonl").write_text(json.dumps({**one[0], "chosen": CONVERSATIONAL[0]["chosen"]}) + "\n")
    empty = datasets.Dataset.from_dict({k: [] for k in ("prompt", "chosen", "rejected")},
                                       features=datasets.Features({k: datasets.Value("string")
                                                                   for k in ("prompt", "chosen", "rejected")}))
    datasets.DatasetDict(train=empty).save_to_disk(str(folder / "empty_split"))
    damaged = write("dataset", folder, one, "damaged")
    next((folder / "damaged").glob("*.arrow")).write_bytes(b"cut")
    return {"missing_column": write("dataset", folder, [{"prompt": "a", "chosen": "b", "score": 1}], "nocol"),
            "missing_key": write("jsonl", folder, [{"prompt": "a", "chosen": "b"}], "nokey"),
            "empty_split": str(folder / "empty_split"),
            "empty_file": write("jsonl", folder, [], "empty"),
            "int_prompt": write("parquet", folder, [{**one[0], "prompt": 7}], "int"),
            "null_parquet": write("parquet", folder, [one[0], {**one[0], "prompt": None}], "nullp"),
            "null_jsonl": str(folder / "null.jsonl"),
            "list_of_strings": write("dataset", folder, [{**one[0], "prompt": ["a", "b"]}], "strings"),
            "mixed_kinds": str(folder / "mixed.jsonl"),
            "not_a_saved_dataset": str(folder / "plain"),
            "unknown_extension": str(folder / "pairs.csv"),
            "corrupt_parquet": str(folder / "corrupt.parquet"),
            "damaged_dataset": damaged,
            "two_splits": write("dict_two_splits", folder, STANDARD, "two").removesuffix(":train"),
            "no_such_split": write("dict_two_splits", folder, STANDARD, "two_b").replace(":train", ":validation"),
            "split_of_a_file": write("parquet", folder, one, "p") + ":train"}


BAD = {  # name -> what the one error line must say (besides the file's name)
    "missing_column": "missing rejected (it has prompt, chosen, score)",
    "missing_key": ":1: needs the columns prompt, chosen and rejected; missing rejected",
    "empty_split": "empty_split:train' holds no pairs",
    "empty_file": "holds no pairs",
    "int_prompt": "row 0: prompt is int 7; expected a string or a list of {role, content} messages",
    "null_parquet": "row 1: prompt is missing (null)",
    "null_jsonl": ":2: prompt is missing (null)",
    "list_of_strings": "row 0: prompt is list ['a', 'b']",
    "mixed_kinds": "must all be strings or all lists of {role, content} messages (got text, messages, text)",
    "not_a_saved_dataset": "not one written by save_to_disk",
    "unknown_extension": "unknown pairs format '.csv'",
    "corrupt_parquet": "not a readable Parquet file",
    "damaged_dataset": "cannot load the saved dataset",
    "two_splits": "a DatasetDict with the splits train, test; name one as",
    "no_such_split": "no split 'validation' (the splits are train, test)",
    "split_of_a_file": "a :SPLIT suffix picks a split of a DatasetDict folder",
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    datasets.disable_progress_bars()
    return _bad_files(folder)


def _one_line_exit_2(argv, capsys, *needles):
    capsys.readouterr()
    code = _hf_main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    err = error_line(err)
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_pairs_are_one_line_exit_2(bad_files, tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    path = bad_files[case]
    name = path.rsplit("/", 1)[-1].split(":")[0]
    _one_line_exit_2(["score", "--model", "m", "--pairs", path, "--out", "o.json"], capsys, BAD[case], name)
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("fmt,module,package", [("dataset", "datasets", "datasets>=2.14"),
                                                ("parquet", "pyarrow", "pyarrow")])
def test_a_missing_package_is_named(tmp_path, monkeypatch, capsys, fmt, module, package):
    path = write(fmt, tmp_path, STANDARD)
    pytest.importorskip("transformers")
    import huggingface_hub, sims.hf  # noqa: F401,E401  (loaded before the package goes missing)
    monkeypatch.chdir(tmp_path)
    for m in (module, f"{module}.parquet"):
        monkeypatch.setitem(sys.modules, m, None)   # `import` now raises ImportError
    _one_line_exit_2(["score", "--model", "m", "--pairs", path, "--out", "o.json"], capsys,
                     f"needs {package}: pip install '{package}'")
