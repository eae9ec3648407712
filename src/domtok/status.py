"""`domtok status [RUN_DIR]`: the progress board of a run, stages x conditions (x seeds).

It reads only files on disk (spec.yaml, node manifests, the progress line in a running node's
log.txt), so it works while a run is going, after a crash, or on a run directory copied from
another machine. Under the board it lists each running node's progress and the run's time left.
"""

from __future__ import annotations

from pathlib import Path

import json

from domtok.progress import kind_key, node_progress, running_lines
from domtok.rundir import find_run_dir, key_metric_text, load_run, node_state, wall_time

SYMBOLS = {"done": "✅", "running": "⏳ running", "failed": "❌ failed", "incomplete": "⏸ incomplete",
           "stale": "♻ stale", "pending": "· pending"}


def board(run_dir: Path) -> str:
    spec, nodes = load_run(run_dir)
    columns = [(c, s) for c in spec.conditions for s in spec.seeds]
    head = [f"{c}" if len(spec.seeds) == 1 else f"{c} s{s}" for c, s in columns]
    rows: dict[str, dict] = {}
    running, pending, walls = [], [], {}
    for n in nodes:
        label = n.stage if n.benchmark is None else f"{n.stage} · eval {n.benchmark}"
        if n.rung is not None:
            label = f"rung {n.rung} · {label}"
        state = node_state(n)
        text = SYMBOLS[state]
        if state == "done":
            text += f" {key_metric_text(n)}".rstrip()
            walls.setdefault(kind_key(n), []).append(wall_time(n))
        elif state == "running":
            running.append((n, _started(n)))
            p = node_progress(n)
            if p is not None:
                text += f" {100.0 * p['n'] / max(1, p['total']):.0f}%"
        elif state != "failed":
            pending.append(n)
        if n.condition is None:  # shared by all columns
            rows.setdefault(label, {})[None] = text
        elif n.seed is None:
            for s in spec.seeds:
                rows.setdefault(label, {})[(n.condition, s)] = text
        else:
            rows.setdefault(label, {})[(n.condition, n.seed)] = text
    lines = [f"run {run_dir} ({spec.name})", "", "| stage | " + " | ".join(head) + " |",
             "|---|" + "---|" * len(head)]
    for label, cells in rows.items():
        vals = [cells.get(col, cells.get(None, "")) for col in columns]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    if running:  # where each running node is, from the progress line of its log, and the run's time left
        lines += ["", *running_lines(running, pending, walls, jobs=len(running))]
    return "\n".join(lines)


def _started(node) -> float:
    try:
        return float(json.loads((node.out_dir / "running.json").read_text())["started"])
    except (OSError, KeyError, ValueError, TypeError):
        return (node.out_dir / "node.json").stat().st_mtime if (node.out_dir / "node.json").exists() else 0.0


def add_arguments(p) -> None:
    p.add_argument("run_dir", nargs="?", help="run directory (default: the latest under ./runs)")


def main(args) -> int:
    print(board(find_run_dir(args.run_dir)))
    return 0
