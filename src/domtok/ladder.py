"""A scaling ladder: the same study at several model sizes, and its effect against compute.

A spec's `ladder:` section lists rungs. Each rung names a model shape and a pretraining
token budget, and runs the whole study (every condition x seed x stage x evaluation) under
`runs/<name>/rung-<rung>/`:

    ladder:
      - {name: s, n_layer: 4, n_head: 4, n_embd: 128, tokens: 2457600}
      - {name: m, n_layer: 6, n_head: 6, n_embd: 192, tokens_per_param: 20,
         set: {pretrain: {lr: 2.0e-3}}}          # deep-merged over that stage's config

- `tokens` is the pretraining budget; `tokens_per_param` multiplies the model's total
  parameter count (embeddings included, as Chinchilla counts them) at the tokenizer's
  nominal vocabulary (gpt2: 50,257 base ids; bpe-N: N), which is known before any node runs,
  so the budget is part of the node hashes. Steps = budget / tokens_per_step, rounded to
  the nearest whole step; the report shows the tokens actually trained.
- Every pretrain stage of the rung gets the rung's shape and steps; `set:` changes other keys
  of any stage for this rung only (a smaller learning rate for a larger model, ...).
- Rungs share the tokenizer and the prepared corpus of each condition (`<condition>/prepare/`
  at the top of the run dir): size `prepare` for the largest budget. A rung that needs other
  data gives `prepare:` (deep-merged over the spec's), and gets its own prepare nodes.
- Node hashes include the rung's name, and a rung's nodes depend only on its own configs
  and the shared tokenizer/prepare nodes, so adding a rung re-runs nothing else.

Reading a finished ladder (per-rung compute, the headline effects against training FLOPs,
a trend fitted in log-compute) is the report's: domtok.report.ladder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from domtok.config import ConfigError, check_path_name, deep_merge

RUNG_KEYS = ("name", "n_layer", "n_head", "n_embd", "tokens", "tokens_per_param", "set", "prepare")
GPT2_N_BASE = 50257  # GPT-2's byte-level BPE: 50,256 merges + bytes, and <|endoftext|>


@dataclass
class Rung:
    name: str
    n_layer: int
    n_head: int
    n_embd: int
    tokens: int | None = None            # pretraining budget, or
    tokens_per_param: float | None = None  # budget = this x total parameters
    set: dict = field(default_factory=dict)      # stage name -> config keys for this rung
    prepare: dict = field(default_factory=dict)  # prepare keys for this rung's own corpus
    # resolved by `resolve_rung` against the spec:
    params: int = 0                      # total parameters at the nominal vocabulary
    budget: int = 0                      # pretraining tokens asked for
    steps: int = 0                       # pretraining optimizer steps
    stage_configs: dict = field(default_factory=dict)  # stage name -> config dict of this rung
    prepare_config: dict = field(default_factory=dict)

    @property
    def dir_name(self) -> str:
        return f"rung-{self.name}"

    def shape(self) -> dict:
        return {"n_layer": self.n_layer, "n_head": self.n_head, "n_embd": self.n_embd}


# --------------------------------------------------------------------------- the spec section

def parse_ladder(data, where: str, stage_names: list[str]) -> list[Rung]:
    """The spec's `ladder:` list as Rungs (not yet resolved); [] when the spec has none."""
    if data is None:
        return []
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where}: `ladder` must be a non-empty list of rungs "
                          "({name, n_layer, n_head, n_embd, tokens | tokens_per_param})")
    rungs, names = [], set()
    for i, r in enumerate(data):
        at = f"{where}: ladder[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(f"{at}: a rung is a mapping {{name, n_layer, n_head, n_embd, tokens | tokens_per_param}}")
        unknown = sorted(set(r) - set(RUNG_KEYS))
        if unknown:
            raise ConfigError(f"{at}: unknown keys {unknown}; a rung may set {list(RUNG_KEYS)}")
        name = check_path_name(str(r.get("name", f"r{i}")), at, "rung")
        if name in names:
            raise ConfigError(f"{at}: rung name {name!r} is used twice")
        names.add(name)
        shape = {}
        for k in ("n_layer", "n_head", "n_embd"):
            v = r.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{at} ({name}): `{k}` must be a positive integer, got {v!r}")
            shape[k] = v
        if shape["n_embd"] % shape["n_head"]:
            raise ConfigError(f"{at} ({name}): n_embd={shape['n_embd']} is not divisible by n_head={shape['n_head']}")
        tokens, tpp = r.get("tokens"), r.get("tokens_per_param")
        if (tokens is None) == (tpp is None):
            raise ConfigError(f"{at} ({name}): give exactly one of `tokens` and `tokens_per_param`")
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, (int, float)) or tokens <= 0
                                   or tokens != int(tokens)):
            raise ConfigError(f"{at} ({name}): `tokens` must be a positive whole number, got {tokens!r}")
        if tpp is not None and (isinstance(tpp, bool) or not isinstance(tpp, (int, float)) or tpp <= 0):
            raise ConfigError(f"{at} ({name}): `tokens_per_param` must be a positive number, got {tpp!r}")
        sets = r.get("set") or {}
        if not isinstance(sets, dict) or any(not isinstance(v, dict) for v in sets.values()):
            raise ConfigError(f"{at} ({name}): `set` maps stage names to config keys, e.g. set: {{pretrain: {{lr: 1e-3}}}}")
        bad = sorted(set(sets) - set(stage_names))
        if bad:
            raise ConfigError(f"{at} ({name}): `set` names unknown stages {bad}; stages: {stage_names}")
        prepare = r.get("prepare") or {}
        if not isinstance(prepare, dict):
            raise ConfigError(f"{at} ({name}): `prepare` must be a mapping of prepare keys")
        rungs.append(Rung(name=name, tokens=None if tokens is None else int(tokens),
                          tokens_per_param=None if tpp is None else float(tpp), set=sets, prepare=prepare, **shape))
    return rungs


def parse_learns(data, where: str, evals_after: list[str], benchmarks: dict) -> dict:
    """The spec's `learns:` section: what "the models learn what is tested" means, checked by
    the report for every condition (and every rung of a ladder), as the mean over seeds:

        learns:
          stage: sft
          minimum: {probes.accuracy_mul_table: 0.90, probes.accuracy_addition: 0.50}
    """
    if data is None:
        return {}
    at = f"{where}: learns"
    if not isinstance(data, dict) or set(data) != {"stage", "minimum"} or not isinstance(data["minimum"], dict):
        raise ConfigError(f"{at}: give `stage: NAME` and `minimum: {{BENCHMARK.METRIC: value}}`")
    if data["stage"] not in evals_after:
        raise ConfigError(f"{at}: stage {data['stage']!r} is not evaluated; evals.after: {evals_after}")
    for key, v in data["minimum"].items():
        bench = str(key).split(".", 1)[0]
        if "." not in str(key) or bench not in benchmarks:
            raise ConfigError(f"{at}: {key!r} is not BENCHMARK.METRIC of an enabled benchmark ({sorted(benchmarks)})")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{at}: minimum of {key} must be a number, got {v!r}")
    return {"stage": data["stage"], "minimum": {str(k): float(v) for k, v in data["minimum"].items()}}


def nominal_vocab_size(tokenizer: dict, token_set: str) -> int:
    """The model's embedding size for the spec's tokenizer, before the tokenizer exists: the
    base ids asked for (gpt2: 50,257; bpe-N: N; a saved tokenizer dir: its own), padded, plus
    the token set's ids, padded (the layout of `domtok.tokens.tokenizer.Tokenizer`)."""
    from pathlib import Path

    from domtok.tokens.sets import get_token_set
    from domtok.tokens.tokenizer import load_tokenizer, round_up

    base = str(tokenizer.get("base", "gpt2"))
    if base == "gpt2":
        n_base = GPT2_N_BASE
    elif base.startswith("bpe-") and base[4:].isdigit():
        n_base = int(base[4:])
    elif Path(base).is_dir():
        return load_tokenizer(base, "baseline").vocab_size
    else:
        raise ConfigError(f"tokenizer base {base!r}: a ladder needs gpt2, bpe-N or a tokenizer directory")
    return round_up(round_up(n_base) + len(get_token_set(token_set).tokens))


def resolve_rung(rung: Rung, stages, prepare: dict, vocab_size: int, where: str) -> Rung:
    """Fill in the rung's stage configs, parameter count, budget and steps.

    `stages` are the spec's StageSpecs (name, kind, config)."""
    import torch

    from domtok.config import from_dict
    from domtok.train.pretrain import PretrainConfig, build_model

    at = f"{where}: ladder rung {rung.name!r}"
    configs = {st.name: deep_merge(st.config, rung.set.get(st.name, {})) for st in stages}
    pretrain = [st.name for st in stages if st.kind == "pretrain"]
    if not pretrain:
        raise ConfigError(f"{at}: the spec has no pretrain stage, so a rung's shape and budget have nowhere to go")
    for name in pretrain:
        cfg = {**configs[name], **rung.shape()}
        pc = from_dict(PretrainConfig, {k: v for k, v in cfg.items() if k not in ("condition", "seed")},
                       where=f"{at}, stage {name}")
        with torch.device("meta"):  # the count only: no memory, no initialisation cost
            params = build_model(pc, vocab_size).num_params(non_embedding=False)
        budget = rung.tokens if rung.tokens is not None else round(rung.tokens_per_param * params)
        steps = max(1, round(budget / pc.tokens_per_step))
        if pc.warmup_steps >= steps:
            raise ConfigError(f"{at}: {steps} pretraining steps ({budget:,} tokens / {pc.tokens_per_step:,} per step) "
                              f"but warmup_steps={pc.warmup_steps}; set ladder rung `set: {{{name}: {{warmup_steps: N}}}}` "
                              "with N below the steps, or give the rung more tokens")
        cfg["max_steps"] = steps
        configs[name] = cfg
        if name == pretrain[0]:
            rung.params, rung.budget, rung.steps = params, budget, steps
    rung.stage_configs = configs
    rung.prepare_config = deep_merge(prepare, rung.prepare)
    return rung


def ladder_summary(rungs: list[Rung]) -> list[dict]:
    """What the spec asks of each rung (before anything runs): for `domtok run`'s first lines."""
    return [{"rung": r.name, **r.shape(), "params": r.params, "tokens": r.budget, "steps": r.steps,
             "tokens_per_param": r.budget / r.params if r.params else math.nan} for r in rungs]
