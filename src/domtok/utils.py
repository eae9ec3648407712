"""Small helpers every loop needs: seeding, device choice, torchrun setup, jsonl I/O."""

from __future__ import annotations

import functools
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from domtok.errors import DomtokError


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> str:
    """The one place a device name is checked: `auto` (cuda if there is one, else cpu), `cpu`,
    `cuda`, `cuda:N` or `mps`; a device this machine does not have is a DomtokError."""
    import torch

    from domtok.errors import DomtokError

    name = str(name or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    kind, _, index = name.partition(":")
    if kind == "cuda" and (index == "" or index.isdigit()):
        if not torch.cuda.is_available():
            raise DomtokError(f"--device {name}: no CUDA GPU is visible on this machine; use --device cpu "
                              "(or auto, which picks a GPU when there is one)")
        if index and int(index) >= torch.cuda.device_count():
            raise DomtokError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"numbered from 0; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        return name
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise DomtokError("--device mps: Apple's MPS is not available here; use --device cpu or auto")
        return name
    raise DomtokError(f"--device {name!r}: unknown device; use auto, cpu, cuda, cuda:N or mps")


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    is_main: bool = True

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_setup(device: str = "auto") -> DistInfo:
    """Read torchrun's environment; start the process group (nccl on CUDA, gloo on CPU).

    Without torchrun (no RANK in the environment) this is a single process and does nothing.
    """
    import torch
    import torch.distributed as dist

    device = pick_device(device)
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ["WORLD_SIZE"])
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=device, is_main=rank == 0)


def dist_teardown() -> None:
    """Leave the process group. Call it from a `finally:`.

    On a normal exit every rank waits at a barrier first: a rank that destroys its gloo/NCCL
    context while a peer is still talking to it aborts the process ("terminate called without
    an active exception"). When an exception is on its way out, no barrier: the other ranks
    may never arrive, and torchrun tears the job down once this rank exits.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if sys.exc_info()[1] is None:
            dist.barrier()
        dist.destroy_process_group()


def stream_index(n: int, pos: int, *key) -> int:
    """Index at position `pos` of an endless stream of seeded epoch permutations of range(n):
    epoch e is range(n) shuffled by `random.Random("k1:k2:...:e")`. The one sampler of SFT
    examples (key "sft", seed, stage) and GRPO prompts (key "grpo", seed); a resumed run asks
    for the same positions and gets the same items. (Pretraining orders documents with numpy's
    generator instead, `TrainLoader.document_order`: vectorised over millions of documents.)"""
    epoch, k = divmod(pos, n)
    return _epoch_permutation(n, ":".join(map(str, (*key, epoch))))[k]


@functools.lru_cache(maxsize=2)  # positions are consumed in order: one epoch, maybe the next
def _epoch_permutation(n: int, seed: str) -> tuple[int, ...]:
    perm = list(range(n))
    random.Random(seed).shuffle(perm)
    return tuple(perm)


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_items(path: Path) -> list[dict]:
    """Rows of a jsonl file (items.jsonl, metrics.jsonl); [] when absent. Every row must be a
    JSON object; a line that is not is a DomtokError naming the file and the line.

    The one exception: a run killed mid-write leaves a torn LAST line, which is skipped, so a
    report can be made of a run that is still going.
    """
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == last:
                continue
            raise DomtokError(f"{path}:{i + 1}: not valid JSON ({e.msg}); the file is damaged: remove its "
                              "directory and run again to redo it") from None
        if not isinstance(row, dict):
            raise DomtokError(f"{path}:{i + 1}: holds {type(row).__name__} {short_json(row)}, not a JSON object; the "
                              "file is damaged: remove its directory and run again to redo it")
        rows.append(row)
    return rows


def read_json_object(path: Path, fix: str) -> dict:
    """A JSON file that must hold an object (manifest.json, summary.json, config.json), or a
    DomtokError naming the file, what it holds instead and `fix`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DomtokError(f"{path}: not valid JSON ({e}); {fix}") from None
    if not isinstance(data, dict):
        raise DomtokError(f"{path}: holds {type(data).__name__} {short_json(data)}, not a JSON object; {fix}")
    return data


def short_json(value) -> str:
    """A value as JSON, cut to 40 characters, for messages."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write rows atomically (temp file + rename): a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, default=_json_default) + "\n")
    os.replace(tmp, path)


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, default=_json_default) + "\n")


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def shared_data_dir() -> Path | None:
    """`../shared/data` beside the project checkout, or $DOMTOK_SHARED_DATA; None if absent."""
    env = os.environ.get("DOMTOK_SHARED_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "data"
        if (parent / "pyproject.toml").exists() and cand.is_dir():
            return cand
    return None


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """What produced a result: the versions of domtok, torch and transformers (None when not
    installed) and the git commit of domtok's source checkout (None outside one, e.g. a wheel
    install); `git_dirty` says whether tracked files differ from that commit."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    import domtok

    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    out = {"domtok": domtok.__version__, "torch": pkg("torch"), "transformers": pkg("transformers"),
           "git_commit": None, "git_dirty": None}
    src = Path(domtok.__file__).resolve().parent
    try:
        git = ["git", "-C", str(src)]
        commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no", "--", "."],
                                   capture_output=True, text=True, timeout=10)
            out["git_dirty"] = bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass  # no git on this machine: the commit stays unknown
    return out
