"""The GPU code paths that a CPU can run: torch.compile (inductor) and bf16 autocast.

- Compiled pretraining gives eager's losses within 1e-4; its checkpoint loads into an eager
  model (plain names, no `_orig_mod.`); a resume from a compiled run's checkpoint continues
  exactly as the uninterrupted compiled run.
- The engine's compiled decode step produces the same greedy tokens as eager.
- bf16 autocast on CPU really runs in bf16 (results differ from fp32) and stays within a stated
  tolerance: training losses within 0.05 nats of fp32 over the first steps, next-token
  log-probs within 0.15 (bf16 keeps 8 significant bits: ~2-3 decimal digits).

One tiny model and a few steps each: inductor compiles on CPU take seconds per graph.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from domtok.engine import Engine, SamplingParams
from domtok.model.checkpoint import load_model
from domtok.train.pretrain import run
from test_engine import PLAIN, PROMPTS, TOK, tiny_gpt
from test_pretrain import cfg_for, write_tiny_shards

STEPS = ["max_steps=4", "warmup_steps=1", "eval_every=0", "ckpt_every=2", "keep_last=2", "progress=false"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("shards"))


def _losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_compiled_pretraining_matches_eager_saves_plain_names_and_resumes_exactly(shards, tmp_path, one_thread):
    run(cfg_for(shards, *STEPS), tmp_path / "eager")
    run(cfg_for(shards, *STEPS, "compile=true"), tmp_path / "compiled")
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert len(eager) == 4 and max(abs(a - b) for a, b in zip(eager, compiled)) < 1e-4
    assert eager[-1] < eager[0]

    # checkpoint and model dir of the compiled run: plain parameter names, loadable eagerly
    for f in [tmp_path / "compiled" / "model" / "model.safetensors",
              *(tmp_path / "compiled" / "checkpoints").glob("step_*/model.safetensors")]:
        keys = load_file(f).keys()
        assert keys and not any("_orig_mod" in k for k in keys), f
    model, _ = load_model(tmp_path / "compiled" / "model")
    ref, _ = load_model(tmp_path / "eager" / "model")
    assert not any(isinstance(m, torch._dynamo.eval_frame.OptimizedModule) for m in model.modules())
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        assert torch.allclose(model(x)[0], ref(x)[0], atol=1e-3)

    # resume: the compiled run killed after step 2 (its step-4 checkpoint and rows gone)
    cut = tmp_path / "resumed"
    shutil.copytree(tmp_path / "compiled", cut)
    shutil.rmtree(cut / "checkpoints" / "step_000004")
    for name in ("model", "summary.json", "manifest.json"):
        p = cut / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    rows = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text("\n".join(rows[:2]) + "\n")
    run(cfg_for(shards, *STEPS, "compile=true"), cut, resume=True)
    assert _losses(cut) == compiled
    a = load_file(cut / "model" / "model.safetensors")
    b = load_file(tmp_path / "compiled" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_compiled_decode_step_generates_what_eager_generates(one_thread):
    model = tiny_gpt(3)
    params = SamplingParams(max_new_tokens=12, **PLAIN)
    eager = Engine(model, TOK).generate(PROMPTS, params)
    compiled = Engine(model, TOK, compile=True).generate(PROMPTS, params)
    assert [g.ids for g in compiled] == [g.ids for g in eager]
    assert len({tuple(g.ids) for g in eager}) > 1  # varied outputs: the comparison means something


def test_bf16_autocast_training_on_cpu_is_close_to_fp32(shards, tmp_path, one_thread):
    steps = [s for s in STEPS if not s.startswith("ckpt_every")] + ["ckpt_every=0"]
    run(cfg_for(shards, *steps, "dtype=float32"), tmp_path / "fp32")
    run(cfg_for(shards, *steps, "dtype=bfloat16"), tmp_path / "bf16")
    fp32, bf16 = _losses(tmp_path / "fp32"), _losses(tmp_path / "bf16")
    diffs = [abs(a - b) for a, b in zip(fp32, bf16)]
    assert max(diffs) < 0.05, diffs
    assert max(diffs) > 0  # bf16 really ran: a no-op autocast would give fp32's numbers exactly


def test_bf16_autocast_generation_on_cpu_is_close_to_fp32(one_thread):
    model = tiny_gpt(4)
    for p in model.parameters():  # GPT-2-scale weights: logits of a trained model's size
        p.data.mul_(0.1)
    x = torch.tensor([TOK.encode(PROMPTS[0])])
    with torch.no_grad():
        ref = torch.log_softmax(model(x)[0].float(), -1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = torch.log_softmax(model(x)[0].float(), -1)
    diff = (ref - low).abs().max().item()
    assert 0 < diff < 0.15, diff
    params = SamplingParams(max_new_tokens=6, **PLAIN)
    gens = Engine(model, TOK, dtype=torch.bfloat16).generate(PROMPTS, params)
    assert all(g.num_tokens == 6 for g in gens)
    eng = Engine(model, TOK, dtype=torch.bfloat16)
    assert eng.cache_dtype == torch.bfloat16  # the KV cache is kept in bf16 as on a GPU
