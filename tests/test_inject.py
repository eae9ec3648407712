"""The injector never changes what a text means (DESIGN invariant 3: numbers are sacred).

Explicit cases cover every known failure of the reference injector; hypothesis checks the
general properties against independent references: the multiset of numbers (tokens written
out as `a × b = c`), the value of arithmetic (an exact Fraction evaluator written here, with
tokens read as their values), the GSM8K calculator on annotations, idempotence, strict ⊆ weak.
"""

from __future__ import annotations

import ast
import io
import json
import operator
import re
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domtok import cli
from domtok.calculator import evaluate
from domtok.errors import DomtokError
from domtok.tokens.inject import (
    InjectResult,
    annotations_well_formed,
    check_annotations,
    expand_domain_tokens,
    inject_batch,
    inject_domain_tokens,
    iter_annotations,
)
from domtok.tokens.sets import fact_token_set, get_token_set

MUL = get_token_set("mul")
VALUES = {t.text: t.value for t in MUL.tokens}
TOKEN_RE = re.compile(r"<[A-Z]+_\d+_\d+_\d+>")
NUMBER_RE = re.compile(r"\.?[0-9]+(?:[.,][0-9]+)*")   # `.5` is a number too


def weak(text, **kw):
    return inject_domain_tokens(text, mode="weak", **kw).text


def strict(text, **kw):
    return inject_domain_tokens(text, mode="strict", **kw).text


# --------------------------------------------------------------------------- explicit cases

# (text, weak result, strict result); None = unchanged
CASES = [
    # the written forms
    ("6*9", "<MUL_6_9_54>", None),
    ("6 * 9", "<MUL_6_9_54>", None),
    ("6×9", "<MUL_6_9_54>", None),
    ("6 x 9", None, None),                                 # separator-like forms: products only with `= c`
    ("6 X 9", None, None),
    ("6·9", None, None),
    ("6 · 9 = 54", "<MUL_6_9_54>", "<MUL_6_9_54>"),
    ("6⋅9=54", "<MUL_6_9_54>", "<MUL_6_9_54>"),
    ("6 ∙ 9 = 54", "<MUL_6_9_54>", "<MUL_6_9_54>"),
    ("3 x 7 = 21", "<MUL_3_7_21>", "<MUL_3_7_21>"),
    ("3 X 7 = 21", "<MUL_3_7_21>", "<MUL_3_7_21>"),
    ("Jun 3 · 5 min read", None, None),
    ("Page 2 · 3 of 10", None, None),
    ("a 4 x 8 sheet of plywood", None, None),
    ("The score was 2 x 3", None, None),
    ("The score was 2 x 3 = 6", "The score was <MUL_2_3_6>", "The score was <MUL_2_3_6>"),
    ("3 x 7 = 22", None, None),
    ("1 + 2 x 3 = 7", None, None),                         # no `= c` of its own: stays
    ("10 - 6·9", None, None),
    ("6 x 9 xylophones", None, None),
    ("<<100-6·9=46>>46", None, None),
    ("eat 1 1/2 rolls each, 8 x 1 1/2 = 12 rolls", None, None),   # GSM8K train; old: `<MUL_1_8_8> 1/2 = 12`
    ("6 × 9 = 54", "<MUL_6_9_54>", "<MUL_6_9_54>"),
    ("6*9=54", "<MUL_6_9_54>", "<MUL_6_9_54>"),
    ("So 6 x 9 = 54 apples.", "So <MUL_6_9_54> apples.", "So <MUL_6_9_54> apples."),
    ("9 × 6", "<MUL_6_9_54>", None),                      # canonical order
    ("9 × 6 = 54", "<MUL_6_9_54>", "<MUL_6_9_54>"),
    ("1 * 1", "<MUL_1_1_1>", None),
    # a wrong or unclear result leaves the whole span alone
    ("6 × 9 = 55", None, None),
    ("6*9 = 54.5", None, None),
    ("6*9 = 54,000", None, None),
    ("6*9 = 54*2", None, None),
    ("6*9 = 54^2", None, None),
    ("6*9 = 540", None, None),
    ("6*9 = -54", None, None),
    ("6*9 = $54", None, None),
    ("6*9 = x", None, None),
    ("1+6*9 = 55", "1+<MUL_6_9_54> = 55", None),          # the result belongs to the sum: bare product
    ("1+6*9 = 54", "1+<MUL_6_9_54> = 54", None),          # a wrong sum stays exactly as wrong
    ("1+6*9 = ?", None, None),                             # a question: the token would leak 54
    ("10 × 15 + 2 × 5 = 150 + 10", "10 × 15 + <MUL_2_5_10> = 150 + 10", None),  # GSM-SBS steps
    ("6*9 == 54", "<MUL_6_9_54> == 54", None),             # a comparison, value kept
    # digits of larger numbers, decimals, thousands, versions, times, exponents
    ("105 × 8", None, None),
    ("105 × 8 = 840", None, None),
    ("0.5*4", None, None),
    (".5*4", None, None),
    ("6*9.5", None, None),
    ("6*9,000", None, None),
    ("1,6*9", None, None),
    ("1920x1080", None, None),
    ("1920 x 1080", None, None),
    ("1.6*9", None, None),
    ("6*9:30", None, None),
    ("6*9e3", None, None),
    ("6e3*9", None, None),
    ("6*10", None, None),
    ("16*9", None, None),
    ("0*9", None, None),
    # precedence: the token must stand for a complete sub-expression
    ("6*9^2", None, None),
    ("6*9**2", None, None),
    ("2^6*9", None, None),
    ("2**6*9", None, None),
    ("6*9/3", None, None),
    ("8/2*3", None, None),
    ("6*9%", None, None),
    ("6*9!", None, None),
    ("6*9 != 55", "<MUL_6_9_54> != 55", None),
    ("2*3*4", None, None),
    ("2 x 3 x 4", None, None),
    ("2*3*4 = 24", None, None),
    ("x*3*4", None, None),
    ("1+6*9", "1+<MUL_6_9_54>", None),
    ("2*3+4", "<MUL_2_3_6>+4", None),
    ("10-6*9", "10-<MUL_6_9_54>", None),
    ("10 - 6*9", "10 - <MUL_6_9_54>", None),
    ("(6*9)", "(<MUL_6_9_54>)", None),
    ("(6*9)^2", "(<MUL_6_9_54>)^2", None),
    ("2(6*9)", "2(<MUL_6_9_54>)", None),
    ("6*9(2)", None, None),
    ("(6 × 9 = 54)", "(<MUL_6_9_54>)", "(<MUL_6_9_54>)"),
    ("x = 6*9 = 54", "x = <MUL_6_9_54>", "x = <MUL_6_9_54>"),
    # signs and money
    ("-6*9", None, None),
    ("(-2*3)", None, None),
    ("x = -6*9", None, None),
    ("-6*9 = -54", None, None),
    ("$6*9", "$<MUL_6_9_54>", None),
    # algebra, code, dimensions, hex
    ("3x4y", None, None),
    ("3 x 4y", None, None),
    ("2x + 3", None, None),
    ("2x4 lumber", None, None),
    ("a 4x4 truck", None, None),
    ("0x4", None, None),
    ("x = 3*4", "x = <MUL_3_4_12>", None),
    ("x6*9", None, None),
    ("6*9x", None, None),
    ("var_6*9", None, None),
    ("box 6*9", "box <MUL_6_9_54>", None),
    ("6 * 9 xylophones", "<MUL_6_9_54> xylophones", None),
    # no answers leaked into questions
    ("What is 6*9?", None, None),
    ("What is 6 x 9 ?", None, None),
    ("6*9 = ?", None, None),
    ("6*9=", None, None),
    # several facts, newlines, words off by default
    ("2*3 and 4*5\n7 x 8 = 56", "<MUL_2_3_6> and <MUL_4_5_20>\n<MUL_7_8_56>", "2*3 and 4*5\n<MUL_7_8_56>"),
    ("2 x 3 and 4·5\n7 x 8 = 56", "2 x 3 and 4·5\n<MUL_7_8_56>", "2 x 3 and 4·5\n<MUL_7_8_56>"),
    ("6 times 9", None, None),
    # GSM8K calculator annotations stay well formed and evaluable
    ("9 * 2 = <<9*2=18>>18", "<MUL_2_9_18> = <<<MUL_2_9_18>=18>>18", "<MUL_2_9_18> = <<<MUL_2_9_18>=18>>18"),
    ("She paid 9 * 2 = $<<9*2=18>>18.", "She paid <MUL_2_9_18> = $<<<MUL_2_9_18>=18>>18.",
     "She paid <MUL_2_9_18> = $<<<MUL_2_9_18>=18>>18."),
    ("<<6*9=54>>54", "<<<MUL_6_9_54>=54>>54", "<<<MUL_6_9_54>=54>>54"),
    ("<<6*9=55>>55", None, None),
    ("<<100-6*9=46>>46", "<<100-<MUL_6_9_54>=46>>46", None),
    ("<<2*3*4=24>>24", None, None),
    ("<<6*9/3=18>>18", None, None),
    ("<<12*2=24>>24", None, None),
    ("12 x 2 = <<12*2=24>>24", None, None),
    ("1 + 2 * 3 = <<1+2*3=7>>7", "1 + <MUL_2_3_6> = <<1+<MUL_2_3_6>=7>>7", None),
    ("9 * 2 = <<9*2+1=19>>19", "9 * 2 = <<<MUL_2_9_18>+1=19>>19", None),
    ("9 * 2 = <<18=18>>18", "<MUL_2_9_18> = <<18=18>>18", "<MUL_2_9_18> = <<18=18>>18"),
    ("2 * 3 = 6 * 1", "2 * 3 = <MUL_1_6_6>", None),
    ("3 * 2 * 2 = <<3*2*2=12>>12", None, None),
    ("<<<MUL_2_3_6>*4=24>>24", None, None),                # already injected: left as is
    ("2 * 3 = <<2*3=6>>6 and 4 x 5 = $<<4*5=20>>20\n#### 26",
     "<MUL_2_3_6> = <<<MUL_2_3_6>=6>>6 and <MUL_4_5_20> = $<<<MUL_4_5_20>=20>>20\n#### 26",
     "<MUL_2_3_6> = <<<MUL_2_3_6>=6>>6 and <MUL_4_5_20> = $<<<MUL_4_5_20>=20>>20\n#### 26"),
    # spacing
    ("6  *  9", "<MUL_6_9_54>", None),
    ("6\t×\t9 = 54", "<MUL_6_9_54>", "<MUL_6_9_54>"),
    ("6\n*\n9", None, None),
    ("6 * 9 = 54 = 50 + 4", "<MUL_6_9_54> = 50 + 4", "<MUL_6_9_54> = 50 + 4"),
]


@pytest.mark.parametrize("text,want_weak,want_strict", CASES)
def test_explicit_cases(text, want_weak, want_strict):
    assert weak(text) == (text if want_weak is None else want_weak)
    assert strict(text) == (text if want_strict is None else want_strict)


@pytest.mark.parametrize("text,want", [
    ("6 times 9", "<MUL_6_9_54>"),
    ("6 multiplied by 9", "<MUL_6_9_54>"),
    ("6 times 9 is 54.", "<MUL_6_9_54>."),
    ("6 times 9 equals 54", "<MUL_6_9_54>"),
    ("6 times 9 is 55", "6 times 9 is 55"),
    ("6 times 9 is what", "6 times 9 is what"),
    ("What is 6 times 9?", "What is 6 times 9?"),
    ("2 times 3 times 4", "2 times 3 times 4"),
    ("I went 10 times 9 days", "I went 10 times 9 days"),
    ("six times nine", "six times nine"),
    ("6 x 9 = <<6*9=54>>54", "<MUL_6_9_54> = <<<MUL_6_9_54>=54>>54"),
])
def test_word_forms(text, want):
    assert weak(text, word_forms=True) == want


def test_counts_and_batch():
    r = inject_domain_tokens("2*3, 3*2 and 9 * 2 = <<9*2=18>>18")
    assert isinstance(r, InjectResult)
    assert r.text == "<MUL_2_3_6>, <MUL_2_3_6> and <MUL_2_9_18> = <<<MUL_2_9_18>=18>>18"
    assert r.count == 4
    assert r.per_token == Counter({"<MUL_2_3_6>": 2, "<MUL_2_9_18>": 2})
    out = inject_batch(["6*9", "no facts here", "7 x 8 = 56"], mode="strict")
    assert [o.text for o in out] == ["6*9", "no facts here", "<MUL_7_8_56>"]
    assert [o.count for o in out] == [0, 0, 1]
    assert inject_domain_tokens("plain text").per_token == Counter()
    prose = "Six apples and 9 pears, no products here."
    assert inject_domain_tokens(prose).text is prose      # the fast path returns the text itself


def test_expand_domain_tokens():
    assert expand_domain_tokens("a <MUL_6_9_54> b <MUL_9_6_54>") == "a 6 × 9 = 54 b 6 × 9 = 54"
    assert expand_domain_tokens("<MUL_6_9_55> <MUL_06_9_54>") == "<MUL_6_9_55> <MUL_06_9_54>"


def test_bad_arguments():
    with pytest.raises(DomtokError, match="mode"):
        inject_domain_tokens("6*9", mode="medium")
    with pytest.raises(DomtokError, match="unknown token set"):
        inject_domain_tokens("6*9", token_set="nope")


def test_generic_over_the_sets_op():
    """An addition set works with the same rules, with `+`'s (lower) precedence."""
    add = fact_token_set("add", "ADD", "+", operator.add, range(0, 10))
    def w(t):
        return inject_domain_tokens(t, token_set=add).text
    assert w("3+4") == "<ADD_3_4_7>"
    assert w("4 + 3 = 7") == "<ADD_3_4_7>"
    assert w("0+4") == "<ADD_0_4_4>"
    assert w("(3+4)*2") == "(<ADD_3_4_7>)*2"
    assert w("x = 3+4") == "x = <ADD_3_4_7>"
    for same in ["2*3+4", "3+4*2", "5-3+4", "1+2+3", "3+4/2", "13+4", "3+4 = 8", "3+4.5", "3 x 4"]:
        assert w(same) == same, same
    assert inject_domain_tokens("3 plus 4", token_set=add, word_forms=True).text == "<ADD_3_4_7>"


def test_annotation_checker_catches_reference_bug():
    assert annotations_well_formed("9 * 2 = <<9*2=18>>18")
    assert annotations_well_formed("<MUL_2_9_18> = <<<MUL_2_9_18>=18>>18")
    assert annotations_well_formed("<<100-<MUL_6_9_54>=46>>46")
    # what the reference injector produced
    assert check_annotations("<MUL_2_9_18> = <<<MUL_2_9_18>>>$18")
    assert not annotations_well_formed("<<9*2=19>>19")
    assert not annotations_well_formed("<<9*2=18 and more")
    assert list(iter_annotations("a <<<MUL_2_9_18>+1=19>>19")) == [("<MUL_2_9_18>+1", "19")]


# --------------------------------------------------------------------------- CLI

def test_cli(capsys, monkeypatch):
    assert cli.main(["inject", "9 × 6 = 54 and 2*3"]) == 0
    assert capsys.readouterr().out == "<MUL_6_9_54> and <MUL_2_3_6>\n"
    assert cli.main(["inject", "--mode", "strict", "--stats", "9 × 6 = 54 and 2*3"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "<MUL_6_9_54> and 2*3\n"
    assert json.loads(cap.err.strip().splitlines()[-1]) == {"count": 1, "per_token": {"<MUL_6_9_54>": 1}}
    monkeypatch.setattr("sys.stdin", io.StringIO("6 times 9\n"))
    assert cli.main(["inject", "--word-forms", "-"]) == 0
    assert capsys.readouterr().out == "<MUL_6_9_54>\n"
    assert cli.main(["inject", "--expand", "6*9"]) == 0
    assert capsys.readouterr().out == "6 × 9 = 54\n"
    assert cli.main(["inject", "--token-set", "nope", "6*9"]) == 2
    assert "unknown token set" in capsys.readouterr().err


# --------------------------------------------------------------------------- properties

def numbers(text: str) -> Counter:
    return Counter(NUMBER_RE.findall(text))


def assert_numbers_preserved(original: str, result: InjectResult):
    """Writing each token out as `a × b = c` gives back every number of the original text;
    the only new numbers are the values of the injected tokens (bare `a × b` gained `= c`)."""
    # spaces around each expansion, so a token glued to a digit (`1<MUL_5_8_40>`) shows up
    expanded = TOKEN_RE.sub(lambda m: " " + expand_domain_tokens(m.group(0)) + " ", result.text)
    before, after = numbers(original), numbers(expanded)
    assert not (before - after), (original, result.text, expanded)
    injected_values = Counter(str(VALUES[t]) for t in result.per_token.elements())
    assert not ((after - before) - injected_values), (original, result.text, expanded)


NUMBER_PIECES = st.one_of(
    st.integers(0, 12).map(str),
    st.sampled_from(["105", "1920", "1080", "0.5", "9.5", "1.6", "9,000", "1,6", "-6", "-2", "54", "18", "6e3"]),
)
OP_PIECES = st.sampled_from(["*", " * ", "×", " × ", " x ", "x", " X ", "·", "/", "+", " + ", "-", " - ",
                             "^", "**", "%", "!", " = ", "=", " == ", "?", "(", ")", ", ", ".", " "])
WORD_PIECES = st.sampled_from(["x", "y", "e", "box", " times ", " lumber", "What is ", "$", "\n", "0x"])


@st.composite
def annotation_piece(draw):
    a, b = draw(st.integers(1, 12)), draw(st.integers(1, 9))
    op = draw(st.sampled_from(["*", "+", "-", "*"]))
    extra = draw(st.sampled_from(["", "+1", "*2", "-3", "/2"]))
    value = evaluate(f"{a}{op}{b}{extra}")
    if draw(st.booleans()):
        value = value + 1          # a wrong result
    res = str(value)
    prose = draw(st.sampled_from(["", f"{a} {op} {b} = ", f"{a} x {b} = $", f"{a}*{b}="]))
    return f"{prose}<<{a}{op}{b}{extra}={res}>>{res}"


@st.composite
def fact_piece(draw):
    """`a op b` with digits (mostly in range), maybe `= c` with c right or wrong."""
    a, b = draw(st.integers(0, 11)), draw(st.integers(1, 10))
    op = draw(st.sampled_from(["*", " * ", "×", " x ", "x", "·", " times "]))
    text = f"{a}{op}{b}"
    if draw(st.booleans()):
        c = a * b + draw(st.sampled_from([0, 0, 0, 1, -1, 10]))
        text += draw(st.sampled_from(["=", " = ", " equals ", " is "])) + str(c)
    # the neighbours that decide whether a rewrite keeps every number's value
    before = draw(st.sampled_from(["", " ", "0.", ".", "1,", "-", "x", "2^", "8/", "(", "$", "1+", "2*",
                                   "10-", "a", "1", "<<"]))
    after = draw(st.sampled_from(["", " ", ".5", ",000", ":30", "^2", "/3", "%", "!", "x", "e3", "*4", "?",
                                  ")", "+1", "0", ".", " lumber"]))
    return before + text + after


TEXTS = st.lists(st.one_of(NUMBER_PIECES, OP_PIECES, OP_PIECES, WORD_PIECES, annotation_piece(), fact_piece()),
                 max_size=14).map("".join)
PROPS = settings(max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(TEXTS, st.booleans())
def test_property_numbers_idempotence_strict_subset(text, word_forms):
    results = {}
    for mode in ("weak", "strict"):
        r = inject_domain_tokens(text, mode=mode, word_forms=word_forms)
        results[mode] = r
        assert_numbers_preserved(text, r)
        # count is the number of tokens written (texts here hold none before)
        assert r.count == len(TOKEN_RE.findall(r.text)) == sum(r.per_token.values())
        again = inject_domain_tokens(r.text, mode=mode, word_forms=word_forms)
        assert again.text == r.text and again.count == 0, (text, r.text, again.text)
        if annotations_well_formed(text):
            assert annotations_well_formed(r.text), (text, r.text)
        assert len(list(iter_annotations(r.text))) == len(list(iter_annotations(text)))
    assert not (results["strict"].per_token - results["weak"].per_token), text


# Text whose only product-like forms are the separators `·` `⋅` `∙` and a spaced `x`/`X`:
# dates, page numbers, sizes and scores, next to facts with right and wrong results.
SEPARATOR_PIECES = st.one_of(
    st.integers(0, 12).map(str),
    st.sampled_from(["·", " · ", "⋅", " ⋅ ", "∙", " ∙ ", " x ", " X ", " = ", "=", " ", "\n", "?", ", ", ". ",
                     "(", ")", "+", " - ", "Jun ", " min read", "Page ", " of ", "a ", " sheet", "The score was ",
                     " x 8 sheet of plywood", "$", "54", "21", "6", "0.5"]),
    st.builds(lambda a, op, b, d: f"{a}{op}{b} = {a * b + d}", st.integers(1, 9),
              st.sampled_from(["·", " · ", "⋅", "∙", " x ", " X "]), st.integers(1, 9), st.sampled_from([0, 0, 1, -1])),
)
SEPARATOR_TEXTS = st.lists(SEPARATOR_PIECES, max_size=16).map("".join)


@PROPS
@given(SEPARATOR_TEXTS, st.booleans())
def test_property_separators_need_the_result(text, word_forms):
    """With only separator-like ops, a token is written only where `a op b = c` stood with the
    right c: weak mode (bare products) adds nothing over strict, and writing each token out
    again gives exactly the numbers of the original -- no value is ever added (a bare
    `3 · 5` injected would add its product)."""
    w = inject_domain_tokens(text, mode="weak", word_forms=word_forms)
    s = inject_domain_tokens(text, mode="strict", word_forms=word_forms)
    assert w.text == s.text, (text, w.text, s.text)
    expanded = TOKEN_RE.sub(lambda m: " " + expand_domain_tokens(m.group(0)) + " ", w.text)
    assert numbers(expanded) == numbers(text), (text, w.text)
    # each token replaced one correct `a op b = c` span of the original
    facts = re.findall(r"(?<![0-9.,])([1-9])[ \t]*[·⋅∙][ \t]*([1-9])[ \t]*=[ \t]*([0-9]+)|"
                       r"(?<![0-9.,])([1-9])[ \t]+[xX][ \t]+([1-9])[ \t]*=[ \t]*([0-9]+)", text)
    right = sum(1 for f in facts if int(f[0] or f[3]) * int(f[1] or f[4]) == int(f[2] or f[5]))
    assert w.count <= right, (text, w.text)


# An exact evaluator, independent of the injector and of the calculator: Fractions, `^` as
# power, `×`/`·`/spaced `x` as multiplication, a token as its value.
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def exact_value(expr: str):
    expr = TOKEN_RE.sub(lambda m: f"({VALUES[m.group(0)]})", expr)
    expr = expr.replace("×", "*").replace("·", "*").replace(" x ", " * ").replace("^", "**")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            base, exp = ev(node.left), ev(node.right)
            if exp.denominator != 1 or abs(exp) > 4 or abs(base) > 10**6 or (base == 0 and exp < 0):
                raise ValueError("power out of range")
            return base ** int(exp)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(type(node).__name__)

    try:
        return ev(tree.body)
    except (ValueError, ZeroDivisionError):
        return None


EXPR_OPS = st.sampled_from(["*", " * ", "×", " × ", " x ", "·", "/", " / ", "+", " + ", "-", " - ", "^", "**"])
EXPRS = st.recursive(
    st.one_of(st.integers(0, 12).map(str), st.sampled_from(["0.5", "9.5", "1.6", "10.25"])),
    lambda inner: st.one_of(
        st.tuples(inner, EXPR_OPS, inner).map("".join),
        inner.map(lambda e: f"({e})"),
        inner.map(lambda e: f"-{e}"),
    ),
    max_leaves=7,
)


@PROPS
@given(EXPRS)
def test_property_arithmetic_value_preserved(expr):
    """Reading every token as its value, the expression keeps its exact value."""
    original = exact_value(expr)
    if original is None:
        return
    for mode in ("weak", "strict"):
        out = inject_domain_tokens(expr, mode=mode).text
        assert exact_value(out) == original, (expr, out)


# --------------------------------------------------------------------------- real GSM8K

def test_gsm8k_train_answers(gsm8k_dir, capsys):
    path = gsm8k_dir / "train.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found")
    answers = [json.loads(line)["answer"] for line in path.read_text().splitlines() if line.strip()]
    assert len(answers) == 7473
    totals = {}
    for mode in ("weak", "strict"):
        total = Counter()
        n_annotations = 0
        for text, r in zip(answers, inject_batch(answers, mode=mode)):
            assert_numbers_preserved(text, r)
            before, after = list(iter_annotations(text)), list(iter_annotations(r.text))
            assert len(before) == len(after), (text, r.text)
            for (e0, r0), (e1, r1) in zip(before, after):
                assert r0 == r1                                   # results never touched
                v0 = evaluate(e0)
                if v0 is not None:                                # still evaluates, same value
                    assert evaluate(e1, VALUES) == v0, (e0, e1)
            n_annotations += len(before)
            assert r.text.splitlines()[-1] == text.splitlines()[-1]    # `#### N` never changes
            assert inject_domain_tokens(r.text, mode=mode).text == r.text
            total += r.per_token
        totals[mode] = (sum(total.values()), len(total), n_annotations)
    assert totals["strict"][0] <= totals["weak"][0]
    assert totals["weak"][0] > 1000          # GSM8K is full of single-digit products
    with capsys.disabled():
        print(f"\nGSM8K train injections (tokens, distinct facts, annotations): {totals}")


# --------------------------------------------------------------------------- one place for the settings

DOC = "He had 2 times 3 = 6 boxes and 1+6*9 more."
AS_DEFAULT = "He had 2 times 3 = 6 boxes and 1+<MUL_6_9_54> more."   # weak, no word forms
AS_SPEC = "He had <MUL_2_3_6> boxes and 1+6*9 more."                  # strict, word forms


def test_the_specs_inject_settings_reach_every_stage(tmp_path):
    """`inject_mode` / `word_forms` of the spec's prepare section are set once, in the tokenizer
    `domtok prepare` saves; pretraining text, model dirs, SFT data, GRPO prompts and the
    prompts of GSM8K and the probes all inject with them. Old code: SFT, GRPO and both
    evaluations called the injector with its defaults."""
    import torch

    from domtok.data.prepare import run as prepare
    from domtok.data.shards import read_shard
    from domtok.eval import gsm8k, probes
    from domtok.model.checkpoint import load_model, save_model_dir
    from domtok.model.gpt import GPT, GPTConfig
    from domtok.rundir import build_nodes, load_spec
    from domtok.wiring import stage_call
    from domtok.tokens.build import train_bpe
    from domtok.tokens.tokenizer import Tokenizer
    from domtok.train.grpo import GRPOConfig, load_prompts
    from domtok.train.sft_data import DataSource, build_examples

    assert inject_domain_tokens(DOC).text == AS_DEFAULT
    assert inject_domain_tokens(DOC, mode="strict", word_forms=True).text == AS_SPEC
    # the spec -> the condition's prepare config
    spec = load_spec("tiny", ["prepare.inject_mode=strict", "prepare.word_forms=true"])
    node = next(n for n in build_nodes(spec, tmp_path / "run") if n.id == "mul_tokens/prepare")
    node.deps[0].manifest_path.parent.mkdir(parents=True)
    node.deps[0].manifest_path.write_text(json.dumps({"summary": {"tokenizer": str(tmp_path / "bpe")}}))
    _, cfg = stage_call(node, tmp_path / "run")
    assert (cfg.inject_mode, cfg.word_forms, cfg.condition) == ("strict", True, "mul_tokens")
    # prepare: the shards and the saved tokenizer
    train_bpe([DOC, "What is 6 times 9? User: Assistant: The answer is"] * 20, 300, tmp_path / "bpe")
    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"text": DOC}) + "\n")
    cfg.source, cfg.n_docs, cfg.val_fraction, cfg.val_docs, cfg.shard_tokens = str(src), 1, 0.0, 0, 1000
    meta = prepare(cfg, tmp_path / "prep")
    tok = Tokenizer.load(tmp_path / "prep" / "tokenizer")
    assert meta["injection"] == tok.injection == {"mode": "strict", "word_forms": True}
    assert tok.decode(read_shard(tmp_path / "prep" / "train_000000.npy")[1:]) == AS_SPEC
    # a model dir (what pretraining, SFT and GRPO write) keeps them
    model = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=1, n_embd=8))
    save_model_dir(model, tok, tmp_path / "model")
    _, tok = load_model(tmp_path / "model", device=torch.device("cpu"))
    assert tok.injection == {"mode": "strict", "word_forms": True}
    # SFT data
    (ex,) = build_examples([{"question": "q?", "answer": DOC + "\n#### 61"}], tok, "mul", False, 128)
    assert AS_SPEC in tok.decode(ex.ids)
    # GRPO prompts (with inject_user)
    data = tmp_path / "gsm.jsonl"
    data.write_text(json.dumps({"question": DOC, "answer": "#### 61"}) + "\n")
    _, _, texts = load_prompts(GRPOConfig(prompts=DataSource(kind="gsm8k", path=str(data)), num_prompts=1,
                                          inject_user=True), tok, "mul")
    assert AS_SPEC in texts[0] and AS_DEFAULT not in texts[0]
    # evaluation prompts
    assert AS_SPEC in gsm8k.build_prompt(DOC, tok, gsm8k.GSM8KEvalConfig(inject_prompt=True))
    assert probes.build_prompt({"category": "symbolic_context", "question": DOC}, "plain", tok) == AS_SPEC
    # the baseline records no injection and is never injected
    base = tok.with_condition("baseline")
    assert base.inject(DOC).text == DOC and base.injection == tok.injection
