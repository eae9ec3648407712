"""RFT: selection (correct, deduplicated, length cap, EOS) and a whole round on a tiny model
that was first taught one answer, so its samples are often right."""

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


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


def test_rft_round_trains_on_its_correct_samples(tmp_path):
    from domtok.train.sft import run as sft_run

    # teach a random tiny model one fact, so that sampling at temperature 0.7 is often right
    qa = {"question": "What is 2 + 3?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps(qa) + "\n")
    sft_run(SFTConfig(model=str(tiny_model_dir(tmp_path)), device="cpu", stages=[SFTStage(
        data=[DataSource(kind="jsonl", path=str(data), repeat=320)], val_size=0, epochs=1, learning_rate=1e-2,
        warmup_ratio=0.0, weight_decay=0.0, max_length=64, batch_size=8, grad_accum=1)]), tmp_path / "sft")

    cfg = RFTConfig(model=str(tmp_path / "sft" / "model"), device="cpu", questions=DataSource(kind="jsonl", path=str(data)),
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
    assert (tmp_path / "rft" / "manifest.json").exists() and (tmp_path / "rft" / "model" / "config.json").exists()
