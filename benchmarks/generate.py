"""Generation speed: domtok's Engine vs transformers `generate`, same model, same run, CPU.

    python benchmarks/generate.py [--layers 6 --width 384 --batch 32 --new-tokens 128] [--quick]

A GPT-2-shaped model (random weights, GPT-2 vocab) is saved as a native model dir and
exported with `domtok.model.hf.export_hf`; the export is loaded with `GPT2LMHeadModel`.
Both engines decode the same 32 chat prompts of varied length (GSM8K questions when the
shared data is present), greedily, up to 128 new tokens.

Early-finishing rows: a random model never writes its EOS, so the benchmark picks
token ids that the greedy continuations contain in about 3/4 of the rows (found with a
first greedy pass without any EOS) -- a few ids if one is not enough -- and makes them the
EOS of BOTH engines (HF takes a list of EOS ids). Rows then finish
at different steps, as answers of different lengths do. Only useful tokens count: each
row's tokens up to and including its EOS (or all 128).

Agreement: both engines must produce the same greedy tokens; the fraction of rows whose
useful tokens are identical is reported. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def prompts_for(n: int) -> list[str]:
    from domtok.chat import render_prompt
    from domtok.utils import read_jsonl, shared_data_dir

    data = shared_data_dir()
    questions = []
    if data is not None and (data / "gsm8k" / "test.jsonl").exists():
        questions = [r["question"] for r, _ in zip(read_jsonl(data / "gsm8k" / "test.jsonl"), range(n))]
    while len(questions) < n:  # no data here: synthetic questions of varied length
        k = len(questions)
        questions.append(f"What is {k + 2} times {k + 3}?" + " Show your work." * (k % 5))
    # vary the lengths further: a third of the prompts are cut short
    return [render_prompt(q if i % 3 else " ".join(q.split()[:6])) for i, q in enumerate(questions)]


def pick_eos(rows: list[list[int]], n: int, target: float = 0.75) -> list[int]:
    """EOS ids that end about `target` of the rows early, at spread-out steps: tokens are
    added, most widely used first, until that many rows contain one of them after step 4."""
    chosen: list[int] = []
    counts: dict[int, int] = {}
    for r in rows:
        for t in set(r[4:n]):
            counts[t] = counts.get(t, 0) + 1
    for tok in sorted(counts, key=lambda t: (-counts[t], t)):
        chosen.append(tok)
        if sum(any(t in chosen for t in r[:n]) for r in rows) >= target * len(rows):
            break
    return chosen


def useful(ids: list[int], eos: list[int], n: int) -> list[int]:
    ids = list(ids[:n])
    end = next((k for k, t in enumerate(ids) if t in eos), None)
    return ids if end is None else ids[:end + 1]


def measure(tok, layers: int, width: int, heads: int, args) -> dict:
    """Our engine vs HF generate on one random model of this shape and this tokenizer's vocab."""
    from transformers import GPT2LMHeadModel

    from domtok.engine import Engine, SamplingParams
    from domtok.model.checkpoint import save_model_dir
    from domtok.model.gpt import GPT, GPTConfig
    from domtok.model.hf import export_hf

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=1024, vocab_size=tok.vocab_size, n_layer=layers,
                          n_head=heads, n_embd=width)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_model_dir(model, None, Path(tmp) / "native")
        export_hf(Path(tmp) / "native", Path(tmp) / "hf")
        hf = GPT2LMHeadModel.from_pretrained(Path(tmp) / "hf").eval()

    prompts = prompts_for(args.batch)
    prompt_ids = [tok.encode(p) for p in prompts]
    engine = Engine(model, tok)
    N = args.new_tokens

    # a first greedy pass without EOS picks the shared early-stop token
    free = engine.generate(prompt_ids, SamplingParams(max_new_tokens=N, stop_on_eos=False, stop_strings=()),
                           batch_size=args.batch)
    eos = pick_eos([g.ids for g in free], N)
    params = SamplingParams(max_new_tokens=N, eos_id=tuple(eos), stop_strings=())

    # HF: left padding + attention mask; finished rows are padded with the EOS, as usual
    P = max(len(p) for p in prompt_ids)
    input_ids = torch.full((len(prompt_ids), P), eos[0], dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for r, p in enumerate(prompt_ids):
        input_ids[r, P - len(p):] = torch.tensor(p)
        attention[r, P - len(p):] = 1

    def run_ours():
        return [g.ids for g in engine.generate(prompt_ids, params, batch_size=args.batch)]

    def run_hf():
        with torch.inference_mode():
            out = hf.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=N, do_sample=False,
                              eos_token_id=eos, pad_token_id=eos[0])
        return [row[P:].tolist() for row in out]

    timings = {"ours": [], "hf": []}
    results = {}
    for _ in range(args.repeats):  # interleaved, so load on the shared machine hits both alike
        for name, fn in (("hf", run_hf), ("ours", run_ours)):
            t0 = time.perf_counter()
            results[name] = fn()
            timings[name].append(time.perf_counter() - t0)

    ours = [useful(r, eos, N) for r in results["ours"]]
    theirs = [useful(r, eos, N) for r in results["hf"]]
    n_useful = sum(len(r) for r in ours)
    agree = sum(a == b for a, b in zip(ours, theirs)) / len(ours)
    token_agree = sum(x == y for a, b in zip(ours, theirs) for x, y in zip(a, b)) / max(1, n_useful)
    t_ours, t_hf = min(timings["ours"]), min(timings["hf"])
    lengths = sorted(len(r) for r in ours)
    report = {
        "engine_vs_hf_generate": round(t_hf / t_ours, 2),
        "engine_tokens_per_s": round(n_useful / t_ours, 1),
        "hf_tokens_per_s": round(sum(len(r) for r in theirs) / t_hf, 1),
        "engine_s": round(t_ours, 3), "hf_s": round(t_hf, 3),
        "useful_tokens": n_useful, "rows": len(ours), "max_new_tokens": N,
        "finished_early_rows": sum(n < N for n in lengths),
        "row_tokens_min_median_max": [lengths[0], lengths[len(lengths) // 2], lengths[-1]],
        "greedy_rows_identical": round(agree, 4), "greedy_tokens_identical": round(token_agree, 4),
        "model": f"{layers}L-{width}d-{heads}h vocab {tok.vocab_size}",
        "device": "cpu", "threads": torch.get_num_threads(), "eos_ids": eos,
    }
    print(f"{report['model']}: ours {t_ours:.2f}s  hf {t_hf:.2f}s  rows identical {agree:.0%}  "
          f"useful tokens {n_useful}  ratio {report['engine_vs_hf_generate']}x")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per engine; the best counts")
    # 1 thread by default: on a shared, oversubscribed machine OpenMP barriers make every op
    # wait for a busy core (7x slower here); both engines get the same setting
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    ap.add_argument("--quick", action="store_true", help="2 layers, 4 rows, 8 new tokens, one repeat (CI)")
    args = ap.parse_args()
    if args.quick:
        args.layers, args.width, args.heads, args.batch, args.new_tokens, args.repeats = 2, 64, 2, 4, 8, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    from domtok.data.corpus import math_web_corpus
    from domtok.tokens.build import train_bpe
    from domtok.tokens.tokenizer import load_tokenizer

    # 1. a GPT-2-vocab model (the engine's job on real checkpoints): every decode step streams
    #    the 50k-row lm_head, so on CPU both engines are bound by memory bandwidth
    report = measure(load_tokenizer("gpt2", "baseline"), args.layers, args.width, args.heads, args)
    # 2. the tiny preset's shape with its own BPE vocab (what `domtok run` generates with on CPU)
    with tempfile.TemporaryDirectory() as tmp:
        train_bpe(math_web_corpus(2000, 0), 1024, Path(tmp) / "bpe")
        tiny = measure(load_tokenizer(str(Path(tmp) / "bpe"), "baseline"), 4, 128, 4, args)
    report["engine_vs_hf_generate_tiny_preset"] = tiny["engine_vs_hf_generate"]
    report["tiny_preset"] = tiny
    report["quick"] = args.quick
    print(json.dumps(report))


if __name__ == "__main__":
    main()
