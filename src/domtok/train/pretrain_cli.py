"""`domtok pretrain CONFIG [key=value ...] [--out DIR] [--resume] [--condition C]`: the verb around
`domtok.train.pretrain.run`. Apart from the loop because, given an experiment spec and no
data_dir, it prepares the condition's shards as `domtok run` would (`domtok.data.prepare`, which
reads specs through `domtok.rundir`): the loop itself never imports the run-dir machinery."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from domtok.config import config_hash, is_experiment_spec, load_config, load_yaml
from domtok.data.prepare import prepare_condition
from domtok.manifest import clear_manifest, write_verb_manifest
from domtok.outdir import claim_out_dir
from domtok.errors import DomtokError
from domtok.train import common
from domtok.train.pretrain import PretrainConfig, check_config, run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_stage_arguments(parser, "pretrain", "max_steps=100 data_dir=DIR")
    parser.add_argument("--condition", default="baseline",
                        help="with an experiment spec and no data_dir: the condition whose data to prepare")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(PretrainConfig, args.config, args.overrides, section="pretrain")
    check_config(cfg, str(args.config or "pretrain config"))
    out = args.out or os.path.join("runs", "pretrain", config_hash(cfg))
    claim_out_dir(out, what="--out directory")
    if not cfg.data_dir:
        if args.config is None or not is_experiment_spec(load_yaml(args.config)):
            raise DomtokError("no data: set data_dir=DIR (shards from `domtok prepare`), or give an experiment "
                              "spec such as configs/tiny.yaml, whose data is then prepared under --out")
        cfg.data_dir = str(prepare_condition(args.config, args.condition, Path(out) / "data"))
        print(f"pretrain: data of condition {args.condition} prepared in {cfg.data_dir}", flush=True)
    is_main = os.environ.get("RANK", "0") == "0"
    if is_main:
        clear_manifest(out)
    summary = run(cfg, out, resume=True if args.resume else False)
    if is_main:
        write_verb_manifest(out, "pretrain", summary, {"data_dir": str(cfg.data_dir),
                                                       "data_config_hash": summary.get("data_config_hash")})
    return 0
