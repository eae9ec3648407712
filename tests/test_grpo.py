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
                               run, scored_ids, sequence_logprobs, train_on_rollout)
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


def test_bias_corrected_kl_weights_k3_by_the_ratio_and_changes_its_gradient():
    """k3 x ratio with ratio = exp(logp - sg(logp)): the same value at ratio 1, but the gradient
    gains k3 itself: d/dlogp [k3 * ratio] = (1 - exp(d)) + k3 with d = ref - logp."""
    ref = torch.log(torch.tensor([[0.5, 0.2]]))
    grads = {}
    for bias in (True, False):
        logp = torch.log(torch.tensor([[0.25, 0.4]])).requires_grad_()
        loss, st = policy_loss(logp, logp.detach(), ref, torch.zeros(1), torch.ones(1, 2, dtype=torch.bool),
                               epsilon=0.2, epsilon_high=None, beta=1.0, loss_type="dapo", max_completion_length=2,
                               n_seqs=1, n_tokens=2, use_bias_correction_kl=bias)
        loss.backward()
        grads[bias] = logp.grad.clone()
        k3 = k3_kl(logp.detach(), ref)
        assert st["kl_sum"] == pytest.approx(float(k3.sum()))
    d = ref - torch.log(torch.tensor([[0.25, 0.4]]))
    assert torch.allclose(grads[False], (1 - torch.exp(d)) / 2)
    assert torch.allclose(grads[True], (1 - torch.exp(d) + k3_kl(-d * 0, d)) / 2)
    # off-policy (ratio != 1) the value is weighted too
    logp, old = torch.zeros(1, 1), torch.log(torch.tensor([[0.5]]))
    plain, _ = policy_loss(logp, old, ref[:, :1], torch.zeros(1), torch.ones(1, 1, dtype=torch.bool), epsilon=10.0,
                           epsilon_high=None, beta=1.0, loss_type="dapo", max_completion_length=1, n_seqs=1,
                           n_tokens=1, use_bias_correction_kl=False)
    weighted, _ = policy_loss(logp, old, ref[:, :1], torch.zeros(1), torch.ones(1, 1, dtype=torch.bool), epsilon=10.0,
                              epsilon_high=None, beta=1.0, loss_type="dapo", max_completion_length=1, n_seqs=1,
                              n_tokens=1, use_bias_correction_kl=True)
    assert float(weighted) == pytest.approx(2.0 * float(plain))


def test_sequence_logprobs_use_the_sampling_temperature(workdir):
    from domtok.model.checkpoint import load_model

    model, tok = load_model(tiny_model_dir(workdir))
    P, C = [tok.encode("User: What is 2 + 3?\nAssistant:")], [tok.encode(" 5")]
    x = torch.tensor([P[0] + C[0][:-1]])
    with torch.no_grad():
        logits = model(x)[0][0, len(P[0]) - 1:].float()
        lp, m = sequence_logprobs(model, P, C, "cpu", temperature=0.7)
    want = torch.log_softmax(logits / 0.7, -1).gather(-1, torch.tensor(C[0]).unsqueeze(1)).squeeze(1)
    assert torch.allclose(lp[m], want, atol=1e-6)
    assert not torch.allclose(lp[m], sequence_logprobs(model, P, C, "cpu")[0][m], atol=1e-3)


# --- what is trained is what was scored ------------------------------------------------------

def test_scored_ids_end_where_the_scored_text_ends(workdir):
    from domtok.model.checkpoint import load_model

    _, tok = load_model(tiny_model_dir(workdir))
    ids = tok.encode(" 2 + 3 = 5\nUser: What")
    kept = scored_ids(ids, " 2 + 3 = 5", "stop", tok)
    assert tok.decode(kept) == " 2 + 3 = 5" and kept == ids[:len(kept)] and len(kept) < len(ids)
    assert scored_ids(ids, "x", "length", tok) == ids  # a length-limited completion keeps every id
    eos_ids = tok.encode(" 5") + [tok.eot_id]
    assert scored_ids(eos_ids, " 5", "eos", tok) == eos_ids  # the EOS is trained, as in TRL


def test_scored_ids_drop_a_token_that_straddles_the_cut():
    class Pieces:  # id -> text; " 5\n\nUser:" is cut before "\nUser:", inside the "\n\n" token
        pieces = {1: " 5", 2: "\n\n", 3: "User", 4: ":"}

        def decode(self, ids):
            return "".join(self.pieces[i] for i in ids)

    assert scored_ids([1, 2, 3, 4], " 5\n", "stop", Pieces()) == [1]
    assert scored_ids([2, 3, 4], "\n", "stop", Pieces()) == []


class _FakeEngine:
    """An Engine stand-in that returns fixed generations (one of each finish reason)."""

    def __init__(self, model, gens):
        self.model, self.gens = model, gens

    def generate(self, prompt_ids, params, num_samples, batch_size, only):
        return self.gens


def test_rollout_trains_the_scored_ids_and_flags_truncation(workdir):
    from domtok.engine import Generation
    from domtok.model.checkpoint import load_model

    model, tok = load_model(tiny_model_dir(workdir))
    stop = tok.encode(" 4 + 1 = 5\nUser:")
    gens = [Generation(0, 0, stop, " 4 + 1 = 5", "stop", len(stop)),
            Generation(0, 1, tok.encode(" 5") + [tok.eot_id], " 5", "eos", 2),
            Generation(0, 2, tok.encode(" 1 2 3 4"), " 1 2 3 4", "length", 4),
            Generation(0, 3, tok.encode(" 6"), " 6", "stop", 1)]
    seen = []

    def reward(text, gold, ids, tokenizer, question=""):
        seen.append((text, list(ids)))
        return {"len": float(len(ids))}

    cfg = GRPOConfig(num_generations=4, max_completion_length=4, temperature=0.7)
    ro = make_rollout(_FakeEngine(model, gens), tok, ["q"], ["5"], reward, cfg, 0, ["User: q\nAssistant:"])
    assert tok.decode(ro.completions[0]) == " 4 + 1 = 5"  # no `\nUser:` tokens left to reinforce
    assert ro.completions[1] == gens[1].ids and ro.completions[2] == gens[2].ids
    assert [ids for _, ids in seen] == ro.completions  # the reward saw the ids that are trained
    assert ro.truncated == [False, False, True, False]


def test_mask_truncated_completions_leaves_them_out_of_the_loss(workdir):
    from domtok.model.checkpoint import load_model
    from domtok.train.common import configure_optimizer
    from domtok.train.grpo import Rollout

    model, tok = load_model(tiny_model_dir(workdir))
    P = [tok.encode("User: q\nAssistant:")] * 2
    C = [tok.encode(" 5") + [tok.eot_id], tok.encode(" 1 2 3")]
    ro = Rollout(P, C, torch.tensor([1.0, 0.0]), torch.tensor([1.0, -1.0]), {}, truncated=[False, True])
    cfg = GRPOConfig(num_generations=2, per_device_train_batch_size=2, loss_type="dapo", mask_truncated_completions=True,
                     max_completion_length=3, max_grad_norm=0.0)
    opt = configure_optimizer(model, 0.0, 0.0)
    (st,) = train_on_rollout(model, None, opt, ro, cfg, "cpu", "float32")
    # ratio 1: per-token loss -A; only the first completion's 2 tokens count (dapo: / 2)
    assert st["loss"] == pytest.approx(-1.0, abs=1e-6)
    (st2,) = train_on_rollout(model, None, opt, ro, GRPOConfig(**{**cfg.__dict__, "mask_truncated_completions": False}),
                              "cpu", "float32")
    assert st2["loss"] == pytest.approx((-2 + 3) / 5, abs=1e-6)


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
    from domtok.data.drills import drills

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
                beta=0.1, num_iterations=2, seed=3, save_steps=2)
    from domtok.train.sft_data import DataSource

    base["prompts"] = DataSource(kind="jsonl", path=str(data))
    s = run(GRPOConfig(**base, max_steps=4), tmp_path / "full")
    assert s["steps"] == 4 and (tmp_path / "full" / "summary.json").exists()
    assert not (tmp_path / "full" / "manifest.json").exists()  # the caller writes it (domtok.manifest)
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward_mean", "reward_std", "reward/len_mean", "reward/first_std", "frac_zero_std_groups",
                "completion_length", "hit_max_rate", "kl", "clip_fraction", "accuracy", "loss", "lr"):
        assert key in rows[0], key
    assert rows[1]["kl"] > 0  # second iteration on the same rollout: policy moved from the reference
    # TRL's default schedule: linear from learning_rate to 0 over the run's 4 steps
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 0.75e-3, 0.5e-3, 0.25e-3])

    # killed right after the step-2 checkpoint (the same config: the lr schedule spans 4 steps),
    # then resumed
    import domtok.model.checkpoint as ck

    class Killed(Exception):
        pass

    real_save = ck.save_checkpoint

    def save_then_die(*a, **k):
        real_save(*a, **k)
        raise Killed

    monkeypatch.setattr(ck, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run(GRPOConfig(**base, max_steps=4), tmp_path / "cut")
    monkeypatch.setattr(ck, "save_checkpoint", real_save)
    assert not (tmp_path / "cut" / "manifest.json").exists()
    with pytest.raises(DomtokError, match="written by a different config"):  # as pretraining refuses
        run(GRPOConfig(**{**base, "learning_rate": 2e-3}, max_steps=4), tmp_path / "cut", resume=True)
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


def test_shaped_fair_scores_a_domain_token_like_its_spelled_out_fact():
    """shows_work and the word count read the text with tokens expanded to `a × b = c`, so
    the two conditions earn the same terms for the same content."""
    from domtok.tokens.sets import get_token_set

    class Tok(_Tok):
        token_set = get_token_set("mul")

    fair = make_reward_fn(RewardConfig(kind="shaped_fair"))
    dom, base = Tok(True), Tok(False)
    assert fair("<MUL_6_9_54>", "30", [1000], dom) == fair("6 × 9 = 54", "30", [1], base)
    assert fair("<MUL_6_9_54>", "7", [1000], dom)["shows_work"] == 0.1
    words = " ".join(["w"] * 147)  # 147 words + one fact: 148 raw words, 152 once expanded
    assert fair(words + " <MUL_6_9_54>", "7", [1], dom)["short"] == 0.0
    assert fair(words + " <MUL_6_9_54>", "7", [1], dom) == fair(words + " 6 × 9 = 54", "7", [1], base)
    # `shaped` keeps the reference study's raw-text rule (and its domain bonus)
    assert make_reward_fn(RewardConfig(kind="shaped"))("<MUL_6_9_54>", "7", [1000], dom)["shows_work"] == 0.0


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
    # GRPO_TEST_DIE_AFTER=n: the process dies (no cleanup) at its (n+1)-th reward call, i.e. mid-run
    (tmp_path / "len_reward_dist.py").write_text(
        "import os\nCALLS = [0]\n"
        "def reward(text, gold, ids, tokenizer, question):\n"
        "    CALLS[0] += 1\n"
        "    if CALLS[0] > int(os.environ.get('GRPO_TEST_DIE_AFTER', 10**9)):\n"
        "        os._exit(3)\n"
        "    return {'len': len(ids) / 10, 'first': ids[0] % 3}\n")
    cfg = {"grpo": {"model": str(tiny_model_dir(workdir)), "device": "cpu", "num_prompts": 6, "seed": 4,
                    "prompts": {"kind": "jsonl", "path": str(data)}, "reward": {"kind": "len_reward_dist:reward"},
                    "num_generations": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
                    "max_completion_length": 6, "temperature": 1.0, "learning_rate": 1e-3, "beta": 0.1,
                    "num_iterations": 2, "loss_type": "dapo", "scale_rewards": "batch", "max_steps": 3,
                    "save_steps": 2}}
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

    # killed while scoring the second rollout (each rank scores 2 completions per rollout), after
    # the step-2 checkpoint; resumed under torchrun with the same config: the same run again
    cut = torchrun(2, ["grpo", str(path), "--out", str(tmp_path / "cut")], {**env, "GRPO_TEST_DIE_AFTER": "2"})
    assert cut.returncode != 0 and not (tmp_path / "cut" / "manifest.json").exists()
    assert len(list((tmp_path / "cut").glob("checkpoints/*"))) == 1
    res = torchrun(2, ["grpo", str(path), "--resume", "--out", str(tmp_path / "cut")], env)
    assert res.returncode == 0, res.stderr[-3000:]
    r3 = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in r3] == [1, 2, 3] and abs(r3[2]["loss"] - r1[2]["loss"]) < 1e-5
    m3, _ = load_model(tmp_path / "cut" / "model")
    for (k, pa), (_, pc) in zip(m1.state_dict().items(), m3.state_dict().items()):
        assert torch.allclose(pa, pc, atol=1e-5, rtol=0), k


def test_prompts_whose_gold_answer_is_no_number_are_left_out_and_said(tmp_path, capsys):
    """A record no reward could score (no gold number) is not trained on, and the log names it."""
    from domtok.train.grpo import GRPOConfig, load_prompts
    from domtok.train.sft_data import DataSource

    data = tmp_path / "gsm.jsonl"
    recs = [{"question": "2+2?", "answer": "4 apples\n#### 4"}, {"question": "Who?", "answer": "#### Bob"},
            {"question": "3+3?", "answer": "#### 6"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    # a `jsonl` source takes records as they are (the gsm8k reader refuses such records itself)
    qs, golds, _ = load_prompts(GRPOConfig(prompts=DataSource(kind="jsonl", path=str(data)), num_prompts=0), None, None)
    assert qs == ["2+2?", "3+3?"] and golds == ["4", "6"]
    out = capsys.readouterr().out
    assert "1 of 3 records" in out and "gold answer not a number: records 1" in out
