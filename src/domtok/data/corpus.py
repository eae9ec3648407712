"""The math-web corpus: the tiny pretraining preset's text documents, generated.

`math_web_corpus(n_docs, seed)`: documents mixing prose, times-table pages
(`times_table_page`), worked word problems, sums and worked multiplications, and worksheets of
drills; the worked kinds never work a pair held out for the probes (`domtok.data.steps`).
"""

from __future__ import annotations

import random

from domtok.data.drills import drills
from domtok.data.steps import add_steps, draw_pair, mul_steps
from domtok.data.word_problems import TEMPLATES, word_problems

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
