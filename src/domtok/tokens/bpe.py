"""Byte-level BPE files: GPT-2's byte alphabet, a base's vocabulary and merges, tiktoken.

Both of domtok's bases are byte-level BPEs given by a vocabulary (token string in GPT-2's
byte-to-unicode alphabet, `bytes_to_unicode` -> id) and merge rules, with `<|endoftext|>` (EOT)
as the LAST base id (GPT-2: 50256). This module reads them: GPT-2's from its original files
(`gpt2_vocab_merges`: a folder, $DOMTOK_GPT2_DIR, ../shared/data/gpt2 or tiktoken's cache),
any base from a Hugging Face `tokenizer.json` (`read_hf_vocab_merges`), and derives the merge
rules of a rank-ordered vocabulary (`merges_from_ranks`). gpt2 encodes with the tiktoken
Encoding `tiktoken_encoding` builds (one per vocabulary and domain ids, cached). The id layout
on top of a base is `domtok.tokens.tokenizer`'s; training a BPE is `domtok.tokens.build`'s.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from domtok.errors import DomtokError
from domtok.tokens.sets import GPT2_PATTERN

EOT = "<|endoftext|>"
# sha256 of GPT-2's original files, as tiktoken checks them (openai/gpt-2 encodings/main)
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# sha256 of GPT-2's base vocabulary as `vocab_sha256` computes it: identifies a saved or
# foreign tokenizer.json as GPT-2's without its original files
GPT2_BASE_VOCAB_SHA256 = "a887731215f03206f7170dafaf74b969e3b605d69bfb7e23a78114f9d9a49c4b"


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map (the alphabet of byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@functools.lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_bytes(token: str) -> bytes:
    """A byte-level vocabulary string ("Ġworld") -> the bytes it stands for (b" world")."""
    u2b = _unicode_to_byte()
    return bytes(u2b[c] for c in token)


def token_string(b: bytes) -> str:
    b2u = bytes_to_unicode()
    return "".join(b2u[x] for x in b)


def vocab_sha256(vocab: dict[str, int]) -> str:
    h = hashlib.sha256()
    for tok, i in sorted(vocab.items(), key=lambda kv: kv[1]):
        h.update(f"{i}\t{tok}\n".encode("utf-8"))
    return h.hexdigest()


_TIKTOKEN_CACHE: dict = {}


def tiktoken_encoding(vocab: dict[str, int], eot_id: int, domain: tuple[tuple[str, int], ...]):
    """One tiktoken Encoding per (base vocab, domain ids); conditions and copies share it."""
    import tiktoken

    key = (id(vocab), eot_id, domain)
    hit = _TIKTOKEN_CACHE.get(key)
    if hit is not None and hit[0] is vocab:
        return hit[1]
    # In GPT-2 a token's id is its merge rank (tiktoken checks this when it reads the files).
    ranks = {token_bytes(t): i for t, i in vocab.items()}
    enc = tiktoken.Encoding("domtok-gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                            special_tokens={EOT: eot_id, **dict(domain)})
    if len(_TIKTOKEN_CACHE) >= 8:  # bounded: each entry holds a 50k-token BPE
        _TIKTOKEN_CACHE.pop(next(iter(_TIKTOKEN_CACHE)))
    _TIKTOKEN_CACHE[key] = (vocab, enc)
    return enc


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[str, str]]:
    """Merge rules of a rank-ordered BPE (tiktoken) vocabulary.

    A token of rank r was made by the merge that BPE-encoding its bytes with ranks < r leaves
    as the last two pieces (the way tiktoken's own HF converter does it).
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best = None
            for j in range(len(parts) - 1):
                r = ranks.get(parts[j] + parts[j + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, j)
            if best is None:
                break
            j = best[1]
            parts[j:j + 2] = [parts[j] + parts[j + 1]]
        if len(parts) == 2:
            merges.append((token_string(parts[0]), token_string(parts[1])))
    return merges


def read_hf_vocab_merges(path: Path, eot_id: int | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Base vocabulary (ids below EOT) and merges of a byte-level BPE `tokenizer.json`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        model = data["model"]
        vocab = {str(k): int(v) for k, v in model["vocab"].items()}
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    except FileNotFoundError as e:
        raise DomtokError(f"{path}: missing; the tokenizer dir is incomplete, re-save it") from e
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise DomtokError(f"{path}: not a byte-level BPE tokenizer.json ({e!r})") from e
    if model.get("type", "BPE") != "BPE":
        raise DomtokError(f"{path}: model type {model.get('type')!r}, expected BPE")
    if eot_id is None:
        added = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
        eot_id = vocab.get(EOT, added.get(EOT))
        if eot_id is None:
            raise DomtokError(f"{path}: no {EOT} token; domtok needs GPT-2-style EOT as the last base id")
    vocab = {t: i for t, i in vocab.items() if i < eot_id}
    try:
        for t in vocab:
            token_bytes(t)
    except KeyError as e:
        raise DomtokError(f"{path}: vocabulary is not byte-level (GPT-2 alphabet); domtok supports byte-level BPE only") from e
    return vocab, merges


@functools.lru_cache(maxsize=4)
def _shared_gpt2_dir() -> str | None:
    """The GPT-2 files in ../shared/data/gpt2 beside a source checkout, when present."""
    from domtok.utils import shared_data_dir

    d = shared_data_dir()
    return str(d / "gpt2") if d is not None and (d / "gpt2" / "vocab.bpe").exists() else None


def gpt2_vocab_merges(gpt2_dir: str | None = None) -> tuple[dict[str, int], list[tuple[str, str]] | None]:
    """GPT-2's base vocabulary and merges: from `gpt2_dir`, $DOMTOK_GPT2_DIR, or tiktoken's cache/network."""
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    d = gpt2_dir or os.environ.get("DOMTOK_GPT2_DIR") or _shared_gpt2_dir()
    if d:
        vocab_bpe, encoder_json = Path(d) / "vocab.bpe", Path(d) / "encoder.json"
        for p in (vocab_bpe, encoder_json):
            if not p.exists():
                raise DomtokError(f"{p}: missing; DOMTOK_GPT2_DIR (or gpt2_dir) must be a folder holding "
                                  f"GPT-2's vocab.bpe and encoder.json")
        try:
            # Checks the files are GPT-2's (sha256) and that encoder.json agrees with the merges.
            ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json),
                                                    vocab_bpe_hash=GPT2_VOCAB_BPE_SHA256,
                                                    encoder_json_hash=GPT2_ENCODER_JSON_SHA256)
        except (ValueError, AssertionError) as e:
            raise DomtokError(f"{d}: vocab.bpe/encoder.json are not GPT-2's original files ({e}); "
                              f"point DOMTOK_GPT2_DIR at the files from openai/gpt-2") from e
        lines = vocab_bpe.read_text(encoding="utf-8").split("\n")[1:]
        merges = [tuple(line.split(" ")) for line in lines if line.strip()]
    else:
        try:
            import tiktoken

            ranks = tiktoken.get_encoding("gpt2")._mergeable_ranks
        except Exception as e:  # offline, no cache
            raise DomtokError("GPT-2 BPE files not found: set DOMTOK_GPT2_DIR to a folder holding GPT-2's "
                              "vocab.bpe and encoder.json (e.g. ../shared/data/gpt2), or pass gpt2_dir "
                              f"(tiktoken could not fetch them: {e})") from e
        merges = None  # derived from the ranks only if HF files are written
    vocab = {token_string(b): i for b, i in ranks.items()}
    return vocab, merges
