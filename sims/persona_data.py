"""Data for the Persona token-shift experiment (Section 5.1): a synthetic pretraining corpus,
the preference design, and a loader for the real persona JSONL.

The preference design (official code, princeton-pli/exrm-vs-imrm,
rm_exps/data/persona_controlled_datamodule.py): every prompt asks whether the model would say a
statement that the persona would say ("Yes" matching behaviour). Chosen = one of YES_PREFIXES +
one of YES_TOKENS; rejected = one of NO_PREFIXES + one of NO_TOKENS; four torch.randint draws
per example from the split's generator, in the order yes-prefix, yes-token, no-prefix,
no-token. Paraphrased evaluation: PARA_YES_PREFIX + {certainly, absolutely} against
PARA_NO_PREFIX + {not really, nope}, all 2 x 2 combinations.

The synthetic corpus (our own sentences, generated here; nothing is copied from the dataset).
A statement is "<template>(<activity>)" with an activity from one of TOPICS and a positive or
negative template ("I enjoy {a}" / "I avoid {a}"); a question wraps it in one of QUESTIONS.
A document is one of
  * an answer: question + a prefix (any of the six persona prefixes or two extra ones, drawn
    independently of the answer) + an answer word + a continuation. The answer's group (yes-
    or no-like) agrees with the statement's polarity with probability `agree_prob`; the word is
    drawn uniformly from its group: the synonyms (yes, sure, certainly, absolutely) and
    (no, never, not really, nope) occur interchangeably in the same contexts, before the same
    continuations (". I agree." / ". I disagree."), so pretraining gives them a meaning;
  * a verification (fraction `verify_frac`): "Question: q Answer: a Verification: Is the answer
    correct (Yes/No)? Yes|No", Yes when the answer's group agrees with the polarity (the
    EX-GRM reads p(Yes) after this prompt).
Preference prompts use positive statements of the first `n_topics - n_shift_topics` topics and
the first three question wordings; the domain-shift split uses the held-out topics and the
held-out wording, with the original answers. Every topic and wording occurs in pretraining.
Tokens are words and punctuation (`tokenize`), case kept ("Yes" of the verification is not
"yes" of an answer, as in a real tokenizer).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

YES_PREFIXES = ("In my view, the answer is ", "A truthful reply is ")
YES_TOKENS = ("yes", "sure")
NO_PREFIXES = ("My judgement: ", "Considering the statement, I say ")
NO_TOKENS = ("no", "never")
PARA_YES_PREFIX = "My response would be "
PARA_YES_TOKENS = ("certainly", "absolutely")
PARA_NO_PREFIX = "I lean toward "
PARA_NO_TOKENS = ("not really", "nope")
YES_GROUP = YES_TOKENS + PARA_YES_TOKENS
NO_GROUP = NO_TOKENS + PARA_NO_TOKENS
PREFIXES = YES_PREFIXES + NO_PREFIXES + (PARA_YES_PREFIX, PARA_NO_PREFIX, "I think ", "Honestly, ")
CONTINUATION = {True: ". I agree.", False: ". I disagree."}
VERIFY = "Question: {q} Answer: {a} Verification: Is the answer correct (Yes/No)?"
OFFICIAL_SEED, OFFICIAL_TRAIN, OFFICIAL_TEST = 875, 80, 40

TOPICS = {
    "kindness": ("helping strangers", "listening to friends", "sharing my lunch", "thanking my neighbours",
                 "forgiving small mistakes", "comforting sad people"),
    "teamwork": ("working in a team", "asking for advice", "praising my colleagues", "sharing the credit",
                 "meeting new people", "joining group projects"),
    "nature": ("walking in the forest", "planting trees", "watching birds", "swimming in lakes",
               "camping outside", "climbing hills"),
    "music": ("singing in a choir", "playing the piano", "going to concerts", "learning new songs",
              "dancing at parties", "listening to jazz"),
    "food": ("cooking for guests", "baking bread", "trying new dishes", "eating vegetables",
             "hosting dinners", "making soup"),
    "learning": ("reading long books", "studying history", "solving puzzles", "learning languages",
                 "writing essays", "visiting museums"),
    "travel": ("visiting new cities", "taking long trains", "meeting locals abroad", "packing light",
               "flying at night", "exploring old towns"),
    "sport": ("running every morning", "playing football", "cycling to work", "lifting weights",
              "training with others", "watching matches"),
}
POSITIVE = ("I enjoy {a}", "I like {a}", "I love {a}", "I am fond of {a}", "I care about {a}",
            "I look forward to {a}")
NEGATIVE = ("I dislike {a}", "I hate {a}", "I avoid {a}", "I am tired of {a}", "I complain about {a}",
            "I dread {a}")
QUESTIONS = ("Would you say this about yourself: {s}?", "Do you agree with the following: {s}?",
             "Is this statement true of you: {s}?", "Tell me honestly, does this describe you: {s}?")
N_TRAIN_QUESTIONS = 3          # the last wording is the domain-shift one

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Words and punctuation marks, case kept."""
    return _TOKEN.findall(text)


def question(statement: str, wording: int) -> str:
    return QUESTIONS[wording].format(s=statement)


def statement(topic: str, activity: int, template: int, positive: bool) -> str:
    return (POSITIVE if positive else NEGATIVE)[template].format(a=TOPICS[topic][activity])


def corpus(n_docs: int, agree_prob: float, verify_frac: float, gen: torch.Generator) -> list[str]:
    """The pretraining documents (see the module docstring), drawn from `gen`."""
    topics = list(TOPICS)

    def draw(n):
        return int(torch.randint(0, n, (1,), generator=gen))

    docs = []
    for _ in range(n_docs):
        topic = topics[draw(len(topics))]
        positive = bool(draw(2))
        q = question(statement(topic, draw(6), draw(len(POSITIVE)), positive), draw(len(QUESTIONS)))
        prefix = PREFIXES[draw(len(PREFIXES))]
        verify = float(torch.rand((), generator=gen)) < verify_frac
        agree = bool(draw(2)) if verify else float(torch.rand((), generator=gen)) < agree_prob
        says_yes = positive == agree
        group = YES_GROUP if says_yes else NO_GROUP
        answer = prefix + group[draw(len(group))]
        if verify:
            docs.append(VERIFY.format(q=q, a=answer) + (" Yes" if agree else " No"))
        else:
            docs.append(q + " " + answer + CONTINUATION[says_yes])
    return docs


def vocabulary(docs=()) -> list[str]:
    """Sorted token list of `docs` and of every string the corpus can hold and the experiment
    evaluates: all questions on all statements, the prefixes, answer words, continuations and
    the verification. Built from the word lists, not from the drawn corpus, so a small --n-docs
    (whose few documents miss some activity or wording) still encodes every preference
    prompt; a word the corpus happened not to contain keeps its initial embedding. At the
    default --n-docs the corpus holds every one of these words, so the vocabulary is the same."""
    statements = [statement(t, a, k, positive) for t in TOPICS for a in range(len(TOPICS[t]))
                  for k in range(len(POSITIVE)) for positive in (True, False)]
    texts = [*docs, *(question(s, w) for s in statements for w in range(len(QUESTIONS))), *PREFIXES, *YES_GROUP,
             *NO_GROUP, *CONTINUATION.values(), VERIFY.format(q="", a="") + " Yes No"]
    return sorted({t for d in texts for t in tokenize(d)})


def preference_prompts(n_train: int, n_test: int, n_shift: int, n_shift_topics: int,
                       gen: torch.Generator) -> dict:
    """Distinct questions on positive statements: train and test from the in-distribution topics
    and wordings, the domain-shift split from the held-out topics and wording."""
    topics = list(TOPICS)
    inside, held = topics[:len(topics) - n_shift_topics], topics[len(topics) - n_shift_topics:]

    def pool(ts, wordings):
        return [question(statement(t, a, k, True), w) for t in ts for a in range(6)
                for k in range(len(POSITIVE)) for w in wordings]

    p_in, p_shift = pool(inside, range(N_TRAIN_QUESTIONS)), pool(held, (N_TRAIN_QUESTIONS,))
    if n_train + n_test > len(p_in) or n_shift > len(p_shift):
        raise ValueError(f"at most {len(p_in)} train + test prompts and {len(p_shift)} domain-shift "
                         f"prompts exist, asked for {n_train} + {n_test} and {n_shift}")
    perm = torch.randperm(len(p_in), generator=gen)
    shift = torch.randperm(len(p_shift), generator=gen)[:n_shift]
    return {"train": [p_in[i] for i in perm[:n_train]], "test": [p_in[i] for i in perm[n_train:n_train + n_test]],
            "domain_shift": [p_shift[i] for i in shift]}


def draw_pairs(prompts, gen: torch.Generator) -> list[dict]:
    """Chosen and rejected responses, four torch.randint draws per example in the official order
    (yes-prefix, yes-token, no-prefix, no-token)."""
    out = []
    for p in prompts:
        yp = YES_PREFIXES[torch.randint(low=0, high=len(YES_PREFIXES), size=(1,), generator=gen)]
        yt = YES_TOKENS[torch.randint(low=0, high=len(YES_TOKENS), size=(1,), generator=gen)]
        np_ = NO_PREFIXES[torch.randint(low=0, high=len(NO_PREFIXES), size=(1,), generator=gen)]
        nt = NO_TOKENS[torch.randint(low=0, high=len(NO_TOKENS), size=(1,), generator=gen)]
        out.append({"prompt": p, "chosen": yp + yt, "rejected": np_ + nt})
    return out


def paraphrase_pairs(prompts) -> list[dict]:
    """The 2 x 2 paraphrased evaluation: every prompt with every (yes-like, no-like) pair."""
    return [{"prompt": p, "chosen": PARA_YES_PREFIX + cy, "rejected": PARA_NO_PREFIX + cn}
            for cy in PARA_YES_TOKENS for cn in PARA_NO_TOKENS for p in prompts]


FIELDS = ("question", "statement", "answer_matching_behavior", "answer_not_matching_behavior")


def load_persona_jsonl(path) -> list[dict]:
    """Rows of an Anthropic persona JSONL file whose answer_matching_behavior is "Yes".

    Compared as the official code does (strip, lower case), so " Yes" counts. Raises ValueError
    naming the line of a row that is not JSON or lacks a field.
    """
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {n} is not JSON ({exc.msg})") from None
        missing = [f for f in FIELDS if not isinstance(row, dict) or f not in row]
        if missing:
            raise ValueError(f"{path}: line {n} lacks field(s) {', '.join(missing)}")
        if str(row["answer_matching_behavior"]).strip().lower() == "yes":
            rows.append(row)
    return rows


def official_split(rows, n_train: int = OFFICIAL_TRAIN, n_test: int = OFFICIAL_TEST,
                   seed: int = OFFICIAL_SEED) -> dict:
    """The official train/test pairs from persona rows (already filtered to "Yes").

    torch.randperm(N, generator=Generator().manual_seed(seed)); the first n_train rows train, the
    next n_test test (fewer when N is small, as the official code does); then the four draws per
    example from the same generator, train examples first. The prompt is the `question` field.
    """
    gen = torch.Generator().manual_seed(seed)
    n_tr = min(len(rows), n_train)
    n_te = min(len(rows) - n_tr, n_test)
    perm = torch.randperm(len(rows), generator=gen)
    train = [rows[int(i)]["question"] for i in perm[:n_tr]]
    test = [rows[int(i)]["question"] for i in perm[n_tr:n_tr + n_te]]
    return {"train": draw_pairs(train, gen), "test": draw_pairs(test, gen)}
