"""The pretraining data loader: fixed-length windows cut from token shards, seeded per epoch.

A shard directory (written by `domtok prepare`) holds `train_000000.npy`, ..., `val_000000.npy`
(uint16/uint32 token ids, every document `[EOT] + ids`) and `meta.json` with per-split token
and byte counts. Each shard is cut into windows of `seq_len + 1` tokens (input and the
targets shifted by one), stepping by `seq_len` so every token is a target exactly once.

The training stream is an endless sequence of windows, epoch after epoch. Epoch `e` visits
the shards in an order drawn from `(seed, e)` and, inside each shard, the windows in an order
drawn from `(seed, e, shard)`. A position in the stream is `(epoch, index)`; it is all a
checkpoint needs to continue exactly where the run stopped.

One optimizer step consumes a *global batch* of `grad_accum` micro-batches of
`micro_batch_size` windows each. The global batch is defined without reference to the number
of processes; rank `r` of `W` takes micro-batches `r, r+W, r+2W, ...`. So a 2-process run
sees exactly the tokens of a 1-process run with twice the accumulation, in the same order.

The reference study streamed 1.07B tokens nine times while calling it 10B tokens. The loader
therefore counts: `epoch_float` (windows consumed / windows per epoch) is logged every step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from domtok.errors import DomtokError


def read_meta(data_dir: str | Path) -> dict:
    """`meta.json` of a shard directory; a clear error if the directory is not one."""
    path = Path(data_dir) / "meta.json"
    if not path.exists():
        raise DomtokError(f"{path}: not found; point data_dir at a directory written by `domtok prepare`")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DomtokError(f"{path}: not valid JSON ({e}); re-run `domtok prepare`") from None
    if "splits" not in meta or "vocab_size" not in meta:
        raise DomtokError(f"{path}: missing 'splits' or 'vocab_size'; re-run `domtok prepare`")
    return meta


def check_shard_ids(data_dir: str | Path, vocab_size: int) -> None:
    """Every token id of every shard is below `vocab_size` (meta.json's, which the model is
    built with): an id past the embedding would crash the first forward with an IndexError, after
    the run directory was made. One read of the shards, in chunks (about a second per GB)."""
    import numpy as np

    for split in ("train", "val"):
        for path in sorted(Path(data_dir).glob(f"{split}_*.npy")):
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DomtokError(f"{path}: not a readable .npy shard ({e}); re-run `domtok prepare`") from None
            chunk = 1 << 24
            for start in range(0, len(arr), chunk):
                top = int(arr[start:start + chunk].max(initial=0))
                if top >= vocab_size:
                    raise DomtokError(f"{path}: holds token id {top}, but meta.json's vocab_size (the model's) is "
                                      f"{vocab_size}; these shards were not made with this tokenizer: re-run "
                                      "`domtok prepare` into a fresh directory")


def split_files(data_dir: str | Path, split: str) -> list[Path]:
    files = sorted(Path(data_dir).glob(f"{split}_*.npy"))
    if not files:
        raise DomtokError(f"{data_dir}: no {split}_*.npy shards; run `domtok prepare` for this condition first")
    return files


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


class ShardWindows:
    """All `seq_len + 1`-token windows of one split, memory-mapped, never loaded whole."""

    def __init__(self, data_dir: str | Path, split: str, seq_len: int, vocab_size: int | None = None):
        self.seq_len = seq_len
        self.files = split_files(data_dir, split)
        self.shards = []
        for f in self.files:
            try:
                arr = np.load(f, mmap_mode="r")
            except (ValueError, OSError) as e:
                raise DomtokError(f"{f}: cannot read as a .npy token shard ({e}); re-run `domtok prepare`") from None
            if arr.ndim != 1 or arr.dtype not in (np.uint16, np.uint32, np.int32, np.int64):
                raise DomtokError(f"{f}: expected a 1-D uint16/uint32 token array, got {arr.dtype} {arr.shape}")
            self.shards.append(arr)
        # windows start at 0, T, 2T, ... and need T+1 tokens (the last target)
        self.counts = np.array([max(0, (len(a) - 1) // seq_len) for a in self.shards], dtype=np.int64)
        self.num_windows = int(self.counts.sum())
        self.num_tokens = int(sum(len(a) for a in self.shards))
        if self.num_windows == 0:
            raise DomtokError(
                f"{data_dir}: the {split} split has {self.num_tokens} tokens, fewer than one window of "
                f"seq_len+1={seq_len + 1}; lower seq_len or prepare more data")
        self.vocab_size = vocab_size

    def window(self, shard: int, w: int) -> np.ndarray:
        start = w * self.seq_len
        return np.asarray(self.shards[shard][start:start + self.seq_len + 1], dtype=np.int64)


class TrainLoader:
    """Endless, seeded, resumable stream of training windows (see the module docstring)."""

    def __init__(self, data_dir: str | Path, seq_len: int, micro_batch_size: int, grad_accum: int,
                 seed: int, rank: int = 0, world_size: int = 1):
        if grad_accum % world_size:
            raise DomtokError(f"grad_accum {grad_accum} is not divisible by world size {world_size}")
        self.data = ShardWindows(data_dir, "train", seq_len)
        self.seq_len, self.micro_batch_size, self.grad_accum = seq_len, micro_batch_size, grad_accum
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.pos = DataPosition()
        self._epoch_plan: tuple[int, np.ndarray, np.ndarray] | None = None  # (epoch, shard order, cumsum)
        self._shard_perm: tuple[int, int, np.ndarray] | None = None  # (epoch, shard, window perm)

    @property
    def windows_per_step(self) -> int:
        return self.grad_accum * self.micro_batch_size

    @property
    def tokens_per_epoch(self) -> int:
        return self.data.num_windows * self.seq_len

    def epoch_float(self, pos: DataPosition | None = None) -> float:
        pos = pos or self.pos
        return pos.epoch + pos.index / self.data.num_windows

    # --- the order of one epoch, derived only from (seed, epoch) -------------------------
    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._epoch_plan is None or self._epoch_plan[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.data.shards))
            self._epoch_plan = (epoch, order, np.cumsum(self.data.counts[order]))
        return self._epoch_plan[1], self._epoch_plan[2]

    def _window_at(self, epoch: int, index: int) -> np.ndarray:
        order, ends = self._plan(epoch)
        k = int(np.searchsorted(ends, index, side="right"))
        shard = int(order[k])
        w = index - (int(ends[k - 1]) if k else 0)
        if self._shard_perm is None or self._shard_perm[:2] != (epoch, shard):
            perm = np.random.default_rng([self.seed, epoch, shard, 1]).permutation(int(self.data.counts[shard]))
            self._shard_perm = (epoch, shard, perm)
        return self.data.window(shard, int(self._shard_perm[2][w]))

    def _advance(self, pos: DataPosition, n: int) -> DataPosition:
        epoch, index = pos.epoch, pos.index + n
        while index >= self.data.num_windows:
            index -= self.data.num_windows
            epoch += 1
        return DataPosition(epoch, index)

    # --- one optimizer step ---------------------------------------------------------------
    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches of the next global batch, as (x, y) int64 CPU tensors."""
        B = self.micro_batch_size
        out = []
        for m in range(self.rank, self.grad_accum, self.world_size):
            p = self._advance(self.pos, m * B)
            rows = []
            for _ in range(B):
                rows.append(self._window_at(p.epoch, p.index))
                p = self._advance(p, 1)
            buf = torch.from_numpy(np.stack(rows))
            out.append((buf[:, :-1].contiguous(), buf[:, 1:].contiguous()))
        self.pos = self._advance(self.pos, self.windows_per_step)
        return out

    def state_dict(self) -> dict:
        return {"position": self.pos.to_dict(), "seed": self.seed, "seq_len": self.seq_len,
                "windows_per_epoch": self.data.num_windows}

    def load_state_dict(self, state: dict) -> None:
        if state.get("windows_per_epoch") not in (None, self.data.num_windows) or state.get("seq_len") not in (None, self.seq_len):
            raise DomtokError("checkpoint data position was recorded for different shards or seq_len; "
                              "resume with the same data_dir and seq_len, or start a fresh out dir")
        self.pos = DataPosition.from_dict(state["position"])


def val_batches(data_dir: str | Path, seq_len: int, micro_batch_size: int, num_batches: int,
                rank: int = 0, world_size: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `num_batches` micro-batches of the val split, in file order (the same every
    eval, so val losses are comparable over training); rank r takes batches r, r+W, ..."""
    data = ShardWindows(data_dir, "val", seq_len)
    need = num_batches * micro_batch_size
    windows = []
    for shard in range(len(data.shards)):
        for w in range(int(data.counts[shard])):
            if len(windows) == need:
                break
            windows.append((shard, w))
    # a short val split gives fewer batches; the last one may be partial
    batches = []
    for b in range(rank, (len(windows) + micro_batch_size - 1) // micro_batch_size, world_size):
        rows = [data.window(s, w) for s, w in windows[b * micro_batch_size:(b + 1) * micro_batch_size]]
        buf = torch.from_numpy(np.stack(rows))
        batches.append((buf[:, :-1].contiguous(), buf[:, 1:].contiguous()))
    return batches
