"""domtok's GRPO against TRL's own GRPOTrainer, on one fixed batch, at temperature 0.7.

TRL (the `dev` extra) builds the batch with its own `_generate_and_score_completions`
(tokenising, padding, masks, rewards -> advantages, reference log-probs) and computes the
loss with its own `compute_loss`; only the sampler is replaced by fixed completions. domtok
runs `train_on_rollout` (two micro-batches of an accumulated step) on a native model with the
same weights (exported with `domtok.model.hf`). Advantages, loss, logged KL and every
parameter's gradient must agree within 1e-5 for loss_type grpo / dr_grpo / dapo x
scale_rewards group / batch / none x beta 0 / 0.1 x use_bias_correction_kl on / off, with
mask_truncated_completions, and for a second iteration on the same rollout (ratio != 1,
clipping active).

The batch: 3 prompts x 4 completions of lengths 1..6, some ending in EOS, the others cut at
max_completion_length; one group has equal rewards (advantage 0). The prompts have equal token
lengths on purpose: TRL left-pads prompts, and `transformers`' GPT-2 then gives the padding
positions real position ids, so a shorter prompt's tokens sit at shifted positions. That is
TRL's deviation (domtok right-pads and starts every sequence at position 0), not a
difference in the objective, so the comparison avoids it.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_sft import tiny_model_dir  # noqa: E402

from domtok.train.grpo import GRPOConfig, Rollout, group_advantages, train_on_rollout  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

G, MAX_LEN, TEMPERATURE = 4, 6, 0.7
QUESTIONS = ["What is 2 + 3?", "What is 4 + 1?", "What is 7 + 2?"]
REWARDS = [1.0, 0.0, 0.5, 0.2,   0.3, 0.3, 0.3, 0.3,   0.0, 1.0, 1.0, 0.1]  # group 2: all equal
LENGTHS = [3, 6, 1, 6,   2, 6, 4, 5,   6, 3, 6, 2]  # < MAX_LEN: ends in EOS; == MAX_LEN: cut at the limit


class GradCapture(torch.optim.SGD):
    """SGD that keeps a copy of the gradients it stepped on (train_on_rollout zeroes them)."""

    def __init__(self, named_params, lr):
        self.names = dict(named_params)
        super().__init__(self.names.values(), lr=lr)
        self.grads: list[dict[str, torch.Tensor]] = []

    def step(self, closure=None):
        self.grads.append({n: p.grad.detach().clone() for n, p in self.names.items()})
        return super().step(closure)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import transformers
    import trl
    from datasets import Dataset

    from domtok.chat import render_prompt
    from domtok.model.checkpoint import load_model, save_model_dir
    from domtok.model.hf import export_hf

    root = tmp_path_factory.mktemp("grpo_trl")
    policy, tok = load_model(tiny_model_dir(root))
    ref = copy.deepcopy(policy)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a reference that differs from the policy, so the KL term is not 0
        for p in ref.parameters():
            p.add_(2.0 * p.std() * torch.randn(p.shape, generator=gen))
    save_model_dir(policy, tok, root / "policy")
    save_model_dir(ref, tok, root / "ref")
    export_hf(root / "policy", root / "policy_hf")
    export_hf(root / "ref", root / "ref_hf")

    prompts = [render_prompt(q) for q in QUESTIONS]
    prompt_ids = [tok.encode(p) for p in prompts]
    assert len({len(p) for p in prompt_ids}) == 1, "prompts must have equal token lengths (see the docstring)"
    eos = tok.eot_id
    completions = []
    for n in LENGTHS:
        body = torch.randint(3, eos, (n,), generator=gen).tolist()
        completions.append(body[:-1] + [eos] if n < MAX_LEN else body)

    hf_tok = transformers.AutoTokenizer.from_pretrained(root / "policy_hf")
    hf_policy = transformers.GPT2LMHeadModel.from_pretrained(root / "policy_hf")
    args = trl.GRPOConfig(output_dir=str(root / "trl"), per_device_train_batch_size=len(LENGTHS), num_generations=G,
                          gradient_accumulation_steps=1, max_completion_length=MAX_LEN, temperature=TEMPERATURE,
                          beta=0.1, report_to="none", use_cpu=True, bf16=False, gradient_checkpointing=False,
                          save_strategy="no", seed=0)
    trainer = trl.GRPOTrainer(model=hf_policy, reward_funcs=[lambda prompts, completions, **kw: list(REWARDS)],
                              args=args, train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                              processing_class=hf_tok)
    # TRL builds its reference from the policy's path; give it the perturbed weights
    ref_hf = transformers.GPT2LMHeadModel.from_pretrained(root / "ref_hf")
    trainer.ref_model.load_state_dict(ref_hf.state_dict())
    # the sampler is the one part replaced: fixed completions instead of model.generate
    trainer._generate_single_turn = lambda *a, **k: ([list(c) for c in completions], None)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; one batch = one step here
    ref.requires_grad_(False).eval()
    return dict(trainer=trainer, prompts=prompts, prompt_ids=prompt_ids, completions=completions, eos=eos,
                policy=policy, ref=ref)


def trl_step(world, *, loss_type, scale_rewards, beta, bias_kl, mask_truncated=False, num_iterations=1):
    """TRL: build the batch (advantages, ref / old log-probs) for these settings.

    One trainer serves the whole grid: the settings are set on the attributes that
    GRPOTrainer.__init__ copies them to from its GRPOConfig (and on args, which the loss reads)."""
    tr = world["trainer"]
    tr.loss_type, tr.scale_rewards, tr.beta = loss_type, scale_rewards, beta
    tr.args.use_bias_correction_kl = bias_kl
    tr.mask_truncated_completions = mask_truncated
    tr.num_iterations = num_iterations  # > 1: TRL keeps the sampling policy's log-probs as old_per_token_logps
    tr._metrics["train"].clear()
    rows = [p for p in world["prompts"] for _ in range(G)]
    inputs = tr._generate_and_score_completions([{"prompt": p} for p in rows])
    assert inputs["prompt_ids"].tolist() == [p for p in world["prompt_ids"] for _ in range(G)]
    return tr, inputs


def trl_loss_and_grads(tr, inputs):
    tr.model.zero_grad(set_to_none=True)
    loss = tr.compute_loss(tr.model, inputs)
    loss.backward()
    kl = tr._metrics["train"]["kl"][-1] if tr.beta != 0 else 0.0
    return float(loss.detach()), {n: p.grad.detach().clone() for n, p in tr.model.named_parameters()}, kl


def domtok_setup(world, *, loss_type, scale_rewards, beta, bias_kl, mask_truncated=False, num_iterations=1, lr=0.0):
    policy, ref = copy.deepcopy(world["policy"]), world["ref"]  # the weights exported for TRL
    cfg = GRPOConfig(num_generations=G, per_device_train_batch_size=len(LENGTHS) // 2, gradient_accumulation_steps=2,
                     max_completion_length=MAX_LEN, temperature=TEMPERATURE, beta=beta, loss_type=loss_type,
                     scale_rewards=scale_rewards, use_bias_correction_kl=bias_kl,
                     mask_truncated_completions=mask_truncated, num_iterations=num_iterations, max_grad_norm=0.0)
    r = torch.tensor(REWARDS)
    C = world["completions"]
    rollout = Rollout([p for p in world["prompt_ids"] for _ in range(G)], [list(c) for c in C], r,
                      group_advantages(r, G, scale_rewards), {}, truncated=[c[-1] != world["eos"] for c in C])
    opt = GradCapture(policy.named_parameters(), lr=lr)
    return policy, ref, cfg, rollout, opt


def assert_grads_match(native_grads: dict, hf_grads: dict):
    from domtok.model.checkpoint import is_conv1d

    assert native_grads
    for name, g in native_grads.items():
        hf_name = "transformer.wte.weight" if name == "lm_head.weight" else name  # tied: one parameter
        h = hf_grads[hf_name]
        h = h.t() if is_conv1d(name) else h
        torch.testing.assert_close(g, h, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    assert max(float(g.abs().max()) for g in native_grads.values()) > 1e-3  # a real gradient, not zeros


@pytest.mark.parametrize("bias_kl", [True, False])
@pytest.mark.parametrize("beta", [0.0, 0.1])
@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_advantages_loss_and_gradients_match_trl(world, loss_type, scale_rewards, beta, bias_kl):
    kw = dict(loss_type=loss_type, scale_rewards=scale_rewards, beta=beta, bias_kl=bias_kl)
    tr, inputs = trl_step(world, **kw)
    policy, ref, cfg, rollout, opt = domtok_setup(world, **kw)
    torch.testing.assert_close(rollout.advantages, inputs["advantages"].float(), atol=1e-5, rtol=1e-5)
    assert inputs["advantages"][G:2 * G].abs().max() == 0  # the equal-reward group
    loss, hf_grads, kl = trl_loss_and_grads(tr, inputs)
    (st,) = train_on_rollout(policy, ref, opt, rollout, cfg, "cpu", "float32")
    assert st["loss"] == pytest.approx(loss, abs=1e-5)
    assert st["kl"] == pytest.approx(kl, abs=1e-5)
    assert (st["kl"] > 0.05) == (beta > 0)  # the reference really differs from the policy
    assert_grads_match(opt.grads[0], hf_grads)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_mask_truncated_completions_matches_trl(world, loss_type):
    kw = dict(loss_type=loss_type, scale_rewards="group", beta=0.1, bias_kl=True, mask_truncated=True)
    tr, inputs = trl_step(world, **kw)
    policy, ref, cfg, rollout, opt = domtok_setup(world, **kw)
    truncated = torch.tensor(rollout.truncated)
    assert 0 < truncated.sum() < len(truncated)
    assert inputs["completion_mask"][truncated].sum() == 0  # TRL's mask agrees on which rows are cut
    loss, hf_grads, _ = trl_loss_and_grads(tr, inputs)
    (st,) = train_on_rollout(policy, ref, opt, rollout, cfg, "cpu", "float32")
    assert st["loss"] == pytest.approx(loss, abs=1e-5)
    assert_grads_match(opt.grads[0], hf_grads)
    # and the mask matters: without it the loss is another number
    policy2, ref2, cfg2, rollout2, opt2 = domtok_setup(world, **{**kw, "mask_truncated": False})
    (st2,) = train_on_rollout(policy2, ref2, opt2, rollout2, cfg2, "cpu", "float32")
    assert abs(st2["loss"] - st["loss"]) > 1e-3


@pytest.mark.parametrize("bias_kl", [True, False])
def test_second_iteration_with_old_policy_matches_trl(world, bias_kl):
    """num_iterations 2: the old policy's log-probs (at the temperature) stay fixed while the
    policy moves; after one identical SGD step on both sides, ratios differ from 1 and clip."""
    lr = 1.0
    kw = dict(loss_type="dapo", scale_rewards="group", beta=0.1, bias_kl=bias_kl, num_iterations=2)
    tr, inputs = trl_step(world, **kw)
    assert "old_per_token_logps" in inputs
    policy, ref, cfg, rollout, opt = domtok_setup(world, **kw, lr=lr)
    hf_start = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    try:
        loss1, hf_grads1, _ = trl_loss_and_grads(tr, inputs)
        with torch.no_grad():
            for n, p in tr.model.named_parameters():
                p.sub_(lr * hf_grads1[n])
        loss2, hf_grads2, _ = trl_loss_and_grads(tr, inputs)
    finally:
        with torch.no_grad():
            for n, p in tr.model.named_parameters():
                p.copy_(hf_start[n])
    st1, st2 = train_on_rollout(policy, ref, opt, rollout, cfg, "cpu", "float32")
    assert st1["loss"] == pytest.approx(loss1, abs=1e-5)
    assert_grads_match(opt.grads[0], hf_grads1)
    assert st2["clip_fraction"] > 0  # the policy moved: some ratios leave [1 - eps, 1 + eps]
    clipped = tr._metrics["train"]["clip_ratio/region_mean"][-1]
    assert st2["clip_fraction"] == pytest.approx(clipped, abs=1e-6)
    assert st2["loss"] == pytest.approx(loss2, abs=1e-5)
    assert_grads_match(opt.grads[1], hf_grads2)


# --- defaults and the learning-rate schedule --------------------------------------------------

# domtok's own conventions where a TRL/transformers name is shared on purpose with another default
DIFFERS_ON_PURPOSE = {
    "seed": "0, domtok's seed everywhere (transformers: 42)",
    "max_steps": "0 = unset (transformers: -1 = unset)",
    "save_steps": "0 = checkpoint at the end only (transformers: every 500 steps)",
    "save_total_limit": "2 checkpoints kept (transformers: all)",
}


def test_batch_knobs_have_trls_meaning_and_decode_batch_size_is_domtoks(tmp_path):
    """TRL's generation_batch_size counts the completions of one rollout; domtok's rollout is
    per_device_train_batch_size x gradient_accumulation_steps completions, as TRL's default
    (steps_per_generation = gradient_accumulation_steps). The Engine's decode rows are
    domtok's own knob under a name TRL does not have; the old name says where it went."""
    import dataclasses

    import trl

    from domtok.config import ConfigError, from_dict

    trl_names = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    assert "decode_batch_size" not in trl_names and "generation_batch_size" in trl_names
    assert "generation_batch_size" not in {f.name for f in dataclasses.fields(GRPOConfig)}
    for pd, ga, g in [(4, 2, 4), (8, 1, 8), (2, 8, 4)]:
        trl_cfg = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=pd,
                                 gradient_accumulation_steps=ga, num_generations=g, report_to="none",
                                 use_cpu=True, bf16=False)
        ours = GRPOConfig(per_device_train_batch_size=pd, gradient_accumulation_steps=ga, num_generations=g)
        rollout = ours.per_device_train_batch_size * ours.gradient_accumulation_steps  # grpo.run's C, one process
        assert trl_cfg.generation_batch_size == rollout
        assert trl_cfg.generation_batch_size // trl_cfg.num_generations == rollout // ours.num_generations  # prompts
    with pytest.raises(ConfigError, match="generation_batch_size is now decode_batch_size"):
        from_dict(GRPOConfig, {"generation_batch_size": 8}, "grpo")


def test_defaults_are_trls():
    """Invariant 10: a knob named after TRL's has TRL's default (the installed TRL)."""
    import dataclasses

    import trl

    trl_defaults = {f.name: f.default for f in dataclasses.fields(trl.GRPOConfig)}
    shared = [f for f in dataclasses.fields(GRPOConfig) if f.name in trl_defaults and f.name not in DIFFERS_ON_PURPOSE]
    assert {"loss_type", "use_bias_correction_kl", "mask_truncated_completions", "lr_scheduler_type", "warmup_steps",
            "temperature", "beta", "scale_rewards", "max_completion_length"} <= {f.name for f in shared}
    for f in shared:
        assert f.default == trl_defaults[f.name], (f.name, f.default, trl_defaults[f.name])
    assert GRPOConfig().loss_type == "dapo" and GRPOConfig().use_bias_correction_kl is True


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant_with_warmup", "constant"])
@pytest.mark.parametrize("total,warmup", [(10, 0), (10, 3), (7, 1), (1, 0)])
def test_lr_schedule_is_transformers(kind, total, warmup):
    """lr_factor(k) is the multiplier transformers' scheduler applies at optimizer step k."""
    from transformers import get_scheduler

    from domtok.train.grpo import lr_factor

    if kind == "constant" and warmup:
        with pytest.raises(Exception, match="constant_with_warmup"):
            lr_factor(0, total, warmup, kind)
        return
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler(kind, opt, num_warmup_steps=warmup, num_training_steps=total)
    want = []
    for _ in range(total):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [lr_factor(k, total, warmup, kind) for k in range(total)] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("steps,ratio,total", [(0, 0.0, 40), (5, 0.0, 40), (0.1, 0.0, 41), (0, 0.1, 41), (3, 0.5, 40)])
def test_warmup_steps_count_like_transformers(steps, ratio, total):
    import transformers

    from domtok.train.grpo import warmup_steps

    import dataclasses

    if "warmup_ratio" in {f.name for f in dataclasses.fields(transformers.TrainingArguments)}:  # transformers 4
        if 0 < steps < 1:
            pytest.skip("transformers 4 has no fractional warmup_steps")
        args = transformers.TrainingArguments(output_dir="unused", warmup_steps=int(steps), warmup_ratio=ratio,
                                              report_to="none")
    else:  # transformers 5: one knob, a value < 1 is the ratio
        args = transformers.TrainingArguments(output_dir="unused", warmup_steps=steps or ratio, report_to="none")
    want = args.get_warmup_steps(total)
    assert warmup_steps(GRPOConfig(warmup_steps=steps, warmup_ratio=ratio), total) == want
