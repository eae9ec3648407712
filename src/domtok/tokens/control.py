"""The compression-matched control set: as many plain-text tokens as a fact set, shortening
the corpus as much.

A domain condition differs from the baseline in two ways at once: its tokens are facts
(`<MUL_6_9_54>`), and its text is shorter in tokens, so in the same steps it reads more. The
control set keeps the second and drops the first: the same number of new ids (45 for `mul`),
in the same id layout, each a frequent string of whole pre-tokenizer pieces that holds no
digit and no arithmetic (" of the", ", so"), chosen so that the corpus shrinks by the same fraction as
the fact set's injection shrinks it. "Facts versus compression" is then mul versus control.

How the 45 strings are chosen, deterministically from the tokenizer's training corpus:

1. `target` = 1 - tokens(corpus with the fact set injected) / tokens(plain corpus), every
   document counted with its EOT as the shards count it.
2. Candidates are runs of GPT-2 pre-tokenizer pieces (up to `MAX_PIECES`) that hold no digit,
   no arithmetic character (`sets.ARITHMETIC_CHARS`) and no arithmetic word (`ARITHMETIC`):
   " of the", ", so", "?\\nSolution:". They are ranked greedily (`candidates`): each time the
   run that saves most ids (occurrences x (base ids - 1)) in the text the earlier picks left.
3. The first 45 picks shrink the text more than 45 facts do. The set is the first m picks
   (whose greedy savings are exact) and 45 - m consecutive picks from rank t on: m by
   bisection with the rest taken from the bottom of the ranking, then t by bisection (the
   shrinkage rises with m and falls with t). Of the sets measured, the one closest to
   `target` wins. The record gives the shrinkage the tokenizer's own `encode` measures and
   the ranks chosen.

The set is saved beside the run's tokenizer (`token_sets/control.json`, with both
shrinkages) by the tokenizer node when a condition names it (`token_set: control`), and a
condition's tokenizer loads it from there (`tokenizer.saved_token_set`).
"""

from __future__ import annotations

import heapq
import sys
from collections import Counter
from typing import Sequence

from domtok.errors import DomtokError
from domtok.tokens.sets import (ARITHMETIC_CHARS, DomainTokenSet, get_token_set, literal_runs, literal_token_set,
                              pretokenize)

NAME = "control"
MAX_PIECES = 12
POOL = 4  # the greedy ranking is this many sets long: the set is found within it
# Words that name an operation or a result: a control token must not be arithmetic.
ARITHMETIC = frozenset("""times plus minus multiplied multiply multiplies divided divide divides equals equal
    sum sums product products difference quotient squared cubed power total twice double half""".split())


def corpus_tokens(tok, texts: Sequence[str]) -> int:
    """Tokens of `texts` as this condition's shards hold them: injected, encoded, one EOT each."""
    return sum(len(tok.encode(tok.inject(t).text)) + 1 for t in texts)


def allowed_piece(piece: str) -> bool:
    """A pre-tokenizer piece a control string may hold: no digit, no arithmetic character or word."""
    if any(c.isdigit() or c in ARITHMETIC_CHARS for c in piece):
        return False
    return piece.strip().lower() not in ARITHMETIC


def _runs(texts: Sequence[str]) -> list[tuple[str, ...]]:
    """Every maximal run of allowed pieces in `texts` (what a control string may cover)."""
    runs = []
    for t in texts:
        run: list[str] = []
        for p in pretokenize(t):
            if allowed_piece(p):
                run.append(p)
            elif run:
                runs.append(tuple(run))
                run = []
        if run:
            runs.append(tuple(run))
    return runs


def _grams(run: tuple[str, ...]):
    for i in range(len(run)):
        for n in range(1, min(MAX_PIECES, len(run) - i) + 1):
            yield run[i:i + n]


def _split(run: tuple[str, ...], gram: tuple[str, ...]) -> list[tuple[str, ...]] | None:
    """`run` cut at each occurrence of `gram` (left to right), or None if it holds none."""
    n, parts, last, i = len(gram), [], 0, 0
    while i + n <= len(run):
        if run[i:i + n] == gram:
            parts.append(run[last:i])
            last = i = i + n
        else:
            i += 1
    if not parts:
        return None
    parts.append(run[last:])
    return [p for p in parts if p]


def candidates(texts: Sequence[str], base_tok, limit: int) -> list[tuple[str, int]]:
    """Up to `limit` (text, saving) picks, greedily: each time the run of pieces that saves
    most ids (occurrences x (base ids - 1), ties by text) in the text the earlier picks left,
    whose occurrences then leave the text, so the savings of the picks hardly overlap.

    Savings only fall as text leaves, so a heap of earlier savings is a list of upper bounds
    (lazy greedy): the top entry is the best once its saving is current."""
    runs = _runs(texts)
    counts: Counter = Counter(g for r in runs for g in _grams(r))
    unique = sorted({p for r in runs for p in r})
    piece_ids = dict(zip(unique, map(len, base_tok.encode_batch(unique))))
    weight = {g: sum(piece_ids[p] for p in g) - 1 for g in counts}
    heap = [(-c * weight[g], "".join(g), g) for g, c in counts.items() if c * weight[g] > 0]
    heapq.heapify(heap)
    joined = ["".join(r) for r in runs]
    picks = []
    while heap and len(picks) < limit:
        neg, text, gram = heapq.heappop(heap)
        saving = counts[gram] * weight[gram]
        if saving != -neg:
            if saving > 0:
                heapq.heappush(heap, (-saving, text, gram))
            continue
        picks.append((text, saving))
        kept, kept_joined = [], []
        for r, j in zip(runs, joined):
            parts = _split(r, gram) if text in j else None
            if parts is None:
                kept.append(r)
                kept_joined.append(j)
                continue
            counts.subtract(_grams(r))
            for p in parts:
                counts.update(_grams(p))
            kept.extend(parts)
            kept_joined.extend("".join(p) for p in parts)
        runs, joined = kept, kept_joined
    return picks


def build_control_set(texts: Sequence[str], base_tok, fact_set: str = "mul", inject_mode: str = "weak",
                      word_forms: bool = False, log=None) -> tuple[DomainTokenSet, dict]:
    """The control set for `fact_set` on this corpus sample, and its build record
    ({"target", "shrink", "offset", "size", ...}: both shrinkages as fractions of the plain tokens)."""
    texts = list(texts)
    facts = get_token_set(fact_set)
    if facts.leading_space or facts.literal:
        raise DomtokError(f"token set {fact_set!r}: a control set copies a plain fact set's layout "
                          "(one id per token); use token_set: mul")
    size = len(facts.tokens)
    base = base_tok.with_condition("baseline")
    fact_tok = base.with_condition(f"{fact_set}_tokens", facts).with_injection(inject_mode, word_forms)
    n_plain = corpus_tokens(base, texts)
    target = 1.0 - corpus_tokens(fact_tok, texts) / n_plain
    ranked = candidates(texts, base, POOL * size)
    if len(ranked) < size:
        raise DomtokError(f"the corpus sample has only {len(ranked)} candidate word strings, fewer than the "
                          f"{size} a control set needs; sample more documents (tokenizer.sample_docs)")

    # Every piece is encoded on its own (BPE never merges across pieces), so a set's token count
    # is the base ids of the pieces it leaves plus one per occurrence: counted from the pieces.
    docs = [pretokenize(t) for t in texts]
    unique = sorted({p for d in docs for p in d})
    piece_ids = dict(zip(unique, map(len, base.encode_batch(unique))))

    def shrink(texts_: list[str]) -> float:
        ts = literal_token_set(NAME, texts_, fact_set)
        n = 0
        for d in docs:
            covered = 0
            runs = literal_runs(ts, d)
            for i, k in runs:
                covered += sum(piece_ids[p] for p in d[i:i + k])
            n += sum(piece_ids[p] for p in d) - covered + len(runs) + 1
        return 1.0 - n / n_plain

    measured: dict[tuple, float] = {}

    def at(picks: tuple[int, ...]) -> float:
        if picks not in measured:
            measured[picks] = shrink([ranked[i][0] for i in picks])
        return measured[picks]

    n = len(ranked)

    def pick(m: int, t: int) -> tuple[int, ...]:
        """The first m picks (exact greedy savings) and size - m picks from rank t on."""
        return tuple(range(m)) + tuple(range(t, t + size - m))

    def crossing(f, lo: int, hi: int, rising: bool) -> int:
        """Bisection for the last x in [lo, hi] with f(x) on the low side of target."""
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if (f(mid) <= target) == rising:
                lo = mid
            else:
                hi = mid
        return lo

    # 1. How many of the best picks: with the rest from the bottom of the ranking, the
    #    shrinkage rises with m; the last m that stays at or below target.
    m = crossing(lambda m: at(pick(m, n - (size - m))), 0, size, rising=True)
    # 2. Then the rest slides up the ranking from the bottom (the shrinkage rises as t falls):
    #    the first t that stays at or below target, and its neighbour above.
    if m < size:
        t = crossing(lambda t: at(pick(m, t)), m, n - (size - m), rising=False)
        at(pick(m, max(m, t - 1)))
    best = min(measured, key=lambda picks: (abs(measured[picks] - target), picks))
    chosen = [ranked[i][0] for i in best]
    ts = literal_token_set(NAME, chosen, fact_set)
    real = 1.0 - corpus_tokens(base.with_condition(f"{NAME}_tokens", ts), texts) / n_plain  # the encoder's own count
    record = {"name": NAME, "matches": fact_set, "size": size, "documents": len(texts),
              "plain_tokens": n_plain, "target": target, "shrink": real, "ranks": list(best),
              "candidates": len(ranked), "injection": {"mode": inject_mode, "word_forms": word_forms}}
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"control set: {fact_set} shrinks the corpus sample by {target:.2%}, control by {real:.2%} "
        f"({size} strings from ranks {best[0]}-{best[-1]} of {len(ranked)}, {len(texts)} documents)")
    if abs(real - target) > 0.01:
        say(f"warning: the control set misses {fact_set}'s shrinkage by {abs(real - target):.2%} "
            "(more than 1 point); a larger corpus sample gives more candidates")
    return ts, record


def save_control_set(tok_dir, ts: DomainTokenSet, record: dict) -> None:
    """`token_sets/control.json` beside a saved tokenizer: the set and its build record."""
    from pathlib import Path

    from domtok.config import atomic_write_json
    from domtok.tokens.tokenizer import TOKEN_SETS_DIR

    d = Path(tok_dir) / TOKEN_SETS_DIR
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / f"{ts.name}.json", {**ts.to_dict(), "build": record})


def saved_record(tok_dir) -> dict | None:
    """The build record of the control set saved beside a tokenizer, None when there is none."""
    import json
    from pathlib import Path

    from domtok.tokens.tokenizer import TOKEN_SETS_DIR

    try:
        return json.loads((Path(tok_dir) / TOKEN_SETS_DIR / f"{NAME}.json").read_text(encoding="utf-8"))["build"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
