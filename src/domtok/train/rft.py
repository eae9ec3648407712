"""Rejection-sampling fine-tuning: `domtok rft CONFIG [key=value ...] [--out DIR]`.

Each round: sample `num_samples` completions per training question with the Engine on the
current model, keep the correct ones (`eval.gsm8k.is_correct`), drop duplicates (same
question, same whitespace-normalised text) and, optionally, completions longer than
`max_completion_tokens`; then fine-tune on the kept set with SFT's own loop
(`sft.train_stages`), and go again from the fine-tuned model. The yield of every round
(kept / sampled, questions with at least one correct sample) goes into summary.json.

Kept completions are the model's own text: they are not injected again (a domain model's
samples already contain whatever domain tokens it chose to write); they are re-rendered
through `domtok.chat` so the loss mask is the SFT one (assistant text + closing EOS).

Under torchrun the sampling is sharded: rank r of W samples questions r, r+W, ... with each
row seeded by its global (question, sample) index (`grpo.generate_shard`), the generations are
all-gathered and put in (question, sample) order on every rank, so every rank selects the
same kept set as a 1-process run; the fine-tuning is `sft.train_stages` under DDP (its
grad_accum must be divisible by W). Rank 0 alone writes files.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from domtok.config import config_hash, save_resolved
from domtok.errors import DomtokError
from domtok.eval.common import eval_dtype
from domtok.train import common
from domtok.progress import Progress
from domtok.train.sft import SFTConfig, SFTStage
from domtok.train.sft_data import DataSource, SFTExample


@dataclass
class RFTConfig:
    model: str = ""
    condition: str = "baseline"
    inject_user: bool = False
    questions: DataSource = field(default_factory=lambda: DataSource(kind="gsm8k"))
    num_questions: int = 0           # the first N records (0 = all)
    rounds: int = 1
    num_samples: int = 4             # k completions per question
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 256
    max_completion_tokens: int = 0   # length cap on kept completions (0 = none)
    require_eos: bool = True         # keep only completions that ended on their own
    decode_batch_size: int = 32      # Engine rows decoded together (memory, not the algorithm)
    sft: SFTStage = field(default_factory=lambda: SFTStage(name="rft", epochs=1.0, learning_rate=1e-5))
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    grad_clip: float = 1.0
    # tracking, as transformers' TrainingArguments (none | all | tensorboard | wandb | a list): each
    # round's SFT reports as run `<run_name>-round<k>`, the rounds' yields as run `<run_name>`
    report_to: str | list[str] = "none"
    run_name: str | None = None       # None = the output dir's name


def _norm(text: str) -> str:
    return " ".join(text.split())


def select_correct(generations, questions: list[str], golds: list[str], max_tokens: int = 0,
                   require_eos: bool = True) -> tuple[list[tuple[int, str]], dict]:
    """(prompt index, completion text) of the correct, unique, short-enough samples + counts."""
    from domtok.eval.gsm8k import is_correct

    seen: set[tuple[int, str]] = set()
    kept, counts = [], {"sampled": 0, "correct": 0, "duplicates": 0, "too_long": 0, "no_eos": 0}
    for g in generations:
        counts["sampled"] += 1
        if not is_correct(g.text, golds[g.prompt_index]):
            continue
        counts["correct"] += 1
        if require_eos and g.finish_reason in ("length", "context"):
            counts["no_eos"] += 1
            continue
        if max_tokens and g.num_tokens > max_tokens:
            counts["too_long"] += 1
            continue
        key = (g.prompt_index, _norm(g.text))
        if key in seen:
            counts["duplicates"] += 1
            continue
        seen.add(key)
        kept.append((g.prompt_index, g.text.strip()))
    counts["kept"] = len(kept)
    counts["yield"] = len(kept) / max(1, counts["sampled"])
    counts["questions_solved"] = len({i for i, _ in kept}) / max(1, len(questions))
    return kept, counts


def kept_examples(kept: list[tuple[int, str]], questions: list[str], tokenizer, max_length: int) -> list[SFTExample]:
    from domtok.chat import qa_messages
    from domtok.train.sft_data import build_examples

    recs = [{"messages": qa_messages(questions[i], text)} for i, text in kept]
    return build_examples(recs, tokenizer, None, False, max_length)  # model text: no re-injection


def run(cfg: RFTConfig, out_dir: str | Path) -> dict:
    from domtok.chat import STOP_STRINGS
    from domtok.engine import Engine, SamplingParams
    from domtok.model.checkpoint import load_model
    from domtok.train import common
    from domtok.train.grpo import GRPOConfig, all_gather_rows, generate_shard, load_prompts
    from domtok.train.sft import injection_token_set, train_stages
    from domtok.train.sft_data import split_train_val
    from domtok.utils import dist_setup, seed_everything

    if not cfg.model:
        raise DomtokError("rft: `model` is empty; set model=PATH to a model dir (usually an SFT output)")
    info = dist_setup(cfg.device)
    if cfg.sft.grad_accum % info.world_size:
        raise DomtokError(f"rft: sft.grad_accum ({cfg.sft.grad_accum}) must be divisible by the number of "
                          f"processes ({info.world_size})")
    out_dir = Path(out_dir)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        h = save_resolved(cfg, out_dir)
    else:
        h = config_hash(cfg)
    seed_everything(cfg.seed)
    device = info.device
    dtype = common.resolve_dtype(cfg.dtype, device)
    model, tokenizer = load_model(cfg.model, device=device)
    token_set = injection_token_set(cfg.condition, tokenizer, "rft")
    questions, golds, texts = load_prompts(GRPOConfig(prompts=cfg.questions, num_prompts=cfg.num_questions,
                                                      inject_user=cfg.inject_user), tokenizer, token_set)
    sft_cfg = SFTConfig(model=cfg.model, condition=cfg.condition, seed=cfg.seed, device=cfg.device, dtype=cfg.dtype,
                        grad_clip=cfg.grad_clip,
                        keep_checkpoints=0,  # RFT does not resume: its rounds write no checkpoints
                        report_to=cfg.report_to)
    common.report_targets(cfg.report_to, "rft: report_to")  # a missing tracker fails before any sampling
    run_name = cfg.run_name or out_dir.name
    t0 = time.time()
    rounds = []
    for r in range(cfg.rounds):
        engine = Engine(model, tokenizer, device=device, dtype=eval_dtype(device, dtype))  # bf16 sampling on GPU
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                                top_p=cfg.top_p, seed=cfg.seed * 1_000_003 + r, stop_strings=STOP_STRINGS)
        mine = len(range(info.rank, len(texts), info.world_size)) * cfg.num_samples
        with Progress(mine, f"rft round {r + 1}/{cfg.rounds} sampling", unit="samples", enabled=info.is_main) as bar:
            gens = generate_shard(engine, [tokenizer.encode(t) for t in texts], params, cfg.num_samples,
                                  cfg.decode_batch_size, info, progress=bar.update)
        if info.distributed:  # every rank needs every sample, in one order, to keep the same set
            gens = sorted(all_gather_rows(gens, info), key=lambda g: (g.prompt_index, g.sample_index))
        kept, counts = select_correct(gens, questions, golds, cfg.max_completion_tokens, cfg.require_eos)
        row = {"round": r + 1, **counts}
        examples = kept_examples(kept, questions, tokenizer, cfg.sft.max_length)
        if examples:
            train, val = split_train_val(examples, cfg.sft.val_size, cfg.seed + r) if len(examples) > 1 else (examples, [])
            s = train_stages(model, tokenizer, [(replace(cfg.sft, name=f"rft_round{r + 1}"), train, val)],
                             replace(sft_cfg, run_name=f"{run_name}-round{r + 1}"),
                             out_dir / f"round_{r + 1}", info, desc=f"rft round {r + 1}/{cfg.rounds} sft")
            row["sft"] = {**s["stages"][0], "final_train_loss": s["final_train_loss"]}
        else:
            row["sft"] = None  # nothing correct to learn from this round
        rounds.append(row)
    # the rounds' yields, once every round's SFT has closed its own tracker run
    logger = common.MetricsLogger(out_dir, enabled=info.is_main, report_to=cfg.report_to, run_name=run_name)
    for row in rounds:
        logger.log({"step": row["round"], **{k: v for k, v in row.items() if k != "sft"}})
    logger.close()
    summary = {"stage": "rft", "condition": cfg.condition, "model_in": cfg.model, "config_hash": h, "seed": cfg.seed,
               "questions": len(questions), "rounds": rounds, "wall_time_s": round(time.time() - t0, 2)}
    if info.is_main:
        common.write_stage_outputs(out_dir, model, tokenizer, "rft", h, cfg.model, summary,
                                   card={"seed": cfg.seed, "data": common.describe_data([cfg.questions])})
    common.barrier(info)
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_stage_arguments(p, "rft", "model=runs/sft/model rounds=2", resume=False)


def main(args) -> int:
    s, out, is_main = common.run_stage_verb(args, RFTConfig, "rft", run)
    if not is_main:  # one report per run, not per process
        return 0
    for r in s["rounds"]:
        print(f"rft round {r['round']}: yield {r['yield']:.3f} ({r['kept']}/{r['sampled']}), "
              f"questions solved {r['questions_solved']:.3f}", flush=True)
    print(f"rft: -> {out}/model", flush=True)
    return 0