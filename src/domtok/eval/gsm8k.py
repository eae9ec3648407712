"""GSM8K: answer extraction, grading, and the `domtok eval gsm8k` evaluation.

One reading of a model's answer serves every benchmark (GSM8K, the arithmetic probes, the
GRPO/RFT rewards): `read_answer(text, mode)` gives the number and the rule that produced it.
Rules, in order; the first that yields a number wins:

- `####`:       the dataset's own `#### N` line (the first one: what follows is rambling);
- `answer is`:  "The answer is N" (the first one);
- `A:`:         the last `A: N` line, the form of the GSM8K paper's solutions;
- `last` (mode "flexible") or `first` (mode "first"): the last / first number the text states.
Mode "strict" uses `####` only; "first" is for completions that give their answer right away
(the probe prompts `... The answer is` and `7 × 8 =`), where later text is rambling.

An operand is never the answer. Numbers are read as *statements*: a run such as
`7 × 8 = 56`, `7 times 8 is 56` or `12 × 12 = (10 + 2) × 12 = 120 + 24 = 144` states the
number after its last `=` (or `is` / `equals`) when that is a single number; an unanswered
expression (`7 × 8`, `7 × 8 = 120 + 24`) states none, so restating the question never
yields one of its operands. Each rule reads the statement at its number: `#### 7 × 8 = 56`
and `The answer is 7 × 8 = 56` are 56, and `The answer is 7 × 8` falls through to the next rule.

Numbers are normalised before comparison: `$`, thousands commas (`1,000`), a trailing period,
a percent sign and units after the number (`18 dollars`, `5kg`) are dropped, and the value is
compared as a decimal, so `18.00` == `18` and `-3` is negative (`domtok.notation.normalize_number`;
the gold `#### N` line is read by `domtok.notation.parse_gold`).

Domain tokens (`<MUL_6_9_54>`): their operand digits are NEVER read as numbers. A domain token
states one number, its value (`<MUL_6_9_54>` reads "6 × 9 = 54"), so before extraction each
token is replaced by that value, as one number. A model that ends with `#### <MUL_6_9_54>`
therefore answers 54 -- that is what the token says -- and `<MUL_6_9_54> eggs` never yields
6 or 9; `7 × 8 = <MUL_7_8_56>` reads 56. (The value is the last field of the token text, so
this works for any token set named `<NAME_..._value>`, also for non-canonical operand orders
such as `<MUL_9_6_54>`.) `Answer.from_token` says when the answer was a token's value.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from decimal import Decimal

from domtok.errors import DomtokError
from domtok.notation import DOMAIN_TOKEN_RE, normalize_number, parse_gold, token_value

# A number as people write it: optional sign, optional $, digits with optional thousands
# commas, optional decimals. A '-' right after a digit is a minus operator, not a sign.
_NUM = r"(?<![\d.,])-?\$?-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\d.,])-?\$?-?\.\d+"
NUMBER_RE = re.compile(_NUM)
STRICT_RE = re.compile(r"####\s*(" + _NUM + ")")
ANSWER_IS_RE = re.compile(r"answer is\s*:?\s*(?:\*\*)?\s*(" + _NUM + ")", re.IGNORECASE)
A_COLON_RE = re.compile(r"(?:^|\n)\s*A:\s*(" + _NUM + ")")
# An arithmetic statement: terms (numbers, maybe in brackets) joined by operators and `=`.
# Word operators and the spaced `x` need spaces around them ("2x4" is a name, not a product).
_TERM = r"(?:\([ \t]*)*(?:" + _NUM + r")(?:[ \t]*\))*"
_OP_LINK = r"[ \t]*[-+*/×·⋅∙÷−^][ \t]*|[ \t]+(?:[xX]|times|plus|minus|multiplied[ \t]+by|divided[ \t]+by)[ \t]+"
_EQ_LINK = r"[ \t]*=[ \t]*|[ \t]+(?:is|equals)[ \t]+"

MODES = ("strict", "flexible", "first")
INVALID = None  # what extract_answer returns when no answer can be read


@dataclass(frozen=True)
class Answer:
    value: str | None         # the normalised number, None when no rule found one
    rule: str | None = None   # "####" | "answer is" | "A:" | "first" | "last"
    span: str = ""            # the statement it was read from: "56", "7 × 8 = 56"
    from_token: bool = False  # the number is a domain token's value (`<MUL_7_8_56>`)


def _replace_tokens(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The text with each token replaced by ` value `, and where those values now stand."""
    if "<" not in text:
        return text, []
    out, spans, last, n = [], [], 0, 0
    for m in DOMAIN_TOKEN_RE.finditer(text):
        value = token_value(m.group(0))
        out.append(text[last:m.start()])
        n += m.start() - last + 1
        spans.append((n, n + len(value)))
        out.append(f" {value} ")
        n += len(value) + 1
        last = m.end()
    out.append(text[last:])
    return "".join(out), spans


_TERM_RE = re.compile(_TERM)
_OP_LINK_RE = re.compile(_OP_LINK)
_EQ_LINK_RE = re.compile(_EQ_LINK)


def _statement(text: str, start: int) -> tuple[int, re.Match | None]:
    """Read the statement whose first number starts at `start`: (its end, the number it states).

    Terms are joined by operators and `=`; `is` / `equals` join only after an operator
    (`7 times 8 is 56`, but in `56 is 8 more` the 56 stands alone). The stated number is
    the term after the last `=` when no operator follows it, or the lone number of a
    statement without links; an unanswered expression states None.
    """
    term = _TERM_RE.match(text, start)
    pos, last, ops_since_eq, any_link, answered = term.end(), term, False, False, True
    while True:
        link = _OP_LINK_RE.match(text, pos)
        is_eq = False
        if link is None:
            link = _EQ_LINK_RE.match(text, pos)
            if link is None or (not ops_since_eq and "=" not in link.group(0)):
                break
            is_eq = True
        nxt = _TERM_RE.match(text, link.end())
        if nxt is None:
            break
        any_link = True
        ops_since_eq = not is_eq
        answered = is_eq
        pos, last = nxt.end(), nxt
    if any_link and not answered:
        return pos, None
    return pos, NUMBER_RE.search(text, last.start())


def _answer_at(text: str, pos: int, rule: str, token_starts) -> tuple[int, Answer | None]:
    """The answer the statement at `pos` states (None if it states none), and where it ends."""
    end, num = _statement(text, pos)
    value = normalize_number(num.group(0)) if num else None
    if value is None:
        return end, None
    return end, Answer(value, rule, text[pos:end].strip(), num.start() in token_starts)


def read_answer(text: str, mode: str = "flexible") -> Answer:
    """The model's answer and the rule that produced it (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"read_answer: mode must be one of {MODES}, got {mode!r}")
    text, spans = _replace_tokens(text)
    starts = {a for a, _ in spans}
    marked = [("####", STRICT_RE.search(text))]
    if mode != "strict":
        a_lines = list(A_COLON_RE.finditer(text))
        marked += [("answer is", ANSWER_IS_RE.search(text)), ("A:", a_lines[-1] if a_lines else None)]
    for rule, m in marked:
        if m is not None and (a := _answer_at(text, m.start(1), rule, starts)[1]) is not None:
            return a
    if mode == "strict":
        return Answer(INVALID)
    rule = "first" if mode == "first" else "last"
    found, pos = None, 0
    while (m := NUMBER_RE.search(text, pos)) is not None:
        pos, a = _answer_at(text, m.start(), rule, starts)
        pos = max(pos, m.end())
        if a is not None:
            found = a
            if mode == "first":
                break
    return found or Answer(INVALID)


def extract_answer(text: str, mode: str = "flexible") -> str | None:
    """The model's final answer as a normalised number string, or None (`read_answer(...).value`)."""
    return read_answer(text, mode).value


def is_correct(text: str, gold: str | int | float, mode: str = "flexible") -> bool:
    """True if the answer extracted from `text` equals `gold` as a number."""
    pred = extract_answer(text, mode)
    g = normalize_number(str(gold))
    return pred is not None and g is not None and Decimal(pred) == Decimal(g)


# ---------------------------------------------------------------------------- the evaluation

@dataclass
class GSM8KEvalConfig:
    model: str = ""                 # domtok model dir, Hugging Face GPT-2 dir or Hub model id (user/name)
    condition: str | None = None    # the tokenizer of a GPT-2 dir whose files do not say (reference models)
    data: str | None = None         # local jsonl/dir in the GSM8K schema; None = hub openai/gsm8k;
                                    # "synthetic:word_problems" = the generated word problems
    split: str = "test"             # the data's split; synthetic: test (report) or dev (tune)
    max_bad_fraction: float = 0.01  # malformed records of a local file tolerated before failing
    n: int = 0                      # 0 = every item; else a seeded random subset of n
    limit: int = 0                  # 0 = off; else the first N items in dataset order (lm-eval's --limit)
    seed: int = 0                   # subset draw and sampling seed
    batch_size: int = 32
    max_new_tokens: int = 256
    temperature: float = 0.0        # 0 = greedy
    system: str | None = None       # optional system message (chat.render_prompt)
    calculator: bool = False        # engine evaluates `<<expr=` and forces `result>>`
    inject_prompt: bool = False     # inject domain tokens into the question at inference time
    device: str = "auto"
    dtype: str = "auto"             # bf16 autocast on CUDA, fp32 on CPU; or float32 / bfloat16 / float16


SYNTHETIC_SOURCE = "synthetic:word_problems"
SYNTHETIC_DEFAULT_N = 200


def load_items(cfg: GSM8KEvalConfig) -> list[dict]:
    """The evaluated items, each with a stable id (`test-17` = line 17 of the split), in order:
    {"id", "question", "gold" (the normalised number), "solution" (the gold worked answer)},
    and for the generated word problems `template` and `has_mul` (see `domtok.data.word_problems.TEMPLATE_HAS_MUL`)."""
    from domtok.data.sources import load_gsm8k, sample_records
    from domtok.eval.common import check_subset

    check_subset(cfg, "GSM8K eval")

    if cfg.data == SYNTHETIC_SOURCE:
        # The generated GSM-style dev or test split: disjoint from each other and from the train
        # split that synthetic SFT and GRPO use, so the tiny study has a held-out GSM test (and a
        # dev set to tune on) without any download. Items keep their template, for inference
        # that clusters by template.
        from domtok.data.word_problems import word_problems

        if cfg.split not in ("dev", "test"):
            raise DomtokError(f"{SYNTHETIC_SOURCE}: split {cfg.split!r} is not an evaluation split; "
                              "use split: test (report) or dev (tune)")
        n = cfg.n or SYNTHETIC_DEFAULT_N
        return [{"id": f"synthetic-{cfg.split}-{i}", "question": r["question"], "gold": parse_gold(r["answer"]),
                 "solution": r["answer"], "template": r["template"], "has_mul": r["has_mul"]}
                for i, r in enumerate(word_problems(n, cfg.seed, split=cfg.split))][:cfg.limit or None]
    records = [dict(r, _index=i) for i, r in enumerate(load_gsm8k(cfg.split, cfg.data,
                                                                                max_bad_fraction=cfg.max_bad_fraction))]
    if not records:
        raise DomtokError(f"{cfg.data or 'hub:openai/gsm8k'}: no GSM8K records in split {cfg.split!r}")
    if cfg.n and cfg.n < len(records):
        records = sample_records(records, cfg.n, cfg.seed)
    if cfg.limit:
        records = records[:cfg.limit]
    return [{"id": f"{cfg.split}-{r['_index']}", "question": r["question"], "gold": parse_gold(r["answer"]),
             "solution": r["answer"]} for r in records]


def build_prompt(question: str, tokenizer, cfg: GSM8KEvalConfig) -> str:
    from domtok.chat import render_prompt

    if cfg.inject_prompt:
        if not getattr(tokenizer, "uses_domain_tokens", False):
            raise DomtokError(f"{cfg.model}: --inject-prompt needs a domain-token model; this model's condition is "
                              f"{getattr(tokenizer, 'condition', '?')!r} (its tokenizer would split the tokens into text)")
        question = tokenizer.inject(question).text  # with the condition's injector settings
    return render_prompt(question, system=cfg.system)


def run(cfg: GSM8KEvalConfig, out_dir, engine=None) -> dict:
    """Evaluate a model on GSM8K; writes items.jsonl + summary.json (rank 0) and returns the summary.

    Besides the generated answer, each item gets the continuous scores `gold_bpb` (the final
    answer line) and `gold_solution_bpb` (the gold worked solution), teacher-forced after the
    same prompt (`domtok.eval.gold`); the summary's metrics hold their means.

    `engine` replaces the model's Engine (tests pass a stub that answers known strings); it
    needs `.tokenizer` and `.generate(prompts, params, batch_size=...)`.
    """
    from domtok.chat import STOP_STRINGS
    from domtok.engine import SamplingParams
    from domtok.eval.common import (eval_engine, gather_rows, generation_fields, generation_metrics, is_repetitive,
                                    progress_batches, write_results)
    from domtok.eval.gold import answer_text, gold_bits_per_byte, mean_score
    from domtok.eval.stats import wilson_ci
    from domtok.utils import dist_setup, seed_everything

    t0 = time.time()
    info = dist_setup(cfg.device)
    seed_everything(cfg.seed)
    engine = eval_engine(cfg, info, engine)
    tokenizer = engine.tokenizer
    items = load_items(cfg)
    prompts = [build_prompt(it["question"], tokenizer, cfg) for it in items]
    # Batches of similar prompt lengths (little padding), fixed before sharding so every rank
    # count runs the very same batches.
    lengths = [len(tokenizer.encode(p)) for p in prompts]
    order = sorted(range(len(items)), key=lambda i: (-lengths[i], i))
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed,
                            stop_strings=tuple(STOP_STRINGS), calculator=cfg.calculator)
    rows: list[tuple[int, dict]] = []
    t_gen = time.time()
    for batch in progress_batches(len(items), cfg.batch_size, info, "gsm8k"):
        idx = [order[b] for b in batch]
        gens = engine.generate([prompts[i] for i in idx], params, batch_size=cfg.batch_size)
        batch_prompts = [prompts[i] for i in idx]
        gold_bpb = gold_bits_per_byte(engine, batch_prompts, [answer_text(items[i]["gold"], chat=True) for i in idx])
        solution_bpb = gold_bits_per_byte(engine, batch_prompts, [" " + items[i]["solution"] for i in idx])
        for i, g, gb, sb in zip(idx, gens, gold_bpb, solution_bpb):
            it = items[i]
            row = {"id": it["id"], "benchmark": "gsm8k", "split": cfg.split,
                   **{k: it[k] for k in ("template", "has_mul") if k in it},
                   "prompt": prompts[i], "completion": g.text,
                   "ids": list(g.ids), "gold": it["gold"],
                   "answer_strict": extract_answer(g.text, "strict"),
                   "answer_flexible": extract_answer(g.text, "flexible"),
                   "answer_rule": read_answer(g.text, "flexible").rule,
                   "correct_strict": is_correct(g.text, it["gold"], "strict"),
                   "correct_flexible": is_correct(g.text, it["gold"], "flexible"),
                   **generation_fields(g), "hit_max_tokens": g.finish_reason == "length",
                   "emitted_eos": g.finish_reason == "eos",
                   "domain_tokens": int(tokenizer.count_domain_tokens(g.ids)),
                   "repetition": is_repetitive(g.text), "gold_bpb": gb, "gold_solution_bpb": sb}
            row["correct"] = row["correct_flexible"]
            rows.append((i, row))
    out = gather_rows(rows, info)
    gen_time = time.time() - t_gen  # after the gather: the slowest rank's time, for all tokens
    if not info.is_main:
        return {}
    n = len(out)
    k_s = sum(r["correct_strict"] for r in out)
    k_f = sum(r["correct_flexible"] for r in out)
    tokens = sum(r["response_tokens"] for r in out)
    dom = sum(r["domain_tokens"] for r in out)
    metrics = {"accuracy_strict": k_s / n, "accuracy_flexible": k_f / n,
               "avg_response_tokens": tokens / n,
               "hit_max_rate": sum(r["hit_max_tokens"] for r in out) / n,
               "eos_rate": sum(r["emitted_eos"] for r in out) / n,
               "repetition_rate": sum(r["repetition"] for r in out) / n,
               "domain_tokens_total": dom, "domain_tokens_per_response": dom / n,
               "tokens_per_s": tokens / max(gen_time, 1e-9), **generation_metrics(out)}
    for key in ("gold_bpb", "gold_solution_bpb"):
        if (m := mean_score(out, key)) is not None:
            metrics[key] = m
    ci = {"accuracy_strict": wilson_ci(k_s, n), "accuracy_flexible": wilson_ci(k_f, n)}
    return write_results(out_dir, "gsm8k", cfg, out, metrics, ci, time.time() - t0,
                         extra={"world_size": info.world_size, "device": str(info.device)})
