"""Domain token sets: the atomic fact tokens a domain condition adds to the vocabulary.

A token set is data, not code: a tuple of `DomainToken`s in canonical (= id) order and a
regex that recognises their texts. The first set is the 45 single-digit multiplication
facts `<MUL_a_b_c>` (1 <= a <= b <= 9, c = a*b). `9 x 6` and `6 x 9` are the same fact, so
the non-canonical text `<MUL_9_6_54>` maps to the canonical `<MUL_6_9_54>`.

Adding a set is a local change: call `fact_token_set` with an op and ranges and put the
result in `TOKEN_SETS`, e.g. addition facts:

    fact_token_set("add", "ADD", "+", lambda a, b: a + b, range(0, 10))

The id layout (where a set's tokens land in the vocabulary) is the tokenizer's business,
see `domtok.tokens.tokenizer`.

Leading spaces. GPT-2's pre-tokenizer never joins a space to a token it does not know, so
`6 × 9 = 54` in prose (` <MUL_6_9_54>`) costs two ids: a lone ` ` and the token. A set with
`leading_space=True` (`mul_space`) also gives every token a second id for ` <MUL_6_9_54>`,
as GPT-2 has ` the` beside `the`. The facts, the injector and every token text stay the
same; only the tokenizer's layout differs (its own ids, see `domtok.tokens.tokenizer`), and
`mul` (ids 50304-50348 for gpt2) stays the reference layout.

Literal sets. A `literal` set (the compression-matched `control` set, built from a corpus by
`domtok.tokens.control`) holds plain strings such as " of the": a token's text IS the text it
stands for, so injection leaves the text as it is and the tokenizer's `encode` maps each
occurrence (a run of whole pre-tokenizer pieces, see `literal_spans`) to the token's id;
decoding gives the text back. Its tokens
have no value or operands (`op` "text"), and `matches` names the fact set whose layout and
compression it copies.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from domtok.errors import DomtokError


@dataclass(frozen=True)
class DomainToken:
    text: str                   # "<MUL_6_9_54>"
    value: int                  # 54
    op: str                     # "*"
    operands: tuple[int, ...]   # (6, 9)


@dataclass(frozen=True)
class DomainTokenSet:
    name: str                        # "mul"
    tokens: tuple[DomainToken, ...]  # canonical order = id order
    text_pattern: str                # regex for token texts, incl. non-canonical ones
    commutative: bool = True         # operand order does not matter: <MUL_9_6_54> == <MUL_6_9_54>
    leading_space: bool = False      # the layout also has " <MUL_6_9_54>" (one id per token and space)
    literal: bool = False            # tokens are plain strings, matched where they stand (control sets)
    matches: str = ""                # literal sets: the fact set whose layout and compression they copy

    def by_text(self) -> dict[str, DomainToken]:
        return self._by_text

    @functools.cached_property
    def _by_text(self) -> dict[str, DomainToken]:
        return {t.text: t for t in self.tokens}

    @functools.cached_property
    def regex(self) -> re.Pattern:
        return re.compile(self.text_pattern)

    @functools.cached_property
    def prefix(self) -> str:
        """Common start of every token text ("<MUL_"): a cheap `in` test before any regex."""
        texts = [t.text for t in self.tokens]
        p = texts[0]
        for t in texts[1:]:
            while not t.startswith(p):
                p = p[:-1]
        return p

    def canonical_text(self, text: str) -> str | None:
        """"<MUL_9_6_54>" -> "<MUL_6_9_54>"; a wrong product or a foreign text -> None."""
        if text in self._by_text:
            return text
        if self.literal or not self.commutative or not self.regex.fullmatch(text):
            return None
        # "<NAME_o1_..._on_value>": keep the operand strings as written (so "06" stays
        # "06" and matches nothing) and only reorder them.
        parts = text[1:-1].split("_")
        head, operands, value = parts[0], parts[1:-1], parts[-1]
        if not all(o.isdigit() for o in operands):
            return None
        operands = sorted(operands, key=int)
        canon = f"<{head}_{'_'.join(operands)}_{value}>"
        return canon if canon in self._by_text else None

    def canonicalize(self, text: str) -> str:
        """Rewrite every non-canonical token text in `text` to its canonical form."""
        if self.literal or self.prefix not in text:
            return text
        return self.regex.sub(lambda m: self.canonical_text(m.group(0)) or m.group(0), text)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "text_pattern": self.text_pattern,
            "commutative": self.commutative,
            "leading_space": self.leading_space,
            **({"literal": True, "matches": self.matches} if self.literal else {}),
            "tokens": [{"text": t.text, "value": t.value, "op": t.op, "operands": list(t.operands)}
                       for t in self.tokens],
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "token set") -> "DomainTokenSet":
        try:
            tokens = tuple(DomainToken(str(t["text"]), int(t["value"]), str(t["op"]),
                                       tuple(int(o) for o in t["operands"])) for t in d["tokens"])
            out = cls(str(d["name"]), tokens, str(d["text_pattern"]), bool(d.get("commutative", True)),
                      bool(d.get("leading_space", False)), bool(d.get("literal", False)), str(d.get("matches", "")))
            re.compile(out.text_pattern)
        except (KeyError, TypeError, ValueError, re.error) as e:
            raise DomtokError(f"{where}: malformed token set ({e!r}); re-save the tokenizer with `domtok tokenizer fix`") from e
        if not tokens or len({t.text for t in tokens}) != len(tokens):
            raise DomtokError(f"{where}: token set {out.name!r} is empty or has duplicate texts")
        return out


# Characters a literal (control) token may not hold: digits are checked apart; these are the
# operators, brackets and markers of arithmetic, annotations (`<<..>>`) and answers (`####`).
ARITHMETIC_CHARS = frozenset("+-−*×·⋅∙/÷=^%<>()[]{}#")


def literal_token_set(name: str, texts: Iterable[str], matches: str) -> DomainTokenSet:
    """A `literal` set of plain strings (in the given order = id order), e.g. the control set.

    A text holds no digit and no arithmetic character; it is matched only as a run of whole
    GPT-2 pre-tokenizer pieces (`literal_spans`), so every other piece of a text keeps its
    base ids, and a number (a piece of its own) is never split, joined or re-tokenized.
    """
    texts = list(texts)
    for t in texts:
        if not t or any(c.isdigit() or c in ARITHMETIC_CHARS for c in t):
            raise DomtokError(f"literal token set {name!r}: {t!r} is empty or holds a digit or an arithmetic "
                              f"character ({''.join(sorted(ARITHMETIC_CHARS))})")
    ordered = sorted(texts, key=lambda t: (-len(t), t))
    pattern = "(?:" + "|".join(map(re.escape, ordered)) + ")"  # for display and search; matching: literal_spans
    tokens = tuple(DomainToken(t, 0, "text", ()) for t in texts)
    return DomainTokenSet(name, tokens, pattern, commutative=False, literal=True, matches=matches)


# tiktoken's r50k/gpt2 pre-tokenizer regex (tiktoken_ext.openai_public.r50k_pat_str)
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@functools.lru_cache(maxsize=1)
def _pieces_re():
    import regex  # tiktoken's dependency: the \p{L} classes of GPT-2's pattern

    return regex.compile(GPT2_PATTERN)


def pretokenize(text: str) -> list[str]:
    """GPT-2's pre-tokenizer pieces of `text` (BPE never merges across them)."""
    return _pieces_re().findall(text)


@functools.lru_cache(maxsize=8)
def _literal_index(token_set: DomainTokenSet) -> dict[str, list[tuple[int, str]]]:
    """first piece -> [(pieces, text)] of the set's texts, most pieces first."""
    index: dict[str, list[tuple[int, str]]] = {}
    for t in token_set.tokens:
        pieces = pretokenize(t.text)
        index.setdefault(pieces[0], []).append((len(pieces), t.text))
    for v in index.values():
        v.sort(key=lambda x: (-x[0], x[1]))
    return index


def literal_runs(token_set: DomainTokenSet, pieces: list[str]) -> list[tuple[int, int]]:
    """(first piece, number of pieces) of every token text among `pieces`: left to right, the
    longest run that is a token text first."""
    index = _literal_index(token_set)
    runs, i, n = [], 0, len(pieces)
    while i < n:
        for k, t in index.get(pieces[i], ()):
            if i + k <= n and "".join(pieces[i:i + k]) == t:
                runs.append((i, k))
                i += k
                break
        else:
            i += 1
    return runs


def literal_spans(token_set: DomainTokenSet, text: str) -> list[tuple[int, int]]:
    """(start, end) of every occurrence of a literal set's texts in `text` (`literal_runs`)."""
    pieces = pretokenize(text)
    starts = [0]
    for p in pieces:
        starts.append(starts[-1] + len(p))
    return [(starts[i], starts[i + k]) for i, k in literal_runs(token_set, pieces)]


def fact_token_set(name: str, head: str, op: str, fn: Callable[[int, int], int],
                   a_range: Iterable[int], b_range: Iterable[int] | None = None,
                   commutative: bool = True) -> DomainTokenSet:
    """A set of binary-fact tokens `<HEAD_a_b_c>` with c = fn(a, b), in order a, then b.

    With `commutative`, only a <= b is kept (one token per fact) and the reversed text is
    accepted as an alias by `canonical_text`.
    """
    a_values = list(a_range)
    b_values = list(a_values if b_range is None else b_range)
    tokens = []
    for a in a_values:
        for b in b_values:
            if commutative and b < a:
                continue
            c = fn(a, b)
            tokens.append(DomainToken(f"<{head}_{a}_{b}_{c}>", c, op, (a, b)))
    return DomainTokenSet(name, tuple(tokens), rf"<{head}_\d+_\d+_\d+>", commutative)


MUL = fact_token_set("mul", "MUL", "*", operator.mul, range(1, 10))
# the same 45 facts, each also with a leading-space id (a layout of its own: 90 ids)
MUL_SPACE = dataclasses.replace(MUL, name="mul_space", leading_space=True)

# The registry of sets a condition can name. A new set goes here (and nowhere else).
TOKEN_SETS: dict[str, DomainTokenSet] = {"mul": MUL, "mul_space": MUL_SPACE}


# Sets built from a run's corpus (not registered here): a tokenizer directory saves them
# (`domtok.tokens.control`), and a spec's condition names them like the others.
CORPUS_SETS = ("control",)


def get_token_set(name: str) -> DomainTokenSet:
    if name in CORPUS_SETS:
        raise DomtokError(f"token set {name!r} is built from a corpus by a run's tokenizer node; load the "
                          "tokenizer directory that saved it (load_tokenizer(DIR, condition, token_set="
                          f"{name!r}))")
    if name not in TOKEN_SETS:
        raise DomtokError(f"unknown token set {name!r}; known sets: {sorted(TOKEN_SETS)}")
    return TOKEN_SETS[name]


def condition_token_set(condition: str) -> str | None:
    """The default set of a condition: "baseline" -> None, "mul_tokens" -> "mul".

    A condition "<set>_tokens" names a registered set. Anything else must have its set
    declared in the experiment spec, so an unknown name is an error, not a silent baseline.
    """
    if condition == "baseline":
        return None
    if condition.endswith("_tokens") and condition[: -len("_tokens")] in TOKEN_SETS:
        return condition[: -len("_tokens")]
    raise DomtokError(f"unknown condition {condition!r}: use 'baseline' or one of "
                      f"{[s + '_tokens' for s in sorted(TOKEN_SETS)]}, or declare its token set in the experiment spec")
