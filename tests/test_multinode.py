"""torchrun's multi-node launch on one machine: 2 "nodes" x 1 process (gloo) on localhost.

Both ways the README gives: `torchrun --nnodes 2 --node-rank R --master-addr ... -m domtok
pretrain` by hand, and `domtok run --nnodes 2 --node-rank R --rdzv HOST:PORT` started once per
node. Each must give the loss curve of one process that accumulates over the same global
batch (the order of float additions is all that differs: below 1e-5).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from domtok.config import PRESET_DIR
from test_distributed import ARGS
from test_pretrain import write_tiny_shards

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _both(cmds: list[list[str]], cwd: Path) -> None:
    """Start every command at once (the nodes), wait for all; each must succeed."""
    procs = [subprocess.Popen(c, env=ENV, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cmds]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]


def _metrics(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]


def _assert_same_curve(one: list[dict], two: list[dict]) -> None:
    assert [r["step"] for r in one] == [r["step"] for r in two] and len(one) >= 4
    for a, b in zip(one, two):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
        assert a["lr"] == b["lr"] and a["tokens"] == b["tokens"]
    assert one[-1]["loss"] < one[0]["loss"] - 0.1  # it trained: the match is not trivial


def test_pretrain_by_hand_on_two_nodes_matches_one_process(tmp_path):
    shards = write_tiny_shards(tmp_path / "shards")
    verb = ["-m", "domtok", "pretrain", str(PRESET_DIR / "pretrain-tiny.yaml"), f"data_dir={shards}",
            *[a for a in ARGS if not a.startswith("max_steps")], "max_steps=6"]
    subprocess.run([sys.executable, *verb, "--out", str(tmp_path / "one")], env=ENV, check=True,
                   capture_output=True, timeout=300)
    port = free_port()
    # the README's recipe: the same torchrun line on every node, with its own --node-rank
    _both([[sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={r}", "--nproc-per-node=1",
            "--master-addr=127.0.0.1", f"--master-port={port}", *verb, "--out", str(tmp_path / "two")]
           for r in (0, 1)], tmp_path)
    _assert_same_curve(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"))
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2


SPEC = {
    "name": "mn", "seeds": [0], "token_set": "mul",
    "conditions": {"baseline": {"token_set": None}},
    "tokenizer": {"base": "bpe-300", "sample_docs": 200},
    "prepare": {"source": "synthetic:math-web", "n_docs": 300, "val_fraction": 0.1, "seed": 0},
    "stages": [{"name": "pretrain", "kind": "pretrain", "config": {
        "model": "tiny", "n_layer": 2, "n_head": 2, "n_embd": 32, "seq_len": 32, "micro_batch_size": 4,
        "tokens_per_step": 256, "max_steps": 5, "lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 1,
        "eval_every": 0, "eval_batches": 2, "ckpt_every": 0, "progress": False}}],
    "evals": {"after": [], "benchmarks": {}},
}


def test_domtok_run_on_two_nodes_matches_one_process(tmp_path):
    spec = tmp_path / "mn.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    run = [sys.executable, "-m", "domtok", "run", str(spec)]
    subprocess.run(run + ["--runs-dir", str(tmp_path / "one")], env=ENV, check=True, capture_output=True, timeout=300)
    port = free_port()
    # node 1 starts first and waits for node 0 to prepare the data, then joins its torchrun
    _both([run + ["--runs-dir", str(tmp_path / "two"), "--nnodes", "2", "--node-rank", str(r),
                  "--rdzv", f"127.0.0.1:{port}"] for r in (1, 0)], tmp_path)
    a, b = tmp_path / "one" / "mn" / "baseline" / "seed0" / "pretrain", tmp_path / "two" / "mn" / "baseline" / "seed0" / "pretrain"
    _assert_same_curve(_metrics(a), _metrics(b))
    summary = json.loads((b / "manifest.json").read_text())["summary"]
    assert summary["world_size"] == 2 and summary["grad_accum"] == 2
    # node 1 wrote nothing into the node's directory; its torchrun log is under node1/
    assert (tmp_path / "two" / "mn" / "node1" / "baseline__seed0__pretrain.log").exists()


def test_bad_node_rank_is_one_message(tmp_path):
    res = subprocess.run([sys.executable, "-m", "domtok", "run", "--nnodes", "2", "--node-rank", "2"], env=ENV,
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--node-rank 2 must be in 0..1" in res.stderr
