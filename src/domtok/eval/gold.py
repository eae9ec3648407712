"""Continuous per-item scores: how many bits per byte a model needs to write the gold answer.

Accuracy is 0/1 per item, and at small scale most of its variation between seeds is noise.
The teacher-forced likelihood of the gold text moves with every bit of the model's belief, so
a difference between conditions shows with fewer seeds (the report shows each metric's
signal-to-noise so a pilot can choose). Two scores per item, both in bits per UTF-8 byte of the
gold text as written (uninjected), so a tokenizer with fewer, longer tokens gains nothing by
its token count and the conditions compare:

- `gold_bpb`: the final answer, written right after the evaluation prompt: `" #### N"` after a
  chat prompt (GSM8K, the GSM-style word problems, chat-style probes: the answer line SFT
  teaches), `" N"` after a prompt that asks for the number itself (probe styles `answer_is`,
  `... The answer is`, and `plain`, `7 × 8 =`). N is the gold number as the benchmark
  normalises it (`14400`, `-2`, `4.5`).
- `gold_solution_bpb` (where the item has a gold worked solution: GSM8K's `answer` field and
  the word problems' worked answer, `#### N` line included): `" " + solution` after the chat
  prompt, i.e. the assistant reply SFT trains on, without its closing EOS.

Scored = -sum(log2 p(token | prompt, earlier gold tokens)) over the gold text's tokens, divided
by its UTF-8 bytes (the leading space counted). The prompt is the evaluation's own prompt (so
in the notation the evaluation showed this model), and the gold text is in the condition's own
notation: `Tokenizer.inject` (the domain condition's injector, as SFT injects assistant text;
the baseline's text unchanged), tokenized on its own after the prompt's ids, as SFT tokenizes
an assistant reply. A prompt too long for the context is cut from the left (as the engine
cuts it); a gold text that does not fit the context by itself gets no score (None).

The model is the engine's (`engine.model`); an engine without one (a test stub that only
generates) gives None for every item.
"""

from __future__ import annotations

import math

from domtok.eval.hellaswag import score_rows


def answer_text(gold: str, chat: bool) -> str:
    """The final-answer text `gold_bpb` scores: `" #### N"` after a chat prompt, else `" N"`."""
    return f" #### {gold}" if chat else f" {gold}"


def gold_bits_per_byte(engine, prompts: list[str], texts: list[str | None]) -> list[float | None]:
    """Bits per UTF-8 byte of each `texts[i]` (as written) given `prompts[i]`, teacher-forced in
    the model's notation; None where a text is None, does not fit the context, or the engine
    has no model. One forward per call: pass one generation batch."""
    model = getattr(engine, "model", None)
    if model is None:
        return [None] * len(prompts)
    tok = engine.tokenizer
    block = getattr(model, "_orig_mod", model).config.block_size
    rows, where = [], []
    for i, (prompt, text) in enumerate(zip(prompts, texts)):
        if not text:
            continue
        gold_ids = list(tok.encode(tok.inject(text).text))
        if not gold_ids or len(gold_ids) > block:
            continue
        ids = (list(tok.encode(prompt)) + gold_ids)[-block - 1:]  # keep the gold; the last id is only a target
        rows.append((ids, len(gold_ids)))
        where.append(i)
    out: list[float | None] = [None] * len(prompts)
    if rows:
        scores = score_rows(model, rows, engine.device, pad_id=tok.eot_id, dtype=getattr(engine, "autocast_dtype", None))
        for i, (logp, _) in zip(where, scores):
            out[i] = -logp / math.log(2) / len(texts[i].encode("utf-8"))
    return out


def mean_score(rows: list[dict], key: str) -> float | None:
    """The mean of `key` over the rows that have it (None when none has)."""
    vals = [r[key] for r in rows if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None
