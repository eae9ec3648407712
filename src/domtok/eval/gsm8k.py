"""GSM8K: answer extraction, grading, and the `domtok eval gsm8k` evaluation.

Extraction has two modes, reported separately:
- strict:   only the dataset's own `#### N` line counts.
- flexible: `#### N`, else "The answer is N", else the `A: N` line of the GSM8K paper's
            solutions, else the last number in the text.

Numbers are normalised before comparison: `$`, thousands commas (`1,000`), a trailing period,
a percent sign and units after the number (`18 dollars`, `5kg`) are dropped, and the value is
compared as a decimal, so `18.00` == `18` and `-3` is negative.

Domain tokens (`<MUL_6_9_54>`): their operand digits are NEVER read as numbers. A domain token
states one number, its value (`<MUL_6_9_54>` reads "6 × 9 = 54"), so before extraction each
token is replaced by that value, as one number. A model that ends with `#### <MUL_6_9_54>`
therefore answers 54 -- that is what the token says -- and `<MUL_6_9_54> eggs` never yields
6 or 9. (The value is the last field of the token text, so this works for any token set
named `<NAME_..._value>`, also for non-canonical operand orders such as `<MUL_9_6_54>`.)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from domtok.errors import DomtokError

# A domain token: `<MUL_6_9_54>`, `<ADD_12_30_42>`; the last field is the value it states.
DOMAIN_TOKEN_RE = re.compile(r"<[A-Z][A-Z0-9]*((?:_-?\d+)+)>")
# A number as people write it: optional sign, optional $, digits with optional thousands
# commas, optional decimals. A '-' right after a digit is a minus operator, not a sign.
_NUM = r"(?<![\d.,])-?\$?-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\d.,])-?\$?-?\.\d+"
NUMBER_RE = re.compile(_NUM)
STRICT_RE = re.compile(r"####\s*(" + _NUM + ")")
ANSWER_IS_RE = re.compile(r"answer is\s*:?\s*(?:\*\*)?\s*(" + _NUM + ")", re.IGNORECASE)
A_COLON_RE = re.compile(r"(?:^|\n)\s*A:\s*(" + _NUM + ")")

INVALID = None  # what extract_answer returns when no answer can be read


def replace_domain_tokens(text: str) -> str:
    """`<MUL_6_9_54>` -> ` 54 ` (the number the token states; its operands are never read)."""
    return DOMAIN_TOKEN_RE.sub(lambda m: " " + m.group(1).rsplit("_", 1)[1] + " ", text)


def normalize_number(s: str) -> str | None:
    """'$1,000.00' -> '1000'; '-0.50' -> '-0.5'; '18.' -> '18'. None if not a number."""
    s = s.strip().replace("$", "").replace(",", "").rstrip(".").rstrip("%")
    if s.startswith("--"):
        s = s[1:]
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == 0:
        return "0"
    out = format(d.normalize(), "f")
    return out


def extract_answer(text: str, mode: str = "flexible") -> str | None:
    """The model's final answer as a normalised number string, or None if there is none.

    mode "strict": the `#### N` form only. mode "flexible": `#### N`, else "The answer is N",
    else the last `A: N` line, else the last number. The first `####` (and first "The answer
    is") wins, as in OpenAI's grader: what comes after is the model rambling past its answer.
    """
    if mode not in ("strict", "flexible"):
        raise ValueError(f"extract_answer: mode must be 'strict' or 'flexible', got {mode!r}")
    text = replace_domain_tokens(text)
    m = STRICT_RE.search(text)
    if m:
        return normalize_number(m.group(1))
    if mode == "strict":
        return INVALID
    m = ANSWER_IS_RE.search(text)
    if m:
        return normalize_number(m.group(1))
    found = A_COLON_RE.findall(text)
    if found:
        return normalize_number(found[-1])
    found = NUMBER_RE.findall(text)
    if found:
        return normalize_number(found[-1])
    return INVALID


def parse_gold(answer_field: str) -> str:
    """Gold answer from a GSM8K `answer` field (the number after `####`)."""
    if "####" not in answer_field:
        raise ValueError(f"GSM8K answer has no '####' line: {answer_field[-80:]!r}")
    got = normalize_number(answer_field.split("####")[-1].strip())
    if got is None:
        raise ValueError(f"GSM8K answer after '####' is not a number: {answer_field[-80:]!r}")
    return got


def is_correct(text: str, gold: str | int | float, mode: str = "flexible") -> bool:
    """True if the answer extracted from `text` equals `gold` as a number."""
    pred = extract_answer(text, mode)
    g = normalize_number(str(gold))
    return pred is not None and g is not None and Decimal(pred) == Decimal(g)


# ---------------------------------------------------------------------------- the evaluation

@dataclass
class GSM8KEvalConfig:
    model: str = ""                 # domtok model dir or Hugging Face GPT-2 dir
    data: str | None = None         # local jsonl/dir in the GSM8K schema; None = hub openai/gsm8k;
                                    # "synthetic:word_problems" = the generated test split
    split: str = "test"
    max_bad_fraction: float = 0.01  # malformed records of a local file tolerated before failing
    n: int = 0                      # 0 = every item; else a seeded random subset of n
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
    """The evaluated items, each with a stable id (`test-17` = line 17 of the split), in order."""
    if cfg.n < 0:
        raise DomtokError(f"GSM8K eval: n is {cfg.n}; give a number of items >= 1 (or 0 for all)")
    from domtok.data.sources import load_gsm8k, sample_records

    if cfg.data == SYNTHETIC_SOURCE:
        # The generated GSM-style test split: disjoint from the train split that synthetic SFT
        # and GRPO use, so the tiny study has a held-out GSM test without any download.
        from domtok.data.synthetic import word_problems

        n = cfg.n or SYNTHETIC_DEFAULT_N
        return [{"id": f"synthetic-test-{i}", "question": r["question"], "gold": parse_gold(r["answer"])}
                for i, r in enumerate(word_problems(n, cfg.seed, split="test"))]
    records = [dict(r, _index=i) for i, r in enumerate(load_gsm8k(cfg.split, cfg.data,
                                                                                max_bad_fraction=cfg.max_bad_fraction))]
    if not records:
        raise DomtokError(f"{cfg.data or 'hub:openai/gsm8k'}: no GSM8K records in split {cfg.split!r}")
    if cfg.n and cfg.n < len(records):
        records = sample_records(records, cfg.n, cfg.seed)
    return [{"id": f"{cfg.split}-{r['_index']}", "question": r["question"], "gold": parse_gold(r["answer"])}
            for r in records]


def build_prompt(question: str, tokenizer, cfg: GSM8KEvalConfig) -> str:
    from domtok.chat import render_prompt

    if cfg.inject_prompt:
        if not getattr(tokenizer, "uses_domain_tokens", False):
            raise DomtokError(f"{cfg.model}: --inject-prompt needs a domain-token model; this model's condition is "
                              f"{getattr(tokenizer, 'condition', '?')!r} (its tokenizer would split the tokens into text)")
        from domtok.tokens.inject import inject_domain_tokens

        question = inject_domain_tokens(question, tokenizer.token_set.name).text
    return render_prompt(question, system=cfg.system)


def run(cfg: GSM8KEvalConfig, out_dir, engine=None) -> dict:
    """Evaluate a model on GSM8K; writes items.jsonl + summary.json (rank 0) and returns the summary.

    `engine` replaces the model's Engine (tests pass a stub that answers known strings); it
    needs `.tokenizer` and `.generate(prompts, params, batch_size=...)`.
    """
    from domtok.chat import STOP_STRINGS
    from domtok.engine import SamplingParams
    from domtok.eval.common import (eval_engine, gather_rows, generation_fields, generation_metrics, is_repetitive,
                                    my_batches, write_results)
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
    for batch in my_batches(len(items), cfg.batch_size, info):
        idx = [order[b] for b in batch]
        gens = engine.generate([prompts[i] for i in idx], params, batch_size=cfg.batch_size)
        for i, g in zip(idx, gens):
            it = items[i]
            row = {"id": it["id"], "benchmark": "gsm8k", "prompt": prompts[i], "completion": g.text,
                   "ids": list(g.ids), "gold": it["gold"],
                   "answer_strict": extract_answer(g.text, "strict"),
                   "answer_flexible": extract_answer(g.text, "flexible"),
                   "correct_strict": is_correct(g.text, it["gold"], "strict"),
                   "correct_flexible": is_correct(g.text, it["gold"], "flexible"),
                   **generation_fields(g), "hit_max_tokens": g.finish_reason == "length",
                   "emitted_eos": g.finish_reason == "eos",
                   "domain_tokens": int(tokenizer.count_domain_tokens(g.ids)),
                   "repetition": is_repetitive(g.text)}
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
    ci = {"accuracy_strict": wilson_ci(k_s, n), "accuracy_flexible": wilson_ci(k_f, n)}
    return write_results(out_dir, "gsm8k", cfg, out, metrics, ci, time.time() - t0,
                         extra={"world_size": info.world_size, "device": str(info.device)})
