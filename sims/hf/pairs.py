"""Preference pairs: reading them, and tokenising them as TRL's DPOTrainer does.

Pairs are `prompt`, `chosen`, `rejected`: strings (TRL's standard format) or lists of
{"role", "content"} messages (TRL's conversational format, rendered with the chat template).
They come as JSON Lines, Parquet, or a folder written by `datasets`' `save_to_disk`.
"""
from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

from sims.cli import ToolkitWarning, UsageError

COLUMNS = ("prompt", "chosen", "rejected")
# The roles chat templates know (TRL's conversational format, and Llama 3's ipython). Others
# still render, as a header of their own name, which is rarely what a pairs file means
# (ShareGPT's human / gpt, say), so they get a warning.
ROLES = ("system", "user", "assistant", "tool", "developer", "ipython", "function")
FORMATS = "JSON Lines (.jsonl, .json), Parquet (.parquet) or a folder written by datasets' save_to_disk"


def read_pairs(path: str) -> tuple[list[dict], list[str]]:
    """(pairs, ignored columns) from JSON Lines, Parquet or a `save_to_disk` folder.

    Each row holds prompt, chosen and rejected, all strings or all message lists; other
    columns (JSON keys) are ignored and returned, in order of appearance, for the caller to
    name. A DatasetDict folder with one split is read whole; with several, `PATH:SPLIT` picks
    one (the error lists them). A file without a suffix is read as JSON Lines (a pipe, say).
    UsageError in one line naming the file, and the line (JSON
    Lines, from 1) or row (tables, from 0 as `dataset[i]`), for anything else."""
    file, split = _split_suffix(path)
    if not file.exists():
        raise UsageError(f"cannot read pairs file {str(file)!r}: no such file or folder")
    if split is not None and not (file / "dataset_dict.json").is_file():
        raise UsageError(f"{path}: a :SPLIT suffix picks a split of a DatasetDict folder, and {file} is not one")
    if file.is_dir():
        name, columns, rows = _saved_dataset(file, split)
    elif file.suffix in (".jsonl", ".json", ""):   # no suffix: a pipe, `<(head pairs.jsonl)`
        name, columns, rows = path, *_json_lines(file)
    elif file.suffix in (".parquet", ".pq"):
        name, columns, rows = path, *_parquet(file)
    else:
        raise UsageError(f"{path}: unknown pairs format {file.suffix!r}; give {FORMATS}")
    pairs = [_check_row(f"{name}{where}", row) for where, row in rows]
    if not pairs:
        raise UsageError(f"pairs file {name!r} holds no pairs")
    first = {}
    for (where, _), pair in zip(rows, pairs):
        first.setdefault(isinstance(pair["prompt"], str), _place(where))
    if len(first) == 2:   # nor can a datasets column hold both
        raise UsageError(f"{name}: mixes plain-text pairs (first at {first[True]}) with conversational ones (first "
                         f"at {first[False]}); one file holds one format")
    same = [_place(where) for (where, _), p in zip(rows, pairs) if p["chosen"] == p["rejected"]]
    if same:
        warnings.warn(f"{name}: {len(same)} of {len(pairs)} pairs have chosen == rejected ({', '.join(same[:5])}"
                      f"{', ...' if len(same) > 5 else ''}): every reward ties them, and they add nothing to a "
                      f"DPO step", ToolkitWarning, stacklevel=2)
    unknown = sorted({m["role"] for p in pairs if not isinstance(p["prompt"], str)
                      for k in COLUMNS for m in p[k]} - set(ROLES))
    if unknown:
        warnings.warn(f"{name}: message role(s) {', '.join(map(repr, unknown))} are none of {', '.join(ROLES)}; the "
                      f"chat template renders them as headers of that name", ToolkitWarning, stacklevel=2)
    return pairs, [c for c in columns if c not in COLUMNS]


def _place(where: str) -> str:
    """'line 3' (JSON Lines, from 1) or 'row 2' (tables, from 0) from a row's location suffix."""
    return f"line {where[1:]}" if where.startswith(":") else where.strip()


def _split_suffix(path: str) -> tuple[Path, str | None]:
    """PATH:SPLIT -> (PATH, SPLIT) when PATH exists and PATH:SPLIT does not (a colon may be
    part of a file name)."""
    head, colon, split = path.rpartition(":")
    if colon and head and split and not Path(path).exists() and Path(head).exists():
        return Path(head), split
    return Path(path), None


def _check_columns(where: str, columns) -> None:
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        implicit = "; TRL's implicit-prompt format (the prompt inside chosen and rejected) is not read: give " \
                   "the shared prompt as its own column" if missing == ["prompt"] else ""
        raise UsageError(f"{where}: needs the columns prompt, chosen and rejected; missing {', '.join(missing)} "
                         f"(it has {', '.join(map(str, columns)) or 'none'}){implicit}")


def _check_row(where: str, row) -> dict:
    """The one check every format's rows go through."""
    if not isinstance(row, dict):
        # a whole JSON array of objects on one line is a .json file, not JSON Lines
        hint = " (a JSON array of objects: write one object per line, JSON Lines)" \
            if isinstance(row, list) and row and all(isinstance(r, dict) for r in row) else ""
        raise UsageError(f"{where}: expected an object with prompt, chosen and rejected, got "
                         f"{type(row).__name__}{hint}")
    _check_columns(where, list(row))
    kinds = [_kind(row[k]) for k in COLUMNS]
    for k, kind in zip(COLUMNS, kinds):
        if kind is None:
            value = repr(row[k]) if len(repr(row[k])) <= 40 else repr(row[k])[:37] + "..."
            got = "missing (null)" if row[k] is None else "an empty list" if row[k] == [] else \
                f"{type(row[k]).__name__} {value}"
            raise UsageError(f"{where}: {k} is {got}; expected a string or a list of {{role, content}} messages")
    empty = [k for k in COLUMNS if not row[k] or (isinstance(row[k], str) and not row[k].strip())]
    if empty:
        raise UsageError(f"{where}: {', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty")
    if len(set(kinds)) != 1:
        raise UsageError(f"{where}: prompt, chosen and rejected must all be strings or all lists of "
                         f"{{role, content}} messages (got {', '.join(kinds)})")
    if kinds[0] == "messages":
        for k in COLUMNS:
            for j, message in enumerate(row[k], 1):
                _check_message(f"{where}: {k} message {j}", message)
    for k in COLUMNS:
        texts = [row[k]] if isinstance(row[k], str) else [m["content"] for m in row[k]]
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:   # a lone surrogate escape such as \ud800
                raise UsageError(f"{where}: {k} holds {text[exc.start]!r} at character {exc.start + 1}, a lone "
                                 f"UTF-16 surrogate (half of an escaped pair), which is no text a tokenizer reads") from None
    return {k: row[k] for k in COLUMNS}


def _check_message(where: str, message: dict) -> None:
    """role and content as strings: the chat template renders them as text, and a list of
    content parts ({"type": "text", "text": ...}, the multimodal format) would reach the
    template as a Python list, which text-only templates print or reject."""
    if not isinstance(message["role"], str) or not message["role"]:
        raise UsageError(f"{where}: role is {message['role']!r}; expected a string such as user or assistant")
    content = message["content"]
    if isinstance(content, list):
        raise UsageError(f"{where}: content is a list of {len(content)} part(s) (the multimodal format); "
                         f"this toolkit reads text chats: give the content as one string")
    if not isinstance(content, str):
        raise UsageError(f"{where}: content is {type(content).__name__} {repr(content)[:40]}; expected a string")


def _kind(value):
    if isinstance(value, str):
        return "text"
    if isinstance(value, list) and value and all(isinstance(m, dict) and {"role", "content"} <= m.keys()
                                                 for m in value):
        return "messages"
    return None


def _json_lines(file: Path):
    try:
        lines = file.read_bytes().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read pairs file {str(file)!r}: {exc.strerror or exc}") from None
    rows, columns = [], {}
    for i, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8-sig" if i == 1 else "utf-8")   # a byte-order mark may open the file
        except UnicodeDecodeError as exc:
            raise UsageError(f"{file}:{i}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                             f"JSON Lines are UTF-8") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKey as exc:
            raise UsageError(f"{file}:{i}: the key {exc.args[0]!r} appears twice (JSON keeps the last, silently)") from None
        except json.JSONDecodeError as exc:
            multi = " (one JSON document over several lines? write one object per line: JSON Lines)" \
                if i == 1 and line.strip() in ("[", "{") else ""
            raise UsageError(f"{file}:{i}: not JSON ({exc.msg}){multi}") from None
        columns.update(dict.fromkeys(row) if isinstance(row, dict) else {})
        rows.append((f":{i}", row))
    return list(columns), rows


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise _DuplicateKey(k)
    return dict(pairs)


def _need(module: str, package: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"reading {what} needs {package}: pip install '{package}' (or the [hf] extra)") from None


def _parquet(file: Path):
    pa = _need("pyarrow", "pyarrow", f"{file} (Parquet)")
    pq = _need("pyarrow.parquet", "pyarrow", f"{file} (Parquet)")
    try:
        columns = pq.read_schema(file).names
        _check_columns(str(file), columns)
        rows = pq.read_table(file, columns=list(COLUMNS)).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise UsageError(f"{file}: not a readable Parquet file ({_first_line(exc)})") from None
    return columns, [(f" row {i}", row) for i, row in enumerate(rows)]


def _saved_dataset(folder: Path, split: str | None):
    """(name for messages, columns, rows) of a Dataset folder, or of one split of a DatasetDict
    folder (loaded alone: datasets cannot load an empty split back, which would sink the rest)."""
    name = str(folder)
    if (folder / "dataset_dict.json").is_file():
        splits = _saved_json(folder / "dataset_dict.json").get("splits", [])
        if split is None and len(splits) != 1:
            raise UsageError(f"{folder}: a DatasetDict with the splits {', '.join(splits) or '(none)'}; "
                             f"name one as {folder}:{splits[0] if splits else 'SPLIT'}")
        split = splits[0] if split is None else split
        if split not in splits:
            raise UsageError(f"{folder}: no split {split!r} (the splits are {', '.join(splits)})")
        folder, name = folder / split, f"{folder}:{split}"
    if not (folder / "state.json").is_file():
        raise UsageError(f"{name}: a folder, but not one written by save_to_disk (no dataset_dict.json or "
                         f"state.json); pairs are {FORMATS}")
    if _saved_json(folder / "state.json").get("_data_files") == []:   # 0 rows: saved, but not loadable
        return name, [], []
    datasets = _need("datasets", "datasets>=2.14", f"{name} (a saved dataset)")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()   # a folder of > 16 shards would draw one on a terminal
    try:
        ds = datasets.load_from_disk(str(folder))
    except Exception as exc:  # noqa: BLE001  (a damaged folder fails in many ways, all the folder's fault)
        raise UsageError(f"{name}: cannot load the saved dataset ({_first_line(exc)})") from None
    finally:
        if bars:
            datasets.enable_progress_bars()
    _check_columns(name, ds.column_names)
    rows = ds.select_columns(list(COLUMNS)).to_list()
    return name, ds.column_names, [(f" row {i}", row) for i, row in enumerate(rows)]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _saved_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: damaged save_to_disk metadata ({exc})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: damaged save_to_disk metadata (not a JSON object)")
    return obj


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for s, t in zip(a, b):
        if s != t:
            break
        n += 1
    return n


def _ids(tokenizer, text_or_messages, **chat):
    if isinstance(text_or_messages, str):
        return list(tokenizer(text_or_messages)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError("conversational pairs need a tokenizer with a chat template")
    out = tokenizer.apply_chat_template(text_or_messages, tokenize=True, return_dict=True, **chat)
    return list(out["input_ids"])


def encode_pairs(tokenizer, pairs: list[dict], *, eos: bool) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt_ids, chosen_ids, rejected_ids) per pair, as TRL's DPOTrainer tokenises: the
    prompt alone and prompt + response, the response starting where the two diverge. eos=True
    appends the EOS token to plain-text responses that lack it (TRL's convention; conversational
    responses end with the chat template's own end-of-turn)."""
    if eos and tokenizer.eos_token is None:
        raise UsageError("--eos: the tokenizer has no EOS token")
    out = []
    for i, p in enumerate(pairs):
        chosen, rejected = p["chosen"], p["rejected"]
        if isinstance(p["prompt"], str):
            if eos:
                chosen = chosen if chosen.endswith(tokenizer.eos_token) else chosen + tokenizer.eos_token
                rejected = rejected if rejected.endswith(tokenizer.eos_token) else rejected + tokenizer.eos_token
            prompt = _ids(tokenizer, p["prompt"])
            full_c, full_r = _ids(tokenizer, p["prompt"] + chosen), _ids(tokenizer, p["prompt"] + rejected)
        else:
            prompt = _ids(tokenizer, p["prompt"], add_generation_prompt=True)
            full_c, full_r = _ids(tokenizer, p["prompt"] + chosen), _ids(tokenizer, p["prompt"] + rejected)
        n = min(_common_prefix(prompt, full_c), _common_prefix(prompt, full_r))
        where = f"pair {i + 1} (prompt {str(p['prompt'])[:40]!r})"
        if n == 0:
            raise UsageError(f"{where}: the prompt's tokens merge with the response's (no token of the prompt "
                             f"stays whole, so no position predicts the first response token); end the prompt "
                             f"with a space or a newline")
        if len(full_c) == n or len(full_r) == n:
            raise UsageError(f"{where}: a response is empty after tokenisation (it merges into the prompt's "
                             f"last token)")
        out.append((full_c[:n], full_c[n:], full_r[n:]))
    return out


def split_responses(encoded):
    """Encoded pairs -> (chosen seqs, rejected seqs) as (prompt, response) lists."""
    return [(p, c) for p, c, _ in encoded], [(p, r) for p, _, r in encoded]


def chat_pairs(tokenizer, pairs: list[dict], use: bool = True) -> tuple[list[dict], bool]:
    """Plain-text pairs as chat turns (the prompt as the user's, each response as the assistant's,
    as the official code renders them) when the tokenizer has a template and `use`; conversational
    pairs need a template. Returns (pairs, whether the template applies)."""
    has = bool(getattr(tokenizer, "chat_template", None))
    conversational = not isinstance(pairs[0]["prompt"], str)
    if conversational:
        if not has:
            raise UsageError("the pairs are conversational (lists of messages), and the tokenizer has no chat template "
                             "to render them: give plain-text pairs, or a --tokenizer with a chat template")
        return pairs, True
    if not (has and use):
        return pairs, False
    return [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs], True
