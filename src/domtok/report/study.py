"""One study's report.md sections, headline first: a whole run, or one ladder rung."""

from __future__ import annotations

from pathlib import Path

from domtok.report.compare import UNDECIDED, grpo_table, headline, paired_comparisons
from domtok.report.mechanism import mechanism_section
from domtok.report.plots import forest_plot, plots, primary_plot
from domtok.report.primary import (calibration, calibration_lines, primary_lines, primary_result,
                                   sequential_answer)
from domtok.report.run import Run
from domtok.report.sequential import read_looks
from domtok.report.tables import (compute_table, confounds, eval_matrix, generation_table, loss_table, method_lines,
                                  reward_table, rft_table)


def answer_section(run: Run, comps: dict, plots_dir: Path, rel: str, rung: str | None = None) -> tuple[list[str], dict | None]:
    """The primary endpoint's answer and its dot plot (the report's first lines), and its dict."""
    primary = primary_result(run, comps, rung)
    # --seeds auto tests the primary of the whole run, or of a ladder's last rung (primary_deltas)
    if primary is not None and rung == (run.spec.ladder[-1].name if run.spec.ladder else None):
        seq = sequential_answer(primary, read_looks(run))
        if seq is not None:
            primary["sequential"] = seq
            if "mismatch" not in seq:  # the design's decision is the answer; "continue" decides nothing yet
                primary["fixed_sample_verdict"] = primary["verdict"]
                primary["verdict"] = seq["decision"] if seq["decision"] != "continue" else UNDECIDED
    plot = primary_plot(primary, plots_dir) if primary else None
    return primary_lines(run, primary, f"{rel}/{plot}" if plot else None), primary


def study_sections(run: Run, comps: dict, plots_dir: Path, rel: str, h: str = "##",
                   after_headline: list[str] = ()) -> list[str]:
    """Every section of one study's report after its answer (`answer_section`), calibration and
    headline first (a whole run, or one ladder rung);
    its plots go to `plots_dir`, linked as `rel/NAME`; headings at level `h`; `after_headline`
    comes right after the headline, before the detail."""
    figs = plots(run, plots_dir)
    forest = forest_plot(comps, plots_dir)
    lines = [f"{h} Calibration: the same test on noise alone", "",
             "The primary endpoint's test between two halves of one condition's seeds (seed k of the first half "
             "paired with seed k of the second).", "", *calibration_lines(calibration(run)), "",
             f"{h} Headline", "", *headline(run, comps, rel), "",
             *([f"![forest plot]({rel}/{forest})", ""] if forest else []), *after_headline,
             f"{h} Method", "", *method_lines(run), "",
             f"{h} Losses", "", *loss_table(run), "",
             f"{h} Reinforcement learning", "", *reward_table(run), "",
             f"{h}# Does GRPO raise held-out accuracy?", "", *grpo_table(run, comps), "",
             *([f"{h}# Rejection sampling (RFT): yield per round", "", *rft, ""] if (rft := rft_table(run)) else []),
             f"{h} Evaluation matrix", "", "Each cell: value [95% Wilson CI] for one seed; mean ± std over seeds otherwise.", "",
             *eval_matrix(run), "",
             f"{h} Generation (GSM-style benchmarks)", "", *generation_table(run), "",
             f"{h} Paired comparison: domain vs baseline (per seed, descriptive)", "",
             "One row per seed: same items, same seed, delta = domain − baseline, paired bootstrap 95% CI, "
             "exact McNemar p.", "",
             *paired_comparisons(run, comps), "",
             f"{h} Mechanism", "", *mechanism_section(run, h), "",
             f"{h} Compute matching", "", *compute_table(run), "",
             f"{h} Confounds", "", *confounds(run), "",
             f"{h} Plots", ""]
    return lines + ([f"![{f}]({rel}/{f})" for f in figs] or ["(nothing to plot yet)"])
