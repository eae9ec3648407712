"""Every benchmark has a quick mode, and CI runs it: a signature change in domtok cannot break
a benchmark silently. Each script must end with one JSON object holding its ratio(s).
(`benchmarks/gpu.py --quick` has its own test, tests/test_gpu_bench.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = {  # script -> keys its last JSON line must hold (the ratios it promises)
    "prepare.py": ("inject_tokenize_vs_tiktoken", "two_workers_vs_one"),
    "train_step.py": ("train_step_vs_hf", "train_step_vs_hf_124m"),
    "generate.py": ("engine_vs_hf_generate", "engine_vs_hf_generate_tiny_preset"),
    "posttrain_tiny.py": ("sft", "grpo"),
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_quick_mode_runs_and_ends_with_its_json(script, gpt2_dir, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), DOMTOK_GPT2_DIR=str(gpt2_dir))
    args = [sys.executable, str(ROOT / "benchmarks" / script), "--quick"]
    if script == "train_step.py":
        args += ["--threads", "1"]
    if script == "posttrain_tiny.py":
        args.insert(2, str(tmp_path / "out"))
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["quick"] is True
    for key in CASES[script]:
        assert out[key] is not None, key
        if "_vs_" in key:
            assert out[key] > 0, (key, out[key])
