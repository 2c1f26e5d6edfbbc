"""Time and peak memory of sims.hf's forward pass and Eq. 5."""
from __future__ import annotations

import time

import numpy as np

from sims.hf.model import head_of, run_batches
from sims.hf.pairs import split_responses

def bench(*, hidden: int, layers: int, vocab: int, n_pairs: int, length: int, dtype: str,
          device: str, seed: int = 0) -> dict:
    """Time and peak memory on a random (untied) Llama of the given size: the forward pass that
    `score` and `representations` make per response, and Eq. 5 (`step`'s closed form) for
    n_pairs training pairs against their chosen responses, states included. A reference model
    costs one more forward pass per response; the model's own weights dominate the memory."""
    import resource
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                      num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                      num_key_value_heads=max(1, hidden // 64), tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).to(getattr(torch, dtype)).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(seed)
    half = length // 2
    seqs = [(rng.integers(1, vocab, half).tolist(), rng.integers(1, vocab, half).tolist(),
             rng.integers(1, vocab, half).tolist()) for _ in range(n_pairs)]

    class Tok:  # pre-tokenised pairs: the bench measures the model, not the tokenizer
        pad_token_id, eos_token = 0, None
    times = {}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for group in split_responses(seqs):
        run_batches(model, group, batch_size=8, pad_id=0)
    times["forward_seconds_per_pair"] = (time.perf_counter() - t0) / n_pairs
    from theory.sequences import Seqs
    from theory.dynamics import reward_change_matrix_im
    head = head_of(model)
    t0 = time.perf_counter()
    parts = []
    for group in (split_responses(seqs)[0], *split_responses(seqs)):
        r = run_batches(model, group, batch_size=8, pad_id=0)
        U, hh = head.theory_form(r["h"])
        parts.append(Seqs(hh, r["y"], r["mask"]))
    reward_change_matrix_im(U, *parts, beta=0.01, eta=1e-3, ref_margins=torch.zeros(n_pairs, dtype=U.dtype,
                                                                                      device=U.device))
    times["eq5_seconds"] = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"config": {"hidden": hidden, "layers": layers, "vocab": vocab, "n_pairs": n_pairs,
                       "tokens_per_sequence": 2 * half, "dtype": dtype, "device": device},
            "parameters": n_params, "parameters_billions": n_params / 1e9,
            "peak_memory_gib": peak / 2**30,
            "memory_kind": "torch.cuda.max_memory_allocated" if device.startswith("cuda") else "process max RSS",
            **times}
