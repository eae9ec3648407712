"""Configs: dataclasses filled from YAML plus dotted `key=value` overrides from the command line.

Every stage has one config dataclass (PretrainConfig, SFTConfig, ...) defined next to its
loop. This module only knows how to fill such a dataclass from nested dicts, apply overrides,
hash the fully resolved result, and save it beside a run's outputs. The hash is what makes a
stage's output reusable: same hash, same numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from domtok.errors import DomtokError

T = TypeVar("T")

PRESET_DIR = Path(__file__).parent / "configs"


class ConfigError(DomtokError, ValueError):
    """A config file or override that cannot be applied; the message names the key and the fix."""


# A spec name that becomes a directory (the run, a condition, a stage, a benchmark, a ladder
# rung) is one plain path component: it cannot climb out of the run dir (`../x`), point
# elsewhere (`/home/x`), hide (`.x`) or differ from another only in characters a filesystem
# treats alike.
PATH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_path_name(name: Any, where: str, what: str, reserved: tuple[str, ...] = ()) -> str:
    """`name` as one safe directory name, or a ConfigError saying which characters are allowed."""
    if not isinstance(name, str) or not PATH_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{where}: {what} name {name!r} becomes a directory name; use letters, digits, `_`, `.` "
                          "and `-` (starting with a letter or digit, no `..`, at most 100 characters)")
    if name in reserved or any(r.endswith("*") and name.startswith(r[:-1]) for r in reserved):
        raise ConfigError(f"{where}: {what} name {name!r} is reserved (the run directory uses "
                          f"{', '.join(reserved)}); choose another")
    return name


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A path to a YAML file, or the name of a shipped preset (`tiny`, `gpt2-124m-10b`)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if preset.exists():
        return preset
    names = sorted(q.stem for q in PRESET_DIR.glob("*.yaml"))
    raise ConfigError(f"config {str(name_or_path)!r} is neither a file nor a preset; presets: {', '.join(names)}")


# --------------------------------------------------------------------------- YAML

# A config is small: a few hundred values. Anchors and aliases are allowed (`<<: *defaults`),
# but their expansion is bounded, so an alias bomb (each level doubling the last) is a message,
# not a hang that eats the memory.
MAX_YAML_VALUES = 100_000


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last value without a word)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice in one mapping (lines {seen[key]} and {line}); "
                        "keep one", key_node.start_mark)
                seen[key] = line
            except TypeError:
                continue  # an unhashable key: the base class says so
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str):
    """YAML text -> Python values with the safe loader above; every failure is one ConfigError."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(e).split())}") from None
    _check_expansion(data, where)
    return data


def _check_expansion(data, where: str) -> None:
    """Aliases build shared (or self-containing) values; refuse a cycle and a blow-up before
    anything copies or walks the data as a tree."""
    count = 0
    stack = [(data, ())]
    while stack:
        value, ancestors = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise ConfigError(f"{where}: aliases expand to more than {MAX_YAML_VALUES:,} values (an alias bomb?); "
                              "write the values out or use fewer nested aliases")
        if isinstance(value, (dict, list)):
            if id(value) in ancestors:
                raise ConfigError(f"{where}: a recursive alias (a value that contains itself, e.g. `a: &x [*x]`); "
                                  "an alias may only refer to a value defined before it and outside it")
            children = value.values() if isinstance(value, dict) else value
            inner = ancestors + (id(value),)
            stack.extend((c, inner) for c in children)


def load_yaml(path: str | os.PathLike) -> dict:
    path = resolve_config_path(path)
    if Path(path).is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file; give a YAML file or a preset name")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the config as UTF-8") from None
    data = parse_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (['train', 'lr'], 0.0003). Values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key part")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw != "" else ""
    except yaml.constructor.ConstructorError as e:  # YAML, but not a value (a key twice, an unknown tag)
        raise ConfigError(f"override {item!r}: {' '.join(str(e).split())}") from None
    except yaml.YAMLError:  # not YAML at all: the text itself (`name=a: b`)
        value = raw
    _check_expansion(value, f"override {item!r}")
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Return a deep copy of `data` with each dotted override set (creating nested dicts)."""
    out = json.loads(json.dumps(data))
    for item in overrides or []:
        keys, value = parse_override(item)
        set_dotted(out, keys, value, f"override {item!r}")
    return out


def set_dotted(data: dict, keys: list[str], value: Any, where: str) -> None:
    """Set `data[k0][k1]...` = value in place, creating missing mappings; a list is indexed by
    number (`stages.1.config.lr`). The one rule for command-line overrides and a stage's `set:`."""
    node: Any = data
    for depth, k in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not k.isdigit() or int(k) >= len(node):
                raise ConfigError(f"{where}: {k!r} is not an index of a list of {len(node)}")
            k = int(k)
        elif last:
            node[k] = value
            return
        elif node.get(k) is None:
            node[k] = {}
        if last:
            node[k] = value
            return
        if not isinstance(node[k], (dict, list)):
            raise ConfigError(f"{where}: {k!r} is a value, not a section")
        node = node[k]


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated field type, recursing into dataclasses."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for a in args:
            try:
                return _coerce(a, value, where)
            except (ConfigError, TypeError, ValueError):
                continue
        raise ConfigError(f"{where}: value {value!r} does not fit {tp}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a section (mapping), got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        items = [_coerce(arg, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (isinstance(value, float) and not math.isfinite(value)) or int(value) != value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        # YAML 1.1 reads `3e-4` (no dot) as a string; accept it as the number it means.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


# Keys that were renamed: the error names the new key
RENAMED = {"generation_batch_size": "decode_batch_size (Engine rows decoded together; TRL's "
                                    "generation_batch_size means completions per rollout)"}


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass `cls` from a nested dict; unknown keys are an error naming the valid ones,
    and every value must lie in its knob's range (`RANGES`)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    renamed = [f"{k} is now {RENAMED[k]}" for k in unknown if k in RENAMED and RENAMED[k].split()[0] in fields]
    if renamed:
        raise ConfigError(f"{where}: {'; '.join(renamed)}")
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    for k, v in kwargs.items():
        check_value(k, v, where, owner=cls.__name__)
    return cls(**kwargs)


# --------------------------------------------------------------------------- value ranges

@dataclasses.dataclass(frozen=True)
class Range:
    """A closed or open interval of allowed values; `why` says what the bounds mean."""
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""

    def __contains__(self, x: float) -> bool:
        return ((x > self.lo) if self.lo_open else (x >= self.lo)) and ((x < self.hi) if self.hi_open else (x <= self.hi))

    def text(self) -> str:
        parts = []
        if self.lo > -math.inf:
            parts.append(f"{'>' if self.lo_open else '>='} {_num(self.lo)}")
        if self.hi < math.inf:
            parts.append(f"{'<' if self.hi_open else '<='} {_num(self.hi)}")
        return " and ".join(parts) + (f" ({self.why})" if self.why else "")


MAX_COUNT = 1e9  # no step, item or token count of a real run comes near; 1e29 is a typo, not a plan
POSITIVE = Range(0, lo_open=True)
NON_NEGATIVE = Range(0)
COUNT = Range(1, MAX_COUNT)
COUNT_OR_0 = Range(0, MAX_COUNT, why="0 has the meaning the field's comment gives")
FRACTION = Range(0, 1)
PROBABILITY = Range(0, 1, lo_open=True, why="a probability mass; 1 = off")
BETA = Range(0, 1, hi_open=True)
SEED = Range(0, 2**32 - 1, why="what torch, numpy and random all accept")

# Every knob of every stage config, by field name (`Class.field` where one class means
# something else by the name). `from_dict` checks them all, so a spec is checked whole before
# its first node, and a single verb before it writes anything. Any float must also be finite.
RANGES: dict[str, Range] = {
    # shared
    "seed": SEED, "batch_size": COUNT, "max_new_tokens": COUNT, "max_bad_fraction": FRACTION,
    "n": COUNT_OR_0, "temperature": Range(0, why="0 = greedy"), "top_p": PROBABILITY, "top_k": COUNT_OR_0,
    "learning_rate": POSITIVE, "lr": POSITIVE, "weight_decay": NON_NEGATIVE, "grad_clip": NON_NEGATIVE,
    "max_grad_norm": NON_NEGATIVE, "warmup_ratio": FRACTION, "generation_batch_size": COUNT,
    # model shape (pretrain; a ladder rung sets them too)
    "n_layer": COUNT, "n_head": COUNT, "n_embd": COUNT, "block_size": COUNT, "dropout": BETA,
    # pretrain
    "seq_len": COUNT, "micro_batch_size": COUNT, "tokens_per_step": Range(1, 1e12),
    "PretrainConfig.max_steps": COUNT, "min_lr": NON_NEGATIVE, "PretrainConfig.warmup_steps": COUNT_OR_0,
    "betas": BETA, "eps": POSITIVE, "eval_every": COUNT_OR_0, "eval_batches": COUNT_OR_0,
    "hellaswag_every": COUNT_OR_0, "hellaswag_items": COUNT, "ckpt_every": COUNT_OR_0, "keep_last": COUNT,
    # SFT (and the SFT part of RFT)
    "val_size": Range(0, MAX_COUNT, why="a fraction below 1 or a count"), "epochs": Range(0, 1e6, lo_open=True),
    "min_lr_ratio": FRACTION, "max_length": COUNT, "grad_accum": COUNT, "checkpoint_every": COUNT_OR_0,
    "keep_checkpoints": COUNT, "SFTConfig.max_steps": COUNT_OR_0, "repeat": COUNT,
    # GRPO (TRL's names and meanings)
    "num_prompts": COUNT_OR_0, "beta": NON_NEGATIVE, "num_generations": Range(2, MAX_COUNT, why="a group needs two"),
    "epsilon": POSITIVE, "epsilon_high": POSITIVE, "num_iterations": COUNT, "max_completion_length": COUNT,
    "per_device_train_batch_size": COUNT, "gradient_accumulation_steps": COUNT,
    "num_train_epochs": Range(0, 1e6, lo_open=True), "GRPOConfig.max_steps": COUNT_OR_0,
    "adam_beta1": BETA, "adam_beta2": BETA, "GRPOConfig.warmup_steps": Range(0, MAX_COUNT),
    "save_steps": COUNT_OR_0, "save_total_limit": COUNT, "GRPOConfig.temperature": POSITIVE,
    # rewards
    "close_abs": NON_NEGATIVE, "close_rel": NON_NEGATIVE, "short_words": COUNT_OR_0,
    "repetition_min_words": COUNT_OR_0, "repetition_count": COUNT,
    # RFT
    "num_questions": COUNT_OR_0, "rounds": COUNT, "num_samples": COUNT, "max_completion_tokens": COUNT_OR_0,
    # evaluations
    "n_per_category": COUNT, "max_items": COUNT_OR_0,
    # prepare
    "n_docs": COUNT, "max_docs": COUNT_OR_0, "bpe_sample_docs": COUNT, "shard_tokens": COUNT,
    "val_fraction": Range(0, 1, hi_open=True), "val_docs": COUNT_OR_0, "workers": Range(1, 4096),
    "chunk_docs": COUNT,
    # command-line knobs (`sample`, `eval compare`, `run --smoke`)
    "n_boot": Range(100, MAX_COUNT, why="fewer resamples give no usable interval"), "mfu": Range(0, 1, lo_open=True, why="a fraction of the GPU's peak"),
}


def check_value(key: str, value: Any, where: str, owner: str | None = None) -> None:
    """`value` of knob `key` (of config class `owner`) is finite and in the knob's range, or a
    ConfigError naming it, its range and what to set. Lists are checked item by item."""
    if isinstance(value, (list, tuple)):
        for v in value:
            check_value(key, v, where, owner)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    rng = RANGES.get(f"{owner}.{key}") or RANGES.get(key)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {key}={value} is not a finite number; give {key} a finite value"
                          + (f" {rng.text()}" if rng else ""))
    if rng is not None and value not in rng:
        raise ConfigError(f"{where}: {key}={_num(value)} is out of range; give {key} {rng.text()}")


def _num(x: float) -> str:
    """A bound or value as a user would write it: 1000000000, 0.5, 1e+29."""
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e16 else f"{x:g}"


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any) -> str:
    """Stable short hash of a resolved config (dataclass or dict): same hash, same run."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_experiment_spec(data: dict) -> bool:
    return isinstance(data.get("stages"), list) and isinstance(data.get("conditions"), dict)


# The spec's `tokenizer:` keys that are PrepareConfig knobs (a bpe-N is trained by prepare's code).
TOKENIZER_PREPARE_KEYS = {"sample_docs": "bpe_sample_docs", "split_digits": "bpe_split_digits"}


def tokenizer_prepare_knobs(tokenizer: dict) -> dict:
    """The PrepareConfig knobs a spec's `tokenizer:` section sets (`sample_docs` -> `bpe_sample_docs`, ...)."""
    return {knob: tokenizer[key] for key, knob in TOKENIZER_PREPARE_KEYS.items() if key in tokenizer}


def spec_prepare_section(spec: dict, where: str) -> dict:
    """An experiment spec's `prepare:` section with the spec's tokenizer, as `domtok run` uses it.

    The spec names the tokenizer once (`tokenizer: {base, sample_docs, split_digits}`) for every condition;
    `domtok prepare SPEC condition=...` prepares one condition's shards with it."""
    if not isinstance(spec.get("prepare"), dict):
        raise ConfigError(f"{where}: the experiment spec has no `prepare:` section")
    out = dict(spec["prepare"])
    tok = spec.get("tokenizer") or {}
    out.setdefault("tokenizer", str(tok.get("base", "gpt2")))
    for knob, value in tokenizer_prepare_knobs(tok).items():
        out.setdefault(knob, value)
    if "token_set" in spec:
        out.setdefault("token_set", spec["token_set"])
    return out


def stage_section(stage: dict, where: str) -> dict:
    """A spec stage's config: inline, or the `<kind>:` section of a preset/file, then `set:` on top.

        config: sft-gsm_sbs          # configs/sft-gsm_sbs.yaml, section `sft:`
        set:
          stages.0.epochs: 2         # a dotted key sets one value, indexing lists by number
          reward: {kind: binary}     # a plain key is deep-merged: mappings key by key, a list replaced whole
    """
    cfg = stage.get("config") or {}
    if isinstance(cfg, str):
        data = load_yaml(cfg)
        if not isinstance(data.get(stage["kind"]), dict):
            raise ConfigError(f"{where}: stage {stage['name']!r}: {cfg} has no `{stage['kind']}:` section")
        cfg = data[stage["kind"]]
    elif not isinstance(cfg, dict):
        raise ConfigError(f"{where}: stage {stage['name']!r}: config must be a mapping or a preset name")
    cfg = json.loads(json.dumps(cfg))  # a copy: `set:` never edits a preset's cached data
    for key, value in (stage.get("set") or {}).items():
        if "." in str(key):
            if any(not part for part in str(key).split(".")):
                raise ConfigError(f"{where}: stage {stage['name']!r}: set key {key!r} has an empty part")
            set_dotted(cfg, str(key).split("."), value, f"{where}: stage {stage['name']!r}: set {key}")
        else:
            cfg = deep_merge(cfg, {key: value})
    return cfg


def deep_merge(base: dict, top: dict) -> dict:
    """`top` over `base`: mappings merge key by key, anything else (lists too) is replaced."""
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(cls: type[T], path: str | os.PathLike | None, overrides: list[str] | None = None,
                section: str | None = None) -> T:
    """Load `cls` from a YAML file, then apply overrides.

    With `section` ("pretrain", "sft", ...) the file may be a stage file holding that section,
    or an experiment spec: then the first stage of that kind is used (`domtok pretrain
    configs/tiny.yaml`), or for `prepare` the spec's shared `prepare:` section."""
    data: dict = {}
    if path is not None:
        data = load_yaml(path)
        if section == "prepare" and is_experiment_spec(data):
            data = spec_prepare_section(data, str(path))
        elif section is not None and is_experiment_spec(data):
            stage = next((st for st in data["stages"] if isinstance(st, dict) and st.get("kind") == section), None)
            if stage is None:
                raise ConfigError(f"{path}: the experiment spec has no `{section}` stage")
            data = stage_section(stage, str(path))
        elif section is not None and section in data and isinstance(data[section], dict):
            data = data[section]
    data = apply_overrides(data, overrides)
    return from_dict(cls, data, where=str(path) if path else "config")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file so that a reader sees either the old content or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_resolved(cfg: Any, out_dir: str | os.PathLike, name: str = "config.yaml") -> str:
    """Save the resolved config beside a stage's outputs; returns its hash (also written)."""
    h = config_hash(cfg)
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    atomic_write_text(Path(out_dir) / name, f"# config_hash: {h}\n" + yaml.safe_dump(data, sort_keys=False))
    return h
