"""`domtok run`: an experiment spec becomes a DAG of stage nodes, run in order, resumably.

A spec (YAML, see configs/tiny.yaml) names the conditions, the seeds, one tokenizer and one
prepare section shared by all conditions, an ordered list of training stages (each after
the previous one) and the evaluations to run after chosen stages. Every (stage, condition,
seed) is a node with its inputs, its output directory and a config hash that also covers
its inputs' hashes, so changing a stage re-runs it and everything downstream, nothing else.

Run directory layout (everything `domtok status`, `report` and `hub` read):

    runs/<name>/spec.yaml                     the resolved spec
    runs/<name>/tokenizer/                    one base tokenizer for every condition
    runs/<name>/<condition>/prepare/          token shards of that condition
    runs/<name>/<condition>/seed<k>/<stage>/  a training stage (model/, metrics.jsonl, ...)
    runs/<name>/<condition>/seed<k>/<stage>/eval/<benchmark>/   items.jsonl, summary.json

Each node directory holds `node.json` (hash, written when the node starts), `log.txt`, and
`manifest.json`, written last and atomically when the node has finished: a directory
without a manifest is incomplete and is resumed (training stages continue from their last
checkpoint) or redone. A failed node writes `failed.json` with its log path; nodes that do
not depend on it still run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from domtok.config import (ConfigError, apply_overrides, atomic_write_json, atomic_write_text, config_hash,
                           load_yaml, resolve_config_path, stage_section)
from domtok.errors import DomtokError

TRAINING_KINDS = ("pretrain", "sft", "grpo", "rft")
EVAL_KINDS = ("gsm8k", "hellaswag", "probes")
# Stages that continue from a partial directory of the same config (checkpoints; prepare skips
# finished shards). Any other interrupted node starts again from an empty directory.
RESUMABLE = ("prepare", "pretrain", "sft", "grpo")


# --------------------------------------------------------------------------- the spec

@dataclass
class StageSpec:
    name: str
    kind: str
    config: dict = field(default_factory=dict)
    after: str | None = None  # the stage whose model this one starts from


@dataclass
class Spec:
    name: str
    conditions: dict[str, dict]
    seeds: list[int]
    tokenizer: dict
    prepare: dict
    stages: list[StageSpec]
    evals_after: list[str]
    benchmarks: dict[str, dict]
    runs_dir: str = "runs"
    token_set: str = "mul"
    confounds: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)
    path: str = ""  # the spec file it was read from (for messages)

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"no stage named {name!r}; stages: {[s.name for s in self.stages]}")


# The keys a spec may hold at each level; anything else is a typo, reported before a node runs.
SPEC_KEYS = ("name", "runs_dir", "seeds", "token_set", "conditions", "tokenizer", "prepare", "stages", "evals",
             "confounds")
STAGE_KEYS = ("name", "kind", "config", "set", "after")
TOKENIZER_KEYS = ("base", "sample_docs")
EVALS_KEYS = ("after", "benchmarks")


def _unknown(where: str, what: str, data: dict, valid) -> None:
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: {what}: unknown key(s) {unknown}; valid keys: {sorted(valid)}")


def _name_list(where: str, key: str, value, kind=str, allow_empty=False) -> list:
    """A YAML list of `kind` items (seeds, evals.after, confounds), checked with a message."""
    ok = isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
    if not ok:
        example = "[0,1,2]" if kind is int else "[pretrain,sft]"
        raise ConfigError(f"{where}: `{key}` must be a list of {kind.__name__}s, got {value!r}; "
                          f"write it as {key}={example}")
    if not value and not allow_empty:
        raise ConfigError(f"{where}: `{key}` is an empty list, so nothing would run; give at least one")
    return value


def load_spec(path_or_preset: str | None, overrides: list[str] | None = None, seeds: int | None = None) -> Spec:
    """Read and validate an experiment spec; `seeds=N` replaces the seed list by 0..N-1.

    Validated whole, before anything runs: unknown keys at every level, types, empty lists.
    (The stage configs are checked against their dataclasses by `check_stage_configs`.)"""
    path = resolve_config_path(path_or_preset or "tiny")
    data = apply_overrides(load_yaml(path), overrides)
    where = str(path)

    def need(key, kind):
        if key not in data or not isinstance(data[key], kind):
            raise ConfigError(f"{where}: spec needs `{key}` ({kind.__name__})")
        return data[key]

    _unknown(where, "spec", data, SPEC_KEYS)
    conditions = need("conditions", dict)
    if not conditions:
        raise ConfigError(f"{where}: `conditions` is empty; name at least one (baseline: {{token_set: null}})")
    for cname, c in conditions.items():
        c = c or {}
        if not isinstance(c, dict):
            raise ConfigError(f"{where}: condition {cname!r} must be a mapping such as {{token_set: mul}}, got {c!r}")
        conditions[cname] = c
        unknown = set(c) - {"token_set", "inject_user"}
        if unknown:
            raise ConfigError(f"{where}: condition {cname!r}: unknown keys {sorted(unknown)}; "
                              "a condition may set token_set and inject_user")
        # Every condition shares one id layout (the baseline reserves the same ids), so a domain
        # condition can only use the spec's token set.
        if c.get("token_set") not in (None, data.get("token_set", "mul")):
            raise ConfigError(f"{where}: condition {cname!r} uses token_set {c['token_set']!r} but the spec's "
                              f"token_set (the shared id layout) is {data.get('token_set', 'mul')!r}; set them equal")
    tokenizer = data.get("tokenizer") or {"base": "gpt2"}
    if not isinstance(tokenizer, dict):
        raise ConfigError(f"{where}: `tokenizer` must be a mapping such as {{base: bpe-1024}}, got {tokenizer!r}")
    _unknown(where, "tokenizer", tokenizer, TOKENIZER_KEYS)
    stages = []
    names = set()
    stage_list = need("stages", list)
    if not stage_list:
        raise ConfigError(f"{where}: `stages` is an empty list, so nothing would be trained; give at least one")
    for i, s in enumerate(stage_list):
        if not isinstance(s, dict) or "name" not in s or "kind" not in s:
            raise ConfigError(f"{where}: stages[{i}] needs `name` and `kind`")
        _unknown(where, f"stages[{i}] ({s['name']})", s, STAGE_KEYS)
        if s["kind"] not in TRAINING_KINDS:
            raise ConfigError(f"{where}: stages[{i}] kind {s['kind']!r}; kinds: {list(TRAINING_KINDS)}")
        after = s.get("after", stages[-1].name if stages else None)
        if s["kind"] != "pretrain" and after is None:
            raise ConfigError(f"{where}: stage {s['name']!r} needs a stage before it (`after:`)")
        if after is not None and after not in names:
            raise ConfigError(f"{where}: stage {s['name']!r} comes after unknown stage {after!r}")
        if s["name"] in names or s["name"] in ("prepare", "tokenizer"):
            raise ConfigError(f"{where}: stage name {s['name']!r} is used twice or reserved")
        if not isinstance(s.get("set") or {}, dict):
            raise ConfigError(f"{where}: stages[{i}] ({s['name']}): `set` must be a mapping of keys to values")
        names.add(s["name"])
        stages.append(StageSpec(name=s["name"], kind=s["kind"], config=stage_section(s, where), after=after))
    evals = data.get("evals") or {}
    if not isinstance(evals, dict):
        raise ConfigError(f"{where}: `evals` must be a mapping with `after` and `benchmarks`, got {evals!r}")
    _unknown(where, "evals", evals, EVALS_KEYS)
    benchmarks = {}
    if not isinstance(evals.get("benchmarks") or {}, dict):
        raise ConfigError(f"{where}: `evals.benchmarks` must be a mapping of names to benchmark configs")
    for bname, b in (evals.get("benchmarks") or {}).items():
        if not isinstance(b or {}, dict):
            raise ConfigError(f"{where}: benchmark {bname!r} must be a mapping (kind: ..., n: ...), got {b!r}")
        b = dict(b or {})
        kind = b.pop("kind", bname)
        if kind not in EVAL_KINDS:
            raise ConfigError(f"{where}: benchmark {bname!r} kind {kind!r}; kinds: {list(EVAL_KINDS)}")
        if b.pop("enabled", True):
            benchmarks[bname] = {"kind": kind, "config": b}
    evals_after = _name_list(where, "evals.after", list(evals.get("after") or []), allow_empty=True)
    for a in evals_after:
        if a not in names:
            raise ConfigError(f"{where}: evals.after names unknown stage {a!r}")
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds {seeds}: give the number of seeds to run, at least 1")
        seed_list = list(range(seeds))
    else:
        seed_list = _name_list(where, "seeds", data.get("seeds", [0]), kind=int)
        if len(set(seed_list)) != len(seed_list) or min(seed_list) < 0:
            raise ConfigError(f"{where}: `seeds` {seed_list} must be distinct non-negative integers")
    confounds = _name_list(where, "confounds", list(data.get("confounds") or []), allow_empty=True)
    for key in ("name", "runs_dir", "token_set"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{where}: `{key}` must be a string, got {data[key]!r}")
    return Spec(name=str(data.get("name", path.stem)), conditions=conditions, seeds=seed_list,
                tokenizer=tokenizer, prepare=need("prepare", dict),
                stages=stages, evals_after=evals_after, benchmarks=benchmarks,
                runs_dir=str(data.get("runs_dir", "runs")), token_set=str(data.get("token_set", "mul")),
                confounds=confounds, raw=data, path=where)


def check_stage_configs(spec: Spec, where: str = "spec") -> None:
    """Build every node's config object as `stage_call` will, before the first node runs: a typo
    such as `stages.0.config.lrr=1` is an error now, not in a node's log after earlier stages ran."""
    from domtok.config import from_dict
    from domtok.data.prepare import PrepareConfig

    prep = {k: v for k, v in spec.prepare.items()}
    try:
        from_dict(PrepareConfig, {**prep, "tokenizer": "gpt2"}, where="prepare")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    base = str(spec.tokenizer.get("base", "gpt2"))
    if base != "gpt2" and not (base.startswith("bpe-") and base[4:].isdigit() and int(base[4:]) >= 256):
        raise ConfigError(f"{where}: tokenizer.base {base!r}: use gpt2 or bpe-N (N >= 256, e.g. bpe-1024)")
    for node in build_nodes(spec, Path(spec.runs_dir) / spec.name):
        if node.kind in ("tokenizer", "prepare"):
            continue
        try:
            stage_call(node, Path(spec.runs_dir) / spec.name)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None


# --------------------------------------------------------------------------- the DAG

@dataclass
class Node:
    id: str                   # "mul_tokens/seed0/sft/eval/probes"
    kind: str                 # tokenizer | prepare | pretrain | sft | grpo | rft | gsm8k | hellaswag | probes
    stage: str                # the spec's stage name ("tokenizer", "prepare", "pretrain", "sft", ...)
    out_dir: Path
    config: dict              # the stage config with its inputs wired in
    deps: list["Node"]
    condition: str | None = None
    seed: int | None = None
    benchmark: str | None = None
    hash: str = ""

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.json"


def build_nodes(spec: Spec, run_dir: Path) -> list[Node]:
    """All nodes in a valid execution order: stage by stage, both conditions side by side."""
    nodes: list[Node] = []

    def add(node: Node) -> Node:
        payload = {"kind": node.kind, "config": node.config, "deps": [d.hash for d in node.deps],
                   "condition": node.condition, "seed": node.seed}
        node.hash = config_hash(payload)
        nodes.append(node)
        return node

    tok = add(Node("tokenizer", "tokenizer", "tokenizer", run_dir / "tokenizer",
                   {**spec.tokenizer, "prepare": spec.prepare}, []))
    prepared = {}
    for cond, c in spec.conditions.items():
        cfg = {**spec.prepare, "condition": cond, "token_set": spec.token_set,
               "use_domain_tokens": c.get("token_set") is not None}
        prepared[cond] = add(Node(f"{cond}/prepare", "prepare", "prepare", run_dir / cond / "prepare",
                                  cfg, [tok], condition=cond))
    trained: dict[tuple, Node] = {}
    for st in spec.stages:
        for seed in spec.seeds:
            for cond, c in spec.conditions.items():
                base = run_dir / cond / f"seed{seed}"
                deps = [prepared[cond]] if st.after is None else [trained[(st.after, cond, seed)], prepared[cond]]
                cfg = {**st.config, "condition": cond, "seed": seed}
                if c.get("inject_user"):
                    cfg["inject_user"] = True
                node = add(Node(f"{cond}/seed{seed}/{st.name}", st.kind, st.name, base / st.name, cfg, deps,
                                condition=cond, seed=seed))
                trained[(st.name, cond, seed)] = node
                if st.name in spec.evals_after:
                    for bname, b in spec.benchmarks.items():
                        # Evaluations keep their own seed: every training seed is scored on the
                        # same items, so any two nodes can be compared item by item.
                        add(Node(f"{node.id}/eval/{bname}", b["kind"], st.name, node.out_dir / "eval" / bname,
                                 dict(b["config"]), [node], condition=cond, seed=seed, benchmark=bname))
    return nodes


# --------------------------------------------------------------------------- wiring stage configs

def _model_dir(node: Node) -> str:
    return str(node.out_dir / "model")


def stage_call(node: Node, run_dir: Path):
    """(function, config object) that runs `node`: its inputs are wired into the stage config."""
    cfg = dict(node.config)
    if node.kind == "tokenizer":
        return build_shared_tokenizer, cfg
    if node.kind == "prepare":
        from domtok.data.prepare import PrepareConfig, run
        cfg.pop("use_domain_tokens")
        cfg["tokenizer"] = json.loads(node.deps[0].manifest_path.read_text())["summary"]["tokenizer"]
        return run, _build(PrepareConfig, cfg, node)
    if node.kind == "pretrain":
        from domtok.train.pretrain import PretrainConfig, run
        cfg["data_dir"] = str(node.deps[0].out_dir)
        cfg.pop("condition")
        return run, _build(PretrainConfig, cfg, node)
    if node.kind in ("sft", "grpo", "rft"):
        import importlib
        mod = importlib.import_module(f"domtok.train.{node.kind}")
        cls = {"sft": "SFTConfig", "grpo": "GRPOConfig", "rft": "RFTConfig"}[node.kind]
        cfg["model"] = _model_dir(node.deps[0])
        return mod.run, _build(getattr(mod, cls), cfg, node)
    # evaluations
    import importlib
    mod = importlib.import_module(f"domtok.eval.{node.kind}")
    cls = {"gsm8k": "GSM8KEvalConfig", "hellaswag": "HellaSwagEvalConfig", "probes": "ProbesConfig"}[node.kind]
    cfg["model"] = _model_dir(node.deps[0])
    return mod.run, _build(getattr(mod, cls), cfg, node)


def build_shared_tokenizer(cfg: dict, out_dir: Path) -> dict:
    """One base tokenizer for every condition: `gpt2`, or a BPE trained on the uninjected corpus.

    Conditions must differ only by their domain tokens, so the BPE is trained once, on text
    no condition has injected, and every condition's prepare stage loads it from here.
    """
    from domtok.config import from_dict
    from domtok.data.prepare import PrepareConfig, resolve_tokenizer
    from domtok.tokens.tokenizer import load_tokenizer

    base = str(cfg.get("base", "gpt2"))
    if not base.startswith("bpe-"):
        tok = load_tokenizer(base, "baseline")
        return {"tokenizer": base, "vocab_size": tok.vocab_size, "n_base": tok.n_base}
    prep = {k: v for k, v in cfg["prepare"].items() if k not in ("condition", "token_set")}
    prep["tokenizer"] = base
    if "sample_docs" in cfg:
        prep["bpe_sample_docs"] = cfg["sample_docs"]
    path = resolve_tokenizer(from_dict(PrepareConfig, prep, where="tokenizer"), out_dir.parent)
    if Path(path).resolve() != out_dir.resolve():
        raise DomtokError(f"tokenizer was trained into {path}, expected {out_dir}")
    tok = load_tokenizer(path, "baseline")
    return {"tokenizer": str(path), "vocab_size": tok.vocab_size, "n_base": tok.n_base}


def _build(cls, cfg: dict, node: Node):
    from domtok.config import from_dict

    fields = {f.name for f in dataclasses.fields(cls)}
    # Wiring keys a stage does not use (e.g. `condition` for an evaluation, which reads the
    # condition from the model's tokenizer) are dropped; all other keys are checked by from_dict.
    for k in ("seed", "condition", "inject_user", "token_set"):
        if k in cfg and k not in fields:
            cfg.pop(k)
    return from_dict(cls, cfg, where=f"stage {node.id}")


# --------------------------------------------------------------------------- running

@dataclass
class RunOptions:
    only: str | None = None
    from_stage: str | None = None
    force: bool = False
    nproc: int = 1
    quiet: bool = False


def node_state(node: Node) -> str:
    """done | failed | running | incomplete | pending — read from files only."""
    if node.manifest_path.exists():
        try:
            m = json.loads(node.manifest_path.read_text())
        except json.JSONDecodeError:
            return "incomplete"
        return "done" if m.get("hash") == node.hash else "stale"
    if (node.out_dir / "failed.json").exists():
        return "failed"
    running = node.out_dir / "running.json"
    if running.exists():
        try:
            pid = json.loads(running.read_text())["pid"]
            os.kill(pid, 0)
            return "running"
        except (OSError, KeyError, ValueError, json.JSONDecodeError):
            return "incomplete"
    if node.out_dir.exists():
        return "incomplete"
    return "pending"


def run_experiment(spec: Spec, opts: RunOptions) -> int:
    run_dir = Path(spec.runs_dir) / spec.name
    check_stage_configs(spec, where=spec.path or f"spec {spec.name}")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "spec.yaml", _dump_spec(spec))
    nodes = build_nodes(spec, run_dir)
    stage_names = [s.name for s in spec.stages]
    order = ["tokenizer", "prepare"] + stage_names
    for opt in (opts.only, opts.from_stage):
        if opt is not None and opt not in order:
            raise DomtokError(f"no stage {opt!r} in spec {spec.name}; stages: {order}")
    from_index = order.index(opts.from_stage) if opts.from_stage else None

    failed: set[str] = set()
    t_start = time.time()
    todo = [n for n in nodes if opts.only is None or n.stage == opts.only]
    check_replacements(nodes, todo, opts)
    _say(opts, f"domtok run {spec.name}: {len(todo)} nodes, conditions {list(spec.conditions)}, "
               f"seeds {spec.seeds}, run dir {run_dir}")
    for i, node in enumerate(todo, 1):
        tag = f"[{i}/{len(todo)}] {node.id}"
        blocked = [d.id for d in node.deps if d.id in failed]
        if blocked:
            failed.add(node.id)
            _say(opts, f"{tag}: skipped, depends on failed {blocked[0]}")
            continue
        missing = [d.id for d in node.deps if node_state(d) != "done"]
        if missing:
            failed.add(node.id)
            _say(opts, f"{tag}: skipped, input {missing[0]} is not done (run without --only first)")
            continue
        forced = opts.force or (from_index is not None and order.index(node.stage) >= from_index)
        state = node_state(node)
        if state == "done" and not forced:
            _say(opts, f"{tag}: done already ({_key_metric_text(node)})")
            continue
        if state == "running":
            raise DomtokError(f"{node.out_dir}: another `domtok run` is working on this node "
                              f"(see {node.out_dir / 'running.json'}); wait for it or remove that file")
        ok = run_node(node, run_dir, opts, fresh=forced or state in ("stale", "failed"))
        if ok:
            _say(opts, f"{tag}: done in {_wall(node):.1f}s ({_key_metric_text(node)})")
        else:
            failed.add(node.id)
            _say(opts, f"{tag}: FAILED — see {node.out_dir / 'log.txt'}")
    _say(opts, f"domtok run {spec.name}: finished in {time.time() - t_start:.0f}s, "
               f"{len(failed)} failed or blocked node(s)")
    if opts.only is None:
        # Also after failures: the report lists what is missing, and shows what did finish.
        try:
            from domtok.report import write_report
            path = write_report(run_dir)
            _say(opts, f"report: {path}")
        except Exception as e:  # the report is derived; a bug there must not hide finished results
            _say(opts, f"report could not be written: {type(e).__name__}: {e}")
            return 1
    if failed:
        _say(opts, "failed: " + ", ".join(sorted(failed)) + f" (logs under {run_dir})")
    return 1 if failed else 0


def check_replacements(nodes: list[Node], todo: list[Node], opts: RunOptions) -> None:
    """`--only S` after S's config changed would replace finished nodes and leave every finished
    node after them stale without re-running it: say so, and go on only with --force."""
    if opts.only is None or opts.force:
        return
    replaced = [n for n in todo if node_state(n) == "stale"]
    if not replaced:
        return
    gone = {n.id for n in replaced}
    downstream = []
    for n in nodes:  # nodes are in execution order, so one pass follows the dependencies
        if n.id not in gone and any(d.id in gone for d in n.deps):
            gone.add(n.id)
            if node_state(n) in ("done", "stale"):  # finished (its hash moves with its inputs')
                downstream.append(n.id)
    more = f"; {len(downstream)} finished node(s) after them would become stale ({', '.join(downstream[:4])}" \
           f"{' ...' if len(downstream) > 4 else ''})" if downstream else ""
    raise DomtokError(f"{replaced[0].out_dir}: --only {opts.only} with a changed config would replace "
                      f"{len(replaced)} finished node(s) ({', '.join(n.id for n in replaced[:4])}){more}; "
                      "pass --force to replace them, or restore the config")


def run_node(node: Node, run_dir: Path, opts: RunOptions, fresh: bool) -> bool:
    """Run one node in this process (or under torchrun when nproc > 1); True when it finished."""
    if fresh and node.out_dir.exists():
        shutil.rmtree(node.out_dir)
    # An incomplete directory from another config must not be resumed.
    marker = node.out_dir / "node.json"
    if marker.exists():
        try:
            old = json.loads(marker.read_text()).get("hash")
        except json.JSONDecodeError:
            old = None
        if old != node.hash or node.kind not in RESUMABLE:
            shutil.rmtree(node.out_dir)
    node.out_dir.mkdir(parents=True, exist_ok=True)
    (node.out_dir / "failed.json").unlink(missing_ok=True)
    atomic_write_json(marker, {"id": node.id, "hash": node.hash, "kind": node.kind, "config": node.config})
    atomic_write_json(node.out_dir / "running.json", {"pid": os.getpid(), "started": time.time()})
    log_path = node.out_dir / "log.txt"
    t0 = time.time()
    try:
        if opts.nproc > 1 and node.kind not in ("tokenizer", "prepare"):
            summary = _run_torchrun(node, run_dir, opts.nproc, log_path)
        else:
            fn, cfg = stage_call(node, run_dir)
            # The stage's own output (progress, per-step lines) goes to its log; the terminal
            # gets one line per node from run_experiment.
            with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                summary = _call_stage(fn, cfg, node)
    except Exception as e:  # recorded per node; the run goes on with what does not depend on it
        with open(log_path, "a") as log:
            log.write(traceback.format_exc())
        atomic_write_json(node.out_dir / "failed.json", {"error": f"{type(e).__name__}: {e}", "log": str(log_path)})
        (node.out_dir / "running.json").unlink(missing_ok=True)
        return False
    manifest = {"id": node.id, "hash": node.hash, "kind": node.kind, "stage": node.stage,
                "condition": node.condition, "seed": node.seed, "benchmark": node.benchmark,
                "config": node.config, "inputs": [d.id for d in node.deps], "summary": summary or {},
                "wall_time_s": time.time() - t0, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(node.manifest_path, manifest)
    (node.out_dir / "running.json").unlink(missing_ok=True)
    return True


def _run_torchrun(node: Node, run_dir: Path, nproc: int, log_path: Path) -> dict:
    """Run the node's stage function under torchrun in a child process group."""
    job = node.out_dir / "torchrun_node.json"
    atomic_write_json(job, {"run_dir": str(run_dir), "node": _node_to_dict(node)})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "domtok.pipeline", "--worker", str(job)]
    with open(log_path, "a") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        # The workers' own message (e.g. a config that does not divide by N processes) is the
        # useful one; torchrun's traceback around it is not.
        causes = [ln.split("DomtokError: ", 1)[1].strip() for ln in log_path.read_text(errors="replace").splitlines()
                  if "DomtokError: " in ln]
        raise DomtokError(f"torchrun exited with {rc}" + (f": {causes[-1]}" if causes else ""))
    return json.loads((node.out_dir / "summary.json").read_text()) if (node.out_dir / "summary.json").exists() else {}


def _node_to_dict(node: Node) -> dict:
    return {"id": node.id, "kind": node.kind, "stage": node.stage, "out_dir": str(node.out_dir),
            "config": node.config, "condition": node.condition, "seed": node.seed,
            "benchmark": node.benchmark, "hash": node.hash,
            "deps": [_node_to_dict(d) for d in node.deps]}


def _node_from_dict(d: dict) -> Node:
    return Node(id=d["id"], kind=d["kind"], stage=d["stage"], out_dir=Path(d["out_dir"]), config=d["config"],
                deps=[_node_from_dict(x) for x in d["deps"]], condition=d["condition"], seed=d["seed"],
                benchmark=d["benchmark"], hash=d["hash"])


def _worker(job_path: str) -> int:
    """Entry point of each torchrun process: run the same stage function as the single process."""
    job = json.loads(Path(job_path).read_text())
    node = _node_from_dict(job["node"])
    from domtok.utils import dist_teardown

    fn, cfg = stage_call(node, Path(job["run_dir"]))
    try:
        _call_stage(fn, cfg, node)
    finally:
        dist_teardown()
    return 0


def _call_stage(fn, cfg, node: Node) -> dict:
    """Call a stage function; training stages continue from their last checkpoint."""
    import inspect

    if "resume" in inspect.signature(fn).parameters:
        return fn(cfg, node.out_dir, resume=True)
    return fn(cfg, node.out_dir)


def _wall(node: Node) -> float:
    try:
        return json.loads(node.manifest_path.read_text())["wall_time_s"]
    except (OSError, KeyError, json.JSONDecodeError):
        return 0.0


def key_metric(kind: str, summary: dict) -> tuple[str, float] | None:
    """The one number the status board shows for a finished node."""
    if kind == "prepare":
        tokens = summary.get("splits", {}).get("train", {}).get("tokens")
        return ("train_tokens", float(tokens)) if isinstance(tokens, int) else None
    metrics = summary.get("metrics", summary)
    candidates = {
        "pretrain": ("final_val_bpb", "val_bpb", "final_val_loss"),
        "sft": ("final_val_loss", "val_loss", "final_train_loss"),
        "rft": ("final_val_loss", "yield", "val_loss"),
        "grpo": ("reward_mean_last_quarter",),
        "gsm8k": ("accuracy_flexible", "accuracy"),
        "probes": ("accuracy_all",),
        "hellaswag": ("acc_norm_char", "acc_norm"),
        "tokenizer": ("vocab_size",),
    }.get(kind, ())
    for k in candidates:
        v = metrics.get(k)
        if isinstance(v, (int, float)):
            return k, float(v)
    return None


def _key_metric_text(node: Node) -> str:
    try:
        summary = json.loads(node.manifest_path.read_text()).get("summary", {})
    except (OSError, json.JSONDecodeError):
        return ""
    km = key_metric(node.kind, summary)
    return f"{km[0]}={km[1]:.4g}" if km else ""


def _say(opts: RunOptions, msg: str) -> None:
    if not opts.quiet:
        print(msg, flush=True)


def _dump_spec(spec: Spec) -> str:
    import yaml

    return yaml.safe_dump(spec.raw, sort_keys=False)


def prepare_condition(spec_path: str, condition: str, root: Path) -> Path:
    """The shards of one condition of a spec, made as `domtok run` makes them, under `root`.

    For running a single stage by hand (`domtok pretrain configs/tiny.yaml`): the tokenizer
    and prepare nodes run (or are reused when complete) and the shard directory is returned.
    """
    spec = load_spec(spec_path)
    if condition not in spec.conditions:
        raise DomtokError(f"{spec_path}: no condition {condition!r}; conditions: {list(spec.conditions)}")
    opts = RunOptions(quiet=True)
    for node in build_nodes(spec, root):
        if node.kind == "tokenizer" or (node.kind == "prepare" and node.condition == condition):
            state = node_state(node)
            if state != "done" and not run_node(node, root, opts, fresh=state in ("stale", "failed")):
                raise DomtokError(f"preparing the data failed; see {node.out_dir / 'log.txt'}")
            if node.kind == "prepare":
                return node.out_dir
    raise AssertionError("unreachable: every spec has a prepare node per condition")


# --------------------------------------------------------------------------- CLI

def add_arguments(p) -> None:
    p.add_argument("spec", nargs="?", default=None, help="experiment spec YAML (default: the tiny preset)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the spec, e.g. seeds=[0,1]")
    p.add_argument("--preset", help="a shipped spec by name (tiny, gpt2-124m-10b)")
    p.add_argument("--seeds", type=int, help="run seeds 0..N-1 (replaces the spec's list)")
    p.add_argument("--only", metavar="STAGE", help="run only this stage (its inputs must be done)")
    p.add_argument("--from", dest="from_stage", metavar="STAGE", help="re-run this stage and everything after it")
    p.add_argument("--force", action="store_true",
                   help="re-run every node, even finished ones; with --only, replace finished nodes of a changed config")
    p.add_argument("--nproc", type=int, default=1, help="processes per training/eval stage (torchrun)")
    p.add_argument("--runs-dir", help="where run directories live (default: the spec's runs_dir, `runs`)")


def main(args) -> int:
    spec_arg = args.spec
    overrides = list(args.overrides)
    if spec_arg is not None and "=" in spec_arg and not Path(spec_arg).exists():
        overrides.insert(0, spec_arg)  # `domtok run seeds=[0,1]` with the default spec
        spec_arg = None
    if args.preset and spec_arg:
        raise DomtokError("give either a spec file or --preset, not both")
    spec = load_spec(args.preset or spec_arg, overrides, seeds=args.seeds)
    if args.runs_dir:
        spec.runs_dir = args.runs_dir
    from domtok.outdir import check_writable_dir, claim_out_dir

    check_writable_dir(spec.runs_dir, "--runs-dir")
    claim_out_dir(Path(spec.runs_dir) / spec.name, what="run directory")
    return run_experiment(spec, RunOptions(only=args.only, from_stage=args.from_stage, force=args.force,
                                           nproc=args.nproc))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2]))
    print("usage: python -m domtok.pipeline --worker JOB.json (internal; use `domtok run`)", file=sys.stderr)
    sys.exit(2)
