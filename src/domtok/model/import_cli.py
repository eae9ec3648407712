"""`domtok import HF_DIR OUT [--condition C]`: a Hugging Face GPT-2 dir -> native domtok model dir."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hf_dir", help="GPT-2 format dir: config.json (model_type gpt2) + model.safetensors "
                                       "or pytorch_model.bin")
    parser.add_argument("out", help="native model dir to write (replaced atomically)")
    parser.add_argument("--condition", default=None,
                        help="condition whose gpt2 tokenizer to attach (baseline, mul_tokens); needed for the "
                             "reference study's vocab-50349 models, whose files do not say")


def main(args) -> int:
    from domtok.model.hf import import_hf

    out = import_hf(args.hf_dir, args.out, condition=args.condition)
    print(f"imported {args.hf_dir} -> {out}")
    return 0
