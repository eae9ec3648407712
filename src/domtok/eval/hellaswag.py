"""HellaSwag: pick the most likely of four endings, by the log-likelihood of the ending tokens.

Each (context, ending) pair is one row: context ids + ending ids; only the ending tokens are
scored. Rows of several items (4 endings each) go through the model together, right-padded:
with causal attention a token never sees what comes after it, so padding at the end changes
no score (the tests check batched == one-at-a-time to 1e-5).

Three accuracies from the same log-probabilities:
    acc             argmax of the summed log-prob of the ending
    acc_norm_token  argmax of the MEAN log-prob per ending token (build-nanogpt; GPT-2 124M: 0.2955)
    acc_norm_char   argmax of summed log-prob / characters of the ending (lm-evaluation-harness;
                    independent of the tokenizer, so the one to compare conditions with)

Two ways to build the text:
    raw      build-nanogpt: context = `ctx`, ending = " " + ending
    harness  lm-evaluation-harness: context = preprocess(`activity_label: ctx_a ctx_b.capitalize()`),
             ending = " " + preprocess(ending); preprocess turns " [title]" into ". ", drops
             bracket artefacts like "[header]" and double spaces.
Context and ending are tokenized separately and concatenated (as build-nanogpt does), so the
ending's tokens are the same whatever context precedes it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from contextlib import nullcontext

import torch

from domtok.errors import DomtokError

STYLES = ("raw", "harness")


def preprocess(text: str) -> str:
    """lm-evaluation-harness's HellaSwag cleaning of WikiHow/ActivityNet artefacts."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    text = text.replace("  ", " ")
    return text


def render(item: dict, style: str = "raw") -> tuple[str, list[str]]:
    """(context, endings) as scored; each ending includes its leading space."""
    if style == "raw":
        return item["ctx"], [" " + e for e in item["endings"]]
    if style == "harness":
        ctx = item.get("ctx_a", item["ctx"]) + " " + item.get("ctx_b", "").capitalize()
        return preprocess(item.get("activity_label", "") + ": " + ctx), [" " + preprocess(e) for e in item["endings"]]
    raise DomtokError(f"unknown HellaSwag style {style!r}; choose raw or harness")


def encode_item(item: dict, tokenizer, style: str, block_size: int) -> list[tuple[list[int], int]]:
    """[(ids, n_ending_tokens)] per ending; the context is cut from the left to fit block_size."""
    ctx, endings = render(item, style)
    ctx_ids = list(tokenizer.encode(ctx))
    rows = []
    for e in endings:
        end_ids = list(tokenizer.encode(e))
        if not end_ids:
            raise DomtokError(f"HellaSwag item {item.get('ind', '?')}: an ending encodes to no tokens")
        ids = (ctx_ids + end_ids)[-block_size - 1:]  # keep the ending; +1: the last id is only a target
        rows.append((ids, len(end_ids)))
    return rows


@torch.no_grad()
def score_rows(model, rows: list[tuple[list[int], int]], device, pad_id: int = 0,
               dtype=None) -> list[tuple[float, int]]:
    """(sum log-prob of the ending, number of ending tokens) for each (ids, n_end) row, in one forward."""
    T = max(len(ids) for ids, _ in rows) - 1
    inp = torch.full((len(rows), T), pad_id, dtype=torch.long)
    tgt = torch.full((len(rows), T), -100, dtype=torch.long)
    for r, (ids, n_end) in enumerate(rows):
        L = len(ids) - 1
        inp[r, :L] = torch.tensor(ids[:-1])
        tgt[r, L - n_end:L] = torch.tensor(ids[-n_end:])  # targets only on the ending tokens
    inp, tgt = inp.to(device), tgt.to(device)
    with torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None else nullcontext():
        logits, _ = model(inp)
    logits = logits.float()
    mask = tgt != -100
    # log p(target) = logit[target] - logsumexp(logits): no (B, T, V) log-softmax copy
    tok_lp = (logits.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)) * mask
    sums = tok_lp.double().sum(dim=1).tolist()  # fp64 sum: long endings add up many fp32 terms
    counts = mask.sum(dim=1).tolist()
    return list(zip(sums, counts))


def item_result(item: dict, scores: list[tuple[float, int]], style: str) -> dict:
    """Predictions of the three conventions for one item from its endings' (sum, n_tokens)."""
    _, endings = render(item, style)
    sums = [s for s, _ in scores]
    per_token = [s / n for s, n in scores]
    # harness: completion length in characters of the choice (without its leading delimiter)
    per_char = [s / max(1, len(e) - 1) for (s, _), e in zip(scores, endings)]

    def argmax(v):
        return max(range(len(v)), key=lambda i: (v[i], -i))  # ties: the first ending

    label = item.get("label")
    pred = {"acc": argmax(sums), "acc_norm_token": argmax(per_token), "acc_norm_char": argmax(per_char)}
    row = {"label": label, "pred_sum": pred["acc"], "pred_norm_token": pred["acc_norm_token"],
           "pred_norm_char": pred["acc_norm_char"], "logprobs": sums, "ending_tokens": [n for _, n in scores]}
    if label is not None:
        row.update({k: pred[k] == label for k in pred})
        row["correct"] = row["acc_norm_char"]
    return row


def score_items(model, tokenizer, items: list[dict], device, style: str = "raw",
                items_per_batch: int = 8, dtype=None) -> list[dict]:
    """Per-item results for `items`, batching `items_per_batch` items (x 4 endings) per forward."""
    model = getattr(model, "module", model)  # a DDP-wrapped model: score with the local module
    block = getattr(model, "_orig_mod", model).config.block_size  # torch.compile keeps the GPT here
    pad = getattr(tokenizer, "eot_id", 0)
    out = []
    for s in range(0, len(items), items_per_batch):
        chunk = items[s:s + items_per_batch]
        enc = [encode_item(it, tokenizer, style, block) for it in chunk]
        flat = [r for rows in enc for r in rows]
        scores = score_rows(model, flat, device, pad, dtype)
        k = 0
        for it, rows in zip(chunk, enc):
            out.append(item_result(it, scores[k:k + len(rows)], style))
            k += len(rows)
    return out


def accuracies(rows: list[dict]) -> dict:
    lab = [r for r in rows if r.get("label") is not None]
    if not lab:
        return {"n": 0}
    return {"acc": sum(r["acc"] for r in lab) / len(lab),
            "acc_norm_token": sum(r["acc_norm_token"] for r in lab) / len(lab),
            "acc_norm_char": sum(r["acc_norm_char"] for r in lab) / len(lab), "n": len(lab)}


def hellaswag_accuracy(model, tokenizer, items: list[dict], device, style: str = "raw",
                       items_per_batch: int = 8, dtype=None) -> dict:
    """Hook for the pretraining loop: {"acc", "acc_norm_token", "acc_norm_char", "n"} on `items`.

    Puts the model in eval mode for the call and restores its previous mode.
    """
    was_training = model.training
    model.eval()
    try:
        return accuracies(score_items(model, tokenizer, items, device, style, items_per_batch, dtype))
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------- the evaluation

@dataclass
class HellaSwagEvalConfig:
    model: str = ""                 # domtok model dir, Hugging Face GPT-2 dir or Hub model id (user/name)
    condition: str | None = None    # the tokenizer of a GPT-2 dir whose files do not say (reference models)
    data: str | None = None         # local jsonl/dir in the original schema; None = hub Rowan/hellaswag
    split: str = "validation"
    max_bad_fraction: float = 0.01  # malformed records of a local file tolerated before failing
    n: int = 0                      # 0 = all (10,042 in validation); else a seeded subset
    limit: int = 0                  # 0 = off; else the first N items in dataset order (lm-eval's --limit)
    seed: int = 0
    style: str = "raw"              # raw (build-nanogpt) | harness (lm-evaluation-harness)
    batch_size: int = 8             # items per forward (x 4 endings)
    device: str = "auto"
    dtype: str = "auto"             # bf16 autocast on CUDA, fp32 on CPU; or float32 / bfloat16 / float16


def load_items(cfg: HellaSwagEvalConfig) -> list[dict]:
    from domtok.data.sources import load_hellaswag, sample_records

    records = [dict(r, _index=i) for i, r in enumerate(load_hellaswag(cfg.split, cfg.data,
                                                                                    max_bad_fraction=cfg.max_bad_fraction))]
    if not records:
        raise DomtokError(f"{cfg.data or 'hub:Rowan/hellaswag'}: no HellaSwag records in split {cfg.split!r}")
    if cfg.n and cfg.n < len(records):
        records = sample_records(records, cfg.n, cfg.seed)
    if cfg.limit:
        records = records[:cfg.limit]
    return records


def run(cfg: HellaSwagEvalConfig, out_dir, model=None, tokenizer=None) -> dict:
    """Evaluate on HellaSwag; writes items.jsonl + summary.json (rank 0) and returns the summary."""
    from domtok.eval.common import check_subset

    check_subset(cfg, "HellaSwag eval")
    from domtok.eval.common import eval_dtype, gather_rows, load_eval_model, progress_batches, write_results
    from domtok.eval.stats import wilson_ci
    from domtok.utils import dist_setup

    if cfg.style not in STYLES:
        raise DomtokError(f"unknown HellaSwag style {cfg.style!r}; choose raw or harness")
    t0 = time.time()
    info = dist_setup(cfg.device)
    if model is None:
        model, tokenizer = load_eval_model(cfg.model, info.device, cfg.condition)
    model.eval()
    items = load_items(cfg)
    rows = []
    for batch in progress_batches(len(items), cfg.batch_size, info, "hellaswag"):
        chunk = [items[i] for i in batch]
        res = score_items(model, tokenizer, chunk, info.device, cfg.style, items_per_batch=cfg.batch_size,
                          dtype=eval_dtype(info.device, cfg.dtype))
        for i, it, r in zip(batch, chunk, res):
            ident = it.get("ind", it["_index"])
            rows.append((i, {"id": f"{cfg.split}-{ident}", "benchmark": "hellaswag", **r}))
    out = gather_rows(rows, info)
    if not info.is_main:
        return {}
    acc = accuracies(out)
    n = acc.pop("n")
    if n == 0:
        raise DomtokError(f"{cfg.data}: no labelled items in split {cfg.split!r}; use the validation split")
    ci = {k: wilson_ci(round(v * n), n) for k, v in acc.items()}
    return write_results(out_dir, "hellaswag", cfg, out, acc, ci, time.time() - t0,
                         extra={"style": cfg.style, "world_size": info.world_size, "n_labelled": n})
