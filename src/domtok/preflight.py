"""What the real run will need, measured and projected from a smoke run (`domtok run --smoke`).

For the REAL (unshrunk) config: parameters, tokens, FLOPs, per-GPU memory (`activation_bytes`,
checked against autograd in tests/test_smoke.py) and wall time projected from FLOPs at a stated
MFU on a named GPU (`pretrain_plan`, also `domtok plan`'s); the checks (`checks`: divisibility
of the global batch, enough data or how many epochs, evaluation sets present, disk for
checkpoints) and prepare's measured throughput per worker with the projected time for the
real corpus (`prepare_throughput`). `domtok.smoke` runs the nodes and prints these.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from domtok.data import sources
from domtok.gpus import GPUS
from domtok.rundir import document_partner

# The projection's reference GPU and utilisation; both are printed with every projection.
DEFAULT_GPU = "H100"
DEFAULT_MFU = 0.40

# Corpus sizes of the shipped hub sources (GPT-2 tokens), for the "enough data" check when the
# corpus is streamed and cannot be counted before it is prepared.
KNOWN_CORPUS_TOKENS = {
    # the subset's name: a 10B-GPT-2-token sample of FineWeb-Edu (dataset card)
    "HuggingFaceFW/fineweb-edu:sample-10BT": 10.0e9,
}


def is_hub(source: str | None) -> bool:
    """Whether a dataset source is read from the Hugging Face hub (None: the stage's default, a hub id)."""
    return source is None or sources.parse_source(source).kind == "hub"


def activation_bytes(n_layer: int, n_embd: int, n_head: int, vocab: int, tokens: int, dtype_bytes: int) -> dict:
    """Activation memory of one training micro-batch of `tokens` = micro-batch x seq len tokens.

    Counted from what autograd keeps for the backward pass of `domtok.model.gpt.GPT` under
    autocast (matmul inputs in the compute dtype, LayerNorm inputs and the residual stream in
    fp32) with fused SDPA (no T x T matrix is kept): per layer and token, the two LayerNorm
    inputs (2h fp32), the inputs of c_attn, q/k/v, the SDPA output, the input of c_proj, the
    input of c_fc (7h), the GELU input and the MLP c_proj input (8h) in the compute dtype, and
    SDPA's log-sum-exp (one fp32 per head). At the head: ln_f's input (fp32), lm_head's input,
    and the fp32 log-softmax of the logits (4V), plus, at the start of backward, the logits'
    gradient in fp32 and in the compute dtype (transient). tests/test_smoke.py checks the
    saved part against what autograd really saves on CPU.
    """
    h, d = n_embd, dtype_bytes
    per_layer = 2 * h * 4 + 15 * h * d + n_head * 4
    saved = tokens * (n_layer * per_layer + h * 4 + h * d + 4 * vocab)
    transient = tokens * vocab * (4 + d)
    return {"saved": saved, "transient": transient, "total": saved + transient}


def pretrain_plan(cfg, vocab_size: int, world: int, gpu: str, mfu: float) -> dict:
    """Params, tokens, FLOPs, per-GPU memory and projected wall time of a real pretrain config."""
    import torch

    from domtok.train.pretrain import build_model

    with torch.device("meta"):
        model = build_model(cfg, vocab_size)
    m = model.config
    params = model.num_params(non_embedding=False)
    tokens = cfg.tokens_per_step * cfg.max_steps
    fpt = model.flops_per_token(cfg.seq_len)
    dtype = "bfloat16" if cfg.dtype == "auto" else cfg.dtype  # auto = bf16 on a CUDA GPU
    act = activation_bytes(m.n_layer, m.n_embd, m.n_head, m.vocab_size, cfg.micro_batch_size * cfg.seq_len,
                           4 if dtype == "float32" else 2)
    mem = {"weights": 4 * params, "grads": 4 * params, "adamw": 8 * params, "activations": act["total"]}
    peak, gpu_mem_gb = GPUS[gpu]
    return {"params": params, "tokens": tokens, "flops_per_token": fpt, "flops": fpt * tokens, "dtype": dtype,
            "micro_batch": cfg.micro_batch_size, "seq_len": cfg.seq_len, "world_size": world,
            "memory_per_gpu": mem, "memory_per_gpu_total": sum(mem.values()), "gpu": gpu, "gpu_memory_gb": gpu_mem_gb,
            "mfu": mfu, "wall_s": fpt * tokens / (world * peak * mfu),
            "tokens_per_step": cfg.tokens_per_step, "max_steps": cfg.max_steps,
            "keep_last": cfg.keep_last}


def corpus_tokens(prepare_cfg: dict, smoke_meta: dict) -> tuple[float | None, str]:
    """An estimate of the real corpus's tokens for one condition, and where it comes from."""
    source = str(prepare_cfg.get("source", "synthetic:math-web"))
    tr, va = smoke_meta["splits"]["train"], smoke_meta["splits"]["val"]
    tok, nbytes, docs = tr["tokens"] + va["tokens"], tr["bytes"] + va["bytes"], tr["documents"] + va["documents"]
    if prepare_cfg.get("max_docs"):
        return prepare_cfg["max_docs"] * tok / docs, f"max_docs={prepare_cfg['max_docs']} x the smoke's tokens/document"
    if source.startswith("synthetic:"):
        n = int(prepare_cfg.get("n_docs", 2000))
        return n * tok / docs, f"n_docs={n} x the smoke's {tok / docs:.1f} tokens/document"
    spec = sources.parse_source(source)
    if spec.kind == "local":
        size = sum(p.stat().st_size for p in sources.local_files(spec.path, prepare_cfg.get("split")))
        return size * tok / nbytes, f"{size:,} bytes of {source} x the smoke's tokens/byte (JSON overhead included)"
    key = f"{spec.path}:{spec.config}" if spec.config else spec.path
    if key in KNOWN_CORPUS_TOKENS:
        return KNOWN_CORPUS_TOKENS[key], f"{key}: {KNOWN_CORPUS_TOKENS[key]:.3g} GPT-2 tokens (its dataset card)"
    return None, f"{source}: size unknown before it is prepared"


def checks(spec, smoke, run_root: Path, world: int, online: bool, gpu: str, mfu: float,
           fixtures: set | None = None) -> tuple[list[dict], list[str]]:
    """(per-pretrain-stage plans, check lines 'OK/WARN/FAIL: ...') for the real spec.
    `fixtures`: the sources the smoke read as fixtures (None: every hub source when offline)."""
    from domtok.config import from_dict
    from domtok.train.pretrain import PretrainConfig

    lines: list[str] = []
    plans: list[dict] = []
    smoke_dir = Path(smoke.runs_dir) / smoke.name
    try:
        tok_summary = json.loads((smoke_dir / "tokenizer" / "manifest.json").read_text())["summary"]
        vocab = int(tok_summary["vocab_size"])
    except (OSError, KeyError, json.JSONDecodeError):
        return [], ["FAIL: the smoke's tokenizer node did not finish; no projection for the real config"]
    metas = {}
    for cond in spec.conditions:
        p = smoke_dir / cond / "prepare" / "meta.json"
        if p.exists():
            metas[cond] = json.loads(p.read_text())

    disk = 0.0
    n_runs = len(spec.conditions) * len(spec.seeds)
    # (label, config, prepare section) of every real pretraining: each rung's in a ladder
    pretrains = [(f"{r.name}/{st.name}" if r else st.name, r.stage_configs[st.name] if r else st.config,
                  r.prepare_config if r else spec.prepare)
                 for r in (spec.ladder or [None]) for st in spec.stages if st.kind == "pretrain"]
    for name, config, prepare in pretrains:
        cfg = from_dict(PretrainConfig, {k: v for k, v in config.items() if k not in ("data_dir",)},
                        where=f"stage {name}")
        per_micro = cfg.micro_batch_size * cfg.seq_len * world
        if cfg.tokens_per_step % per_micro:
            lines.append(f"FAIL: {name}: tokens_per_step={cfg.tokens_per_step:,} is not divisible by "
                         f"micro_batch_size x seq_len x world_size = {cfg.micro_batch_size} x {cfg.seq_len} x {world}")
            continue
        lines.append(f"OK: {name}: tokens_per_step {cfg.tokens_per_step:,} = {cfg.micro_batch_size} x {cfg.seq_len}"
                     f" x {world} GPU(s) x grad_accum {cfg.tokens_per_step // per_micro}")
        plan = pretrain_plan(cfg, vocab, world, gpu, mfu)
        plan["stage"] = name
        plans.append(plan)
        if plan["memory_per_gpu_total"] > plan["gpu_memory_gb"] * 2**30:
            lines.append(f"FAIL: {name}: needs {plan['memory_per_gpu_total'] / 2**30:.1f} GiB per GPU, more than "
                         f"a {gpu}'s {plan['gpu_memory_gb']} GB; lower micro_batch_size")
        ckpt = 16 * plan["params"]  # fp32 weights + AdamW state; the model dir adds 4 bytes/param
        disk += n_runs * (max(1, cfg.keep_last) * ckpt + 4 * plan["params"])
        for cond, meta in metas.items():
            total, how = corpus_tokens(prepare, meta)
            if total is None:
                lines.append(f"WARN: {name} [{cond}]: cannot check the data volume: {how}")
                continue
            at_least = ""
            if cond != "baseline" and "baseline" in metas and how.endswith("(its dataset card)"):
                # a known hub size counts GPT-2 tokens without injection; the injection shortens the
                # text by a ratio the smoke measures on the text it read
                b, c = metas["baseline"]["splits"]["train"], meta["splits"]["train"]
                ratio = (c["tokens"] / c["bytes"]) / (b["tokens"] / b["bytes"])
                src = str(prepare.get("source"))
                if (src in fixtures) if fixtures is not None else not online:
                    # the smoke read a fixture, not this corpus: its ratio says nothing about the real
                    # text. What is known: injection only shortens text, so the card's count is a bound.
                    at_least = "at least "
                    how += (f"; injection shortens it by a ratio known once `prepare` has read the corpus (the smoke "
                            f"read a fixture, whose x {ratio:.3f} is not this corpus's)")
                else:
                    total *= ratio
                    how += f"; x {ratio:.3f} for injection (measured on the first documents of the corpus)"
            val = prepare.get("val_fraction", 0.02) if not prepare.get("val_docs") else 0.0
            train_tokens = total * (1 - val)
            epochs = plan["tokens"] / train_tokens
            word = "WARN" if epochs > 1 else "OK"
            over = "at most " if at_least else "~"
            msg = (f"{word}: {name} [{cond}]: {plan['tokens']:,} tokens to train over {over}{train_tokens:,.0f} training "
                   f"tokens ({how}): {at_least}{epochs:.3f} epochs")
            lines.append(msg + ("; the data repeats" if epochs > 1 else ""))
            partner = document_partner(spec.conditions, cond) if cond in spec.conditions else None
            if partner is not None:  # it trains on its partner's documents: fewer (or more) steps than planned
                lines.append(f"OK: {name} [{cond}]: document-matched to {partner}: it reads {partner}'s documents in "
                             "as many steps as they take, so its tokens and FLOPs are about those shown times "
                             f"its text's length in tokens relative to {partner}'s")
    for cond, meta in metas.items():  # the shards: 2 bytes per token (uint16) up to 65,536 ids
        total, _ = corpus_tokens(spec.prepare, meta)
        disk += (total or 0) * (2 if vocab <= 65536 else 4)
    # post-training checkpoints: of the first pretrained model (of each rung, in a ladder)
    first = {p["stage"].split("/")[0] if spec.ladder else "": p for p in reversed(plans)}
    for plan in first.values():
        for st in spec.stages:
            if st.kind in ("sft", "grpo", "rft"):
                params = plan["params"]
                keep = st.config.get("keep_checkpoints", st.config.get("save_total_limit", 2))
                disk += n_runs * (max(1, int(keep)) * 16 * params + 4 * params)
    free = shutil.disk_usage(run_root if run_root.exists() else Path(".")).free
    # a WARN, not a FAIL: the real run may well go to another machine's disk than the smoke's
    word = "OK" if disk < free else "WARN"
    lines.append(f"{word}: disk: the real run writes ~{disk / 1e9:,.0f} GB (shards, checkpoints, model dirs); "
                 f"{free / 1e9:,.0f} GB free under {run_root} on this machine")
    # data and evaluation sets the real run reads
    for where, kind, src in _real_sources(spec):
        if is_hub(src):
            name = src or {"gsm8k": sources.GSM8K, "hellaswag": sources.HELLASWAG, "tulu": sources.TULU,
                           "tinygsm": sources.TINYGSM}[kind]
            if online:
                lines.append(f"OK: {where}: {name} (hub reachable from here)")
            else:
                lines.append(f"WARN: {where}: {name} is on the hub, which this machine cannot reach; the real run "
                             f"needs network on the node or a local copy in that schema")
        elif not str(src).startswith("synthetic:"):
            ok = Path(src).exists()
            lines.append(f"{'OK' if ok else 'FAIL'}: {where}: {src} {'exists' if ok else 'does not exist'}")
    return plans, lines


def _real_sources(spec) -> list[tuple[str, str, str | None]]:
    """(where, fixture kind, source) of every dataset the real spec reads."""
    out = [("prepare.source", "fineweb", str(spec.prepare.get("source", "synthetic:math-web")))]
    kinds = {"instruct": "tulu", "gsm8k": "gsm8k", "tinygsm": "tinygsm"}

    def data(src, where):
        k = src.get("kind", "gsm8k")
        if k in kinds or (k == "gsm_sbs" and src.get("path")):
            out.append((where, kinds.get(k, "gsm8k"), src.get("path")))
        elif k == "jsonl":
            out.append((where, "jsonl", src.get("path")))

    for st in spec.stages:
        c = st.config
        if st.kind == "sft":
            for i, s in enumerate(c.get("stages") or []):
                for j, src in enumerate(s.get("data") or []):
                    data(src, f"{st.name}.stages.{i}.data.{j}")
        elif st.kind == "grpo":
            data(c.get("prompts") or {"kind": "gsm8k"}, f"{st.name}.prompts")
        elif st.kind == "rft":
            data(c.get("questions") or {"kind": "gsm8k"}, f"{st.name}.questions")
        elif st.kind == "pretrain" and c.get("hellaswag_every"):
            out.append((f"{st.name}.hellaswag_data", "hellaswag", c.get("hellaswag_data")))
    for bname, b in spec.benchmarks.items():
        if b["kind"] in ("gsm8k", "hellaswag"):
            out.append((f"evals.{bname}.data", b["kind"], b["config"].get("data")))
    return [o for o in out if o[0] != "prepare.source" or not o[2].startswith("synthetic:")]


def prepare_throughput(smoke, spec, online: bool) -> dict | None:
    """Measured reader and per-worker rates on the smoke's text; projected time for the real corpus.

    prepare reads the source in one process and feeds `workers` tokenizer processes, so the
    corpus takes max(read time, tokenize time / workers): the larger side is the limit. The
    reader is timed on the smoke's local copy (parsing, checking and pickling each chunk for
    a worker); a hub stream adds the network, which is not measured here.
    """
    from domtok.config import from_dict
    from domtok.data import prepare as prep

    smoke_dir = Path(smoke.runs_dir) / smoke.name
    cond = next((c for c, v in spec.conditions.items() if v.get("token_set")), next(iter(spec.conditions)))
    meta_path = smoke_dir / cond / "prepare" / "meta.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    tok = json.loads((smoke_dir / "tokenizer" / "manifest.json").read_text())["summary"]["tokenizer"]
    cfg = from_dict(prep.PrepareConfig, {**smoke.prepare, "condition": cond, "token_set": smoke.token_set,
                                         "tokenizer": tok}, where="smoke prepare")
    import pickle

    t0 = time.perf_counter()
    texts = list(prep.source_texts(cfg)[0])
    for i in range(0, len(texts), cfg.chunk_docs):  # the reader also pickles each chunk to a worker
        pickle.dumps(texts[i:i + cfg.chunk_docs])
    read_s = time.perf_counter() - t0
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    prep._init_worker(tok, cond, smoke.token_set, cfg.inject_mode, cfg.word_forms, cfg.gpt2_dir)
    prep.encode_chunk(texts[:8])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(texts), cfg.chunk_docs):
        prep.encode_chunk(texts[i:i + cfg.chunk_docs])
    work_s = time.perf_counter() - t0
    prep._init_worker(tok, cond, smoke.token_set, cfg.inject_mode, cfg.word_forms, cfg.gpt2_dir)  # shuts its helper thread
    tr, va = meta["splits"]["train"], meta["splits"]["val"]
    tokens_per_byte = (tr["tokens"] + va["tokens"]) / (tr["bytes"] + va["bytes"])
    total_tokens, how = corpus_tokens(spec.prepare, meta)
    workers = int(spec.prepare.get("workers", 1))
    out = {"condition": cond, "reader_bytes_per_s": nbytes / read_s, "worker_bytes_per_s": nbytes / work_s,
           "worker_tokens_per_s": nbytes * tokens_per_byte / work_s, "workers": workers, "corpus_tokens": total_tokens,
           "corpus_how": how}
    if total_tokens:
        corpus_bytes = total_tokens / tokens_per_byte
        read_t = corpus_bytes / out["reader_bytes_per_s"]
        work_t = corpus_bytes / (out["worker_bytes_per_s"] * workers)
        out.update(read_s=read_t, tokenize_s=work_t, projected_s=max(read_t, work_t),
                   limit="reader" if read_t > work_t else "workers")
    out["reader_note"] = ("the reader was timed on a local copy; streaming from the hub adds the network"
                          if not str(spec.prepare.get("source", "")).startswith("synthetic:") else
                          "synthetic documents: the reader is the generator")
    return out
