"""The notation domtok reads in text, one owner for every pattern: domain tokens and GSM8K
calculator annotations. A new token set or a change to "numbers are sacred" is one edit here.

- A domain token's text is `<NAME_a_b_..._value>`: a capitalised name, then underscore-separated
  integers, the last one the value it states (`<MUL_6_9_54>` states 54). Only ASCII digits.
- A GSM8K calculator annotation is `<<expr=result>>` (`<<48/2=24>>`); after injection its expr
  may hold domain tokens (`<<<MUL_2_9_18>=18>>`), whose own `<`/`>` are not the annotation's.
  It never spans a line.
- A GSM8K answer ends with `#### N` (`parse_gold`); a number is compared in one normal form:
  `$`, thousands commas, a trailing period or percent sign dropped (`normalize_number`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Iterable

DOMAIN_TOKEN = r"<[A-Z][A-Z0-9]*(?:_-?[0-9]+)+>"
DOMAIN_TOKEN_RE = re.compile(DOMAIN_TOKEN)

# `<<inner>>`, group 1 the inner text (expr=result), domain tokens allowed inside
ANNOTATION_RE = re.compile(r"<<((?:" + DOMAIN_TOKEN + r"|[^<>\n])*)>>")
# an annotation the model has opened and not yet answered: `<<expr=` at the very end of the text
OPEN_ANNOTATION_RE = re.compile(r"<<((?:" + DOMAIN_TOKEN + r"|[^<>=\n])*)=$")


def token_value(token_text: str) -> str:
    """The value a domain token states, as written: `<MUL_6_9_54>` -> "54"."""
    return token_text[1:-1].rsplit("_", 1)[1]


def split_annotation(inner: str) -> tuple[str, str] | None:
    """`expr=result` -> (expr, result) at the last `=`; None when there is no `=`."""
    expr, eq, result = inner.rpartition("=")
    return (expr, result) if eq else None


def iter_annotations(text: str) -> Iterable[tuple[str, str]]:
    """(expr, result) of each `<<expr=result>>`, token-aware; result "" when there is no `=`."""
    for m in ANNOTATION_RE.finditer(text):
        yield split_annotation(m.group(1)) or (m.group(1), "")


def stray_brackets(text: str) -> int:
    """How many `<<` / `>>` stand outside every annotation."""
    rest = ANNOTATION_RE.sub("", text)
    return rest.count("<<") + rest.count(">>")


def normalize_number(s: str) -> str | None:
    """'$1,000.00' -> '1000'; '-0.50' -> '-0.5'; '18.' -> '18'. None if not a number."""
    s = s.strip().replace("$", "").replace(",", "").rstrip(".").rstrip("%")
    if s.startswith("--"):
        s = s[1:]
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == 0:
        return "0"
    out = format(d.normalize(), "f")
    return out


def parse_gold(answer_field: str) -> str:
    """Gold answer from a GSM8K `answer` field (the number after `####`)."""
    if "####" not in answer_field:
        raise ValueError(f"GSM8K answer has no '####' line: {answer_field[-80:]!r}")
    got = normalize_number(answer_field.split("####")[-1].strip())
    if got is None:
        raise ValueError(f"GSM8K answer after '####' is not a number: {answer_field[-80:]!r}")
    return got
