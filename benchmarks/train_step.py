"""Training-step speed of domtok's GPT vs transformers' GPT2LMHeadModel, same shape, same run.

One step = forward with loss, backward, AdamW step (betas 0.9/0.95, weight decay on >= 2-D
params, the fused AdamW both domtok and HF Trainer use by default), fp32 on CPU, same threads, same batch and sequence length, dropout off.
Steps of the two models are interleaved (ours, HF, ours, HF, ...) so a busy shared machine
slows both alike; we report the median step time of each.

    python benchmarks/train_step.py            # tiny shape + 124M shape at T=128, B=4 (CPU)
    python benchmarks/train_step.py --cuda     # also 124M at T=1024, bf16 autocast + compile
    python benchmarks/train_step.py --quick    # one timed step per shape (CI: the script still runs)

Last line: one JSON object with `train_step_vs_hf` (tiny) and `train_step_vs_hf_124m`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from domtok.model.gpt import GPT, config_from_preset, optimizer_param_groups
from domtok.train.common import configure_optimizer, mfu


def hf_model(cfg):
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_cfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, activation_function="gelu_new", tie_word_embeddings=True,
                        bos_token_id=cfg.vocab_size - 1, eos_token_id=cfg.vocab_size - 1)
    return GPT2LMHeadModel(hf_cfg)  # default attn implementation (reported below)


def make_step(model, is_hf, x, y, device, amp_dtype=None):
    """One training step as each side really runs it: domtok's trainer builds its optimizer with
    `configure_optimizer`; HF Trainer's default optimizer is fused AdamW (`adamw_torch_fused`,
    torch >= 2.8) over the same decay / no-decay groups."""
    model.to(device).train()
    if is_hf:
        opt = torch.optim.AdamW(optimizer_param_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95), fused=True)
    else:
        opt = configure_optimizer(model, 1e-4, 0.1, device_type=device.split(":")[0])

    def step():
        with torch.autocast(device_type=device.split(":")[0], dtype=amp_dtype, enabled=amp_dtype is not None):
            if is_hf:
                loss = model(input_ids=x, labels=x).loss  # HF shifts labels inside
            else:
                _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def timed(step, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def compare(name, cfg, B, T, warmup, steps, device="cpu", amp_dtype=None, compile_ours=False):
    """Median tokens/s of ours and HF's, steps interleaved."""
    torch.manual_seed(0)
    ours = GPT(cfg)
    hf = hf_model(cfg)
    attn_impl = getattr(hf.config, "_attn_implementation", "?")
    data = torch.randint(0, cfg.vocab_size, (B, T + 1), device=device)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    ours_model = ours.to(device)
    if compile_ours:
        ours_model = torch.compile(ours_model)
    step_ours = make_step(ours_model, False, x, y, device, amp_dtype)
    step_hf = make_step(hf, True, x, y, device, amp_dtype)
    for _ in range(warmup):
        step_ours()
        step_hf()
    t_ours, t_hf = [], []
    for _ in range(steps):
        t_ours.append(timed(step_ours, device))
        t_hf.append(timed(step_hf, device))
    tok = B * T
    res = {
        "shape": f"L{cfg.n_layer} H{cfg.n_head} C{cfg.n_embd} V{cfg.vocab_size} B{B} T{T}",
        "ours_tok_s": tok / statistics.median(t_ours),
        "hf_tok_s": tok / statistics.median(t_hf),
        "hf_attn_implementation": attn_impl,
        "steps": steps,
    }
    res["ratio"] = res["ours_tok_s"] / res["hf_tok_s"]
    if device.startswith("cuda"):
        res["ours_mfu"] = mfu(ours.flops_per_token(T), res["ours_tok_s"], device)
    print(f"{name:10s} {res['shape']}: ours {res['ours_tok_s']:,.0f} tok/s, HF ({attn_impl}) "
          f"{res['hf_tok_s']:,.0f} tok/s, ratio {res['ratio']:.2f}x", flush=True)
    del ours, hf, ours_model
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps for the tiny shape")
    ap.add_argument("--steps-124m", type=int, default=2)
    ap.add_argument("--cuda", action="store_true", help="also the 124M T=1024 bf16+compile run on CUDA")
    ap.add_argument("--cuda-batch", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="one timed step per shape: proves the script runs (CI)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.steps_124m = 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, fp32 on CPU", flush=True)

    tiny = compare("tiny", config_from_preset("tiny", vocab_size=4096), B=8, T=256, warmup=1, steps=args.steps)
    big = compare("124m", config_from_preset("gpt2-124m", vocab_size=50304), B=4, T=128, warmup=1,
                  steps=args.steps_124m)
    out = {"train_step_vs_hf": round(tiny["ratio"], 3), "train_step_vs_hf_124m": round(big["ratio"], 3),
           "tiny": tiny, "gpt2_124m_T128": big, "threads": torch.get_num_threads(), "torch": torch.__version__, "quick": args.quick}

    if args.cuda and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        cuda = compare("124m-cuda", config_from_preset("gpt2-124m", vocab_size=50304), B=args.cuda_batch, T=1024,
                       warmup=5, steps=20, device="cuda", amp_dtype=torch.bfloat16, compile_ours=True)
        cuda["device_name"] = torch.cuda.get_device_name()
        out["cuda_124m_T1024_bf16_compile"] = cuda
    print(json.dumps(out))


if __name__ == "__main__":
    main()
