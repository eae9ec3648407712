"""Token shards on disk: fixed-size `.npy` files plus a small JSON sidecar per shard.

Layout of a prepared directory (see docs/ARCHITECTURE.md):

    train_000000.npy  train_000000.json  train_000001.npy ...  val_000000.npy ...
    tokenizer/  config.yaml  summary.json  meta.json   (meta.json is written last)

A shard is a 1-D numpy array of token ids (uint16 when the vocab fits, else uint32; the
`.npy` header records dtype and length). Documents are `[EOT] + ids` laid end to end and may
run across a shard boundary, so every shard except a split's last holds exactly
`shard_tokens` tokens. The sidecar says what the shard holds and where in the document
stream it ends, and, for every document that starts in it, the document's length in tokens
(EOT included) and the UTF-8 bytes of its original text: the index that lets pretraining read
documents in a seeded order and measure bits per byte on exactly the text it scored. It is
written after the `.npy` is renamed into place, so a shard counts as complete only when its
sidecar exists. That is what makes resuming sound: the document ->
shard assignment is a pure function of the source order and the config, so a re-run can skip
every complete shard and start exactly where the last one ended.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from domtok.config import atomic_write_json
from domtok.errors import DomtokError
from domtok.utils import read_json_object


def shard_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


@dataclass
class ShardInfo:
    """The sidecar of one shard. `end_doc`/`end_offset`: the next token to write after this shard
    is token `end_offset` of document `end_doc` (global document index in the source order)."""

    name: str
    tokens: int = 0
    documents: int = 0          # documents that START in this shard (their EOT is here)
    bytes: int = 0              # UTF-8 bytes of the original text of those documents
    domain_tokens: int = 0
    histogram: dict = field(default_factory=dict)   # canonical token text -> count
    end_doc: int = 0
    end_offset: int = 0
    dtype: str = "uint16"
    config_hash: str = ""
    doc_tokens: list = field(default_factory=list)  # per document starting here: tokens incl. its EOT
    doc_bytes: list = field(default_factory=list)   # per document starting here: original UTF-8 bytes


def write_shard(out_dir: Path, info: ShardInfo, tokens: np.ndarray) -> None:
    """Write `<name>.npy` atomically, then its sidecar (the completion mark)."""
    out_dir = Path(out_dir)
    path = out_dir / f"{info.name}.npy"
    tmp = out_dir / f".{info.name}.npy.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.save(f, tokens, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    atomic_write_json(out_dir / f"{info.name}.json", asdict(info))


def read_shard(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """A shard's tokens, a 1-D integer array (memory-mapped by default: never loaded whole);
    never unpickles."""
    path = Path(path)
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DomtokError(f"{path}: not a readable token shard ({e}); re-run `domtok prepare` into a new dir") from None
    if arr.ndim != 1 or arr.dtype not in (np.uint16, np.uint32, np.int32, np.int64):
        raise DomtokError(f"{path}: expected a 1-D uint16/uint32 token array, got {arr.dtype} {arr.shape}; "
                          "re-run `domtok prepare` into a new dir")
    return arr


def list_shards(out_dir: str | os.PathLike, split: str) -> list[Path]:
    """The complete shards of a split, in order (a shard without its sidecar is not complete)."""
    out_dir = Path(out_dir)
    return [p for p in sorted(out_dir.glob(f"{split}_*.npy")) if p.with_suffix(".json").exists()]


def shard_files(out_dir: str | os.PathLike, split: str) -> list[Path]:
    """The shards a reader (training, validation, the id check) uses: every `{split}_*.npy`, in
    order, each complete (its sidecar exists). An incomplete shard, or none, is an error."""
    files = sorted(Path(out_dir).glob(f"{split}_*.npy"))
    if not files:
        raise DomtokError(f"{out_dir}: no {split}_*.npy shards; run `domtok prepare` for this condition first")
    for f in files:
        if not f.with_suffix(".json").exists():
            raise DomtokError(f"{f}: incomplete shard (no {f.with_suffix('.json').name} sidecar); finish it with "
                              "`domtok prepare` (it resumes) or prepare into a new dir")
    return files


def load_meta(out_dir: str | os.PathLike) -> dict:
    """`meta.json` of a finished shard directory; a clear error if the directory is not one."""
    path = Path(out_dir) / "meta.json"
    if not path.exists():
        raise DomtokError(f"{path}: not found; point data_dir at a directory written by `domtok prepare` (or "
                          "finish an interrupted one: `domtok prepare` resumes)")
    meta = read_json_object(path, "re-run `domtok prepare`")
    if "splits" not in meta or "vocab_size" not in meta:
        raise DomtokError(f"{path}: missing 'splits' or 'vocab_size'; re-run `domtok prepare`")
    return meta


def completed_shards(out_dir: Path, split: str, config_hash: str) -> list[ShardInfo]:
    """Complete shards 0..k-1 of a split from an earlier run with the same config; everything
    after the first gap or damaged shard is deleted so it will be rewritten."""
    out_dir = Path(out_dir)
    done: list[ShardInfo] = []
    i = 0
    while True:
        name = shard_name(split, i)
        npy, side = out_dir / f"{name}.npy", out_dir / f"{name}.json"
        if not (npy.exists() and side.exists()):
            break
        try:
            info = ShardInfo(**json.loads(side.read_text()))
            n = read_shard(npy).shape[0]
        except (ValueError, TypeError, DomtokError):
            break
        if info.config_hash != config_hash:
            raise DomtokError(f"{side}: written by a different prepare config ({info.config_hash} != {config_hash}); "
                              "use a new output directory or delete the old shards")
        if n != info.tokens:
            break
        done.append(info)
        i += 1
    # anything from shard i on is stale or half-written: remove it
    for p in out_dir.glob(f"{split}_*"):
        try:
            idx = int(p.stem.split("_")[-1])
        except ValueError:
            continue
        if idx >= i:
            p.unlink()
    for p in out_dir.glob(f".{split}_*.tmp-*"):
        p.unlink()
    return done


class ShardWriter:
    """Collects documents of one split into fixed-size shards and writes each as it fills.

    Memory is one shard buffer, whatever the corpus size. Domain-token counts and the
    histogram are taken from the ids in the shard (never from the injector's say-so).
    """

    def __init__(self, out_dir: Path, split: str, shard_tokens: int, dtype: np.dtype, config_hash: str,
                 domain_start: int, domain_texts: list[str], done: list[ShardInfo] | None = None):
        self.out_dir, self.split, self.shard_tokens = Path(out_dir), split, shard_tokens
        self.dtype, self.config_hash = np.dtype(dtype), config_hash
        self.domain_start, self.domain_texts = domain_start, domain_texts
        self.shards: list[ShardInfo] = list(done or [])
        for s in self.shards:
            s.doc_tokens, s.doc_bytes = [], []  # the sidecars keep them; totals() needs only sums
        self.resume_doc = self.shards[-1].end_doc if self.shards else 0
        self.resume_offset = self.shards[-1].end_offset if self.shards else 0
        self.buf = np.empty(shard_tokens, dtype=self.dtype)
        self.fill = 0
        self._new_info()

    def _new_info(self) -> None:
        self.info = ShardInfo(name=shard_name(self.split, len(self.shards)), dtype=self.dtype.name,
                              config_hash=self.config_hash)

    def wants(self, doc: int) -> int | None:
        """Token offset to start document `doc` at, or None if earlier shards already hold it."""
        if doc < self.resume_doc:
            return None
        return self.resume_offset if doc == self.resume_doc else 0

    def add(self, doc: int, ids: np.ndarray, nbytes: int, start: int = 0) -> None:
        """Append document `doc` (`ids` = [EOT] + tokens), from token `start` on."""
        if start == 0:
            self.info.documents += 1
            self.info.bytes += nbytes
            self.info.doc_tokens.append(len(ids))
            self.info.doc_bytes.append(nbytes)
        pos = start
        while pos < len(ids):
            take = min(self.shard_tokens - self.fill, len(ids) - pos)
            self.buf[self.fill:self.fill + take] = ids[pos:pos + take]
            self.fill += take
            pos += take
            if self.fill == self.shard_tokens:
                end = (doc, pos) if pos < len(ids) else (doc + 1, 0)
                self._flush(*end)

    def _flush(self, end_doc: int, end_offset: int) -> None:
        tokens = self.buf[:self.fill].copy()
        info = self.info
        info.tokens, info.end_doc, info.end_offset = int(self.fill), end_doc, end_offset
        n_dom = len(self.domain_texts)
        in_set = (tokens >= self.domain_start) & (tokens < self.domain_start + n_dom)
        counts = np.bincount(tokens[in_set].astype(np.int64) - self.domain_start, minlength=n_dom)
        info.domain_tokens = int(counts.sum())
        info.histogram = {self.domain_texts[i]: int(c) for i, c in enumerate(counts) if c}
        write_shard(self.out_dir, info, tokens)
        info.doc_tokens, info.doc_bytes = [], []  # on disk now; memory stays one shard's worth
        self.shards.append(info)
        self.fill = 0
        self._new_info()

    def finish(self, end_doc: int) -> None:
        """Write the last, shorter shard (if any tokens are left)."""
        if self.fill:
            self._flush(end_doc, 0)

    def totals(self) -> dict:
        hist: Counter = Counter()
        for s in self.shards:
            hist.update(s.histogram)
        return {"documents": sum(s.documents for s in self.shards), "tokens": sum(s.tokens for s in self.shards),
                "bytes": sum(s.bytes for s in self.shards), "domain_tokens": sum(s.domain_tokens for s in self.shards),
                "shards": [f"{s.name}.npy" for s in self.shards], "histogram": dict(sorted(hist.items()))}


def read_documents(out_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens incl. EOT, original UTF-8 bytes) of every document of a split, in file order,
    from the shard sidecars; checked against the shards' lengths."""
    out_dir = Path(out_dir)
    tokens, nbytes, total = [], [], 0
    for npy in shard_files(out_dir, split):
        side = npy.with_suffix(".json")
        try:
            info = json.loads(side.read_text())
        except (OSError, ValueError) as e:
            raise DomtokError(f"{side}: missing or unreadable shard sidecar ({e}); re-run `domtok prepare` "
                              "into a new dir") from None
        if "doc_tokens" not in info or "doc_bytes" not in info or len(info["doc_tokens"]) != len(info["doc_bytes"]):
            raise DomtokError(f"{side}: no per-document index (doc_tokens/doc_bytes; written by an older domtok); "
                              "re-run `domtok prepare` into a new dir")
        tokens += info["doc_tokens"]
        nbytes += info["doc_bytes"]
        total += read_shard(npy).shape[0]
    tokens_arr, bytes_arr = np.asarray(tokens, dtype=np.int64), np.asarray(nbytes, dtype=np.int64)
    if int(tokens_arr.sum()) != total:
        raise DomtokError(f"{out_dir}: the {split} sidecars list {int(tokens_arr.sum())} document tokens but the "
                          f"shards hold {total}; re-run `domtok prepare` into a new dir")
    return tokens_arr, bytes_arr
