"""Progress of a loop: one line format, written by every loop and read back by `domtok status`.

Every stage that loops (pretraining, SFT, GRPO, RFT's sampling and training, the GSM8K,
probes and HellaSwag evaluations) reports through `Progress`. On a terminal (stderr is a tty)
it draws a tqdm bar. Otherwise, as in a node's `log.txt` under `domtok run`, it writes a line
to stderr at the first update, then every `DOMTOK_PROGRESS_EVERY` seconds (default 15; 0 = every
update), and at the end:

    progress sft: 120/800 steps (15.0%) · 3.21 steps/s · elapsed 37s · ETA 3m32s · loss 1.234

The rate and the ETA count this process's updates only (a resumed run does not count the
steps it skipped). `parse_line` reads such a line back, `last_progress(log)` finds the newest
one in a log, and `domtok status` and `domtok run` show a running node's progress and time
left from it (`node_progress`, `time_left`, `running_lines`).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

DEFAULT_EVERY_S = 15.0


def every_seconds() -> float:
    """Seconds between progress lines: $DOMTOK_PROGRESS_EVERY, else 15."""
    raw = os.environ.get("DOMTOK_PROGRESS_EVERY", "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_EVERY_S
    except ValueError:
        return DEFAULT_EVERY_S


def clock(seconds: float) -> str:
    """1h02m03s, 3m32s, 12s: the one way domtok writes a duration (parsed back by `parse_clock`)."""
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


_CLOCK = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(\d+)s$")


def parse_clock(text: str) -> float | None:
    m = _CLOCK.match(text)
    if not m:
        return None
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return float(h * 3600 + mi * 60 + s)


class Progress:
    """Steps of one loop: `update(n, **shown)` after each, `write(msg)` for other lines, `close()`.

    `enabled=False` (the other ranks of a torchrun) makes every call a no-op; `bar=False`
    draws no tqdm bar even on a terminal (the lines are still written when stderr is not one).
    """

    def __init__(self, total: int, desc: str, unit: str = "steps", initial: int = 0, enabled: bool = True,
                 bar: bool = True):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = self.start = int(initial)
        self.enabled = enabled
        self.shown: dict = {}
        self.t0 = time.time()
        self.last_line = None  # time of the last line written; None: none yet
        self.bar = None
        self.lines = enabled and not sys.stderr.isatty()
        if enabled and bar and not self.lines:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=f" {unit}", dynamic_ncols=True)

    def update(self, n: int = 1, **shown) -> None:
        if not self.enabled:
            return
        self.n += n
        self.shown = shown
        if self.bar is not None:
            if shown:
                self.bar.set_postfix({k: _fmt(v) for k, v in shown.items()}, refresh=False)
            self.bar.update(n)
        elif self.lines:
            now = time.time()
            if self.last_line is None or now - self.last_line >= every_seconds() or self.n >= self.total:
                self._line(now)

    def _line(self, now: float) -> None:
        self.last_line = now
        print(self.line(now), file=sys.stderr, flush=True)  # stdout stays the verb's (e.g. `domtok eval`'s JSON)

    def line(self, now: float | None = None) -> str:
        """The progress line for the current state."""
        now = time.time() if now is None else now
        elapsed = now - self.t0
        done = self.n - self.start
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = clock((self.total - self.n) / rate) if rate > 0 else "?"
        pct = 100.0 * self.n / self.total if self.total else 100.0
        text = (f"progress {self.desc}: {self.n}/{self.total} {self.unit} ({pct:.1f}%) · {rate:.3g} {self.unit}/s"
                f" · elapsed {clock(elapsed)} · ETA {eta}")
        return text + "".join(f" · {k} {_fmt(v)}" for k, v in self.shown.items())

    def write(self, msg: str) -> None:
        """A message line that does not break the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.lines and self.last_line is not None and not self.n >= self.total:
            self._line(time.time())  # where a loop that ended early stopped
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# --------------------------------------------------------------------------- reading it back

_LINE = re.compile(r"^progress (?P<desc>.+?): (?P<n>\d+)/(?P<total>\d+) (?P<unit>\S+) \((?P<pct>[\d.]+)%\)"
                   r" · (?P<rate>[\d.e+-]+) \S+/s · elapsed (?P<elapsed>\S+) · ETA (?P<eta>\S+)")


def parse_line(line: str) -> dict | None:
    """{"desc", "n", "total", "unit", "rate", "elapsed_s", "eta_s"} of a progress line; None for
    any other line. eta_s is None while the rate is not yet known."""
    m = _LINE.match(line.strip())
    if not m:
        return None
    return {"desc": m["desc"], "n": int(m["n"]), "total": int(m["total"]), "unit": m["unit"],
            "rate": float(m["rate"]), "elapsed_s": parse_clock(m["elapsed"]), "eta_s": parse_clock(m["eta"])}


def last_progress(log: Path, tail_bytes: int = 65536) -> dict | None:
    """The newest progress line of a log, with `at` (the log's modification time) and
    `left_s` (its ETA less the time since: the loop's time left now); None when it has none."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail_bytes))
            text = f.read().decode("utf-8", errors="replace")
        at = log.stat().st_mtime
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        p = parse_line(line)
        if p is not None:
            p["at"] = at
            p["left_s"] = None if p["eta_s"] is None else max(0.0, p["eta_s"] - (time.time() - at))
            return p
    return None


def describe(p: dict) -> str:
    """`sft 120/800 steps (15%), ~3m32s left` for a board cell."""
    pct = 100.0 * p["n"] / p["total"] if p["total"] else 100.0
    left = f", ~{clock(p['left_s'])} left" if p.get("left_s") is not None else ""
    return f"{p['desc']} {p['n']}/{p['total']} {p['unit']} ({pct:.0f}%){left}"


# --------------------------------------------------------------------------- a run's time left
#
# Read by `domtok status` and `domtok run`'s heartbeat from the nodes (`domtok.rundir.Node`) of a run.

def kind_key(node) -> tuple:
    """Nodes that take about as long as each other: same kind, stage and benchmark."""
    return node.kind, node.stage, node.benchmark


def node_progress(node) -> dict | None:
    """The newest progress line of a node's log (`last_progress`)."""
    return last_progress(node.out_dir / "log.txt")


def started(node, t0: float) -> bool:
    """Whether a node submitted at t0 has started: its worker writes node.json when it starts
    (and leaves it when it ends). A Ray task can wait in Ray's queue for resources long after
    it was submitted."""
    try:
        return (node.out_dir / "node.json").stat().st_mtime >= t0 - 1.0
    except OSError:
        return False


def time_left(pending: list, running: list[tuple], walls: dict, jobs: int,
              now: float | None = None) -> str:
    """' · 1 running, 3 waiting, ~3m10s left' (and 'N queued on the executor' for submitted nodes
    that have not started: a Ray task waiting for resources): a running node takes the time its
    progress line says is left (else as long as the mean finished node of its kind, less its time so far); a
    waiting node as long as the mean finished node of its kind, or, none finished yet, as long
    as a running one of its kind will have taken (elapsed + left). `walls` maps `kind_key` to
    the wall times of finished nodes; `running` holds (node, start time)."""
    now = time.time() if now is None else now
    lefts, projected = {}, {}
    for node, t0 in running:
        p = node_progress(node)
        if p is not None and p["left_s"] is not None:
            lefts[node.id] = p["left_s"]
            projected.setdefault(kind_key(node), []).append(now - t0 + p["left_s"])

    def guess(node) -> float | None:
        same = (walls.get(kind_key(node)) or projected.get(kind_key(node))
                or [w for k, ws in walls.items() if k[0] == node.kind for w in ws])
        return sum(same) / len(same) if same else None

    total, untimed = 0.0, 0
    for node, t0 in running:
        g = guess(node)
        if node.id in lefts:
            total += lefts[node.id]
        elif g is not None:
            total += max(0.0, g - (now - t0))
        else:
            untimed += 1
    for node in pending:
        g = guess(node)
        total += g or 0.0
        untimed += g is None
    if not pending and not running:
        return ""
    queued = sum(1 for node, t0 in running if not started(node, t0))
    counts = (f" · {len(running) - queued} running, " + (f"{queued} queued on the executor, " if queued else "")
              + f"{len(pending)} waiting")
    if untimed == len(running) + len(pending):
        return counts + ", time left known once a node of each kind has finished or written a progress line"
    left = total / max(1, min(jobs, len(pending) + len(running)))
    if untimed:
        return counts + f", ~{clock(left)} left for the nodes timed so far (+ {untimed} node(s) not yet timed)"
    return counts + f", ~{clock(left)} left"


def running_lines(running: list[tuple], pending: list, walls: dict, jobs: int) -> list[str]:
    """One line per running node with its progress, then the run's time left (`time_left`)."""
    lines = []
    for node, t0 in running:
        if not started(node, t0):
            lines.append(f"  queued {node.id} ({clock(time.time() - t0)}): submitted, not started (the executor "
                         "has no free slot for it yet)")
            continue
        p = node_progress(node)
        where = describe(p) if p is not None else "no progress line yet"
        lines.append(f"  running {node.id} ({clock(time.time() - t0)}): {where}")
    return lines + ["  run: " + time_left(pending, running, walls, jobs).lstrip(" ·")]
