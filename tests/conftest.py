"""Shared test fixtures: where the real data lives, and skips when it is absent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DOMTOK_SHARED_DATA", ROOT.parent / "shared" / "data"))
GPT2_DIR = SHARED_DATA / "gpt2"
GSM8K_DIR = SHARED_DATA / "gsm8k"

# Under pytest-xdist (the README's `-n auto`) each worker gets one core: one torch thread for
# in-process tests and for the processes they start, or the workers' threads fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

# Tokenizers built from the GPT-2 files find them through this variable.
if GPT2_DIR.is_dir():
    os.environ.setdefault("DOMTOK_GPT2_DIR", str(GPT2_DIR))


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: on a shared 2-core machine, spinning OpenMP threads of
    concurrent processes slow small models down many times over."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def gpt2_dir() -> Path:
    if not (GPT2_DIR / "vocab.bpe").exists():
        pytest.skip(f"GPT-2 BPE files not found at {GPT2_DIR} (../shared/data/gpt2)")
    return GPT2_DIR


@pytest.fixture
def tiktoken_gpt2(gpt2_dir, tmp_path, monkeypatch):
    """tiktoken's own `get_encoding("gpt2")`, fed the shared files through its download cache."""
    import hashlib
    import shutil

    import tiktoken
    import tiktoken.registry

    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    for name in ("vocab.bpe", "encoder.json"):
        key = hashlib.sha1((base + name).encode()).hexdigest()
        shutil.copy(gpt2_dir / name, tmp_path / key)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "gpt2", raising=False)
    return tiktoken.get_encoding("gpt2")


@pytest.fixture
def gsm8k_dir() -> Path:
    if not (GSM8K_DIR / "test.jsonl").exists():
        pytest.skip(f"GSM8K files not found at {GSM8K_DIR} (../shared/data/gsm8k)")
    return GSM8K_DIR


# --------------------------------------------------------------------------- the micro study
# Two conditions, every stage kind, three benchmarks (one broken on purpose), small enough to
# run in about a minute. Shared by test_pipeline.py and test_hub.py.

MICRO = {
    "name": "micro",
    "seeds": [0],
    "token_set": "mul",
    "conditions": {"baseline": {"token_set": None}, "mul_tokens": {"token_set": "mul"}},
    "tokenizer": {"base": "bpe-512", "sample_docs": 300},
    "prepare": {"source": "synthetic:math-web", "n_docs": 600, "val_fraction": 0.1, "shard_tokens": 20000,
                "seed": 0},
    "stages": [
        {"name": "pretrain", "kind": "pretrain",
         "config": {"model": "tiny", "n_layer": 2, "n_head": 2, "n_embd": 64, "seq_len": 64, "micro_batch_size": 8,
                    "tokens_per_step": 512, "max_steps": 8, "warmup_steps": 2, "eval_every": 4, "eval_batches": 2,
                    "ckpt_every": 4, "keep_last": 1, "progress": False}},
        {"name": "sft", "kind": "sft",
         "config": {"stages": [{"name": "micro", "data": [{"kind": "word_problems", "n": 48, "seed": 0}],
                                "val_size": 8, "epochs": 1, "learning_rate": 1e-3, "max_length": 128,
                                "batch_size": 8, "grad_accum": 1}]}},
        {"name": "grpo", "kind": "grpo",
         "config": {"prompts": {"kind": "word_problems", "seed": 0}, "num_prompts": 4, "num_generations": 2,
                    "max_completion_length": 8, "per_device_train_batch_size": 8, "max_steps": 1,
                    "learning_rate": 1e-4, "beta": 0.1, "reward": {"kind": "shaped"}}},
    ],
    "evals": {"after": ["pretrain", "grpo"], "benchmarks": {
        "probes": {"kind": "probes", "categories": ["mul_table"], "max_new_tokens": 4},
        "gsm_synthetic": {"kind": "gsm8k", "data": "synthetic:word_problems", "n": 12, "max_new_tokens": 8},
        "hellaswag": {"kind": "hellaswag", "data": "/nonexistent/hellaswag.jsonl"},  # fails on purpose
    }},
}


def _manifest_times(run_dir: Path, pattern: str) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in run_dir.glob(pattern)}


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """Run the micro study as `domtok run`, SIGKILL it once pretraining is done, resume in-process."""
    from domtok.pipeline import RunOptions, load_spec, run_experiment

    root = tmp_path_factory.mktemp("pipeline")
    spec_path = root / "micro.yaml"
    spec_path.write_text(yaml.safe_dump(MICRO))
    runs = root / "runs"
    run_dir = runs / "micro"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "domtok", "run", str(spec_path), "--runs-dir", str(runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    pretrained = [run_dir / c / "seed0" / "pretrain" / "manifest.json" for c in ("baseline", "mul_tokens")]
    deadline = time.time() + 240
    def finished(p: Path) -> bool:  # the pipeline's manifest (with the node hash), not the stage's own
        try:
            return "hash" in json.loads(p.read_text())
        except (OSError, ValueError):
            return False

    while not all(finished(p) for p in pretrained):
        if proc.poll() is not None or time.time() > deadline:
            out = proc.stdout.read().decode()
            proc.kill()
            pytest.fail(f"micro run ended or stalled before pretraining finished:\n{out}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    first_out = proc.communicate()[0].decode()
    before = _manifest_times(run_dir, "*/prepare/manifest.json") | _manifest_times(run_dir, "*/seed0/pretrain/manifest.json")

    spec = load_spec(str(spec_path))
    spec.runs_dir = str(runs)
    rc = run_experiment(spec, RunOptions(quiet=True))
    after = {p: Path(p).stat().st_mtime_ns for p in before}
    return {"run_dir": run_dir, "spec": spec, "rc": rc, "before": before, "after": after, "first_out": first_out,
            "spec_path": spec_path, "runs": runs}
