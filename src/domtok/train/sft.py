"""Supervised fine-tuning: `domtok sft CONFIG [key=value ...] [--resume] [--out DIR]`.

One loop for every SFT route (instruct, gsm8k, gsm_sbs, curriculum, tinygsm, local jsonl):
a config is a list of *stages*, each with its own data, epochs and learning rate; a
single-stage config is the common case, the curriculum has three. RFT reuses
`train_stages` for its rounds.

What this loop guarantees (the reference study's bugs):
- loss only on assistant tokens and the closing EOS, from the explicit masks of
  `domtok.chat.render_conversation` (the reference masked every EOS: its models never stopped);
- validation is a held-out part of the training source, never a test split;
- the condition decides injection; the model dir's tokenizer must agree with it;
- fp32 master weights, bf16 autocast on GPU (the reference updated pure bf16 weights);
- the global batch is defined without reference to the number of processes: rank r of W
  takes micro-batches r, r+W, ... of it, and the loss is normalised by the trained tokens of
  the whole global batch, so a 2-process run computes the same update as a 1-process run.

Logged per step: train loss, lr; every `eval_every` steps and at each stage end: val loss and
val bits per byte (= summed CE / (ln 2 x UTF-8 bytes of the original assistant text)).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from domtok.config import config_hash, save_resolved
from domtok.errors import DomtokError
from domtok.progress import Progress
from domtok.train import common
from domtok.utils import stream_index
from domtok.train.sft_data import BuildReport, DataSource, SFTExample, build_examples, collate, load_records, split_train_val


@dataclass
class SFTStage:
    name: str = "sft"
    data: list[DataSource] = field(default_factory=lambda: [DataSource()])
    val_data: list[DataSource] = field(default_factory=list)  # optional; default: held out from data
    val_size: float = 0.05        # held-out part of the training records: fraction (<1) or count
    epochs: float = 1.0
    learning_rate: float = 2e-5
    min_lr_ratio: float = 0.0     # cosine decays to learning_rate * min_lr_ratio
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 512
    batch_size: int = 8           # per micro-batch (per process)
    grad_accum: int = 4           # micro-batches per global batch (divisible by the world size)


@dataclass
class SFTConfig:
    model: str = ""               # input model dir (native or Hugging Face GPT-2)
    condition: str = "baseline"   # must match the model's tokenizer
    inject_user: bool = False     # domain conditions inject assistant text only, unless this
    stages: list[SFTStage] = field(default_factory=lambda: [SFTStage()])
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"           # auto = bf16 autocast on GPU, fp32 on CPU; weights stay fp32
    grad_clip: float = 1.0
    eval_every: int = 0           # steps between validations (0 = at each stage end only)
    checkpoint_every: int = 0     # steps between checkpoints (0 = at each stage end only)
    keep_checkpoints: int = 2
    max_steps: int = 0            # stop after this many steps in all (0 = run every stage fully)
    compile: bool = False
    # tracking, as transformers' TrainingArguments: none | all | tensorboard | wandb | a list
    report_to: str | list[str] = "none"
    run_name: str | None = None   # the W&B run's name (None = the output dir's name)


# --- condition / tokenizer consistency -------------------------------------------------------

def injection_token_set(condition: str, tokenizer, where: str = "sft") -> str | None:
    """The token set to inject for this condition, checked against the model's tokenizer.

    A baseline model fine-tuned with a domain condition (or the reverse) is an error: the
    condition would say one thing and the vocabulary another.
    """
    domain = condition != "baseline"
    if domain != bool(tokenizer.uses_domain_tokens):
        kind = "uses" if tokenizer.uses_domain_tokens else "does not use"
        raise DomtokError(f"{where}: condition {condition!r} but the model's tokenizer {kind} domain tokens "
                          f"(tokenizer condition {getattr(tokenizer, 'condition', '?')!r}); set `condition` "
                          "to the model's condition or use that condition's model")
    tok_cond = getattr(tokenizer, "condition", condition)
    if domain and tok_cond != condition:
        raise DomtokError(f"{where}: condition {condition!r} but the model's tokenizer is for {tok_cond!r}; "
                          "set `condition` to match the model")
    # a literal set (the control set) is the text itself: nothing is injected, `encode` maps it
    return tokenizer.token_set.name if domain and not tokenizer.token_set.literal else None


def build_stage_data(stage: SFTStage, tokenizer, condition: str, inject_user: bool, seed: int
                     ) -> tuple[list[SFTExample], list[SFTExample], dict]:
    """Training and validation examples of one stage (validation held out from training)."""
    token_set = injection_token_set(condition, tokenizer)
    train_recs = [r for src in stage.data for r in load_records(src)]
    if stage.val_data:
        val_recs = [r for src in stage.val_data for r in load_records(src)]
    else:
        train_recs, val_recs = split_train_val(train_recs, stage.val_size, seed)
    rep_t, rep_v = BuildReport(), BuildReport()
    # every condition drops what the layout's fact set's injection would break (a control set's
    # conditions drop what the set it copies, `matches`, would break)
    layout = tokenizer.token_set.matches or tokenizer.token_set.name
    train = build_examples(train_recs, tokenizer, token_set, inject_user, stage.max_length, rep_t, layout)
    val = build_examples(val_recs, tokenizer, token_set, inject_user, stage.max_length, rep_v, layout)
    if not train:
        raise DomtokError(f"sft stage {stage.name!r}: no usable training examples ({rep_t}); check `data`")
    return train, val, {"train": rep_t.__dict__, "val": rep_v.__dict__}


# --- the loop --------------------------------------------------------------------------------

def stage_steps(stage: SFTStage, n_train: int) -> int:
    return max(1, round(n_train * stage.epochs / (stage.batch_size * stage.grad_accum)))


def global_batch(n: int, step: int, size: int, seed: int, stage_index: int) -> list[int]:
    """Example indices of global batch `step`: an endless stream of seeded epoch permutations."""
    return [stream_index(n, pos, "sft", seed, stage_index) for pos in range(step * size, (step + 1) * size)]


def token_ce_sum(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over the trained targets (fp32)."""
    logits, _ = model(x)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100,
                           reduction="sum")


@torch.no_grad()
def evaluate(model, examples: list[SFTExample], batch_size: int, pad_id: int, info, device, dtype) -> dict:
    """Validation loss (per trained token) and bits per byte, summed over every rank's share."""
    from domtok.train.common import all_reduce_sum, autocast

    if not examples:
        return {}
    was = model.training
    model.eval()
    ce = tok = nbytes = 0.0
    mine = examples[info.rank::info.world_size]
    for i in range(0, len(mine), batch_size):
        chunk = mine[i:i + batch_size]
        x, y = collate(chunk, pad_id, device)
        with autocast(device, dtype):
            ce += float(token_ce_sum(model, x, y))
        tok += float((y != -100).sum())
        nbytes += sum(e.n_bytes for e in chunk)
    ce, tok, nbytes = all_reduce_sum([ce, tok, nbytes], info, device)
    model.train(was)
    return {"val_loss": ce / max(tok, 1), "val_bpb": ce / (math.log(2) * max(nbytes, 1)), "val_tokens": int(tok)}


FINAL_LOSS_STEPS = 20  # final_train_loss: the mean train loss of the last 20 steps


def _summary_from_log(rows: list[dict], stages) -> dict:
    """Per-stage validation and the final losses, read from metrics.jsonl (rank 0), so a resumed
    run reports the same numbers as an uninterrupted one."""
    out: dict = {"stages": []}
    for stage, train, val in stages:
        mine = [r for r in rows if r.get("stage") == stage.name]
        if not mine:
            continue  # not reached (max_steps)
        vals = [r for r in mine if "val_loss" in r]
        last_val = {k: v for k, v in vals[-1].items() if k.startswith("val_")} if vals else {}
        losses = [r["train_loss"] for r in mine]
        out["stages"].append({"name": stage.name, "steps": mine[-1]["stage_step"], "train_examples": len(train),
                              "val_examples": len(val), "train_loss_mean": sum(losses) / len(losses), **last_val})
        out.update(final_val_loss=last_val.get("val_loss"), final_val_bpb=last_val.get("val_bpb"))
    # Two train losses, named for what they are: the end of training (the mean of the last
    # FINAL_LOSS_STEPS steps) and the whole run's mean over steps (HF Trainer's `train_loss`,
    # the figure the reference study's tables give).
    losses = [r["train_loss"] for r in rows if "train_loss" in r]
    recent = losses[-FINAL_LOSS_STEPS:]
    out["final_train_loss"] = sum(recent) / len(recent) if recent else None
    out["final_train_loss_steps"] = len(recent)
    out["train_loss_mean"] = sum(losses) / len(losses) if losses else None
    return out


def train_stages(model, tokenizer, stages: list[tuple[SFTStage, list[SFTExample], list[SFTExample]]],
                 cfg: SFTConfig, out_dir: str | Path, info, resume: bool = False, desc: str = "sft") -> dict:
    """Fine-tune `model` in place through `stages`; checkpoints and metrics under out_dir.

    `cfg` supplies the run-wide settings (seed, device, dtype, clipping, eval/checkpoint
    cadence, max_steps); each stage its data and optimisation hyper-parameters.
    """
    from domtok.train import common

    out_dir = Path(out_dir)
    device = info.device
    dtype = common.resolve_dtype(cfg.dtype, device)
    model.to(device)  # fp32 master weights; autocast only changes the matmul precision
    model.train()
    raw = model
    ddp = common.wrap_ddp(common.maybe_compile(model, cfg.compile, device), info)
    logger = common.MetricsLogger(out_dir, enabled=info.is_main, report_to=cfg.report_to,
                                  run_name=cfg.run_name or out_dir.name, config=dataclasses.asdict(cfg))
    pad_id = tokenizer.eot_id

    plan = [stage_steps(st, len(tr)) for st, tr, _ in stages]
    # max_steps only cuts the run short (each stage's schedule comes from its epochs), so a run
    # cut by it may resume under another max_steps; any other change is another run
    resume_hash = config_hash(replace(cfg, max_steps=0))
    start_stage, start_step, global_step, ckpt = 0, 0, 0, None
    if resume:
        from domtok.model import checkpoint

        ckpt = checkpoint.latest_checkpoint(out_dir)
        if ckpt is not None:
            st = checkpoint.load_checkpoint(ckpt, raw)
            common.check_checkpoint_config(ckpt, st, resume_hash)
            start_stage, start_step, global_step = st["stage"], st["stage_step"], st["step"]
            if start_step >= plan[start_stage]:  # the checkpoint closed a stage: fresh optimizer
                start_stage, start_step, ckpt = start_stage + 1, 0, None
            common.set_rng_state(st["rng"])
            logger.truncate(global_step)
    summary = {"steps": global_step}
    t_start = time.time()
    total = min(sum(plan), cfg.max_steps) if cfg.max_steps else sum(plan)
    bar = Progress(total, desc, initial=min(global_step, total), enabled=info.is_main)
    for s in range(start_stage, len(stages)):
        stage, train, val = stages[s]
        W = info.world_size
        if stage.grad_accum % W:
            raise DomtokError(f"sft stage {stage.name!r}: grad_accum {stage.grad_accum} must be divisible by the "
                              f"number of processes {W}")
        steps = plan[s]
        gb = stage.batch_size * stage.grad_accum
        warmup = int(round(stage.warmup_ratio * steps))
        opt = common.configure_optimizer(raw, stage.learning_rate, stage.weight_decay, device_type=str(device).split(":")[0])
        if ckpt is not None and s == start_stage:  # mid-stage resume: the stage's optimizer state too
            from domtok.model import checkpoint

            checkpoint.load_checkpoint(ckpt, raw, opt, map_location=device)
        step0 = start_step if s == start_stage else 0
        for k in range(step0, steps):
            if cfg.max_steps and global_step >= cfg.max_steps:
                break
            lr = common.lr_at(k, stage.learning_rate, stage.learning_rate * stage.min_lr_ratio, warmup, steps)
            common.set_lr(opt, lr)
            idx = global_batch(len(train), k, gb, cfg.seed, s)
            batch = [train[i] for i in idx]
            n_tok = sum(sum(e.mask[1:]) for e in batch)  # trained targets in the whole global batch
            micro = [batch[j * stage.batch_size:(j + 1) * stage.batch_size] for j in range(stage.grad_accum)]
            mine = micro[info.rank::W]
            ce_total = 0.0
            for j, mb in enumerate(mine):
                x, y = collate(mb, pad_id, device)
                with common.grad_sync(ddp, j == len(mine) - 1):
                    with common.autocast(device, dtype):
                        ce = token_ce_sum(ddp, x, y)
                    # DDP averages gradients over W ranks: scale by W so the result is the
                    # gradient of (summed CE over the global batch) / n_tok.
                    (ce * W / n_tok).backward()
                ce_total += float(ce.detach())
            gnorm = common.clip_gradients(raw, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            (ce_sum,) = common.all_reduce_sum([ce_total], info, device)
            global_step += 1
            row = {"step": global_step, "stage": stage.name, "stage_step": k + 1, "lr": lr,
                   "train_loss": ce_sum / n_tok, "grad_norm": gnorm, "tokens": n_tok,
                   "elapsed_s": round(time.time() - t_start, 3)}
            stage_end = k + 1 == steps
            if (cfg.eval_every and global_step % cfg.eval_every == 0) or stage_end:
                row.update(evaluate(raw, val, stage.batch_size, pad_id, info, device, dtype))
            logger.log(row)
            bar.update(1, stage=stage.name, loss=row["train_loss"], lr=lr)
            if stage_end or (cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0):
                save_state(out_dir, global_step, raw, tokenizer, opt,
                           {"step": global_step, "stage": s, "stage_step": k + 1, "rng": common.rng_state(),
                            "config_hash": resume_hash},
                           cfg.keep_checkpoints, info)
        summary["steps"] = global_step
        if cfg.max_steps and global_step >= cfg.max_steps:
            break
    bar.close()
    logger.close()
    summary.update(_summary_from_log(logger.rows(), stages))
    return summary


# --- checkpoints (through domtok.model.checkpoint) -------------------------------------------

def save_state(out_dir, step, model, tokenizer, optimizer, state: dict, keep: int, info) -> None:
    """A training checkpoint under out_dir/checkpoints (rank 0 writes; the others wait).
    keep = 0: no checkpoints (a caller that never resumes, such as RFT's rounds)."""
    from domtok.model import checkpoint
    from domtok.train.common import barrier

    if keep <= 0:
        return
    if info.is_main:
        checkpoint.save_checkpoint(out_dir, model, optimizer, state, tokenizer=tokenizer, keep_last=keep)
    barrier(info)


# --- stage entry point -----------------------------------------------------------------------

def run(cfg: SFTConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Fine-tune cfg.model through cfg.stages; writes out_dir/{model,summary.json}."""
    from domtok.model.checkpoint import load_model
    from domtok.train.common import barrier
    from domtok.utils import dist_setup, seed_everything

    if not cfg.model:
        raise DomtokError("sft: `model` is empty; set model=PATH to a pretrained model dir")
    out_dir = Path(out_dir)
    info = dist_setup(cfg.device)
    seed_everything(cfg.seed)
    model, tokenizer = load_model(cfg.model, device="cpu")
    injection_token_set(cfg.condition, tokenizer)  # fail before any data work
    stages, reports = [], {}
    for i, st in enumerate(cfg.stages):
        train, val, rep = build_stage_data(st, tokenizer, cfg.condition, cfg.inject_user, cfg.seed + i)
        stages.append((st, train, val))
        reports[st.name] = rep
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        h = save_resolved(cfg, out_dir)
    else:
        h = config_hash(cfg)
    t0 = time.time()
    summary = train_stages(model, tokenizer, stages, cfg, out_dir, info, resume=resume)
    summary.update({"stage": "sft", "condition": cfg.condition, "model_in": cfg.model, "config_hash": h,
                    "seed": cfg.seed, "data": reports, "wall_time_s": round(time.time() - t0, 2)})
    if info.is_main:
        common.write_stage_outputs(out_dir, model, tokenizer, "sft", h, cfg.model, summary,
                                   card={"seed": cfg.seed, "data": common.describe_data(
                                       [d for st in cfg.stages for d in st.data])})
    barrier(info)
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_stage_arguments(p, "sft", "model=runs/x/model")


def main(args) -> int:
    s, out, is_main = common.run_stage_verb(args, SFTConfig, "sft", run)
    if is_main:
        print(f"sft: {s['steps']} steps -> {out}/model", flush=True)
    return 0