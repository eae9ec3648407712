"""`domtok <verb>`: one entry point, no logic.

Each verb lives in one module that provides `add_arguments(parser)` and `main(args)`.
The table below is the whole command line; a module is imported only when its verb runs,
so `domtok --help` stays instant and does not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb, module, one line of help
VERBS = [
    ("run", "domtok.pipeline", "run a whole experiment (all conditions, seeds, stages), resumably; default: the tiny CPU study"),
    ("status", "domtok.status", "show the stage x condition progress board of a run directory"),
    ("report", "domtok.report", "write report.md and plots from the results in a run directory"),
    ("inject", "domtok.tokens.inject", "rewrite single-digit products in text into domain tokens"),
    ("tokenize", "domtok.tokens.tokenizer", "print the token ids of a text as JSON"),
    ("tokenizer", "domtok.tokens.build", "build a BPE tokenizer (tokenizer build) or re-write a model dir's tokenizer files (tokenizer fix)"),
    ("prepare", "domtok.data.prepare", "turn a text source into token shards for one condition"),
    ("pretrain", "domtok.train.pretrain", "pretrain a GPT-2 model on token shards (CPU, GPU, torchrun)"),
    ("export", "domtok.model.export_cli", "export a checkpoint to a Hugging Face GPT2LMHeadModel directory"),
    ("import", "domtok.model.import_cli", "import a GPT-2-format Hugging Face directory into a domtok checkpoint"),
    ("sample", "domtok.sample", "sample answers from a model (single question or --interactive)"),
    ("eval", "domtok.eval.cli", "evaluate a model: gsm8k, hellaswag, probes; compare two runs"),
    ("sft", "domtok.train.sft", "supervised fine-tuning (instruct, gsm8k, gsm_sbs, curriculum, tinygsm, jsonl)"),
    ("grpo", "domtok.train.grpo", "GRPO reinforcement learning with binary, shaped or custom rewards"),
    ("rft", "domtok.train.rft", "rejection-sampling fine-tuning"),
    ("hub", "domtok.hub", "push, pull and list run artifacts on the Hugging Face Hub"),
]


def build_parser(load_verb: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="domtok",
        description="Domain-token experiments on GPT-2-class language models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `domtok VERB --help` for the options of a verb.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, module, help_line in VERBS:
        p = sub.add_parser(verb, help=help_line, description=help_line)
        p.set_defaults(_module=module)
        if verb == load_verb:  # only the chosen verb's module is imported
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    known = {v for v, _, _ in VERBS}
    parser = build_parser(verb if verb in known else None)
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 0
    module = importlib.import_module(args._module)
    from domtok.errors import DomtokError

    try:
        rc = module.main(args)
    except DomtokError as e:
        print(f"domtok {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"domtok {args.verb}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
