"""A tiny random Llama written as a GGUF file (nothing downloaded), for sims.hf.sources.

The layout is what llama.cpp's converter writes and transformers reads back: `llama.*`
hyperparameters, a byte-level BPE vocabulary (`tokenizer.ggml.model = gpt2`, SmolLM2's kind)
and tensors named `token_embd`, `blk.N.attn_q`, ..., `output_norm`, `output`. The converter
permutes q and k for llama.cpp's rotary layout and transformers undoes it; random weights do
not care, only shapes do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]         # ids 0, 1, 2: control tokens
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
# byte-level spellings: Ġ is a space, Ċ a newline; " a" is the merge Ġ + a
VOCAB = [*SPECIALS, "Ġ", "Ċ", *LETTERS, *(f"Ġ{c}" for c in LETTERS), ".", "?", ",", ":", "'", "!", "-"]
MERGES = [f"Ġ {c}" for c in LETTERS]
HIDDEN, FFN, HEADS, KV_HEADS = 16, 32, 2, 1
UNSUPPORTED_ARCH = "rmgap-nonesuch"
# Q8_1 is a real ggml type that gguf's de-quantiser does not implement ("not yet implemented")
UNSUPPORTED_QUANT = "Q8_1"


def write(path, *, layers: int = 1, tied: bool = True, dtype: str = "F32", seed: int = 0,
          arch: str = "llama", quant: str | None = None) -> Path:
    """Write a tiny Llama GGUF to `path` and return it. dtype: "F32" or "F16" for the matrices
    (norms stay F32, as llama.cpp writes them). quant: a ggml type name for blk.0.ffn_down, whose
    rows (FFN = 32 values) hold one 32-value block; its bytes are random, so only a type that
    fails to load makes sense here (UNSUPPORTED_QUANT). arch: general.architecture (the keys
    follow it, as llama.cpp names them)."""
    import gguf
    path = Path(path)
    rng = np.random.default_rng(seed)
    float_type = {"F32": np.float32, "F16": np.float16}[dtype]
    V, head_dim = len(VOCAB), HIDDEN // HEADS

    w = gguf.GGUFWriter(path, arch)
    w.add_name("rmgap tiny llama")
    w.add_context_length(64)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(layers)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "F32" else gguf.LlamaFileType.MOSTLY_F16)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(VOCAB)
    w.add_token_types([gguf.TokenType.CONTROL] * len(SPECIALS) + [gguf.TokenType.NORMAL] * (V - len(SPECIALS)))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_add_bos_token(False)

    def matrix(name, rows, cols):                 # (rows, cols) in torch order
        w.add_tensor(name, rng.normal(0.0, 0.5, (rows, cols)).astype(float_type))

    def norm(name):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))

    matrix("token_embd.weight", V, HIDDEN)
    for i in range(layers):
        norm(f"blk.{i}.attn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", HEADS * head_dim, HIDDEN)
        matrix(f"blk.{i}.attn_k.weight", KV_HEADS * head_dim, HIDDEN)
        matrix(f"blk.{i}.attn_v.weight", KV_HEADS * head_dim, HIDDEN)
        matrix(f"blk.{i}.attn_output.weight", HIDDEN, HEADS * head_dim)
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        if i == 0 and quant is not None:
            qtype = gguf.GGMLQuantizationType[quant]
            block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
            assert FFN % block == 0, f"{quant}: a row of {FFN} values is not whole blocks of {block}"
            raw = rng.integers(0, 256, (HIDDEN, FFN // block * nbytes), dtype=np.uint8)
            w.add_tensor(f"blk.{i}.ffn_down.weight", raw, raw_dtype=qtype)
        else:
            matrix(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    norm("output_norm.weight")
    if not tied:
        matrix("output.weight", V, HIDDEN)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
