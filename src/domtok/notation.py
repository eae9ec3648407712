"""The notation domtok reads in text, one owner for every pattern: domain tokens and GSM8K
calculator annotations. A new token set or a change to "numbers are sacred" is one edit here.

- A domain token's text is `<NAME_a_b_..._value>`: a capitalised name, then underscore-separated
  integers, the last one the value it states (`<MUL_6_9_54>` states 54). Only ASCII digits.
- A GSM8K calculator annotation is `<<expr=result>>` (`<<48/2=24>>`); after injection its expr
  may hold domain tokens (`<<<MUL_2_9_18>=18>>`), whose own `<`/`>` are not the annotation's.
  It never spans a line.
"""

from __future__ import annotations

import re
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
