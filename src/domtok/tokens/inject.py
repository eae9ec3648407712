"""The injector: rewrite single-digit facts in text ("6 × 9 = 54") into domain tokens.

The domain-token condition trains on text where a fact such as `6 × 9 = 54` is written as
the one token `<MUL_6_9_54>`. A token stands for its VALUE (54), so a rewrite is correct
iff the text means the same when the token is read as that value. The reference study's
regex broke that silently (`105 × 8` -> `1<MUL_5_8_40>`, `2*3*4` -> `<MUL_2_3_6>*4`,
`<<<MUL_2_9_18>>>`); DESIGN invariant 3 says numbers are sacred, so every rule below errs
on the side of leaving text alone.

What is rewritten (the set's op, here `*`; operands from the set's range, here 1..9):

- `6*9`, `6 * 9`, `6×9`, `6 · 9`, `6⋅9`, `6∙9`, and `6 x 9` / `6 X 9` *with spaces on both
  sides*. An unspaced `x` is a dimension or a name, never a product: `2x4 lumber`, `4x4`,
  `1920x1080`, hex `0x4`, `3x4y` stay. With `word_forms=True` also `6 times 9` and
  `6 multiplied by 9` (digits only; "six times nine" is left alone), and the results
  `equals 54` / `is 54` besides `= 54`.
- The dots `·` `⋅` `∙` and the spaced `x` / `X` are separators as often as they are products
  (`Jun 3 · 5 min read`, `Page 2 · 3 of 10`, `a 4 x 8 sheet of plywood`, `The score was
  2 x 3`), so they mean multiplication only when the correct result follows: `6 · 9 = 54`
  and `3 x 7 = 21` become tokens (also in prose before a GSM8K annotation), a bare `6 · 9`
  never does, in either mode. `*` and `×` are always products (rules below).
- `a op b = c` with the right c (both modes): the whole span becomes the token,
  `6 × 9 = 54` -> `<MUL_6_9_54>`. A wrong c (`6*9 = 55`), or anything after `=` that is
  not exactly c (`= ?`, `= x`, `= $54`, `= 54.5`, `= 54*2`, `== 54`), leaves the span alone.
  The span must be the whole left-hand side: in `1+6*9 = 55` the result belongs to the sum,
  so the `= 55` stays and the product is treated as bare (below).
- bare `a op b` (weak mode only; `*`, `×` and the word forms): `1+6*9` -> `1+<MUL_6_9_54>`, also inside a larger
  left-hand side: `1+6*9 = 55` -> `1+<MUL_6_9_54> = 55`, and the step lines of GSM-SBS
  (`10 × 15 + 2 × 5 = 150 + 10` -> `10 × 15 + <MUL_2_5_10> = 150 + 10`).
- Order is canonical: `9 × 6` -> `<MUL_6_9_54>`.

Precedence. A product may become a value only if both neighbouring operators bind
*strictly looser* than the fact's op (for `*`: `+`, `-`, `=`, prose, brackets). So
`6*9^2`, `2^6*9`, `8/2*3`, `6*9/3` (also a fraction `9/3`), `6*9%`, `6*9!` and chains
`2*3*4` / `2 x 3 x 4` / `2 times 3 times 4` stay as written (chains are never partly
rewritten). Brackets are fine: `(6*9)^2` -> `(<MUL_6_9_54>)^2`.

Numbers are whole: an operand is never a piece of a longer number or name. Left alone:
`105 × 8`, `0.5*4`, `.5*4`, `1.6*9` (versions), `6*9.5`, `6*9,000`, `1,6*9`, `6*9:30`,
`6*9e3`, `x6*9`, `6*9x`, `6*9(2)`, `6*9²`. A minus sign glued to the first operand is the
sign of that number: `-6*9`, `(-2*3)`, `x = -6*9` stay (a binary minus, `10-6*9` or
`10 - 6*9`, binds looser and is fine). `$6*9` -> `$<MUL_6_9_54>` keeps its value ($54).
Code such as `x = 3*4` becomes `x = <MUL_3_4_12>` (x is still 12); `x*3*4` is a chain.

Answers are not leaked: a bare product followed by `?` (`What is 6*9?`) stays, as does
`6*9 = ?` (see above). Prompts of evaluations should not be injected at all; this is a guard.

GSM8K calculator annotations `<<expr=result>>` stay well formed and evaluable by
`domtok.calculator.evaluate`, which reads a domain token as its value:
- the `=result>>` part and the number after it are never touched;
- `expr` that is exactly `a op b` with the right result becomes the token (both modes):
  `<<9*2=18>>` -> `<<<MUL_2_9_18>=18>>`; in weak mode products inside a larger `expr` are
  rewritten by the precedence rule: `<<100-6*9=46>>` -> `<<100-<MUL_6_9_54>=46>>`;
- prose `9 * 2 = <<9*2=18>>18` (also `= $<<...>>18`) keeps its annotation and its answer:
  `<MUL_2_9_18> = <<<MUL_2_9_18>=18>>18`, when both the annotation result and the number
  after it are the product (otherwise the prose product is left alone).
`check_annotations` / `annotations_well_formed` verify this after injection.

Speed: a text without any op character returns at once; otherwise one precompiled finder
regex jumps from op character to op character in C, and only those hits are checked in Python.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from domtok.errors import DomtokError
from domtok.notation import ANNOTATION_RE, iter_annotations, stray_brackets
from domtok.tokens.sets import DomainToken, DomainTokenSet, get_token_set, literal_spans

MODES = ("weak", "strict")


@dataclass
class InjectResult:
    text: str
    count: int = 0
    per_token: Counter = field(default_factory=Counter)   # canonical token text -> count


# How a fact op may be written. `symbols` may touch the digits, `spaced` letters need spaces
# on both sides, `words` only with word_forms. `prec` is the op's binding strength.
# `result_only`: forms that are also separators (`Jun 3 · 5`, `a 4 x 8 sheet`), a product
# only in `a op b = c` with the correct c.
OP_FORMS = {
    "*": {"symbols": "*×·⋅∙", "spaced": "xX", "words": ("times", "multiplied by"), "display": "×", "prec": 2,
          "result_only": "·⋅∙xX"},
    "+": {"symbols": "+", "spaced": "", "words": ("plus",), "display": "+", "prec": 1, "result_only": ""},
}

# Binding strength of the operators that may sit next to a candidate (any op, not only the
# set's). 0 = nothing that binds (prose, brackets, `=`); _ATTACHED = part of the operand.
_PREC_CHARS = {**dict.fromkeys("*×·⋅∙/÷%", 2), "^": 3, **dict.fromkeys("+-−", 1)}
_LEFT_WORDS = (("times", 2), ("multiplied by", 2), ("divided by", 2), ("plus", 1), ("minus", 1),
               ("power of", 3))
_RIGHT_WORDS = (("times", 2), ("multiplied by", 2), ("divided by", 2), ("plus", 1), ("minus", 1),
                ("squared", 3), ("cubed", 3), ("to the", 3))
_ATTACHED = 9
_VALUE_END = ")]}_"   # a char (besides letters/digits) that ends a value: a minus after it is binary

# An annotation right after an `=` in prose (`= $<<9*2=18>>18`): `$`, the annotation, blanks.
_ANNOTATION_AFTER = re.compile(r"\$?(" + ANNOTATION_RE.pattern + r")[ \t]*")
_NUMBER = re.compile(r"[0-9]+")


def _left_prec(text: str, i: int) -> int:
    """Binding strength of whatever precedes the operand starting at text[i]."""
    if i == 0:
        return 0
    ch = text[i - 1]
    if ch.isalnum() or ch in "_)]}.":     # 19*2, x6*9, (2)6*9, 0.5*4 and .5*4
        return _ATTACHED
    if ch in ",:":                         # 1,6*9 and 10:6*9 are pieces of one number
        return _ATTACHED if i >= 2 and text[i - 2].isdigit() else 0
    if ch in "-−":                         # glued minus: a sign unless it follows a value
        if i >= 2 and (text[i - 2].isalnum() or text[i - 2] in _VALUE_END):
            return 1
        return _ATTACHED
    w = text[max(0, i - 24):i].rstrip()
    if not w:
        return 0
    ch = w[-1]
    if ch in _PREC_CHARS:
        return _PREC_CHARS[ch]
    if ch in "xX":                         # "4 x 6*9": a spaced x is a multiplication
        return 2 if len(w) == 1 or w[-2].isspace() else 0
    for word, prec in _LEFT_WORDS:
        if w.endswith(word) and (len(w) == len(word) or not w[-len(word) - 1].isalnum()):
            return prec
    return 0


def _right_prec(text: str, j: int) -> int:
    """Binding strength of whatever follows the number ending at text[j]."""
    n = len(text)
    if j >= n:
        return 0
    ch = text[j]
    if ch.isalnum() or ch in "_([{%":      # 6*9.., 6*9e3, 6*9x, 6*9(2), 6*9², 6*9%
        return _ATTACHED
    if ch in ".,:":                        # 6*9.5, 6*9,000, 6*9:30 -- but "6*9." ends a sentence
        return _ATTACHED if j + 1 < n and text[j + 1].isdigit() else 0
    if ch == "!":                          # factorial, unless it is `!=`
        return 0 if text[j + 1:j + 2] == "=" else _ATTACHED
    w = text[j:j + 24].lstrip()
    if not w:
        return 0
    ch = w[0]
    if ch in _PREC_CHARS:
        return _PREC_CHARS[ch]
    if ch in "xX":
        return 2 if len(w) > 1 and w[1].isspace() else 0
    for word, prec in _RIGHT_WORDS:
        if w.startswith(word) and not w[len(word):len(word) + 1].isalnum():
            return prec
    return 0


def _is_number(text: str, value: int) -> bool:
    try:
        return float(text.strip()) == value
    except ValueError:
        return False


class _Rules:
    """Everything compiled for one (token set, word_forms): built once, cached."""

    def __init__(self, token_set: DomainTokenSet, word_forms: bool):
        ops = {t.op for t in token_set.tokens}
        if len(ops) != 1 or next(iter(ops)) not in OP_FORMS:
            raise DomtokError(f"token set {token_set.name!r}: the injector knows the ops {sorted(OP_FORMS)}, "
                              f"not {sorted(ops)}; add the op's written forms to OP_FORMS in domtok/tokens/inject.py")
        self.token_set = token_set
        self.op = next(iter(ops))
        form = OP_FORMS[self.op]
        self.prec = form["prec"]
        self.display = form["display"]
        self.result_only = frozenset(form["result_only"])
        # (a, b) as written -> token; both orders for a commutative set
        self.facts: dict[tuple[str, str], DomainToken] = {}
        for t in token_set.tokens:
            if len(t.operands) != 2:
                raise DomtokError(f"token set {token_set.name!r}: {t.text} is not a binary fact; "
                                  "the injector rewrites `a op b` facts only")
            a, b = (str(o) for o in t.operands)
            self.facts[(a, b)] = t
            if token_set.commutative:
                self.facts[(b, a)] = t
        operands = sorted({o for pair in self.facts for o in pair}, key=lambda s: (-len(s), s))
        # Numbers are checked whole: no digit may touch an operand (`105`, `19`).
        operand = r"(?<![0-9])(?:" + "|".join(map(re.escape, operands)) + r")(?![0-9])"
        sym = "".join(re.escape(c) for c in form["symbols"])
        op_alts = [rf"[ \t]*[{sym}][ \t]*"]
        if form["spaced"]:
            op_alts.append(rf"[ \t]+[{form['spaced']}][ \t]+")
        words = form["words"] if word_forms else ()
        if words:
            op_alts.append(r"[ \t]+(?:" + "|".join(w.replace(" ", r"[ \t]+") for w in words) + r")[ \t]+")
        op_re = "(?:" + "|".join(op_alts) + ")"
        self.candidate = re.compile(rf"(?P<a>{operand}){op_re}(?P<b>{operand})")
        # inside an annotation: symbols only (a calculator cannot read "times")
        self.inner_candidate = re.compile(rf"(?P<a>{operand})(?:{op_alts[0]})(?P<b>{operand})")
        # The finder looks for op characters, not digits: a pattern that starts with one
        # character class lets `re` skip through text in C, several times faster than
        # trying the candidate pattern at every digit. Each hit is checked in Python.
        lead = sym + form["spaced"] + "".join(w[0] for w in words)
        checks = [rf"(?<=[{sym}])(?=[ \t]*[0-9])"]
        if form["spaced"]:
            checks.append(rf"(?<=[ \t][{form['spaced']}])(?=[ \t])")
        checks += [rf"(?<=[ \t]{w[0]})(?={re.escape(w[1:].split()[0])}[ \t])" for w in words]
        self.inner_finder = re.compile(rf"[{sym}]{checks[0]}")
        # `<<` only where the annotation holds an op symbol: the others cannot change
        ann_check = rf"(?<=<)(?=<[^<>\n]*?{operand}[ \t]*[{sym}][ \t]*{operand})"
        self.finder = re.compile(rf"[{lead}<](?:{'|'.join(checks + [ann_check])})")
        self.whole_product = re.compile(rf"[ \t]*(?P<a>{operand})(?:{op_alts[0]})(?P<b>{operand})[ \t]*")
        result_words = r"|equals\b|is\b" if word_forms else ""
        self.result = re.compile(rf"[ \t]*(?:=(?!=){result_words})[ \t]*")
        # A candidate needs one of these substrings: the fast path is a few `in` tests.
        quick = list(form["symbols"]) + [c + s for c in form["spaced"] for s in " \t"]
        quick += [w.split()[0] for w in words]
        self.quick = tuple(quick)


_RULES: dict = {}


def _rules(token_set: str | DomainTokenSet, word_forms: bool) -> _Rules:
    key = (token_set if isinstance(token_set, str) else id(token_set), bool(word_forms))
    rules = _RULES.get(key)
    if rules is None:
        ts = get_token_set(token_set) if isinstance(token_set, str) else token_set
        rules = _RULES[key] = _Rules(ts, bool(word_forms))
        rules._keepalive = ts   # id() keys stay valid while cached
    return rules


def _annotation(inner: str, rules: _Rules, mode: str) -> tuple[str, list[str]]:
    """Rewrite the `expr` of `<<expr=result>>` (given without the brackets); result untouched."""
    expr, sep, res = inner.rpartition("=")
    if not sep or "=" in expr:
        return inner, []
    m = rules.whole_product.fullmatch(expr)
    if m:
        tok = rules.facts.get((m.group("a"), m.group("b")))
        if tok is not None:   # a wrong result (`<<6*9=55>>`) leaves the annotation alone
            if not _is_number(res, tok.value):
                return inner, []
            return expr[:m.start("a")] + tok.text + expr[m.end("b"):] + sep + res, [tok.text]
    if mode == "weak":
        new_expr, found = _scan(expr, rules, mode, inner=True)
        return new_expr + sep + res, found
    return inner, []


def _candidate(text: str, m: re.Match, rules: _Rules, mode: str, inner: bool):
    """Decide one `a op b` match: None (leave alone) or (end, replacement, tokens)."""
    tok = rules.facts.get((m.group("a"), m.group("b")))
    if tok is None:
        return None
    left = _left_prec(text, m.start())
    if left >= rules.prec:
        return None
    b_end = m.end()
    r = None if inner else rules.result.match(text, b_end)
    if r is not None and (_right_prec(text, b_end) == _ATTACHED
                          or text[r.end():r.end() + 24].lstrip().startswith("?")):
        return None   # `1+6*9 = ?` is a question: the token would leak its answer
    if r is not None and left == 0:
        # `a op b = ...` where the product is the whole left-hand side: only the exact result.
        p = r.end()
        ann = _ANNOTATION_AFTER.match(text, p)
        if ann is not None:   # GSM8K: `9 * 2 = <<9*2=18>>18`
            expr_res = ann.group(2).rpartition("=")
            c = _NUMBER.match(text, ann.end())
            if (not expr_res[1] or not _is_number(expr_res[2], tok.value) or c is None
                    or c.group() != str(tok.value) or _right_prec(text, c.end()) != 0):
                return None
            new_inner, found = _annotation(ann.group(2), rules, mode)
            replacement = (tok.text + text[b_end:ann.start(1)] + "<<" + new_inner + ">>"
                           + text[ann.end(1):c.end()])
            return c.end(), replacement, [tok.text] + found
        c = _NUMBER.match(text, p)
        if c is None or c.group() != str(tok.value) or _right_prec(text, c.end()) != 0:
            return None
        return c.end(), tok.text, [tok.text]
    # Bare products, and products inside a larger left-hand side (`2×10 + 2×5 = 20 + 10`:
    # the `=` belongs to the whole side and binds looser, so the product alone keeps its value).
    # A separator-like op (`Jun 3 · 5`, `a 4 x 8 sheet`) is not known to be a product here.
    if mode != "weak" or text[m.end("a"):m.start("b")].strip() in rules.result_only:
        return None
    if _right_prec(text, b_end) >= rules.prec:
        return None
    if text[b_end:b_end + 24].lstrip().startswith("?"):   # "What is 6*9?" must not leak 54
        return None
    return b_end, tok.text, [tok.text]


def _scan(text: str, rules: _Rules, mode: str, inner: bool = False) -> tuple[str, list[str]]:
    search = (rules.inner_finder if inner else rules.finder).search
    match = (rules.inner_candidate if inner else rules.candidate).match
    out: list[str] = []
    found: list[str] = []
    pos = last = 0
    while True:
        hit = search(text, pos)
        if hit is None:
            break
        i = hit.start()
        if text[i] == "<":   # `<<`: an annotation
            a = ANNOTATION_RE.match(text, i)
            if a is None:
                pos = i + 1
                continue
            new_inner, toks = _annotation(a.group(1), rules, mode)
            if toks:
                out.append(text[last:i])
                out.append("<<" + new_inner + ">>")
                found += toks
                last = a.end()
            pos = a.end()
            continue
        # an op at i: the candidate starts at the digits before it (and its spaces)
        pos = i + 1
        k = i
        while k > last and text[k - 1] in " \t":
            k -= 1
        s = k
        while s > last and text[s - 1].isdigit():
            s -= 1
        if s == k:
            continue
        m = match(text, s)
        if m is None:
            continue
        decision = _candidate(text, m, rules, mode, inner)
        if decision is None:
            continue   # the second operand may still start the next candidate
        end, replacement, toks = decision
        out.append(text[last:s])
        out.append(replacement)
        found += toks
        last = pos = end
    if not found:
        return text, found
    out.append(text[last:])
    return "".join(out), found


def inject_domain_tokens(text: str, token_set: str | DomainTokenSet = "mul", mode: str = "weak",
                         word_forms: bool = False) -> InjectResult:
    """Rewrite the facts of `token_set` in `text` into its tokens (see the module docstring)."""
    if mode not in MODES:
        raise DomtokError(f"injector mode {mode!r} is unknown; use one of {list(MODES)}")
    if isinstance(token_set, DomainTokenSet) and token_set.literal:
        # a literal set's tokens are the text itself: nothing to rewrite, the tokenizer's
        # `encode` maps each occurrence; counted here as the injector counts facts
        found = Counter(text[a:b] for a, b in literal_spans(token_set, text))
        return InjectResult(text, sum(found.values()), found)
    rules = _rules(token_set, word_forms)
    for q in rules.quick:
        if q in text:
            break
    else:
        return InjectResult(text, 0, Counter())
    new, found = _scan(text, rules, mode)
    return InjectResult(new, len(found), Counter(found))


def inject_batch(texts: Iterable[str], token_set: str | DomainTokenSet = "mul", mode: str = "weak",
                 word_forms: bool = False) -> list[InjectResult]:
    return [inject_domain_tokens(t, token_set, mode, word_forms) for t in texts]


def expand_domain_tokens(text: str, token_set: str | DomainTokenSet = "mul") -> str:
    """`<MUL_6_9_54>` (or `<MUL_9_6_54>`) -> `6 × 9 = 54`; unknown token texts stay.
    A literal set's tokens are already their text: returned unchanged."""
    if isinstance(token_set, DomainTokenSet) and token_set.literal:
        return text
    rules = _rules(token_set, False)
    ts = rules.token_set
    by_text = ts.by_text()

    def expand(m: re.Match) -> str:
        canon = ts.canonical_text(m.group(0))
        if canon is None:
            return m.group(0)
        t = by_text[canon]
        return f" {rules.display} ".join(map(str, t.operands)) + f" = {t.value}"

    return ts.regex.sub(expand, text)


# ----------------------------------------------------------------------------- annotations

def check_annotations(text: str, token_set: str | DomainTokenSet = "mul") -> list[str]:
    """Problems with the `<<expr=result>>` annotations of `text` ([] when all are fine).

    Every annotation must have an `=`, its `expr` must evaluate with the GSM8K calculator
    (tokens read as their values) to `result`, and no stray `<<`/`>>` may remain.
    """
    from domtok.calculator import evaluate

    ts = _rules(token_set, False).token_set
    values = {t.text: t.value for t in ts.tokens}
    problems = []
    for expr, res in iter_annotations(text):
        if not res:
            problems.append(f"<<{expr}>>: no '=result'")
            continue
        value = evaluate(expr, values)
        try:
            expected = float(res.replace(",", ""))
        except ValueError:
            problems.append(f"<<{expr}={res}>>: result is not a number")
            continue
        if value is None:
            problems.append(f"<<{expr}={res}>>: expression does not evaluate")
        elif abs(value - expected) > 1e-6 * max(1.0, abs(expected)):
            problems.append(f"<<{expr}={res}>>: evaluates to {value}")
    if stray_brackets(text):
        problems.append("unbalanced '<<' or '>>' outside any annotation")
    return problems


def annotations_well_formed(text: str, token_set: str | DomainTokenSet = "mul") -> bool:
    return not check_annotations(text, token_set)


# ----------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the text to rewrite, or - to read it from stdin")
    parser.add_argument("--mode", choices=MODES, default="weak",
                        help="weak: also bare `6*9`; strict: only `6*9 = 54` (default: weak)")
    parser.add_argument("--word-forms", action="store_true", help="also `6 times 9` (off by default)")
    parser.add_argument("--token-set", default="mul", help="domain token set (default: mul)")
    parser.add_argument("--stats", action="store_true",
                        help="print {count, per_token} as JSON on stderr")
    parser.add_argument("--expand", action="store_true",
                        help="print the result with every token written out as `a × b = c`")


def main(args: argparse.Namespace) -> int:
    from_stdin = args.text == "-"
    text = sys.stdin.read() if from_stdin else args.text
    result = inject_domain_tokens(text, args.token_set, args.mode, args.word_forms)
    out = expand_domain_tokens(result.text, args.token_set) if args.expand else result.text
    sys.stdout.write(out if from_stdin else out + "\n")
    if args.stats:
        print(json.dumps({"count": result.count, "per_token": dict(sorted(result.per_token.items()))}),
              file=sys.stderr)
    return 0
