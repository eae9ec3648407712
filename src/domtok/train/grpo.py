"""GRPO: `domtok grpo CONFIG [key=value ...] [--resume] [--out DIR]`.

Group Relative Policy Optimisation on question/answer prompts (GSM8K train by default), with
the knob names of TRL's GRPOConfig, and TRL 1.16's meanings and defaults, so settings carry
over: learning_rate, lr_scheduler_type, warmup_steps / warmup_ratio, beta, num_generations,
epsilon (+ epsilon_high), num_iterations, loss_type, scale_rewards, use_bias_correction_kl,
mask_truncated_completions, temperature, top_p, top_k, max_completion_length,
per_device_train_batch_size, gradient_accumulation_steps, num_train_epochs / max_steps, seed.
tests/test_grpo_trl.py runs TRL's own GRPOTrainer loss on a fixed batch and checks that
advantages, loss and gradients agree.

One generation round:
  1. take P = per_device_train_batch_size * gradient_accumulation_steps / num_generations
     prompts, sample num_generations completions each with the Engine on the CURRENT policy
     (temperature, top_k, top_p); a completion that stopped on a stop string is trained on
     the ids of its scored text only (`scored_ids`: the stop string's tokens are not
     reinforced), an EOS completion keeps its EOS;
  2. score them (`domtok.train.rewards`), advantages relative to the group:
        A = r - mean(group), divided by std(group) (scale_rewards=group), by the std of the
        whole batch (batch), or not at all (none); a group whose rewards are all equal has A = 0;
  3. num_iterations optimizer steps on these completions, each over
     gradient_accumulation_steps micro-batches. Every log-prob (policy, old policy, reference)
     is log_softmax(logits / temperature): the distribution the completions were sampled
     from, as in TRL. Per token:
        ratio = exp(logp - logp_old)     (logp_old detached: for num_iterations == 1 it is
                                          logp itself, ratio == 1 but the gradient flows)
        pg    = -min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A)
        kl    = exp(ref - logp) - (ref - logp) - 1     (k3 estimator; only when beta > 0)
        kl    = kl * ratio                              (use_bias_correction_kl, the default)
        loss_token = pg + beta * kl
     reduced by loss_type: grpo = mean over each sequence's tokens then over sequences;
     dr_grpo = sum / (sequences * max_completion_length); dapo (the default) = sum / all
     tokens. The denominators count the whole optimizer step, so accumulation computes one
     exact mean. mask_truncated_completions drops the tokens of completions that hit
     max_completion_length from the sums and from dapo's token count (their rewards still
     count in the advantages).
beta == 0 disables the KL term and never loads a reference model.
The learning rate follows transformers' schedules (`lr_factor`): linear warmup from 0 over
warmup_steps (or ceil(warmup_ratio x steps)), then `linear` decay to 0 at the last step
(TRL's default), `cosine` to 0, `constant_with_warmup`, or `constant` (no warmup).

Under torchrun (W processes) a step is the same step, computed by W ranks:
  - the round's prompts are sharded by global index (rank r samples prompts r, r+W, ...),
    each row seeded by its GLOBAL (prompt, sample) index, so the union of the ranks'
    completions is the 1-process rollout; a prompt's whole group stays on one rank;
  - each rank scores its own completions, then the rows are all-gathered, so rewards,
    advantages (group and batch statistics) and logged rollout metrics are the global ones;
  - the step's gradient_accumulation_steps micro-batches (divisible by W) are split like
    SFT's: rank r trains micro-batches r, r+W, ...; the loss keeps the whole step's
    normalisers and is scaled by W against DDP's mean, so the synced gradient equals the
    1-process one; DDP syncs on the last micro-step only;
  - loss / KL / clip metrics are all-reduced; rank 0 alone writes metrics, checkpoints and
    the model; every rank loads the reference model (beta > 0).
per_device_train_batch_size is therefore the completions per micro-batch on one device and
per_device_train_batch_size * gradient_accumulation_steps the completions of one step,
whatever W is (unlike TRL, where the step grows with W): a run reproduces across W.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from domtok.config import config_hash, save_resolved
from domtok.errors import DomtokError
from domtok.eval.common import eval_dtype
from domtok.progress import Progress
from domtok.train import common
from domtok.train.rewards import RewardConfig, make_reward_fn
from domtok.train.sft_data import DataSource
from domtok.utils import stream_index


@dataclass
class GRPOConfig:
    model: str = ""                      # policy init (usually an SFT model dir)
    condition: str = "baseline"          # must match the model's tokenizer
    inject_user: bool = False            # questions are never injected unless this is set
    prompts: DataSource = field(default_factory=lambda: DataSource(kind="gsm8k"))
    num_prompts: int = 1000              # the first N records of the prompt source (0 = all)
    reward: RewardConfig = field(default_factory=RewardConfig)
    # TRL GRPOConfig names, with TRL 1.16's defaults (tests/test_grpo_trl.py checks them), except
    # seed (domtok's 0, TRL's 42) and max_steps (0 = unset, TRL's -1)
    learning_rate: float = 1e-6
    beta: float = 0.0
    num_generations: int = 8
    epsilon: float = 0.2
    epsilon_high: float | None = None    # None = epsilon (DAPO's clip-higher uses e.g. 0.28)
    num_iterations: int = 1
    loss_type: str = "dapo"              # grpo | dr_grpo | dapo (TRL's default: dapo)
    scale_rewards: str = "group"         # group | batch | none
    use_bias_correction_kl: bool = True  # k3 KL x importance ratio (TRL's default); False = the plain k3 KL
    mask_truncated_completions: bool = False  # leave completions that hit max_completion_length out of the loss
    temperature: float = 1.0             # sampling AND log-probs (logits / temperature), as TRL
    top_p: float = 1.0
    top_k: int = 0
    max_completion_length: int = 512
    per_device_train_batch_size: int = 8  # completions per micro-batch
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 3.0
    max_steps: int = 0                   # optimizer steps (0 = from num_train_epochs)
    seed: int = 0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    lr_scheduler_type: str = "linear"    # linear (to 0) | cosine (to 0) | constant | constant_with_warmup
    warmup_steps: float = 0              # >= 1: steps; in (0, 1): a fraction of all steps (transformers 5)
    warmup_ratio: float = 0.0            # a fraction of all steps, used when warmup_steps is 0 (transformers 4)
    max_grad_norm: float = 1.0
    # run settings, domtok's own names: not TRL's `generation_batch_size` (completions per rollout,
    # which here is always per_device_train_batch_size x gradient_accumulation_steps)
    decode_batch_size: int = 32          # Engine rows decoded together (memory, not the algorithm)
    save_steps: int = 0                  # checkpoint every this many optimizer steps (0 = end only)
    save_total_limit: int = 2
    device: str = "auto"
    dtype: str = "auto"
    # logging, with TRL's names and meanings: every logging_steps steps, log_completions saves the
    # step's rollout (prompt, completion, reward terms, advantage) to completions/completions_<step>.jsonl
    # and prints num_completions_to_print of them (None = all) to the log
    log_completions: bool = False
    num_completions_to_print: int | None = None
    logging_steps: int = 10
    report_to: str | list[str] = "none"  # none | all | tensorboard | wandb | a list (transformers' meaning)
    run_name: str | None = None          # the W&B run's name (None = the output dir's name; TRL's default)


# --- pure pieces (tested directly) -----------------------------------------------------------

def group_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group",
                     eps: float = 1e-4) -> torch.Tensor:
    """(N*G,) rewards in prompt-major order -> (N*G,) advantages, relative to each group."""
    r = rewards.float().view(-1, num_generations)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        adv = adv / (r.std(dim=1, keepdim=True) + eps) if num_generations > 1 else adv
    elif scale_rewards == "batch":
        adv = adv / (rewards.float().std() + eps) if rewards.numel() > 1 else adv
    elif scale_rewards != "none":
        raise DomtokError(f"grpo: scale_rewards {scale_rewards!r}; expected group, batch or none")
    return adv.reshape(-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference): exp(d) - d - 1 with d = ref - logp (>= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def warmup_steps(cfg: GRPOConfig, total_steps: int) -> int:
    """Warmup steps as transformers counts them: warmup_steps if >= 1, else ceil(fraction x total),
    the fraction being warmup_steps when it is in (0, 1) (transformers 5), else warmup_ratio (4.x)."""
    if cfg.warmup_steps >= 1:
        return int(cfg.warmup_steps)
    return math.ceil(total_steps * (cfg.warmup_steps or cfg.warmup_ratio))


def lr_factor(step: int, total_steps: int, warmup: int, kind: str = "linear") -> float:
    """learning_rate multiplier of the `step`-th optimizer step (from 0): transformers' schedules.

    Warmup rises linearly from 0 (step 0 gets lr 0, as in transformers); then linear and
    cosine decay to 0 at total_steps, constant_with_warmup stays at 1, and constant is 1 from
    the first step (it has no warmup in transformers either: asking for one is an error).
    """
    if kind == "constant":
        if warmup:
            raise DomtokError("grpo: lr_scheduler_type constant has no warmup (as in transformers); "
                              "use constant_with_warmup, or set warmup_steps/warmup_ratio to 0")
        return 1.0
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise DomtokError(f"grpo: lr_scheduler_type {kind!r}; expected linear, cosine, constant or constant_with_warmup")


def policy_loss(logp, old_logp, ref_logp, adv, mask, *, epsilon: float, epsilon_high: float | None, beta: float,
                loss_type: str, max_completion_length: int, n_seqs: int, n_tokens: int,
                use_bias_correction_kl: bool = True) -> tuple[torch.Tensor, dict]:
    """The GRPO loss of one micro-batch, normalised by the whole step's n_seqs / n_tokens.

    logp/old_logp/ref_logp/mask: (B, T) over the same positions; adv: (B,). With
    use_bias_correction_kl the KL term is k3 x ratio (ratio not detached): its gradient is then
    that of the reverse KL under the sampling policy (TRL's default; DeepSeek-V3.2), and it
    differs from the plain k3 gradient even where ratio == 1. Returns the loss and summed
    statistics (clipped tokens, KL sum as it enters the loss, token count) for logging.
    """
    mask = mask.float()
    ratio = torch.exp(logp - old_logp)
    lo, hi = 1 - epsilon, 1 + (epsilon if epsilon_high is None else epsilon_high)
    A = adv.unsqueeze(1)
    per_tok = -torch.min(ratio * A, torch.clamp(ratio, lo, hi) * A)
    kl = None
    if beta > 0:
        kl = k3_kl(logp, ref_logp)
        if use_bias_correction_kl:
            kl = kl * ratio
        per_tok = per_tok + beta * kl
    if loss_type == "grpo":
        loss = ((per_tok * mask).sum(1) / mask.sum(1).clamp(min=1)).sum() / n_seqs
    elif loss_type == "dr_grpo":
        loss = (per_tok * mask).sum() / (n_seqs * max_completion_length)
    elif loss_type == "dapo":
        loss = (per_tok * mask).sum() / max(n_tokens, 1)
    else:
        raise DomtokError(f"grpo: loss_type {loss_type!r}; expected grpo, dr_grpo or dapo")
    with torch.no_grad():
        clipped = ((ratio < lo) & (A < 0)) | ((ratio > hi) & (A > 0))
        stats = {"clipped": float((clipped.float() * mask).sum()), "tokens": float(mask.sum()),
                 "kl_sum": float((kl * mask).sum()) if kl is not None else 0.0}
    return loss, stats


def sequence_logprobs(model, prompts: list[list[int]], completions: list[list[int]], device,
                      temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of each completion given its prompt: (B, T) values and mask.

    Right-padded batch of prompt + completion; position t scores token t+1; the mask marks
    the completion's tokens. The distribution is softmax(logits / temperature), the one the
    completions were sampled from (top-k / top-p are not applied, as in TRL), so policy, old
    policy and reference are compared on-policy. Gradient flows (call under no_grad for
    old/ref values).
    """
    seqs = [p + c for p, c in zip(prompts, completions)]
    T = max(len(s) for s in seqs) - 1
    x = torch.zeros(len(seqs), T, dtype=torch.long)
    y = torch.zeros(len(seqs), T, dtype=torch.long)
    m = torch.zeros(len(seqs), T, dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        s = torch.tensor(p + c, dtype=torch.long)
        n = len(s) - 1
        x[i, :n], y[i, :n] = s[:-1], s[1:]
        m[i, len(p) - 1:n] = True
    x, y, m = x.to(device), y.to(device), m.to(device)
    logits, _ = model(x)
    logp = torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return logp * m, m


def scored_ids(ids: list[int], text: str, finish_reason: str, tokenizer) -> list[int]:
    """The completion ids that were scored: what GRPO trains on.

    A completion that stopped on a stop string (`\nUser:`) was scored on its text cut before
    that string, so its ids end with the longest prefix whose text is a prefix of the scored
    text: the stop string's tokens, and a token straddling the cut, are not reinforced. An
    EOS completion keeps its final EOS (it was chosen, and TRL trains it too); a length-limited
    one keeps every id.
    """
    if finish_reason != "stop":
        return list(ids)
    k = len(ids)
    while k > 0 and not text.startswith(tokenizer.decode(ids[:k])):
        k -= 1
    return list(ids[:k])


@dataclass
class Rollout:
    prompts: list[list[int]]       # one per completion (repeated G times)
    completions: list[list[int]]   # the scored ids (`scored_ids`)
    rewards: torch.Tensor          # (N*G,)
    advantages: torch.Tensor       # (N*G,)
    stats: dict
    truncated: list[bool] = field(default_factory=list)  # hit max_completion_length (finish "length")
    rows: list[dict] = field(default_factory=list)  # per completion, for log_completions: texts, reward terms


def generate_shard(engine, prompt_ids: list[list[int]], params, num_samples: int, batch_size: int,
                   info=None, progress=None) -> list:
    """This rank's share of `engine.generate(prompt_ids, params, num_samples, batch_size)`.

    Rank r of W takes prompts r, r+W, ... with their GLOBAL indices, so each row's generator
    is seeded by `row_seed(seed, global prompt, sample)` and a completion does not depend on
    which rank drew it. One process: exactly `engine.generate`. Generations come back in
    (prompt, sample) order, with global prompt indices.
    """
    W = info.world_size if info is not None else 1
    rank = info.rank if info is not None else 0
    kwargs = {"progress": progress} if progress is not None else {}  # test stubs take no progress
    return engine.generate(prompt_ids, params, num_samples=num_samples, batch_size=batch_size,
                           only=range(rank, len(prompt_ids), W), **kwargs)


def all_gather_rows(rows: list, info=None) -> list:
    """Every rank's list, concatenated (rank order) on every rank; one process: the list."""
    if info is None or not info.distributed:
        return list(rows)
    import torch.distributed as dist

    parts: list = [None] * info.world_size
    dist.all_gather_object(parts, rows)
    return [x for part in parts for x in part]


def make_rollout(engine, tokenizer, questions: list[str], golds: list[str], reward_fn, cfg: GRPOConfig,
                 round_index: int, prompt_texts: list[str] | None = None, info=None) -> Rollout:
    """Sample num_generations completions per question on the current policy and score them.

    Under DDP (`info` distributed) each rank samples and scores its share of the questions
    and the scored rows are all-gathered, so every rank returns the whole, identical rollout.
    """
    from domtok.chat import STOP_STRINGS, render_prompt
    from domtok.engine import SamplingParams
    from domtok.eval.gsm8k import is_correct

    G = cfg.num_generations
    texts = prompt_texts or [render_prompt(q) for q in questions]
    prompt_ids = [tokenizer.encode(t) for t in texts]
    params = SamplingParams(max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                            top_k=cfg.top_k, top_p=cfg.top_p, seed=cfg.seed * 1_000_003 + round_index,
                            stop_strings=STOP_STRINGS)
    engine.model.eval()
    gens = generate_shard(engine, prompt_ids, params, G, cfg.decode_batch_size, info)
    # score here (a reward may be costly), then share plain tuples in global order
    scored = []
    for g in gens:
        ids = scored_ids(g.ids, g.text, g.finish_reason, tokenizer)
        scored.append((g.prompt_index, g.sample_index, ids, g.finish_reason,
                       reward_fn(g.text, golds[g.prompt_index], ids, tokenizer, question=questions[g.prompt_index]),
                       float(is_correct(g.text, golds[g.prompt_index])), g.prompt_truncated, g.text))
    scored = sorted(all_gather_rows(scored, info), key=lambda row: (row[0], row[1]))
    if len(scored) != len(questions) * G:
        raise DomtokError(f"grpo: rollout has {len(scored)} rows, expected {len(questions) * G}")
    terms = [row[4] for row in scored]
    correct = [row[5] for row in scored]
    names = sorted({k for t in terms for k in t})
    table = torch.tensor([[t.get(k, 0.0) for k in names] for t in terms], dtype=torch.float64)
    rewards = table.sum(1).float()
    adv = group_advantages(rewards, G, cfg.scale_rewards)
    grouped = rewards.view(-1, G)
    n = len(scored)
    stats = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()) if n > 1 else 0.0,
             "frac_zero_std_groups": float((grouped.max(1).values == grouped.min(1).values).float().mean()),
             "completion_length": sum(len(row[2]) for row in scored) / n,
             "hit_max_rate": sum(row[3] == "length" for row in scored) / n,
             "eos_rate": sum(row[3] == "eos" for row in scored) / n,
             "context_rate": sum(row[3] == "context" for row in scored) / n,
             "prompts_truncated": sum(row[6] > 0 for row in scored),
             "accuracy": sum(correct) / n}
    for j, k in enumerate(names):
        col = table[:, j]
        stats[f"reward/{k}_mean"] = float(col.mean())
        stats[f"reward/{k}_std"] = float(col.std()) if len(col) > 1 else 0.0
    rows = [{"prompt": texts[row[0]], "completion": row[7], "gold": golds[row[0]], "reward": float(rewards[k]),
             "reward_terms": row[4], "advantage": float(adv[k]), "correct": bool(row[5]), "finish_reason": row[3]}
            for k, row in enumerate(scored)]
    # the policy is trained on the prompt the engine saw: cut from the left to fit the context
    return Rollout([prompt_ids[row[0]][row[6]:] for row in scored], [row[2] for row in scored], rewards, adv, stats,
                   truncated=[row[3] in ("length", "context") for row in scored], rows=rows)


def train_on_rollout(model, ref_model, optimizer, rollout: Rollout, cfg: GRPOConfig, device, dtype,
                     schedule=None, info=None, ddp=None) -> list[dict]:
    """num_iterations optimizer steps on one rollout; one stats dict per step.

    `schedule(i)` gives the learning rate of the i-th step of this rollout (None = keep).
    Under DDP pass `info` and `ddp` (the DDP-wrapped `model`): this rank trains micro-batches
    rank, rank+W, ... of every step and the logged numbers are summed over ranks.
    """
    from domtok.train.common import all_reduce_sum, autocast, clip_gradients, grad_sync, set_lr

    W, rank = (info.world_size, info.rank) if info is not None else (1, 0)
    net = ddp if ddp is not None else model
    n = len(rollout.completions)
    mb = cfg.per_device_train_batch_size
    chunks = [list(range(i, min(i + mb, n))) for i in range(0, n, mb)]
    if len(chunks) % W:
        raise DomtokError(f"grpo: {len(chunks)} micro-batches per step must be divisible by the number of "
                          f"processes {W}; set gradient_accumulation_steps to a multiple of {W}")
    mine = list(range(rank, len(chunks), W))
    # mask_truncated_completions: a completion cut by the length limit keeps its reward (it
    # counts in its group's advantages) but none of its tokens enter the loss or dapo's count
    trained = [not (cfg.mask_truncated_completions and t) for t in rollout.truncated] or [True] * n
    n_tokens = sum(len(c) for c, k in zip(rollout.completions, trained) if k)  # the whole step's, on every rank
    take = lambda rows, xs: [xs[i] for i in rows]  # noqa: E731
    T = cfg.temperature
    old, ref = {}, {}
    with torch.no_grad():
        for j in mine:
            P, C = take(chunks[j], rollout.prompts), take(chunks[j], rollout.completions)
            if cfg.num_iterations > 1:  # the sampling policy's log-probs, fixed for every iteration
                with autocast(device, dtype):
                    old[j] = sequence_logprobs(model, P, C, device, T)[0]
            if cfg.beta > 0:
                with autocast(device, dtype):
                    ref[j] = sequence_logprobs(ref_model, P, C, device, T)[0]
    out = []
    net.train()
    for it in range(cfg.num_iterations):
        if schedule is not None:
            set_lr(optimizer, schedule(it))
        tot = {"loss": 0.0, "clipped": 0.0, "tokens": 0.0, "kl_sum": 0.0}
        for k, j in enumerate(mine):
            rows = chunks[j]
            P, C = take(rows, rollout.prompts), take(rows, rollout.completions)
            with grad_sync(net, k == len(mine) - 1):
                with autocast(device, dtype):
                    logp, m = sequence_logprobs(net, P, C, device, T)
                m = m & torch.tensor(take(rows, trained), device=m.device).unsqueeze(1)
                old_logp = old[j] if cfg.num_iterations > 1 else logp.detach()
                loss, st = policy_loss(logp, old_logp, ref.get(j), rollout.advantages[rows].to(device), m,
                                       epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta,
                                       loss_type=cfg.loss_type, max_completion_length=cfg.max_completion_length,
                                       n_seqs=n, n_tokens=n_tokens, use_bias_correction_kl=cfg.use_bias_correction_kl)
                # DDP averages gradients over W ranks; x W makes the synced gradient that of the
                # whole step's loss (each rank's part already carries the global normalisers)
                (loss * W).backward()
            tot["loss"] += float(loss.detach())
            for key in ("clipped", "tokens", "kl_sum"):
                tot[key] += st[key]
        gnorm = clip_gradients(model, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum, clipped, tokens, kl_sum = all_reduce_sum([tot["loss"], tot["clipped"], tot["tokens"], tot["kl_sum"]],
                                                           info, device) if W > 1 else list(tot.values())
        out.append({"loss": loss_sum, "grad_norm": gnorm, "clip_fraction": clipped / max(tokens, 1),
                    "kl": kl_sum / max(tokens, 1) if cfg.beta > 0 else 0.0,
                    "lr": optimizer.param_groups[0]["lr"]})
    return out


# --- data ------------------------------------------------------------------------------------

def load_prompts(cfg: GRPOConfig, tokenizer, token_set: str | None) -> tuple[list[str], list[str], list[str]]:
    """(questions, gold answers, rendered prompt texts) of the first num_prompts records."""
    from domtok.chat import render_prompt
    from domtok.notation import normalize_number, parse_gold
    from domtok.train.sft_data import load_records

    recs = load_records(cfg.prompts)
    if cfg.num_prompts:
        recs = recs[:cfg.num_prompts]
    qs, golds, texts = [], [], []
    skipped = {"no question or answer": [], "gold answer not a number": []}  # record indices
    for i, r in enumerate(recs):
        q, a = r.get("question"), r.get("answer", r.get("solution"))
        if not isinstance(q, str) or a is None:
            skipped["no question or answer"].append(i)
            continue
        try:
            gold = parse_gold(a) if "####" in str(a) else normalize_number(str(a))
        except ValueError:
            gold = None
        if gold is None:  # no reward could score it: left out, and said in the log
            skipped["gold answer not a number"].append(i)
            continue
        shown = q
        if cfg.inject_user and token_set:
            shown = tokenizer.inject(q).text  # the condition's injector settings, as in its training text
        qs.append(q)
        golds.append(gold)
        texts.append(render_prompt(shown))
    if not qs:
        raise DomtokError(f"grpo: no usable prompts in {cfg.prompts}; records need `question` and an `answer` "
                          "ending in '#### N' (or a plain number)")
    if any(skipped.values()):
        print(f"grpo: {sum(map(len, skipped.values()))} of {len(recs)} records of {cfg.prompts} left out: "
              + "; ".join(f"{why}: records {', '.join(map(str, ix[:10]))}{' …' if len(ix) > 10 else ''}"
                          for why, ix in skipped.items() if ix), flush=True)
    return qs, golds, texts


# --- stage entry point -----------------------------------------------------------------------

def run(cfg: GRPOConfig, out_dir: str | Path, resume: bool = False) -> dict:
    from domtok.engine import Engine
    from domtok.model import checkpoint
    from domtok.model.checkpoint import load_model
    from domtok.train import common
    from domtok.train.sft import injection_token_set
    from domtok.utils import dist_setup, seed_everything

    if not cfg.model:
        raise DomtokError("grpo: `model` is empty; set model=PATH to a model dir (usually an SFT output)")
    if not cfg.temperature > 0:
        raise DomtokError(f"grpo: temperature {cfg.temperature}; GRPO samples, and scores log-probs at "
                          "logits / temperature, so it must be > 0 (TRL's default is 1.0)")
    if cfg.loss_type not in ("grpo", "dr_grpo", "dapo"):
        raise DomtokError(f"grpo: loss_type {cfg.loss_type!r}; expected grpo, dr_grpo or dapo")
    info = dist_setup(cfg.device)
    C = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if cfg.num_generations < 2 or C % cfg.num_generations:
        raise DomtokError(f"grpo: per_device_train_batch_size x gradient_accumulation_steps ({C}) must be a "
                          f"multiple of num_generations ({cfg.num_generations}), and num_generations >= 2")
    if cfg.gradient_accumulation_steps % info.world_size:
        raise DomtokError(f"grpo: gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) must be divisible "
                          f"by the number of processes ({info.world_size}): each rank trains an equal share of a step")
    out_dir = Path(out_dir)
    device = info.device
    dtype = common.resolve_dtype(cfg.dtype, device)
    seed_everything(cfg.seed)
    model, tokenizer = load_model(cfg.model, device=device)
    token_set = injection_token_set(cfg.condition, tokenizer, "grpo")
    ref_model = None
    if cfg.beta > 0:  # a frozen copy of the initial policy; beta 0 never loads it
        ref_model, _ = load_model(cfg.model, device=device)
        ref_model.requires_grad_(False).eval()
    reward_fn = make_reward_fn(cfg.reward)
    questions, golds, texts = load_prompts(cfg, tokenizer, token_set)

    P = C // cfg.num_generations
    rounds = math.ceil(len(questions) * cfg.num_train_epochs / P)
    total_steps = cfg.max_steps or rounds * cfg.num_iterations
    rounds = math.ceil(total_steps / cfg.num_iterations)
    warmup = warmup_steps(cfg, total_steps)
    lr_factor(0, total_steps, warmup, cfg.lr_scheduler_type)  # a bad schedule fails before any work
    opt = common.configure_optimizer(model, cfg.learning_rate, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2),
                                     device_type=str(device).split(":")[0])
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        h = save_resolved(cfg, out_dir)
    else:
        h = config_hash(cfg)
    logger = common.MetricsLogger(out_dir, enabled=info.is_main, report_to=cfg.report_to,
                                  run_name=cfg.run_name or out_dir.name, config=dataclasses.asdict(cfg))
    start_round, step = 0, 0
    if resume and (ck := checkpoint.latest_checkpoint(out_dir)) is not None:
        st = checkpoint.load_checkpoint(ck, model, opt, map_location=device)
        common.check_checkpoint_config(ck, st, config_hash(cfg))
        start_round, step = st["round"], st["step"]
        common.set_rng_state(st["rng"])
        logger.truncate(step)
    ddp = common.wrap_ddp(model, info)  # after loading: DDP broadcasts rank 0's weights once
    engine = Engine(model, tokenizer, device=device, dtype=eval_dtype(device, dtype))
    t0 = time.time()
    bar = Progress(total_steps, "grpo", initial=step, enabled=info.is_main)
    for r in range(start_round, rounds):
        idx = [_prompt_order(len(questions), cfg.seed, pos) for pos in range(r * P, (r + 1) * P)]
        rollout = make_rollout(engine, tokenizer, [questions[i] for i in idx], [golds[i] for i in idx], reward_fn,
                               cfg, r, [texts[i] for i in idx], info=info)
        n_it = min(cfg.num_iterations, total_steps - step)
        sched = lambda it: cfg.learning_rate * lr_factor(step + it, total_steps, warmup, cfg.lr_scheduler_type)  # noqa: E731
        steps = train_on_rollout(model, ref_model, opt, rollout, dataclasses.replace(cfg, num_iterations=n_it), device, dtype, sched,
                                 info=info, ddp=ddp)
        for s in steps:
            step += 1
            row = {"step": step, "round": r + 1, **rollout.stats, **s, "elapsed_s": round(time.time() - t0, 3)}
            logger.log(row)
            bar.update(1, reward=rollout.stats["reward_mean"], accuracy=rollout.stats["accuracy"], loss=s["loss"])
            if cfg.log_completions and info.is_main and cfg.logging_steps > 0 and step % cfg.logging_steps == 0:
                log_completions(out_dir, step, rollout.rows, cfg.num_completions_to_print, cfg.seed, bar)
        if (cfg.save_steps and step % cfg.save_steps < n_it) or r + 1 == rounds:
            if info.is_main:
                state = {"step": step, "round": r + 1, "rng": common.rng_state(), "config_hash": config_hash(cfg)}
                checkpoint.save_checkpoint(out_dir, model, opt, state, tokenizer=tokenizer,
                                           keep_last=cfg.save_total_limit)
            common.barrier(info)
    bar.close()
    logger.close()
    history = logger.rows()  # the whole run, also across a resume (rank 0)
    first = [h_["reward_mean"] for h_ in history[:max(1, len(history) // 4)]]
    last = [h_["reward_mean"] for h_ in history[-max(1, len(history) // 4):]]
    summary = {"stage": "grpo", "condition": cfg.condition, "model_in": cfg.model, "config_hash": h, "seed": cfg.seed,
               "steps": step, "rounds": rounds, "prompts": len(questions), "reward": cfg.reward.kind,
               "reward_mean_first_quarter": sum(first) / len(first) if history else None,
               "reward_mean_last_quarter": sum(last) / len(last) if history else None,
               "accuracy_last": history[-1]["accuracy"] if history else None,
               "wall_time_s": round(time.time() - t0, 2)}
    if cfg.reward.kind == "shaped" and token_set:
        summary["note"] = "shaped reward includes the domain-token bonus, which only a domain condition can earn"
    if info.is_main:
        common.write_stage_outputs(out_dir, model, tokenizer, "grpo", h, cfg.model, summary,
                                   card={"seed": cfg.seed, "data": common.describe_data([cfg.prompts])})
    common.barrier(info)
    return summary


def log_completions(out_dir: Path, step: int, rows: list[dict], n_print: int | None, seed: int, bar) -> Path:
    """TRL's `log_completions`: the step's whole rollout to completions/completions_<step>.jsonl
    (one JSON per completion: prompt, completion, gold, reward, reward_terms, advantage, correct,
    finish_reason), and `n_print` of them, drawn at random (seeded by seed and step; None = all),
    as text in the log."""
    from domtok.utils import write_jsonl

    path = out_dir / "completions" / f"completions_{step:05d}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, [{"step": step, **r} for r in rows])
    shown = rows if n_print is None else random.Random(f"completions:{seed}:{step}").sample(rows, min(n_print, len(rows)))
    for r in shown:
        terms = ", ".join(f"{k} {v:+.2f}" for k, v in sorted(r["reward_terms"].items()))
        bar.write(f"completion at step {step} (reward {r['reward']:.2f}: {terms}; advantage {r['advantage']:+.2f}):\n"
                  f"{r['prompt']}{r['completion']}\n---")
    return path


def _prompt_order(n: int, seed: int, pos: int) -> int:
    """Prompt index at stream position `pos`: epoch after epoch of seeded permutations."""
    return stream_index(n, pos, "grpo", seed)


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_stage_arguments(p, "grpo", "model=runs/sft/model beta=0  (presets: grpo-shaped, grpo-binary)")


def main(args) -> int:
    s, out, is_main = common.run_stage_verb(args, GRPOConfig, "grpo", run)
    if is_main:
        print(f"grpo: {s['steps']} steps, mean reward {s['reward_mean_first_quarter']:.4f} (first quarter) -> "
              f"{s['reward_mean_last_quarter']:.4f} (last quarter) -> {out}/model", flush=True)
    return 0