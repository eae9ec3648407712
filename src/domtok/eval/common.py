"""What every evaluation shares: loading the model, sharding over torchrun ranks, writing results.

Sharding is by *batch*, not by item: the items are cut into the batches a single process
would run, and rank r runs batches r, r + world, ... So every batch holds exactly the same
prompts (same padding, same shapes) whatever the number of processes, and the gathered
results are identical to a one-process run -- not merely close (a different batch mix would
change padding and, with it, the last bits of the logits and sometimes a greedy argmax).

Output of every benchmark (only rank 0 writes):
    out_dir/items.jsonl    one JSON object per item, in dataset order, always with `id`
    out_dir/summary.json   {"benchmark", "model", "n", "seed", "config_hash", "metrics", "ci", "wall_time_s",
                            "versions": {domtok, torch, transformers, git_commit, git_dirty}, ...}
    out_dir/config.yaml    the resolved config and its hash
    out_dir/manifest.json  written last, after `run` returns, by the pipeline or the verb (domtok.manifest)
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from domtok.config import atomic_write_json, config_hash, save_resolved
from domtok.errors import DomtokError
from domtok.utils import DistInfo, provenance, write_jsonl


def load_eval_model(model_dir: str, device: str, condition: str | None = None):
    """(model in eval mode, tokenizer) from a domtok or Hugging Face GPT-2 directory, or a Hub
    model id (`user/name`, downloaded into the HF cache). `condition` names the tokenizer of a
    GPT-2 dir whose files do not say (the reference study's models) and must agree with a
    dir that does."""
    from domtok.model.source import resolve_model
    from domtok.model.checkpoint import load_model

    if not model_dir:
        raise DomtokError("no model given; pass --model DIR (a domtok model dir, a Hugging Face GPT-2 dir or a "
                          "Hub model id user/name)")
    model_dir = resolve_model(model_dir)
    if not Path(model_dir).is_dir():
        raise DomtokError(f"{model_dir}: model directory not found; pass --model DIR of a saved model")
    model, tokenizer = load_model(model_dir, device=device, condition=condition)
    if tokenizer is None:
        raise DomtokError(f"{model_dir}: the model dir has no tokenizer files; re-save it with its tokenizer "
                          "(domtok tokenizer fix)")
    model.eval()
    return model, tokenizer


def check_subset(cfg, where: str) -> None:
    """`n` (a seeded random subset) and `limit` (the first N items) are two ways to shorten a
    benchmark: one at a time, each >= 0."""
    n, limit = getattr(cfg, "n", 0), getattr(cfg, "limit", 0)
    if n < 0 or limit < 0:
        raise DomtokError(f"{where}: n is {n}, limit is {limit}; give a number of items >= 1 (or 0 for all)")
    if n and limit:
        raise DomtokError(f"{where}: both n ({n}, a seeded random subset) and limit ({limit}, the first items) "
                          "are set; give one")


def eval_dtype(device: str, name: str = "auto"):
    """Autocast dtype for evaluation: bf16 on CUDA by default ("auto"); on CPU none unless
    "bfloat16" is asked for (CPU autocast); float16 needs CUDA."""
    import torch

    if name not in ("auto", "float32", "bfloat16", "float16"):
        raise DomtokError(f"dtype {name!r}: use auto, float32, bfloat16 or float16")
    if name == "float32":
        return None
    if not str(device).startswith("cuda"):
        if name == "float16":
            raise DomtokError(f"dtype float16 needs a CUDA device (device is {device}); use bfloat16 or float32 on CPU")
        return torch.bfloat16 if name == "bfloat16" else None
    return torch.float16 if name == "float16" else torch.bfloat16


def eval_engine(cfg, info, engine=None):
    """The generation Engine of an evaluation: `engine` if given (tests pass stubs), else the
    model of `cfg.model` on this rank's device, autocast as `cfg.dtype` says."""
    if engine is not None:
        return engine
    from domtok.engine import Engine

    model, tokenizer = load_eval_model(cfg.model, info.device, getattr(cfg, "condition", None))
    return Engine(model, tokenizer, device=info.device, dtype=eval_dtype(info.device, cfg.dtype))


def generation_fields(g) -> dict:
    """Per-item fields every generating benchmark records about how its answer ended."""
    return {"response_tokens": g.num_tokens, "finish_reason": g.finish_reason,
            "prompt_truncated": g.prompt_truncated}


def generation_metrics(rows: list[dict]) -> dict:
    """Summary counts of the rows the model's context cut short: answers stopped at the context
    (`finish_reason: "context"`) and prompts cut from the left to fit it."""
    n = max(1, len(rows))
    return {"context_rate": sum(r["finish_reason"] == "context" for r in rows) / n,
            "prompts_truncated": sum(r["prompt_truncated"] > 0 for r in rows)}


def batches(n_items: int, batch_size: int) -> list[list[int]]:
    """The item indices of each batch a single process would run."""
    if batch_size < 1:
        raise DomtokError(f"batch_size must be >= 1, got {batch_size}")
    return [list(range(s, min(s + batch_size, n_items))) for s in range(0, n_items, batch_size)]


def my_batches(n_items: int, batch_size: int, info: DistInfo) -> list[list[int]]:
    """The batches this rank runs: every world_size-th one, starting at its rank."""
    return batches(n_items, batch_size)[info.rank::info.world_size]


def progress_batches(n_items: int, batch_size: int, info: DistInfo, desc: str):
    """`my_batches`, with a progress line (this rank's items; rank 0 writes it) as each is done."""
    from domtok.progress import Progress

    mine = my_batches(n_items, batch_size, info)
    with Progress(sum(len(b) for b in mine), desc, unit="items", enabled=info.is_main) as bar:
        for b in mine:
            yield b
            bar.update(len(b))


def gather_rows(rows: list[tuple[int, dict]], info: DistInfo) -> list[dict]:
    """(index, row) pairs from every rank -> all rows in index order (on every rank)."""
    if info.distributed:
        import torch.distributed as dist

        parts: list = [None] * info.world_size
        dist.all_gather_object(parts, rows)
        rows = [r for part in parts for r in part]
    rows = sorted(rows, key=lambda t: t[0])
    idx = [i for i, _ in rows]
    if len(set(idx)) != len(idx):
        raise RuntimeError("gather_rows: an item was evaluated twice; the shards overlap")
    return [r for _, r in rows]


def write_results(out_dir: str | Path, benchmark: str, cfg, items: list[dict], metrics: dict, ci: dict,
                  wall_time_s: float, extra: dict | None = None) -> dict:
    """Write items.jsonl, summary.json and config.yaml. Returns the summary. (The manifest that
    marks the directory complete is written after the stage returns: `domtok.manifest`.)"""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h = save_resolved(cfg, out)
    write_jsonl(out / "items.jsonl", items)
    summary = {"benchmark": benchmark, "model": getattr(cfg, "model", ""), "n": len(items),
               "seed": getattr(cfg, "seed", None), "config_hash": h, "metrics": metrics,
               "ci": {k: list(v) for k, v in ci.items()}, "wall_time_s": round(wall_time_s, 3),
               "versions": provenance()}
    summary.update(extra or {})
    atomic_write_json(out / "summary.json", summary)
    return summary


def default_out_dir(benchmark: str, cfg) -> Path:
    return Path("runs") / "eval" / f"{benchmark}-{config_hash(cfg)}"


# ---- repetition: the degenerate loops small models fall into ----

_WORD = re.compile(r"\S+")


def is_repetitive(text: str, ngram: int = 6, min_ngram_repeats: int = 3, min_line_chars: int = 15) -> bool:
    """True if a word n-gram occurs `min_ngram_repeats`+ times or a non-trivial line repeats.

    A worked GSM8K solution repeats short phrases legitimately ("= $"), so the flag needs a
    6-word sequence three times, or the same line (>= 15 characters) twice -- the loops that
    eat the 256-token budget, not style.
    """
    lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) >= min_line_chars]
    if any(c >= 2 for c in Counter(lines).values()):
        return True
    words = _WORD.findall(text)
    grams = Counter(tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1))
    return any(c >= min_ngram_repeats for c in grams.values())
