"""Output directories: domtok never writes over files it did not write, and one writer at a time.

Every verb that writes a directory (`run`, `prepare`, `pretrain`, `sft`, `grpo`, `rft`, `eval`,
`export`, `import`, `tokenizer build`, `hub pull`) calls `claim_out_dir` before it writes
anything:

- a path that is a file (or lies under one) is an error, not a `NotADirectoryError`;
- a non-empty directory that holds no domtok output (see `domtok_evidence`) is an error: the
  user's `thesis.tex` is never deleted or mixed into;
- a verb that REPLACES its output as a whole (export, import, tokenizer build, hub pull)
  replaces an existing domtok output only with `--force`; verbs that continue their own
  output (training resumes, prepare skips finished shards) go on as they did;
- a lock: `.<name>.lock` beside the directory holds the writer's pid and command line under
  an `fcntl` lock. A second writer exits with an error naming the first. The kernel drops the
  lock when its process dies, so the lock file of a killed process is simply taken over.
  The lock lives beside the directory, not in it, so a directory replaced atomically stays
  locked while it is swapped. The CLI releases it when the verb returns.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import time
from pathlib import Path

from domtok.errors import DomtokError

_held: dict[str, int] = {}  # lock path -> open fd, for the life of the process


def domtok_evidence(path: str | os.PathLike) -> str | None:
    """The file that shows `path` holds a domtok output, or None (the user's directory)."""
    p = Path(path)
    try:
        cfg = json.loads((p / "config.json").read_text())
        if isinstance(cfg, dict) and cfg.get("format") == "domtok":
            return "config.json (a domtok model dir)"
    except (OSError, ValueError):
        pass
    for name, what in (("manifest.json", "a finished domtok stage"), ("node.json", "a domtok run node"),
                       ("domtok/config.json", "a domtok export"), ("domtok_tokenizer.json", "a domtok tokenizer"),
                       ("spec.yaml", "a domtok run directory"), ("failed.json", "a failed domtok stage")):
        if (p / name).exists():
            return f"{name} ({what})"
    try:
        if (p / "config.yaml").read_text()[:200].startswith("# config_hash:"):
            return "config.yaml (a domtok stage, maybe unfinished)"
    except (OSError, UnicodeDecodeError):
        pass
    if any((p / "checkpoints").glob("step_*")):
        return "checkpoints/ (domtok training checkpoints)"
    try:
        if "splits" in json.loads((p / "meta.json").read_text()):
            return "meta.json (domtok token shards)"
    except (OSError, ValueError, TypeError):
        pass
    return None


def check_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """`path` is a directory or can become one: neither it nor a parent is a file."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            where = "" if q == p else f" (inside {p})"
            raise DomtokError(f"{q}: is a file, not a directory{where}; give a directory path as the {what} "
                              "(it is created when missing)")
    return p


def claim_out_dir(path: str | os.PathLike, *, replace: bool = False, force: bool = False,
                  what: str = "output directory") -> Path:
    """Check that `path` may be written (see the module docstring) and lock it for this process.

    replace: the verb replaces the whole directory; an existing domtok output then needs `force`.
    Under torchrun only rank 0 claims; the other ranks write nothing of their own.
    """
    p = check_writable_dir(path, what)
    if os.environ.get("RANK", "0") != "0":
        return p
    lock_dir(p)
    if p.is_dir() and any(p.iterdir()):
        evidence = domtok_evidence(p)
        if evidence is None:
            names = sorted(x.name for x in p.iterdir())
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            raise DomtokError(f"{p}: not empty and not written by domtok (it holds {shown}); choose a new or "
                              f"empty {what}: domtok does not write over files it did not write")
        if replace and not force:
            raise DomtokError(f"{p}: already holds {evidence}, which this would replace; pass --force to "
                              f"replace it, or choose another {what}")
    return p


def refuse_foreign(path: Path, own: set[str]) -> None:
    """A forced replace of `path` deletes only what domtok writes there: `own` (paths relative
    to `path`, e.g. what the new output holds). Anything else is named and nothing is deleted."""
    foreign = sorted(str(q.relative_to(path)) for q in path.rglob("*")
                     if str(q.relative_to(path)) not in own and not (q.is_dir() and any(q.iterdir())))
    if foreign:
        shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        raise DomtokError(f"{path}: holds {shown}, which domtok did not write here; --force replaces only domtok's "
                          "own files: move those elsewhere, or choose another directory")


def remove_tree(path: str | os.PathLike) -> None:
    """Delete a directory domtok wrote. A symbolic link there is not followed (its target may be
    anyone's): it is an error naming both."""
    p = Path(path)
    if p.is_symlink():
        raise DomtokError(f"{p}: is a symbolic link (to {os.readlink(p)}), where domtok expected its own "
                          "directory; domtok does not delete through links: remove the link or move its target here")
    shutil.rmtree(p)


def refuse_source_inside(src: str | os.PathLike, out: str | os.PathLike) -> None:
    """Replacing `out` must not delete the input being read: `src` may not be `out` or lie in it."""
    s, o = Path(src).resolve(), Path(out).resolve()
    if s == o or o in s.parents:
        raise DomtokError(f"{out}: is the input {src} or holds it; writing there would delete the input; "
                          "choose another output directory")


def lock_dir(path: str | os.PathLike) -> Path:
    """Take the writer's lock of directory `path` (its parent is created); error if another
    live process holds it. Held until this process exits."""
    import fcntl

    p = Path(path).absolute()
    lock = p.parent / f".{p.name}.lock"
    if str(lock) in _held:
        return p
    check_writable_dir(p.parent)
    p.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            pid = holder.get("pid", "?")
            raise DomtokError(f"{p}: in use by process {pid} (`{holder.get('command', '?')}`, since "
                              f"{holder.get('started', '?')}; lock {lock}); wait for it to finish or stop it "
                              f"(kill {pid})") from None
        # the previous holder may have removed the file between our open and our lock
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "command": " ".join(["domtok", *sys.argv[1:]]),
                             "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
    _held[str(lock)] = fd
    return p


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


@atexit.register
def release_locks() -> None:
    """Give up every lock this process holds (the CLI calls it when a verb returns)."""
    for lock, fd in list(_held.items()):
        try:
            os.unlink(lock)  # while still locked: a waiting writer re-checks the inode
        except OSError:
            pass
        os.close(fd)
        _held.pop(lock, None)
