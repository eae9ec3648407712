"""The command line itself: --version, help text on every sub-verb and argument, a verb's own
usage for an unknown flag, and a quiet exit when the reader of stdout goes away."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import domtok
from domtok.cli import VERBS, build_parser, main

SRC = str(Path(domtok.__file__).resolve().parents[1])


def domtok_cmd(*args, **kw):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "domtok", *args], capture_output=True, text=True, env=env, **kw)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    from importlib.metadata import version

    assert capsys.readouterr().out.strip() == f"domtok {domtok.__version__}" == f"domtok {version('domtok')}"


def _walk(parser: argparse.ArgumentParser, path: list[str]):
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in a._choices_actions}
            for name, sub in a.choices.items():
                yield path + [name], helps.get(name)
                yield from _walk(sub, path + [name])
        else:
            yield path + [a.dest], a.help


@pytest.mark.parametrize("verb", [v for v, _, _ in VERBS])
def test_every_sub_verb_and_argument_has_help(verb):
    parser = build_parser(verb)
    verb_parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[verb]
    missing = [" ".join(path) for path, help in _walk(verb_parser, [verb]) if not help]
    assert not missing, missing


def test_nested_sub_verbs_are_listed_with_help(capsys):
    for verb, names in (("tokenizer", ["build", "fix"]), ("hub", ["push", "pull", "list"]),
                        ("eval", ["gsm8k", "hellaswag", "probes", "compare"])):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        out = "".join(capsys.readouterr().out.split())  # argparse wraps lines (even inside words)
        parser = build_parser(verb)
        verb_parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[verb]
        helps = {path[-1]: help for path, help in _walk(verb_parser, [verb]) if len(path) == 2}
        for n in names:  # each sub-verb with its help text
            assert helps[n] and n + "".join(helps[n].split()) in out, n


@pytest.mark.parametrize("argv,usage", [
    (["status", "runs/x", "--bogus"], "usage: domtok status"),
    (["eval", "gsm8k", "--model", "m", "--bogus"], "usage: domtok eval gsm8k"),
    (["hub", "push", "runs/x", "--repo-prefix", "a/b", "--bogus"], "usage: domtok hub push"),
    (["tokenizer", "fix", "d", "--bogus"], "usage: domtok tokenizer fix"),
])
def test_unknown_flag_prints_the_verbs_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(usage) and "unrecognized arguments: --bogus" in err


def test_closed_pipe_exits_quietly(tmp_path, gpt2_dir):
    big = tmp_path / "big.txt"
    big.write_text("What is 7 times 8? " * 20000)  # ~100K ids of JSON: more than a pipe buffer
    env = {**os.environ, "PYTHONPATH": SRC, "DOMTOK_GPT2_DIR": str(gpt2_dir)}
    r = subprocess.run(["bash", "-c", f'set -o pipefail; "{sys.executable}" -m domtok tokenize - < "{big}" | head -c 5'],
                       capture_output=True, text=True, env=env)
    assert r.stdout == "[2061"
    assert r.stderr == ""  # no "network unreachable", no traceback
    assert r.returncode == 141  # 128 + SIGPIPE, as `cat` gives under pipefail
