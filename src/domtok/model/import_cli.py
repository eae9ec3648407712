"""`domtok import HF_DIR OUT [--condition C]`: a Hugging Face GPT-2 dir -> native domtok model dir."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hf_dir", help="GPT-2 format dir: config.json (model_type gpt2) + model.safetensors "
                                       "or pytorch_model.bin")
    parser.add_argument("out", help="native model dir to write (replaced atomically)")
    parser.add_argument("--force", action="store_true", help="replace OUT when it already holds a domtok output")
    parser.add_argument("--condition", default=None,
                        help="condition whose gpt2 tokenizer to attach (baseline, mul_tokens); needed for the "
                             "reference study's vocab-50349 models, whose files do not say")


def main(args) -> int:
    from pathlib import Path

    from domtok.errors import DomtokError
    from domtok.outdir import claim_out_dir, refuse_source_inside

    if not Path(args.hf_dir).is_dir():
        raise DomtokError(f"{args.hf_dir}: not a directory; point at a Hugging Face GPT-2 model dir")
    refuse_source_inside(args.hf_dir, args.out)
    claim_out_dir(args.out, replace=True, force=args.force, what="import directory")
    from domtok.model.hf import import_hf  # torch: after the checks

    out = import_hf(args.hf_dir, args.out, condition=args.condition)
    print(f"imported {args.hf_dir} -> {out}")
    return 0
