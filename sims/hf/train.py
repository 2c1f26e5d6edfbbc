"""Training reward models from a causal LM (Section 5.1): an EX-RM and an IM-RM from one model,
on the same pairs, loss and optimiser, with the parameters that train chosen along Assumption 1.

  * EX-RM: r(x,y) = <u, h_{x,y}>, u (D,) a linear head (no bias) on the state lm_head consumes at
    the last token of prompt + response: the state TRL's RewardTrainer reads through
    AutoModelForSequenceClassification's `score`. u = 0 at initialisation, so r_EX = 0 there, as r_IM.
  * IM-RM: r(x,y) = beta (sum over response tokens of ln pi_theta - ln pi_ref), prompt masked,
    pi_ref the starting model (its log-probs computed once, before the first step).
  * EX-GRM (the official appendix): r(x,y) = pi_theta("Yes" | v(x,y)), the probability of the
    verdict token after a verification prompt v(x,y) that asks whether y answers x correctly. The
    caller encodes v(x,y) as the response (the pair's prompt is the common prefix of v(x,y+) and
    v(x,y-)), so the verdict is predicted from h_last, the state at its last token, and gives
    TrainConfig.grm_tokens = (Yes, No). Trained by log-likelihood, not Bradley-Terry: the loss is
    the mean of -ln pi("Yes" | v(x,y+)) and -ln pi("No" | v(x,y-)).
  * loss: mean over pairs of -ln sigmoid(r(x,y+) - r(x,y-)) (Bradley-Terry; for the IM-RM it is
    DPO's sigmoid loss). Adam; mini-batches of pairs shuffled by numpy.random.default_rng(seed).

Variants (which parameters train). Assumption 1 (fixed hidden states) holds for the first two:
  HeadOnly()                EX-RM: u alone. The body is frozen: h_{x,y} is computed once.
  Unembedding(tied="hold")  IM-RM and EX-GRM: lm_head alone (weight, and bias where it has one). With tied
                            embeddings "hold" gives lm_head its own copy, so the input embedding
                            keeps its initial value and the states are computed once; "train"
                            trains the tied matrix, so the input embeddings move as in real training
                            (a full forward per step). An untied model is cached either way.
  TopBlocks(k)              the top k transformer blocks and the final norm; EX-RM: and u. IM-RM
                            and EX-GRM: the unembedding stays frozen (tied or not), so what moves is exactly
                            the blocks, i.e. what dropping Assumption 1 means here. The input of
                            block L-k is computed once; a step runs the top k blocks alone.
  Full()                    every parameter (a tied matrix included); EX-RM: and u.

The model stays in eval mode (dropout off, as when the states are read). The caller's model is
never modified: variants that move the model's parameters train a copy, and that copy is the
IM-RM's policy; the caller's model is its reference. tests/sims/test_hf_train.py checks the loss
and rewards against TRL's DPOTrainer and RewardTrainer, the cached variants against plain
forwards, and the partial forward against the full one.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from sims.cli import RunError, UsageError
from sims.hf.model import check_head, collate, head_of, run_batches

KINDS = ("ex", "im", "grm")
NAMES = {"ex": "EX-RMs", "im": "IM-RMs", "grm": "EX-GRMs"}
# decoder stacks whose forward adds nothing to `inputs_embeds` (no embedding scale): the
# cached input of a block can be fed back as inputs_embeds of a model holding the top blocks
PARTIAL_FORWARD_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class HeadOnly:
    """EX-RM: only u trains (Assumption 1)."""
    name: ClassVar[str] = "head"
    kinds: ClassVar[tuple[str, ...]] = ("ex",)


@dataclass(frozen=True)
class Unembedding:
    """IM-RM and EX-GRM: only the unembedding trains (Assumption 1 when the input embedding is held)."""
    name: ClassVar[str] = "unembedding"
    kinds: ClassVar[tuple[str, ...]] = ("im", "grm")
    tied: str = "hold"      # tied embeddings: "hold" the input copy fixed, or "train" the tied matrix

    def __post_init__(self):
        if self.tied not in ("hold", "train"):
            raise UsageError(f"Unembedding(tied=...): 'hold' or 'train', got {self.tied!r}")


@dataclass(frozen=True)
class TopBlocks:
    """The top k blocks and the final norm train (EX-RM: and u; IM-RM, EX-GRM: the unembedding frozen)."""
    name: ClassVar[str] = "top_k"
    kinds: ClassVar[tuple[str, ...]] = ("ex", "im", "grm")
    k: int = 1

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 1:
            raise UsageError(f"TopBlocks(k=...): a positive number of blocks, got {self.k!r}")


@dataclass(frozen=True)
class Full:
    """Every parameter trains."""
    name: ClassVar[str] = "full"
    kinds: ClassVar[tuple[str, ...]] = ("ex", "im", "grm")


def variant_of(spec: str):
    """'head', 'unembedding' (= 'unembedding:hold'), 'unembedding:train', 'top_k:K', 'full'."""
    name, _, arg = spec.partition(":")
    if name == "head" and not arg:
        return HeadOnly()
    if name == "unembedding":
        return Unembedding(arg or "hold")
    if name == "top_k" and arg.isdigit():
        return TopBlocks(int(arg))
    if name == "full" and not arg:
        return Full()
    raise UsageError(f"variant {spec!r}: expected head, unembedding[:hold|:train], top_k:K or full")


def describe(variant) -> dict:
    return {"name": variant.name, **asdict(variant)}


@dataclass(frozen=True)
class TrainConfig:
    """Section 5.1's training. The defaults are the paper's (Adam, lr 1e-6, 50 epochs, effective
    batch 32, beta 0.01); on CPU a caller chooses a larger lr and fewer epochs."""
    lr: float = 1e-6                           # Adam's learning rate
    epochs: int = 50
    batch_size: int = 32                       # pairs per Adam step (the paper's effective batch)
    micro_batch_size: int = 8                  # pairs per forward/backward; gradients accumulate (memory only)
    beta: float = 0.01                         # IM-RM
    seed: int = 0                              # the shuffle (numpy Generator) and torch.manual_seed
    checkpoints: tuple[int, ...] | None = None  # evaluation points in `unit`s, 0 = initialisation; None: start and end
    unit: str = "epoch"                        # "epoch" or "step" (Adam steps)
    eval_batch_size: int = 16                  # sequences per forward when caching and evaluating
    grm_tokens: tuple[int, int] | None = None  # EX-GRM: the token ids of the verdicts (Yes, No)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "micro_batch_size", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UsageError(f"TrainConfig.{name}: a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0 or not self.beta > 0:
            raise UsageError(f"TrainConfig: lr and beta must be positive (got lr={self.lr}, beta={self.beta})")
        if self.unit not in ("epoch", "step"):
            raise UsageError(f"TrainConfig.unit: 'epoch' or 'step', got {self.unit!r}")
        if self.grm_tokens is not None and (len(self.grm_tokens) != 2 or len(set(self.grm_tokens)) != 2):
            raise UsageError(f"TrainConfig.grm_tokens: two different token ids (Yes, No), got {self.grm_tokens!r}")


@dataclass
class RewardModel:
    """What a checkpoint callback sees: the current model (the IM-RM's policy, the EX-GRM's
    verifier, or the EX-RM's body), u (the EX-RM's head, a detached view of the trained tensor;
    None otherwise), beta, the reference model (the caller's own, unchanged) and the EX-GRM's
    verdict tokens."""
    kind: str
    model: object
    u: object
    beta: float
    ref: object
    pad_id: int
    grm_tokens: tuple[int, int] | None = None

    def rewards(self, encoded, *, batch_size: int = 8):
        """(r(x,y+), r(x,y-)) (N,) each, for encoded pairs, by plain forwards of the model (and
        the reference) over every sequence: an independent check on the trained state."""
        import torch
        out = []
        for i in (1, 2):
            seqs = [(p[0], p[i]) for p in encoded]
            r = run_batches(self.model, seqs, batch_size=batch_size, pad_id=self.pad_id, states=self.kind != "im")
            if self.kind == "ex":
                out.append((r["h_last"] @ self.u).double())
            elif self.kind == "grm":
                z = head_of(self.model).logits(r["h_last"]).double()
                out.append(torch.softmax(z, -1)[:, self.grm_tokens[0]])
            else:
                ref = run_batches(self.ref, seqs, batch_size=batch_size, pad_id=self.pad_id, states=False)
                out.append(self.beta * (r["logp"].double().sum(-1) - ref["logp"].double().sum(-1)))
        return tuple(torch.as_tensor(o).cpu() for o in out)


def _gather(H, b):
    """Final states H (B, T, D) -> h (B, L, D) before each response token (0 where masked), h_last
    (B, D) at the last token, with the batch's response tokens and mask."""
    import torch
    rows = torch.arange(H.shape[0], device=H.device)[:, None]
    return H[rows, b.at] * b.mask[..., None], H[rows[:, 0], b.last], b.y, b.mask


class _Cached:
    """The body is frozen: the states lm_head consumes, computed once for every sequence."""

    def __init__(self, model, seqs, pad_id, batch_size):
        r = run_batches(model, seqs, batch_size=batch_size, pad_id=pad_id)
        self.h, self.h_last, self.y, self.mask = r["h"], r["h_last"], r["y"], r["mask"]

    def states(self, idx):
        L = int(self.mask[idx].sum(-1).max())
        return self.h[idx, :L], self.h_last[idx], self.y[idx, :L], self.mask[idx, :L]


class _Forward:
    """A full forward per call, through the model's decoder stack (the one lm_head reads)."""

    def __init__(self, model, seqs, pad_id):
        import torch
        self.model, self.seqs, self.pad_id = model, seqs, pad_id
        self.device = next(model.parameters()).device
        b = collate(seqs[:2], pad_id=pad_id, device=self.device)
        with torch.no_grad():                  # the decoder's output is what lm_head consumes
            h, _, _, mask = _gather(model.base_model(**b.model_inputs()).last_hidden_state, b)
            z = model(**b.model_inputs()).logits[torch.arange(2)[:, None], b.at]
        check_head(head_of(model), h, z, mask, type(model).__name__)

    def states(self, idx):
        b = collate([self.seqs[i] for i in idx.tolist()], pad_id=self.pad_id, device=self.device)
        return _gather(self.model.base_model(**b.model_inputs()).last_hidden_state, b)


def check_top_blocks(model, k: int):
    """The decoder stack (model.model) and its blocks, when `model` can run its top k blocks from
    their cached input; UsageError for architectures that scale inputs_embeds or have no
    model.model.layers, and for k outside 1..L. Callers check before they spend time on states."""
    import torch
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    mtype = getattr(model.config, "model_type", None)
    if mtype not in PARTIAL_FORWARD_TYPES or not isinstance(layers, torch.nn.ModuleList):
        raise UsageError(f"top_k trains a model's top blocks from their cached input, which needs a decoder "
                         f"that feeds inputs_embeds to its first block unchanged ({', '.join(PARTIAL_FORWARD_TYPES)}); "
                         f"{type(model).__name__} ({mtype}) is not one: use the full variant")
    if not 1 <= k <= len(layers):
        raise UsageError(f"top_k: k must be between 1 and the model's {len(layers)} blocks, got {k}")
    return inner, layers


def top_blocks_model(model, k: int):
    """A shallow copy of the decoder stack (model.model) holding its top k blocks, sharing their
    modules (and the final norm) with `model`: fed the input of block L-k as inputs_embeds, it
    computes what the whole stack does (check_top_blocks says which models can)."""
    import torch
    inner, layers = check_top_blocks(model, k)
    top = copy.copy(inner)
    top._modules = dict(inner._modules)         # its own module table; the modules themselves are shared
    top.layers = torch.nn.ModuleList(list(layers)[len(layers) - k:])
    return top


class _TopBlocks:
    """The input of block L-k, computed once per sequence; a call runs the top k blocks alone."""

    def __init__(self, model, seqs, pad_id, k, batch_size):
        import torch
        self.top = top_blocks_model(model, k)
        self.seqs, self.pad_id = seqs, pad_id
        self.device = next(model.parameters()).device
        block = model.model.layers[len(model.model.layers) - k]
        captured = {}

        def hook(module, args, kwargs):
            captured["x"] = args[0] if args else kwargs["hidden_states"]

        handle = block.register_forward_pre_hook(hook, with_kwargs=True)
        self.x = []                                                         # (n_i, D) per sequence
        try:
            with torch.no_grad():
                for s in range(0, len(seqs), batch_size):
                    b = collate(seqs[s:s + batch_size], pad_id=pad_id, device=self.device)
                    H = model.model(**b.model_inputs()).last_hidden_state
                    n = b.attention_mask.sum(-1).tolist()
                    self.x += [captured["x"][i, :n[i]].clone() for i in range(len(n))]
                    if s == 0:       # the partial forward must reproduce the full one
                        mine = self._run(list(range(len(n))), b)
                        real = b.attention_mask.bool()
                        err = float((mine[real] - H[real]).abs().max())
                        eps = torch.finfo(H.dtype).eps
                        if err > 1e3 * eps * (float(H[real].abs().max()) + 1.0):
                            raise RunError(f"{type(model).__name__}: the top {k} blocks fed their cached input do "
                                           f"not reproduce the full forward (max difference {err:.3g})")
        finally:
            handle.remove()

    def _run(self, idx, b):
        import torch
        X = torch.zeros(len(idx), b.input_ids.shape[1], self.x[0].shape[-1], dtype=self.x[0].dtype,
                        device=self.device)
        for j, i in enumerate(idx):
            X[j, :len(self.x[i])] = self.x[i]
        return self.top(inputs_embeds=X, attention_mask=b.attention_mask, position_ids=b.position_ids,
                        use_cache=False).last_hidden_state

    def states(self, idx):
        idx = idx.tolist()
        b = collate([self.seqs[i] for i in idx], pad_id=self.pad_id, device=self.device)
        return _gather(self._run(idx, b), b)


def copy_model(model):
    """A deep copy that computes what `model` does (float64_norms binds its forwards as methods,
    which deepcopy rebinds to the copy; tests/sims/test_hf_train.py checks the copy)."""
    return copy.deepcopy(model)


def _prepare(model, kind, variant, seqs, pad_id, batch_size):
    """(the model that trains, its body, the parameters that train, the head that reads it)."""
    import torch
    if kind not in KINDS:
        raise UsageError(f"kind: 'ex' (explicit reward model), 'im' (implicit) or 'grm' (generative verifier), "
                         f"got {kind!r}")
    if kind not in variant.kinds:
        raise UsageError(f"the {variant.name} variant trains {' or '.join(NAMES[k] for k in variant.kinds)}, "
                         f"not {NAMES[kind]}")
    if isinstance(variant, HeadOnly):
        return model, _Cached(model, seqs, pad_id, batch_size), [], head_of(model)
    work = copy_model(model)
    for p in work.parameters():
        p.requires_grad_(False)
    head = head_of(work)
    if isinstance(variant, Unembedding):
        if head.tied and variant.tied == "hold":        # lm_head gets its own copy; the input embedding stays
            out = work.get_output_embeddings()
            out.weight = torch.nn.Parameter(out.weight.detach().clone(), requires_grad=False)
            work.config.tie_word_embeddings = False
            head = head_of(work)
        params = [head.weight] + ([head.bias] if head.bias is not None else [])
        body = (_Forward(work, seqs, pad_id) if head.tied else _Cached(work, seqs, pad_id, batch_size))
    elif isinstance(variant, TopBlocks):
        body = _TopBlocks(work, seqs, pad_id, variant.k, batch_size)
        params = list(body.top.layers.parameters()) + list(body.top.norm.parameters())
    else:
        body = _Forward(work, seqs, pad_id)
        params = list(work.parameters())
    for p in params:
        p.requires_grad_(True)
    return work, body, params, head


def _verdict_log_probs(h_last, head, tokens):
    """EX-GRM: (ln pi(Yes), ln pi(No)) (B, 2) predicted at the verification prompt's last token."""
    import torch
    z = head.logits(h_last)
    return torch.log_softmax(z.to(torch.promote_types(z.dtype, torch.float32)), -1)[:, list(tokens)]


def _rewards(kind, states, u, head, beta, ref, idx, grm_tokens=None):
    """r (B,) for the sequences idx, and the scale of its rounding (for tie decisions); the
    EX-GRM's scale is its r, p(Yes), itself (its rounding is relative)."""
    import torch
    h, h_last, y, mask = states
    if kind == "ex":
        return h_last @ u, h_last.abs() @ u.abs()
    if kind == "grm":
        p = _verdict_log_probs(h_last, head, grm_tokens)[:, 0].exp()
        return p, p
    z = head.logits(h)
    lp = torch.log_softmax(z.to(torch.promote_types(z.dtype, torch.float32)), -1).gather(-1, y[..., None])[..., 0]
    lp = lp * mask
    return beta * (lp.sum(-1) - ref["sum"][idx]), beta * (lp.abs().sum(-1) + ref["abs"][idx])


def train(model, kind: str, variant, pairs, *, pad_id: int, config: TrainConfig = TrainConfig(),
          evals: dict | None = None, callback=None) -> dict:
    """Train an EX-RM (kind="ex"), an IM-RM (kind="im") or an EX-GRM (kind="grm", whose responses
    are verification prompts, see the module docstring) from `model` on encoded pairs
    [(prompt_ids, chosen_ids, rejected_ids)] (sims.hf.pairs.encode_pairs), training what
    `variant` says, and evaluate at config.checkpoints on every named set of encoded pairs in
    `evals`: the rewards of chosen and rejected, accuracy (ties count 1/2; theory.rewards.accuracy),
    the normalised margin (theory.rewards.normalised_margin; None for one pair), the mean margin
    and the Bradley-Terry loss. callback(record, RewardModel) at each checkpoint may return a
    JSON-ready dict, stored as record["callback"]. Returns the history (plain numbers and lists):
    the config, the variant, the loss of every step's mini-batch (before its update), and the
    checkpoint records. The same seed gives the same history, bit for bit, on one machine."""
    import torch
    from theory.rewards import accuracy, normalised_margin
    cfg, evals = config, dict(evals or {})
    if not pairs:
        raise UsageError("train: no training pairs")
    if (kind == "grm") != (cfg.grm_tokens is not None):
        raise UsageError("TrainConfig.grm_tokens: the EX-GRM needs its verdict tokens (Yes, No), and only it")
    N = len(pairs)
    steps_per_epoch = math.ceil(N / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    points = cfg.checkpoints if cfg.checkpoints is not None else (0, cfg.epochs if cfg.unit == "epoch" else total)
    end = cfg.epochs if cfg.unit == "epoch" else total
    bad = [c for c in points if not isinstance(c, int) or not 0 <= c <= end]
    if bad:
        raise UsageError(f"TrainConfig.checkpoints: {cfg.unit}s between 0 and {end}, got {bad[0]!r}")
    at_step = sorted({c * steps_per_epoch if cfg.unit == "epoch" else c for c in points})

    # every sequence once: training chosen, training rejected, then each evaluation set's
    seqs = [(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs]
    where = {}
    for name, enc in evals.items():
        if not enc:
            raise UsageError(f"evaluation set {name!r} holds no pairs")
        where[name] = (len(seqs), len(enc))
        seqs += [(p, c) for p, c, _ in enc] + [(p, r) for p, _, r in enc]

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    work, body, params, head = _prepare(model, kind, variant, seqs, pad_id, cfg.eval_batch_size)
    device = next(work.parameters()).device
    dtype = next(work.parameters()).dtype
    u = None
    if kind == "ex":   # u = 0: r_EX = 0 at initialisation, like the IM-RM's r = 0 at pi_theta = pi_ref
        u = torch.zeros(work.config.hidden_size, dtype=dtype, device=device, requires_grad=True)
        params = params + [u]

    def all_rewards(lo, hi, ref, beta=cfg.beta):
        out = [[], [], []]
        with torch.no_grad():
            for s in range(lo, hi, cfg.eval_batch_size):
                idx = torch.arange(s, min(s + cfg.eval_batch_size, hi))
                states = body.states(idx)
                r, scale = _rewards(kind, states, u, head, beta, ref, idx.to(device), cfg.grm_tokens)
                out[0].append(r.double().cpu())
                out[1].append(scale.double().cpu())
                if kind == "grm":       # ln p(No), for the verdict log-likelihood the EX-GRM trains on
                    out[2].append(_verdict_log_probs(states[1], head, cfg.grm_tokens)[:, 1].double().cpu())
        return torch.cat(out[0]), torch.cat(out[1]), (torch.cat(out[2]) if out[2] else None)

    def loss_of(idx, n_pairs):
        """The mini-batch's share of the loss: chosen rows first, then rejected."""
        states = body.states(idx)
        if kind == "grm":     # log-likelihood of the verdicts: Yes for the chosen, No for the rejected
            lp = _verdict_log_probs(states[1], head, cfg.grm_tokens)
            c, r = lp.chunk(2)
            return -(c[:, 0].sum() + r[:, 1].sum()) / (2 * n_pairs)
        r, _ = _rewards(kind, states, u, head, cfg.beta, ref, idx.to(device))
        rp, rn = r.chunk(2)
        return -torch.nn.functional.logsigmoid(rp - rn).sum() / n_pairs

    ref = None
    if kind == "im":   # pi_ref = the starting model, its log-probs once (the same code as the policy's)
        zero = {"sum": torch.zeros(len(seqs), device=device), "abs": torch.zeros(len(seqs), device=device)}
        # batched as each evaluation will be, so that r = 0 exactly at initialisation
        regions = [(0, 2 * N)] + [(lo, lo + 2 * n) for lo, n in where.values()]
        s, a = (torch.cat(t) for t in zip(*(all_rewards(lo, hi, zero, beta=1.0)[:2] for lo, hi in regions)))
        lp_dtype = torch.promote_types(dtype, torch.float32)              # log-probs' dtype (exact round trip)
        ref = {"sum": s.to(device, lp_dtype), "abs": a.to(device, lp_dtype)}

    rm = RewardModel(kind, work, None, cfg.beta, model, pad_id, cfg.grm_tokens)
    history = {"kind": kind, "variant": describe(variant), "config": asdict(cfg), "n_train": N,
               "steps_per_epoch": steps_per_epoch, "loss": [], "checkpoints": []}

    def checkpoint(step):
        record = {"step": step, "epoch": step / steps_per_epoch, "evals": {}}
        for name, (lo, n) in where.items():
            r, scale, ln_no = all_rewards(lo, lo + 2 * n, ref)
            rp, rn = r[:n], r[n:]
            acc, tie = accuracy(rp - rn, scale[:n] + scale[n:], "half")
            # the loss each kind trains on: Bradley-Terry, or the EX-GRM's verdict log-likelihood
            loss = (-(rp.log() + ln_no[n:]).mean() / 2 if kind == "grm"
                    else -torch.nn.functional.logsigmoid(rp - rn).mean())
            record["evals"][name] = {
                "accuracy": float(acc), "tie_fraction": float(tie),
                "normalised_margin": float(normalised_margin(rp, rn)) if n > 1 else None,
                "mean_margin": float((rp - rn).mean()), "loss": float(loss),
                "chosen": rp.tolist(), "rejected": rn.tolist()}
        if callback is not None:
            rm.u = u.detach() if u is not None else None
            extra = callback(record, rm)
            if extra is not None:
                record["callback"] = extra
        history["checkpoints"].append(record)

    step = 0
    if at_step and at_step[0] == 0:
        checkpoint(0)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    for _ in range(cfg.epochs):
        order = rng.permutation(N)
        for s in range(0, N, cfg.batch_size):
            batch = order[s:s + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for m in range(0, len(batch), cfg.micro_batch_size):
                mb = torch.as_tensor(batch[m:m + cfg.micro_batch_size])
                idx = torch.cat([mb, mb + N])                     # chosen, then rejected
                loss = loss_of(idx, len(batch))
                loss.backward()
                loss_sum += float(loss.detach())
            opt.step()
            step += 1
            history["loss"].append(loss_sum)
            if step in at_step:
                checkpoint(step)
    for p in params:
        p.requires_grad_(False)
    return history
