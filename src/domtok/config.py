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
import os
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


def load_yaml(path: str | os.PathLike) -> dict:
    path = resolve_config_path(path)
    if Path(path).is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file; give a YAML file or a preset name")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the config as UTF-8") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
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
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
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
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
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
    """Build dataclass `cls` from a nested dict; unknown keys are an error naming the valid ones."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    renamed = [f"{k} is now {RENAMED[k]}" for k in unknown if k in RENAMED and RENAMED[k].split()[0] in fields]
    if renamed:
        raise ConfigError(f"{where}: {'; '.join(renamed)}")
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


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
