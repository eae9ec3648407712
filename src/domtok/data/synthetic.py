"""Synthetic math data that domtok generates itself: the default run needs no network.

Everything here is a pure function of its arguments (`random.Random(seed)`, no global state),
and every number in every answer is computed, never typed in. GSM-format items are dicts
`{"id", "question", "answer"}` where `answer` uses GSM8K's `<<expr=result>>` calculator
annotations and ends with `#### N`.

- `drills(kind, n, seed)`: times-table and addition drills, and the reference curriculum's five
  tiers (`tier1` 1-digit ±, `tier2` 1-digit ×, `tier3` 2-digit ± 1-digit, `tier4` 2-digit ×
  1-digit, `tier5` 10-20 × 10-20 with decomposition).
- `gsm_sbs(n, seed, gsm8k=None)`: "What is a times b?" with the product worked out step by
  step, `12 × 12 = (10 + 2) × 12 = 10 × 12 + 2 × 12 = 120 + 24 = 144`, recursively down to
  single-digit facts or multiplications by 10; given GSM8K train records, 80% of the items
  (512 of the reference's 640) are instead real GSM8K items rewritten the same way
  (`gsm_sbs_rewrite`).
- `word_problems(n, seed, split)`: templated word problems on numbers up to 99, worked with the
  same steps (`add_steps`, `sub_steps`, `mul_steps`), ten templates of which five hold no
  multiplication (`TEMPLATE_HAS_MUL`); the train, dev and test splits never share a
  (template, numbers) pair, so they never share a question.
- `math_web_corpus(n_docs, seed)`: text documents mixing prose, drills, word problems and
  worked multiplications, for the tiny pretraining preset.

Held-out pairs (`probe_pair`, `held_out`): a fixed 20% of the multi-digit operand pairs of each
operation are reserved for the arithmetic probes (`domtok.eval.probes`), and no training
generator here (drills, GSM-SBS drills, the train split of the word problems, the corpus) ever
asks or works one of them as its problem. Some reserved pairs are still steps inside another
problem's working (`90 × 7` in `98 × 7`, `70 + 15` in `47 + 38`); `held_out` leaves those out
too (`training_step_pairs`), so a probe asks a sum or a product the model has never read worked
or used, and measures the method, not recall.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Iterable

from domtok.notation import iter_annotations

# ---------------------------------------------------------------------------- step-by-step products

def _parts(a: int) -> list[int]:
    """Place-value parts of a: 347 -> [300, 40, 7] (zeros dropped)."""
    parts, place = [], 1
    while a:
        d = a % 10
        if d:
            parts.append(d * place)
        a //= 10
        place *= 10
    return parts[::-1]


def _is_base(a: int, b: int) -> bool:
    """Products a learner knows directly: a single-digit fact, or a multiplication by 10, 100, ..."""
    if a <= 9 and b <= 9:
        return True
    return _is_pow10(a) or _is_pow10(b)


def _is_pow10(x: int) -> bool:
    s = str(x)
    return x >= 10 and s[0] == "1" and set(s[1:]) == {"0"}


PROBE_SHARE = 0.2  # share of each operation's multi-digit pairs that only the probes ask


def probe_pair(op: str, a: int, b: int) -> bool:
    """True if `a op b` is held out for the probes: training text never works it (see the module
    docstring). A stable hash of the pair (`a + b` and `b + a` are one pair, so are `a × b` and
    `b × a`); pairs of two single digits are facts, never held out: every one is trained."""
    if max(a, b) <= 9:
        return False
    x, y = (min(a, b), max(a, b)) if op in ("+", "×") else (a, b)
    h = hashlib.sha256(f"probe:{op}:{x}:{y}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < PROBE_SHARE


def draw_pair(op: str, draw, held_out: bool = False) -> tuple[int, int]:
    """`draw()` (a seeded draw of two operands) repeated until `probe_pair` says `held_out` of
    its pair: training generators take the others, the probes (`held_out=True`) only those."""
    while True:
        a, b = draw()
        if probe_pair(op, a, b) == held_out:
            return a, b


def mul_steps(a: int, b: int, sum_steps: bool = False) -> list[str]:
    """Lines that compute a × b; the last line ends in `= a*b`. Each line's `=` chain is exact.

    The larger factor is split by place value and distributed; sub-products that are not
    base cases get their own lines first (recursively). `d·10^k × y` becomes `d × y × 10^k`.
    The reference's format adds the partial products in one step (`490 + 14 = 504`);
    `sum_steps` works a sum of two partial products by place value too (`490 + 14 = 400 + 90 +
    10 + 4 = 400 + 100 + 4 = 504`, `add_steps`): the tiny study's format, chosen because that one
    step was most of a small model's errors (read on seed 0, a tuning seed, of an earlier
    version of the study).
    """
    if a < 0 or b < 0:
        raise ValueError("mul_steps works on non-negative integers")
    if _is_base(a, b) or a == 0 or b == 0:
        return [f"{a} × {b} = {a * b}"]
    # split the factor with more digits (the first on a tie), keep the other whole
    if len(_parts(a)) == 1 and len(_parts(b)) == 1:
        # both are d·10^k: 20 × 30 = 2 × 3 × 10 × 10
        da, pa = int(str(a)[0]), a // int(str(a)[0])
        db, pb = int(str(b)[0]), b // int(str(b)[0])
        return [f"{a} × {b} = {da} × {db} × {pa * pb} = {da * db} × {pa * pb} = {a * b}"]
    split_a = len(_parts(a)) > 1 and (len(str(a)) >= len(str(b)) or len(_parts(b)) == 1)
    x, y = (a, b) if split_a else (b, a)
    parts = _parts(x)
    lines: list[str] = []
    terms = []
    for p in parts:
        pa, pb = (p, y) if split_a else (y, p)
        if not _is_base(pa, pb):
            lines += mul_steps(pa, pb, sum_steps)
        terms.append((pa, pb))
    split = "(" + " + ".join(str(p) for p in parts) + ")"
    lhs = f"{split} × {y}" if split_a else f"{y} × {split}"
    products = " + ".join(f"{pa} × {pb}" for pa, pb in terms)
    values = " + ".join(str(pa * pb) for pa, pb in terms)
    if sum_steps and len(terms) == 2:
        total = add_steps(terms[0][0] * terms[0][1], terms[1][0] * terms[1][1])  # "490 + 14 = ... = 504"
        lines.append(f"{a} × {b} = {lhs} = {products} = {total}")
    else:
        lines.append(f"{a} × {b} = {lhs} = {products} = {values} = {a * b}")
    return lines


def add_steps(a: int, b: int) -> str:
    """One line that adds a + b by place value; each `=` step is exact and ends in `= a+b`.

    Each number split into its place-value parts, written next to it, then hundreds with
    hundreds, tens with tens, units with units: `47 + 38 = 40 + 7 + 30 + 8 = 70 + 15 = 85`,
    `134 + 250 = 100 + 30 + 4 + 200 + 50 = 300 + 80 + 4 = 384`. A sum of at most two place-value
    parts is a fact: `40 + 8 = 48`, `7 + 8 = 15`. (Splitting each number right where it stands
    is what a small model got right more often: with the parts grouped by place first, `40 + 30 +
    7 + 8`, its errors were almost all a units digit taken from the wrong number; read on seed
    0, a tuning seed, of an earlier version of the study.)
    """
    if a < 0 or b < 0:
        raise ValueError("add_steps works on non-negative integers")
    groups: dict[int, list[int]] = {}
    for x in (a, b):
        for part in _parts(x):
            groups.setdefault(len(str(part)), []).append(part)
    places = sorted(groups, reverse=True)
    parts = _parts(a) + _parts(b)
    if len(parts) <= 2:
        return f"{a} + {b} = {a + b}"
    steps = [" + ".join(map(str, parts))]
    partial = [sum(groups[k]) for k in places]
    if len(partial) < len(parts):
        steps.append(" + ".join(map(str, partial)))
    return f"{a} + {b} = " + " = ".join(steps) + f" = {a + b}"


def sub_steps(a: int, b: int) -> str:
    """One line for a - b (a >= b): the tens of b first, then its units: `85 - 27 = 85 - 20 - 7 =
    65 - 7 = 58`. A b of one place-value part is a fact: `85 - 7 = 78`, `85 - 20 = 65`."""
    if not 0 <= b <= a:
        raise ValueError("sub_steps works on integers a >= b >= 0")
    parts = _parts(b)
    if len(parts) <= 1:
        return f"{a} - {b} = {a - b}"
    chain, rest, left = [f"{a} - " + " - ".join(map(str, parts))], parts, a
    while len(rest) > 1:
        left, rest = left - rest[0], rest[1:]
        chain.append(f"{left} - " + " - ".join(map(str, rest)))
    return f"{a} - {b} = " + " = ".join(chain) + f" = {a - b}"


# ---------------------------------------------------------------------------- drills

def _item(prefix: str, i: int, question: str, answer_lines: list[str], result: int) -> dict:
    return {"id": f"{prefix}-{i:06d}", "question": question, "answer": "\n".join(answer_lines + [f"#### {result}"])}


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
        out.append(_item(kind, i, q, lines, r))
    return out


def _worded(rng: random.Random, a: int, op: str, b: int, kind: str) -> str:
    return f"What is {a} {_WORDED[kind] if rng.random() < 0.5 else op} {b}?"


def gsm_sbs(n: int, seed: int, gsm8k: Iterable[dict] | None = None, n_rewritten: int | None = None) -> list[dict]:
    """GSM-SBS: `n` items whose multiplications are worked step by step down to single-digit facts.

    Without `gsm8k` (the default tiny study has no GSM8K) all `n` are "What is a times b?"
    drills: mostly the reference's range (a 2-9, b 11-25), plus some 2-digit × 2-digit and
    3-digit × 1-digit products so the recursion is exercised. With GSM8K *train* records,
    `n_rewritten` of them (default 80%: the reference's 512 of 640) are rewritten GSM8K items
    (`gsm_sbs_rewrite`) followed by `n - n_rewritten` drills.
    """
    if gsm8k is not None:
        k = round(0.8 * n) if n_rewritten is None else n_rewritten
        if not 0 <= k <= n:
            raise ValueError(f"gsm_sbs: n_rewritten must be in 0..{n}, got {k}")
        return gsm_sbs_rewrite(gsm8k, k, seed) + gsm_sbs(n - k, seed)
    rng = random.Random(f"gsm_sbs/{seed}")
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.6:
            a, b = draw_pair("×", lambda: (rng.randint(2, 9), rng.randint(11, 25)))
        elif r < 0.85:
            a, b = draw_pair("×", lambda: (rng.randint(11, 49), rng.randint(11, 29)))
        else:
            a, b = draw_pair("×", lambda: (rng.randint(101, 999), rng.randint(2, 9)))
        if rng.random() < 0.5:
            a, b = b, a
        lines = mul_steps(a, b)
        lines.append(f"So {a} times {b} is {a * b}.")
        out.append(_item("gsm_sbs", i, f"What is {a} times {b}?", lines, a * b))
    return out


# ---------------------------------------------------------------------------- GSM8K rewritten step by step

# The one kind of annotation `expr` we rewrite (annotations: `domtok.notation`): a clean product
# of two non-negative integers (`12*15`, `12 * 15`).
_CLEAN_PRODUCT = re.compile(r"\s*(\d+)\s*\*\s*(\d+)\s*")
MAX_STEP_LINES = 6  # per product; 99.5% of GSM8K train's clean products need <= 6 (98*3400 needs 7)


def _products_to_rewrite(answer: str) -> list[tuple[int, int]] | None:
    """The clean a*b products of one answer that need steps, in order, or None to leave the item out.

    Only an annotation whose whole `expr` is `a*b` of two integers counts, and only when its
    result is numerically a*b (GSM8K writes money as `<<12*5=60.00>>`; that is fine). Decimals
    (`0.2*50`), three or more factors (`2*3*4`), products inside larger expressions
    (`5*12+3`) and facts a learner already knows (single-digit facts, ×10/×100/...) are left
    as GSM8K wrote them. An item is left out when a clean product would need more than
    MAX_STEP_LINES lines (answers stay short), when any of its annotations does not evaluate
    to its result with `domtok.calculator.evaluate`, or when it has nothing to rewrite.
    """
    from domtok.calculator import evaluate

    out = []
    for expr, result in iter_annotations(answer):
        try:
            value = float(result.replace(",", ""))
        except ValueError:
            return None
        got = evaluate(expr)
        if got is None or abs(got - value) > 1e-6 * max(1.0, abs(value)):
            return None  # a GSM8K annotation the calculator cannot check (`<<560//10=56>>`)
        m = _CLEAN_PRODUCT.fullmatch(expr)
        if not m:
            continue
        a, b = int(m.group(1)), int(m.group(2))
        if value != a * b or a == 0 or b == 0 or _is_base(a, b):
            continue
        if len(mul_steps(a, b)) > MAX_STEP_LINES:
            return None
        if (a, b) not in out:
            out.append((a, b))
    return out or None


def rewrite_answer(answer: str) -> str | None:
    """`answer` with each clean product's `mul_steps` lines inserted before the line that uses it.

    The GSM8K lines themselves (annotations, prose, `#### N`) are kept character for character;
    a step line already written earlier in the answer is not repeated. None if not rewritable.
    """
    products = _products_to_rewrite(answer)
    if products is None:
        return None
    out: list[str] = []
    written: set[str] = set()
    for line in answer.split("\n"):
        for expr, _ in iter_annotations(line):
            m = _CLEAN_PRODUCT.fullmatch(expr)
            if m and (int(m.group(1)), int(m.group(2))) in products:
                for step in mul_steps(int(m.group(1)), int(m.group(2))):
                    if step not in written:
                        written.add(step)
                        out.append(step)
        out.append(line)
    return "\n".join(out)


def gsm_sbs_rewrite(records: Iterable[dict], n: int | None, seed: int) -> list[dict]:
    """`n` GSM8K *train* records (seeded draw, original order) with their products worked step by step.

    Records are `{"question", "answer"}` dicts; only those with a clean integer product that is
    not a single-digit fact are candidates (see `_products_to_rewrite`); `n=None` takes all.
    Ids are `gsm_sbs_rw-<index in records>`, so an item can be traced back to its source.
    """
    candidates = []
    for i, rec in enumerate(records):
        answer = rec.get("answer")
        if isinstance(answer, str) and isinstance(rec.get("question"), str):
            new = rewrite_answer(answer)
            if new is not None:
                candidates.append({"id": f"gsm_sbs_rw-{i:06d}", "question": rec["question"], "answer": new})
    if n is None:
        return candidates
    if n > len(candidates):
        raise ValueError(f"gsm_sbs_rewrite: asked for {n} items but only {len(candidates)} records have a "
                         "multi-digit integer product to rewrite; ask for fewer or give more GSM8K train records")
    keep = sorted(random.Random(f"gsm_sbs_rewrite/{seed}").sample(range(len(candidates)), n))
    return [candidates[j] for j in keep]


# ---------------------------------------------------------------------------- word problems

NAMES = ["Ava", "Ben", "Carla", "Deepak", "Elif", "Femi", "Grace", "Hiro", "Ines", "Jamal", "Kofi", "Lena",
         "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tess", "Uma", "Victor", "Wen", "Yara"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "books", "cookies", "shells", "stamps", "cards", "beads"]
CONTAINERS = ["boxes", "bags", "jars", "baskets", "crates", "packs"]


def _add(rng: random.Random) -> tuple[tuple, str, list[str], int]:
    a, b = rng.randint(5, 99), rng.randint(5, 99)
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    q = f"{name} has {a} {item}. A friend gives {name} {b} more {item}. How many {item} does {name} have now?"
    return (a, b), q, [f"{name} has {add_steps(a, b)} {item} now."], a + b


def _sub(rng: random.Random) -> tuple[tuple, str, list[str], int]:
    a = rng.randint(20, 99)
    b = rng.randint(1, a - 1)
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    q = f"{name} had {a} {item} and gave away {b} of them. How many {item} does {name} have left?"
    return (a, b), q, [f"{name} has {sub_steps(a, b)} {item} left."], a - b


def _mul(rng: random.Random) -> tuple[tuple, str, list[str], int]:
    a, b = rng.randint(2, 9), rng.randint(11, 49)
    name, item, box = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS)
    q = f"{name} buys {a} {box} of {item}. Each of the {box} holds {b} {item}. How many {item} does {name} buy?"
    return (a, b), q, mul_steps(a, b, sum_steps=True) + [f"{name} buys {a * b} {item}."], a * b


def _mul_add(rng: random.Random) -> tuple[tuple, str, list[str], int]:
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 60)
    name, item, box = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS)
    ab = a * b
    q = (f"{name} has {a} {box} with {b} {item} in each, and {c} loose {item}. "
         f"How many {item} does {name} have in total?")
    lines = [f"The {box} hold {a} × {b} = {ab} {item}.", f"In total {name} has {add_steps(ab, c)} {item}."]
    return (a, b, c), q, lines, ab + c


def _price_change(rng: random.Random) -> tuple[tuple, str, list[str], int]:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    cost = a * b
    paid = rng.randint(cost + 1, 99)
    name, item = rng.choice(NAMES), rng.choice(["notebooks", "tickets", "plants", "mugs", "kites"])
    q = f"{name} buys {a} {item} that cost ${b} each and pays with ${paid}. How much change does {name} get?"
    lines = [f"The {item} cost {a} × {b} = {cost} dollars.", f"The change is {sub_steps(paid, cost)} dollars."]
    return (a, b, paid), q, lines, paid - cost


def _bus(rng: random.Random) -> tuple[tuple, str, list[str], int]:
    a = rng.randint(20, 99)
    b, c = rng.randint(1, a - 1), rng.randint(1, 60)
    q = f"A bus has {a} passengers. At a stop {b} of them get off and {c} get on. How many passengers are on the bus now?"
    lines = [f"After the stop {sub_steps(a, b)} passengers are left.",
             f"Then the bus has {add_steps(a - b, c)} passengers."]
    return (a, b, c), q, lines, a - b + c


def _add_three(rng: random.Random) -> tuple[tuple, str, list[str], int]:
    a, b, c = rng.randint(5, 40), rng.randint(5, 40), rng.randint(5, 40)
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    q = (f"{name} collects {a} {item} on Monday, {b} on Tuesday and {c} on Wednesday. "
         f"How many {item} does {name} collect in all?")
    lines = [f"Monday and Tuesday make {add_steps(a, b)} {item}.", f"In all {name} collects {add_steps(a + b, c)} {item}."]
    return (a, b, c), q, lines, a + b + c


def _compare(rng: random.Random) -> tuple[tuple, str, list[str], int]:
    a = rng.randint(20, 99)
    b = rng.randint(1, a - 1)
    first, second = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    q = f"{first} has {a} {item} and {second} has {b} {item}. How many more {item} does {first} have than {second}?"
    return (a, b), q, [f"{first} has {sub_steps(a, b)} more {item}."], a - b


def _mul_sub(rng: random.Random) -> tuple[tuple, str, list[str], int]:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    ab = a * b
    c = rng.randint(1, ab - 1)
    name, item, box = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS)
    q = f"{name} has {a} {box} with {b} {item} in each and gives away {c} {item}. How many {item} does {name} have left?"
    lines = [f"The {box} hold {a} × {b} = {ab} {item}.", f"{name} has {sub_steps(ab, c)} {item} left."]
    return (a, b, c), q, lines, ab - c


def _two_products(rng: random.Random) -> tuple[tuple, str, list[str], int]:
    a, b, c, d = (rng.randint(2, 9) for _ in range(4))
    name = rng.choice(NAMES)
    q = (f"{name} buys {a} notebooks that cost ${b} each and {c} pens that cost ${d} each. "
         f"How many dollars does {name} spend?")
    lines = [f"The notebooks cost {a} × {b} = {a * b} dollars.", f"The pens cost {c} × {d} = {c * d} dollars.",
             f"{name} spends {add_steps(a * b, c * d)} dollars."]
    return (a, b, c, d), q, lines, a * b + c * d


# Five templates without a multiplication (the negative control of a study of multiplication
# tokens: a gain there is not the domain tokens' doing) and five with one.
TEMPLATES = {"add": _add, "sub": _sub, "mul": _mul, "mul_add": _mul_add, "price_change": _price_change,
             "bus": _bus, "add_three": _add_three, "compare": _compare, "mul_sub": _mul_sub,
             "two_products": _two_products}
TEMPLATE_HAS_MUL = {"add": False, "sub": False, "bus": False, "add_three": False, "compare": False,
                    "mul": True, "mul_add": True, "price_change": True, "mul_sub": True, "two_products": True}
# The operand pairs each template works out of its numbers (params): the train split leaves out
# every problem that works a probe's pair (`probe_pair`).
_WORKED_PAIRS = {"add": lambda a, b: [("+", a, b)], "sub": lambda a, b: [("-", a, b)],
                 "mul": lambda a, b: [("×", a, b)], "mul_add": lambda a, b, c: [("+", a * b, c)],
                 "price_change": lambda a, b, paid: [("-", paid, a * b)],
                 "bus": lambda a, b, c: [("-", a, b), ("+", a - b, c)],
                 "add_three": lambda a, b, c: [("+", a, b), ("+", a + b, c)],
                 "compare": lambda a, b: [("-", a, b)], "mul_sub": lambda a, b, c: [("-", a * b, c)],
                 "two_products": lambda a, b, c, d: [("+", a * b, c * d)]}
# Each template's parameter space is split by a stable hash: 10% dev (tune on it), 10% test
# (report on it), 80% train; a (template, numbers) pair is in one split only.
SPLIT_SHARES = (("dev", 0.1), ("test", 0.2))  # (split, upper end of its share of the hash)
SPLITS = ("train", "dev", "test")


def _param_split(template: str, params: tuple) -> str:
    """Which split a (template, numbers) pair belongs to; a stable hash, not Python's hash()."""
    h = int.from_bytes(hashlib.sha256(f"{template}:{params}".encode()).digest()[:8], "big") / 2**64
    return next((split for split, upper in SPLIT_SHARES if h < upper), "train")


def word_problems(n: int, seed: int, split: str = "train", templates: tuple[str, ...] | None = None) -> list[dict]:
    """`n` distinct word problems of the given split, cycling through the templates.

    Items carry `template`, `has_mul` and `params` besides the GSM fields, so disjointness can
    be checked and inference can cluster by template. A dev or test set never asks the same
    numbers of a template twice (each item is its own (template, numbers) pair); the train
    split asks distinct questions and leaves out every problem that works a `probe_pair`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    names = list(templates or TEMPLATES)
    rng = random.Random(f"word_problems/{split}/{seed}")
    out, seen = [], set()
    for i in range(n):
        template = names[i % len(names)]
        for _ in range(10_000):
            params, q, lines, r = TEMPLATES[template](rng)
            key = q if split == "train" else (template, params)
            if (_param_split(template, params) == split and key not in seen
                    and (split != "train" or not any(probe_pair(*p) for p in _WORKED_PAIRS[template](*params)))):
                break
        else:
            raise ValueError(f"word_problems: template {template!r} ran out of distinct {split} items; ask for fewer")
        seen.add(key)
        item = _item(f"wp-{split}", i, q, lines, r)
        item.update(template=template, has_mul=TEMPLATE_HAS_MUL[template], params=list(params))
        out.append(item)
    return out


# ---------------------------------------------------------------------------- held-out pairs

def _pair_key(op: str, a: int, b: int) -> tuple[str, int, int]:
    """One key per pair: `a + b` and `b + a` are one pair, so are `a × b` and `b × a`."""
    return (op, min(a, b), max(a, b)) if op in ("+", "×") else (op, a, b)


def step_pairs(chain: str) -> set[tuple[str, int, int]]:
    """The sums, differences and products one worked `=` chain shows on its way, as `_pair_key`s.

    Conservative on purpose: in each `=` segment (and in the parenthesised split of one, `(90 +
    8)`), every two numbers of a sum (`40 + 7 + 30 + 8` shows 40 + 30, 7 + 8 and 40 + 7 alike),
    the first two numbers of a difference (`85 - 20 - 7`) and the first two factors of each
    product (`90 × 7`, `5 × 8 × 10`).
    """
    out = set()
    for seg in chain.split(" = "):
        pieces = [seg]
        while "(" in pieces[-1]:
            s = pieces.pop()
            i, j = s.index("("), s.index(")")
            pieces += [s[i + 1:j], s[:i] + "_" + s[j + 1:]]
        for s in pieces:
            if " - " in s:
                x, y = s.split(" - ")[:2]
                if x.isdigit() and y.isdigit():
                    out.add(("-", int(x), int(y)))
                continue
            terms = s.split(" + ")
            nums = [int(t) for t in terms if t.isdigit()]
            out.update(_pair_key("+", x, y) for i, x in enumerate(nums) for y in nums[i + 1:])
            for t in terms:
                f = t.split(" × ")
                if len(f) > 1 and f[0].isdigit() and f[1].isdigit():
                    out.add(_pair_key("×", int(f[0]), int(f[1])))
    return out


def _training_chains() -> set[str]:
    """Every worked chain (`mul_steps`, `add_steps`, `sub_steps` line) that a training generator
    here can write, over each generator's whole range of operands: the drills (tier4, tier5,
    add_100, mul_2x1), `gsm_sbs` drills (either factor first), the word-problem templates (train
    split: a problem that works a `probe_pair` is left out) and the corpus (its worked products,
    sums and worksheets are drills). Problems on a `probe_pair` are never asked, so never worked.
    (GSM8K items rewritten by `gsm_sbs_rewrite` are not generated here: their products are GSM8K's.)"""
    def asked(op, a, b):
        return not probe_pair(op, a, b)

    chains: set[str] = set()
    for a in range(10, 100):
        for b in range(2, 10):  # tier4 (the reference's format), mul_2x1 and the corpus (sum_steps)
            if asked("×", a, b):
                chains.update(mul_steps(a, b) + mul_steps(a, b, sum_steps=True))
    for x_range, y_range in ((range(10, 21), range(10, 21)),  # tier5
                             (range(2, 10), range(11, 26)), (range(11, 50), range(11, 30)),  # gsm_sbs
                             (range(101, 1000), range(2, 10))):
        for a in x_range:
            for b in y_range:
                if asked("×", a, b):
                    chains.update(mul_steps(a, b) + mul_steps(b, a))
    for a in range(2, 10):
        for b in range(11, 50):  # the "mul" template
            if asked("×", a, b):
                chains.update(mul_steps(a, b, sum_steps=True))
    for a in range(1, 101):
        for b in range(1, 101):  # add_100, the corpus's sums, the "add" template (5..99)
            if asked("+", a, b):
                chains.add(add_steps(a, b))
    for ab in {x * y for x in range(2, 10) for y in range(2, 10)}:
        for c in range(1, 61):  # the "mul_add" template
            if asked("+", ab, c):
                chains.add(add_steps(ab, c))
        for paid in range(ab + 1, 100):  # the "price_change" template
            if asked("-", paid, ab):
                chains.add(sub_steps(paid, ab))
        for c in range(1, ab):  # the "mul_sub" template
            if asked("-", ab, c):
                chains.add(sub_steps(ab, c))
    for a in range(20, 100):
        for b in range(1, a):  # the "sub" and "compare" templates, the first step of "bus"
            if asked("-", a, b):
                chains.add(sub_steps(a, b))
    # The other sums of "bus", "add_three" and "two_products" add two numbers up to 100: add_100's.
    return chains


_STEP_PAIRS: frozenset | None = None


def training_step_pairs() -> frozenset:
    """Every pair (`_pair_key`) that some training generator shows as a step (computed once)."""
    global _STEP_PAIRS
    if _STEP_PAIRS is None:
        _STEP_PAIRS = frozenset().union(*map(step_pairs, _training_chains()))
    return _STEP_PAIRS


def held_out(op: str, a: int, b: int) -> bool:
    """True if the probes may ask `a op b`: a `probe_pair` (no training text asks or works it as
    its problem) that no training text shows as a step either (`98 × 7` works `90 × 7`, and
    `47 + 38` adds `70 + 15`), so a probe is never a line the model has read."""
    return probe_pair(op, a, b) and _pair_key(op, a, b) not in training_step_pairs()


# ---------------------------------------------------------------------------- math-web corpus

_TOPICS = ["gardening", "a bake sale", "the school library", "a bus route", "a science fair", "a football season",
           "a farmers market", "a chess club", "a road trip", "a bird count"]
_SENTENCES = [
    "Numbers help us plan {topic}.",
    "When people talk about {topic}, they often need to count things quickly.",
    "A good habit is to check every result twice.",
    "Multiplication is repeated addition, so {a} groups of {b} is the same as adding {b} to itself {a} times.",
    "Tables of facts make mental arithmetic faster.",
    "In {topic}, small mistakes in arithmetic can add up.",
    "Teachers often start with the facts up to nine times nine.",
    "Estimating first tells you whether an answer is reasonable.",
]
_FACT_FORMATS = ["{a} × {b} = {c}", "{a} * {b} = {c}", "{a} x {b} = {c}", "{a}×{b}={c}", "{a}*{b}={c}"]


def _fact_line(rng: random.Random) -> str:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return rng.choice(_FACT_FORMATS).format(a=a, b=b, c=a * b)


def _prose(rng: random.Random, k: int) -> str:
    topic = rng.choice(_TOPICS)
    out = []
    for _ in range(k):
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        out.append(rng.choice(_SENTENCES).format(topic=topic, a=a, b=b))
    return " ".join(out)


def times_table_page(a: int) -> str:
    """The corpus's times-table page of `a`, one line per fact (the probes' `symbolic_table`
    asks for its lines)."""
    # Each fact twice: `6 × 9 = 54` (one domain token in the domain condition) and `6 times 9 is
    # 54` (digits in both), so both conditions read every product's value after its factors.
    return f"The {a} times table\n" + "\n".join(f"{a} × {b} = {a * b}, so {a} times {b} is {a * b}."
                                                 for b in range(1, 10))


def _table_page(rng: random.Random) -> str:
    return times_table_page(rng.randint(1, 9))


# article, table, problem, sums, worked, worksheet
WEB_KIND_WEIGHTS = (1, 2, 2, 2, 2, 4)


def _worksheet_item(rng: random.Random) -> str:
    """A question as the probes ask it and its worked answer: the question's numbers are copied
    into the work, the skill a model needs to answer a question rather than recite facts."""
    kind = rng.choice(("times_table", "add_100", "mul_2x1"))
    item = drills(kind, 1, rng.randrange(2**31))[0]
    return f"Q: {item['question']}\nA: {item['answer'].rsplit(chr(10) + '####', 1)[0]}"


def math_web_corpus(n_docs: int, seed: int) -> list[str]:
    """`n_docs` text documents of mixed "math web" text; every one has single-digit products.

    Kinds: an article (prose + a few facts), a times-table page, a worked word problem, a page
    of sums of two numbers up to 100 worked by place value (`add_steps`), and worked 2-digit ×
    1-digit products (`mul_steps`). The worked kinds are the skills the tiny study's probes test,
    never on a probe's own pair (`probe_pair`).
    """
    rng = random.Random(f"math_web/{seed}")
    docs = []
    for i in range(n_docs):
        kind = rng.choices(("article", "table", "problem", "sums", "worked", "worksheet"), weights=WEB_KIND_WEIGHTS)[0]
        if kind == "article":
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            parts = [_prose(rng, rng.randint(2, 5)),
                     f"For example, {a} × {b} = {a * b}, and {b} * {a} = {a * b} as well.",
                     _prose(rng, rng.randint(1, 3)), "Some facts to remember: " + ", ".join(_fact_line(rng) for _ in range(3)) + "."]
            doc = " ".join(parts)
        elif kind == "table":
            doc = _table_page(rng)
        elif kind == "problem":
            template = rng.choice(sorted(TEMPLATES))
            item = word_problems(1, seed * 1_000_003 + i, "train", templates=(template,))[0]
            doc = f"Problem: {item['question']}\nSolution: {item['answer']}\n{_fact_line(rng)}"
        elif kind == "sums":
            lines = [add_steps(*draw_pair("+", lambda: (rng.randint(1, 100), rng.randint(1, 100))))
                     for _ in range(rng.randint(3, 6))]
            doc = "Adding by place value:\n" + "\n".join(lines)
        elif kind == "worked":
            a, b = draw_pair("×", lambda: (rng.randint(10, 99), rng.randint(2, 9)))
            doc = f"How to multiply {a} by {b} in your head:\n" + "\n".join(mul_steps(a, b, sum_steps=True)) + f"\nSo {a} times {b} is {a * b}."
        else:
            doc = "Worksheet\n" + "\n".join(_worksheet_item(rng) for _ in range(rng.randint(2, 4)))
        docs.append(doc)
    return docs
