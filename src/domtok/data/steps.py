"""Worked steps and held-out pairs: the formats every synthetic generator writes its working in.

Every synthetic generator (`domtok.data.drills`, `domtok.data.gsm_sbs`,
`domtok.data.word_problems`, `domtok.data.corpus`) is a pure function of its arguments
(`random.Random(seed)`, no global state), and every number in every answer is computed here,
never typed in. GSM-format items (`gsm_item`) are dicts `{"id", "question", "answer"}` where
`answer` uses GSM8K's `<<expr=result>>` calculator annotations and ends with `#### N`.

Worked steps: `mul_steps` (a product split by place value and distributed, recursively down to
single-digit facts or multiplications by 10), `add_steps` (a sum by place value), `sub_steps`.

Held-out pairs (`probe_pair`, `held_out`): a fixed 20% of the multi-digit operand pairs of each
operation are reserved for the arithmetic probes (`domtok.eval.probes`), and no training
generator (drills, GSM-SBS drills, the train split of the word problems, the corpus) ever
asks or works one of them as its problem: each draws its operands through `draw_pair`. Some
reserved pairs are still steps inside another problem's working (`90 × 7` in `98 × 7`, `70 +
15` in `47 + 38`); `held_out` leaves those out too (`training_step_pairs`), so a probe asks a
sum or a product the model has never read worked or used, and measures the method, not recall.
"""

from __future__ import annotations

import hashlib


def gsm_item(prefix: str, i: int, question: str, answer_lines: list[str], result: int) -> dict:
    """A GSM-format item: the answer is the working's lines, then `#### result`."""
    return {"id": f"{prefix}-{i:06d}", "question": question, "answer": "\n".join(answer_lines + [f"#### {result}"])}


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


def is_base(a: int, b: int) -> bool:
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
    if is_base(a, b) or a == 0 or b == 0:
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
        if not is_base(pa, pb):
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
