"""Time and peak memory of sims.hf's forward pass, Eq. 5 and the exact tangent, on any model."""
from __future__ import annotations

import time

import numpy as np

from sims.hf.model import head_of, run_batches
from sims.hf.pairs import split_responses


def random_llama(*, hidden: int, layers: int, vocab: int, dtype: str, device: str, seed: int = 0):
    """A random untied Llama of the given size (for scaling studies: no weights to read)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden,
                      num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                      num_key_value_heads=max(1, hidden // 64), tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).to(getattr(torch, dtype)).to(device).eval()


def bench(model, *, n_pairs: int, length: int, seed: int = 0) -> dict:
    """Time and peak memory of `model` on n_pairs random pairs of `length` tokens (half prompt,
    half response): the forward pass that `score` and `representations` make per response;
    Eq. 5 (`step`'s closed form on lm_head) for the pairs against their chosen responses,
    states included; and, for tied embeddings, the exact tangent that `step` uses instead
    (reverse-mode gradient of the loss plus one forward-mode pass). A reference model costs one
    more forward pass per response; the model's own weights dominate the memory."""
    import torch
    from theory.dynamics import reward_change_matrix_im
    from theory.sequences import Seqs
    from sims.hf.step import tangent_reward_change
    device = str(next(model.parameters()).device)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    vocab = model.get_output_embeddings().weight.shape[0]
    rng = np.random.default_rng(seed)
    half = max(1, length // 2)
    seqs = [(rng.integers(1, vocab, half).tolist(), rng.integers(1, vocab, half).tolist(),
             rng.integers(1, vocab, half).tolist()) for _ in range(n_pairs)]
    head = head_of(model)
    times = {}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss = PeakRSS()
    t0 = time.perf_counter()
    for group in split_responses(seqs):
        run_batches(model, group, batch_size=8, pad_id=0)
    times["forward_seconds_per_pair"] = (time.perf_counter() - t0) / n_pairs
    t0 = time.perf_counter()
    parts = []
    for group in (split_responses(seqs)[0], *split_responses(seqs)):
        r = run_batches(model, group, batch_size=8, pad_id=0)
        U, hh = head.theory_form(r["h"])
        parts.append(Seqs(hh, r["y"], r["mask"]))
    reward_change_matrix_im(U, *parts, beta=0.01, eta=1e-3,
                            ref_margins=torch.zeros(n_pairs, dtype=U.dtype, device=U.device))
    times["eq5_seconds"] = time.perf_counter() - t0
    times["tangent_seconds"] = None
    if head.tied:

        class Tok:  # pre-tokenised pairs: the bench measures the model, not the tokenizer
            pad_token_id, eos_token = 0, None
        t0 = time.perf_counter()
        tangent_reward_change(model, Tok, seqs, split_responses(seqs)[0],
                              torch.zeros(n_pairs, dtype=head.weight.dtype, device=device),
                              beta=0.01, eta=1e-3, params=[head.name])
        times["tangent_seconds"] = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else rss.stop()
    n_params = sum(p.numel() for p in model.parameters())
    return {"config": {"architecture": type(model).__name__, "hidden": model.config.hidden_size,
                       "layers": model.config.num_hidden_layers, "vocab": vocab, "tied_embeddings": head.tied,
                       "n_pairs": n_pairs, "tokens_per_sequence": 2 * half, "dtype": dtype, "device": device},
            "parameters": n_params, "parameters_billions": n_params / 1e9,
            "peak_memory_gib": peak / 2**30,
            "memory_kind": "torch.cuda.max_memory_allocated" if device.startswith("cuda")
            else "peak RSS of the process during the benchmark (sampled every 10 ms)",
            **times}


def load_costs(name: str, gguf_file: str | None, *, dtype: str, device: str) -> dict:
    """Seconds to load a GGUF-sourced model: the first load (de-quantise, rebuild, check, save
    the float32 folder) and a cached load (verify the folder's sha256 manifest, read it), both
    measured in a scratch cache so the user's cache is left as it is. None for other sources."""
    import os
    import tempfile
    from sims.hf.model import load
    from sims.hf.sources import gguf_path
    if gguf_path(name, gguf_file) is None:
        return {"first_load_seconds": None, "cached_load_seconds": None}
    saved = os.environ.get("RMGAP_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RMGAP_CACHE"] = tmp
        try:
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                load(name, dtype=dtype, device=device, gguf_file=gguf_file)
                times.append(time.perf_counter() - t0)
        finally:
            if saved is None:
                os.environ.pop("RMGAP_CACHE")
            else:
                os.environ["RMGAP_CACHE"] = saved
    return {"first_load_seconds": times[0], "cached_load_seconds": times[1]}


class PeakRSS:
    """The largest resident set size of this process from now until stop(), sampled every 10 ms
    by a thread. Not getrusage's ru_maxrss: that is the whole process's lifetime maximum, which
    a benchmark run after something larger in the same process would report as its own."""

    def __init__(self, interval: float = 0.01):
        import os
        import threading
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._peak = self._now()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(interval,), daemon=True)
        self._thread.start()

    def _now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _watch(self, interval):
        while not self._done.wait(interval):
            self._peak = max(self._peak, self._now())

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self._peak, self._now())
