"""Pretraining: a GPT-2 model on token shards, one process or many (torchrun), resumable.

    domtok pretrain configs/pretrain-tiny.yaml data_dir=runs/shards/mul_tokens --out runs/pt
    torchrun --nproc_per_node=8 -m domtok pretrain configs/pretrain-gpt2-124m-10b.yaml data_dir=...

The story of one optimizer step: the loader hands this rank its micro-batches of the global
batch (the global batch is the same for any number of processes); each micro-batch runs
forward/backward under autocast, with DDP's gradient all-reduce only on the last one; the
gradients are clipped, AdamW steps at the scheduled learning rate; rank 0 logs one line to
metrics.jsonl. Every `eval_every` steps: validation loss in nats/token and bits per byte, on
whole validation documents (the bytes are those of exactly the text that was scored).
Every `ckpt_every` steps and at the end: a checkpoint that resumes bit for bit (weights,
optimizer, step, data position, RNG states). At the end: `model/` (a native model dir),
`summary.json` (tokens, FLOPs, epochs, documents and bytes read: what a reader needs to check
compute matching). The `manifest.json` that marks the directory complete is written after
`run` returns, by the pipeline or by the verb's `main` (`domtok.manifest`).

Conditions are compute-matched by construction: the model size, vocab size, tokens per step
and steps come from the same preset; the data directory is the only thing that differs. The
loader reads the same documents in the same seeded order in every condition
(`domtok.train.data`), so the domain condition, shorter in tokens, reads further.

A document-matched run (`match_documents`: another condition's shard dir, spec `match:
{documents: OTHER}`) is data-matched instead: it reads exactly the documents that `max_steps`
steps read from those shards, in the same order, for as many steps as that takes at the same
tokens per step (`TrainLoader.document_match`). Its last step is usually partial: it trains on
the tokens left of those documents, the loss a mean over them (every other target of the step
is masked), and its learning-rate schedule runs over its own steps.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from domtok.config import atomic_write_json, config_hash, save_resolved, to_dict
from domtok.errors import DomtokError
from domtok.model.checkpoint import (latest_checkpoint, load_checkpoint, load_tokenizer_from_dir, save_checkpoint,
                                     save_model_dir)
from domtok.train import common
from domtok.progress import Progress
from domtok.data.shards import load_meta
from domtok.train.data import TrainLoader, check_shard_ids, val_data
from domtok.utils import dist_setup, dist_teardown, seed_everything


@dataclass
class PretrainConfig:
    data_dir: str = ""                 # shard dir from `domtok prepare` (train_*.npy, val_*.npy, meta.json)
    model: str = "tiny"                # model preset (domtok.model.gpt.PRESETS)
    n_layer: int | None = None         # optional overrides of the preset's shape
    n_head: int | None = None
    n_embd: int | None = None
    block_size: int | None = None
    dropout: float | None = None
    seq_len: int = 256
    micro_batch_size: int = 16         # windows per forward pass per process
    tokens_per_step: int = 16384       # global batch; grad_accum = tokens_per_step / (micro * seq_len * world)
    max_steps: int = 200
    match_documents: str = ""          # another condition's shard dir: read exactly the documents max_steps
                                       # steps read there, for as many steps as that takes ("" = max_steps)
    lr: float = 3e-3
    min_lr: float = 3e-4               # cosine floor
    warmup_steps: int = 20
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float = 1.0
    eval_every: int = 50               # 0 = only at the end
    eval_batches: int = 8              # val micro-batches per evaluation: the first whole documents that fit; 0 = all
    hellaswag_every: int = 0           # 0 = off; needs domtok.eval.hellaswag
    hellaswag_items: int = 500         # seeded subset of the validation split
    hellaswag_data: str | None = None  # local HellaSwag jsonl/dir; None = hub Rowan/hellaswag
    ckpt_every: int = 100              # 0 = only at the end
    keep_last: int = 2                 # checkpoints kept on disk
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"                # auto = bf16 autocast on CUDA, fp32 on CPU; bfloat16 = autocast on CPU too
    compile: bool = False              # torch.compile (inductor; CPU too, where compiling takes a while)
    # tracking, as transformers' TrainingArguments: none | all | tensorboard | wandb | a list
    report_to: str | list[str] = "none"
    run_name: str | None = None        # the W&B run's name (None = the output dir's name)
    progress: bool = True              # a tqdm bar on a terminal (log lines are written either way: domtok.progress)


def check_config(cfg: PretrainConfig, where: str = "pretrain config") -> None:
    """Counts and rates that must be positive, checked before any data is prepared or written."""
    for key in ("max_steps", "seq_len", "micro_batch_size", "tokens_per_step", "keep_last"):
        if getattr(cfg, key) < 1:
            raise DomtokError(f"{where}: {key}={getattr(cfg, key)} must be >= 1; set {key}=N with N a positive integer")
    for key in ("eval_every", "eval_batches", "ckpt_every"):  # 0 has a meaning here (see the fields)
        if getattr(cfg, key) < 0:
            raise DomtokError(f"{where}: {key}={getattr(cfg, key)} must be >= 0; set {key}=0 or a positive integer")
    if not cfg.lr > 0 or cfg.min_lr < 0 or cfg.warmup_steps < 0:
        raise DomtokError(f"{where}: lr={cfg.lr}, min_lr={cfg.min_lr}, warmup_steps={cfg.warmup_steps}: lr must be > 0, "
                          "min_lr and warmup_steps >= 0")


def grad_accum_steps(cfg: PretrainConfig, world_size: int = 1) -> int:
    """Micro-steps per optimizer step for the whole job (all ranks together)."""
    per_micro = cfg.micro_batch_size * cfg.seq_len
    if cfg.tokens_per_step % (per_micro * world_size):
        raise DomtokError(
            f"tokens_per_step={cfg.tokens_per_step} is not a multiple of micro_batch_size*seq_len*world_size="
            f"{cfg.micro_batch_size}*{cfg.seq_len}*{world_size}={per_micro * world_size}; change one of them")
    return cfg.tokens_per_step // per_micro


def build_model(cfg: PretrainConfig, vocab_size: int):
    from domtok.model.gpt import GPT, config_from_preset

    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout")
             if getattr(cfg, k) is not None}
    mcfg = config_from_preset(cfg.model, vocab_size=vocab_size, **shape)
    if cfg.seq_len > mcfg.block_size:
        raise DomtokError(f"seq_len={cfg.seq_len} exceeds the model's block_size={mcfg.block_size}; "
                          f"lower seq_len or set block_size")
    if mcfg.n_embd % mcfg.n_head:
        raise DomtokError(f"n_embd={mcfg.n_embd} must be divisible by n_head={mcfg.n_head}")
    return GPT(mcfg)


# --- checkpoints ---------------------------------------------------------------------------
# domtok.model.checkpoint writes checkpoints/step_000100/ (model dir + optimizer.pt +
# trainer_state.json + COMPLETE) atomically and keeps the last K. Our trainer_state carries
# the step, the loader position, the RNG states and the resolved config with its hash.

# --- evaluation ----------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model, batches, info, device: str, dtype: str) -> tuple[float, int]:
    """Mean next-token loss (nats) over the scored val targets of all ranks, and their count."""
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with common.autocast(device, dtype):
            _, loss = model(x, y)
        n = int((y != -100).sum())
        total += float(loss) * n
        count += n
    model.train()
    total, count = common.all_reduce_sum([total, float(count)], info, _reduce_device(device))
    return total / max(count, 1.0), int(count)


def _reduce_device(device: str) -> str:
    return device if str(device).startswith("cuda") else "cpu"


def bits_per_byte(loss_nats: float, tokens: int, nbytes: int) -> float | None:
    """Tokenizer-independent loss: the nats summed over `tokens` scored targets, in bits, per
    UTF-8 byte of the original (uninjected) text of exactly those documents."""
    if not tokens or not nbytes:
        return None
    return loss_nats * tokens / (math.log(2) * nbytes)


def hellaswag_hook(cfg: PretrainConfig, device: str, dtype: str):
    """A function model, tokenizer -> {"acc", "acc_norm_token", "acc_norm_char", "n"} on a fixed
    seeded subset of HellaSwag (`hellaswag_data`, or the hub's Rowan/hellaswag)."""
    from domtok.eval import hellaswag

    score = hellaswag.hellaswag_accuracy
    items = hellaswag.load_items(hellaswag.HellaSwagEvalConfig(data=cfg.hellaswag_data, n=cfg.hellaswag_items,
                                                               seed=cfg.seed))
    amp = getattr(torch, dtype) if str(device).startswith("cuda") and dtype != "float32" else None
    return lambda model, tokenizer: score(model, tokenizer, items, device, dtype=amp)


# --- the run -------------------------------------------------------------------------------

def run(cfg: PretrainConfig, out_dir: str | os.PathLike, resume: bool | None = None) -> dict:
    """Train, checkpoint, write model/ and summary.json; returns the summary.

    resume: True = continue from the last complete checkpoint (fresh start if there is none);
    None = the same, the default for pipelines; False = refuse to overwrite existing checkpoints.
    """
    out_dir = Path(out_dir)
    if not cfg.data_dir:
        raise DomtokError("pretrain config: data_dir is empty; set data_dir=PATH to a `domtok prepare` output")
    check_config(cfg)
    info = dist_setup(cfg.device)
    device = info.device
    dtype = common.resolve_dtype(cfg.dtype, device)
    try:
        return _train(cfg, out_dir, info, device, dtype, resume)
    finally:
        dist_teardown()


def _train(cfg, out_dir: Path, info, device: str, dtype: str, resume) -> dict:
    meta = load_meta(cfg.data_dir)
    vocab_size = int(meta["vocab_size"])
    check_shard_ids(cfg.data_dir, vocab_size)  # before the out dir gets anything
    grad_accum = grad_accum_steps(cfg, info.world_size)
    seed_everything(cfg.seed)
    model = build_model(cfg, vocab_size).to(device)
    optimizer = common.configure_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps,
                                           device_type=str(device).split(":")[0])
    loader = TrainLoader(cfg.data_dir, cfg.seq_len, cfg.micro_batch_size, grad_accum, cfg.seed,
                         info.rank, info.world_size)
    max_steps = loader.document_match(cfg.match_documents, cfg.max_steps) if cfg.match_documents else cfg.max_steps
    val = val_data(cfg.data_dir, cfg.seq_len, cfg.micro_batch_size, cfg.eval_batches, info.rank, info.world_size)
    flops_per_token = model.flops_per_token(cfg.seq_len)

    # resume: every rank reads the same checkpoint (the out dir is shared in DDP runs)
    ckpt = latest_checkpoint(out_dir)
    if ckpt is not None and resume is False:
        raise DomtokError(f"{out_dir}: already holds checkpoints; pass --resume to continue or choose another --out")
    start_step, elapsed = 0, 0.0
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer, map_location=device)
        common.check_checkpoint_config(ckpt, state, config_hash(cfg))
        loader.load_state_dict(state["data"])
        common.set_rng_state(state["rng"])
        start_step, elapsed = int(state["step"]), float(state.get("elapsed_s", 0.0))

    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, out_dir)
    logger = common.MetricsLogger(out_dir, enabled=info.is_main, report_to=cfg.report_to,
                                  run_name=cfg.run_name or out_dir.name, config=to_dict(cfg))
    logger.truncate(start_step)  # drop steps a killed run logged after its last checkpoint
    train_model = common.wrap_ddp(common.maybe_compile(model, cfg.compile, device), info)
    bar = Progress(max_steps, "pretrain", initial=start_step, enabled=info.is_main, bar=cfg.progress)
    unique_tokens = loader.tokens_per_epoch
    if info.is_main:
        bar.write(f"pretrain: {model.num_params(False):,} params, {info.world_size} process(es), grad_accum "
                  f"{grad_accum}, {cfg.tokens_per_step:,} tokens/step x {max_steps} steps = "
                  f"{cfg.tokens_per_step * max_steps:,} tokens over {unique_tokens:,} unique "
                  f"({cfg.tokens_per_step * max_steps / unique_tokens:.2f} epochs), device {device} {dtype}"
                  + (f", resuming at step {start_step}" if start_step else ""))
        if cfg.match_documents:
            bar.write(f"pretrain: document-matched to {cfg.match_documents}: {max_steps} steps read the "
                      f"{loader.matched_documents:,} documents {cfg.max_steps} "
                      "steps read there")
        planned_epochs = cfg.tokens_per_step * max_steps / unique_tokens
        if planned_epochs > 1:
            bar.write(f"WARNING: this run will repeat its data: {planned_epochs:.2f} epochs over {unique_tokens:,} "
                      f"unique training tokens; prepare more data or train fewer steps for a single pass")
    tokenizer = load_tokenizer_from_dir(Path(cfg.data_dir) / "tokenizer")  # None if the shards came without one
    if cfg.hellaswag_every > 0 and tokenizer is None:
        raise DomtokError(f"hellaswag_every={cfg.hellaswag_every} needs the tokenizer that `domtok prepare` saves in "
                          f"{cfg.data_dir}/tokenizer; re-prepare the data or set hellaswag_every=0")
    hs_fn = hellaswag_hook(cfg, device, dtype) if cfg.hellaswag_every > 0 and info.is_main else None
    warned_epochs = False

    for step in range(start_step, max_steps):
        t0 = time.perf_counter()
        lr = common.lr_at(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, max_steps)
        common.set_lr(optimizer, lr)
        micro = loader.next_step()
        weights = _micro_weights(micro)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        for i, (x, y) in enumerate(micro):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with common.grad_sync(train_model, i == len(micro) - 1):
                with common.autocast(device, dtype):
                    _, loss = train_model(x, y)
                # this rank's mean over its micro-batches; DDP then averages over ranks
                (loss / len(micro) if weights is None else loss * weights[i]).backward()
            loss_sum += loss.detach().double() * (1.0 if weights is None else weights[i] * len(micro))
        grad_norm = common.clip_gradients(model, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        (train_loss,) = common.all_reduce_mean([float(loss_sum) / len(micro)], info, _reduce_device(device))
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        elapsed += dt
        done = step + 1
        tokens = done * cfg.tokens_per_step
        tok_s = cfg.tokens_per_step / dt
        row = {"step": done, "loss": train_loss, "lr": lr, "grad_norm": grad_norm, "tokens": tokens,
               "tokens_per_s": tok_s, "epoch": loader.epoch_float(), "time_s": elapsed}
        m = common.mfu(flops_per_token, tok_s, device, info.world_size)
        if m is not None:
            row["mfu"] = m

        last = done == max_steps
        if last or (cfg.eval_every > 0 and done % cfg.eval_every == 0):
            val_loss, val_tokens = evaluate(model, val.batches, info, device, dtype)
            row["val_loss"] = val_loss
            row["val_bpb"] = bits_per_byte(val_loss, val_tokens, val.bytes)
            if info.is_main:
                bpb = row["val_bpb"]
                bar.write(f"step {done}: train {train_loss:.4f} val {val_loss:.4f} nats/token"
                          + (f" {bpb:.4f} bits/byte" if bpb is not None else "") + f", epoch {row['epoch']:.2f}")
        if cfg.hellaswag_every > 0 and (last or done % cfg.hellaswag_every == 0):
            if hs_fn is not None:  # rank 0 only; the others wait at the barrier
                hs = hs_fn(model, tokenizer)
                row.update({f"hellaswag_{k}": v for k, v in hs.items() if isinstance(v, (int, float))})
                bar.write(f"step {done}: hellaswag " + ", ".join(f"{k} {v:.4f}" for k, v in hs.items() if k != "n"))
            common.barrier(info)
        if info.is_main and not warned_epochs and row["epoch"] > 1.0:
            warned_epochs = True
            bar.write(f"WARNING: step {done} starts epoch 2: the run has now seen all {unique_tokens:,} unique "
                      f"training tokens once and is repeating data")
        logger.log(row)
        shown = {"loss": train_loss, "lr": lr, "tok/s": round(tok_s)}
        bar.update(1, **shown, **({"mfu": f"{100 * m:.1f}%"} if m is not None else {}))

        if last or (cfg.ckpt_every > 0 and done % cfg.ckpt_every == 0):
            state = {"step": done, "data": loader.state_dict(), "rng": common.rng_state(),
                     "elapsed_s": elapsed, "config_hash": config_hash(cfg), "config": to_dict(cfg)}
            if info.is_main:
                save_checkpoint(out_dir, model, optimizer, state, tokenizer=tokenizer, keep_last=cfg.keep_last)
            common.barrier(info)
    bar.close()

    summary = {}
    if info.is_main:
        summary = _finish(cfg, out_dir, model, tokenizer, meta, logger, loader, val, flops_per_token,
                          grad_accum, info.world_size, max_steps)
    logger.close()
    common.barrier(info)
    return summary


def _micro_weights(micro: list) -> list[float] | None:
    """Loss weights of a step's micro-batches when some targets are masked (the last step of a
    document-matched run): each micro-batch's share of the step's targets, so the step's loss
    is the mean over its targets. A micro-batch with none keeps one target (a finite loss) at
    weight 0. None for a full step, which keeps the plain mean over micro-batches."""
    counts = [int((y != -100).sum()) for _, y in micro]
    if all(c == y.numel() for c, (_, y) in zip(counts, micro)):
        return None
    total = max(1, sum(counts))
    for c, (_, y) in zip(counts, micro):
        if c == 0:
            y[0, 0] = 0
    return [c / total for c in counts]


def _finish(cfg, out_dir: Path, model, tokenizer, meta, logger, loader, val, flops_per_token,
            grad_accum, world_size, max_steps: int) -> dict:
    """Final model dir, then summary.json."""
    rows = logger.rows()
    unique_tokens = loader.tokens_per_epoch
    documents_seen, bytes_seen = loader.documents_read()
    tokens_trained = max_steps * cfg.tokens_per_step
    epochs = tokens_trained / unique_tokens
    train_meta = meta["splits"].get("train", {})
    val_rows = [r for r in rows if "val_loss" in r]
    wall = rows[-1]["time_s"] if rows else 0.0
    last_train = [r["loss"] for r in rows[-10:]]
    final_train = sum(last_train) / len(last_train) if last_train else None
    summary = {
        "stage": "pretrain",
        "config_hash": config_hash(cfg),
        "model": cfg.model,
        "params": model.num_params(False),
        "params_non_embedding": model.num_params(True),
        "vocab_size": model.config.vocab_size,
        "condition": meta.get("condition"),
        "steps": max_steps,
        "match": ({"documents_of": cfg.match_documents, "partner_steps": cfg.max_steps,
                   "documents": loader.matched_documents,
                   "last_step_targets": loader.stop - 1 - (max_steps - 1) * cfg.tokens_per_step}
                  if cfg.match_documents else "tokens"),
        "tokens_per_step": cfg.tokens_per_step,
        "grad_accum": grad_accum,
        "world_size": world_size,
        "tokens_trained": tokens_trained,
        "unique_tokens": unique_tokens,    # trainable tokens per epoch (whole windows of the train split)
        "train_split_tokens": train_meta.get("tokens"),
        "unique_tokens_seen": min(tokens_trained, unique_tokens),
        "epochs": epochs,
        "documents_seen": documents_seen,  # train documents read whole (repeats counted)
        "bytes_seen": bytes_seen,          # their UTF-8 bytes of original (uninjected) text
        "train_documents": int(loader.data.num_docs),
        "val_documents": val.documents,    # the whole documents the val loss and bpb are measured on
        "val_tokens": val.tokens,
        "val_bytes": val.bytes,
        "flops_per_token": flops_per_token,
        "total_flops": flops_per_token * tokens_trained,
        "domain_token_share": (train_meta.get("domain_tokens", 0) / train_meta["tokens"]) if train_meta.get("tokens") else None,
        "final_train_loss": final_train,
        "final_train_loss_steps": len(last_train),  # final_train_loss: the mean of these last steps
        "final_train_loss_last_step": rows[-1]["loss"] if rows else None,
        "train_loss_mean": sum(r["loss"] for r in rows) / len(rows) if rows else None,  # over every step
        "final_val_loss": val_rows[-1]["val_loss"] if val_rows else None,
        "final_val_bpb": val_rows[-1].get("val_bpb") if val_rows else None,
        "first_train_loss": rows[0]["loss"] if rows else None,
        "wall_time_s": wall,
        "tokens_per_s": tokens_trained / wall if wall else None,
        "data_dir": str(cfg.data_dir),
        "data_config_hash": meta.get("config_hash"),
    }
    if epochs > 1:
        summary["warning"] = (f"trained {epochs:.2f} epochs: {tokens_trained:,} tokens over only {unique_tokens:,} "
                              f"unique training tokens (data repeated)")
        print(f"WARNING: {summary['warning']}", flush=True)
    save_model_dir(model, tokenizer, out_dir / "model",
                   extra={"stage": "pretrain", "config_hash": summary["config_hash"], "condition": meta.get("condition"),
                          "seed": cfg.seed, "data": f"{meta.get('source', cfg.data_dir)}: {tokens_trained:,} "
                                                    f"tokens trained ({epochs:.2f} epochs)"})
    atomic_write_json(out_dir / "summary.json", summary)
    print(f"pretrain: done, {tokens_trained:,} tokens ({epochs:.2f} epochs), final train loss "
          f"{final_train:.4f}, val {summary['final_val_loss']}, bpb {summary['final_val_bpb']}, "
          f"{summary['tokens_per_s'] or 0:,.0f} tokens/s -> {out_dir}", flush=True)
    return summary
