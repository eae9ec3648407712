"""`domtok report [RUN_DIR]`: report.md, report.json and PNG plots from the results on disk.

Everything here is derived from files the stages wrote (manifests, summary.json,
metrics.jsonl, items.jsonl), read through `domtok.rundir`, so a report can be re-made at any
time, on any machine that has the run directory. The package, in the order a report is made:

  run.py      loading a run (`Run`: finished nodes, summaries, items) and shared formats
  compare.py  every comparison (`comparisons`), the headline's words and table, report.json
  tables.py   the detail tables: losses, rewards, matrix, generation, compute, confounds
  plots.py    the PNG plots, the forest plot among them
  study.py    one study's sections in order (a run, or one ladder rung)
  ladder.py   reading a finished ladder: per-rung compute, effect trends in log-compute
  __init__    `write_report` and the CLI

report.md opens with the answer:

  0. headline: the study's question in one sentence; for each main metric (each probe
     category, each GSM-style test) after each evaluated stage, domain − baseline as the mean
     over seeds with a 95% CI from the seeds (t-test on the per-seed deltas), p and Holm p (over every
     comparison in the report), a verdict (helps / hurts / no detectable difference) and the
     minimum detectable effect; whether GRPO raised held-out accuracy above its start; a
     forest plot of every effect (plots/forest.png)

then the detail, in the order a paper draft needs it:

  1. loss per stage and condition (train/val loss; bits per byte for pretraining); GRPO
     rewards, and for every run held-out accuracy before and after GRPO
  2. the evaluation matrix: condition x stage -> headline metrics with 95% CIs (mean ± std
     over seeds when there are several)
  3. the GSM-style generation table (accuracy, response length, hit-max, EOS, repetition,
     domain tokens, eval time)
  4. paired comparisons per seed: delta, bootstrap CI, exact McNemar p, Holm p
  5. compute matching (FLOPs, tokens, unique tokens, epochs, domain-token share)
  6. stated confounds

report.json holds the headline's numbers for programs:
`{"seeds", "headline": [{"benchmark", "metric", "stage", "condition", "baseline_mean",
"domain_mean", "delta", "ci_low", "ci_high", "p", "p_holm", "verdict", ...}], "grpo": [...],
"accuracy": {condition: {stage: {"benchmark.metric": mean over seeds}}}}`.

A spec with `learns:` also gets the check of those figures per condition. A ladder (a spec
with `ladder:`, see domtok.ladder) opens instead with its rungs (parameters, tokens, FLOPs,
wall time, compute matching per rung, the `learns:` check per rung), each headline effect
against training FLOPs with its fitted trend in log-compute and the smallest rung whose CI
excludes zero (plots/ladder_effects.png, plots/ladder_accuracy.png); then every rung's
whole study as above, plots under plots/rung-<r>/, Holm over all rungs' comparisons.
Its report.json: the same keys with a `rung` in every headline and grpo row, no top-level
`accuracy`, and `"ladder": [{"rung", "params", "tokens", "flops", "wall_time_s",
"compute_matched", "headline", "grpo", "accuracy", ...}]`, `"ladder_trend": [...]`.
"""

from __future__ import annotations

import json
from pathlib import Path

from domtok.config import atomic_write_text
from domtok.report.compare import comparisons, report_json
from domtok.report.ladder import ladder_report
from domtok.report.run import Run
from domtok.report.study import study_sections
from domtok.report.tables import compute_table, confounds, learn_check, notation_lines
from domtok.rundir import find_run_dir

# The names other modules and tests import from `domtok.report`.
__all__ = ["Run", "compute_table", "confounds", "notation_lines", "write_report"]


def write_report(run_dir: str | Path) -> Path:
    """report.md (headline first), report.json and plots/ of a run directory; returns report.md."""
    run_dir = Path(run_dir)
    run = Run(run_dir)
    pending = [n.id for n in run.all_nodes if n not in run.nodes]
    spec = run.spec
    lines = [f"# domtok report: {spec.name}", "",
             f"Conditions: {', '.join(f'`{c}`' for c in run.conditions)} (baseline: `{run.baseline}`); "
             f"seeds: {spec.seeds}; stages: {' → '.join(['prepare'] + run.stages)}"
             + (f"; ladder rungs: {', '.join(f'`{r.name}`' for r in spec.ladder)}" if spec.ladder else "") + ".",
             f"Finished nodes: {len(run.nodes)} of {len(run.all_nodes)}"
             + (f" — not finished: {', '.join(pending[:8])}{' …' if len(pending) > 8 else ''}" if pending else "") + ".",
             ""]
    comps = comparisons(run)
    if spec.ladder:
        body, js = ladder_report(run, comps)
    else:
        js = report_json(run, comps)
        learned = []
        if spec.learns:
            check, misses = learn_check(spec.learns, js["accuracy"])
            learned = [f"## Do the models learn what is tested? (mean over seeds after `{spec.learns['stage']}`)", "",
                       *check, "", ("- ⚠ Not every model reaches the figures: " + "; ".join(misses) + ".") if misses
                       else "- ✅ Every condition's models reach every figure.", ""]
        # The headline opens the report; the check of what the models learned follows it.
        body = study_sections(run, comps, run_dir / "plots", "plots", after_headline=learned)
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
