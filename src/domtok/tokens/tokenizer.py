"""Tokenizers: GPT-2's BPE (via tiktoken) or a small trained byte-level BPE, plus domain tokens.

Both bases are the same kind of object: a byte-level BPE given by a vocabulary (token
string in GPT-2's byte-to-unicode alphabet -> id) and merge rules, with `<|endoftext|>` as
the LAST base id (GPT-2: 50256). On top of the base sits one id layout for every condition:

    [0, n_base)                     base ids, EOT = n_base - 1
    [n_base, domain_start)          padding up to a multiple of 64
    [domain_start, +len(set))       the token set in canonical order (<MUL_1_1_1> = 50304 ...)
    [.., +len(set))                 only for a `leading_space` set (`mul_space`): the same tokens
                                    with a leading space, " <MUL_1_1_1>" = 50349 ...
    [.., vocab_size)                padding up to a multiple of 64 (50368 for gpt2 + mul,
                                    50432 for gpt2 + mul_space)

The baseline has the same layout (same embedding size); its domain ids are reserved: never
produced by `encode`, decoded like padding (to ""), exported to HF as padding tokens.

Rules that the reference study learnt the hard way:
- literal "<|endoftext|>" inside a document is ordinary text: it never raises and never
  becomes the EOT id (EOT is appended as an id by whoever builds a sequence);
- domain tokens are ORDINARY vocabulary: they decode to their text and survive HF's
  `skip_special_tokens=True`;
- pad != eos in the HF export (pad == eos got every EOS label masked).

Encoding speed matters (`domtok prepare` tokenizes billions of bytes): gpt2 encodes with
tiktoken, domain texts registered as tiktoken special tokens and allowed explicitly, so a
domain condition costs one `in` test per text over plain `encode_ordinary`. The trained BPE
encodes with the `tokenizers` library from exactly the tokenizer.json that is exported.
Non-canonical texts (`<MUL_9_6_54>`) are mapped to the canonical id by domtok's `encode`
only; the exported HF tokenizer knows the canonical texts (all the injector writes).

A `literal` set (the control set: plain strings such as " of the", see `domtok.tokens.sets`)
is encoded by cutting the text at each occurrence (`literal_spans`), encoding the pieces
between with the base BPE and putting the token's id for each occurrence: the pieces are
pre-tokenized exactly as in the whole text, so the rest of the ids are the baseline's. In the
HF export these tokens are `single_word` added tokens (matched only between non-word
characters, a slightly narrower rule than domtok's); domtok's `encode` is the one training uses.

On disk (`save`/`load`): `domtok_tokenizer.json` (base, condition, layout, token set, the
condition's injector settings, base vocabulary hash) next to the Hugging Face files. The HF `tokenizer.json` holds the whole
vocabulary and merges, so a saved gpt2 tokenizer loads offline anywhere without GPT-2's
original files and without duplicating them.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from domtok.config import atomic_write_json
from domtok.errors import DomtokError
from domtok.tokens import hf_files
from domtok.tokens.bpe import (EOT, GPT2_BASE_VOCAB_SHA256, gpt2_vocab_merges, merges_from_ranks, read_hf_vocab_merges,
                               tiktoken_encoding, token_bytes, vocab_sha256)
from domtok.tokens.sets import CORPUS_SETS, TOKEN_SETS, DomainTokenSet, condition_token_set, get_token_set, literal_spans

META_FILE = "domtok_tokenizer.json"


def round_up(n: int, multiple: int = 64) -> int:
    return -(-n // multiple) * multiple


def padding_token(k: int) -> str:
    return f"<|padding_{k}|>"


class Tokenizer:
    """A base BPE + one condition's view of the domain-token layout (see module docstring).

    Build one with `load_tokenizer` or `Tokenizer.load`; the constructor takes the base
    vocabulary (ids 0..n_base-2, EOT excluded; EOT gets id n_base-1) and its merge rules.
    """

    def __init__(self, base: str, condition: str, token_set: DomainTokenSet,
                 vocab: dict[str, int], merges: list[tuple[str, str]] | None,
                 inject_mode: str = "weak", word_forms: bool = False):
        from domtok.tokens.inject import MODES

        if sorted(vocab.values()) != list(range(len(vocab))):
            raise DomtokError(f"tokenizer {base!r}: base vocabulary ids must be exactly 0..{len(vocab) - 1}")
        if inject_mode not in MODES:
            raise DomtokError(f"tokenizer {base!r}: injector mode {inject_mode!r} is unknown; use one of {list(MODES)}")
        self.base = base
        self.condition = condition
        self.token_set = token_set
        self.uses_domain_tokens = condition != "baseline"
        # How the condition writes its facts (see `inject`): chosen once, by `domtok prepare`
        # from the spec, and carried with the tokenizer into every model dir after it.
        self.inject_mode = inject_mode
        self.word_forms = bool(word_forms)
        self.n_base = len(vocab) + 1
        self.eot_id = len(vocab)
        self.domain_start = round_up(self.n_base)
        # The layout's texts in id order: the set, then (leading_space) the set with a space.
        texts = [t.text for t in token_set.tokens]
        pairs = list(zip(texts, token_set.tokens))
        if token_set.leading_space:
            pairs += [(" " + text, t) for text, t in zip(texts, token_set.tokens)]
        self.layout_texts = [text for text, _ in pairs]
        self.layout_ids = {text: self.domain_start + k for k, text in enumerate(self.layout_texts)}
        self.vocab_size = round_up(self.domain_start + len(pairs))
        self.domain_ids = {t.text: self.domain_start + k for k, t in enumerate(token_set.tokens)}
        self.id_to_domain = {self.domain_start + k: t for k, (_, t) in enumerate(pairs)}
        self._vocab = vocab
        self._merges = merges  # None: derived from the ranks when first needed (tiktoken-only source)
        self._domain_end = self.domain_start + len(pairs)
        # tiktoken matches its special tokens anywhere; a literal set is cut out by `literal_spans`
        self._allowed = frozenset(self.layout_ids) if self.uses_domain_tokens and not token_set.literal else frozenset()

    def __repr__(self) -> str:
        return (f"Tokenizer(base={self.base!r}, condition={self.condition!r}, set={self.token_set.name!r}, "
                f"n_base={self.n_base}, domain_start={self.domain_start}, vocab_size={self.vocab_size})")

    def with_condition(self, condition: str, token_set: str | DomainTokenSet | None = None) -> "Tokenizer":
        """The same base under another condition (and, optionally, another layout set)."""
        if token_set is None and condition_token_set_or_none(condition) is None:
            token_set = self.token_set  # baseline / spec-declared condition: keep this layout
        return Tokenizer(self.base, condition, resolve_token_set(condition, token_set), self._vocab, self._merges,
                         self.inject_mode, self.word_forms)

    def with_injection(self, inject_mode: str, word_forms: bool) -> "Tokenizer":
        """The same tokenizer with other injector settings (`domtok prepare` sets the spec's)."""
        return Tokenizer(self.base, self.condition, self.token_set, self._vocab, self._merges, inject_mode, word_forms)

    @property
    def splits_digits(self) -> bool:
        """Whether every number is written one digit per token: no base token holds a digit
        next to anything else (a BPE trained with `split_digits`; GPT-2's own vocab does not)."""
        return not any(len(t) > 1 and any(c.isdigit() for c in t) for t in self._vocab)

    # ---- injection ----------------------------------------------------------------------

    @property
    def injection(self) -> dict:
        """The injector settings of this condition's training text: {"mode", "word_forms"}.

        Recorded for the baseline too (the settings its paired domain condition uses), though
        `inject` never changes the baseline's text."""
        return {"mode": self.inject_mode, "word_forms": self.word_forms}

    def inject(self, text: str):
        """`text` as this condition's training data writes it: through the injector with this
        tokenizer's set and settings for a domain condition, unchanged for the baseline.
        Every stage that injects (prepare, SFT, GRPO prompts, evaluation prompts) calls this,
        so no stage can inject with settings of its own."""
        from domtok.tokens.inject import InjectResult, inject_domain_tokens

        if not self.uses_domain_tokens:
            return InjectResult(text)
        return inject_domain_tokens(text, self.token_set, self.inject_mode, self.word_forms)

    # ---- encoding -----------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        if self.uses_domain_tokens and self.token_set.literal:
            return self._encode_literal(text)
        if self.base == "gpt2":
            enc = self._tiktoken
            if not self.uses_domain_tokens:
                return enc.encode_ordinary(text)
            return enc.encode(self.token_set.canonicalize(text), allowed_special=self._allowed, disallowed_special=())
        text = self.token_set.canonicalize(text) if self.uses_domain_tokens else text
        return self._hf_encoder.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        texts = list(texts)
        if self.uses_domain_tokens and self.token_set.literal:
            return [self._encode_literal(t) for t in texts]
        if self.uses_domain_tokens:
            texts = [self.token_set.canonicalize(t) for t in texts]
        if self.base == "gpt2":
            enc = self._tiktoken
            if not self.uses_domain_tokens:
                return enc.encode_ordinary_batch(texts)
            return enc.encode_batch(texts, allowed_special=self._allowed, disallowed_special=())
        enc = self._hf_encoder
        batch = getattr(enc, "encode_batch_fast", enc.encode_batch)  # _fast: tokenizers >= 0.21
        return [e.ids for e in batch(texts, add_special_tokens=False)]

    def _encode_base(self, text: str) -> list[int]:
        if self.base == "gpt2":
            return self._tiktoken.encode_ordinary(text)
        return self._hf_encoder.encode(text, add_special_tokens=False).ids

    def _encode_literal(self, text: str) -> list[int]:
        """A literal set's encoding: the base BPE between occurrences, one id per occurrence."""
        spans = literal_spans(self.token_set, text)
        if not spans:
            return self._encode_base(text)
        segments, last = [], 0
        for a, b in spans:
            segments.append(text[last:a])
            last = b
        segments.append(text[last:])
        if self.base == "gpt2":
            encoded = [self._tiktoken.encode_ordinary(x) if x else [] for x in segments]
        else:
            encoded = [e.ids for e in self._hf_encoder.encode_batch(segments, add_special_tokens=False)]
        out = list(encoded[0])
        for (a, b), ids in zip(spans, encoded[1:]):
            out.append(self.layout_ids[text[a:b]])
            out += ids
        return out

    @functools.cached_property
    def _tiktoken(self):
        domain = tuple(sorted(self.layout_ids.items())) if not self.token_set.literal else ()
        return tiktoken_encoding(self._vocab, self.eot_id, domain)

    @functools.cached_property
    def _hf_encoder(self):
        from tokenizers import Tokenizer as HFTokenizer

        enc = HFTokenizer.from_str(self.hf_tokenizer_json())
        enc.encode_special_tokens = True  # literal "<|endoftext|>" / padding texts are ordinary text
        return enc

    # ---- decoding -----------------------------------------------------------------------

    @functools.cached_property
    def _id_bytes(self) -> list[bytes]:
        table = [b""] * self.vocab_size  # padding (and the baseline's reserved ids) -> ""
        for tok, i in self._vocab.items():
            table[i] = token_bytes(tok)
        table[self.eot_id] = EOT.encode()
        if self.uses_domain_tokens:
            for text, i in self.layout_ids.items():
                table[i] = text.encode()
        return table

    def decode(self, ids) -> str:
        """Text of `ids`; works on any slice (split UTF-8 sequences become U+FFFD)."""
        ids = _as_list(ids)
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.vocab_size})")
        table = self._id_bytes
        return b"".join([table[i] for i in ids]).decode("utf-8", errors="replace")

    def count_domain_tokens(self, ids) -> int:
        lo, hi = self.domain_start, self._domain_end
        return sum(1 for i in _as_list(ids) if lo <= i < hi)

    # ---- Hugging Face files -------------------------------------------------------------

    def layout_added_tokens(self) -> list[tuple[int, str, bool]]:
        """(id, content, special) for every id from EOT up: EOT, padding, domain tokens."""
        out = [(self.eot_id, EOT, True)]
        k = 0
        for i in range(self.n_base, self.vocab_size):
            if self.uses_domain_tokens and i in self.id_to_domain:
                out.append((i, self.layout_texts[i - self.domain_start], False))
            else:
                out.append((i, padding_token(k), True))
                k += 1
        return out

    @property
    def pad_token(self) -> str | None:
        """A padding token, never EOT (pad == eos masked every EOS label in the reference)."""
        return next((c for _, c, s in self.layout_added_tokens()[1:] if s), None)

    @property
    def pad_id(self) -> int | None:
        """The id of `pad_token` (the generation_config's pad_token_id in an HF dir)."""
        return next((i for i, _, s in self.layout_added_tokens()[1:] if s), None)

    def base_vocab_merges(self) -> tuple[dict[str, int], list[tuple[str, str]]]:
        """The base vocabulary (ids below EOT) and its merge rules; a tiktoken-only source's
        merges are derived from its ranks the first time they are needed."""
        if self._merges is None:
            self._merges = merges_from_ranks({token_bytes(t): i for t, i in self._vocab.items()})
        return self._vocab, self._merges

    def hf_tokenizer_json(self) -> str:
        """The whole tokenizer as a `tokenizers` JSON string (HF `tokenizer.json`; `domtok.tokens.hf_files`)."""
        return hf_files.hf_tokenizer_json(self)

    def export_hf(self, dir) -> None:
        """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json into `dir`
        (`domtok.tokens.hf_files.write_hf_files`: loadable by `transformers.AutoTokenizer`)."""
        hf_files.write_hf_files(self, dir)

    # ---- save / load --------------------------------------------------------------------

    def meta(self) -> dict:
        return {
            "format": "domtok-tokenizer", "version": 1,
            "base": self.base, "condition": self.condition,
            "uses_domain_tokens": self.uses_domain_tokens,
            "n_base": self.n_base, "eot_id": self.eot_id,
            "domain_start": self.domain_start, "vocab_size": self.vocab_size,
            "base_vocab_sha256": vocab_sha256(self._vocab),
            "token_set": self.token_set.to_dict(),
            "injection": self.injection,
            "files": {"vocab_and_merges": "tokenizer.json"},
        }

    def save(self, dir) -> None:
        """HF files first, `domtok_tokenizer.json` last: a dir with it is complete."""
        self.export_hf(dir)
        atomic_write_json(Path(dir) / META_FILE, self.meta())

    @classmethod
    def load(cls, dir) -> "Tokenizer":
        d = Path(dir)
        meta_path = d / META_FILE
        if not meta_path.exists():
            raise DomtokError(f"{meta_path}: no domtok tokenizer here; save one with Tokenizer.save, "
                              f"or run `domtok tokenizer fix {d}` on a Hugging Face model dir")
        try:
            meta = json.loads(meta_path.read_text())
            base, condition, n_base = meta["base"], meta["condition"], int(meta["n_base"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DomtokError(f"{meta_path}: unreadable ({e!r}); re-save the tokenizer") from e
        token_set = DomainTokenSet.from_dict(meta.get("token_set", {}), where=str(meta_path))
        if token_set.name in TOKEN_SETS and TOKEN_SETS[token_set.name] == token_set:
            token_set = TOKEN_SETS[token_set.name]
        vocab, merges = read_hf_vocab_merges(d / "tokenizer.json", n_base - 1)
        sha = vocab_sha256(vocab)
        if sha != meta.get("base_vocab_sha256") or (base == "gpt2" and sha != GPT2_BASE_VOCAB_SHA256):
            raise DomtokError(f"{d / 'tokenizer.json'}: its base vocabulary does not match {meta_path} "
                              f"(base {base!r}); the files were edited or mixed up, re-save the tokenizer")
        injection = meta.get("injection", {})  # absent in files from before it was recorded: the defaults
        if not isinstance(injection, dict) or set(injection) - {"mode", "word_forms"}:
            raise DomtokError(f"{meta_path}: `injection` must be {{\"mode\": ..., \"word_forms\": ...}}, "
                              f"not {injection!r}; re-save the tokenizer")
        tok = cls(base, condition, token_set, vocab, merges, str(injection.get("mode", "weak")),
                  bool(injection.get("word_forms", False)))
        for key in ("eot_id", "domain_start", "vocab_size"):
            if key in meta and meta[key] != getattr(tok, key):
                raise DomtokError(f"{meta_path}: {key} {meta[key]} disagrees with the layout rule ({getattr(tok, key)})")
        return tok


# ---- token sets and loading ------------------------------------------------------------


def condition_token_set_or_none(condition: str) -> str | None:
    try:
        return condition_token_set(condition)
    except DomtokError:
        return None


def _as_list(ids) -> list[int]:
    if hasattr(ids, "tolist"):  # torch / numpy
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    return list(ids)


TOKEN_SETS_DIR = "token_sets"  # beside a saved tokenizer: sets built from its corpus (control.json)


def saved_token_set(dir, name: str) -> DomainTokenSet:
    """A set built from a corpus and saved beside a tokenizer (`domtok.tokens.control`)."""
    path = Path(dir) / TOKEN_SETS_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DomtokError(f"{path}: missing; the token set {name!r} is built by the run's tokenizer node when a "
                          f"condition names it (token_set: {name})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DomtokError(f"{path}: unreadable ({e}); delete the tokenizer dir and run again") from None
    return DomainTokenSet.from_dict(data, where=str(path))


def resolve_token_set(condition: str, token_set: str | DomainTokenSet | None) -> DomainTokenSet:
    """The layout's set: given explicitly, or the condition's default ("mul" for the baseline).

    An explicit set must agree with a condition named "<set>_tokens" for a registered set;
    any other condition name is allowed with an explicit set (declared by an experiment spec).
    """
    if token_set is None:
        return get_token_set(condition_token_set(condition) or "mul")
    ts = token_set if isinstance(token_set, DomainTokenSet) else get_token_set(token_set)
    named = condition[: -len("_tokens")] if condition.endswith("_tokens") else None
    if named in TOKEN_SETS and named != ts.name:
        raise DomtokError(f"condition {condition!r} uses token set {named!r}, not {ts.name!r}")
    return ts


def load_tokenizer(base: str = "gpt2", condition: str = "baseline", token_set: str | DomainTokenSet | None = None,
                   gpt2_dir=None) -> Tokenizer:
    """`base` is "gpt2" or a directory with a saved tokenizer (e.g. from `domtok tokenizer build`).

    `token_set` defaults to the condition's set ("mul" for baseline and mul_tokens); pass it
    for a condition an experiment spec declares.
    """
    if base == "gpt2":
        vocab, merges = gpt2_vocab_merges(str(gpt2_dir) if gpt2_dir else None)
        return Tokenizer("gpt2", condition, resolve_token_set(condition, token_set), vocab, merges)
    path = Path(base)
    if path.is_dir():
        if isinstance(token_set, str) and token_set in CORPUS_SETS:
            token_set = saved_token_set(path, token_set)
        return Tokenizer.load(path).with_condition(condition, token_set)  # keeps the saved layout
    if base.startswith("bpe-"):
        raise DomtokError(f"base {base!r} is trained on a corpus: run `domtok tokenizer build --base {base} "
                          f"--corpus PATH --out DIR` and use DIR as the base")
    raise DomtokError(f"unknown tokenizer base {base!r}: use 'gpt2' or a directory made by `domtok tokenizer build`")


# ---- `domtok tokenize` ------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="text to tokenize, or - to read stdin")
    parser.add_argument("--tokenizer", default="gpt2", help="gpt2 or a saved tokenizer dir (default gpt2)")
    parser.add_argument("--condition", default=None,
                        help="baseline | mul_tokens | ... (default: baseline, or the saved dir's condition)")
    parser.add_argument("--token-set", default=None, help="layout token set (default: the condition's)")
    parser.add_argument("--inject", action="store_true",
                        help="rewrite single-digit products into domain tokens first (as `domtok inject`); "
                             "without it a domain condition encodes the text as written")
    parser.add_argument("--gpt2-dir", default=None, help="folder with GPT-2's vocab.bpe and encoder.json "
                                                         "(default $DOMTOK_GPT2_DIR)")


def main(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    if args.tokenizer != "gpt2" and Path(args.tokenizer).is_dir() and args.condition is None:
        tok = Tokenizer.load(args.tokenizer)
    else:
        tok = load_tokenizer(args.tokenizer, args.condition or "baseline", args.token_set, args.gpt2_dir)
    if args.inject:
        if not tok.uses_domain_tokens:
            raise DomtokError(f"--inject: condition {tok.condition!r} has no domain tokens; pass a domain condition "
                              "such as --condition mul_tokens")
        from domtok.tokens.inject import inject_domain_tokens

        text = inject_domain_tokens(text, tok.token_set.name).text
    print(json.dumps(tok.encode(text)))
    return 0
