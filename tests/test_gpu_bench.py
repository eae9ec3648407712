"""benchmarks/gpu.py --quick: the GPU acceptance script's own code on CPU with small shapes.

On a GPU machine the same script measures training tokens/s and MFU (bf16, compile, fused
AdamW), GSM8K-sized generation through the Engine and through transformers' generate, and a
2-GPU NCCL check; here it must run end to end and report every figure it promises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_quick_mode_runs_and_reports_its_figures(gpt2_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), DOMTOK_GPT2_DIR=str(gpt2_dir))
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--quick"], env=env,
                         capture_output=True, text=True, timeout=2400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["quick"] is True and out["device"] == "cpu"
    assert out["pretrain_tokens_per_s"] > 0 and out["pretrain_timed_steps"] == 3
    assert out["mfu"] is None  # no peak FLOPs for a CPU
    assert out["gsm8k_prompts"] == 16 and out["new_tokens"] == 8
    assert out["engine_gsm8k_seconds"] > 0 and out["hf_generate_gsm8k_seconds"] > 0
    assert out["engine_vs_hf_generate"] > 0 and out["engine_vs_hf_generate_cuda"] is None
    assert "bf16 autocast, compile, fused AdamW" in out["pretrain_shape"]
