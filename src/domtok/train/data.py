"""The pretraining data loader: fixed-length windows cut from documents read in a seeded order.

A shard directory (written by `domtok prepare`) holds `train_000000.npy`, ..., `val_000000.npy`
(uint16/uint32 token ids, every document `[EOT] + ids`), a sidecar per shard with each
document's token and (original, uninjected) UTF-8 byte count, and `meta.json`.

The training stream is an endless sequence of epochs. Epoch `e` reads the split's documents
in an order drawn from `(seed, e)` alone: a permutation of document indices, whose count is
the same for every condition prepared from one source (`domtok prepare` keeps every
document and assigns train/val from the index). So every condition reads the same documents
in the same order; the domain condition, shorter in tokens, gets further in the same steps.
The documents of an epoch are laid end to end and cut into windows of `seq_len + 1` tokens
(input and the targets shifted by one), stepping by `seq_len` so every token is a target
exactly once; the last partial window of an epoch is dropped. A position in the stream is
`(epoch, index)`; it is all a checkpoint needs to continue exactly where the run stopped.

One optimizer step consumes a *global batch* of `grad_accum` micro-batches of
`micro_batch_size` windows each. The global batch is defined without reference to the number
of processes; rank `r` of `W` takes micro-batches `r, r+W, r+2W, ...`. So a 2-process run
sees exactly the tokens of a 1-process run with twice the accumulation, in the same order.

A document-matched run (`document_match`) reads exactly the documents another condition's
shards give the same config: the same order, stopping at the end of the last document that
run read whole (`stop`, a token position in epoch 0). Targets at or past `stop` are masked
(-100), so its last step, usually partial, trains only on what is left of those documents.

The reference study streamed 1.07B tokens nine times while calling it 10B tokens. The loader
therefore counts: `epoch_float` (windows consumed / windows per epoch) is logged every step,
and `documents_read` says how many whole documents (and their bytes) a position has covered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from domtok.data.shards import read_documents, read_shard, shard_files
from domtok.errors import DomtokError


def check_shard_ids(data_dir: str | Path, vocab_size: int) -> None:
    """Every token id of every shard is below `vocab_size` (meta.json's, which the model is
    built with): an id past the embedding would crash the first forward with an IndexError, after
    the run directory was made. One read of the shards, in chunks (about a second per GB)."""
    for split in ("train", "val"):
        for path in shard_files(data_dir, split):
            arr = read_shard(path)
            chunk = 1 << 24
            for start in range(0, len(arr), chunk):
                top = int(arr[start:start + chunk].max(initial=0))
                if top >= vocab_size:
                    raise DomtokError(f"{path}: holds token id {top}, but meta.json's vocab_size (the model's) is "
                                      f"{vocab_size}; these shards were not made with this tokenizer: re-run "
                                      "`domtok prepare` into a fresh directory")


@dataclass
class DataPosition:
    """Where the training stream stands: the next window is window `index` of epoch `epoch`."""

    epoch: int = 0
    index: int = 0

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    @classmethod
    def from_dict(cls, d: dict) -> "DataPosition":
        return cls(epoch=int(d["epoch"]), index=int(d["index"]))


class SplitStream:
    """One split's tokens (memory-mapped shards, never loaded whole) and its document index."""

    def __init__(self, data_dir: str | Path, split: str):
        self.files = shard_files(data_dir, split)
        self.shards = [read_shard(f) for f in self.files]
        self.shard_ends = np.cumsum([len(a) for a in self.shards])
        self.num_tokens = int(self.shard_ends[-1])
        self.doc_tokens, self.doc_bytes = read_documents(data_dir, split)
        self.doc_starts = np.concatenate(([0], np.cumsum(self.doc_tokens)[:-1])).astype(np.int64)
        self.num_docs = len(self.doc_tokens)

    def read(self, start: int, n: int) -> np.ndarray:
        """Tokens [start, start + n) of the split, across shard boundaries."""
        out = []
        k = int(np.searchsorted(self.shard_ends, start, side="right"))
        while n > 0:
            off = start - (int(self.shard_ends[k - 1]) if k else 0)
            piece = self.shards[k][off:off + n]
            out.append(piece)
            start, n, k = start + len(piece), n - len(piece), k + 1
        return np.concatenate(out).astype(np.int64)


class TrainLoader:
    """Endless, seeded, resumable stream of training windows (see the module docstring)."""

    def __init__(self, data_dir: str | Path, seq_len: int, micro_batch_size: int, grad_accum: int,
                 seed: int, rank: int = 0, world_size: int = 1):
        if grad_accum % world_size:
            raise DomtokError(f"grad_accum {grad_accum} is not divisible by world size {world_size}")
        self.data = SplitStream(data_dir, "train")
        self.seq_len, self.micro_batch_size, self.grad_accum = seq_len, micro_batch_size, grad_accum
        self.seed, self.rank, self.world_size = seed, rank, world_size
        # windows start at 0, T, 2T, ... of an epoch's stream and need T+1 tokens (the last target)
        self.num_windows = max(0, (self.data.num_tokens - 1) // seq_len)
        if self.num_windows == 0:
            raise DomtokError(
                f"{data_dir}: the train split has {self.data.num_tokens} tokens, fewer than one window of "
                f"seq_len+1={seq_len + 1}; lower seq_len or prepare more data")
        self.pos = DataPosition()
        self._epoch_plan: tuple[int, np.ndarray, np.ndarray] | None = None  # (epoch, doc order, ends)
        self.stop: int | None = None  # document-matched: epoch 0's stream ends here (see document_match)
        self.matched_documents = 0    # ... after this many documents of the order

    @property
    def windows_per_step(self) -> int:
        return self.grad_accum * self.micro_batch_size

    @property
    def tokens_per_epoch(self) -> int:
        return self.num_windows * self.seq_len

    def epoch_float(self, pos: DataPosition | None = None) -> float:
        pos = pos or self.pos
        return pos.epoch + pos.index / self.num_windows

    # --- the order of one epoch, derived only from (seed, epoch) -------------------------
    def document_order(self, epoch: int) -> np.ndarray:
        """The document indices of the split in the order epoch `epoch` reads them."""
        return self._plan(epoch)[0]

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._epoch_plan is None or self._epoch_plan[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.data.num_docs)
            self._epoch_plan = (epoch, order, np.cumsum(self.data.doc_tokens[order]))
        return self._epoch_plan[1], self._epoch_plan[2]

    def _window_at(self, epoch: int, index: int) -> np.ndarray:
        order, ends = self._plan(epoch)
        pos, need = index * self.seq_len, self.seq_len + 1
        k = int(np.searchsorted(ends, pos, side="right"))
        pieces = []
        while need > 0:
            doc = int(order[k])
            off = pos - (int(ends[k - 1]) if k else 0)
            take = min(need, int(self.data.doc_tokens[doc]) - off)
            pieces.append(self.data.read(int(self.data.doc_starts[doc]) + off, take))
            pos, need, k = pos + take, need - take, k + 1
        return np.concatenate(pieces)

    def _advance(self, pos: DataPosition, n: int) -> DataPosition:
        epoch, index = pos.epoch, pos.index + n
        while index >= self.num_windows:
            index -= self.num_windows
            epoch += 1
        return DataPosition(epoch, index)

    def documents_read(self, pos: DataPosition | None = None) -> tuple[int, int]:
        """(documents, original UTF-8 bytes) read whole (every token an input or a target) by the
        windows before `pos`; a document read in two epochs counts twice."""
        pos = pos or self.pos
        docs = nbytes = 0
        for epoch in range(pos.epoch + 1):
            windows = self.num_windows if epoch < pos.epoch else pos.index
            if windows == 0:
                continue
            order, ends = self._plan(epoch)
            read = windows * self.seq_len + 1
            if self.stop is not None:
                read = min(read, self.stop) if epoch == 0 else 0
            n = int(np.searchsorted(ends, read, side="right"))
            docs += n
            nbytes += int(self.data.doc_bytes[order[:n]].sum())
        return docs, nbytes

    # --- one optimizer step ---------------------------------------------------------------
    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches of the next global batch, as (x, y) int64 CPU tensors."""
        B = self.micro_batch_size
        out = []
        for m in range(self.rank, self.grad_accum, self.world_size):
            p = self._advance(self.pos, m * B)
            rows, firsts = [], []
            for _ in range(B):
                rows.append(self._window_at(p.epoch, p.index))
                firsts.append(p.index * self.seq_len + 1 if p.epoch == 0 else None)  # stream position of y[0]
                p = self._advance(p, 1)
            buf = torch.from_numpy(np.stack(rows))
            x, y = buf[:, :-1].contiguous(), buf[:, 1:].contiguous()
            if self.stop is not None:
                for r, first in enumerate(firsts):
                    past = self.seq_len if first is None else min(self.seq_len, max(0, self.stop - first))
                    y[r, past:] = -100
            out.append((x, y))
        self.pos = self._advance(self.pos, self.windows_per_step)
        return out

    def document_match(self, partner_dir: str | Path, partner_steps: int) -> int:
        """Read exactly the documents a run of `partner_steps` steps reads from `partner_dir`
        (the same config on another condition's shards): sets `stop` and returns the steps that
        takes, the last one usually partial (its targets past `stop` masked).

        The partner's documents are those it reads whole (`documents_read`); both runs read them
        in the same order (same seed, same document count). Limited to a partner that stays in
        its first epoch: past it, the documents cut at an epoch's end differ between tokenizations."""
        partner = TrainLoader(partner_dir, self.seq_len, self.micro_batch_size, self.grad_accum, self.seed)
        if partner.data.num_docs != self.data.num_docs:
            raise DomtokError(f"{partner_dir}: {partner.data.num_docs} train documents, not {self.data.num_docs}; a "
                              "document-matched condition must be prepared from the same source as its partner")
        end = partner._advance(DataPosition(), partner_steps * partner.windows_per_step)
        if end.epoch > 0 and end != DataPosition(1, 0):
            raise DomtokError(f"{partner_dir}: its run reads {partner.epoch_float(end):.2f} epochs; document matching "
                              "covers a partner that reads at most one epoch (prepare more documents or train fewer steps)")
        docs, _ = partner.documents_read(end)
        if docs == 0:
            raise DomtokError(f"{partner_dir}: a run of {partner_steps} steps reads no whole document; train longer")
        _, ends = self._plan(0)
        self.stop = int(ends[docs - 1])  # the end of the partner's last whole document, in this stream
        self.matched_documents = docs
        windows = -(-(self.stop - 1) // self.seq_len)  # targets 1..stop-1
        if windows > self.num_windows:
            raise DomtokError(f"{self.data.files[0].parent}: its partner's {docs} documents do not fit in this "
                              "condition's first epoch; train the partner fewer steps")
        return -(-windows // self.windows_per_step)

    def state_dict(self) -> dict:
        return {"position": self.pos.to_dict(), "seed": self.seed, "seq_len": self.seq_len,
                "windows_per_epoch": self.num_windows, "documents": self.data.num_docs}

    def load_state_dict(self, state: dict) -> None:
        if (state.get("windows_per_epoch") not in (None, self.num_windows)
                or state.get("seq_len") not in (None, self.seq_len)
                or state.get("documents") not in (None, self.data.num_docs)):
            raise DomtokError("checkpoint data position was recorded for different shards or seq_len; "
                              "resume with the same data_dir and seq_len, or start a fresh out dir")
        self.pos = DataPosition.from_dict(state["position"])


@dataclass
class ValData:
    """The validation text of a run: whole documents, cut into windows. `tokens` targets are
    scored; `bytes` is the UTF-8 size of exactly those documents' original text."""

    batches: list[tuple[torch.Tensor, torch.Tensor]]   # this rank's (x, y); y = -100 past the text
    documents: int
    tokens: int
    bytes: int


def val_data(data_dir: str | Path, seq_len: int, micro_batch_size: int, num_batches: int = 0,
             rank: int = 0, world_size: int = 1) -> ValData:
    """The first whole documents of the val split, in file order (the same every eval, so val
    losses are comparable over training): all of them when `num_batches` is 0, else as many as
    fit in `num_batches` micro-batches (at least one). Their tokens after the first EOT are the
    targets: a document's own tokens and the EOT that opens the next one. Rank r takes batches
    r, r+W, ..."""
    data = SplitStream(data_dir, "val")
    ends = np.cumsum(data.doc_tokens)
    if num_batches > 0:  # targets are tokens 1..end-1: at most num_batches * B * T of them
        n_docs = max(1, int(np.searchsorted(ends, num_batches * micro_batch_size * seq_len + 1, side="right")))
    else:
        n_docs = data.num_docs
    end = int(ends[n_docs - 1])
    stream = data.read(0, end)
    n_windows = (end - 1 + seq_len - 1) // seq_len
    x = np.zeros((n_windows, seq_len), dtype=np.int64)
    y = np.full((n_windows, seq_len), -100, dtype=np.int64)
    for w in range(n_windows):
        a = w * seq_len
        n = min(seq_len, end - 1 - a)
        x[w, :n] = stream[a:a + n]
        y[w, :n] = stream[a + 1:a + 1 + n]
    batches = []
    for b in range(rank, (n_windows + micro_batch_size - 1) // micro_batch_size, world_size):
        sl = slice(b * micro_batch_size, (b + 1) * micro_batch_size)
        batches.append((torch.from_numpy(x[sl]), torch.from_numpy(y[sl])))
    return ValData(batches, n_docs, end - 1, int(data.doc_bytes[:n_docs].sum()))
