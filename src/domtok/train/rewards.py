"""Rewards for GRPO: binary, shaped (the reference study's weights), shaped_fair, or custom.

A reward function scores one completion and returns a dict of named terms; the reward is
their sum. Named terms let GRPO log the mean/std of every term per step, so one can see
*what* the policy is being paid for (the reference logged only the total).

shaped (reference weights, every one a config field):
    correct                          -> {"correct": 1.0} alone, nothing else
    otherwise the sum of
      close        +0.3  the extracted answer is within ±1 of gold, or within 10% of it
      shows_work   +0.1  the text contains "=" or "####"
      domain       +0.2  the completion ids contain at least one domain token (counted from
                         ids, and only when the tokenizer's condition uses domain tokens)
      short        +0.1  fewer than 150 words
      repetition   -0.3  see `has_repeated_trigram`
shaped_fair gives both conditions the same terms for the same content: no domain-token term
(that bonus can only be earned in the domain condition, a confound the report must state when
`shaped` is used), and shows_work, short and repetition are computed on the text with every
domain token expanded to `a × b = c` (`expand_domain_tokens`), so `<MUL_6_9_54>` shows work
and counts as the five words of `6 × 9 = 54`, exactly as the baseline's spelled-out fact does.
(`shaped` reads the raw text, as the reference study did.) correct and close read the raw
text in both kinds, like the GSM8K evaluation.

Custom rewards: `kind: "my_pkg.my_module:my_reward"`; the function is called as
    my_reward(text=str, gold=str, ids=list[int], tokenizer=Tokenizer, question=str)
and returns a float or a dict {term_name: float}. It is imported, never eval'd.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Callable

from domtok.errors import DomtokError


@dataclass
class RewardConfig:
    kind: str = "shaped"          # binary | shaped | shaped_fair | "module:function"
    answer_mode: str = "flexible"  # passed to eval.gsm8k.is_correct / extract_answer
    correct: float = 1.0
    close: float = 0.3
    close_abs: float = 1.0        # |pred - gold| <= close_abs ...
    close_rel: float = 0.1        # ... or |pred - gold| < close_rel * |gold|
    shows_work: float = 0.1
    domain: float = 0.2
    short: float = 0.1
    short_words: int = 150        # "short" means fewer than this many words
    repetition: float = -0.3
    repetition_min_words: int = 10  # the check only applies to responses this long or longer
    repetition_count: int = 3     # a trigram seen this many times (once + "twice later")


def words(text: str) -> list[str]:
    """Whitespace-separated words, lower-cased: the unit of 'short' and 'repetition'."""
    return text.lower().split()


def has_repeated_trigram(text: str, min_words: int = 10, count: int = 3) -> bool:
    """True when the response has >= min_words words and some word trigram occurs >= count times.

    Exactly: w = text.lower().split(); the trigrams are (w[i], w[i+1], w[i+2]) for every i,
    overlapping occurrences included. The reference's wording, "a trigram reappears twice
    later", is count = 3 (the first occurrence plus two more).
    """
    w = words(text)
    if len(w) < min_words:
        return False
    seen: dict[tuple[str, str, str], int] = {}
    for i in range(len(w) - 2):
        t = (w[i], w[i + 1], w[i + 2])
        seen[t] = seen.get(t, 0) + 1
        if seen[t] >= count:
            return True
    return False


def _to_float(s) -> float | None:
    if s is None:
        return None
    try:
        v = float(str(s).replace(",", "").strip().rstrip("."))
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def is_close(pred: float | None, gold: float | None, abs_tol: float = 1.0, rel_tol: float = 0.1) -> bool:
    if pred is None or gold is None:
        return False
    d = abs(pred - gold)
    return d <= abs_tol or d < rel_tol * abs(gold)


def binary_reward(text: str, gold: str, cfg: RewardConfig) -> dict[str, float]:
    from domtok.eval.gsm8k import is_correct

    return {"correct": cfg.correct if is_correct(text, gold, mode=cfg.answer_mode) else 0.0}


def expanded_text(text: str, tokenizer) -> str:
    """`text` with the domain tokens of the tokenizer's token set spelled out as `a × b = c`.

    Applied in both conditions (a baseline that writes a token's text gets the same
    expansion); a tokenizer without a token set (custom stubs) leaves the text as it is.
    """
    from domtok.tokens.inject import expand_domain_tokens

    token_set = getattr(tokenizer, "token_set", None)
    return expand_domain_tokens(text, token_set) if token_set is not None else text


def shaped_reward(text: str, gold: str, ids: list[int], tokenizer, cfg: RewardConfig,
                  fair: bool = False) -> dict[str, float]:
    from domtok.eval.gsm8k import extract_answer, is_correct

    terms = {"correct": 0.0, "close": 0.0, "shows_work": 0.0, "short": 0.0, "repetition": 0.0}
    if not fair:
        terms["domain"] = 0.0
    if is_correct(text, gold, mode=cfg.answer_mode):
        terms["correct"] = cfg.correct  # correct -> the correct reward alone
        return terms
    if is_close(_to_float(extract_answer(text, mode=cfg.answer_mode)), _to_float(gold), cfg.close_abs, cfg.close_rel):
        terms["close"] = cfg.close
    if fair:  # the same content earns the same terms whether a fact is a token or spelled out
        text = expanded_text(text, tokenizer)
    if "=" in text or "####" in text:
        terms["shows_work"] = cfg.shows_work
    if not fair and getattr(tokenizer, "uses_domain_tokens", False) and tokenizer.count_domain_tokens(ids) > 0:
        terms["domain"] = cfg.domain
    if len(words(text)) < cfg.short_words:
        terms["short"] = cfg.short
    if has_repeated_trigram(text, cfg.repetition_min_words, cfg.repetition_count):
        terms["repetition"] = cfg.repetition
    return terms


def load_custom(path: str) -> Callable:
    """Import `module:function` (never eval)."""
    module, _, name = path.partition(":")
    if not module or not name:
        raise DomtokError(f"reward {path!r}: a custom reward is written 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise DomtokError(f"reward {path!r}: cannot import it ({e}); check the module path and function name") from None
    if not callable(fn):
        raise DomtokError(f"reward {path!r}: {name} is not callable")
    return fn


def make_reward_fn(cfg: RewardConfig) -> Callable[..., dict[str, float]]:
    """A function (text, gold, ids, tokenizer, question) -> {term: value} for cfg.kind."""
    if cfg.kind == "binary":
        return lambda text, gold, ids, tokenizer, question="": binary_reward(text, gold, cfg)
    if cfg.kind in ("shaped", "shaped_fair"):
        fair = cfg.kind == "shaped_fair"
        return lambda text, gold, ids, tokenizer, question="": shaped_reward(text, gold, ids, tokenizer, cfg, fair)
    if ":" in cfg.kind:
        fn = load_custom(cfg.kind)

        def custom(text, gold, ids, tokenizer, question=""):
            out = fn(text=text, gold=gold, ids=ids, tokenizer=tokenizer, question=question)
            if isinstance(out, dict):
                return {str(k): float(v) for k, v in out.items()}
            return {"reward": float(out)}

        return custom
    raise DomtokError(f"reward.kind {cfg.kind!r}: expected binary, shaped, shaped_fair or 'module:function'")
