"""Templated word problems on numbers up to 99, split into train, dev and test.

`word_problems(n, seed, split)`: ten `TEMPLATES`, worked with `domtok.data.steps`'s steps
(`add_steps`, `sub_steps`, `mul_steps`), of which five hold no multiplication
(`TEMPLATE_HAS_MUL`); the train, dev and test splits never share a (template, numbers) pair, so
they never share a question, and the train split leaves out every problem that works a
`probe_pair`.
"""

from __future__ import annotations

import hashlib
import random

from domtok.data.steps import add_steps, gsm_item, mul_steps, probe_pair, sub_steps

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
        item = gsm_item(f"wp-{split}", i, q, lines, r)
        item.update(template=template, has_mul=TEMPLATE_HAS_MUL[template], params=list(params))
        out.append(item)
    return out
