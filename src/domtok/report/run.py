"""Loading a run for the report: its finished nodes, their summaries and per-item results,
and the number formats every section shares.

Everything the report says is derived from files the stages wrote (manifests, summary.json,
metrics.jsonl, items.jsonl), read through `domtok.rundir`, so a report can be re-made at any
time, on any machine that has the run directory.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

from domtok.rundir import document_partner, load_run, node_state, read_summary
from domtok.utils import read_items

# Per benchmark kind: the summary metrics shown in the matrix, and the per-item field that a
# paired test compares (a boolean, so McNemar applies).
HEADLINE = {
    "hellaswag": (["acc_norm_char", "acc_norm_token", "acc"], "acc_norm_char"),
    "gsm8k": (["accuracy_strict", "accuracy_flexible"], "correct_flexible"),
    "probes": (["accuracy_all"], "correct"),
}
ALPHA = 0.05


def _fmt(x, digits=4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _sci(x) -> str:
    return f"{x:.3e}" if isinstance(x, (int, float)) else "–"


def _mean_std(vals: list[float]) -> tuple[float, float]:
    m = sum(vals) / len(vals)
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, s


def fact_conditions(spec, baseline: str | None) -> list[str]:
    """The conditions that answer the study's question: compute-matched, with the spec's token
    set. A document-matched arm or a `control` token set is a control of them: the report
    compares it in the Mechanism section, not with the baseline in the headline."""
    return [c for c, v in spec.conditions.items() if c != baseline and v.get("token_set") == spec.token_set
            and document_partner(spec.conditions, c) is None]


class Run:
    """The finished nodes of a run directory, indexed for the tables."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.spec, nodes = load_run(run_dir)
        self.nodes = [n for n in nodes if node_state(n) == "done"]
        self.all_nodes = nodes
        self.summary = {n.id: read_summary(n) for n in self.nodes}
        self.conditions = list(self.spec.conditions)
        conds = self.spec.conditions
        self.baseline = next((c for c, v in conds.items() if not v.get("token_set")), None)
        self.facts = fact_conditions(self.spec, self.baseline)
        # a spec of controls alone compares every condition with the baseline
        self.domain = self.facts or [c for c in conds if c != self.baseline]
        self.stages = [s.name for s in self.spec.stages]
        self._items: dict[str, list[dict]] = {}

    def rung(self, name: str) -> "Run":
        """The same run restricted to one ladder rung's nodes (its whole study)."""
        view = copy.copy(self)
        view.nodes = [n for n in self.nodes if n.rung == name]
        view.all_nodes = [n for n in self.all_nodes if n.rung == name]
        return view

    def training(self, stage: str, cond: str) -> list:
        return [n for n in self.nodes if n.stage == stage and n.condition == cond and n.benchmark is None
                and n.kind not in ("prepare", "tokenizer")]

    def evals(self, stage: str, cond: str, bench: str) -> list:
        return [n for n in self.nodes if n.stage == stage and n.condition == cond and n.benchmark == bench]

    def items(self, node) -> list[dict]:
        """The per-item results of an evaluation node (read once)."""
        if node.id not in self._items:
            self._items[node.id] = read_items(node.out_dir / "items.jsonl")
        return self._items[node.id]


def views(run: Run) -> list[tuple[str | None, Run]]:
    """(rung, view) per study in the run: the run itself, or each ladder rung's whole study."""
    return [(r.name, run.rung(r.name)) for r in run.spec.ladder] or [(None, run)]
