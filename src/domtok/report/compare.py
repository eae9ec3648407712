"""The comparisons and the headline: what is tested, how, and what report.md and report.json say.

- headline: domain − baseline per main metric, stage and domain condition (`seed_item_test`);
  each row belongs to one family: `primary` (the spec's `primary:` endpoint, tested alone;
  see report/primary.py), `secondary` (one Holm family with the GRPO checks) or
  `descriptive` (shown with the reason it is not a test of the question: no p in a family);
- grpo: each GRPO stage − the stage it starts from, per condition, on each GSM-style test
  (secondary);
- per_seed: the paired table, one exact McNemar test per seed, benchmark and stage:
  descriptive only (it asks whether two particular networks differ, which two seeds of one
  condition also do; the calibration rows show it).
"""

from __future__ import annotations

import math

from domtok.errors import DomtokError
from domtok.report.run import ALPHA, HEADLINE, Run, _fmt, views
from domtok.report.tables import matrix_metrics

# Verdicts of report.json, and the words of the report's sentences.
HELPS, HURTS, EQUIVALENT, UNDECIDED = "helps", "hurts", "equivalent", "undecided"
POWER = 0.8

# Rows shown but kept out of every family, and why (the report prints the reason).
PRETRAINED = ("the pretrained models have not been taught the chat format or `#### N` answers, so their task "
              "accuracy describes the starting point, not the question")
PRETRAINED_BPB = ("the pretrained models have not been taught the chat format, so the bits they spend on the gold "
                  "text after a chat prompt describe the starting point, not the question")
OWN_NOTATION = ("each condition is asked in its own notation (the prompts differ between conditions), so the two "
                "sides are not the same items")
OWN_NOTATION_CATEGORIES = ("symbolic_context", "symbolic_table")


def main_metrics(run: Run) -> list[tuple[str, str, str, str | None]]:
    """(benchmark, metric, per-item field, probe category) of every headline metric.

    The headline asks about each probe category and each GSM-style benchmark; aggregates
    (`accuracy_all`) and HellaSwag stay in the tables, so the headline's family of tests is
    no larger than its question.
    """
    out = []
    for bench, b in run.spec.benchmarks.items():
        if b["kind"] == "gsm8k":
            out.append((bench, "accuracy_flexible", "correct_flexible", None))
        elif b["kind"] == "probes":
            cats = []
            for n in run.nodes:
                if n.benchmark == bench:
                    cats += [c for c in dict.fromkeys(r.get("category") for r in run.items(n)) if c and c not in cats]
            out += [(bench, f"accuracy_{c}", "correct", c) for c in cats]
    return out


def gold_metrics(run: Run) -> list[tuple[str, str, str, str | None]]:
    """(benchmark, metric, per-item field, probe category) of the continuous `gold_*bpb` scores
    (domtok.eval.gold) the evaluations recorded: secondary rows beside the accuracies, where
    lower is better (`lower_is_better`)."""
    out = []
    for bench, b in run.spec.benchmarks.items():
        nodes = [n for n in run.nodes if n.benchmark == bench]
        rows = [r for n in nodes for r in run.items(n)]
        for field in ("gold_bpb", "gold_solution_bpb"):
            if not any(r.get(field) is not None for r in rows):
                continue
            if b["kind"] == "probes":
                cats = list(dict.fromkeys(r.get("category") for r in rows if r.get("category")))
                out += [(bench, f"{field}_{c}", field, c) for c in cats]
            else:
                out.append((bench, field, field, None))
    return out


def lower_is_better(metric: str) -> bool:
    """Bits per byte of the gold text: a smaller value is the better model."""
    return metric.startswith("gold_")


def _values(run: Run, node, field: str, category: str | None) -> dict:
    """{item id: value} of one evaluation node (a probe category's items only; items without a
    value, e.g. a gold text too long for the context, left out)."""
    return {r["id"]: r[field] for r in run.items(node)
            if "id" in r and r.get(field) is not None and (category is None or r.get("category") == category)}


def templates(run: Run, node) -> dict | None:
    """{item id: template} when every item of the node names its template (word problems): the
    one-seed test then counts templates, not items, as its independent units."""
    rows = run.items(node)
    if rows and all("template" in r and "id" in r for r in rows):
        return {r["id"]: r["template"] for r in rows}
    return None


def _by_seed(run: Run, stage: str, cond: str, bench: str) -> dict[int, object]:
    return {n.seed: n for n in run.evals(stage, cond, bench)}


def _test(a_nodes: dict, b_nodes: dict, run: Run, field: str, category: str | None) -> dict:
    """seed_item_test of b − a over the seeds both have; {"error": ...} when it cannot be made.

    a_mean / b_mean: mean over those seeds of a's / b's accuracy; per_seed: (a, b) per seed.
    """
    from domtok.eval.stats import seed_item_test

    seeds = [s for s in run.spec.seeds if s in a_nodes and s in b_nodes]
    if not seeds:
        return {"error": "not evaluated in both", "seeds": []}
    a = [_values(run, a_nodes[s], field, category) for s in seeds]
    b = [_values(run, b_nodes[s], field, category) for s in seeds]
    try:
        r = seed_item_test(b, a, alpha=ALPHA, clusters=templates(run, a_nodes[seeds[0]]))
    except ValueError as e:
        return {"error": f"items differ between the runs compared ({e})", "seeds": seeds}
    r["a_mean"], r["b_mean"] = r["b_mean"], r["a_mean"]  # a: the reference (baseline, GRPO's start), b: the other
    per_seed = [(float(sum(map(float, x.values())) / len(x)), float(sum(map(float, y.values())) / len(y)))
                for x, y in zip(a, b)]
    return {**r, "seeds": seeds, "per_seed": per_seed}


def _primary_metric(run: Run, stage: str) -> list[tuple]:
    """The spec's primary endpoint as a main-metric tuple, at its stage (it may name a metric
    the headline does not list, e.g. accuracy_strict)."""
    from domtok.rundir import primary_field

    pr = run.spec.primary
    if not pr or pr["stage"] != stage or pr["benchmark"] not in run.spec.benchmarks:
        return []
    field, cat = primary_field(run.spec.benchmarks[pr["benchmark"]]["kind"], pr["metric"])
    return [(pr["benchmark"], pr["metric"], field, cat)]


def _family(run: Run, bench: str, metric: str, stage: str, category: str | None) -> dict:
    """{"family", "reason"} of a headline row: primary, secondary, or descriptive (why)."""
    pr = run.spec.primary
    if pr and (pr["benchmark"], pr["metric"], pr["stage"]) == (bench, metric, stage):
        return {"family": "primary", "reason": None}
    if run.spec.stage(stage).kind == "pretrain":
        return {"family": "descriptive", "reason": PRETRAINED_BPB if lower_is_better(metric) else PRETRAINED}
    if category in OWN_NOTATION_CATEGORIES:
        return {"family": "descriptive", "reason": OWN_NOTATION}
    return {"family": "secondary", "reason": None}


def _comparisons_of(run: Run) -> dict:
    """The tests of one study (a run, or one ladder rung), before Holm's correction."""
    from domtok.eval.stats import compare_items

    out: dict = {"headline": [], "grpo": [], "per_seed": []}
    domain = run.domain
    main = main_metrics(run)
    if run.baseline is not None:
        for cond in domain:
            for stage in run.spec.evals_after:
                scored = main + gold_metrics(run)
                for bench, metric, field, cat in scored + [m for m in _primary_metric(run, stage) if m not in scored]:
                    r = _test(_by_seed(run, stage, run.baseline, bench), _by_seed(run, stage, cond, bench), run, field, cat)
                    out["headline"].append({"benchmark": bench, "metric": metric, "stage": stage, "condition": cond,
                                            **_family(run, bench, metric, stage, cat), **r})
    for st in run.spec.stages:
        if st.kind != "grpo" or st.name not in run.spec.evals_after or st.after not in run.spec.evals_after:
            continue
        for bench, metric, field, cat in main:
            if run.spec.benchmarks[bench]["kind"] != "gsm8k":
                continue
            for cond in run.conditions:
                r = _test(_by_seed(run, st.after, cond, bench), _by_seed(run, st.name, cond, bench), run, field, cat)
                out["grpo"].append({"benchmark": bench, "metric": metric, "stage": st.name, "start": st.after,
                                    "condition": cond, "family": "secondary", "reason": None, **r})
    if run.baseline is not None:
        for bench, b in run.spec.benchmarks.items():
            field = HEADLINE.get(b["kind"], (None, "correct"))[1]
            for stage in run.spec.evals_after:
                for cond in domain:
                    base, dom = _by_seed(run, stage, run.baseline, bench), _by_seed(run, stage, cond, bench)
                    for seed in [s for s in run.spec.seeds if s in base and s in dom]:
                        row = {"benchmark": bench, "stage": stage, "condition": cond, "seed": seed, "field": field}
                        try:
                            cmp = compare_items(run.items(base[seed]), run.items(dom[seed]), names=(run.baseline, cond))
                        except DomtokError as e:
                            out["per_seed"].append({**row, "error": str(e)})
                            continue
                        r = cmp["metrics"].get(field)
                        if r is not None:  # compare_items gives baseline − domain; the report shows domain − baseline
                            out["per_seed"].append({**row, "n": cmp["n"], "a_mean": r["a"], "b_mean": r["b"],
                                                    "delta": -r["delta"], "ci": (-r["ci"][1], -r["ci"][0]),
                                                    "p": r["p"], "test": r["test"]})
    return out


def comparisons(run: Run) -> dict:
    """Every comparison the report makes, each in its family.

    Returns {"headline": [...], "grpo": [...], "per_seed": [...], "m": size of the secondary
    family}.

    - primary: the spec's `primary:` endpoint per domain condition, tested alone at α (Holm
      only across domain conditions when there are several); its verdict is primary.py's.
    - secondary: every other headline row and the GRPO checks, one Holm family of m tests;
      verdict helps / hurts when the Holm p < α, equivalent when the Holm-adjusted TOST p
      (margin: the primary endpoint's) < α, else undecided.
    - descriptive: shown with their reason, verdict undecided, in no family.
    - per_seed: McNemar per seed, descriptive, in no family.
    In a ladder, each rung's study makes these comparisons (rows carry their `rung`), and each
    family spans every rung. The minimum detectable effect is taken at the family's strictest
    level (α/m for the secondary rows, α for the primary).
    """
    from domtok.eval.stats import min_detectable_effect, tost

    out: dict = {"headline": [], "grpo": [], "per_seed": []}
    for rung, view in views(run):
        part = _comparisons_of(view)
        for key in out:
            out[key] += [{**r, "rung": rung} for r in part[key]]
    margin = (run.spec.primary or {}).get("margin")
    tested = [r for r in out["headline"] + out["grpo"] if "p" in r]
    for r in tested:
        # the margin is the primary's, in its units: no equivalence claim for a metric of other units
        same_units = lower_is_better(r["metric"]) == lower_is_better((run.spec.primary or {}).get("metric", ""))
        r["p_tost"] = tost(r["delta"], r["se"], r["df"], margin, ALPHA)["p"] if margin and same_units else None
    for family in ("primary", "secondary"):
        rows = [r for r in tested if r["family"] == family]
        decide_family(rows)
        for r in rows:
            r["mde"] = min_detectable_effect(r["se"], r["df"], alpha=ALPHA / max(1, len(rows)), power=POWER)
    for r in tested:
        if r["family"] == "descriptive":
            r.update(p_holm=None, p_tost_holm=None, mde=None, verdict=UNDECIDED)
    out["m"] = sum(1 for r in tested if r["family"] == "secondary")
    return out


def decide_family(rows: list[dict]) -> None:
    """One Holm family: each row's `p_holm` (Holm over the rows' p), `p_tost_holm` (Holm over the
    TOST p of the rows that have one, `p_tost`; None for the others) and `verdict`. One seed
    decides nothing: the test then compares two networks, not the conditions."""
    from domtok.eval.stats import holm

    for r, ph in zip(rows, holm([r["p"] for r in rows])):
        r["p_holm"] = ph
    eq_rows = [r for r in rows if r.get("p_tost") is not None]
    for r in rows:
        r["p_tost_holm"] = None
    for r, ph in zip(eq_rows, holm([r["p_tost"] for r in eq_rows])):
        r["p_tost_holm"] = ph
    for r in rows:
        better = -r["delta"] if lower_is_better(r["metric"]) else r["delta"]  # gold_*bpb: fewer bits is better
        r["verdict"] = verdict(better, r["p_holm"], r["p_tost_holm"]) if r["n_seeds"] > 1 else UNDECIDED


def verdict(delta: float, p: float, p_tost: float | None) -> str:
    """helps / hurts when the test rejects 0 at α, equivalent when TOST rejects ±margin, else undecided."""
    if p < ALPHA:
        return HELPS if delta > 0 else HURTS
    if p_tost is not None and p_tost < ALPHA:
        return EQUIVALENT
    return UNDECIDED


def _floor(r: dict) -> float | None:
    """0.0 or 1.0 when both sides score exactly that (no item, no seed differs), else None."""
    return next((v for v in (0.0, 1.0) if r["a_mean"] == v and r["b_mean"] == v), None)


def _label(r: dict) -> str:
    """A probe category by its metric (`accuracy_mul_table`), a GSM-style test by its benchmark
    name; in a ladder, prefixed by the rung."""
    name = r["benchmark"] if r["metric"] == "accuracy_flexible" else r["metric"]
    return name if r.get("rung") is None else f"rung {r['rung']}: {name}"


def _signed(x: float) -> str:
    return f"{round(x, 3) + 0.0:+.3f}"  # + 0.0: no "-0.000"


def _ci_text(r: dict) -> str:
    return f"[{_signed(r['ci'][0])}, {_signed(r['ci'][1])}]"


def _mde_text(r: dict) -> str:
    if r.get("family") == "descriptive":  # in no family: no level to detect an effect at
        return "–"
    if r.get("mde") is None or math.isnan(r["mde"]):
        return "not estimable (no variation between items or seeds)"
    if r["mde"] >= 1.0 and not lower_is_better(r.get("metric", "")):  # an accuracy difference lies in [-1, 1]
        return f"none: even a difference of 1 would be missed (computed ±{r['mde']:.2f}; too few seeds or items)"
    return f"±{r['mde']:.3f}"


def _p_text(p) -> str:
    return "–" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.2g}"


def _grpo_sentence(run: Run, g: dict) -> str:
    where = f"rung `{g['rung']}`: " if g.get("rung") is not None else ""
    if "p" not in g:
        return f"- {where}GRPO `{g['stage']}`, {g['condition']}, {g['benchmark']}: no test ({g['error']})."
    what = {HELPS: "raised", HURTS: "lowered", EQUIVALENT: "left unchanged (within the margin)",
            UNDECIDED: "did not measurably change"}[g["verdict"]]
    runs_up = sum(1 for a, b in g["per_seed"] if b > a)
    return (f"- {where}GRPO `{g['stage']}` {what} held-out accuracy on {g['benchmark']} relative to its "
            f"`{g['start']}` start in {g['condition']}: {g['a_mean']:.3f} → {g['b_mean']:.3f} "
            f"(Δ {_signed(g['delta'])}, 95% CI {_ci_text(g)}, Holm p {_p_text(g['p_holm'])}, "
            f"{len(g['seeds'])} seed(s); higher in {runs_up} of {len(g['per_seed'])} runs, a count, not a test).")


def _words(r: dict) -> str:
    """What a row's test shows, in words that claim no more."""
    floor = _floor(r)
    if floor is not None:  # not a null result: the test has nothing to measure
        return (f"no difference to measure: both conditions score {floor:.3f} on every item in every seed"
                + (" (the models have not learned what this tests)" if floor == 0 else " (ceiling)"))
    if r["family"] == "descriptive":
        return f"descriptive only: {r['reason']}"
    if r["n_seeds"] < 2:
        return "undecided: one seed compares two networks, not the conditions"
    return {HELPS: f"`{r['condition']}` helps", HURTS: f"`{r['condition']}` hurts",
            EQUIVALENT: f"equivalent within ±{r.get('margin', 0):.3f}",
            UNDECIDED: "undecided: neither a difference nor equivalence is shown"}[r["verdict"]]


def headline(run: Run, comps: dict, plots_rel: str = "plots") -> list[str]:
    """The secondary endpoints and the descriptive rows: sentences, the effect table, the method."""
    domain = run.domain
    rows = [r for r in comps["headline"] if "p" in r and r["family"] != "primary"]
    if run.baseline is None or not domain:
        return ["(no baseline and domain condition to compare)"]
    if not rows:
        return ["None yet: no secondary metric has been evaluated in both conditions."]
    margin = (run.spec.primary or {}).get("margin")
    eq = (f"equivalent when the Holm-adjusted TOST p < 0.05 (margin ±{margin:.3f}, the primary endpoint's)"
          if margin else "no equivalence claims (the spec declares no `primary:` margin)")
    from domtok.report.sequential import read_looks

    looked = (read_looks(run) or {}).get("looks")
    lines = [f"Secondary endpoints: every other metric and stage, and the GRPO checks, form one Holm family of "
             f"{comps['m']} tests (helps / hurts when the Holm p < 0.05; {eq}; else undecided). Rows marked "
             "descriptive are shown with the reason they are not a test of the question and are in no family."
             + (" The seeds were added look by look on the primary endpoint (`--seeds auto`): these are "
                "fixed-sample tests, which do not account for that; their error rate was not checked under it."
                if looked else "")
             + (" `gold_*bpb` rows: bits per byte of the gold answer (or worked solution) after the prompt, lower is "
                "better, so `helps` means Δ < 0; equivalence only for metrics in the units of the primary's margin."
                if any(lower_is_better(r["metric"]) for r in rows) else ""), ""]
    secondary = [r for r in rows if r["family"] == "secondary"]
    # the stage the secondary sentence speaks for: the primary endpoint's (with branches the last
    # listed stage is one branch among several), else the last evaluated one
    at = ([run.spec.primary["stage"]] if run.spec.primary else []) + run.spec.evals_after[::-1]
    last = next((s for s in at if any(r["stage"] == s for r in secondary)), None)
    for rung, cond in [(rung, c) for rung, _ in views(run) for c in domain]:
        final = [r for r in secondary if r["stage"] == last and r["condition"] == cond and r["rung"] == rung]
        if not final:
            continue
        words = {v: [_label({**r, "rung": None}) for r in final if r["verdict"] == v and _floor(r) is None]
                 for v in (HELPS, HURTS, EQUIVALENT, UNDECIDED)}
        flat = [f"{_label({**r, 'rung': None})} ({_floor(r):.0f} in both)" for r in final if _floor(r) is not None]
        parts = [f"helps on {', '.join(words[HELPS])}" if words[HELPS] else "",
                 f"hurts on {', '.join(words[HURTS])}" if words[HURTS] else "",
                 f"is equivalent within ±{margin:.3f} on {', '.join(words[EQUIVALENT])}" if words[EQUIVALENT] else "",
                 f"is undecided on {', '.join(words[UNDECIDED])}" if words[UNDECIDED] else "",
                 f"cannot be compared on {', '.join(flat)}: both conditions answer every item alike" if flat else ""]
        n_seeds = max(r["n_seeds"] for r in final)
        where = f"rung `{rung}`, " if rung is not None else ""
        lines.append(f"**Secondary ({where}after `{last}`, {n_seeds} seed(s)).** `{cond}` "
                     + "; ".join(x for x in parts if x) + f" (Holm over the {comps['m']} secondary tests, α = 0.05).")
    lines.append("")
    for g in comps["grpo"]:
        lines.append(_grpo_sentence(run, g))
    if any("p" in g and g["verdict"] != HELPS for g in comps["grpo"]):
        lines.append("- ⚠ GRPO is not shown to raise held-out accuracy in every condition.")
    lines += ["", "| metric | stage | condition | family | baseline | domain | Δ (domain − baseline) | 95% CI | df | p | "
              "Holm p | verdict | MDE (80% power) |", "|---|---|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|"]
    for r in comps["headline"]:
        if r.get("family") == "primary":
            continue
        if "p" not in r:
            lines.append(f"| {_label(r)} | {r['stage']} | {r['condition']} | {r['family']} | – | – | – | – | – | – | – | "
                         f"{r['error']} | – |")
            continue
        lines.append(f"| {_label(r)} | {r['stage']} | {r['condition']} | {r['family']} | {r['a_mean']:.3f} | "
                     f"{r['b_mean']:.3f} | {_signed(r['delta'])} | {_ci_text(r)} | {_fmt(r['df'], 0)} | "
                     f"{_p_text(r['p'])} | {_p_text(r['p_holm'])} | "
                     f"{r['verdict'] if r['family'] != 'descriptive' else 'descriptive'} | {_mde_text(r)} |")
    lines.append("")
    for r in rows:
        holm_p = f", Holm p {_p_text(r['p_holm'])}" if r["family"] == "secondary" else ""
        mde = (f"; the smallest effect this design detects with 80% power is {_mde_text(r)}"
               if r["family"] == "secondary" else "")
        lines.append(f"- {_label(r)} after `{r['stage']}`: {_words({**r, 'margin': margin or 0})} "
                     f"(Δ {_signed(r['delta'])}, 95% CI {_ci_text(r)}{holm_p}){mde}.")
    tested = rows + [g for g in comps["grpo"] if "p" in g]
    empty = [r for r in tested if "nothing to test" in r["method"]]
    methods = sorted({r["method"] for r in tested if r not in empty})
    flat = " Rows where no item differs in any seed have nothing to test (CI [0, 0], p 1)." if empty else ""
    source = "the " + " or the ".join(methods) if methods else "no test"
    lines += ["", f"Method: Δ is the mean over seeds of the per-seed difference on the same items. "
              f"Its 95% CI and p come from {source}: the seed is the unit of replication, so "
              "the t-interval has K − 1 degrees of freedom for K seeds and says how the difference varies from "
              "one training run to another on these items, intersected with [-1, 1] where no accuracy "
              f"difference can lie outside it (`domtok.eval.stats.seed_item_test`).{flat} MDE: the smallest true "
              f"difference this design detects with 80% power at Holm's strictest level α/m (m = {comps['m']}; "
              "noncentral t with the design's own standard error and degrees of freedom). "
              f"Forest plot: `{plots_rel}/forest.png`."]
    return lines


def grpo_table(run: Run, comps: dict) -> list[str]:
    """For every run (condition, seed): held-out accuracy at GRPO's start and after it."""
    lines = ["| stage | benchmark | condition | seed | start stage | start | after GRPO | Δ | higher? |",
             "|---|---|---|---|---|---:|---:|---:|---|"]
    for g in comps["grpo"]:
        for seed, (a, b) in zip(g["seeds"], g.get("per_seed", [])):
            stage = g["stage"] if g.get("rung") is None else f"{g['stage']} (rung {g['rung']})"
            lines.append(f"| {stage} | {g['benchmark']} | {g['condition']} | {seed} | {g['start']} | {a:.3f} | "
                         f"{b:.3f} | {_signed(b - a)} | {'yes' if b > a else 'no'} |")
    if len(lines) == 2:
        return ["(no GRPO stage evaluated together with the stage it starts from)"]
    return lines + ["", *[_grpo_sentence(run, g) for g in comps["grpo"]]]


def paired_comparisons(run: Run, comps: dict | None = None) -> list[str]:
    """Per seed: domain − baseline on the same items, paired bootstrap CI, exact McNemar p (descriptive)."""
    if run.baseline is None:
        return ["(no baseline condition to compare against)"]
    comps = comps or comparisons(run)
    lines = ["| benchmark | stage | condition vs baseline | seed | n | baseline | domain | delta | 95% CI | p (descriptive) | test |",
             "|---|---|---|---|---:|---:|---:|---:|---|---:|---|"]
    for r in comps["per_seed"]:
        r = {**r, "benchmark": r["benchmark"] if r.get("rung") is None else f"rung {r['rung']}: {r['benchmark']}"}
        if "error" in r:
            lines.append(f"| {r['benchmark']} | {r['stage']} | {r['condition']} | s{r['seed']} | – | – | – | – | – | – | "
                         f"{r['error']} |")
            continue
        lines.append(f"| {r['benchmark']} | {r['stage']} | {r['condition']} | s{r['seed']} | {r['n']} | {r['a_mean']:.3f} | "
                     f"{r['b_mean']:.3f} | {_signed(r['delta'])} | {_ci_text(r)} | {_p_text(r['p'])} | {r['test']} |")
    if len(lines) == 2:
        return ["(no pair of finished evaluations to compare yet)"]
    return lines + ["", "Descriptive only, in no family: each row asks whether two particular trained networks differ "
                        "on these items, which two seeds of the same condition also do (see the calibration rows); "
                        "the condition's effect is tested across seeds in the tables above."]


def _num(x):
    """JSON has no NaN: a value that could not be computed is null."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return x


def report_json(run: Run, comps: dict) -> dict:
    """The headline's numbers for programs (report.json beside report.md); `primary`,
    `calibration` and `provenance` are added by write_report."""
    def tested(r: dict) -> dict:
        ok = "p" in r
        return {"delta": _num(r["delta"]) if ok else None, "ci_low": _num(r["ci"][0]) if ok else None,
                "ci_high": _num(r["ci"][1]) if ok else None, "p": _num(r["p"]) if ok else None,
                "p_holm": _num(r.get("p_holm")) if ok else None, "p_tost": _num(r.get("p_tost")) if ok else None,
                "verdict": r.get("verdict") if ok else None, "mde": _num(r.get("mde")) if ok else None,
                "se": _num(r["se"]) if ok else None, "df": _num(r["df"]) if ok else None, "seeds": r["seeds"],
                "per_seed_deltas": [_num(x) for x in r.get("per_seed_deltas", [])], "n_items": r.get("n_items"),
                "method": r.get("method"), "family": r.get("family"), "reason": r.get("reason"),
                "error": r.get("error")}
    head = []
    for r in comps["headline"]:
        ok = "p" in r
        head.append({"benchmark": r["benchmark"], "metric": r["metric"], "stage": r["stage"], "condition": r["condition"],
                     "rung": r["rung"], "baseline_mean": _num(r["a_mean"]) if ok else None,
                     "domain_mean": _num(r["b_mean"]) if ok else None, **tested(r)})
    grpo = []
    for g in comps["grpo"]:
        ok = "p" in g
        grpo.append({"benchmark": g["benchmark"], "metric": g["metric"], "stage": g["stage"], "start": g["start"],
                     "rung": g["rung"], "condition": g["condition"], "start_mean": _num(g["a_mean"]) if ok else None,
                     "end_mean": _num(g["b_mean"]) if ok else None, **tested(g),
                     "raised": (g["verdict"] == HELPS) if ok else None,
                     "per_seed": [{"seed": s, "start": a, "end": b} for s, (a, b) in zip(g["seeds"], g.get("per_seed", []))]})
    accuracy: dict = {}
    for rung, view in views(run):  # a ladder's keys name the rung: "rung-s/probes.accuracy_all"
        prefix = "" if rung is None else f"rung-{rung}/"
        for bench in view.spec.benchmarks:
            for metric in matrix_metrics(view, bench):
                for cond in view.conditions:
                    for stage in view.spec.evals_after:
                        vals = [view.summary[n.id].get("metrics", {}).get(metric) for n in view.evals(stage, cond, bench)]
                        vals = [v for v in vals if isinstance(v, (int, float))]
                        if vals:
                            accuracy.setdefault(cond, {}).setdefault(stage, {})[f"{prefix}{bench}.{metric}"] = \
                                sum(vals) / len(vals)
    return {"seeds": run.spec.seeds, "baseline": run.baseline, "comparisons": comps["m"], "alpha": ALPHA,
            "headline": head, "grpo": grpo, "accuracy": accuracy}
