"""The calculator: GSM8K's own annotations evaluate to their written results, and the
whitelist refuses everything that is not small arithmetic."""

from __future__ import annotations

import json
import re

import pytest

from domtok.calculator import MAX_EXPR_CHARS, evaluate, format_number, open_annotation

VALUES = {"<MUL_6_9_54>": 54, "<MUL_7_8_56>": 56}


@pytest.mark.parametrize("expr, want", [
    ("1+2", 3), ("48/2", 24), ("6/3", 2), ("10/4", 2.5), ("2*.5", 1), ("(1+2)*3", 9),
    ("-3+1", -2), ("−3+1", -2), ("7 × 8", 56), ("10 ÷ 4", 2.5), ("1,000*2", 2000),
    ("<MUL_6_9_54>+6", 60), ("<MUL_6_9_54>*<MUL_7_8_56>", 54 * 56), ("-(<MUL_7_8_56>)", -56),
    (" 3 ", 3), ("0.1+0.2", 0.30000000000000004),
])
def test_arithmetic(expr, want):
    got = evaluate(expr, VALUES)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("expr", [
    "__import__('os')", "__import__('os').system('true')", "os", "x+1", "(1).real", "abs(-1)",
    "2**10", "2**2**2**2**2", "9**9**9", "10 % 3", "7 // 2", "1 << 40", "1 < 2", "1 if 1 else 2",
    "'a'*3", "[1, 2]", "True+1", "1j*2", "lambda: 1", "1; 2", "1/0", "1e300*1e300",
    "9" * 30, "1" + "*9" * 30, "(" * 200 + "1" + ")" * 200, "1+" * (MAX_EXPR_CHARS // 2) + "1",
    "<MUL_1_1_2>+1",  # an unknown domain token
    "", "   ", "1+", "=", "1 2",
])
def test_whitelist_rejects(expr):
    assert evaluate(expr, VALUES) is None


def test_rejects_non_strings():
    assert evaluate(None, VALUES) is None  # type: ignore[arg-type]
    assert evaluate(b"1+1", VALUES) is None  # type: ignore[arg-type]


def test_format_number():
    assert [format_number(v) for v in (54, 2.5, 100 / 3, 0.125, 2.0, -0.5, 1e-9)] == \
        ["54", "2.5", "33.3333", "0.125", "2", "-0.5", "0"]


def test_open_annotation():
    assert open_annotation("so <<48/2=") == "48/2"
    assert open_annotation("a <<<MUL_6_9_54>+6=") == "<MUL_6_9_54>+6"
    assert open_annotation("<<6*9=54>> then =") is None
    assert open_annotation("<<6*9=54>>") is None
    assert open_annotation("x = 3 =") is None
    assert open_annotation("<<1\n+2=") is None


def test_gsm8k_annotations_reproduce_their_results(gsm8k_dir):
    """Every `<<expr=result>>` of the first 300 GSM8K training solutions: the calculator's
    value equals the written result (GSM8K's own calculator produced them)."""
    n = bad = 0
    with open(gsm8k_dir / "train.jsonl") as f:
        for line, _ in zip(f, range(300)):
            for expr, result in re.findall(r"<<([^=<>]*)=([^<>]*)>>", json.loads(line)["answer"]):
                n += 1
                got = evaluate(expr, {})
                bad += got is None or abs(got - float(result)) > 0.01 * max(1.0, abs(float(result)))
    assert n > 500
    assert bad / n < 0.01, f"{bad}/{n} annotations disagree"
