"""torchrun DDP on CPU (gloo): 2 processes give the loss curve of 1 process with twice the accumulation.

The global batch is defined independently of the world size and DDP averages gradients that
each rank scaled by its own number of micro-steps, so the two runs differ only by the order of
floating-point additions: losses agree far below 1e-5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from domtok.config import PRESET_DIR
from test_pretrain import write_tiny_shards

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["n_layer=2", "n_head=2", "n_embd=32", "seq_len=32", "micro_batch_size=4", "tokens_per_step=512",
        "max_steps=12", "warmup_steps=3", "lr=1e-2", "min_lr=1e-3", "eval_every=6", "eval_batches=5",
        "ckpt_every=6", "progress=false"]


def _run(cmd: list[str], out: Path) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run(cmd + ["--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_process_gloo_matches_one_process_with_double_accumulation(tmp_path):
    shards = write_tiny_shards(tmp_path / "shards")
    verb = ["-m", "domtok", "pretrain", str(PRESET_DIR / "pretrain-tiny.yaml"), f"data_dir={shards}", *ARGS]
    one = _run([sys.executable, *verb], tmp_path / "one")  # grad_accum 4 in one process
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *verb],
               tmp_path / "two")  # 2 micro-steps on each of 2 ranks

    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 13))
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-4
        assert a["lr"] == b["lr"] and a["tokens"] == b["tokens"]
    assert one[-1]["loss"] < one[0]["loss"] - 0.3  # it trained, so the match is not trivial
    vals = [(a["val_loss"], b["val_loss"]) for a, b in zip(one, two) if "val_loss" in a]
    assert len(vals) == 2 and all(abs(x - y) < 1e-5 for x, y in vals)  # 5 val batches: 3 on rank 0, 2 on rank 1

    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["world_size"] == 2 and s1["world_size"] == 1
    assert s1["tokens_trained"] == s2["tokens_trained"] and s1["total_flops"] == s2["total_flops"]
    # only rank 0 wrote: one metrics file with one row per step, one final checkpoint set
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["step_000006", "step_000012"]
