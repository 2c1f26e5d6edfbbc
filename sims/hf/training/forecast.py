"""The forecast of `sims.hf train --forecast`: before training, which evaluation pairs will the
IM-RM (and the EX-RM) get wrong; after it, how good that forecast was.

Before: each pair's margin change r(x,y+) - r(x,y-) under the first step of each kind from its
initialisation, on the mean loss over the training pairs, to first order in the learning rate
(its sign does not depend on it), for two steps:
  * "gd": a gradient-descent step, the step of the paper's Eq. 5;
  * "adam": AdamW's first step, which moves every parameter by lr * g / (|g| + eps) (its bias-
    corrected moments are g and g^2): about lr times the sign of its gradient, the step the
    run's optimiser takes first. The two can disagree on a pair.
What moves:
  * IM-RM, the unembedding alone with the states fixed (Assumption 1; Eq. 5 for "gd"), where the
    model's embeddings are untied or the run holds the input embedding (--variant
    im=unembedding:hold); where the tied matrix trains (full fine-tuning, unembedding:train,
    top_k of a tied model) the exact tangent over the tied matrix, by autograd through the
    model (sims.hf.step), since Eq. 5 on lm_head alone is not that step's first order.
  * EX-RM, the head u alone from u = 0 on the last-token states.
A pair is flagged when its predicted change is negative: the step pushes it the wrong way.
The screen names each pair by its set and place in the set's file ("para line 4", from
sims.hf.places), with its predicted margin change, before training
(`flagged_lines`) and after it (`outcome_lines`: which flagged pairs ended wrong, and which
pairs ended wrong unflagged).
Training pairs with chosen == rejected have an exactly zero gradient; they are left out.

After: per kind, seed and evaluation set, every pair's final margin (from the last checkpoint),
whether training moved it in each step's predicted direction, whether it ended wrong (margin
<= 0: a tie is not a correct ranking), and for each step
  recall    = flagged pairs that ended wrong / pairs that ended wrong,
  precision = flagged pairs that ended wrong / flagged pairs,
beside a trivial baseline that flags a pair when one of its responses shares no token with the
training responses. Tokens in every training response (a chat template's end of turn and
newline) and special tokens are left out of that overlap: they say nothing about content.
"""
from __future__ import annotations

FORECAST_KINDS = ("ex", "im")
STEPS = ("gd", "adam")
ADAM_EPS = 1e-8          # torch.optim.AdamW's default, which the engine uses


def _adam(g):
    """AdamW's first step direction (per unit lr) for gradient g."""
    return g / (g.abs() + ADAM_EPS)


def _im_head_only(model, seqs_train, seqs_eval, n_train, beta, pad, batch_size):
    """Per evaluation sequence, the first-order change of beta ln pi(y|x) per unit lr when lm_head
    alone moves (states fixed), along -grad (gd) and AdamW's first step (adam)."""
    import torch

    from sims.hf.model import head_of, run_batches
    head = head_of(model)
    parts = [run_batches(model, s, batch_size=batch_size, pad_id=pad) for s in (seqs_train, seqs_eval)]
    U0, _ = head.theory_form(parts[0]["h"][:1])
    U = U0.double().requires_grad_(True)

    def logp(r, rows):
        _, hh = head.theory_form(r["h"][rows])
        z = torch.log_softmax(hh.double() @ U.T, -1)
        return (z.gather(-1, r["y"][rows, :, None])[..., 0] * r["mask"][rows]).sum(-1)

    # the mean DPO loss at initialisation (policy = reference, every margin 0): its gradient is
    # -(beta / 2) * mean_i grad(ln pi(y+_i) - ln pi(y-_i))
    g = torch.zeros_like(U)
    for s in range(0, n_train, batch_size):         # one batch's graph at a time: (B, L, V) logits each
        rows = torch.arange(s, min(s + batch_size, n_train))
        loss = -beta / 2 * (logp(parts[0], rows) - logp(parts[0], rows + n_train)).sum() / n_train
        g += torch.autograd.grad(loss, U)[0]
    out = {}
    with torch.no_grad():
        for step, d in (("gd", -g), ("adam", -_adam(g))):
            r, changes = parts[1], []
            for s in range(0, r["y"].shape[0], batch_size):
                _, hh = head.theory_form(r["h"][s:s + batch_size])
                hh = hh.double()
                p = torch.softmax(hh @ U.T, -1)
                t = hh @ d.T                                  # the change of every logit
                dl = t.gather(-1, r["y"][s:s + batch_size, :, None])[..., 0] - (p * t).sum(-1)
                changes.append(beta * (dl * r["mask"][s:s + batch_size]).sum(-1))
            out[step] = torch.cat(changes)
    return out


def _im_tied(model, tokenizer, train, seqs_eval, beta, pad, batch_size):
    """The same where the tied matrix trains: the exact tangent by autograd through the model."""
    import torch

    from sims.hf.model import head_of, run_batches
    from sims.hf.pairs import split_responses
    from sims.hf.step import loss_gradients, tangent_reward_change
    head = head_of(model)
    lp = [run_batches(model, g, batch_size=batch_size, pad_id=pad, states=False)["logp"].sum(-1)
          for g in split_responses(train)]
    common = {"beta": beta, "params": [head.name], "batch_size": batch_size}
    (g,) = loss_gradients(model, tokenizer, train, (lp[0] - lp[1]).to(head.weight.dtype), **common)
    return {step: tangent_reward_change(model, tokenizer, train, seqs_eval, None, eta=1.0, grads=[d], **common)
            .double().cpu() for step, d in (("gd", g), ("adam", _adam(g)))}


def _ex(model, train, seqs_eval, pad, batch_size):
    """The EX-RM's margin-change direction per evaluation sequence: from u = 0 every pair's
    sigmoid is 1/2, so grad_u L = -mean_i (h+_i - h-_i) / 2."""
    from sims.hf.model import run_batches
    from sims.hf.pairs import split_responses
    hl = [run_batches(model, s, batch_size=batch_size, pad_id=pad)["h_last"].double()
          for s in (*split_responses(train), seqs_eval)]
    g = -(hl[0] - hl[1]).mean(0) / 2
    return {"gd": hl[2] @ -g, "adam": hl[2] @ -_adam(g)}


def forecast(model, tokenizer, sets: dict, *, kinds, beta: float, hold_input_embedding: bool = False,
             batch_size: int = 8) -> dict:
    """Predicted first-step margin changes (per unit lr) per set ({name: [(prompt, chosen,
    rejected) ids]}, "train" the training pairs) for the kinds asked, and the baseline's flags."""
    import torch

    from sims.hf.model import head_of, pad_token_id
    from sims.progress import progress
    kinds = [k for k in FORECAST_KINDS if k in kinds]
    pad = pad_token_id(tokenizer)
    head = head_of(model)
    train = [(p, c, r) for p, c, r in sets["train"] if c != r]
    names = list(sets)
    pairs = [p for n in names for p in sets[n]]
    seqs_eval = [s for p, c, r in pairs for s in ((p, c), (p, r))]           # chosen, rejected, per pair
    tied_route = head.tied and not hold_input_embedding
    if "im" in kinds and not tied_route and not head.linear:
        from sims.cli import UsageError
        raise UsageError("--forecast: the head-only IM-RM step needs logits linear in lm_head, and this model's head "
                         "has a soft-cap; drop --forecast or train the tied matrix")
    method = {"im": ("the exact tangent over the tied embedding matrix (autograd through the model)" if tied_route
                     else "lm_head alone, the states fixed (Eq. 5's closed form for gd)"),
              "ex": "the head u alone, from u = 0, on the last-token states"}
    tick = progress("forecast", len(kinds))
    change = {}
    for i, kind in enumerate(kinds, 1):
        if not train:
            change[kind] = {s: torch.zeros(len(seqs_eval), dtype=torch.float64) for s in STEPS}
        elif kind == "ex":
            change[kind] = _ex(model, train, seqs_eval, pad, batch_size)
        elif tied_route:
            change[kind] = _im_tied(model, tokenizer, train, seqs_eval, beta, pad, batch_size)
        else:
            chosen = [(p, c) for p, c, _ in train]
            rejected = [(p, r) for p, _, r in train]
            change[kind] = _im_head_only(model, chosen + rejected, seqs_eval, len(train), beta, pad, batch_size)
        tick(i)
    special = set(tokenizer.all_special_ids)
    responses = [set(y) for _, c, r in sets["train"] for y in (c, r)]
    framing = set.intersection(*responses) | special
    seen = set.union(*responses) - framing
    out, at = {}, 0
    for n in names:
        k = len(sets[n])
        margin = {kind: {s: (change[kind][s][2 * at:2 * (at + k):2] - change[kind][s][2 * at + 1:2 * (at + k):2]).tolist()
                         for s in STEPS} for kind in kinds}
        out[n] = {"margin_change": margin,
                  "baseline_flag": [any(not (set(y) - framing) & seen for y in (c, r)) for _, c, r in sets[n]]}
        at += k
    notes = []
    if len(train) < len(sets["train"]):
        notes.append(f"{len(sets['train']) - len(train)} of the {len(sets['train'])} training pairs have chosen == "
                     f"rejected: their gradient is exactly 0, so they are left out" + ("" if train else
                                                                                       "; nothing moves"))
    return {"kinds": kinds, "method": {k: method[k] for k in kinds},
            "steps": {"gd": "a gradient-descent step (Eq. 5's)",
                      "adam": "AdamW's first step, lr * g / (|g| + eps) per parameter"},
            "sets": out, "notes": notes,
            "baseline": "a response shares no token with the training responses (special tokens and tokens in "
                        "every training response left out)"}


def score(fc: dict, kind: str, history: dict) -> dict:
    """The forecast of `kind` against the end of its training run (the engine's history): per set,
    every pair's outcome and each step's and the baseline's recall and precision."""
    first, last = history["checkpoints"][0]["evals"], history["checkpoints"][-1]["evals"]
    out = {}
    for name, f in fc["sets"].items():
        if name not in last:
            continue
        start = [c - r for c, r in zip(first[name]["chosen"], first[name]["rejected"])]
        end = [c - r for c, r in zip(last[name]["chosen"], last[name]["rejected"])]
        wrong = [m <= 0 for m in end]
        row = {"pairs": len(end), "ended_wrong": sum(wrong),
               "baseline": _recall_precision(f["baseline_flag"], wrong)}
        places = f.get("places") or [f"pair {i + 1}" for i in range(len(end))]
        per_pair = [{"pair": i, "place": at, "final_margin": e, "ended_wrong": w}
                    for i, (e, w, at) in enumerate(zip(end, wrong, places))]
        for step in STEPS:
            predicted = f["margin_change"][kind][step]
            moved = [(e - s) * d > 0 for s, e, d in zip(start, end, predicted)]
            row[step] = {**_recall_precision([d < 0 for d in predicted], wrong),
                         "moved_as_predicted": sum(moved) / len(end)}
            for p, d, mv in zip(per_pair, predicted, moved):
                p[step] = {"predicted": d, "flagged": d < 0, "moved_as_predicted": mv}
        row["per_pair"] = per_pair
        out[name] = row
    return out


def _recall_precision(flagged, wrong) -> dict:
    hit = sum(f and w for f, w in zip(flagged, wrong))
    n_flag, n_wrong = sum(flagged), sum(wrong)
    return {"flagged": n_flag, "caught": hit, "recall": hit / n_wrong if n_wrong else None,
            "precision": hit / n_flag if n_flag else None}


def pooled(scores: dict) -> dict:
    """Per set, each step's and the baseline's recall and precision over all seeds' pairs
    ({seed: score(...)} of one kind)."""
    out = {}
    for name in next(iter(scores.values())):
        rows = [s[name] for s in scores.values()]
        wrong = sum(r["ended_wrong"] for r in rows)
        out[name] = {"pairs": sum(r["pairs"] for r in rows), "ended_wrong": wrong}
        for who in (*STEPS, "baseline"):
            hit, flag = sum(r[who]["caught"] for r in rows), sum(r[who]["flagged"] for r in rows)
            out[name][who] = {"flagged": flag, "caught": hit, "recall": hit / wrong if wrong else None,
                              "precision": hit / flag if flag else None}
    return out


def describe(name: str, kind: str, row: dict) -> str:
    """One line of the printed report ("n/a": nothing to divide by, as in the docs)."""
    def rp(x):
        return "n/a" if x is None else f"{x:.2f}"
    parts = [f"{who} flagged {row[who]['flagged']}, recall {rp(row[who]['recall'])} precision {rp(row[who]['precision'])}"
             for who in (*STEPS, "baseline")]
    return f"  {kind} {name:12} {row['ended_wrong']}/{row['pairs']} wrong; " + "; ".join(parts)


def _label(f, i: int) -> str:
    return (f.get("places") or [f"pair {j + 1}" for j in range(i + 1)])[i]


def flagged_lines(fc: dict, kind: str, step: str = "adam", limit: int = 10) -> list[str]:
    """Before training: per evaluation set, the pairs the `step` forecast flags, by set and place,
    with both steps' predicted margin changes (per unit learning rate), most negative first."""
    out = []
    for name, f in fc["sets"].items():
        if name == "train":
            continue
        mc = f["margin_change"][kind]
        flags = sorted((i for i, d in enumerate(mc[step]) if d < 0), key=lambda i: mc[step][i])
        head = f"  {kind} {name}: {len(flags)} of {len(mc[step])} pairs flagged ({step} step lowers the margin)"
        out.append(head + (":" if flags else ""))
        for i in flags[:limit]:
            out.append(f"    {name} {_label(f, i)}: predicted margin change "
                       + ", ".join(f"{s} {mc[s][i]:+.3g}" for s in STEPS))
        if len(flags) > limit:
            out.append(f"    ... and {len(flags) - limit} more (results.json: forecast.sets.{name})")
    return out


def outcome_lines(fc: dict, kind: str, by_seed: dict, step: str = "adam", limit: int = 10) -> list[str]:
    """After training (score(...) per seed): per evaluation set, every pair that ended wrong in some
    seed or was flagged, by set and place: flagged or missed, and in how many seeds it ended wrong."""
    out = []
    seeds = list(by_seed.values())
    for name in seeds[0]:
        f = fc["sets"][name]
        mc = f["margin_change"][kind][step]
        wrong = [sum(s[name]["per_pair"][i]["ended_wrong"] for s in seeds) for i in range(len(mc))]
        rows = [i for i in range(len(mc)) if wrong[i] or mc[i] < 0]
        if not rows:
            continue
        rows.sort(key=lambda i: (-wrong[i], mc[i]))
        out.append(f"  {kind} {name}: pairs flagged ({step}) or ended wrong:")
        for i in rows[:limit]:
            verdict = ("caught" if mc[i] < 0 else "missed") if wrong[i] else "false alarm"
            out.append(f"    {name} {_label(f, i)}: predicted {mc[i]:+.3g}, ended wrong in {wrong[i]} of "
                       f"{len(seeds)} seed{'' if len(seeds) == 1 else 's'} ({verdict})")
        if len(rows) > limit:
            out.append(f"    ... and {len(rows) - limit} more (results.json: forecast.scores.{kind})")
    return out
