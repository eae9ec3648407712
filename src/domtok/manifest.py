"""`manifest.json`: the file whose presence means an output directory is complete.

One writer per directory, written last and atomically: the pipeline writes a node's manifest
(with the node hash) after the node's stage function has returned; a standalone verb
(`domtok pretrain|sft|grpo|rft|eval ...`) writes its own from its `main`. Stage functions
never write one, so a kill between the stage's return and the manifest leaves an incomplete
directory (redone or resumed), never a finished one with the wrong manifest.
"""

from __future__ import annotations

import time
from pathlib import Path

from domtok.config import atomic_write_json

MANIFEST = "manifest.json"


def clear_manifest(out_dir: str | Path) -> None:
    """Before a verb rewrites a directory: it is incomplete until the new manifest is written."""
    (Path(out_dir) / MANIFEST).unlink(missing_ok=True)


def write_manifest(out_dir: str | Path, manifest: dict) -> None:
    atomic_write_json(Path(out_dir) / MANIFEST, manifest)


def write_verb_manifest(out_dir: str | Path, stage: str, summary: dict, inputs: dict | None = None) -> None:
    """The manifest of a standalone verb's output (no node hash: no pipeline ran it)."""
    write_manifest(out_dir, {"stage": stage, "config_hash": summary.get("config_hash"), "created": time.time(),
                             "inputs": inputs or {}, "summary": summary})
