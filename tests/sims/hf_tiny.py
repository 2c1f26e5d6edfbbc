"""Tiny random Hugging Face models and a word-level tokenizer, built locally (nothing downloaded)."""
from __future__ import annotations

import json

import torch

WORDS = ("is the sky blue ? do you agree with this statement : in my view answer a truthful reply "
         "yes sure no never my judgement considering say response would be certainly absolutely "
         "i lean toward not really nope cats dogs are nice good bad maybe").split()


def tokenizer(path):
    """A PreTrainedTokenizerFast over WORDS (whitespace split), with <pad> <unk> <bos> <eos>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *dict.fromkeys(WORDS)])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<bos>", eos_token="<eos>")
    tok.save_pretrained(path)
    return tok


def model(kind: str, *, tied: bool, seed: int, dtype=torch.float32, vocab: int = 64):
    """A tiny random GPT-2 or Llama (untrained; weights drawn from the seed)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    if kind == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=16, n_layer=2, n_head=2,
                         tie_word_embeddings=tied, bos_token_id=2, eos_token_id=3, pad_token_id=0)
        m = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                          tie_word_embeddings=tied, bos_token_id=2, eos_token_id=3, pad_token_id=0)
        m = LlamaForCausalLM(cfg)
    # larger-than-default weights, so that rewards and their changes are far from zero
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.5)
    return m.to(dtype).eval()


def save(m, tok, path):
    m.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


PAIRS = [
    {"prompt": "is the sky blue ?", "chosen": " in my view answer yes", "rejected": " my judgement no"},
    {"prompt": "do you agree with this statement : cats are nice", "chosen": " a truthful reply sure",
     "rejected": " considering say never"},
    {"prompt": "dogs are good", "chosen": " yes", "rejected": " no never"},
    {"prompt": "is this bad ?", "chosen": " sure", "rejected": " nope"},
]
PARAPHRASES = [
    {"prompt": "is the sky blue ?", "chosen": " my response would be certainly", "rejected": " i lean toward not really"},
    {"prompt": "dogs are good", "chosen": " my response would be absolutely", "rejected": " i lean toward nope"},
    {"prompt": "cats are nice", "chosen": " certainly", "rejected": " not really"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
