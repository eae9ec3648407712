"""Benchmark: how fast does `domtok prepare` turn text into tokens?

    python benchmarks/prepare.py [--mb 24] [--repeats 3] [--quick]

On one text (GSM8K train answers from ../shared/data, else generated math-web text,
replicated to --mb megabytes):

1. plain tiktoken `encode_ordinary_batch` (the GPT-2 encoding, no domain tokens): MB/s;
2. ours, single process: inject domain tokens + tokenize with the mul_tokens condition
   (exactly the work a prepare worker does per chunk): MB/s;
3. the whole prepare pipeline (read jsonl, inject, tokenize, write shards) with 1 worker and
   with 2 workers: the speed-up.

Goals: (2) >= 0.7x (1); 2 workers >= 1.6x one worker. Each timing is the best of --repeats.
The last line is one JSON object with the two ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from domtok.utils import shared_data_dir


def load_text(target_mb: float) -> tuple[list[str], str]:
    data = shared_data_dir()
    path = data / "gsm8k" / "train.jsonl" if data else None
    if path and path.exists():
        from domtok.data.sources import load_gsm8k

        docs, origin = [r["answer"] for r in load_gsm8k("train", str(path))], f"GSM8K train answers ({path})"
    else:
        from domtok.data.corpus import math_web_corpus

        docs, origin = math_web_corpus(5000, seed=0), "generated math-web text"
    size = sum(len(d.encode()) for d in docs)
    reps = max(1, round(target_mb * 1e6 / size))
    return docs * reps, f"{origin} x{reps}"


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=24.0, help="megabytes of text (default 24)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="0.2 MB, one repeat: proves the script runs (CI)")
    args = ap.parse_args()
    if args.quick:
        args.mb, args.repeats = 0.2, 1

    gpt2 = shared_data_dir()
    if gpt2 and (gpt2 / "gpt2" / "vocab.bpe").exists():
        os.environ.setdefault("DOMTOK_GPT2_DIR", str(gpt2 / "gpt2"))
    from domtok.data import prepare as prep
    from domtok.tokens.tokenizer import load_tokenizer

    docs, origin = load_text(args.mb)
    mb = sum(len(d.encode()) for d in docs) / 1e6
    print(f"text: {origin}: {len(docs)} documents, {mb:.1f} MB; cpus: {os.cpu_count()}")

    # 1. plain tiktoken on the same vocabulary (built offline from the same GPT-2 files)
    base = load_tokenizer("gpt2", "baseline")
    enc = base._tiktoken  # the tiktoken.Encoding itself: no domtok code in this timing
    t_tik = best_of(lambda: enc.encode_ordinary_batch(docs), args.repeats)
    print(f"tiktoken encode_ordinary_batch: {mb / t_tik:7.2f} MB/s")

    # 2. ours: inject + tokenize, mul_tokens condition, one process, the worker's own code path
    prep._init_worker("gpt2", "mul_tokens", "mul", "weak", False, os.environ.get("DOMTOK_GPT2_DIR", ""))
    chunk = 512

    def ours():
        for i in range(0, len(docs), chunk):
            prep.encode_chunk(docs[i:i + chunk])

    t_ours = best_of(ours, args.repeats)
    print(f"domtok inject+tokenize:         {mb / t_ours:7.2f} MB/s  ({t_tik / t_ours:.2f}x tiktoken)")

    # 3. the pipeline, 1 vs 2 workers, from a jsonl file
    tmp = Path(tempfile.mkdtemp(prefix="domtok-bench-"))
    try:
        src = tmp / "docs.jsonl"
        with open(src, "w") as f:
            for d in docs:
                f.write(json.dumps({"text": d}) + "\n")
        times = {}
        for workers in (1, 2):
            def pipeline():
                out = tmp / f"out{workers}"
                shutil.rmtree(out, ignore_errors=True)
                prep.run(prep.PrepareConfig(source=str(src), condition="mul_tokens", workers=workers,
                                            shard_tokens=50_000_000, val_fraction=0.01), out)
            times[workers] = best_of(pipeline, args.repeats)
            print(f"prepare pipeline, {workers} worker(s):  {mb / times[workers]:7.2f} MB/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    speedup = times[1] / times[2]
    print(f"two workers vs one: {speedup:.2f}x")
    print(json.dumps({"inject_tokenize_vs_tiktoken": round(t_tik / t_ours, 3), "two_workers_vs_one": round(speedup, 3),
                      "quick": args.quick}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
