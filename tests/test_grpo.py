"""GRPO and rewards: advantages, k3 KL, the loss, a step that follows the reward, the whole
stage with resume, 2 torchrun processes reproducing 1, and every reward term (incl. the exact
repetition rule)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_sft import tiny_model_dir  # noqa: E402

from domtok.errors import DomtokError  # noqa: E402
from domtok.train.grpo import (GRPOConfig, group_advantages, k3_kl, make_rollout, policy_loss,  # noqa: E402
                               run, sequence_logprobs, train_on_rollout)
from domtok.train.rewards import RewardConfig, has_repeated_trigram, make_reward_fn  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("grpo")


# --- advantages, KL, loss --------------------------------------------------------------------

@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_equal_rewards_in_a_group_give_zero_advantages(scale):
    r = torch.tensor([0.5, 0.5, 0.5, 0.5, 1.0, 0.0, 0.0, 0.0])
    adv = group_advantages(r, 4, scale)
    assert torch.equal(adv[:4], torch.zeros(4))
    assert adv[4] > 0 and (adv[5:] < 0).all()


def test_advantage_values():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert torch.allclose(group_advantages(r, 4, "none"), torch.tensor([0.75, -0.25, -0.25, -0.25]))
    std = torch.tensor([1.0, 0, 0, 0]).std()  # unbiased, as TRL
    assert torch.allclose(group_advantages(r, 4, "group"), torch.tensor([0.75, -0.25, -0.25, -0.25]) / (std + 1e-4))
    with pytest.raises(DomtokError):
        group_advantages(r, 4, "rank")


def test_kl_is_zero_when_policy_equals_reference(workdir):
    from domtok.model.checkpoint import load_model

    policy, tok = load_model(tiny_model_dir(workdir))
    ref = copy.deepcopy(policy)
    P = [tok.encode("User: What is 2 + 3?\nAssistant:")] * 2
    C = [tok.encode(" 5"), tok.encode(" 2 + 3 = 5")]
    lp, m = sequence_logprobs(policy, P, C, "cpu")
    with torch.no_grad():
        rlp, _ = sequence_logprobs(ref, P, C, "cpu")
    assert int(m.sum()) == sum(len(c) for c in C)
    loss, st = policy_loss(lp, lp.detach(), rlp, torch.zeros(2), m, epsilon=0.2, epsilon_high=None, beta=1.0,
                           loss_type="grpo", max_completion_length=8, n_seqs=2, n_tokens=int(m.sum()))
    assert st["kl_sum"] == 0.0 and float(loss.detach()) == 0.0
    # and positive once they differ
    assert (k3_kl(lp.detach(), rlp + 0.1 * m) * m).sum() > 0


def test_loss_types_normalise_over_the_whole_step():
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0])
    kw = dict(epsilon=0.2, epsilon_high=None, beta=0.0, max_completion_length=4, n_seqs=2, n_tokens=5)
    # ratio 1: per-token loss = -A
    grpo, _ = policy_loss(logp, logp.detach(), None, adv, mask, loss_type="grpo", **kw)
    dr, _ = policy_loss(logp, logp.detach(), None, adv, mask, loss_type="dr_grpo", **kw)
    dapo, _ = policy_loss(logp, logp.detach(), None, adv, mask, loss_type="dapo", **kw)
    assert float(grpo.detach()) == pytest.approx((-1 + 1) / 2)
    assert float(dr.detach()) == pytest.approx((-2 + 3) / (2 * 4))
    assert float(dapo.detach()) == pytest.approx((-2 + 3) / 5)
    grpo.backward()  # num_iterations == 1: ratio is 1 but the gradient flows
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, -0.25, 0], [1 / 6, 1 / 6, 1 / 6]]))


def test_clipping_counts_and_stops_gradient():
    logp = torch.log(torch.tensor([[1.5]])).requires_grad_()
    old = torch.zeros(1, 1)
    loss, st = policy_loss(logp, old, None, torch.tensor([1.0]), torch.ones(1, 1, dtype=torch.bool), epsilon=0.2,
                           epsilon_high=None, beta=0.0, loss_type="grpo", max_completion_length=1, n_seqs=1, n_tokens=1)
    loss.backward()
    assert st["clipped"] == 1.0 and float(logp.grad) == 0.0
    loss2, st2 = policy_loss(logp.detach(), old, None, torch.tensor([1.0]), torch.ones(1, 1, dtype=torch.bool),
                             epsilon=0.2, epsilon_high=0.6, beta=0.0, loss_type="dapo", max_completion_length=1,
                             n_seqs=1, n_tokens=1)
    assert st2["clipped"] == 0.0 and float(loss2) == pytest.approx(-1.5)


# --- a step follows the reward ---------------------------------------------------------------

def test_grpo_step_raises_probability_of_the_rewarded_token(workdir):
    from domtok.chat import render_prompt
    from domtok.engine import Engine
    from domtok.model.checkpoint import load_model
    from domtok.train.common import configure_optimizer

    model, tok = load_model(tiny_model_dir(workdir))
    cfg = GRPOConfig(num_generations=8, temperature=1.0, max_completion_length=3, per_device_train_batch_size=4,
                     gradient_accumulation_steps=2, learning_rate=1e-2, beta=0.0, seed=5)
    prompt = render_prompt("What is 2 + 3?")
    engine = Engine(model, tok, device="cpu")
    probe = make_rollout(engine, tok, ["q"], ["5"], lambda *a, **k: {"r": 0.0}, cfg, 0, [prompt])
    target = probe.completions[0][0]  # a first token the model does sample, so the group has variance
    prefers = lambda text, gold, ids, tokenizer, question="": {"target": float(ids[0] == target)}  # noqa: E731
    rollout = make_rollout(engine, tok, ["q"], ["5"], prefers, cfg, 0, [prompt])
    assert 0 < rollout.rewards.sum() < 8 and rollout.stats["frac_zero_std_groups"] == 0.0

    x = torch.tensor([tok.encode(prompt)])

    def p_target():
        with torch.no_grad():
            return float(torch.softmax(model(x)[0][0, -1].float(), -1)[target])

    before = p_target()
    opt = configure_optimizer(model, cfg.learning_rate, 0.0)
    (st,) = train_on_rollout(model, None, opt, rollout, cfg, "cpu", "float32")
    after = p_target()
    assert after > 1.5 * before, (before, after)
    assert st["kl"] == 0.0 and 0.0 <= st["clip_fraction"] <= 1.0


# --- the stage -------------------------------------------------------------------------------

def _prompts_file(path: Path) -> Path:
    from domtok.data.synthetic import drills

    rows = drills("tier1", 6, seed=7)
    path.write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in rows))
    return path


def test_grpo_run_logs_checkpoints_and_resumes_identically(workdir, tmp_path, monkeypatch):
    from domtok.model.checkpoint import load_model

    src = tiny_model_dir(workdir)
    data = _prompts_file(tmp_path / "q.jsonl")
    # a custom reward (import path) that varies inside every group: the policy must move
    (tmp_path / "len_reward.py").write_text(
        "def reward(text, gold, ids, tokenizer, question):\n    return {'len': len(ids) / 10, 'first': ids[0] % 3}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    base = dict(model=str(src), device="cpu", num_prompts=6,
                reward=RewardConfig(kind="len_reward:reward"), num_generations=2, per_device_train_batch_size=2,
                gradient_accumulation_steps=2, max_completion_length=6, temperature=1.0, learning_rate=1e-3,
                beta=0.1, num_iterations=2, seed=3)
    from domtok.train.sft_data import DataSource

    base["prompts"] = DataSource(kind="jsonl", path=str(data))
    s = run(GRPOConfig(**base, max_steps=4), tmp_path / "full")
    assert s["steps"] == 4 and (tmp_path / "full" / "manifest.json").exists()
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward_mean", "reward_std", "reward/len_mean", "reward/first_std", "frac_zero_std_groups",
                "completion_length", "hit_max_rate", "kl", "clip_fraction", "accuracy", "loss", "lr"):
        assert key in rows[0], key
    assert rows[1]["kl"] > 0  # second iteration on the same rollout: policy moved from the reference

    run(GRPOConfig(**base, max_steps=2), tmp_path / "cut")
    run(GRPOConfig(**base, max_steps=4), tmp_path / "cut", resume=True)
    a, _ = load_model(tmp_path / "full" / "model")
    b, _ = load_model(tmp_path / "cut" / "model")
    for (k, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), k


def test_beta_zero_loads_no_reference(workdir, tmp_path, monkeypatch):
    import domtok.model.checkpoint as ck
    from domtok.train.sft_data import DataSource

    calls = []
    real = ck.load_model
    monkeypatch.setattr(ck, "load_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    data = _prompts_file(tmp_path / "q.jsonl")
    run(GRPOConfig(model=str(tiny_model_dir(workdir)), device="cpu", prompts=DataSource(kind="jsonl", path=str(data)),
                   reward=RewardConfig(kind="binary"), num_generations=2, per_device_train_batch_size=2,
                   max_completion_length=4, beta=0.0, max_steps=1), tmp_path / "out")
    assert len(calls) == 1


def test_condition_mismatch_is_an_error(workdir, tmp_path):
    with pytest.raises(DomtokError, match="condition"):
        run(GRPOConfig(model=str(tiny_model_dir(workdir)), condition="mul_tokens", device="cpu"), tmp_path / "x")


# --- rewards ---------------------------------------------------------------------------------

class _Tok:
    def __init__(self, domain: bool):
        self.uses_domain_tokens = domain

    def count_domain_tokens(self, ids):
        return sum(i >= 1000 for i in ids)


def test_shaped_reward_terms():
    f = make_reward_fn(RewardConfig(kind="shaped"))
    tok = _Tok(True)
    assert f("3 + 4 = 7\n#### 7", "7", [1, 1000], tok) == {"correct": 1.0, "close": 0.0, "shows_work": 0.0,
                                                            "short": 0.0, "repetition": 0.0, "domain": 0.0}
    t = f("3 + 4 = 8\n#### 8", "7", [1000], tok)  # wrong, close (within 1), shows work, domain, short
    assert t == {"correct": 0.0, "close": 0.3, "shows_work": 0.1, "domain": 0.2, "short": 0.1, "repetition": 0.0}
    assert sum(t.values()) == pytest.approx(0.7)
    assert f("The answer is 105", "100", [1], tok)["close"] == 0.3  # within 10%
    assert f("The answer is 111", "100", [1], tok)["close"] == 0.0
    assert f("The answer is 8", "7", [1], _Tok(False))["domain"] == 0.0  # no bonus in the baseline
    fair = make_reward_fn(RewardConfig(kind="shaped_fair"))("3 + 4 = 8", "7", [1000], tok)
    assert "domain" not in fair
    long = " ".join(f"w{i}" for i in range(150))
    assert f(long, "7", [1], tok)["short"] == 0.0
    w = make_reward_fn(RewardConfig(kind="shaped", close=0.5, short=0.0))("#### 8", "7", [1], tok)
    assert w["close"] == 0.5 and w["short"] == 0.0  # weights are config


def test_repetition_rule_is_exact():
    nine = "the cat sat the cat sat the cat sat"  # 9 words: too short to count
    assert not has_repeated_trigram(nine)
    assert has_repeated_trigram(nine + " down")  # 10 words, 'the cat sat' x3
    assert not has_repeated_trigram("the cat sat on a mat and the cat sat by the door")  # only twice
    assert has_repeated_trigram("a a a a a b c d e f")  # overlapping occurrences count
    assert has_repeated_trigram("The cat sat. the cat sat the CAT sat x y z w".replace(".", ""))  # case-folded
    f = make_reward_fn(RewardConfig(kind="shaped"))
    assert f(nine + " down", "7", [1], _Tok(False))["repetition"] == -0.3


def test_binary_and_custom_rewards(tmp_path, monkeypatch):
    b = make_reward_fn(RewardConfig(kind="binary"))
    assert b("#### 7", "7", [], None) == {"correct": 1.0} and b("#### 8", "7", [], None) == {"correct": 0.0}
    (tmp_path / "my_rewards.py").write_text(
        "def length_bonus(text, gold, ids, tokenizer, question):\n    return {'len': len(ids) / 10}\n"
        "def flat(text, gold, ids, tokenizer, question):\n    return 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert make_reward_fn(RewardConfig(kind="my_rewards:length_bonus"))("x", "1", [1, 2], None) == {"len": 0.2}
    assert make_reward_fn(RewardConfig(kind="my_rewards:flat"))("x", "1", [], None) == {"reward": 0.5}
    with pytest.raises(DomtokError, match="cannot import"):
        make_reward_fn(RewardConfig(kind="my_rewards:missing"))
    with pytest.raises(DomtokError, match="binary, shaped"):
        make_reward_fn(RewardConfig(kind="bogus"))


# --- torchrun: 2 processes compute the 1-process run ------------------------------------------

def torchrun(nproc: int, argv: list[str], env: dict, timeout: float = 150):
    """`python -m torch.distributed.run ... -m domtok ARGV` in its own process group: ranks that
    disagree deadlock in a collective, so on timeout the whole group (workers too) is killed."""
    import os
    import signal
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             str(nproc), "-m", "domtok", *argv], env={**env, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun {' '.join(argv[:2])} hung for {timeout} s (ranks out of step?)")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_torchrun_two_processes_match_one(workdir, tmp_path):
    """Sharded sampling (global row seeds), gathered rewards with batch-scaled advantages,
    dapo's whole-step token count, KL to a reference on each rank, 2 iterations per rollout:
    the 2-process gloo run logs the same curve and ends on the same weights, also when it is
    cut after a rollout and resumed under torchrun."""
    import os

    import yaml

    from domtok.config import load_config
    from domtok.model.checkpoint import load_model

    data = _prompts_file(tmp_path / "q.jsonl")
    (tmp_path / "len_reward_dist.py").write_text(
        "def reward(text, gold, ids, tokenizer, question):\n    return {'len': len(ids) / 10, 'first': ids[0] % 3}\n")
    cfg = {"grpo": {"model": str(tiny_model_dir(workdir)), "device": "cpu", "num_prompts": 6, "seed": 4,
                    "prompts": {"kind": "jsonl", "path": str(data)}, "reward": {"kind": "len_reward_dist:reward"},
                    "num_generations": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
                    "max_completion_length": 6, "temperature": 1.0, "learning_rate": 1e-3, "beta": 0.1,
                    "num_iterations": 2, "loss_type": "dapo", "scale_rewards": "batch", "max_steps": 3}}
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    sys.path.insert(0, str(tmp_path))
    try:
        run(load_config(GRPOConfig, path, section="grpo"), tmp_path / "one")  # 1 process, in this one
    finally:
        sys.path.remove(str(tmp_path))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(root / "src"), str(tmp_path)])}
    two = torchrun(2, ["grpo", str(path), "--out", str(tmp_path / "two")], env)
    assert two.returncode == 0, two.stderr[-3000:]
    r1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    r2 = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in r1] == [r["step"] for r in r2] == [1, 2, 3]
    assert all(r["reward_std"] > 0 for r in r1)  # rewards vary inside the batch: a real signal
    for a, b in zip(r1, r2):
        for key in ("loss", "reward_mean", "reward_std", "reward/len_mean", "completion_length", "kl",
                    "clip_fraction", "grad_norm", "accuracy"):
            assert abs(a[key] - b[key]) < 1e-5, (key, a, b)
    assert r1[1]["kl"] > 0 and r1[1]["loss"] != 0
    m1, _ = load_model(tmp_path / "one" / "model")
    m2, _ = load_model(tmp_path / "two" / "model")
    m0, _ = load_model(tiny_model_dir(workdir))
    moved = 0.0
    for (k, pa), (_, pb), (_, p0) in zip(m1.state_dict().items(), m2.state_dict().items(), m0.state_dict().items()):
        assert torch.allclose(pa, pb, atol=1e-5, rtol=0), k
        moved = max(moved, float((pa - p0).abs().max()))
    assert moved > 1e-4  # training moved the weights, so agreement is not trivial
    assert (tmp_path / "two" / "manifest.json").exists() and len(list((tmp_path / "two").glob("checkpoints/*"))) >= 1

    # killed after the first rollout (2 steps), resumed under torchrun: the same run again
    cut = torchrun(2, ["grpo", str(path), "max_steps=2", "--out", str(tmp_path / "cut")], env)
    assert cut.returncode == 0, cut.stderr[-3000:]
    res = torchrun(2, ["grpo", str(path), "--resume", "--out", str(tmp_path / "cut")], env)
    assert res.returncode == 0, res.stderr[-3000:]
    r3 = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in r3] == [1, 2, 3] and abs(r3[2]["loss"] - r1[2]["loss"]) < 1e-5
    m3, _ = load_model(tmp_path / "cut" / "model")
    for (k, pa), (_, pc) in zip(m1.state_dict().items(), m3.state_dict().items()):
        assert torch.allclose(pa, pc, atol=1e-5, rtol=0), k
