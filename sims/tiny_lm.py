"""A tiny causal transformer over graph prompts and vertex orders (Section 3.2 miniature).

Tokens: the prompt lists the graph's edges, one token per edge {i, j} (n(n-1)/2 edge tokens,
in a fixed order, padded with PAD to the number of vertex pairs), then a separator; the
response is a vertex order v_1..v_n. Edge tokens make "is {v_k, v} an edge?" one attention
lookup (query v_k, keys the edges that contain it). The next-token head covers the n vertex
tokens: pi(v_k | x, v<k) = softmax(head(h_{x,v<k})); the hidden state after v_n feeds the
EX-RM head. Sequence: [edges (P slots), SEP, v_1 .. v_n]; slot P + k - 1 predicts v_k.
"""
from __future__ import annotations

import torch
from torch import nn

from theory.rewards import ex_rm_reward, ex_rm_reward_scale


def vocab(n: int) -> dict:
    """Token ids: vertices 0..n-1, then one per vertex pair, then PAD and SEP."""
    pairs = n * (n - 1) // 2
    return {"pairs": pairs, "pad": n + pairs, "sep": n + pairs + 1, "size": n + pairs + 2}


def encode(adj: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Token ids (G, P + 1 + n) for adjacency (G, n, n) bool and orders (G, n)."""
    G, n, _ = adj.shape
    voc = vocab(n)
    iu = torch.triu_indices(n, n, 1, device=adj.device)
    present = adj[:, iu[0], iu[1]]                                    # (G, P)
    edge_ids = n + torch.arange(voc["pairs"], device=adj.device)
    # present edges first (stable order), PAD after: a sort on "absent" keeps the edge order
    key = (~present).long() * voc["pairs"] + torch.arange(voc["pairs"], device=adj.device)
    order = torch.argsort(key, dim=1)
    prompt = torch.where(torch.gather(present, 1, order), edge_ids[order], voc["pad"])
    sep = torch.full((G, 1), voc["sep"], dtype=torch.long, device=adj.device)
    return torch.cat([prompt, sep, orders.long()], dim=1)


class TinyLM(nn.Module):
    def __init__(self, n: int, d_model: int, layers: int, heads: int):
        super().__init__()
        self.n, self.P = n, vocab(n)["pairs"]
        self.embed = nn.Embedding(vocab(n)["size"], d_model)
        self.pos = nn.Parameter(torch.zeros(self.P + 1 + n, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n)       # next-vertex logits
        self.value = nn.Linear(d_model, 1)      # EX-RM head on the last hidden state
        nn.init.normal_(self.pos, std=0.02)
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        L = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(L, device=tokens.device)
        return self.norm(self.body(self.embed(tokens) + self.pos[:L], mask=mask, is_causal=True))

    def log_prob(self, adj, orders) -> torch.Tensor:
        """ln pi(order | graph) = sum_k ln pi(v_k | x, v<k).  -> (G,)."""
        P, n = self.P, self.n
        h = self.hidden(encode(adj, orders)[:, : P + n])[:, P:]       # positions predicting v_1..v_n
        logp = torch.log_softmax(self.head(h), dim=-1)
        return logp.gather(-1, orders.long()[..., None])[..., 0].sum(-1)

    def ex_reward(self, adj, orders, with_scale: bool = False):
        """r_EX(x, y) = <u, h_{x,y}> + b on the hidden state after the last vertex.  -> (G,).

        with_scale=True also returns sum_d |u_d h_d| + |b|, which decides ties (theory.tolerance).
        """
        h = self.hidden(encode(adj, orders))[:, -1]                    # (G, d_model)
        u, b = self.value.weight[0], self.value.bias[0]
        r = ex_rm_reward(u, h) + b
        return (r, ex_rm_reward_scale(u, h) + b.abs()) if with_scale else r

    @torch.no_grad()
    def sample(self, adj, generator=None) -> torch.Tensor:
        """One vertex order per graph from pi(. | x).  (G, n)."""
        n, G = self.n, adj.shape[0]
        orders = torch.zeros(G, n, dtype=torch.long, device=adj.device)
        for k in range(n):
            h = self.hidden(encode(adj, orders)[:, : self.P + 1 + k])[:, -1]
            probs = torch.softmax(self.head(h), dim=-1)
            orders[:, k] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return orders
