"""Arithmetic drills: times tables, sums, and the reference curriculum's five tiers.

`drills(kind, n, seed)` writes `n` GSM-format items of one kind (`DRILL_KINDS`): `mul_table`
and `add_table` (single-digit facts), the tiers (`tier1` 1-digit ±, `tier2` 1-digit ×,
`tier3` 2-digit ± 1-digit, `tier4` 2-digit × 1-digit, `tier5` 10-20 × 10-20 with
decomposition), and the tiny study's worded kinds (`times_table`, `add_100`, `mul_2x1`). The
working is `domtok.data.steps`'s; operands are drawn through `draw_pair`, so no drill asks a
pair held out for the probes.
"""

from __future__ import annotations

import random

from domtok.data.steps import add_steps, draw_pair, gsm_item, mul_steps

DRILL_KINDS = ("mul_table", "add_table", "tier1", "tier2", "tier3", "tier4", "tier5",
               "times_table", "add_100", "mul_2x1")
# The worded kinds ask as the probes and word problems do ("What is 6 times 9?") half of the time.
_WORDED = {"times_table": "times", "add_100": "plus", "mul_2x1": "times"}


def drills(kind: str, n: int, seed: int) -> list[dict]:
    """`n` drill items of one kind (see DRILL_KINDS), GSM format, seeded."""
    if kind not in DRILL_KINDS:
        raise ValueError(f"unknown drill kind {kind!r}; choose from {', '.join(DRILL_KINDS)}")
    rng = random.Random(f"drills/{kind}/{seed}")
    out = []
    for i in range(n):
        if kind in ("mul_table", "tier2"):
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            q, lines, r = f"What is {a} × {b}?", [f"{a} × {b} = <<{a}*{b}={a * b}>>{a * b}"], a * b
        elif kind == "add_table":
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            q, lines, r = f"What is {a} + {b}?", [f"{a} + {b} = <<{a}+{b}={a + b}>>{a + b}"], a + b
        elif kind in ("tier1", "tier3"):
            add = rng.random() < 0.5
            a, b = draw_pair("+" if add else "-",
                             lambda: (rng.randint(1, 9) if kind == "tier1" else rng.randint(10, 99), rng.randint(1, 9)))
            if add:
                q, lines, r = f"What is {a} + {b}?", [f"{a} + {b} = <<{a}+{b}={a + b}>>{a + b}"], a + b
            else:
                a, b = max(a, b), min(a, b)  # no negative answers in the early tiers
                q, lines, r = f"What is {a} - {b}?", [f"{a} - {b} = <<{a}-{b}={a - b}>>{a - b}"], a - b
        elif kind == "tier4":
            a, b = draw_pair("×", lambda: (rng.randint(10, 99), rng.randint(2, 9)))
            q, lines, r = f"What is {a} × {b}?", mul_steps(a, b), a * b  # the reference curriculum's format
        elif kind == "tier5":
            a, b = draw_pair("×", lambda: (rng.randint(10, 20), rng.randint(10, 20)))
            q, lines, r = f"What is {a} × {b}?", mul_steps(a, b), a * b
        elif kind == "times_table":  # every fact once per 81 items, in a seeded order
            if i % 81 == 0:
                facts = [(x, y) for x in range(1, 10) for y in range(1, 10)]
                rng.shuffle(facts)
            a, b = facts[i % 81]
            q, lines, r = _worded(rng, a, "×", b, kind), [f"{a} × {b} = <<{a}*{b}={a * b}>>{a * b}"], a * b
        elif kind == "add_100":
            a, b = draw_pair("+", lambda: (rng.randint(1, 100), rng.randint(1, 100)))
            q, lines, r = _worded(rng, a, "+", b, kind), [add_steps(a, b)], a + b
        else:  # mul_2x1
            a, b = draw_pair("×", lambda: (rng.randint(10, 99), rng.randint(2, 9)))
            q, lines, r = _worded(rng, a, "×", b, kind), mul_steps(a, b, sum_steps=True), a * b
        out.append(gsm_item(kind, i, q, lines, r))
    return out


def _worded(rng: random.Random, a: int, op: str, b: int, kind: str) -> str:
    return f"What is {a} {_WORDED[kind] if rng.random() < 0.5 else op} {b}?"
