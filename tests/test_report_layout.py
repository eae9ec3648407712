"""The report's loss table (both train losses, named) and RFT's yield per round, on a fake run
directory written in the pipeline's schema."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from domtok.report import write_report
from domtok.rundir import build_nodes, load_spec

SPEC = {
    "name": "fake", "seeds": [0], "token_set": "mul",
    "conditions": {"baseline": {"token_set": None}, "mul_tokens": {"token_set": "mul"}},
    "tokenizer": {"base": "gpt2"}, "prepare": {"source": "synthetic:math-web", "n_docs": 10},
    "stages": [{"name": "pretrain", "kind": "pretrain", "config": {}}, {"name": "sft", "kind": "sft", "config": {}},
               {"name": "rft", "kind": "rft", "config": {}}],
    "evals": {"after": [], "benchmarks": {}},
}


def _summary(node) -> dict:
    if node.kind == "pretrain":
        return {"final_train_loss": 3.0, "final_train_loss_steps": 10, "train_loss_mean": 4.0, "steps": 100}
    if node.kind == "sft":
        return {"final_train_loss": 1.5, "final_train_loss_steps": 20, "train_loss_mean": 1.7, "steps": 50}
    if node.kind == "rft":
        y = 0.25 if node.condition == "baseline" else 0.5
        return {"rounds": [{"round": 1, "sampled": 400, "correct": 120, "kept": int(400 * y), "yield": y,
                            "questions_solved": 0.4, "sft": {"steps": 7, "final_train_loss": 0.9}},
                           {"round": 2, "sampled": 400, "correct": 10, "kept": 0, "yield": 0.0,
                            "questions_solved": 0.0, "sft": None}]}
    return {}


def test_report_names_both_train_losses_and_shows_rfts_yield(tmp_path: Path):
    run_dir = tmp_path / "fake"
    run_dir.mkdir()
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    for node in build_nodes(load_spec(str(run_dir / "spec.yaml")), run_dir):
        node.out_dir.mkdir(parents=True, exist_ok=True)
        (node.out_dir / "manifest.json").write_text(json.dumps({"hash": node.hash, "summary": _summary(node)}))
    write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    assert "| stage | condition | train loss, last steps | train loss, run mean | val loss |" in md
    assert "| sft | mul_tokens | 1.5000 | 1.7000 | – | – | 50 |" in md
    assert "how many: 10 (pretrain), 20 (sft)" in md and "HF Trainer reports as `train_loss`" in md
    assert "Rejection sampling (RFT): yield per round" in md
    assert "| rft | baseline | 0 | 1 | 400 | 120 | 100 | 0.250 | 0.400 | 7 | 0.9000 |" in md
    assert "| rft | mul_tokens | 0 | 2 | 400 | 10 | 0 | 0.000 | 0.000 | – | – |" in md


def test_the_secondary_sentence_speaks_for_the_primary_stage_not_the_last_listed(tmp_path: Path):
    """With branches the last stage in evals.after is one branch among several: the headline's
    secondary sentence answers after the spec's primary stage."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_report import write_fake_run

    primary = {"benchmark": "gsm_synthetic", "metric": "accuracy_flexible", "stage": "sft", "margin": 0.05}
    run_dir = write_fake_run(tmp_path, primary=primary)
    write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    assert "**Secondary (after `sft`, 3 seed(s)).**" in md and "**Secondary (after `grpo`" not in md
