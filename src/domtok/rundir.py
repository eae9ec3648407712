"""What a run directory holds, and how to read it: the spec, its nodes, their state and results.

`domtok run` (pipeline.py) writes a run directory; `domtok status`, `report` and `hub` only
read one. Everything they share lives here, so none of them imports the pipeline:

- the experiment spec (`load_spec`): conditions, seeds, stages, evaluations;
- the DAG of nodes (`build_nodes`): every (stage, condition, seed) and every evaluation, with
  its output directory and a config hash that also covers its inputs' hashes;
- a node's state from its files (`node_state`), its manifest and summary, its key metric.

Run directory layout:

    runs/<name>/spec.yaml                     the resolved spec
    runs/<name>/tokenizer/                    one base tokenizer for every condition
    runs/<name>/<condition>/prepare/          token shards of that condition
    runs/<name>/<condition>/seed<k>/<stage>/  a training stage (model/, metrics.jsonl, ...)
    runs/<name>/<condition>/seed<k>/<stage>/eval/<benchmark>/   items.jsonl, summary.json
    runs/<name>/rung-<r>/<condition>/seed<k>/...  a ladder (domtok.ladder): the study per rung,
                                              sharing the tokenizer and <condition>/prepare/

Each node directory holds `node.json` (hash, written when the node starts), `log.txt`, and
`manifest.json`, written last and atomically when the node has finished: a directory
without a manifest is incomplete. A failed node holds `failed.json` with its log path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from domtok.config import (ConfigError, apply_overrides, check_path_name, check_value, config_hash, deep_merge,
                           load_yaml, resolve_config_path, stage_section)
from domtok.errors import DomtokError
from domtok.ladder import nominal_vocab_size, parse_ladder, parse_learns, resolve_rung
from domtok.utils import read_json_object, short_json

TRAINING_KINDS = ("pretrain", "sft", "grpo", "rft")
CONTROL_SET = "control"  # a condition's `token_set: control`: built by the tokenizer node (domtok.tokens.control)
EVAL_KINDS = ("gsm8k", "hellaswag", "probes")


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
    ladder: list = field(default_factory=list)  # domtok.ladder.Rung: the study at several sizes
    learns: dict = field(default_factory=dict)  # stage, {"benchmark.metric": minimum}: see ladder.parse_learns
    primary: dict = field(default_factory=dict)  # benchmark, metric, stage, margin: see parse_primary
    tuning_seeds: list[int] = field(default_factory=list)  # seeds whose results chose knobs: never in `seeds`
    sequential: dict | None = None  # {max_seeds, per_look, spending, alpha} for --seeds auto (sequential_run)
    raw: dict = field(default_factory=dict)
    path: str = ""  # the spec file it was read from (for messages)

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"no stage named {name!r}; stages: {[s.name for s in self.stages]}")


# The keys a spec may hold at each level; anything else is a typo, reported before a node runs.
SPEC_KEYS = ("name", "runs_dir", "seeds", "tuning_seeds", "token_set", "conditions", "tokenizer", "prepare",
             "stages", "evals", "confounds", "ladder", "learns", "primary",
             "sequential")
STAGE_KEYS = ("name", "kind", "config", "set", "after", "enabled")
TOKENIZER_KEYS = ("base", "sample_docs", "split_digits")
EVALS_KEYS = ("after", "benchmarks")


# What a run directory holds at its top besides the condition directories (see the layout above).
RUN_DIR_NAMES = ("tokenizer", "spec.yaml", "report.md", "report.json", "plots", "smoke.json", "smoke.md", "fixtures",
                 "looks.json", "registry.json", ".cache", "rung-*", "node*")  # looks: sequential_run; registry: hub pull


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
    """Read and validate an experiment spec; `seeds=N` replaces the seed list by N seeds from its
    first one on (tiny, `seeds: [3, 4, 5]`: `seeds=1` runs seed 3), never a `tuning_seeds` one.

    Validated whole, before anything runs: unknown keys at every level, types, empty lists
    (the stage configs against their dataclasses: `wiring.check_stage_configs`).

    `extends: PRESET` takes every section of that spec and deep-merges this file's over it
    (ladder-cpu is the tiny study plus a `ladder:`); the resolved spec, saved as the run's
    spec.yaml, no longer names it."""
    path = resolve_config_path(path_or_preset or "tiny")
    data = load_yaml(path)
    if "extends" in data:
        base = data.pop("extends")
        parent = load_yaml(resolve_config_path(str(base)))
        if "extends" in parent:
            raise ConfigError(f"{path}: extends {base!r}, which extends another spec; extend a spec without `extends`")
        data = deep_merge(parent, data)
    data = apply_overrides(data, overrides)
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
        check_path_name(cname, where, "condition", RUN_DIR_NAMES)
        c = c or {}
        if not isinstance(c, dict):
            raise ConfigError(f"{where}: condition {cname!r} must be a mapping such as {{token_set: mul}}, got {c!r}")
        conditions[cname] = c
        unknown = set(c) - {"token_set", "inject_user", "match"}
        if unknown:
            raise ConfigError(f"{where}: condition {cname!r}: unknown keys {sorted(unknown)}; "
                              "a condition may set token_set, inject_user and match")
        # Every condition shares one id layout (the baseline reserves the same ids), so a domain
        # condition can only use the spec's token set, or the control set built to copy it.
        if c.get("token_set") not in (None, data.get("token_set", "mul"), CONTROL_SET):
            raise ConfigError(f"{where}: condition {cname!r} uses token_set {c['token_set']!r} but the spec's "
                              f"token_set (the shared id layout) is {data.get('token_set', 'mul')!r}; set them equal "
                              f"(or use {CONTROL_SET!r}, the compression-matched control of the spec's set)")
    for cname in conditions:
        document_partner(conditions, cname, where)  # an unknown partner or a cycle: refused here
    tokenizer = data.get("tokenizer") or {"base": "gpt2"}
    if not isinstance(tokenizer, dict):
        raise ConfigError(f"{where}: `tokenizer` must be a mapping such as {{base: bpe-1024}}, got {tokenizer!r}")
    _unknown(where, "tokenizer", tokenizer, TOKENIZER_KEYS)
    if "split_digits" in tokenizer:
        if not isinstance(tokenizer["split_digits"], bool):
            raise ConfigError(f"{where}: tokenizer.split_digits must be true or false, got {tokenizer['split_digits']!r}")
        if tokenizer["split_digits"] and not str(tokenizer.get("base", "gpt2")).startswith("bpe-"):
            raise ConfigError(f"{where}: tokenizer.split_digits applies to a BPE domtok trains (base: bpe-N), "
                              f"not to {tokenizer.get('base', 'gpt2')!r}; remove it or use a bpe-N base")
    stages = []
    names, disabled = set(), set()
    stage_list = need("stages", list)
    if not stage_list:
        raise ConfigError(f"{where}: `stages` is an empty list, so nothing would be trained; give at least one")
    for i, s in enumerate(stage_list):
        if not isinstance(s, dict) or "name" not in s or "kind" not in s:
            raise ConfigError(f"{where}: stages[{i}] needs `name` and `kind`")
        _unknown(where, f"stages[{i}] ({s['name']})", s, STAGE_KEYS)
        if not isinstance(s.get("set") or {}, dict):
            raise ConfigError(f"{where}: stages[{i}] ({s['name']}): `set` must be a mapping of keys to values")
        if s["kind"] not in TRAINING_KINDS:
            raise ConfigError(f"{where}: stages[{i}] kind {s['kind']!r}; kinds: {list(TRAINING_KINDS)}")
        after = s.get("after", stage_list[i - 1].get("name") if i else None)  # default: the stage listed before
        if s["kind"] != "pretrain" and after is None:
            raise ConfigError(f"{where}: stage {s['name']!r} needs a stage before it (`after:`)")
        check_path_name(s["name"], where, f"stages[{i}]", ("prepare", "tokenizer"))
        if s["name"] in names | disabled:
            raise ConfigError(f"{where}: stage name {s['name']!r} is used twice")
        if not isinstance(s.get("enabled", True), bool):
            raise ConfigError(f"{where}: stages[{i}] ({s['name']}): `enabled` must be true or false, got {s['enabled']!r}")
        if not s.get("enabled", True):  # an optional branch, off: it and its evaluations are not nodes
            disabled.add(s["name"])
            continue
        if after in disabled:
            raise ConfigError(f"{where}: stage {s['name']!r} comes after {after!r}, which is not enabled; "
                              f"enable {after!r} or give {s['name']!r} another `after:`")
        if after is not None and after not in names:
            raise ConfigError(f"{where}: stage {s['name']!r} comes after unknown stage {after!r}")
        names.add(s["name"])
        inline = s.get("config") if isinstance(s.get("config"), dict) else {}
        if "seed" in inline or "seed" in (s.get("set") or {}):  # (a stage preset's own seed is for its verb)
            raise ConfigError(f"{where}: stage {s['name']!r}: `seed` comes from the spec's `seeds:` list (every seed "
                              "runs every stage, and that seed is the node's); remove `seed` from the stage")
        stages.append(StageSpec(name=s["name"], kind=s["kind"], config=stage_section(s, where), after=after))
    evals = data.get("evals") or {}
    if not isinstance(evals, dict):
        raise ConfigError(f"{where}: `evals` must be a mapping with `after` and `benchmarks`, got {evals!r}")
    _unknown(where, "evals", evals, EVALS_KEYS)
    if not isinstance(evals.get("benchmarks") or {}, dict):
        raise ConfigError(f"{where}: `evals.benchmarks` must be a mapping of names to benchmark configs")
    benchmarks = {}
    for bname, b in (evals.get("benchmarks") or {}).items():
        check_path_name(bname, where, "benchmark")
        if not isinstance(b or {}, dict):
            raise ConfigError(f"{where}: benchmark {bname!r} must be a mapping (kind: ..., n: ...), got {b!r}")
        b = dict(b or {})
        kind = b.pop("kind", bname)
        if kind not in EVAL_KINDS:
            raise ConfigError(f"{where}: benchmark {bname!r} kind {kind!r}; kinds: {list(EVAL_KINDS)}")
        if b.pop("enabled", True):
            benchmarks[bname] = {"kind": kind, "config": b}
    evals_after = _name_list(where, "evals.after", list(evals.get("after") or []), allow_empty=True)
    evals_after = [a for a in evals_after if a not in disabled]
    for a in evals_after:
        if a not in names:
            raise ConfigError(f"{where}: evals.after names unknown stage {a!r}")
    seed_list = _name_list(where, "seeds", data.get("seeds", [0]), kind=int)
    if len(set(seed_list)) != len(seed_list) or min(seed_list) < 0:
        raise ConfigError(f"{where}: `seeds` {seed_list} must be distinct non-negative integers")
    if seeds is not None:
        if not 1 <= seeds <= 10_000:
            raise ConfigError(f"--seeds {seeds}: give the number of seeds to run, from 1 to 10000")
        seed_list = list(range(seed_list[0], seed_list[0] + seeds))  # from the spec's first seed on
        data["seeds"] = seed_list  # the saved spec.yaml records the seeds that ran, not the file's
    for s in seed_list:
        check_value("seed", s, f"{where}: seeds", owner="Spec")
    # Seeds whose results chose a knob are not evidence for it: a reported study runs others.
    tuning_seeds = _name_list(where, "tuning_seeds", data.get("tuning_seeds", []), kind=int, allow_empty=True)
    if set(seed_list) & set(tuning_seeds):
        raise ConfigError(f"{where}: seeds {sorted(set(seed_list) & set(tuning_seeds))} were used for tuning "
                          f"(tuning_seeds {tuning_seeds}); a reported study runs seeds never used for tuning: "
                          "choose other seeds, or set tuning_seeds=[] to rerun a tuning seed on purpose")
    for what, group in (("condition", list(conditions)), ("stage", [st.name for st in stages]),
                        ("benchmark", list(benchmarks))):
        folded = {}  # on a case-insensitive filesystem (macOS, Windows) `A` and `a` are one directory
        for n in group:
            if n.lower() in folded:
                raise ConfigError(f"{where}: {what} names {folded[n.lower()]!r} and {n!r} differ only in case, so they "
                                  "would share one directory on a case-insensitive filesystem; rename one")
            folded[n.lower()] = n
    confounds = _name_list(where, "confounds", list(data.get("confounds") or []), allow_empty=True)
    for key in ("name", "runs_dir", "token_set"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{where}: `{key}` must be a string, got {data[key]!r}")
    name = check_path_name(str(data.get("name", path.stem)), where, "spec")  # the run dir is runs_dir/name
    token_set, prepare = str(data.get("token_set", "mul")), need("prepare", dict)
    ladder = parse_ladder(data.get("ladder"), where, [s.name for s in stages])
    learns = parse_learns(data.get("learns"), where, evals_after, benchmarks)
    primary = parse_primary(data.get("primary"), where, evals_after, benchmarks)
    from domtok.eval.sequential import parse_sequential
    sequential = parse_sequential(data.get("sequential"), where)
    if ladder:
        vocab_size = nominal_vocab_size(tokenizer, token_set)
        for rung in ladder:
            resolve_rung(rung, stages, prepare, vocab_size, where)
    return Spec(name=name, conditions=conditions, seeds=seed_list,
                tokenizer=tokenizer, prepare=prepare, stages=stages, evals_after=evals_after, benchmarks=benchmarks,
                runs_dir=str(data.get("runs_dir", "runs")), token_set=token_set,
                confounds=confounds, ladder=ladder, learns=learns, primary=primary, tuning_seeds=tuning_seeds,
                sequential=sequential, raw=data, path=where)


# The per-item field behind each metric a primary endpoint may name (a boolean per item, so
# the report's paired test applies), per benchmark kind; probes add accuracy_<category>.
# gold_*bpb: the continuous scores of domtok.eval.gold (lower is better; the margin in bits per byte)
PRIMARY_METRICS = {"gsm8k": {"accuracy_flexible": "correct_flexible", "accuracy_strict": "correct_strict",
                             "gold_bpb": "gold_bpb", "gold_solution_bpb": "gold_solution_bpb"},
                   "probes": {"accuracy_all": "correct", "gold_bpb_all": "gold_bpb"},
                   "hellaswag": {"acc_norm_char": "acc_norm_char", "acc_norm_token": "acc_norm_token", "acc": "acc"}}


def primary_field(kind: str, metric: str) -> tuple[str, str | None]:
    """(per-item field, probe category or None) of a primary metric of a benchmark kind."""
    if kind == "probes" and metric.startswith("accuracy_") and metric != "accuracy_all":
        return "correct", metric[len("accuracy_"):]
    if kind == "probes" and metric.startswith("gold_bpb_") and metric != "gold_bpb_all":
        return "gold_bpb", metric[len("gold_bpb_"):]
    return PRIMARY_METRICS[kind][metric], None


def parse_primary(data, where: str, evals_after: list[str], benchmarks: dict) -> dict:
    """The spec's `primary:` endpoint, the one test that answers the study's question:

        primary: {benchmark: gsm_synthetic, metric: accuracy_flexible, stage: grpo, margin: 0.05}

    The report tests it alone at alpha 0.05 (helps / hurts / equivalent within ±margin /
    undecided); every other comparison is secondary. {} when the spec has none.
    """
    if data is None:
        return {}
    at = f"{where}: primary"
    keys = ("benchmark", "metric", "stage", "margin")
    if not isinstance(data, dict) or set(data) != set(keys):
        raise ConfigError(f"{at}: give exactly {{benchmark, metric, stage, margin}}, e.g. "
                          "{benchmark: gsm_synthetic, metric: accuracy_flexible, stage: grpo, margin: 0.05}")
    bench, metric, stage, margin = (data[k] for k in keys)
    if bench not in benchmarks:
        raise ConfigError(f"{at}: benchmark {bench!r} is not an enabled benchmark ({sorted(benchmarks)})")
    kind = benchmarks[bench]["kind"]
    valid = list(PRIMARY_METRICS.get(kind, {}))
    if kind == "probes":
        from domtok.eval import REFERENCE_CATEGORIES

        cats = benchmarks[bench]["config"].get("categories", REFERENCE_CATEGORIES)
        valid += [f"{m}_{c}" for m in ("accuracy", "gold_bpb") for c in cats]
    if metric not in valid:
        raise ConfigError(f"{at}: metric {metric!r} is not one of {bench}'s per-item accuracies or gold scores {valid}")
    if stage not in evals_after:
        raise ConfigError(f"{at}: stage {stage!r} is not evaluated; evals.after: {evals_after}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < 1:
        raise ConfigError(f"{at}: margin must be a number between 0 and 1 (an accuracy difference), got {margin!r}")
    return {"benchmark": bench, "metric": metric, "stage": stage, "margin": float(margin)}


def document_partner(conditions: dict[str, dict], cond: str, where: str = "spec") -> str | None:
    """The condition whose documents `cond` reads (`match: {documents: OTHER}`), None for a
    compute-matched one (`match: tokens`, the default). A chain (A reads B's, B reads C's) ends
    at the condition that is compute-matched: A reads C's documents too. An unknown partner
    or a cycle is a ConfigError."""
    seen = [cond]
    while True:
        match = conditions[seen[-1]].get("match", "tokens")
        if match == "tokens":
            return seen[-1] if len(seen) > 1 else None
        if not (isinstance(match, dict) and set(match) == {"documents"} and isinstance(match["documents"], str)):
            raise ConfigError(f"{where}: condition {seen[-1]!r}: match must be `tokens` or {{documents: CONDITION}}, "
                              f"got {match!r}")
        other = match["documents"]
        if other not in conditions:
            raise ConfigError(f"{where}: condition {seen[-1]!r}: match: {{documents: {other}}} names no condition; "
                              f"conditions: {list(conditions)}")
        if other in seen:
            raise ConfigError(f"{where}: conditions {' -> '.join(seen + [other])} match each other's documents in a "
                              "cycle; one of them must be `match: tokens`")
        seen.append(other)


def foreign_entries(run_dir: Path, conditions) -> list[str]:
    """What a run directory holds that its layout does not explain (the user's files), down to
    the condition directories: a forced or smoke re-run may delete only the rest."""
    import fnmatch

    def ours(name: str, patterns) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns) or ".tmp-" in name or ".old-" in name

    out = []
    if not run_dir.is_dir():
        return out
    for p in sorted(run_dir.iterdir()):
        if not ours(p.name, (*RUN_DIR_NAMES, *conditions)):
            out.append(p.name)
        elif p.name in conditions and p.is_dir():
            out += [f"{p.name}/{q.name}" for q in sorted(p.iterdir()) if not ours(q.name, ("prepare", "seed*"))]
    return out


# The files the pipeline itself writes at a node directory's top (the manifest lists the rest).
NODE_FILES = ("node.json", "manifest.json", "running.json", "failed.json")


def _walk_node(out_dir: Path) -> tuple[list[str], list[Path]]:
    """(every file under a node directory, relative to it, sorted; the node directories nested
    in it: those holding their own node.json, an evaluation of this node's model), one pass."""
    files, nested = [], []
    for root, dirs, names in os.walk(out_dir):
        here = Path(root)
        if here != out_dir and (here / "node.json").exists():
            nested.append(here)
            dirs[:] = []
            continue
        files += [str((here / f).relative_to(out_dir)) for f in names]
    return sorted(files), nested


def node_files(out_dir: Path) -> list[str]:
    """The files a node wrote, relative to its directory, except the pipeline's own (NODE_FILES)
    and a nested node directory's (which lists its own): a finished node's manifest's `files`."""
    return [f for f in _walk_node(out_dir)[0] if f not in NODE_FILES]


def foreign_node_files(out_dir: Path) -> list[Path]:
    """Files under a node directory (and the node directories nested in it) that the node's
    manifest does not list: the user's, which deleting the directory would lose. A node without a
    manifest (unfinished) or whose manifest predates the list is taken as holding only its own."""
    if not out_dir.is_dir():
        return []
    files, nested = _walk_node(out_dir)
    try:
        listed = json.loads((out_dir / "manifest.json").read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    own = set(listed) | set(NODE_FILES) if isinstance(listed, list) else None
    found = [out_dir / f for f in files if f not in own] if own is not None else []
    return found + [f for d in nested for f in foreign_node_files(d)]


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
    rung: str | None = None   # the ladder rung ("rung-<name>/..." nodes); None outside a ladder
    hash: str = ""

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.json"


def build_nodes(spec: Spec, run_dir: Path) -> list[Node]:
    """All nodes in a valid execution order: stage by stage, both conditions side by side; in
    a ladder, the whole study of each rung in turn under `rung-<name>/`."""
    nodes: list[Node] = []

    def add(node: Node) -> Node:
        payload = {"kind": node.kind, "config": node.config, "deps": [d.hash for d in node.deps],
                   "condition": node.condition, "seed": node.seed}
        if node.rung is not None:
            payload["rung"] = node.rung
        node.hash = config_hash(payload)
        nodes.append(node)
        return node

    tok_cfg = {**spec.tokenizer, "prepare": spec.prepare}
    if any(c.get("token_set") == CONTROL_SET for c in spec.conditions.values()):
        tok_cfg["control_of"] = spec.token_set  # build the control set of the spec's set beside it
    tok = add(Node("tokenizer", "tokenizer", "tokenizer", run_dir / "tokenizer", tok_cfg, []))
    prepared: dict[str, dict[str, Node]] = {}  # config hash of a prepare section -> condition -> node

    def prepare_nodes(prep: dict, prefix: str, rung: str | None) -> dict[str, Node]:
        h = config_hash(prep)
        if h not in prepared:
            prepared[h] = {}
            for cond, c in spec.conditions.items():
                cfg = {**prep, "condition": cond, "token_set": c.get("token_set") or spec.token_set,
                       "use_domain_tokens": c.get("token_set") is not None}
                prepared[h][cond] = add(Node(f"{prefix}{cond}/prepare", "prepare", "prepare",
                                             run_dir / prefix / cond / "prepare", cfg, [tok], condition=cond, rung=rung))
        return prepared[h]

    if not spec.ladder:
        _study_nodes(spec, spec.stages, prepare_nodes(spec.prepare, "", None), run_dir, "", None, add)
    for rung in spec.ladder:
        prefix = f"{rung.dir_name}/"
        # Rungs whose prepare section is the spec's share its corpus at the top of the run dir.
        shared = rung.prepare_config == spec.prepare
        prep = prepare_nodes(rung.prepare_config, "" if shared else prefix, None if shared else rung.name)
        stages = [dataclasses.replace(st, config=rung.stage_configs[st.name]) for st in spec.stages]
        _study_nodes(spec, stages, prep, run_dir / rung.dir_name, prefix, rung.name, add)
    return nodes


def _study_nodes(spec: Spec, stages: list[StageSpec], prepared: dict[str, Node], base_dir: Path, prefix: str,
                 rung: str | None, add) -> None:
    """The training and evaluation nodes of one study (conditions x seeds x stages x evals)."""
    trained: dict[tuple, Node] = {}
    for st in stages:
        for seed in spec.seeds:
            for cond, c in spec.conditions.items():
                base = base_dir / cond / f"seed{seed}"
                deps = [prepared[cond]] if st.after is None else [trained[(st.after, cond, seed)], prepared[cond]]
                cfg = {**st.config, "condition": cond, "seed": seed}
                partner = document_partner(spec.conditions, cond) if st.kind == "pretrain" else None
                if partner is not None:  # data-matched: its partner's shards say which documents
                    cfg["match_documents"] = partner
                    deps.append(prepared[partner])
                if c.get("inject_user"):
                    cfg["inject_user"] = True
                node = add(Node(f"{prefix}{cond}/seed{seed}/{st.name}", st.kind, st.name, base / st.name, cfg, deps,
                                condition=cond, seed=seed, rung=rung))
                trained[(st.name, cond, seed)] = node
                if st.name in spec.evals_after:
                    for bname, b in spec.benchmarks.items():
                        # Evaluations keep their own seed: every training seed is scored on the
                        # same items, so any two nodes can be compared item by item.
                        add(Node(f"{node.id}/eval/{bname}", b["kind"], st.name, node.out_dir / "eval" / bname,
                                 dict(b["config"]), [node], condition=cond, seed=seed, benchmark=bname, rung=rung))


# --------------------------------------------------------------------------- state and results of a node

def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs. A killed worker whose parent died too can linger as a
    zombie that nobody reaps (signal 0 still reaches it), so a zombie counts as dead."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): signal 0 is all we can ask
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def node_state(node: Node) -> str:
    """done | failed | running | incomplete | pending — read from files only.

    A manifest that is not what `domtok run` writes, or an evaluation whose items.jsonl holds
    fewer rows than its summary counts, is incomplete: the run redoes it, status does not show ✅."""
    if node.manifest_path.exists():
        try:
            m = read_manifest(node)
        except DomtokError:
            return "incomplete"
        if m.get("hash") != node.hash:
            return "stale"
        n = m["summary"].get("n")
        if node.kind in EVAL_KINDS and isinstance(n, int) and count_rows(node.out_dir / "items.jsonl") != n:
            return "incomplete"
        return "done"
    if (node.out_dir / "failed.json").exists():
        return "failed"
    running = node.out_dir / "running.json"
    if running.exists():
        try:
            held = json.loads(running.read_text())
            if held.get("host", socket.gethostname()) != socket.gethostname():
                return "running"  # a process on another machine (a Ray worker): its pid says nothing here
            if pid_alive(int(held["pid"])):
                return "running"
            return "incomplete"
        except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError):
            return "incomplete"
    if node.out_dir.exists():
        return "incomplete"
    return "pending"


def wall_time(node: Node) -> float:
    """Seconds the finished node took (0.0 when its manifest does not say)."""
    t = read_manifest(node).get("wall_time_s", 0.0)
    return float(t) if isinstance(t, (int, float)) else 0.0


def key_metric(kind: str, summary: dict) -> tuple[str, float] | None:
    """The one number the status board shows for a finished node."""
    def obj(d, key):  # a nested object, {} when a damaged file holds something else there
        v = d.get(key, {})
        return v if isinstance(v, dict) else {}

    if kind == "prepare":
        tokens = obj(obj(summary, "splits"), "train").get("tokens")
        return ("train_tokens", float(tokens)) if isinstance(tokens, int) else None
    metrics = obj(summary, "metrics") if "metrics" in summary else summary
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


def key_metric_text(node: Node) -> str:
    """`name=value` of the node's key metric, "" when it has none or is not finished."""
    km = key_metric(node.kind, read_summary(node))
    return f"{km[0]}={km[1]:.4g}" if km else ""


# --------------------------------------------------------------------------- reading a run directory

def find_run_dir(run_dir: str | None) -> Path:
    """RUN_DIR itself, or the most recently modified run under ./runs when none is given."""
    if run_dir:
        p = Path(run_dir)
        if not (p / "spec.yaml").exists():
            raise DomtokError(f"{p}: not a domtok run directory (no spec.yaml); run `domtok run` first")
        return p
    runs = sorted((q.parent for q in Path("runs").glob("*/spec.yaml")), key=lambda q: q.stat().st_mtime)
    if not runs:
        raise DomtokError("no run directory under ./runs; give RUN_DIR or run `domtok run` first")
    return runs[-1]


def load_run(run_dir: Path) -> tuple[Spec, list[Node]]:
    """(spec, nodes) of a run directory, from its saved spec."""
    spec = load_spec(str(find_run_dir(str(run_dir)) / "spec.yaml"))
    return spec, build_nodes(spec, run_dir)


def read_manifest(node: Node) -> dict:
    """The node's manifest ({} when it has none: not finished), checked to be what `domtok run`
    writes: an object whose `summary` is an object. Anything else is a DomtokError naming it."""
    path = node.manifest_path
    if not path.exists():
        return {}
    fix = f"the node's files are damaged: remove {node.out_dir} and run `domtok run` again to redo it"
    m = read_json_object(path, fix)
    if not isinstance(m.get("summary", {}), dict):
        raise DomtokError(f"{path}: `summary` holds {type(m['summary']).__name__} {short_json(m['summary'])}, "
                          f"not an object; {fix}")
    m.setdefault("summary", {})
    return m


def read_summary(node: Node) -> dict:
    """The summary a finished node's stage returned (kept in its manifest)."""
    return read_manifest(node).get("summary", {})


def count_rows(path: Path) -> int:
    """Non-blank lines of a jsonl file (0 when absent): what an evaluation wrote."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0
