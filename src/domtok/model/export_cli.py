"""`domtok export CKPT OUT_DIR`: a domtok model dir or checkpoint -> Hugging Face GPT2LMHeadModel dir."""

from __future__ import annotations

import argparse
from pathlib import Path

from domtok.errors import DomtokError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", help="native model dir (e.g. run/model), checkpoint dir (checkpoints/step_000100) "
                                     "or a run dir (its latest complete checkpoint)")
    parser.add_argument("out_dir", help="where to write the Hugging Face dir (replaced atomically)")
    parser.add_argument("--force", action="store_true", help="replace OUT_DIR when it already holds a domtok output")


def main(args) -> int:
    from domtok.outdir import claim_out_dir, refuse_source_inside

    src = Path(args.ckpt)
    refuse_source_inside(src, args.out_dir)  # before torch is imported: a refusal is instant
    claim_out_dir(args.out_dir, replace=True, force=args.force, what="export directory")
    from domtok.model.checkpoint import latest_checkpoint
    from domtok.model.hf import export_hf

    if not (src / "config.json").exists():
        # a run dir: prefer its final model, else its newest complete checkpoint
        latest = latest_checkpoint(src)
        if (src / "model" / "config.json").exists():
            src = src / "model"
        elif latest is not None:
            src = latest
        else:
            raise DomtokError(f"{src}: no config.json, model/ or complete checkpoint; point at a model dir")
    out = export_hf(src, args.out_dir)
    print(f"exported {src} -> {out} (load with transformers.GPT2LMHeadModel.from_pretrained)")
    return 0
