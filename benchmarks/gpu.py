"""One-GPU acceptance script: training throughput and MFU, GSM8K-sized generation, 2-GPU NCCL.

    python benchmarks/gpu.py            # on a CUDA GPU, <= 8 minutes
    python benchmarks/gpu.py --quick    # the same code on CPU with small shapes (CI runs it)

1. Pretraining steps of GPT-2 124M exactly as `domtok pretrain` runs them with the 10B preset:
   micro-batch 32 x 1024, bf16 autocast, torch.compile, fused AdamW (`common.configure_optimizer`),
   `common.clip_gradients`; >= 30 timed steps after warm-up -> `pretrain_tokens_per_s`, `mfu`
   (model FLOPs per token from `GPT.flops_per_token`, peak and formula from `domtok.train.common.mfu`).
2. 1,319 GSM8K-style chat prompts (the GSM8K test questions from ../shared/data when present,
   else generated word problems) through domtok's Engine on the 124M model, 256 new tokens,
   greedy -> `engine_gsm8k_seconds`. The model has random weights and would not stop on its
   own, so EOS is ignored on both sides: every row decodes all 256 tokens (the worst case).
3. The same job through `transformers` `generate` at batch 32 on our HF export, as the
   reference study ran it -> `hf_generate_gsm8k_seconds`; when it would take over 2 minutes
   it runs whole batches for 2 minutes and scales to all prompts (`hf_scaled_from_prompts`
   says on how many). `engine_vs_hf_generate_cuda` = HF seconds / engine seconds.
4. `vllm_gsm8k_seconds` when vLLM is installed: our export loaded by vLLM, the same prompts.
5. With >= 2 GPUs: 2-process NCCL pretraining (2 steps) against one process with twice the
   accumulation: `nccl_2gpu_max_loss_diff`.

The last line is one JSON object. `--quick` uses a 2-layer model, 4 x 64 tokens, 3 timed
steps, 16 prompts and 8 new tokens on CPU (bf16 autocast and compile included), so CI proves
the script runs; its speeds mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HF_BUDGET_S = 120.0


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_config(quick: bool, vocab: int):
    from domtok.model.gpt import config_from_preset

    if quick:
        return config_from_preset("gpt2-124m", vocab_size=vocab, n_layer=2, n_head=2, n_embd=64, block_size=128)
    return config_from_preset("gpt2-124m", vocab_size=vocab)


def bench_pretrain(args, device: str, vocab: int) -> dict:
    """Training steps as `domtok pretrain` runs them (same helpers), on random tokens."""
    from domtok.model.gpt import GPT
    from domtok.train.common import mfu
    from domtok.train import common

    B, T = (4, 64) if args.quick else (32, 1024)
    cfg = model_config(args.quick, vocab)
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    opt = common.configure_optimizer(model, 6e-4, 0.1, (0.9, 0.95), device_type=device.split(":")[0])
    train_model = common.maybe_compile(model, True, device)
    x = torch.randint(0, vocab, (B, T), device=device)
    y = torch.randint(0, vocab, (B, T), device=device)

    def step():
        with common.autocast(device, "bfloat16"):
            _, loss = train_model(x, y)
        loss.backward()
        common.clip_gradients(model, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    warmup, steps = (2, 3) if args.quick else (5, max(30, args.steps))
    t0 = time.perf_counter()
    for _ in range(warmup):  # includes the compile
        step()
    sync(device)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    tok_s = B * T / dt
    fpt = model.flops_per_token(T)
    return {"pretrain_tokens_per_s": tok_s, "mfu": mfu(fpt, tok_s, device),
            "pretrain_step_s": dt, "pretrain_timed_steps": steps, "pretrain_warmup_and_compile_s": compile_s,
            "pretrain_shape": f"{cfg.n_layer}x{cfg.n_embd}, micro-batch {B} x {T}, bf16 autocast, compile, fused AdamW",
            "pretrain_final_loss": float(loss), "params": model.num_params(False)}


def gsm8k_prompts(n: int) -> tuple[list[str], str]:
    from domtok.chat import render_prompt
    from domtok.utils import read_jsonl, shared_data_dir

    data = shared_data_dir()
    if data is not None and (data / "gsm8k" / "test.jsonl").exists():
        qs = [r["question"] for r in read_jsonl(data / "gsm8k" / "test.jsonl")][:n]
        src = str(data / "gsm8k" / "test.jsonl")
    else:
        from domtok.data.word_problems import word_problems

        qs, src = [r["question"] for r in word_problems(n, 0, "test")], "synthetic word problems"
    return [render_prompt(q) for q in qs], src


def bench_generate(args, device: str, tok, out: Path) -> dict:
    from domtok.engine import Engine, SamplingParams
    from domtok.model.checkpoint import save_model_dir
    from domtok.model.gpt import GPT
    from domtok.model.hf import export_hf

    n, new = (16, 8) if args.quick else (1319, 256)
    prompts, src = gsm8k_prompts(n)
    torch.manual_seed(0)
    model = GPT(model_config(args.quick, tok.vocab_size)).eval()
    save_model_dir(model, tok, out / "model")
    export_hf(out / "model", out / "hf")
    model.to(device)
    dtype = torch.bfloat16  # as the evaluations run on a GPU
    params = SamplingParams(max_new_tokens=new, temperature=0.0, stop_strings=(), stop_on_eos=False)
    engine = Engine(model, tok, device=device, dtype=dtype, compile=not args.quick)
    engine.generate(prompts[:8], SamplingParams(max_new_tokens=4, stop_strings=(), stop_on_eos=False))  # warm-up
    sync(device)
    t0 = time.perf_counter()
    gens = engine.generate(prompts, params, batch_size=args.engine_batch)
    sync(device)
    engine_s = time.perf_counter() - t0
    assert all(g.num_tokens == new for g in gens)
    res = {"engine_gsm8k_seconds": engine_s, "gsm8k_prompts": len(prompts), "gsm8k_prompt_source": src,
           "new_tokens": new, "engine_batch_size": args.engine_batch}

    # transformers generate, batch 32, left padding, greedy, the same 256 tokens per row
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(out / "hf", torch_dtype=dtype).to(device).eval()
    ids = [tok.encode(p) for p in prompts]
    done, t0 = 0, time.perf_counter()
    for s in range(0, len(ids), 32):
        batch = ids[s:s + 32]
        L = max(len(x) for x in batch)
        inp = torch.full((len(batch), L), tok.eot_id, dtype=torch.long)
        mask = torch.zeros((len(batch), L), dtype=torch.long)
        for r, x in enumerate(batch):
            inp[r, L - len(x):] = torch.tensor(x)
            mask[r, L - len(x):] = 1
        with torch.no_grad():
            hf.generate(inp.to(device), attention_mask=mask.to(device), max_new_tokens=new, min_new_tokens=new,
                        do_sample=False, pad_token_id=tok.eot_id)
        sync(device)
        done += len(batch)
        if time.perf_counter() - t0 > HF_BUDGET_S and done < len(ids):
            break
    hf_s = (time.perf_counter() - t0) * len(ids) / done
    res.update(hf_generate_gsm8k_seconds=hf_s, engine_vs_hf_generate_cuda=hf_s / engine_s if device.startswith("cuda") else None,
               engine_vs_hf_generate=hf_s / engine_s)
    if done < len(ids):
        res["hf_scaled_from_prompts"] = done
        print(f"hf generate: measured on {done} of {len(ids)} prompts and scaled", flush=True)

    try:
        import vllm
    except ImportError:
        vllm = None
    if vllm is not None and device.startswith("cuda"):
        llm = vllm.LLM(model=str(out / "hf"), dtype="bfloat16")
        sp = vllm.SamplingParams(temperature=0.0, max_tokens=new, ignore_eos=True)
        t0 = time.perf_counter()
        llm.generate(prompts, sp)
        res["vllm_gsm8k_seconds"] = time.perf_counter() - t0
    return res


def random_shards(d: Path, vocab: int, n_docs: int = 400) -> Path:
    """Shards in `domtok prepare`'s format (its ShardWriter), of random documents."""
    import numpy as np

    from domtok.data.shards import ShardWriter

    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", n_docs), ("val", n_docs // 10)):
        w = ShardWriter(d, split, 10**9, np.uint16, "gpu-bench", vocab, [])
        for i in range(n):
            doc = np.concatenate([[0], rng.integers(1, vocab, int(rng.integers(50, 400)))]).astype(np.uint16)
            w.add(i, doc, 3 * (len(doc) - 1))
        w.finish(n)
        t = w.totals()
        t.pop("histogram")
        splits[split] = dict(t, domain_tokens=0)
    (d / "meta.json").write_text(json.dumps({"splits": splits, "vocab_size": vocab, "dtype": "uint16",
                                             "condition": "baseline", "seed": 0, "config_hash": "gpu-bench",
                                             "eot_id": 0}))
    return d


def check_nccl(out: Path) -> dict:
    """2 processes x 1 micro-step vs 1 process x 2 micro-steps: the same 2 optimizer steps."""
    shards = random_shards(out / "shards", 50304)
    args = ["-m", "domtok", "pretrain", "configs/pretrain-gpt2-124m-10b.yaml", f"data_dir={shards}",
            "micro_batch_size=4", "seq_len=256", "tokens_per_step=2048", "max_steps=2", "warmup_steps=1",
            "eval_every=0", "eval_batches=1", "ckpt_every=0", "hellaswag_every=0", "compile=false", "progress=false"]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    subprocess.run([sys.executable, *args, "--out", str(out / "one")], check=True, env=env, cwd=root)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args,
                    "--out", str(out / "two")], check=True, env=env, cwd=root)
    rows = [[json.loads(x)["loss"] for x in (out / k / "metrics.jsonl").read_text().splitlines()] for k in ("one", "two")]
    return {"nccl_2gpu_losses": rows, "nccl_2gpu_max_loss_diff": max(abs(a - b) for a, b in zip(*rows))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU, small shapes: proves the script runs (CI)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps after warm-up (>= 30 on GPU)")
    p.add_argument("--engine-batch", type=int, default=256, help="rows the Engine decodes together")
    args = p.parse_args()
    from domtok.tokens.tokenizer import load_tokenizer

    if not args.quick and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: no CUDA device; run with --quick on CPU")
    device = "cpu" if args.quick else "cuda"
    if args.quick:
        torch.set_num_threads(1)
        args.engine_batch = min(args.engine_batch, 8)
    tok = load_tokenizer("gpt2", "baseline")
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "quick": args.quick,
              "torch": torch.__version__}
    t0 = time.time()
    result.update(bench_pretrain(args, device, tok.vocab_size))
    print(f"pretrain: {result['pretrain_tokens_per_s']:,.0f} tokens/s, mfu {result['mfu']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        result.update(bench_generate(args, device, tok, Path(tmp)))
        print(f"gsm8k: engine {result['engine_gsm8k_seconds']:.1f}s, hf {result['hf_generate_gsm8k_seconds']:.1f}s",
              flush=True)
        if device == "cuda" and torch.cuda.device_count() >= 2:
            result.update(check_nccl(Path(tmp)))
    result["wall_s"] = time.time() - t0
    print(json.dumps(result))


if __name__ == "__main__":
    main()
