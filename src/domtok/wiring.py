"""Wiring a node to its stage: the function that runs a node and its config object.

`stage_call(node, run_dir)` gives (function, config) for any node of the DAG
(`domtok.rundir.build_nodes`) with its inputs wired in: the tokenizer a prepare node uses, the
shards a pretraining reads, the model dir a later stage or an evaluation starts from.
`check_stage_configs(spec)` builds every node's config the same way before anything runs, so
a typo in a stage config is an error at once. `domtok.pipeline` runs what `stage_call` gives,
in one process or under torchrun.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

from domtok.config import ConfigError
from domtok.errors import DomtokError
from domtok.rundir import Node, Spec, build_nodes


def _model_dir(node: Node) -> str:
    return str(node.out_dir / "model")


def stage_call(node: Node, run_dir: Path):
    """(function, config object) that runs `node`: its inputs are wired into the stage config."""
    cfg = dict(node.config)
    if node.kind == "tokenizer":
        from domtok.data.prepare import build_shared_tokenizer
        return build_shared_tokenizer, cfg
    if node.kind == "prepare":
        from domtok.data.prepare import prepare_node_config, run
        tokenizer = json.loads(node.deps[0].manifest_path.read_text())["summary"]["tokenizer"]
        return run, prepare_node_config(cfg, tokenizer, where=f"stage {node.id}")
    if node.kind == "pretrain":
        from domtok.train.pretrain import PretrainConfig, run
        cfg["data_dir"] = str(node.deps[0].out_dir)
        if "match_documents" in cfg:  # the partner condition's shards (rundir.document_partner)
            cfg["match_documents"] = str(node.deps[-1].out_dir)
        cfg.pop("condition")
        return run, _build(PretrainConfig, cfg, node)
    if node.kind in ("sft", "grpo", "rft"):
        mod = importlib.import_module(f"domtok.train.{node.kind}")
        cls = {"sft": "SFTConfig", "grpo": "GRPOConfig", "rft": "RFTConfig"}[node.kind]
        cfg["model"] = _model_dir(node.deps[0])
        return mod.run, _build(getattr(mod, cls), cfg, node)
    # evaluations
    mod = importlib.import_module(f"domtok.eval.{node.kind}")
    cls = {"gsm8k": "GSM8KEvalConfig", "hellaswag": "HellaSwagEvalConfig", "probes": "ProbesConfig"}[node.kind]
    cfg["model"] = _model_dir(node.deps[0])
    return mod.run, _build(getattr(mod, cls), cfg, node)


def check_stage_configs(spec: Spec, where: str = "spec") -> None:
    """Build every node's config object as `stage_call` will, before the first node runs: a typo
    such as `stages.0.config.lrr=1` is an error now, not in a node's log after earlier stages ran."""
    from domtok.config import tokenizer_prepare_knobs
    from domtok.data.prepare import prepare_node_config

    from domtok.tokens.build import parse_bpe_base

    base = str(spec.tokenizer.get("base", "gpt2"))
    if base != "gpt2":
        try:  # the same rule `domtok tokenizer build` applies
            parse_bpe_base(base)
        except DomtokError as e:
            raise ConfigError(f"{where}: tokenizer.base: {e}") from None
    run_dir = Path(spec.runs_dir) / spec.name
    for node in build_nodes(spec, run_dir):
        try:  # a prepare node's tokenizer is the tokenizer node's output: any valid value checks the rest
            if node.kind == "tokenizer":  # its knobs are PrepareConfig's (`tokenizer.sample_docs`, ...)
                prepare_node_config({**spec.prepare, **tokenizer_prepare_knobs(spec.tokenizer)}, "gpt2",
                                    where="tokenizer")
            elif node.kind == "prepare":
                prepare_node_config(node.config, "gpt2", where=f"stage {node.id}")
            else:
                stage_call(node, run_dir)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None


def _build(cls, cfg: dict, node: Node):
    from domtok.config import from_dict

    fields = {f.name for f in dataclasses.fields(cls)}
    # Wiring keys a stage does not use (e.g. `condition` for an evaluation, which reads the
    # condition from the model's tokenizer) are dropped; all other keys are checked by from_dict.
    for k in ("seed", "condition", "inject_user", "token_set"):
        if k in cfg and k not in fields:
            cfg.pop(k)
    return from_dict(cls, cfg, where=f"stage {node.id}")
