"""`domtok run SPEC --smoke`: every node of a spec at toy scale, in minutes, before a paid run.

The smoke run is the real run with the volume turned down. It builds the same DAG from the
same spec (same stage code, model architecture, tokenizer and stage configs) and changes
only sizes: steps, items, lengths, batch sizes, documents. Every change is listed in the
output ("pretrain.max_steps: 19073 -> 2"). It runs in its own run dir, `<runs>/<name>-smoke`,
on CPU unless `--device` says otherwise, and always from scratch (a smoke result must come
from the code as it is now).

A hub source is read for a few records when the hub is reachable; when it is not, it is
replaced by a small local fixture that this module writes in that source's exact schema
(FineWeb-Edu `text`, Tulu-3 `messages`, GSM8K `question`/`answer`, HellaSwag, TinyGSM
`question`/`code`), so the loaders, checks and renderers see what the real run will see.

After the nodes, it prints for the REAL (unshrunk) config what would hurt later: parameters,
tokens, FLOPs, the memory each GPU needs, wall time projected from FLOPs at a stated MFU on a
named GPU, and checks (divisibility of the global batch, enough data or how many epochs,
evaluation sets present, disk for checkpoints), plus the measured prepare throughput per
worker with the projected time for the real corpus (those are `domtok.preflight`'s). Everything
is also written to `smoke.json` and `smoke.md` in the smoke run dir.
"""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from domtok.data import sources
from domtok.errors import DomtokError
from domtok.gpus import GPUS
from domtok.outdir import claim_out_dir, remove_tree
from domtok.preflight import DEFAULT_GPU, DEFAULT_MFU, checks, is_hub, prepare_throughput
from domtok.rundir import foreign_entries, pid_alive

# How far the smoke turns things down. Two optimizer steps per training stage, each with two
# micro-batches, so gradient accumulation, the LR schedule, checkpoints and the final model
# dir all run; a handful of items per evaluation.
STEPS = 2
PRETRAIN_SEQ_LEN = 64
MICRO_BATCH = 2
GRAD_ACCUM = 2
DOCS = 400            # documents for prepare and for a trained BPE
RECORDS = 24          # records per fixture / per read hub source
SFT_ITEMS = 16
MAX_LENGTH = 128      # SFT sequence length
NEW_TOKENS = 16       # generation length in GRPO, RFT and the evaluations
EVAL_ITEMS = 4

# --------------------------------------------------------------------------- hub or fixture

def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether huggingface.co answers here (and the user did not ask for offline mode)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def fixture_records(kind: str, n: int, seed: int = 0, split: str = "train") -> list[dict]:
    """`n` records in the exact schema of a hub source, made from domtok's synthetic data."""
    import random

    from domtok.data.corpus import math_web_corpus
    from domtok.data.word_problems import ITEMS, NAMES, word_problems

    rng = random.Random(f"fixture/{kind}/{split}/{seed}")
    if kind == "fineweb":  # HuggingFaceFW/fineweb-edu columns
        docs = math_web_corpus(n, seed)
        return [{"text": t, "id": f"<urn:uuid:smoke-{i:06d}>", "dump": "CC-MAIN-2024-10",
                 "url": f"https://example.org/smoke/{i}", "file_path": "smoke", "language": "en",
                 "language_score": 0.95, "token_count": len(t.split()), "score": 3.0 + rng.random(),
                 "int_score": 3} for i, t in enumerate(docs)]
    if kind == "gsm8k":  # openai/gsm8k main: question, answer (<<expr=result>>, #### N)
        recs = [{"question": r["question"], "answer": r["answer"]}
                for r in word_problems(n, seed, "test" if split == "test" else "train")]
        if split != "test":  # two train records in three multiply as GSM8K writes it, so that
            for i in range(0, n, 3):  # the GSM-SBS rewrite (sft-gsm_sbs) finds products to work out
                for j in (i, i + 1)[:max(0, n - i)]:
                    a, b = rng.randint(11, 39), rng.randint(3, 9)
                    name, item = rng.choice(NAMES), rng.choice(ITEMS)
                    recs[j] = {"question": f"{name} packs {a} boxes with {b} {item} in each. How many {item} "
                                           f"does {name} pack?",
                               "answer": f"{name} packs {a} * {b} = <<{a}*{b}={a * b}>>{a * b} {item}.\n#### {a * b}"}
        return recs
    if kind == "tulu":  # allenai/tulu-3-sft-mixture: id, messages, source
        out = []
        for i, r in enumerate(word_problems(n, seed + 1, "train")):
            msgs = [{"role": "user", "content": r["question"]},
                    {"role": "assistant", "content": r["answer"].replace("####", "The answer is")}]
            if i % 3 == 0:
                msgs.insert(0, {"role": "system", "content": "You are a helpful assistant."})
            out.append({"id": f"smoke_{i}", "messages": msgs, "source": "smoke"})
        return out
    if kind == "tinygsm":  # TinyGSM/TinyGSM: question, code
        out = []
        for r in word_problems(n, seed + 2, "train"):
            final = r["answer"].rsplit("####", 1)[1].strip()
            out.append({"question": r["question"],
                        "code": f'def simple_math_problem() -> int:\n    """{r["question"]}"""\n'
                                f"    result = {final}\n    return result\n"})
        return out
    if kind == "hellaswag":  # Rowan/hellaswag: label is a string
        # about a quarter of the corpus's documents (articles, word problems) hold a sentence break
        docs = [d for d in math_web_corpus(20 * n + 20, seed + 3) if ". " in d]
        out = []
        for i in range(n):
            ctx, true_end = docs[i].split(". ", 1)
            others = [docs[(i + k) % len(docs)].split(". ", 1)[1][:80] for k in (n, 2 * n, 3 * n)]
            label = rng.randrange(4)
            endings = others[:label] + [true_end[:80]] + others[label:]
            out.append({"ind": i, "activity_label": "Math", "ctx_a": ctx + ".", "ctx_b": "",
                        "ctx": ctx + ".", "endings": endings, "source_id": f"smoke~{i}",
                        "split": split, "split_type": "indomain", "label": str(label)})
        return out
    raise DomtokError(f"smoke: no fixture for source kind {kind!r}")


def head_records(source: str, split: str | None, n: int) -> list[dict]:
    """The first `n` records of a source (local file or hub, streamed), in its own schema."""
    import itertools

    spec = sources.parse_source(source, split)
    recs = sources.load_records(source, lambda r: r if isinstance(r, dict) else "not an object", split,
                                streaming=spec.kind == "hub")
    return [dict(r) for r in itertools.islice(iter(recs), n)]


@dataclass
class Sources:
    """Where the smoke reads each source from; notes say what was replaced by what."""

    root: Path
    online: bool
    notes: list[str] = field(default_factory=list)
    _made: dict = field(default_factory=dict)
    fixtures: set = field(default_factory=set)  # sources the smoke replaced by a fixture (not their real text)

    def get(self, kind: str, source: str | None, split: str, n: int = RECORDS) -> str:
        """A local jsonl path holding `n` records of `source` (None = the loader's hub default)."""
        source = source or {"fineweb": sources.FINEWEB, "tulu": sources.TULU, "gsm8k": sources.GSM8K,
                            "hellaswag": sources.HELLASWAG, "tinygsm": sources.TINYGSM}[kind]
        key = (kind, source, split)
        if key in self._made:
            return self._made[key]
        spec = sources.parse_source(source, split)
        path = self.root / f"{kind}-{len(self._made)}" / f"{spec.split or split}.jsonl"
        how = None
        if spec.kind == "local" or self.online:
            try:
                recs = head_records(source, split, n)
                how = f"the first {len(recs)} records of {source}"
            except DomtokError as e:
                if spec.kind == "local":
                    raise
                self.notes.append(f"{source}: could not be read ({e}); using a fixture")
        if how is None:
            recs = fixture_records(kind, n, split=spec.split or split)
            self.fixtures.add(source)
            how = f"a {len(recs)}-record fixture in its schema (hub not reachable)"
        from domtok.utils import write_jsonl

        write_jsonl(path, recs)
        self.notes.append(f"{source} [{spec.split or split}] -> {path}: {how}")
        self._made[key] = str(path)
        return str(path)


# --------------------------------------------------------------------------- shrinking

class Shrinker:
    """Turns a spec's configs down; every change is recorded as `where.key: old -> new`."""

    def __init__(self, srcs: Sources, device: str):
        self.srcs = srcs
        self.device = device
        self.changes: list[str] = []

    def set(self, cfg: dict, key: str, value, where: str) -> None:
        old = cfg.get(key, "<default>")
        if old != value:
            cfg[key] = value
            self.changes.append(f"{where}.{key}: {_short(old)} -> {_short(value)}")

    def cap(self, cfg: dict, key: str, limit, where: str, default=None) -> None:
        cur = cfg.get(key, default)
        if cur is None or cur == 0 or cur > limit:
            self.set(cfg, key, limit, where)

    def run_settings(self, cfg: dict, where: str) -> None:
        self.set(cfg, "device", self.device, where)
        if cfg.get("compile") and not self.device.startswith("cuda"):
            # compiling the 124M model on CPU takes minutes per node; tests/test_compile.py
            # runs compile on CPU for a small model instead
            self.set(cfg, "compile", False, where)

    # -- data sources -------------------------------------------------------------------
    def data_source(self, src: dict, where: str, n: int) -> None:
        kind = src.get("kind", "gsm8k")
        fixture_kind = {"instruct": "tulu", "gsm8k": "gsm8k", "tinygsm": "tinygsm", "gsm_sbs": "gsm8k"}.get(kind)
        path = src.get("path")
        if fixture_kind and is_hub(path) and not (kind == "gsm_sbs" and path is None):
            self.set(src, "path", self.srcs.get(fixture_kind, path, "train"), where)
        if kind == "drills":
            self.cap(src, "n", max(2, n // max(1, len(src.get("drill_kinds") or [1] * 5))), where)
        elif kind != "jsonl":
            self.cap(src, "n", n, where)
        if src.get("repeat", 1) > 1:
            self.set(src, "repeat", 1, where)

    # -- per stage kind -----------------------------------------------------------------
    def tokenizer(self, cfg: dict) -> None:
        if str(cfg.get("base", "gpt2")).startswith("bpe-"):
            self.cap(cfg, "sample_docs", DOCS, "tokenizer", default=20000)

    def prepare(self, cfg: dict, w: str = "prepare") -> None:
        source = str(cfg.get("source", "synthetic:math-web"))
        if source.startswith("synthetic:"):
            self.cap(cfg, "n_docs", DOCS, w, default=2000)
        else:
            fields = [f.strip() for f in str(cfg.get("text_field", "text")).split(",")]
            if is_hub(source) and fields != ["text"]:
                raise DomtokError(f"prepare: no fixture for a hub source with text_field {cfg['text_field']!r}; "
                                  "give a local copy as prepare.source")
            self.set(cfg, "source", self.srcs.get("fineweb", source, cfg.get("split", "train"), DOCS), w)
        if cfg.get("max_docs"):
            self.cap(cfg, "max_docs", DOCS, w)
        self.cap(cfg, "bpe_sample_docs", DOCS, w, default=20000)
        self.cap(cfg, "shard_tokens", 20000, w, default=10_000_000)
        if cfg.get("val_docs"):
            self.cap(cfg, "val_docs", 40, w)
        elif cfg.get("val_fraction", 0.02) < 0.1:
            self.set(cfg, "val_fraction", 0.1, w)  # enough validation windows from a few hundred docs
        self.cap(cfg, "workers", 2, w, default=1)
        self.cap(cfg, "chunk_docs", 64, w, default=512)

    def pretrain(self, cfg: dict, w: str) -> None:
        self.cap(cfg, "seq_len", PRETRAIN_SEQ_LEN, w, default=256)
        self.cap(cfg, "micro_batch_size", MICRO_BATCH, w, default=16)
        self.set(cfg, "tokens_per_step", cfg["seq_len"] * cfg["micro_batch_size"] * GRAD_ACCUM, w)
        self.set(cfg, "max_steps", STEPS, w)
        self.cap(cfg, "warmup_steps", 1, w, default=20)
        self.set(cfg, "eval_every", 0, w)
        self.cap(cfg, "eval_batches", 2, w, default=8)
        self.set(cfg, "ckpt_every", 0, w)
        self.set(cfg, "keep_last", 1, w)
        if cfg.get("hellaswag_every"):
            self.set(cfg, "hellaswag_every", STEPS, w)
            self.cap(cfg, "hellaswag_items", EVAL_ITEMS, w)
            if is_hub(cfg.get("hellaswag_data")):
                self.set(cfg, "hellaswag_data", self.srcs.get("hellaswag", cfg.get("hellaswag_data"), "validation"), w)
        self.set(cfg, "progress", False, w)
        self.run_settings(cfg, w)

    def sft_stage(self, st: dict, w: str) -> None:
        for i, src in enumerate(st.get("data") or [{}]):
            st.setdefault("data", [src])
            self.data_source(src, f"{w}.data.{i}", SFT_ITEMS)
        for i, src in enumerate(st.get("val_data") or []):
            self.data_source(src, f"{w}.val_data.{i}", EVAL_ITEMS)
        if st.get("val_size", 0.05) >= 1:
            self.cap(st, "val_size", EVAL_ITEMS, w)
        self.cap(st, "epochs", 1, w, default=1.0)
        self.cap(st, "max_length", MAX_LENGTH, w, default=512)
        self.cap(st, "batch_size", MICRO_BATCH, w, default=8)
        self.cap(st, "grad_accum", GRAD_ACCUM, w, default=4)

    def sft(self, cfg: dict, w: str) -> None:
        cfg.setdefault("stages", [{}])
        for i, st in enumerate(cfg["stages"]):
            self.sft_stage(st, f"{w}.stages.{i}")
        self.set(cfg, "max_steps", STEPS, w)
        self.cap(cfg, "eval_every", 1, w, default=0)
        self.set(cfg, "checkpoint_every", 0, w)
        self.set(cfg, "keep_checkpoints", 1, w)
        self.run_settings(cfg, w)

    def grpo(self, cfg: dict, w: str) -> None:
        cfg.setdefault("prompts", {"kind": "gsm8k"})
        self.data_source(cfg["prompts"], f"{w}.prompts", SFT_ITEMS)
        g = int(cfg.get("num_generations", 8))
        self.cap(cfg, "num_prompts", 8, w, default=1000)
        self.set(cfg, "per_device_train_batch_size", g, w)
        self.cap(cfg, "gradient_accumulation_steps", GRAD_ACCUM, w, default=1)
        self.set(cfg, "max_steps", STEPS, w)
        self.cap(cfg, "max_completion_length", NEW_TOKENS, w, default=256)
        self.cap(cfg, "decode_batch_size", 8, w, default=32)
        if cfg.get("save_steps"):
            self.set(cfg, "save_steps", 0, w)
        if cfg.get("log_completions"):  # one sample of rollouts in the smoke too
            self.cap(cfg, "logging_steps", STEPS, w, default=10)
        self.run_settings(cfg, w)

    def rft(self, cfg: dict, w: str) -> None:
        cfg.setdefault("questions", {"kind": "gsm8k"})
        self.data_source(cfg["questions"], f"{w}.questions", SFT_ITEMS)
        self.cap(cfg, "num_questions", 8, w, default=0)
        self.set(cfg, "rounds", 1, w)
        self.cap(cfg, "num_samples", 2, w, default=4)
        self.cap(cfg, "max_new_tokens", NEW_TOKENS, w, default=256)
        self.cap(cfg, "decode_batch_size", 8, w, default=32)
        cfg.setdefault("sft", {})
        self.sft_stage(cfg["sft"], f"{w}.sft")
        self.run_settings(cfg, w)

    def benchmark(self, kind: str, cfg: dict, w: str) -> None:
        if kind in ("gsm8k", "hellaswag") and is_hub(cfg.get("data")):
            split = cfg.get("split", "test" if kind == "gsm8k" else "validation")
            self.set(cfg, "data", self.srcs.get(kind, cfg.get("data"), split), w)
        if kind == "probes":
            self.cap(cfg, "n_per_category", 2, w, default=100)
            self.cap(cfg, "max_items", 2 * EVAL_ITEMS, w, default=0)
        else:
            self.cap(cfg, "n", EVAL_ITEMS, w, default=0)
        if kind in ("gsm8k", "probes"):
            self.cap(cfg, "max_new_tokens", NEW_TOKENS, w, default=256)
        self.cap(cfg, "batch_size", EVAL_ITEMS, w, default=32)
        self.set(cfg, "device", self.device, w)


def smoke_spec(spec, srcs: Sources, device: str):
    """A copy of `spec` at toy scale, named `<name>-smoke`, and the list of changes."""
    s = copy.deepcopy(spec)
    sh = Shrinker(srcs, device)
    s.name = f"{spec.name}-smoke"
    sh.tokenizer(s.tokenizer)
    sh.prepare(s.prepare)
    for st in s.stages:
        getattr(sh, st.kind)(st.config, st.name)
    for rung in s.ladder:  # a ladder runs each rung's own stage configs (its shape, its steps): shrink those
        for st in s.stages:
            getattr(sh, st.kind)(rung.stage_configs[st.name], f"ladder.{rung.name}.{st.name}")
        if rung.prepare_config == spec.prepare:  # shared corpus: stays shared
            rung.prepare_config = s.prepare
        else:
            sh.prepare(rung.prepare_config, f"ladder.{rung.name}.prepare")
        first = next(st.name for st in s.stages if st.kind == "pretrain")
        rung.steps = rung.stage_configs[first]["max_steps"]
        rung.budget = rung.steps * rung.stage_configs[first]["tokens_per_step"]
    for bname, b in s.benchmarks.items():
        sh.benchmark(b["kind"], b["config"], f"evals.{bname}")
    s.raw = dict(_spec_data(s, spec), name=s.name)  # the shrunk spec, renamed (smoke.json names the real one)
    return s, sh.changes


def _spec_data(s, spec) -> dict:
    """The shrunk spec as spec data (the smoke run dir's spec.yaml) that `load_spec` turns back
    into the same nodes, so `domtok status` and `report` on the smoke dir see them finished."""
    data = copy.deepcopy(spec.raw)
    data.update(tokenizer=s.tokenizer, prepare=s.prepare, seeds=s.seeds,
                # a stage preset's own `seed` is the node's seed in the run (a spec may not set one)
                stages=[{"name": st.name, "kind": st.kind, "config": {k: v for k, v in st.config.items() if k != "seed"},
                         "after": st.after} for st in s.stages],
                evals={"after": s.evals_after,
                       "benchmarks": {b: {"kind": v["kind"], **v["config"]} for b, v in s.benchmarks.items()}})
    if s.ladder:  # each rung: its shrunk stage configs in full, and its budget in tokens (= the shrunk steps)
        data["ladder"] = [{"name": r.name, **r.shape(), "tokens": r.budget, "set": r.stage_configs,
                           "prepare": {} if r.prepare_config == s.prepare else r.prepare_config} for r in s.ladder]
    return data


def gib(b: float) -> str:
    return f"{b / 2**30:.1f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def _dur(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def _short(v) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- running

def add_arguments(p) -> None:
    """The options of `domtok run --smoke` (the pipeline adds them to `domtok run`)."""
    p.add_argument("--smoke", action="store_true",
                   help="run every node at toy scale in <runs>/<name>-smoke (from scratch; CPU unless --device), "
                        "then print the real config's parameters, tokens, FLOPs, memory, projected time and checks")
    p.add_argument("--device", default="cpu", help="with --smoke: the device every stage runs on (default cpu)")
    p.add_argument("--gpu", default=DEFAULT_GPU, choices=sorted(GPUS),
                   help=f"with --smoke: the GPU the projection assumes (default {DEFAULT_GPU})")
    p.add_argument("--mfu", type=float, default=DEFAULT_MFU,
                   help=f"with --smoke: the model FLOPs utilisation the projection assumes (default {DEFAULT_MFU})")


def run_smoke(spec, opts, run_experiment, device: str = "cpu", gpu: str = DEFAULT_GPU, mfu: float = DEFAULT_MFU) -> int:
    """Run every node of `spec` shrunk, then print the table, the real-config projection and checks."""
    from domtok.rundir import build_nodes, node_state

    if gpu not in GPUS:
        raise DomtokError(f"--gpu {gpu!r}: unknown; one of {sorted(GPUS)}")
    from domtok.config import check_value

    check_value("mfu", mfu, "--mfu")
    from domtok.utils import pick_device

    device = pick_device(device)  # the one place a device name is checked
    run_root = Path(spec.runs_dir)
    smoke_dir = run_root / f"{spec.name}-smoke"
    for running in smoke_dir.rglob("running.json") if smoke_dir.exists() else []:
        try:
            if not pid_alive(int(json.loads(running.read_text())["pid"])):
                continue  # a dead run's leftover
        except (OSError, KeyError, ValueError, TypeError):
            continue
        raise DomtokError(f"{running}: another smoke run is working in {smoke_dir}; wait for it to finish")
    # Like every verb: a folder that is not domtok's is refused, a second writer is refused,
    # and only what a smoke run writes is removed (a smoke result must come from the code as
    # it is now); the user's own files there are named, not deleted.
    claim_out_dir(smoke_dir, what="smoke directory")
    foreign = foreign_entries(smoke_dir, spec.conditions)
    if foreign:
        raise DomtokError(f"{smoke_dir}: holds {', '.join(foreign[:4])}{' ...' if len(foreign) > 4 else ''}, "
                          "which a smoke run does not write; a smoke run starts from an empty folder: move "
                          "those elsewhere")
    if smoke_dir.exists():
        remove_tree(smoke_dir)
    online = hub_reachable()
    srcs = Sources(smoke_dir / "fixtures", online)
    smoke, changes = smoke_spec(spec, srcs, device)
    world = opts.nproc * getattr(opts, "nnodes", 1)
    t0 = time.time()
    smoke_opts = copy.copy(opts)
    smoke_opts.force = True
    rc = run_experiment(smoke, smoke_opts)
    wall = time.time() - t0

    rows = []
    for node in build_nodes(smoke, smoke_dir):
        state = node_state(node)
        secs = 0.0
        if state == "done":
            secs = json.loads(node.manifest_path.read_text()).get("wall_time_s", 0.0)
        elif (node.out_dir / "failed.json").exists():
            secs = None
        rows.append({"node": node.id, "result": "passed" if state == "done" else "failed",
                     "log": None if state == "done" else str(node.out_dir / "log.txt"), "seconds": secs})
    plans, check_lines = checks(spec, smoke, run_root, world, online, gpu, mfu, fixtures=srcs.fixtures)
    thr = prepare_throughput(smoke, spec, online)
    failed = [r for r in rows if r["result"] != "passed"]
    result = {"spec": spec.name, "smoke_dir": str(smoke_dir), "device": device, "wall_s": wall, "nodes": rows,
              "shrunk": changes, "sources": srcs.notes, "plans": plans, "checks": check_lines,
              "prepare_throughput": thr, "passed": not failed and rc == 0
              and not any(c.startswith("FAIL") for c in check_lines)}
    text = render(result)
    print(text, flush=True)
    from domtok.config import atomic_write_json, atomic_write_text

    atomic_write_json(smoke_dir / "smoke.json", result)
    atomic_write_text(smoke_dir / "smoke.md", text + "\n")
    return 0 if result["passed"] else 1


def render(r: dict) -> str:
    """The smoke report as text (also smoke.md)."""
    n_ok = sum(x["result"] == "passed" for x in r["nodes"])
    out = [f"## smoke run of {r['spec']}: {n_ok}/{len(r['nodes'])} nodes passed in {r['wall_s']:.0f}s "
           f"on {r['device']} ({r['smoke_dir']})", "", "| node | result | seconds |", "|---|---|---:|"]
    for x in r["nodes"]:
        res = "passed" if x["result"] == "passed" else f"FAILED ({x['log']})"
        secs = "" if x["seconds"] is None else f"{x['seconds']:.1f}"
        out.append(f"| {x['node']} | {res} | {secs} |")
    out += ["", "### shrunk for the smoke (the real config is unchanged)"] + [f"- {c}" for c in r["shrunk"]]
    out += ["", "### data sources"] + [f"- {s}" for s in r["sources"] or ["(all generated by domtok)"]]
    out += ["", "### the real config"]
    for p in r["plans"]:
        m = p["memory_per_gpu"]
        out += [f"- {p['stage']}: {p['params']:,} parameters; {p['tokens']:,} tokens "
                f"({p['max_steps']:,} steps x {p['tokens_per_step']:,}); {p['flops']:.3e} FLOPs "
                f"({p['flops_per_token']:.3e}/token)",
                f"- {p['stage']}: memory per GPU {gib(p['memory_per_gpu_total'])} = weights {gib(m['weights'])} (fp32) + "
                f"grads {gib(m['grads'])} + AdamW state {gib(m['adamw'])} + activations {gib(m['activations'])} "
                f"(micro-batch {p['micro_batch']} x {p['seq_len']} tokens, {p['dtype']}); a {p['gpu']} has "
                f"{p['gpu_memory_gb']} GB",
                f"- {p['stage']}: projected wall time {_dur(p['wall_s'])} on {p['world_size']} x {p['gpu']} "
                f"at {p['mfu']:.0%} MFU ({GPUS[p['gpu']][0] / 1e12:.0f} TFLOP/s bf16 peak each)"]
    t = r["prepare_throughput"]
    if t:
        line = (f"- prepare [{t['condition']}]: {t['worker_tokens_per_s']:,.0f} tokens/s "
                f"({t['worker_bytes_per_s'] / 1e6:.2f} MB/s) per worker, reader {t['reader_bytes_per_s'] / 1e6:.1f} MB/s "
                f"(measured on the smoke's text)")
        if t.get("projected_s") is not None:
            line += (f"; the real corpus (~{t['corpus_tokens']:.3g} tokens) with {t['workers']} worker(s): "
                     f"{_dur(t['projected_s'])}, limited by the {t['limit']} (read {_dur(t['read_s'])}, "
                     f"tokenize {_dur(t['tokenize_s'])}); {t['reader_note']}")
        out.append(line)
    out += ["", "### checks of the real config"] + [f"- {c}" for c in r["checks"]]
    out += ["", "smoke: PASSED" if r["passed"] else "smoke: FAILED"]
    return "\n".join(out)
