"""The toolkit's own preference pairs for a real model: persona statements asked through the
model's chat template, answered by one token (sims.statements). `python -m sims.hf step` and
`theorem2` use them when no pairs file is given.

Per topic the first TRAIN_PER_TOPIC statements are training prompts, the rest new prompts.
"""
from __future__ import annotations

TRAIN_PER_TOPIC = 16


def chat_prompts(tokenizer, questions: list[str]) -> list[str]:
    """Each question as the user's turn of the model's chat template, ending with the assistant's
    generation prompt (the answer token follows directly); plain text without a template."""
    if not getattr(tokenizer, "chat_template", None):
        return [f"{q}\nAnswer: " for q in questions]
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                          add_generation_prompt=True) for q in questions]


def prompt_split(train_per_topic: int = TRAIN_PER_TOPIC, per_topic: int | None = None):
    """(training questions, new questions) of the persona statements, split within each topic:
    the first train_per_topic for training, the next up to per_topic (default all) new."""
    from sims import statements
    train, new = [], []
    by_topic: dict[str, list[str]] = {}
    for topic, q in statements.prompts("persona"):
        by_topic.setdefault(topic, []).append(q)
    for qs in by_topic.values():
        train += qs[:train_per_topic]
        new += qs[train_per_topic:per_topic]
    return train, new


def builtin_pairs(tokenizer, split: str, n: int) -> list[dict]:
    """n pairs {prompt, chosen, rejected} (plain text: the prompt is already chat-templated),
    the prompts spread evenly over the topics:
      "train": training prompts, chosen Yes/Sure, rejected No/Never (alternating);
      "heldout": new prompts, the same words;
      "unseen": new prompts, words that never occur in training (Certainly/Indeed, Not/False)."""
    from sims.statements import ANSWERS
    train_q, new_q = prompt_split()
    qs = train_q if split == "train" else new_q
    if not 0 < n <= len(qs):
        raise ValueError(f"n must be in 1..{len(qs)}")
    picked = [qs[round(i * len(qs) / n)] for i in range(n)]
    c_key, r_key = ("unseen_chosen", "unseen_rejected") if split == "unseen" else ("train_chosen", "train_rejected")
    prompts = chat_prompts(tokenizer, picked)
    return [{"prompt": p, "chosen": ANSWERS[c_key][i % 2], "rejected": ANSWERS[r_key][(i // 2) % 2]}
            for i, p in enumerate(prompts)]
