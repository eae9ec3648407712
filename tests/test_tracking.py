"""Tracking switches (`report_to`, transformers' name and meaning) of every training stage, and
GRPO's `log_completions` (TRL's name and meaning): the rollouts it saves are the ones trained on."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_sft import tiny_model_dir  # noqa: E402

from domtok.errors import DomtokError  # noqa: E402
from domtok.train import common  # noqa: E402
from domtok.train.sft_data import DataSource  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeWandb(types.ModuleType):
    """Stands in for `wandb` (not a dependency): records every run and what it logged."""

    def __init__(self):
        super().__init__("wandb")
        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
        self.runs = []

    def init(self, **kwargs):
        fake = self

        class Run:
            def __init__(self):
                self.kwargs, self.logged, self.finished = kwargs, [], False
                fake.runs.append(self)

            def log(self, row, step=None):
                self.logged.append((step, dict(row)))

            def finish(self):
                self.finished = True

        return Run()


@pytest.fixture
def fake_wandb(monkeypatch):
    mod = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", mod)
    return mod


def _numbers(row: dict) -> dict:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_report_to_reads_as_transformers_does(monkeypatch):
    import importlib.util

    assert common.report_targets("none") == [] == common.report_targets([])
    with pytest.raises(DomtokError, match="'mlflow' is not a tracker"):
        common.report_targets(["mlflow"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in ("wandb", "tensorboard") else real(n))
    with pytest.raises(DomtokError, match=r"wandb is not installed; pip install 'domtok\[tracking\]'"):
        common.report_targets("wandb")
    assert common.report_targets("all") == []  # every INSTALLED tracker: none here


def test_sft_reports_every_logged_row_to_wandb(fake_wandb, tmp_path):
    from domtok.train.sft import SFTConfig, SFTStage, run

    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "#### 5"}) + "\n")
    s = run(SFTConfig(model=str(tiny_model_dir(tmp_path)), device="cpu", report_to="wandb", run_name="sft-test",
                      stages=[SFTStage(data=[DataSource(kind="jsonl", path=str(data), repeat=100)], val_size=0,
                                       max_length=64, batch_size=4, grad_accum=1, learning_rate=1e-3)]),
            tmp_path / "sft")
    (wb,) = fake_wandb.runs
    assert wb.kwargs["name"] == "sft-test" and wb.kwargs["project"] == "domtok" and wb.finished
    rows = _rows(tmp_path / "sft" / "metrics.jsonl")
    assert wb.logged == [(r["step"], _numbers(r)) for r in rows] and len(rows) == 25
    # the two train losses of the summary, named for what they are
    losses = [r["train_loss"] for r in rows]
    assert s["train_loss_mean"] == pytest.approx(sum(losses) / 25) == s["stages"][0]["train_loss_mean"]
    assert s["final_train_loss"] == pytest.approx(sum(losses[-20:]) / 20) and s["final_train_loss_steps"] == 20
    assert s["final_train_loss"] < s["train_loss_mean"]  # the loss falls, so the two differ


def test_pretrain_reports_to_wandb(fake_wandb, tmp_path):
    from test_pretrain import cfg_for, write_tiny_shards

    from domtok.train.pretrain import run

    shards = write_tiny_shards(tmp_path / "shards")
    run(cfg_for(shards, "max_steps=3", "report_to=[wandb]", "eval_every=0"), tmp_path / "pre")
    (wb,) = fake_wandb.runs
    assert wb.kwargs["name"] == "pre" and wb.kwargs["config"]["report_to"] == ["wandb"]
    assert [s for s, _ in wb.logged] == [1, 2, 3]
    assert wb.logged[-1][1]["val_loss"] == _rows(tmp_path / "pre" / "metrics.jsonl")[-1]["val_loss"]


def test_rft_reports_each_rounds_sft_and_the_yields(fake_wandb, tmp_path):
    from domtok.train.rft import RFTConfig, run
    from domtok.train.sft import SFTStage

    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "#### 5"}) + "\n")
    # an untaught model is rarely right: round SFT may not run, the yields are reported either way
    s = run(RFTConfig(model=str(tiny_model_dir(tmp_path)), device="cpu", questions=DataSource(kind="jsonl", path=str(data)),
                      rounds=2, num_samples=2, max_new_tokens=4, report_to="wandb", run_name="r",
                      sft=SFTStage(name="rft", max_length=64, batch_size=2, grad_accum=1, val_size=0)), tmp_path / "rft")
    yields = fake_wandb.runs[-1]
    assert yields.kwargs["name"] == "r" and [row["yield"] for _, row in yields.logged] == [r["yield"] for r in s["rounds"]]
    assert [w.kwargs["name"] for w in fake_wandb.runs[:-1]] == [f"r-round{r['round']}" for r in s["rounds"] if r["sft"]]


def test_grpo_logs_completions_and_reports_to_tensorboard(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from domtok.train.grpo import GRPOConfig, group_advantages, run
    from domtok.train.rewards import RewardConfig

    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {a} + 2?", "answer": f"#### {a + 2}"}) + "\n"
                            for a in range(4)))
    cfg = GRPOConfig(model=str(tiny_model_dir(tmp_path)), device="cpu", prompts=DataSource(kind="jsonl", path=str(data)),
                     num_prompts=4, reward=RewardConfig(kind="shaped"), num_generations=2,
                     per_device_train_batch_size=4, max_completion_length=6, beta=0.1, max_steps=3,
                     log_completions=True, logging_steps=2, num_completions_to_print=1, report_to=["tensorboard"])
    run(cfg, tmp_path / "grpo")
    out = tmp_path / "grpo"
    # TRL's cadence: the steps that are multiples of logging_steps
    assert sorted(p.name for p in (out / "completions").iterdir()) == ["completions_00002.jsonl"]
    rows = _rows(out / "completions" / "completions_00002.jsonl")
    metrics = _rows(out / "metrics.jsonl")
    assert len(rows) == 4 and all(r["step"] == 2 and r["prompt"].startswith("User: What is") for r in rows)
    for r in rows:
        assert r["reward"] == pytest.approx(sum(r["reward_terms"].values()))
        assert set(r["reward_terms"]) >= {"correct", "close", "shows_work", "short", "repetition"}
    rewards = torch.tensor([r["reward"] for r in rows])
    assert [r["advantage"] for r in rows] == pytest.approx(group_advantages(rewards, 2).tolist(), abs=1e-6)
    assert metrics[1]["reward_mean"] == pytest.approx(float(rewards.mean()))  # the rollout step 2 trained on
    assert capsys.readouterr().out.count("completion at step 2 (reward") == 1  # num_completions_to_print, in the log
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("reward_mean")] == pytest.approx(
        [(m["step"], m["reward_mean"]) for m in metrics])
