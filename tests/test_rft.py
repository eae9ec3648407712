"""RFT: selection (correct, deduplicated, length cap, EOS), a whole round on a tiny model
that was first taught one answer, so its samples are often right, and 2 torchrun processes
reproducing the 1-process run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_sft import tiny_model_dir  # noqa: E402

from domtok.engine import Generation  # noqa: E402
from domtok.train.rft import RFTConfig, run, select_correct  # noqa: E402
from domtok.train.sft import SFTConfig, SFTStage  # noqa: E402
from domtok.train.sft_data import DataSource  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def _g(p, s, text, reason="eos", n=5):
    return Generation(prompt_index=p, sample_index=s, ids=[0] * n, text=text, finish_reason=reason, num_tokens=n)


def test_select_correct_keeps_unique_correct_short_finished():
    gens = [_g(0, 0, " 2 + 3 = 5\n#### 5"), _g(0, 1, "  2 + 3 = 5\n####   5"),  # same text modulo spaces
            _g(0, 2, " #### 6"), _g(0, 3, " The answer is 5", reason="length"),
            _g(1, 0, " 2 + 3 = 5\n#### 5"),  # same text, other question: kept
            _g(1, 1, " #### 5 " + "x " * 50, n=60)]
    kept, c = select_correct(gens, ["a", "b"], ["5", "5"], max_tokens=20, require_eos=True)
    assert kept == [(0, "2 + 3 = 5\n#### 5"), (1, "2 + 3 = 5\n#### 5")]
    assert c == {"sampled": 6, "correct": 5, "duplicates": 1, "too_long": 1, "no_eos": 1, "kept": 2,
                 "yield": 2 / 6, "questions_solved": 1.0}


QA = {"question": "What is 2 + 3?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """A random tiny model taught one fact, so that sampling at temperature 0.7 is often right."""
    from domtok.train.sft import run as sft_run

    root = tmp_path_factory.mktemp("rft")
    data = root / "qa.jsonl"
    data.write_text(json.dumps(QA) + "\n")
    sft_run(SFTConfig(model=str(tiny_model_dir(root)), device="cpu", stages=[SFTStage(
        data=[DataSource(kind="jsonl", path=str(data), repeat=320)], val_size=0, epochs=1, learning_rate=1e-2,
        warmup_ratio=0.0, weight_decay=0.0, max_length=64, batch_size=8, grad_accum=1)]), root / "sft")
    return root / "sft" / "model", data


def test_rft_round_trains_on_its_correct_samples(taught, tmp_path, capsys):
    model_dir, data = taught
    cfg = RFTConfig(model=str(model_dir), device="cpu", questions=DataSource(kind="jsonl", path=str(data)),
                    rounds=2, num_samples=8, temperature=0.7, max_new_tokens=24, seed=1,
                    sft=SFTStage(name="rft", epochs=1, learning_rate=1e-3, max_length=64, batch_size=2, grad_accum=1,
                                 val_size=0))
    s = run(cfg, tmp_path / "rft")
    assert len(s["rounds"]) == 2
    r1 = s["rounds"][0]
    assert r1["sampled"] == 8 and r1["correct"] >= 1 and r1["kept"] >= 1
    assert r1["kept"] + r1["duplicates"] + r1["too_long"] + r1["no_eos"] == r1["correct"]
    assert r1["sft"]["steps"] >= 1  # it fine-tuned on what it kept
    assert (tmp_path / "rft" / "round_1" / "metrics.jsonl").exists()
    assert (tmp_path / "rft" / "summary.json").exists() and (tmp_path / "rft" / "model" / "config.json").exists()
    from domtok.progress import parse_line

    lines = [p for p in map(parse_line, capsys.readouterr().err.splitlines()) if p is not None]
    ends = {p["desc"]: (p["n"], p["total"]) for p in lines}  # the last line of each phase
    assert ends["rft round 1/2 sampling"] == (8, 8) and ends["rft round 2/2 sampling"] == (8, 8)
    assert ends["rft round 1/2 sft"][0] == ends["rft round 1/2 sft"][1] == r1["sft"]["steps"]


def test_torchrun_two_processes_match_one(taught, tmp_path):
    """Sampling sharded over 2 gloo ranks (global row seeds), samples gathered in one order, then
    SFT under DDP: same yield, same kept set, same train loss and weights as 1 process."""
    import os

    import yaml

    from test_grpo import torchrun

    from domtok.config import load_config
    from domtok.model.checkpoint import load_model

    model_dir, _ = taught
    questions = tmp_path / "q.jsonl"  # 3 questions: rank 0 samples #0 and #2, rank 1 samples #1
    questions.write_text("".join(json.dumps(r) + "\n" for r in [
        QA, {"question": "What is 3 + 2?", "answer": "#### 5"}, QA]))
    cfg = {"rft": {"model": str(model_dir), "device": "cpu", "seed": 2, "rounds": 2, "num_samples": 4,
                   "temperature": 0.9, "max_new_tokens": 24, "decode_batch_size": 3,
                   "questions": {"kind": "jsonl", "path": str(questions)},
                   "sft": {"name": "rft", "epochs": 2, "learning_rate": 1e-3, "max_length": 64, "batch_size": 1,
                           "grad_accum": 2, "val_size": 0}}}
    path = tmp_path / "rft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    one = run(load_config(RFTConfig, path, section="rft"), tmp_path / "one")  # 1 process, in this one
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root / "src")}
    two = torchrun(2, ["rft", str(path), "--out", str(tmp_path / "two")], env)
    assert two.returncode == 0, two.stderr[-3000:]
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert len(one["rounds"]) == len(s2["rounds"]) == 2
    assert one["rounds"][0]["kept"] >= 2  # something to train on, so the comparison is not trivial
    for a, b in zip(one["rounds"], s2["rounds"]):
        for key in ("sampled", "correct", "kept", "duplicates", "no_eos", "yield", "questions_solved"):
            assert a[key] == b[key], (key, a, b)
        assert (a["sft"] is None) == (b["sft"] is None)
        if a["sft"] is not None:
            assert a["sft"]["steps"] == b["sft"]["steps"]
            assert abs(a["sft"]["final_train_loss"] - b["sft"]["final_train_loss"]) < 1e-5, (a, b)
    def losses(d: Path) -> list[float]:
        return [json.loads(x)["train_loss"] for x in (d / "round_2" / "metrics.jsonl").read_text().splitlines()]

    l1, l2 = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(l1) == len(l2) >= 1 and all(abs(a - b) < 1e-5 for a, b in zip(l1, l2)), (l1, l2)
    m1, _ = load_model(tmp_path / "one" / "model")
    m2, _ = load_model(tmp_path / "two" / "model")
    for (k, pa), (_, pb) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.allclose(pa, pb, atol=1e-5, rtol=0), k
