"""`domtok prepare`: text source -> (inject) -> tokenize -> token shards, for ONE condition.

    domtok prepare CONFIG [key=value ...]     # reads the `prepare:` section of CONFIG if present

The story, top to bottom:

1. Read the source once, in order: `synthetic:math-web` (n_docs generated documents), a local
   file/dir, or `hub:<id>[:config][@split]` (see `domtok.data.sources`). Optionally keep a
   seeded random subset (`max_docs`). Each document gets a global index.
2. Decide train/val per document with its own seeded RNG, from the index alone, so every
   condition prepared from the same source sees the same documents in the same order and the
   same validation set (a random sample, not "the first shard").
3. Worker processes inject domain tokens (domain condition only) and tokenize chunks of
   documents; results come back in order, at most a few chunks in flight (bounded memory).
4. Each document becomes `[EOT] + ids`; `ShardWriter` cuts the stream into fixed-size
   shards and writes each one as it fills (`domtok.data.shards`).
5. meta.json is written last. Re-running skips complete shards and resumes mid-stream.

`bytes` in meta.json counts the UTF-8 bytes of the ORIGINAL text, so bits-per-byte compares
across conditions. `injection` records the domain condition's injector settings (also saved in
its tokenizer, which carries them to every later stage); `domain_tokens_after_space` counts the
domain tokens that follow a lone space token (see `domain_tokens_after_space`). The tokenizer: `gpt2`, a path to a tokenizer dir, or `bpe-N`, which trains
an N-token byte-level BPE on a seeded sample of the *uninjected* source into
`out_dir/tokenizer/` (deterministic); a second condition reuses it by passing that path. Training `bpe-N`
reads the source once more for that sample; for a streamed hub corpus build the tokenizer
first (`domtok tokenizer build`) and pass its path.
"""

from __future__ import annotations

import argparse
import json
import os
import multiprocessing as mp
import random
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from domtok.config import atomic_write_json, config_hash, load_config, save_resolved
from domtok.data.shards import ShardWriter, completed_shards, shard_dtype
from domtok.errors import DomtokError
from domtok.utils import read_json_object


@dataclass
class PrepareConfig:
    source: str = "synthetic:math-web"  # synthetic:math-web | local path | hub:<id>[:config][@split]
    n_docs: int = 2000                  # synthetic sources: how many documents to generate
    text_field: str = "text"            # field(s) holding the text; "question,answer" joins with "\n"
    split: str = "train"                # source split (hub / local dirs with split files)
    max_docs: int = 0                   # > 0: a seeded random subset of this many documents
    condition: str = "baseline"         # baseline | mul_tokens | ...
    token_set: str = ""                 # "" = the condition's default set (mul for mul_tokens)
    inject_mode: str = "weak"           # weak | strict (domain condition only)
    word_forms: bool = False            # also inject `6 times 9 = 54` (domain condition only)
    tokenizer: str = "gpt2"             # gpt2 | bpe-N | path to a tokenizer dir
    gpt2_dir: str = ""                  # dir with vocab.bpe + encoder.json ("" = DOMTOK_GPT2_DIR)
    bpe_sample_docs: int = 20000        # bpe-N: documents sampled to train it
    bpe_split_digits: bool = False      # bpe-N: no merge joins a digit: numbers one digit per token
    shard_tokens: int = 10_000_000      # tokens per shard (the last shard of a split is shorter)
    val_fraction: float = 0.02          # each document goes to val with this probability ...
    val_docs: int = 0                   # ... or exactly this many (needs a sized source)
    seed: int = 0
    workers: int = 1                    # tokenizer processes (1 = in this process)
    chunk_docs: int = 512               # documents per work item
    max_bad_fraction: float = 0.01      # malformed records tolerated before failing


# Settings that change speed, not bytes: left out of the hash so a resume may change them.
NOT_HASHED = ("workers", "chunk_docs")


def prepare_hash(cfg: PrepareConfig) -> str:
    d = asdict(cfg)
    for k in NOT_HASHED:
        d.pop(k)
    return config_hash(d)


# ---------------------------------------------------------------------------- source documents

def iter_texts(cfg: PrepareConfig) -> tuple[Iterator[str], object, int | None]:
    """(texts in source order, load report or None, number of texts if known)."""
    if cfg.source.startswith("synthetic:"):
        from domtok.data.corpus import math_web_corpus

        kind = cfg.source.split(":", 1)[1]
        if kind != "math-web":
            raise DomtokError(f"source {cfg.source!r}: unknown synthetic source; use synthetic:math-web")
        docs = math_web_corpus(cfg.n_docs, cfg.seed)
        return iter(docs), None, len(docs)
    from domtok.data.sources import _need, load_records, parse_source

    fields = [f.strip() for f in cfg.text_field.split(",") if f.strip()]

    def check(rec):
        return _need(rec, dict.fromkeys(fields, str)) or rec

    spec = parse_source(cfg.source, cfg.split)
    records = load_records(cfg.source, check, cfg.split, max_bad_fraction=cfg.max_bad_fraction,
                           streaming=spec.kind == "hub")
    texts = ("\n".join(r[f] for f in fields) for r in records)
    return texts, records, None


def source_texts(cfg: PrepareConfig) -> tuple[Iterator[str], object, int | None]:
    texts, records, n = iter_texts(cfg)
    if cfg.max_docs > 0:
        from domtok.data.sources import sample_records

        texts = sample_records(texts, cfg.max_docs, cfg.seed)
        n = len(texts)
        texts = iter(texts)
    return texts, records, n


def val_assigner(cfg: PrepareConfig, n_total: int | None):
    """doc index -> True if the document is in the validation split. Depends on seed only."""
    if cfg.val_docs > 0:
        if n_total is None:
            raise DomtokError(f"val_docs={cfg.val_docs} needs a source of known size (synthetic or max_docs > 0); "
                              "use val_fraction for a streamed source")
        if cfg.val_docs >= n_total:
            raise DomtokError(f"val_docs={cfg.val_docs} leaves no training documents out of {n_total}; lower it")
        chosen = set(random.Random(f"val/{cfg.seed}").sample(range(n_total), cfg.val_docs))
        return lambda i: i in chosen
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise DomtokError(f"val_fraction={cfg.val_fraction} must be in [0, 1)")
    rng = random.Random(f"val/{cfg.seed}")  # one draw per document, in order

    def is_val(i: int) -> bool:
        return rng.random() < cfg.val_fraction
    return is_val


# ---------------------------------------------------------------------------- tokenizer

def tokenizer_sample(cfg: PrepareConfig) -> list[str]:
    """The tokenizer's training corpus: a seeded sample of the uninjected source, the same for
    every condition (a bpe-N is trained on it, the control set is built from it)."""
    from domtok.data.sources import sample_records

    texts, _, _ = iter_texts(cfg)
    return sample_records(texts, cfg.bpe_sample_docs, cfg.seed)


def resolve_tokenizer(cfg: PrepareConfig, out_dir: Path) -> str:
    """The base to pass to `load_tokenizer`: "gpt2" or a tokenizer directory (training bpe-N)."""
    tok = cfg.tokenizer
    if tok.startswith("bpe-"):
        try:
            vocab = int(tok[4:])
        except ValueError:
            raise DomtokError(f"tokenizer {tok!r}: write bpe-N with N an integer, e.g. bpe-4096") from None
        bpe_dir = out_dir / "tokenizer"
        if (bpe_dir / "domtok_tokenizer.json").exists():  # written last by train_bpe: complete
            from domtok.tokens.tokenizer import Tokenizer

            held = Tokenizer.load(bpe_dir)
            # a corpus that yields fewer merges than asked gives a smaller bpe, named by its size
            if not (held.base == tok or (held.base.startswith("bpe-") and held.n_base < vocab)):
                raise DomtokError(f"{bpe_dir}: holds a {held.base} tokenizer, not {tok}; "
                                  "use a new output directory")
            if held.splits_digits != cfg.bpe_split_digits:
                raise DomtokError(f"{bpe_dir}: holds a tokenizer with split_digits={held.splits_digits}, not "
                                  f"{cfg.bpe_split_digits}; use a new output directory")
        else:
            from domtok.tokens.build import small_bpe_warning, train_bpe

            sample = tokenizer_sample(cfg)
            small_bpe_warning(train_bpe(sample, vocab, bpe_dir, name=tok, split_digits=cfg.bpe_split_digits), vocab)
        return str(bpe_dir)
    if tok == "gpt2":
        return "gpt2"
    if not Path(tok).is_dir():
        raise DomtokError(f"tokenizer {tok!r}: not gpt2, bpe-N or an existing tokenizer directory")
    return tok


def _load_tok(base: str, condition: str, token_set: str, inject_mode: str, word_forms: bool, gpt2_dir: str):
    """The condition's tokenizer, carrying the injector settings every later stage reads."""
    from domtok.tokens.tokenizer import load_tokenizer

    tok = load_tokenizer(base, condition, token_set=token_set or "mul", gpt2_dir=gpt2_dir or None)
    return tok.with_injection(inject_mode, word_forms)


# ---------------------------------------------------------------------------- worker

_W: dict = {}
_PRELOADED: dict = {}  # init args -> the parent's tokenizer, inherited by forked workers


def _init_worker(base: str, condition: str, token_set: str, mode: str, word_forms: bool, gpt2_dir: str) -> None:
    """Load the tokenizer once per process (a forked worker reuses the parent's: loading GPT-2's
    vocabulary costs ~0.4 s per process). A failure is kept and raised by the first task: an
    exception escaping a Pool initializer makes the pool restart workers forever."""
    # The helper thread of an earlier in-process run is shut down; a forked worker inherits the
    # parent's executor object but not its thread, so it only forgets it.
    if "threads" in _W and _W.get("threads_pid") == os.getpid():
        _W["threads"].shutdown(wait=True)
    _W.clear()
    try:
        key = (base, condition, token_set, mode, word_forms, gpt2_dir)
        tok = _PRELOADED[key] if key in _PRELOADED else _load_tok(*key)
    except BaseException as e:  # noqa: BLE001 - re-raised in encode_chunk
        _W["error"] = e
        return
    _W.update(tok=tok, dtype=shard_dtype(tok.vocab_size))


def encode_chunk(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inject (domain condition) + tokenize: (all ids concatenated with an EOT before each doc,
    token count per doc incl. EOT, original UTF-8 bytes per doc).

    Injection is Python (holds the GIL); tiktoken's encoder releases it. So the chunk is cut into
    sub-batches and sub-batch k is tokenized on a helper thread while k+1 is injected: the two
    costs overlap instead of adding up. Documents are encoded one by one, not with
    `encode_batch`: tiktoken's batch starts a thread pool per call, which costs more CPU than
    it saves when every core already runs a worker process (measured: 1.9x the CPU).
    """
    if "error" in _W:
        raise _W["error"]
    tok = _W["tok"]
    nbytes = np.fromiter((len(t.encode("utf-8")) for t in texts), dtype=np.int64, count=len(texts))
    encode = tok.encode
    if tok.uses_domain_tokens:
        if "threads" not in _W:
            _W["threads"], _W["threads_pid"] = ThreadPoolExecutor(1), os.getpid()
        futures = []
        for i in range(0, len(texts), SUB_BATCH):
            injected = [tok.inject(t).text for t in texts[i:i + SUB_BATCH]]
            futures.append(_W["threads"].submit(lambda ts: [encode(t) for t in ts], injected))
        ids = [x for f in futures for x in f.result()]
    else:
        ids = [encode(t) for t in texts]
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    flat = np.empty(int(lengths.sum()), dtype=_W["dtype"])
    pos = 0
    eot = tok.eot_id
    for x in ids:
        flat[pos] = eot
        flat[pos + 1:pos + 1 + len(x)] = x
        pos += len(x) + 1
    return flat, lengths, nbytes


SUB_BATCH = 128  # documents injected before their tokenization is handed to the helper thread


# ---------------------------------------------------------------------------- lone spaces

_COUNT_CHUNK = 1 << 22


def domain_tokens_after_space(out_dir: Path, tok, totals: dict) -> dict:
    """How often a domain token directly follows a lone space token, per split and in all.

    GPT-2's pre-tokenizer never joins a space to a token it does not know, so ` <MUL_6_9_54>`
    in prose is two ids, ` ` + the token, where ` 54` was one: the domain condition spends
    ids on spaces the baseline folds into its numbers. A `leading_space` token set (`mul_space`)
    has one id for ` <MUL_6_9_54>`. Counted from the ids in the shards (the token before a
    shard's first id is the previous shard's last), so a resumed run counts the same.
    """
    from domtok.data.shards import read_shard

    space = tok.encode(" ")
    space_id = space[0] if len(space) == 1 else None
    lo, hi = tok.domain_start, tok.domain_start + len(tok.layout_texts)
    out = {"space_id": space_id}
    for split, t in totals.items():
        n, prev = 0, None
        if space_id is not None and t["domain_tokens"]:
            for name in t["shards"]:
                shard = read_shard(out_dir / name)
                for i in range(0, len(shard), _COUNT_CHUNK):   # bounded memory on 100M-token shards
                    ids = np.asarray(shard[i:i + _COUNT_CHUNK], dtype=np.int64)
                    before = np.concatenate(([-1 if prev is None else prev], ids[:-1]))
                    n += int(np.count_nonzero((ids >= lo) & (ids < hi) & (before == space_id)))
                    prev = int(ids[-1])
        out[split] = n
    dom = sum(t["domain_tokens"] for t in totals.values())
    out["all"] = sum(out[s] for s in totals)
    out["share"] = out["all"] / dom if dom else 0.0
    return out


# ---------------------------------------------------------------------------- run

def run(cfg: PrepareConfig, out_dir) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    h = prepare_hash(cfg)
    meta_path = out_dir / "meta.json"
    if meta_path.exists():
        meta = read_json_object(meta_path, f"use a new output directory or delete {out_dir}")
        if meta.get("config_hash") == h:
            return meta  # already complete
        raise DomtokError(f"{meta_path}: {out_dir} was prepared with another config ({meta.get('config_hash')} != {h}); "
                          "use a new output directory or delete this one")
    for side in out_dir.glob("*_[0-9]*.json"):  # shards of an earlier run must be from this config
        old = json.loads(side.read_text()).get("config_hash")
        if old != h:
            raise DomtokError(f"{side}: written by a different prepare config ({old} != {h}); "
                              "use a new output directory or delete the old shards")
    t0 = time.time()
    from domtok.tokens.sets import condition_token_set

    set_name = cfg.token_set or condition_token_set(cfg.condition) or "mul"
    save_resolved(cfg, out_dir)
    base = resolve_tokenizer(cfg, out_dir)
    init_args = (base, cfg.condition, set_name, cfg.inject_mode, cfg.word_forms, cfg.gpt2_dir)
    tok = _load_tok(*init_args)
    tok.save(out_dir / "tokenizer")
    tok.encode("warm up")  # builds the encoder once, here, before workers fork from this process
    _PRELOADED.clear()
    _PRELOADED[init_args] = tok
    dtype = shard_dtype(tok.vocab_size)
    domain_texts = list(tok.layout_texts)  # id order; a leading_space layout adds " <MUL_...>"
    if cfg.shard_tokens < 1:
        raise DomtokError(f"shard_tokens={cfg.shard_tokens} must be positive")
    writers = {s: ShardWriter(out_dir, s, cfg.shard_tokens, dtype, h, tok.domain_start, domain_texts,
                              completed_shards(out_dir, s, h)) for s in ("train", "val")}

    texts, records, n_total = source_texts(cfg)
    is_val = val_assigner(cfg, n_total)

    n_seen = [0]  # documents read from the source (skipped ones included)

    def chunks() -> Iterator[tuple[list[tuple[int, str, int]], list[str]]]:
        """(doc index, split, start offset) + texts for the documents still to write."""
        todo, batch = [], []
        for i, text in enumerate(texts):
            n_seen[0] = i + 1
            split = "val" if is_val(i) else "train"
            start = writers[split].wants(i)
            if start is None:
                continue
            todo.append((i, split, start))
            batch.append(text)
            if len(batch) >= cfg.chunk_docs:
                yield todo, batch
                todo, batch = [], []
        if batch:
            yield todo, batch

    def consume(todo, result) -> None:
        flat, lengths, nbytes = result
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        for (i, split, start), a, b, nb in zip(todo, offsets[:-1], offsets[1:], nbytes):
            writers[split].add(i, flat[a:b], int(nb), start)

    if cfg.workers <= 1:
        _init_worker(*init_args)
        for todo, batch in chunks():
            consume(todo, encode_chunk(batch))
    else:
        # fork: workers start in milliseconds, need no importable __main__ and inherit the loaded
        # tokenizer. Forking is safe here: tiktoken keeps no threads between calls, and a child
        # drops any helper thread of an earlier in-process run (_init_worker clears _W).
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=init_args) as pool:
            pending: deque = deque()
            for todo, batch in chunks():
                pending.append((todo, pool.apply_async(encode_chunk, (batch,))))
                if len(pending) >= 2 * cfg.workers:  # bounded: a few chunks in flight, results in order
                    todo0, res = pending.popleft()
                    consume(todo0, res.get())
            while pending:
                todo0, res = pending.popleft()
                consume(todo0, res.get())

    for w in writers.values():
        w.finish(n_seen[0])
    totals = {s: w.totals() for s, w in writers.items()}
    hist: dict = {}
    for t in totals.values():
        for k, v in t.pop("histogram").items():
            hist[k] = hist.get(k, 0) + v
    after_space = domain_tokens_after_space(out_dir, tok, totals)
    report = records.report.summary() if records is not None else None
    meta = {
        "splits": totals,
        "domain_token_histogram": dict(sorted(hist.items())),
        "skipped": report["skipped"] if report else 0,
        "skipped_examples": report["errors"] if report else [],
        "source": cfg.source,
        "seed": cfg.seed,
        "config_hash": h,
        "vocab_size": tok.vocab_size,
        "dtype": dtype.name,
        "condition": cfg.condition,
        "token_set": set_name,
        "injection": tok.injection if tok.uses_domain_tokens else None,
        "domain_tokens_after_space": after_space,
        "tokenizer": cfg.tokenizer,
        "eot_id": tok.eot_id,
        "shard_tokens": cfg.shard_tokens,
        "wall_time_s": round(time.time() - t0, 3),
    }
    if totals["train"]["documents"] == 0:
        raise DomtokError(f"{cfg.source}: no training documents came out; check the source and text_field")
    atomic_write_json(out_dir / "summary.json", meta)
    atomic_write_json(meta_path, meta)  # last: the directory is complete
    return meta


# ---------------------------------------------------------------------------- an experiment spec's data

def build_shared_tokenizer(cfg: dict, out_dir: Path) -> dict:
    """One base tokenizer for every condition: `gpt2`, or a BPE trained on the uninjected corpus.

    Conditions must differ only by their domain tokens, so the BPE is trained once, on text
    no condition has injected, and every condition's prepare stage loads it from here.
    """
    from domtok.config import from_dict, tokenizer_prepare_knobs
    from domtok.tokens.tokenizer import load_tokenizer

    base = str(cfg.get("base", "gpt2"))
    prep = {k: v for k, v in cfg["prepare"].items() if k not in ("condition", "token_set")}
    prep["tokenizer"] = base
    prep.update(tokenizer_prepare_knobs(cfg))
    prep_cfg = from_dict(PrepareConfig, prep, where="tokenizer")
    control_of = cfg.get("control_of")
    if not base.startswith("bpe-"):
        tok = load_tokenizer(base, "baseline")
        if not control_of:
            return {"tokenizer": base, "vocab_size": tok.vocab_size, "n_base": tok.n_base}
        tok.save(out_dir)  # the control set is saved beside a tokenizer dir
        path = str(out_dir)
    else:
        path = resolve_tokenizer(prep_cfg, out_dir.parent)
        if Path(path).resolve() != out_dir.resolve():
            raise DomtokError(f"tokenizer was trained into {path}, expected {out_dir}")
        tok = load_tokenizer(path, "baseline")
    out = {"tokenizer": str(path), "vocab_size": tok.vocab_size, "n_base": tok.n_base,
           "splits_digits": tok.splits_digits}
    if control_of:
        from domtok.tokens.control import build_control_set, save_control_set, saved_record

        # the sample's source and size, the set copied and the injection it is matched to
        corpus = config_hash({k: getattr(prep_cfg, k) for k in ("source", "n_docs", "text_field", "split", "max_docs",
                                                                 "seed", "bpe_sample_docs")})
        want = {"matches": control_of, "corpus": corpus,
                "injection": {"mode": prep_cfg.inject_mode, "word_forms": prep_cfg.word_forms}}
        record = saved_record(path)  # a finished build of the same set is kept (resumed runs, prepare_condition)
        if record is None or any(record.get(k) != v for k, v in want.items()):
            ts, record = build_control_set(tokenizer_sample(prep_cfg), tok, control_of, prep_cfg.inject_mode,
                                           prep_cfg.word_forms)
            record["corpus"] = corpus
            save_control_set(path, ts, record)
        out["control_set"] = record
    return out


def prepare_node_config(cfg: dict, tokenizer: str, where: str) -> PrepareConfig:
    """The PrepareConfig of a spec's prepare node (`domtok.rundir.build_nodes`), given the shared tokenizer."""
    from domtok.config import from_dict

    cfg = {k: v for k, v in cfg.items() if k != "use_domain_tokens"}  # the DAG's key, not a prepare knob
    return from_dict(PrepareConfig, {**cfg, "tokenizer": tokenizer}, where=where)


def prepare_condition(spec_path: str, condition: str, root: Path) -> Path:
    """The shards of one condition of a spec, made as `domtok run` makes them, under `root`.

    For running a single stage by hand (`domtok pretrain configs/tiny.yaml`): the spec's
    tokenizer and prepare nodes are built with the same configs as in a run directory, into
    the same layout under `root`; finished work is reused (a trained BPE tokenizer, complete
    shards) and the shard directory is returned.
    """
    from domtok.rundir import build_nodes, load_spec

    spec = load_spec(spec_path)
    if condition not in spec.conditions:
        raise DomtokError(f"{spec_path}: no condition {condition!r}; conditions: {list(spec.conditions)}")
    nodes = build_nodes(spec, root)
    tok = next(n for n in nodes if n.kind == "tokenizer")
    prep = next(n for n in nodes if n.kind == "prepare" and n.condition == condition)
    tokenizer = build_shared_tokenizer(tok.config, tok.out_dir)["tokenizer"]
    run(prepare_node_config(prep.config, tokenizer, where=f"{spec_path}: prepare"), prep.out_dir)
    return prep.out_dir


# ---------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None,
                        help="YAML file or preset name (its `prepare:` section is used if present)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. condition=mul_tokens workers=4")
    parser.add_argument("--out", required=True, help="output directory for the shards")


def main(args: argparse.Namespace) -> int:
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # no config file, only overrides
        overrides.insert(0, config)
        config = None
    cfg = load_config(PrepareConfig, config, overrides, section="prepare")
    from domtok.outdir import claim_out_dir

    claim_out_dir(args.out, what="--out directory")
    meta = run(cfg, args.out)
    tr, va = meta["splits"]["train"], meta["splits"]["val"]
    print(f"prepared {args.out}: train {tr['documents']} docs / {tr['tokens']} tokens in {len(tr['shards'])} shards, "
          f"val {va['documents']} docs / {va['tokens']} tokens; domain tokens {tr['domain_tokens'] + va['domain_tokens']}")
    return 0
