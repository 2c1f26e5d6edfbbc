"""A tiny causal word-level LM for the Persona miniature (Section 5.1), and batches of
prompt + response token sequences.

pi(y_k | x, y<k) = softmax(U h_{x,y<k})[y_k] with U = `unembed.weight` (V, D), h the state after
the final LayerNorm (the one the unembedding consumes). `tied=True` makes U the input
embedding matrix itself (GPT-2, Llama-3.2-1B, Qwen2.5): training U then moves the inputs of
every later forward pass, so Assumption 1 fails even when "only the unembedding" trains.
`u` (D,) is the EX-RM head on the last position, r_EX = <u, h_{x,y}> (no bias: it cancels in
every margin).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sims.persona_data import tokenize
from theory.sequences import Seqs


class WordLM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, layers: int, heads: int, max_len: int, tied: bool):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(max_len, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, vocab_size, bias=False)
        if tied:
            self.unembed.weight = self.embed.weight
        self.u = nn.Parameter(torch.zeros(d_model))
        self.tied = tied

    @property
    def U(self) -> torch.Tensor:
        return self.unembed.weight                                       # (V, D)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """h at every position.  tokens (N, L) -> (N, L, D)."""
        L = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(L, device=tokens.device, dtype=self.pos.dtype)
        return self.norm(self.body(self.embed(tokens) + self.pos[:L], mask=mask, is_causal=True))


class Vocab:
    def __init__(self, tokens: list[str]):
        self.tokens = ["<pad>", *tokens]
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self):
        return len(self.tokens)

    def ids(self, text: str) -> list[int]:
        try:
            return [self.index[t] for t in tokenize(text)]
        except KeyError as exc:
            raise ValueError(f"token {exc.args[0]!r} is not in the vocabulary") from None


@dataclass
class Batch:
    """N sequences prompt + response, right-padded: tokens (N, L); p_len, r_len (N,)."""
    tokens: torch.Tensor
    p_len: torch.Tensor
    r_len: torch.Tensor

    def __len__(self):
        return self.tokens.shape[0]

    def select(self, idx) -> "Batch":
        t = self.tokens[idx]
        L = int((self.p_len[idx] + self.r_len[idx]).max())
        return Batch(t[:, :L], self.p_len[idx], self.r_len[idx])

    def response_index(self):
        """Positions predicting each response token and the tokens: (N, K) each, and mask."""
        K = max(int(self.r_len.max()), 1)
        k = torch.arange(K)
        mask = k[None, :] < self.r_len[:, None]
        pos = torch.where(mask, self.p_len[:, None] - 1 + k[None, :], 0)
        y = torch.where(mask, self.tokens.gather(1, torch.where(mask, pos + 1, 0)), 0)
        return pos, y, mask


def encode(vocab: Vocab, prompts, responses) -> Batch:
    """Token batch of prompt + response for each pair (response may be "")."""
    p = [vocab.ids(x) for x in prompts]
    r = [vocab.ids(y) for y in responses]
    L = max(len(a) + len(b) for a, b in zip(p, r))
    tokens = torch.zeros(len(p), L, dtype=torch.long)
    for i, (a, b) in enumerate(zip(p, r)):
        tokens[i, :len(a) + len(b)] = torch.tensor(a + b)
    return Batch(tokens, torch.tensor([len(a) for a in p]), torch.tensor([len(b) for b in r]))


def response_seqs(model: WordLM, batch: Batch) -> Seqs:
    """Hidden states at the positions predicting the response tokens (prompt masked)."""
    h = model.hidden(batch.tokens)                                       # (N, L, D)
    pos, y, mask = batch.response_index()
    hk = h.gather(1, pos[..., None].expand(-1, -1, h.shape[-1]))          # (N, K, D)
    return Seqs(hk * mask[..., None].to(h.dtype), y, mask)


def sequence_log_probs(model: WordLM, batch: Batch) -> torch.Tensor:
    """ln pi(y|x) = sum over response tokens.  -> (N,)."""
    s = response_seqs(model, batch)
    logp = torch.log_softmax(s.h @ model.U.T, dim=-1)
    return (logp.gather(-1, s.y[..., None])[..., 0] * s.mask).sum(-1)


def last_hidden(model: WordLM, batch: Batch) -> torch.Tensor:
    """h_{x,y}: the state at the last real position.  -> (N, D)."""
    h = model.hidden(batch.tokens)
    last = batch.p_len + batch.r_len - 1
    return h[torch.arange(len(batch)), last]


def next_token_log_probs(model: WordLM, batch: Batch) -> torch.Tensor:
    """ln pi(. | whole sequence), at the last real position.  -> (N, V)."""
    return torch.log_softmax(last_hidden(model, batch) @ model.U.T, dim=-1)
