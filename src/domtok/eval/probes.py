"""Arithmetic probes: short questions with one number as the answer, per category.

The reference suite (mul_table, mul_multidigit, addition) plus categories that test the notation
the model was trained on:

    mul_table        81  every ordered pair a, b in 1..9: "What is a times b?"
    mul_multidigit  ≤100 a in 10..99, b in 2..9 (seeded, held out)
    addition        ≤100 a, b in 1..100, not both single digits (seeded, held out)
    subtraction     ≤100 a in 10..100, b in 1..a (seeded, held out; answers are >= 0)
    mul_2digit      ≤100 a, b in 10..99 (seeded, held out)
    symbolic         81  "a × b =" for every ordered pair 1..9
    symbolic_context 81  "c × d = cd, so a × b =": a given fact (never with the asked product),
                         then the asked one
    symbolic_table   81  a times-table page of the pretraining corpus ("The a times table\n
                         a × 1 = a, so a times 1 is a.\n ...") up to the line of a × b, whose
                         start `a × b = ab` is the answer (best with prompt_style plain: the
                         text as pretraining saw it)

The reference categories are the default; the rest are opt-in with `categories`.

Held out: a seeded category asks only pairs that `domtok.data.steps.held_out` allows: the
pairs `probe_pair` reserves for the probes (a fixed 20% of each operation's multi-digit pairs,
which no drill, SFT set, GRPO prompt or pretraining document that domtok generates asks or
works as its problem), less every pair that such text shows as a step of another problem
(`90 × 7` in `98 × 7`, `70 + 15` in `47 + 38`, `65 - 7` in `85 - 27`): they test the method on
sums and products the model has never read. That leaves few small products: the 2-digit ×
1-digit pool holds only a >= 50 (`gsm_sbs` works every 1-digit × 11..49 as a step). The
single-digit facts (mul_table and the symbolic categories) are the facts themselves, trained
on purpose.

Items are drawn WITHOUT replacement: a seeded category asks min(n, pool size) distinct pairs
(a sum or a product of two 2-digit numbers once, in a seeded order of its operands), and the
summary records `items_per_category` and `pool_per_category`.

Splits: the held-out pairs of each seeded category are split by a stable hash (`probe_split`)
into `dev` (30%: tune on these) and `test` (the default: report these); the two never share a
pair. The table categories ask the 81 trained facts in both splits: they are training items,
not held-out ones.

Notation. Each condition is probed in the notation its training text used, through one
mechanism: the question goes through `Tokenizer.inject` -- the condition's injector with the
settings `domtok prepare` used for its pretraining text (mode, word forms), and unchanged for
the baseline. So in `symbolic_context` the domain model sees the given fact as its token
(`<MUL_3_4_12>, so 6 × 9 =`) and the baseline as digits (`3 × 4 = 12, so 6 × 9 =`), and in
`symbolic_table` each sees the times-table page as its pretraining text wrote it (the domain
model answers the next line with its token, `<MUL_6_9_54>`, which reads as 54). `symbolic`
asks `6 × 9 =`, a string the domain model saw only where the injector left it (its complete
facts were tokens); the report says so when `symbolic` is run. The asked product is
never rewritten (the injector leaves `6 × 9 =` without a result, and `What is
6 times 9?`, alone: it would leak the answer). `inject_prompt: false` shows every model the
questions as written. The summary's `notation` records what this model saw.

Prompt styles: "answer_is" (reference: `User: q\nAssistant: The answer is`), "chat" (the plain
chat prompt, the model answers in its own words), "plain" (the question text alone, e.g.
"7 × 8 =", as in pretraining text).

Scoring uses the one answer reading of every benchmark, `domtok.eval.gsm8k.read_answer`: mode
"first" for "answer_is" and "plain" (the prompt asks for the number right away; whatever
follows is rambling), "flexible" for "chat". It reads statements, not digits: to "What is 7
times 8?" the completions `7 × 8 = 56`, `7 × 8 = <MUL_7_8_56>`, `<MUL_7_8_56>` and
`So 7 times 8 is 56.\n#### 56` all answer 56, and restating the question (`7 times 8`) never
answers 7. Each item records the answer, the rule that produced it (`answer_rule`), the text
it was read from (`answer_span`) and whether it was a domain token's value (`answer_from_token`).
"""

from __future__ import annotations

import functools
import hashlib
import random
import time
from dataclasses import dataclass, field

from domtok.errors import DomtokError
from domtok.eval import REFERENCE_CATEGORIES
from domtok.eval.gsm8k import read_answer

ALL_CATEGORIES = REFERENCE_CATEGORIES + ("subtraction", "mul_2digit", "symbolic", "symbolic_context",
                                         "symbolic_table")
PROMPT_STYLES = ("answer_is", "chat", "plain")
# how `read_answer` reads a completion of each prompt style
ANSWER_MODE = {"answer_is": "first", "plain": "first", "chat": "flexible"}


@dataclass
class ProbesConfig:
    model: str = ""                 # domtok model dir, Hugging Face GPT-2 dir or Hub model id (user/name)
    condition: str | None = None    # the tokenizer of a GPT-2 dir whose files do not say (reference models)
    categories: list[str] = field(default_factory=lambda: list(REFERENCE_CATEGORIES))
    n_per_category: int = 100       # for the seeded categories (the tables are always complete)
    max_items: int = 0              # > 0: a seeded subset of this many items of all categories (smoke runs)
    limit: int = 0                  # > 0: the first N items of each category (lm-eval's --limit per subtask)
    seed: int = 42                  # the reference suite's seed
    split: str = "test"             # test (report) | dev (tune): disjoint held-out pairs
    prompt_style: str = "answer_is"
    inject_prompt: bool = True      # questions in the model's training notation (Tokenizer.inject)
    batch_size: int = 64
    max_new_tokens: int = 32
    device: str = "auto"
    dtype: str = "auto"             # bf16 autocast on CUDA, fp32 on CPU; or float32 / bfloat16 / float16


def first_per_category(items: list[dict], limit: int) -> list[dict]:
    """The first `limit` items of each category, in order (`--limit`)."""
    kept: dict[str, int] = {}
    out = []
    for it in items:
        kept[it["category"]] = kept.get(it["category"], 0) + 1
        if kept[it["category"]] <= limit:
            out.append(it)
    return out


# The seeded categories: their operation, its word, and every operand pair they may ask (each
# pair of a commutative operation once, smaller first).
SEEDED = {"mul_multidigit": ("×", "times"), "mul_2digit": ("×", "times"), "addition": ("+", "plus"),
          "subtraction": ("-", "minus")}
OPS = {"×": lambda a, b: a * b, "+": lambda a, b: a + b, "-": lambda a, b: a - b}
SPLITS = ("dev", "test")
DEV_SHARE = 0.3  # share of each seeded category's held-out pairs that only the dev split asks


def _domain(cat: str):
    if cat == "mul_multidigit":
        return ((a, b) for a in range(10, 100) for b in range(2, 10))
    if cat == "mul_2digit":
        return ((a, b) for a in range(10, 100) for b in range(a, 100))
    if cat == "addition":
        return ((a, b) for a in range(1, 101) for b in range(max(a, 10), 101))
    return ((a, b) for a in range(10, 101) for b in range(1, a + 1))  # subtraction: answers >= 0


def probe_split(op: str, a: int, b: int) -> str:
    """"dev" or "test": a stable hash of the pair, independent of the one that holds it out."""
    x, y = (min(a, b), max(a, b)) if op in "+×" else (a, b)
    h = hashlib.sha256(f"probe-split:{op}:{x}:{y}".encode()).digest()
    return "dev" if int.from_bytes(h[:8], "big") / 2**64 < DEV_SHARE else "test"


@functools.lru_cache(maxsize=None)
def pool(cat: str, split: str = "test") -> list[tuple[int, int]]:
    """Every pair a seeded category may ask in `split`: inside its range, `held_out` (never asked,
    worked or shown as a step by training text) and of that split, in a fixed order."""
    from domtok.data.steps import held_out

    op = SEEDED[cat][0]
    return [(a, b) for a, b in _domain(cat) if held_out(op, a, b) and probe_split(op, a, b) == split]


def make_probes(categories=REFERENCE_CATEGORIES, n: int = 100, seed: int = 42, split: str = "test") -> list[dict]:
    """The probe items: {"id", "category", "question", "gold"}; same seed, same items.

    A seeded category asks `n` distinct pairs of its `pool` (all of them when the pool is
    smaller), drawn without replacement by its own `random.Random(f"{seed}-{category}")`, so
    adding a category never changes the items of another. The table categories ask the 81
    facts, the same in both splits.
    """
    unknown = [c for c in categories if c not in ALL_CATEGORIES]
    if unknown:
        raise DomtokError(f"unknown probe categories {unknown}; choose from {', '.join(ALL_CATEGORIES)}")
    if n < 1:
        raise DomtokError(f"probes: n_per_category is {n}; give at least 1 item per category (--n 1 or more)")
    if not categories:
        raise DomtokError("probes: no categories; give at least one (--categories mul_table,addition)")
    if split not in SPLITS:
        raise DomtokError(f"probes: unknown split {split!r}; choose dev (for tuning) or test")

    items = []

    def add(cat, key, question, gold):
        items.append({"id": f"{cat}-{key}", "category": cat, "question": question, "gold": str(gold)})

    for cat in categories:
        rng = random.Random(f"{seed}-{cat}")
        if cat == "mul_table":
            for a in range(1, 10):
                for b in range(1, 10):
                    add(cat, f"{a}x{b}", f"What is {a} times {b}?", a * b)
        elif cat == "symbolic":
            for a in range(1, 10):
                for b in range(1, 10):
                    add(cat, f"{a}x{b}", f"{a} × {b} =", a * b)
        elif cat == "symbolic_table":
            # the corpus's own pages (`domtok.data.corpus.times_table_page`), cut before line b
            from domtok.data.corpus import times_table_page

            for a in range(1, 10):
                lines = times_table_page(a).split("\n")
                for b in range(1, 10):
                    add(cat, f"{a}x{b}", "\n".join(lines[:b]) + "\n", a * b)
        elif cat == "symbolic_context":
            # A given fact, then the asked one: each condition sees the given fact in its own
            # notation (build_prompt). It never has the asked product, so it cannot leak the answer.
            for a in range(1, 10):
                for b in range(1, 10):
                    c, d = rng.randint(1, 9), rng.randint(1, 9)
                    while c * d == a * b:
                        c, d = rng.randint(1, 9), rng.randint(1, 9)
                    add(cat, f"{a}x{b}", f"{c} × {d} = {c * d}, so {a} × {b} =", a * b)
        else:
            op, word = SEEDED[cat]
            pairs = pool(cat, split)
            for a, b in rng.sample(pairs, min(n, len(pairs))):  # without replacement
                if cat in ("mul_2digit", "addition") and rng.random() < 0.5:
                    a, b = b, a  # the pool holds each pair once, smaller first; ask either way
                add(cat, f"{a}{'x' if op == '×' else op}{b}", f"What is {a} {word} {b}?", OPS[op](a, b))
    return items


def build_prompt(item: dict, style: str, tokenizer=None, inject: bool = True) -> str:
    """The prompt of one item; with a tokenizer (and `inject`), the question in its notation."""
    from domtok.chat import render_prompt

    if style not in PROMPT_STYLES:
        raise DomtokError(f"unknown prompt style {style!r}; choose from {', '.join(PROMPT_STYLES)}")
    question = item["question"]
    if inject and tokenizer is not None:
        question = tokenizer.inject(question).text
    if style == "plain":
        return question
    prompt = render_prompt(question)
    return prompt + " The answer is" if style == "answer_is" else prompt


def score(items: list[dict], completions: list[str], style: str) -> list[dict]:
    out = []
    for it, c in zip(items, completions):
        ans = read_answer(c, ANSWER_MODE[style])
        out.append({"answer": ans.value, "correct": ans.value is not None and float(ans.value) == float(it["gold"]),
                    "answer_rule": ans.rule, "answer_span": ans.span, "answer_from_token": ans.from_token})
    return out


def notation(tokenizer, items: list[dict], prompts: list[str], inject: bool) -> dict:
    """What this model saw: its condition, whether and how questions were injected, and how
    many prompts that changed (the report states it per condition)."""
    domain = bool(getattr(tokenizer, "uses_domain_tokens", False))
    changed = sum(it["question"] not in p for it, p in zip(items, prompts))
    return {"condition": getattr(tokenizer, "condition", None), "injected": inject and domain,
            "injection": tokenizer.injection if inject and domain else None,
            "prompts_changed": changed, "prompts": len(prompts)}


def item_counts(rows: list[dict], split: str) -> dict:
    """How many distinct questions each category asked (the report prints it: item-level
    intervals assume distinct items) and how many its pool holds (tables: 81)."""
    cats = sorted({r["category"] for r in rows}, key=ALL_CATEGORIES.index)
    return {"items_per_category": {c: len({r["question"] for r in rows if r["category"] == c}) for c in cats},
            "pool_per_category": {c: len(pool(c, split)) if c in SEEDED else 81 for c in cats}}


def summarize(rows: list[dict]) -> tuple[dict, dict]:
    """Per-category and overall accuracy (metrics) with Wilson 95% intervals (ci), and the mean
    `gold_bpb` per category and overall (`gold_bpb_<category>`, `gold_bpb_all`) where scored."""
    from domtok.eval.gold import mean_score
    from domtok.eval.stats import wilson_ci

    metrics, ci = {}, {}
    cats = sorted({r["category"] for r in rows}, key=lambda c: ALL_CATEGORIES.index(c))
    for name in cats + ["all"]:
        sel = rows if name == "all" else [r for r in rows if r["category"] == name]
        k = sum(r["correct"] for r in sel)
        metrics[f"accuracy_{name}"] = k / len(sel)
        ci[f"accuracy_{name}"] = wilson_ci(k, len(sel))
        if (m := mean_score(sel, "gold_bpb")) is not None:
            metrics[f"gold_bpb_{name}"] = m
    metrics["domain_tokens_per_response"] = sum(r["domain_tokens"] for r in rows) / len(rows)
    metrics["answer_from_token_rate"] = sum(r["answer_from_token"] for r in rows) / len(rows)
    return metrics, ci


def run(cfg: ProbesConfig, out_dir, engine=None) -> dict:
    """Run the probes through the Engine (greedy); writes items.jsonl + summary.json (rank 0).

    Each item also gets `gold_bpb`: bits per byte of the gold answer teacher-forced after the
    same prompt (`domtok.eval.gold`: `" #### N"` for chat prompts, `" N"` for the others)."""
    from domtok.chat import STOP_STRINGS
    from domtok.engine import SamplingParams
    from domtok.eval.common import eval_engine, gather_rows, generation_fields, generation_metrics, progress_batches, write_results
    from domtok.eval.gold import answer_text, gold_bits_per_byte
    from domtok.utils import dist_setup, seed_everything

    t0 = time.time()
    items = make_probes(cfg.categories, cfg.n_per_category, cfg.seed, cfg.split)  # checks the config before a model loads
    info = dist_setup(cfg.device)
    seed_everything(cfg.seed)
    engine = eval_engine(cfg, info, engine)
    tok = engine.tokenizer
    if cfg.limit > 0:
        items = first_per_category(items, cfg.limit)
    if cfg.max_items > 0:
        from domtok.data.sources import sample_records

        items = sample_records(items, cfg.max_items, cfg.seed)
    prompts = [build_prompt(it, cfg.prompt_style, tok, cfg.inject_prompt) for it in items]
    lengths = [len(tok.encode(p)) for p in prompts]
    order = sorted(range(len(items)), key=lambda i: (-lengths[i], i))
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=cfg.seed,
                            stop_strings=tuple(STOP_STRINGS))
    rows = []
    for batch in progress_batches(len(items), cfg.batch_size, info, "probes"):
        idx = [order[b] for b in batch]
        gens = engine.generate([prompts[i] for i in idx], params, batch_size=cfg.batch_size)
        scored = score([items[i] for i in idx], [g.text for g in gens], cfg.prompt_style)
        gold_bpb = gold_bits_per_byte(engine, [prompts[i] for i in idx],
                                      [answer_text(items[i]["gold"], chat=cfg.prompt_style == "chat") for i in idx])
        for i, g, s, gb in zip(idx, gens, scored, gold_bpb):
            rows.append((i, {"id": items[i]["id"], "benchmark": "probes", "split": cfg.split,
                             "category": items[i]["category"],
                             "question": items[i]["question"], "prompt": prompts[i], "completion": g.text,
                             "ids": list(g.ids), "gold": items[i]["gold"], **s,
                             **generation_fields(g),
                             "domain_tokens": int(tok.count_domain_tokens(g.ids)), "gold_bpb": gb}))
    out = gather_rows(rows, info)
    if not info.is_main:
        return {}
    metrics, ci = summarize(out)
    metrics.update(generation_metrics(out))
    return write_results(out_dir, "probes", cfg, out, metrics, ci, time.time() - t0,
                         extra={"world_size": info.world_size, "prompt_style": cfg.prompt_style,
                                "notation": notation(tok, items, prompts, cfg.inject_prompt),
                                "split": cfg.split, **item_counts(out, cfg.split)})
