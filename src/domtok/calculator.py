"""The GSM8K calculator: evaluate the `expr` of an annotation `<<expr=result>>` safely.

The GSM8K paper lets the model write `<<48/2=` and then forces the true `24>>` into the
sample, so arithmetic slips stop derailing a solution. The reference study never had this.
The model's text is untrusted, so nothing here ever calls `eval`: the expression is parsed
with `ast` and walked with a whitelist of node types (numbers, + - * /, unary minus,
parentheses). Anything else -- names, calls, attributes, powers, comparisons, strings --
gives None, and so do over-long inputs and numbers beyond a fixed magnitude.

Domain tokens such as `<MUL_6_9_54>` are values: `evaluate("<MUL_6_9_54>+6", values)` is 60.
"""

from __future__ import annotations

import ast
import math
import re

from domtok.notation import DOMAIN_TOKEN_RE, OPEN_ANNOTATION_RE

MAX_EXPR_CHARS = 200       # GSM8K's longest annotation is far shorter
MAX_NODES = 100            # AST nodes, so a deeply nested input cannot cost much
MAX_MAGNITUDE = 1e15       # every literal and intermediate result stays below this
DECIMALS = 4               # floats are rounded to this many decimals when formatted

# Symbols GSM8K text and models use for the four operations.
_NORMALISE = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-", "·": "*"})
_NUMBER_COMMAS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # 1,000 -> 1000


_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


class _Rejected(Exception):
    pass


def evaluate(expr: str, domain_values: dict[str, int] | None = None) -> int | float | None:
    """Value of `expr`, or None if it is not a small arithmetic expression.

    `domain_values` maps domain-token text (`"<MUL_6_9_54>"`) to its value; an unknown
    token makes the expression invalid. Integral results come back as int (6/3 -> 2).
    """
    if not isinstance(expr, str) or len(expr) > MAX_EXPR_CHARS:
        return None
    domain_values = domain_values or {}
    try:
        text = DOMAIN_TOKEN_RE.sub(lambda m: _domain_value(m.group(0), domain_values), expr)
    except _Rejected:
        return None
    text = _NUMBER_COMMAS.sub("", text.translate(_NORMALISE)).strip()
    if not text or len(text) > MAX_EXPR_CHARS:
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        return None
    try:
        value = _eval(tree.body)
    except (_Rejected, ZeroDivisionError, OverflowError):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def open_annotation(text: str) -> str | None:
    """The `expr` of an annotation `<<expr=` that ends `text`, else None.

    `"so <<<MUL_6_9_54>+6="` -> `"<MUL_6_9_54>+6"`; `"<<6*9=54>>"` -> None (answered).
    """
    if not text.endswith("="):
        return None
    m = OPEN_ANNOTATION_RE.search(text[-(MAX_EXPR_CHARS + 3):])
    return m.group(1) if m else None


def format_number(value: int | float) -> str:
    """GSM8K-style text for a result: `54`, `0.5`, `33.3333` (never `54.0`)."""
    if isinstance(value, float):
        value = round(value, DECIMALS)
        if value.is_integer():
            return str(int(value))
        return f"{value:.{DECIMALS}f}".rstrip("0")
    return str(int(value))


def _domain_value(text: str, domain_values: dict[str, int]) -> str:
    if text not in domain_values:
        raise _Rejected(text)
    return f"({int(domain_values[text])})"


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        v = node.value
        # bool is an int subclass; complex, str, bytes, None are not numbers we accept
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Rejected("constant")
        return _bounded(v)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _bounded(_BINOPS[type(node.op)](_eval(node.left), _eval(node.right)))
    raise _Rejected(type(node).__name__)


def _bounded(v: int | float) -> int | float:
    if isinstance(v, float) and not math.isfinite(v):
        raise _Rejected("not finite")
    if abs(v) > MAX_MAGNITUDE:
        raise _Rejected("too large")
    return v
