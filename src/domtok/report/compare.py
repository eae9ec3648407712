"""The comparisons and the headline: what is tested, how, and what report.md and report.json say.

- headline: domain − baseline per main metric, stage and domain condition (`seed_item_test`);
- grpo: each GRPO stage − the stage it starts from, per condition, on each GSM-style test;
- per_seed: the paired table, one exact McNemar test per seed, benchmark and stage.
"""

from __future__ import annotations

import math

from domtok.errors import DomtokError
from domtok.report.run import ALPHA, HEADLINE, Run, _fmt, views
from domtok.report.tables import matrix_metrics

# Verdicts of report.json, and the words of the report's sentences.
HELPS, HURTS, NULL = "helps", "hurts", "no detectable difference"
POWER = 0.8


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


def _values(run: Run, node, field: str, category: str | None) -> dict:
    """{item id: value} of one evaluation node (a probe category's items only)."""
    return {r["id"]: r[field] for r in run.items(node)
            if "id" in r and field in r and (category is None or r.get("category") == category)}


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
        r = seed_item_test(b, a, alpha=ALPHA)
    except ValueError as e:
        return {"error": f"items differ between the runs compared ({e})", "seeds": seeds}
    r["a_mean"], r["b_mean"] = r["b_mean"], r["a_mean"]  # a: the reference (baseline, GRPO's start), b: the other
    per_seed = [(float(sum(map(float, x.values())) / len(x)), float(sum(map(float, y.values())) / len(y)))
                for x, y in zip(a, b)]
    return {**r, "seeds": seeds, "per_seed": per_seed}


def _comparisons_of(run: Run) -> dict:
    """The tests of one study (a run, or one ladder rung), before Holm's correction."""
    from domtok.eval.stats import compare_items

    out: dict = {"headline": [], "grpo": [], "per_seed": []}
    domain = [c for c in run.conditions if c != run.baseline]
    main = main_metrics(run)
    if run.baseline is not None:
        for cond in domain:
            for stage in run.spec.evals_after:
                for bench, metric, field, cat in main:
                    r = _test(_by_seed(run, stage, run.baseline, bench), _by_seed(run, stage, cond, bench), run, field, cat)
                    out["headline"].append({"benchmark": bench, "metric": metric, "stage": stage, "condition": cond, **r})
    for st in run.spec.stages:
        if st.kind != "grpo" or st.name not in run.spec.evals_after or st.after not in run.spec.evals_after:
            continue
        for bench, metric, field, cat in main:
            if run.spec.benchmarks[bench]["kind"] != "gsm8k":
                continue
            for cond in run.conditions:
                r = _test(_by_seed(run, st.after, cond, bench), _by_seed(run, st.name, cond, bench), run, field, cat)
                out["grpo"].append({"benchmark": bench, "metric": metric, "stage": st.name, "start": st.after,
                                    "condition": cond, **r})
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
    """Every comparison the report makes, each with its p and Holm p over all of them.

    Returns {"headline": [...], "grpo": [...], "per_seed": [...], "m": number of tests}.

    - headline: domain − baseline per main metric, stage and domain condition (`seed_item_test`);
    - grpo: each GRPO stage − the stage it starts from, per condition, on each GSM-style test;
    - per_seed: the paired table, one exact McNemar test per seed, benchmark and stage.
    In a ladder, each rung's study makes these comparisons (rows carry their `rung`), and the
    family is all of them. The minimum detectable effect of a headline or GRPO row is taken at
    Holm's strictest level α/m (m = all comparisons): an effect that large is found with 80%
    power whatever the other p-values are.
    """
    from domtok.eval.stats import holm, min_detectable_effect

    out: dict = {"headline": [], "grpo": [], "per_seed": []}
    for rung, view in views(run):
        part = _comparisons_of(view)
        for key in out:
            out[key] += [{**r, "rung": rung} for r in part[key]]
    rows = [r for part in ("headline", "grpo", "per_seed") for r in out[part] if "p" in r]
    for r, ph in zip(rows, holm([r["p"] for r in rows])):
        r["p_holm"] = ph
    m = len(rows)
    for r in out["headline"] + out["grpo"]:
        if "p" in r:
            r["mde"] = min_detectable_effect(r["se"], r["df"], alpha=ALPHA / m, power=POWER)
            r["verdict"] = NULL if not r["p_holm"] < ALPHA else HELPS if r["delta"] > 0 else HURTS
    out["m"] = m
    return out


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
    if r.get("mde") is None or math.isnan(r["mde"]):
        return "not estimable (no variation between items or seeds)"
    if r["mde"] >= 1.0:  # an accuracy difference lies in [-1, 1]: no effect is detectable at all
        return f"none: even a difference of 1 would be missed (computed ±{r['mde']:.2f}; too few seeds or items)"
    return f"±{r['mde']:.3f}"


def _p_text(p) -> str:
    return "–" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.2g}"


def _grpo_sentence(run: Run, g: dict) -> str:
    where = f"rung `{g['rung']}`: " if g.get("rung") is not None else ""
    if "p" not in g:
        return f"- {where}GRPO `{g['stage']}`, {g['condition']}, {g['benchmark']}: no test ({g['error']})."
    raised = g["delta"] > 0
    runs_up = sum(1 for a, b in g["per_seed"] if b > a)
    return (f"- {where}GRPO `{g['stage']}` {'raised' if raised else 'did NOT raise'} held-out accuracy on {g['benchmark']} "
            f"above its `{g['start']}` start in {g['condition']}: {g['a_mean']:.3f} → {g['b_mean']:.3f} "
            f"(Δ {_signed(g['delta'])}, 95% CI {_ci_text(g)}, Holm p {_p_text(g['p_holm'])}, mean over "
            f"{len(g['seeds'])} seed(s); higher in {runs_up} of {len(g['per_seed'])} runs).")


def headline(run: Run, comps: dict, plots_rel: str = "plots") -> list[str]:
    """The report's opening: the question, the answer in words, the effect table, the method."""
    from domtok.tokens.sets import get_token_set

    domain = [c for c in run.conditions if c != run.baseline]
    ts = get_token_set(run.spec.token_set)
    question = (f"**Question.** Does a model that learns the {len(ts.tokens)} `{ts.name}` facts as single domain tokens "
                f"(`{'`, `'.join(domain) or '–'}`; e.g. `{ts.tokens[-1].text}`) answer the arithmetic probes and the "
                f"GSM-style test better than the same model trained on the same text without them "
                f"(`{run.baseline}`), at equal compute?")
    rows = [r for r in comps["headline"] if "p" in r]
    if run.baseline is None or not domain:
        return [question, "", "(no baseline and domain condition to compare: no answer)"]
    if not rows:
        return [question, "", "**Answer.** None yet: no main metric has been evaluated in both conditions."]
    lines = [question, ""]
    last = next(s for s in reversed(run.spec.evals_after) if any(r["stage"] == s for r in rows))
    for rung, cond in [(rung, c) for rung, _ in views(run) for c in domain]:
        final = [r for r in rows if r["stage"] == last and r["condition"] == cond and r["rung"] == rung]
        if not final:
            continue
        words = {v: [_label({**r, "rung": None}) for r in final if r["verdict"] == v and _floor(r) is None]
                 for v in (HELPS, HURTS, NULL)}
        flat = [f"{_label({**r, 'rung': None})} ({_floor(r):.0f} in both)" for r in final if _floor(r) is not None]
        parts = [f"helps on {', '.join(words[HELPS])}" if words[HELPS] else "",
                 f"hurts on {', '.join(words[HURTS])}" if words[HURTS] else "",
                 f"makes no detectable difference on {', '.join(words[NULL])}" if words[NULL] else "",
                 f"cannot be compared on {', '.join(flat)}: both conditions answer every item alike" if flat else ""]
        n_seeds = max(r["n_seeds"] for r in final)
        where = f"rung `{rung}`, " if rung is not None else ""
        lines.append(f"**Answer ({where}after `{last}`, {n_seeds} seed(s)).** `{cond}` "
                     + "; ".join(p for p in parts if p) + f" (Holm-corrected over all {comps['m']} comparisons in "
                     "this report, α = 0.05).")
    for g in comps["grpo"]:
        lines.append(_grpo_sentence(run, g))
    if any("p" in g and g["delta"] <= 0 for g in comps["grpo"]):
        lines.append("- ⚠ GRPO did not earn its place in every condition: its held-out accuracy is not above the "
                     "stage it started from.")
    lines += ["", "| metric | stage | condition | baseline | domain | Δ (domain − baseline) | 95% CI | df | p | Holm p | "
              "verdict | MDE (80% power) |", "|---|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|"]
    for r in comps["headline"]:
        if "p" not in r:
            lines.append(f"| {_label(r)} | {r['stage']} | {r['condition']} | – | – | – | – | – | – | – | {r['error']} | – |")
            continue
        lines.append(f"| {_label(r)} | {r['stage']} | {r['condition']} | {r['a_mean']:.3f} | {r['b_mean']:.3f} | "
                     f"{_signed(r['delta'])} | {_ci_text(r)} | {_fmt(r['df'], 0) if r['se'] > 0 else '–'} | "
                     f"{_p_text(r['p'])} | {_p_text(r['p_holm'])} | "
                     f"{r['verdict']} | {_mde_text(r)} |")
    lines.append("")
    for r in rows:
        what = {HELPS: f"`{r['condition']}` helps", HURTS: f"`{r['condition']}` hurts",
                NULL: "no detectable difference at this size"}[r["verdict"]]
        floor = _floor(r)
        if floor is not None:  # not a null result: the test has nothing to measure
            what = (f"no difference to measure: both conditions score {floor:.3f} on every item in every seed"
                    + (" (the models have not learned what this tests)" if floor == 0 else " (ceiling)"))
        lines.append(f"- {_label(r)} after `{r['stage']}`: {what} (Δ {_signed(r['delta'])}, 95% CI {_ci_text(r)}, "
                     f"Holm p {_p_text(r['p_holm'])}); the smallest effect this design detects with 80% power is "
                     f"{_mde_text(r)}.")
    methods = sorted({r["method"] for r in rows + [g for g in comps["grpo"] if "p" in g]})
    lines += ["", f"Method: Δ is the mean over seeds of the per-seed accuracy difference on the same items. "
              f"Its 95% CI and p come from {'; '.join(methods)}: the seed is the unit of replication, so the "
              "t-interval has K − 1 degrees of freedom (2 for 3 seeds) and says how the difference varies from "
              "one training run to another on these items, intersected with [-1, 1] where no accuracy "
              "difference can lie outside it (`domtok.eval.stats.seed_item_test`). Holm's correction runs over "
              f"every p-value in this report (m = {comps['m']}: this table, the GRPO checks and the per-seed "
              "paired table). MDE: the smallest true difference this design detects with 80% power at Holm's "
              "strictest level α/m (noncentral t with the design's own standard error and degrees of freedom). "
              f"Forest plot: `{plots_rel}/forest.png`."]
    return lines


def grpo_table(run: Run, comps: dict) -> list[str]:
    """For every run (condition, seed): held-out accuracy at GRPO's start and after it."""
    lines = ["| stage | benchmark | condition | seed | start stage | start | after GRPO | Δ | raised? |",
             "|---|---|---|---|---|---:|---:|---:|---|"]
    for g in comps["grpo"]:
        for seed, (a, b) in zip(g["seeds"], g.get("per_seed", [])):
            stage = g["stage"] if g.get("rung") is None else f"{g['stage']} (rung {g['rung']})"
            lines.append(f"| {stage} | {g['benchmark']} | {g['condition']} | {seed} | {g['start']} | {a:.3f} | "
                         f"{b:.3f} | {_signed(b - a)} | {'yes' if b > a else 'NO'} |")
    if len(lines) == 2:
        return ["(no GRPO stage evaluated together with the stage it starts from)"]
    return lines + ["", *[_grpo_sentence(run, g) for g in comps["grpo"]]]


def paired_comparisons(run: Run, comps: dict | None = None) -> list[str]:
    """Per seed: domain − baseline on the same items, paired bootstrap CI, exact McNemar p, Holm p."""
    if run.baseline is None:
        return ["(no baseline condition to compare against)"]
    comps = comps or comparisons(run)
    lines = ["| benchmark | stage | condition vs baseline | seed | n | baseline | domain | delta | 95% CI | p | Holm p | test |",
             "|---|---|---|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in comps["per_seed"]:
        r = {**r, "benchmark": r["benchmark"] if r.get("rung") is None else f"rung {r['rung']}: {r['benchmark']}"}
        if "error" in r:
            lines.append(f"| {r['benchmark']} | {r['stage']} | {r['condition']} | s{r['seed']} | – | – | – | – | – | – | – | "
                         f"{r['error']} |")
            continue
        lines.append(f"| {r['benchmark']} | {r['stage']} | {r['condition']} | s{r['seed']} | {r['n']} | {r['a_mean']:.3f} | "
                     f"{r['b_mean']:.3f} | {_signed(r['delta'])} | {_ci_text(r)} | {_p_text(r['p'])} | "
                     f"{_p_text(r.get('p_holm'))} | {r['test']} |")
    if len(lines) == 2:
        return ["(no pair of finished evaluations to compare yet)"]
    return lines + ["", f"Holm p: corrected over all {comps['m']} comparisons in this report. Each row is one seed; "
                        "the headline's test compares the per-seed differences across seeds."]


def _num(x):
    """JSON has no NaN: a value that could not be computed is null."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return x


def report_json(run: Run, comps: dict) -> dict:
    """The headline's numbers for programs (report.json beside report.md)."""
    head = []
    for r in comps["headline"]:
        ok = "p" in r
        head.append({"benchmark": r["benchmark"], "metric": r["metric"], "stage": r["stage"], "condition": r["condition"],
                     "rung": r["rung"],
                     "baseline_mean": _num(r["a_mean"]) if ok else None, "domain_mean": _num(r["b_mean"]) if ok else None,
                     "delta": _num(r["delta"]) if ok else None, "ci_low": _num(r["ci"][0]) if ok else None,
                     "ci_high": _num(r["ci"][1]) if ok else None, "p": _num(r["p"]) if ok else None,
                     "p_holm": _num(r["p_holm"]) if ok else None, "verdict": r["verdict"] if ok else None,
                     "mde": _num(r["mde"]) if ok else None, "se": _num(r["se"]) if ok else None,
                     "df": _num(r["df"]) if ok else None, "seeds": r["seeds"],
                     "n_items": r.get("n_items"), "method": r.get("method"), "error": r.get("error")})
    grpo = []
    for g in comps["grpo"]:
        ok = "p" in g
        grpo.append({"benchmark": g["benchmark"], "metric": g["metric"], "stage": g["stage"], "start": g["start"],
                     "rung": g["rung"],
                     "condition": g["condition"], "start_mean": _num(g["a_mean"]) if ok else None,
                     "end_mean": _num(g["b_mean"]) if ok else None, "delta": _num(g["delta"]) if ok else None,
                     "ci_low": _num(g["ci"][0]) if ok else None, "ci_high": _num(g["ci"][1]) if ok else None,
                     "p": _num(g["p"]) if ok else None, "p_holm": _num(g["p_holm"]) if ok else None,
                     "raised": (g["delta"] > 0) if ok else None, "seeds": g["seeds"],
                     "per_seed": [{"seed": s, "start": a, "end": b} for s, (a, b) in zip(g["seeds"], g.get("per_seed", []))],
                     "error": g.get("error")})
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
