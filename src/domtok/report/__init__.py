"""`domtok report [RUN_DIR]`: report.md, report.json and PNG plots from the results on disk.

Everything here is derived from files the stages wrote (manifests, summary.json,
metrics.jsonl, items.jsonl), read through `domtok.rundir`, so a report can be re-made at any
time, on any machine that has the run directory. The package, in the order a report is made:

  run.py      loading a run (`Run`: finished nodes, summaries, items) and shared formats
  compare.py  every comparison and its family (`comparisons`), the secondary headline, report.json rows
  primary.py  the primary endpoint's answer, seeds needed, calibration rows, `primary_deltas`
  tables.py   the detail tables: losses, rewards, matrix, generation, compute, confounds, method
  mechanism.py  where a difference sits: token use, the controls, per-template effects
  plots.py    the PNG plots: the primary dot plot and the forest plot among them
  study.py    one study's sections in order (a run, or one ladder rung)
  ladder.py   reading a finished ladder: per-rung compute, effect trends in log-compute
  __init__    `write_report`, `provenance` and the CLI

report.md opens with the answer: the study's question and the spec's `primary:` endpoint,
tested alone at α = 0.05 (helps / hurts / equivalent within its margin / undecided with the
seeds a decision would take), or, for a `--seeds auto` study over its last look's seeds, the
sequential design's decision and repeated CI; with a dot plot of its per-seed deltas
(plots/primary.png). The headline compares the baseline with the conditions that answer the
question (`Run.domain`); a document-matched arm or a control token set is a control, compared
in the Mechanism section.
Then:

  0. calibration: the same test between seed halves of one condition (noise alone);
     headline: the secondary endpoints (every other metric and stage, and whether GRPO
     changed held-out accuracy) as one Holm family, descriptive rows (pretrained models,
     own-notation probes) with their reason; the forest plot (plots/forest.png); the method
     (what compute-matched means, documents and tokens each condition read)
  1. loss per stage and condition (train/val loss; bits per byte for pretraining); GRPO
     rewards, and for every run held-out accuracy before and after GRPO
  2. the evaluation matrix: condition x stage -> headline metrics with 95% CIs (mean ± std
     over seeds when there are several)
  3. the GSM-style generation table (accuracy, response length, hit-max, EOS, repetition,
     domain tokens, eval time)
  4. paired comparisons per seed: delta, bootstrap CI, exact McNemar p (descriptive)
  5. mechanism (`mechanism.py`): token use vs correctness per condition, which comparison is
     compute-matched and which data-matched, the controls (mul vs the document-matched arm and
     that arm vs its partner: atomic facts or more text?; mul vs the control set and the
     control set vs the baseline: facts or compression?), answered on the primary endpoint as
     a Holm family of their own, and per-template effects with the no-multiplication
     templates as negative control, Holm over the section's other tests
  6. compute matching (FLOPs, tokens, unique tokens, epochs, domain-token share; a
     document-matched condition is checked against its partner's documents instead)
  7. stated confounds

report.json holds the numbers for programs: `{"seeds", "primary": {...}, "calibration": [...],
"provenance": {...}, "headline": [{"benchmark", "metric", "stage", "condition",
"baseline_mean", "domain_mean", "delta", "ci_low", "ci_high", "p", "p_holm", "verdict",
"family", ...}], "grpo": [...], "comparisons": size of the secondary family, "accuracy":
{condition: {stage: {"benchmark.metric": mean over seeds}}}, "mechanism": {"usage",
"templates", "controls", "matching", "m"}}`.

A spec with `learns:` also gets the check of those figures per condition. A ladder (a spec
with `ladder:`, see domtok.ladder) opens with each rung's primary answer, then its rungs
(parameters, tokens, FLOPs, wall time, compute matching per rung, the `learns:` check per
rung), each headline effect against training FLOPs with its trend over seeds in log-compute,
the span in decades and the smallest rung whose CI excludes zero
(plots/ladder_effects.png, plots/ladder_accuracy.png); then every rung's whole study as
above, plots under plots/rung-<r>/, each family spanning all rungs. Its report.json: the same
keys with a `rung` in every headline and grpo row, `primary` of the last rung, no top-level
`accuracy`, and `"ladder": [{"rung", "params", "tokens", "flops", "wall_time_s",
"compute_matched", "headline", "grpo", "accuracy", "primary", ...}]`, `"ladder_trend": [...]`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from domtok.config import atomic_write_text
from domtok.report.compare import comparisons, report_json
from domtok.report.ladder import ladder_report
from domtok.report.mechanism import mechanism
from domtok.report.run import Run
from domtok.report.primary import calibration, primary_deltas
from domtok.report.study import answer_section, study_sections
from domtok.report.tables import compute_table, confounds, learn_check, notation_lines
from domtok.rundir import find_run_dir

# The names other modules and tests import from `domtok.report`.
__all__ = ["Run", "compute_table", "confounds", "notation_lines", "primary_deltas", "write_report"]


def provenance(run: Run) -> dict:
    """What ran the study, from the finished nodes' manifests: each field is the one value
    every node recorded, or the list of the distinct values when they differ (a run resumed
    on another machine or commit); `dirty` is true when any node ran uncommitted code;
    wall_seconds sums every finished node's wall time."""
    from domtok.rundir import read_manifest, wall_time

    recorded = [m["provenance"] for m in map(read_manifest, run.nodes) if isinstance(m.get("provenance"), dict)]
    out: dict = {}
    for key in ("commit", "dirty", "domtok", "torch", "python", "device", "cpu", "threads"):
        vals = list(dict.fromkeys(r.get(key) for r in recorded))
        out[key] = (vals[0] if len(vals) == 1 else vals) if vals else None
    if isinstance(out["dirty"], list):
        out["dirty"] = any(out["dirty"])
    out["wall_seconds"] = sum(wall_time(n) for n in run.nodes)
    out["nodes_recorded"] = f"{len(recorded)} of {len(run.nodes)} finished nodes"
    return out


def _finite(x):
    """JSON has no NaN: a value that could not be computed is null (as in report_json)."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def write_report(run_dir: str | Path) -> Path:
    """report.md (the primary endpoint's answer first), report.json and plots/ of a run
    directory; returns report.md."""
    run_dir = Path(run_dir)
    run = Run(run_dir)
    pending = [n.id for n in run.all_nodes if n not in run.nodes]
    spec = run.spec
    info = [f"Conditions: {', '.join(f'`{c}`' for c in run.conditions)} (baseline: `{run.baseline}`); "
            f"seeds: {spec.seeds}; stages: {' → '.join(['prepare'] + run.stages)}"
            + (f"; ladder rungs: {', '.join(f'`{r.name}`' for r in spec.ladder)}" if spec.ladder else "") + ".",
            f"Finished nodes: {len(run.nodes)} of {len(run.all_nodes)}"
            + (f" — not finished: {', '.join(pending[:8])}{' …' if len(pending) > 8 else ''}" if pending else "") + ".",
            ""]
    comps = comparisons(run)
    if spec.ladder:
        answer, body, js = ladder_report(run, comps)
    else:
        js = report_json(run, comps)
        js["mechanism"] = _finite(mechanism(run))
        learned = []
        if spec.learns:
            check, misses = learn_check(spec.learns, js["accuracy"])
            learned = [f"## Do the models learn what is tested? (mean over seeds after `{spec.learns['stage']}`)", "",
                       *check, "", ("- ⚠ Not every model reaches the figures: " + "; ".join(misses) + ".") if misses
                       else "- ✅ Every condition's models reach every figure.", ""]
        answer, js["primary"] = answer_section(run, comps, run_dir / "plots", "plots")
        js["calibration"] = calibration(run)
        # The answer opens the report; the check of what the models learned follows the headline.
        from domtok.report.sequential import seeds_sections
        looks, snr, seeds_js = seeds_sections(run)
        js.update(seeds_js)
        body = study_sections(run, comps, run_dir / "plots", "plots", after_headline=learned + looks) + snr
    js["provenance"] = provenance(run)
    lines = [f"# domtok report: {spec.name}", "", *answer, "", *info]
    # report.json first: report.md, the file people open, is the last to appear.
    atomic_write_text(run_dir / "report.json", json.dumps(js, indent=1, allow_nan=False) + "\n")
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines + body) + "\n")
    return path


def add_arguments(p) -> None:
    p.add_argument("run_dir", nargs="?", help="run directory (default: the latest under ./runs)")


def main(args) -> int:
    path = write_report(find_run_dir(args.run_dir))
    print(f"wrote {path}")
    return 0
