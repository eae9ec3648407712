"""`domtok <verb>`: one entry point, no logic.

Each verb lives in one module that provides `add_arguments(parser)` and `main(args)`.
The table below is the whole command line; a module is imported only when its verb runs,
so `domtok --help` stays instant and does not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# verb, module, one line of help
VERBS = [
    ("run", "domtok.pipeline", "run a whole experiment (all conditions, seeds, stages), resumably; default: the tiny CPU study"),
    ("status", "domtok.status", "show the stage x condition progress board of a run directory"),
    ("report", "domtok.report", "write report.md and plots from the results in a run directory"),
    ("plan", "domtok.plan", "seeds a decision needs (fixed and sequential design) and what they cost, from a pilot or --sd"),
    ("inject", "domtok.tokens.inject", "rewrite single-digit products in text into domain tokens"),
    ("tokenize", "domtok.tokens.tokenizer", "print the token ids of a text as JSON"),
    ("tokenizer", "domtok.tokens.build", "build a BPE tokenizer (tokenizer build) or re-write a model dir's tokenizer files (tokenizer fix)"),
    ("prepare", "domtok.data.prepare", "turn a text source into token shards for one condition"),
    ("pretrain", "domtok.train.pretrain_cli", "pretrain a GPT-2 model on token shards (CPU, GPU, torchrun)"),
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
    from domtok import __version__

    parser = argparse.ArgumentParser(
        prog="domtok",
        description="Domain-token experiments on GPT-2-class language models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `domtok VERB --help` for the options of a verb.",
    )
    parser.add_argument("--version", action="version", version=f"domtok {__version__}",
                        help="print domtok's version and exit")
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
    args, extra = parser.parse_known_args(argv)
    # `domtok pretrain X --out Y k=v`: argparse stops collecting positionals at the first option,
    # so overrides after options come back here; they are overrides all the same.
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = list(args.overrides or []) + extra
    elif extra:  # the usage of the (sub-)verb the flag was given to, not domtok's own
        innermost_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.verb:
        parser.print_help()
        return 0
    module = importlib.import_module(args._module)
    from domtok.errors import DomtokError
    from domtok.outdir import release_locks

    try:
        rc = module.main(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the boundary, not at exit
    except BrokenPipeError:
        # the reader of stdout went away (`domtok status RUN | head`): stop quietly, as `cat`
        # does (exit 141 = 128 + SIGPIPE); stdout goes to devnull so the interpreter's final
        # flush does not complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except DomtokError as e:
        print(f"domtok {args.verb}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as e:
        # The error boundary: a file the user named that cannot be read or written. Each verb
        # checks its inputs up front; this catches the rest without a traceback.
        print(f"domtok {args.verb}: error: {_os_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"domtok {args.verb}: interrupted", file=sys.stderr)
        return 130
    finally:
        release_locks()
    return int(rc or 0)


def innermost_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the deepest sub-verb chosen in `args` (`domtok hub push` -> push's parser)."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if chosen not in (subs[0].choices if subs else {}):
            return parser
        parser = subs[0].choices[chosen]


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _os_message(e: BaseException) -> str:
    """`<file>: <what is wrong>; <fix>` for the OS errors a bad path raises."""
    if isinstance(e, UnicodeDecodeError):
        return (f"a file is not valid UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8 "
                "(e.g. iconv -f latin1 -t utf-8)")
    name = getattr(e, "filename", None) or "?"
    fixes = {IsADirectoryError: "is a directory; give a file path",
             NotADirectoryError: "a part of this path is a file, not a directory; give a directory path",
             FileNotFoundError: "not found; check the path",
             FileExistsError: "already exists as a file; give a directory path or remove it",
             PermissionError: "permission denied; choose a path you can write",
             ConnectionError: "network unreachable; check the connection (or work offline)"}
    for cls, fix in fixes.items():
        if isinstance(e, cls):
            return f"{name}: {fix}"
    return f"{name}: {e.strerror or e}; check the path and the disk"


if __name__ == "__main__":
    sys.exit(main())
