"""`domtok run SPEC --smoke`: the replication preset and the tiny study, every node at toy scale.

CI runs both smokes here (the replication's GPT-2 124M with the GPT-2 tokenizer from
../shared/data/gpt2, ~2 steps per stage, hub sources replaced by fixtures in their schema).
The real-config projection is checked against independent references: transformers' GPT-2
for the parameter count, and what autograd really saves for the activation estimate.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from domtok.data import sources
from domtok.smoke import activation_bytes, fixture_records

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")


def smoke(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, float, float]:
    """Run a smoke in a subprocess: (result, smoke.json, wall seconds, CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "domtok", "run", *args, "--smoke", "--runs-dir", str(tmp_path)],
                         env=ENV, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    name = args[0]
    report = tmp_path / f"{name}-smoke" / "smoke.json"
    data = json.loads(report.read_text()) if report.exists() else {}
    print(f"smoke {name}: wall {time.time() - t0:.0f}s, CPU {cpu:.0f}s")  # shown with -s: CI's timing
    return res, data, time.time() - t0, cpu


def test_replication_preset_smoke_runs_every_node(tmp_path, gpt2_dir):
    res, r, wall, cpu = smoke(tmp_path, "gpt2-124m-10b")
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    assert len(r["nodes"]) == 35 and all(n["result"] == "passed" for n in r["nodes"])
    assert "| baseline/seed0/grpo/eval/gsm8k | passed |" in res.stdout
    # the output says how it was shrunk, and every hub source became a fixture in its schema
    assert "pretrain.max_steps: 19073 -> 2" in r["shrunk"]
    assert "pretrain.compile: true -> false" in r["shrunk"]
    assert any("hub:HuggingFaceFW/fineweb-edu:sample-10BT@train" in s and "fixture" in s for s in r["sources"])
    # the real config: GPT-2 124M with the 50,368-id layout; transformers' own count as reference
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=50368, n_positions=1024))
    (plan,) = r["plans"]
    assert plan["params"] == hf.num_parameters() == 124_525_056
    assert plan["tokens"] == 19073 * 524288
    assert plan["memory_per_gpu"]["adamw"] == 8 * plan["params"] and plan["gpu"] == "H100" and plan["mfu"] == 0.4
    assert plan["wall_s"] == pytest.approx(plan["flops"] / (989e12 * 0.4))
    checks = "\n".join(r["checks"])
    assert "OK: pretrain: tokens_per_step 524,288 = 32 x 1024 x 1 GPU(s) x grad_accum 16" in checks
    assert "WARN: pretrain [mul_tokens]" in checks and "the data repeats" in checks  # injection shortens the corpus
    assert "evals.gsm8k.data: hub:openai/gsm8k:main is on the hub" in checks
    t = r["prepare_throughput"]
    assert t["workers"] == 16 and t["limit"] in ("reader", "workers") and t["projected_s"] > 0
    assert "limited by the" in res.stdout
    # the README's figure for CI: both smokes together within 5 minutes on 2 cores
    print(f"replication smoke: {wall:.0f}s wall, {cpu:.0f}s CPU")


def test_tiny_smoke_passes_and_a_broken_stage_is_reported_with_its_log(tmp_path):
    res, r, _, _ = smoke(tmp_path, "tiny")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]
    assert all(n["result"] == "passed" for n in r["nodes"]) and len(r["nodes"]) == 21
    assert (tmp_path / "tiny-smoke" / "mul_tokens" / "seed0" / "grpo" / "model" / "model.safetensors").exists()
    assert not (tmp_path / "tiny").exists()  # its own run dir only

    # a defect in one stage's config: that node fails with its log, the rest still runs
    res, r, _, _ = smoke(tmp_path, "tiny", "stages.2.config.loss_type=bogus")
    assert res.returncode == 1
    failed = {n["node"]: n for n in r["nodes"] if n["result"] != "passed"}
    assert set(failed) == {f"{c}/seed0/grpo{e}" for c in ("baseline", "mul_tokens")
                           for e in ("", "/eval/probes", "/eval/gsm_synthetic")}
    log = Path(failed["baseline/seed0/grpo"]["log"])
    assert log.exists() and "loss_type" in log.read_text()
    assert f"FAILED ({log})" in res.stdout and "smoke: FAILED" in res.stdout


@pytest.mark.parametrize("kind,check,split", [("fineweb", sources.check_text, "train"),
                                              ("tulu", sources.check_messages, "train"),
                                              ("gsm8k", sources.check_gsm8k, "test"),
                                              ("hellaswag", sources.check_hellaswag, "validation"),
                                              ("tinygsm", sources.check_tinygsm, "train")])
def test_fixtures_pass_the_real_loaders_checks(kind, check, split):
    recs = fixture_records(kind, 12, split=split)
    assert len(recs) == 12 and all(isinstance(check(r), dict) for r in recs)
    keys = {"fineweb": {"text", "id", "url", "score", "int_score", "token_count"},
            "tulu": {"id", "messages", "source"}, "gsm8k": {"question", "answer"},
            "hellaswag": {"ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "label", "split"},
            "tinygsm": {"question", "code"}}[kind]
    assert keys <= set(recs[0])
    if kind == "hellaswag":
        assert all(isinstance(r["label"], str) and len(r["endings"]) == 4 for r in recs)  # Rowan/hellaswag's types


def test_activation_estimate_matches_what_autograd_saves():
    """The formula behind the per-GPU memory figure against the tensors autograd keeps on CPU (fp32)."""
    from domtok.model.gpt import GPT, GPTConfig

    cfg = GPTConfig(block_size=128, vocab_size=512, n_layer=3, n_head=4, n_embd=64)
    model = GPT(cfg)
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        if t.data_ptr() not in params and t.is_floating_point():
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    B, T = 4, 128
    x = torch.randint(0, 512, (B, T))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, loss = model(x, x)
    measured = sum(seen.values())
    est = activation_bytes(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size, B * T, 4)["saved"]
    assert abs(est - measured) / measured < 0.1, (est, measured)
