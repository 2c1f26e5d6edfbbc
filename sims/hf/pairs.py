"""Preference pairs: reading them, and tokenising them as TRL's DPOTrainer does.

Pairs are `prompt`, `chosen`, `rejected`: strings (TRL's standard format) or lists of
{"role", "content"} messages (TRL's conversational format, rendered with the chat template).
"""
from __future__ import annotations

import json
from pathlib import Path

from sims.cli import UsageError

def read_pairs(path: str) -> list[dict]:
    """Preference pairs from JSON Lines: each line {"prompt", "chosen", "rejected"}, all strings
    or all message lists. UsageError naming the file and line for anything else."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read pairs file {path!r}: {exc.strerror or exc}") from None
    pairs = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{i}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not {"prompt", "chosen", "rejected"} <= row.keys():
            raise UsageError(f"{path}:{i}: needs the keys prompt, chosen and rejected")
        kinds = {_kind(row[k]) for k in ("prompt", "chosen", "rejected")}
        if len(kinds) != 1 or None in kinds:
            raise UsageError(f"{path}:{i}: prompt, chosen and rejected must all be strings or all "
                             f"lists of {{role, content}} messages")
        pairs.append({k: row[k] for k in ("prompt", "chosen", "rejected")})
    if not pairs:
        raise UsageError(f"pairs file {path!r} holds no pairs")
    return pairs


def _kind(value):
    if isinstance(value, str):
        return "text"
    if isinstance(value, list) and value and all(isinstance(m, dict) and {"role", "content"} <= m.keys()
                                                 for m in value):
        return "messages"
    return None


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
    for p in pairs:
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
        if n == 0:
            raise UsageError("a prompt tokenises to nothing shared with its responses: the first "
                             "response token needs a position before it")
        if len(full_c) == n or len(full_r) == n:
            raise UsageError(f"an empty response after tokenisation (prompt {str(p['prompt'])[:40]!r})")
        out.append((full_c[:n], full_c[n:], full_r[n:]))
    return out


def split_responses(encoded):
    """Encoded pairs -> (chosen seqs, rejected seqs) as (prompt, response) lists."""
    return [(p, c) for p, c, _ in encoded], [(p, r) for p, _, r in encoded]
