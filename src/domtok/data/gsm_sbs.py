"""GSM-SBS: multiplications worked step by step, drilled or rewritten into real GSM8K items.

`gsm_sbs(n, seed, gsm8k=None)`: "What is a times b?" with the product worked out step by step,
`12 × 12 = (10 + 2) × 12 = 10 × 12 + 2 × 12 = 120 + 24 = 144`, recursively down to
single-digit facts or multiplications by 10 (`domtok.data.steps.mul_steps`); given GSM8K train
records, 80% of the items (512 of the reference's 640) are instead real GSM8K items rewritten
the same way (`gsm_sbs_rewrite`, `rewrite_answer`).
"""

from __future__ import annotations

import random
import re
from typing import Iterable

from domtok.data.steps import draw_pair, gsm_item, is_base, mul_steps
from domtok.notation import iter_annotations


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
        out.append(gsm_item("gsm_sbs", i, f"What is {a} times {b}?", lines, a * b))
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
        if value != a * b or a == 0 or b == 0 or is_base(a, b):
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
