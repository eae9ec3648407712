"""The primary endpoint: the one test that answers the study's question, and what noise alone
looks like beside it.

A spec names it (`primary: {benchmark, metric, stage, margin}`, see rundir.parse_primary).
Its test is `seed_item_test` on the per-seed deltas (domain − baseline), alone at α = 0.05:

- helps / hurts: the 95% CI excludes 0;
- equivalent: the 90% CI lies inside ±margin (two one-sided tests at 0.05);
- undecided: neither; then the seeds a decision would take at 80% power, from the observed
  seed SD, with the range that the SD's own 95% chi-square interval gives (with 3 seeds the
  SD is known only to within a factor of about 0.5 to 6.3, so the range is wide).

One seed decides nothing: the test then compares two networks, not the conditions.

A `--seeds auto` study (looks.json) over exactly its last look's seeds is answered by the
sequential design instead (`sequential_answer`): its decision, boundary and repeated CI, whose
error rate eval/sequential.py simulated; the fixed-sample CI is named as not the test. Over
other seeds the fixed-sample answer stands, with a warning.

The calibration rows run the same test between two halves of one condition's seeds (seed
k of the first half paired with seed k of the second): two groups that differ by noise
alone. With 3 seeds the halves are one seed each, and the test is the one-seed test over
items: it shows what a single-seed comparison of two networks finds where there is nothing
to find.

`primary_deltas(run_dir)` gives the per-seed deltas to programs (the sequential seed plan).
"""

from __future__ import annotations

import math
from pathlib import Path

from domtok.report.compare import (ALPHA, EQUIVALENT, HELPS, HURTS, UNDECIDED, _by_seed, _num, _p_text, _signed,
                                   _values, lower_is_better, templates, verdict)
from domtok.report.run import Run, views

POWER = 0.8


def seeds_needed(sd: float, k: int, margin: float) -> dict | None:
    """Seeds for 80% power from the SD of k per-seed deltas: to find a difference of ±margin,
    and to show equivalence within ±margin when the true difference is 0, each at the observed
    SD and at the ends of its 95% chi-square interval. None with fewer than two seeds."""
    from domtok.eval.stats import sd_interval, seeds_for_power

    if k < 2:
        return None
    lo, hi = sd_interval(sd, k - 1)

    def plan(equivalence: bool) -> dict:
        return {"at_sd": seeds_for_power(sd, margin, ALPHA, POWER, equivalence),
                "range": [seeds_for_power(lo, margin, ALPHA, POWER, equivalence),
                          seeds_for_power(hi, margin, ALPHA, POWER, equivalence)]}

    return {"sd": sd, "sd_ci95": [lo, hi], "power": POWER, "effect": margin,
            "difference": plan(False), "equivalence": plan(True)}


def primary_result(run: Run, comps: dict, rung: str | None = None) -> dict | None:
    """The primary endpoint's answer (report.json's `primary`); None when the spec names none
    or it has not been evaluated in both conditions. With several domain conditions: the first."""
    from domtok.eval.stats import tost

    pr = run.spec.primary
    if not pr:
        return None
    rows = [r for r in comps["headline"] if r.get("family") == "primary" and r.get("rung") == rung and "p" in r]
    if not rows:
        return None
    r = rows[0]
    eq = tost(r["delta"], r["se"], r["df"], pr["margin"], ALPHA)
    # p_holm: Holm across domain conditions when there are several (else p itself)
    better = -r["delta"] if lower_is_better(pr["metric"]) else r["delta"]  # gold_*bpb: fewer bits is better
    decided = verdict(better, r["p_holm"], r.get("p_tost_holm") or eq["p"]) if r["n_seeds"] > 1 else UNDECIDED
    return {"benchmark": pr["benchmark"], "metric": pr["metric"], "stage": pr["stage"], "condition": r["condition"],
            "rung": rung, "baseline_mean": _num(r["a_mean"]), "domain_mean": _num(r["b_mean"]),
            "delta": _num(r["delta"]), "ci_low": _num(r["ci"][0]), "ci_high": _num(r["ci"][1]), "p": _num(r["p"]),
            "ci90_low": _num(eq["ci90"][0]), "ci90_high": _num(eq["ci90"][1]), "p_tost": _num(eq["p"]),
            "margin": pr["margin"], "verdict": decided, "n_seeds": r["n_seeds"], "seeds": r["seeds"],
            "per_seed_deltas": r["per_seed_deltas"], "n_items": r["n_items"], "df": _num(r["df"]),
            "se": _num(r["se"]), "method": r["method"],
            # the test's own SD of the per-seed deltas (se x sqrt(K): never below the grid floor)
            "seeds_needed": seeds_needed(r["se"] * math.sqrt(r["n_seeds"]), r["n_seeds"], pr["margin"])}


def sequential_answer(primary: dict | None, rec: dict | None) -> dict | None:
    """The `--seeds auto` design's answer (looks.json) for the report's seeds: {"look", "n",
    "decision", "reason", "ci" (repeated 95% CI of domain − baseline), "max_seeds", "per_look"}
    when the report covers exactly the seeds of the last recorded look; {"mismatch": seeds of
    that look} when it covers others; None without looks."""
    if primary is None or not rec or not rec.get("looks"):
        return None
    last, plan = rec["looks"][-1], rec["plan"]
    if sorted(last["seeds"]) != sorted(primary["seeds"]):
        return {"mismatch": last["seeds"]}
    ci = last.get("ci")
    if ci and plan.get("lower_is_better"):  # the looks test baseline − domain for a bits-per-byte metric
        ci = [-ci[1], -ci[0]]
    return {"look": last["look"], "n": last["n"], "decision": rec.get("decision") or "continue",
            "reason": last["reason"], "ci": ci, "biased": bool(rec.get("biased")),
            "max_seeds": plan["max_seeds"], "per_look": plan["per_look"]}


def _n(n) -> str:
    return "more than 10,000" if n is None else f"{n:,}"


def primary_lines(run: Run, primary: dict | None, plot: str | None) -> list[str]:
    """The report's opening: the question and the primary endpoint's answer, in words that
    claim only what its test shows, and the dot plot of the per-seed deltas."""
    from domtok.tokens.sets import get_token_set

    domain = run.domain
    ts = get_token_set(run.spec.token_set)
    question = (f"**Question.** Does a model that learns the {len(ts.tokens)} `{ts.name}` facts as single domain tokens "
                f"(`{'`, `'.join(domain) or '–'}`; e.g. `{ts.tokens[-1].text}`) score better than the same "
                f"architecture trained for the same steps and tokens without them (`{run.baseline}`)?")
    controls = [c for c in run.conditions if c not in domain and c != run.baseline]
    if controls:
        question += (f" Its controls ({', '.join(f'`{c}`' for c in controls)}) ask whether a difference is the facts "
                     "or only more text or compression: the Mechanism section (Controls) answers that.")
    pr = run.spec.primary
    if not pr:
        return [question, "", "**Answer.** None: the spec declares no `primary:` endpoint, so no single test answers "
                "the question; the secondary comparisons below are a family of tests, not an answer."]
    what = f"{pr['benchmark']} {pr['metric']} after `{pr['stage']}`"
    where = f" (rung `{primary['rung']}`)" if primary and primary.get("rung") is not None else ""
    if primary is None:
        return [question, "", f"**Answer.** None yet: the primary endpoint, {what}, has not been evaluated in both "
                "conditions."]
    p = primary
    deltas = ", ".join(f"s{s} {_signed(d)}" for s, d in zip(p["seeds"], p["per_seed_deltas"]))
    ci = f"95% CI [{_signed(p['ci_low'])}, {_signed(p['ci_high'])}]"
    ci90 = (f"90% CI [{_signed(p['ci90_low'])}, {_signed(p['ci90_high'])}]" if p["ci90_low"] is not None
            and math.isfinite(p["ci90_low"]) else "90% CI not estimable")
    m = f"±{p['margin']:.3f}"
    if p["n_seeds"] < 2:
        said = (f"undecided: with one seed the test compares two networks, not the conditions ({ci} over items). "
                "Run more seeds.")
    elif p["verdict"] in (HELPS, HURTS):
        said = f"`{p['condition']}` {p['verdict']} ({ci} excludes 0, p {_p_text(p['p'])})"
        if p["ci90_low"] is not None and -p["margin"] < p["ci90_low"] and p["ci90_high"] < p["margin"]:
            said += f", by less than the margin {m} ({ci90})"
        said += "."
    elif p["verdict"] == EQUIVALENT:
        said = (f"equivalent within {m}: the {ci90} lies inside the margin (two one-sided tests, p {_p_text(p['p_tost'])}); "
                f"{ci}, p {_p_text(p['p'])}.")
    else:
        said = (f"undecided: the {ci} includes 0 (p {_p_text(p['p'])}) and the {ci90} is not inside the margin {m}, "
                "so this study shows neither a difference nor equivalence.")
    how = f"tested alone at α = 0.05 over {p['n_seeds']} seed(s)"
    seq = p.get("sequential")
    if seq and "mismatch" not in seq:
        # The seeds came look by look: the answer is the sequential design's, whose error rate
        # was simulated; a fixed-sample CI on the same seeds ignores the looks.
        how = (f"tested by the `--seeds auto` design (α = 0.05 spent over looks of {seq['per_look']}, at most "
               f"{seq['max_seeds']} seeds) at look {seq['look']}, {seq['n']} seed(s)")
        rci = (f"repeated 95% CI [{_signed(seq['ci'][0])}, {_signed(seq['ci'][1])}]" if seq["ci"]
               else "no repeated CI (no seed SD)")
        said = {"continue": f"not decided yet: {seq['reason']}; {rci}. `domtok run --seeds auto` runs the next look.",
                "undecided": f"undecided: {seq['reason']}; {rci}: this study shows neither a difference nor "
                             "equivalence.",
                "equivalent": f"equivalent within {m}: {seq['reason']}.",
                HELPS: f"`{p['condition']}` helps: {seq['reason']}; {rci}.",
                HURTS: f"`{p['condition']}` hurts: {seq['reason']}; {rci}."}[seq["decision"]]
        if seq["biased"]:
            said += (" A study that stops early stops when its deltas happen to be large, so this Δ is biased away "
                     "from 0: the Sequential seeds section gives the bias-adjusted estimate.")
        said += f" (The fixed-sample {ci} ignores the looks: it is not this design's test.)"
    lines = [question, "",
             f"**Answer{where}.** Primary endpoint, {what}, {how} on {p['n_items']} items: Δ = {_signed(p['delta'])} "
             f"({p['condition']} {p['domain_mean']:.3f} vs {run.baseline} {p['baseline_mean']:.3f}; per seed "
             f"{deltas}); {said}"]
    if seq and "mismatch" in seq:
        lines.append(f"⚠ looks.json records `--seeds auto` looks whose last covers seeds {seq['mismatch']}, but this "
                     f"report covers seeds {p['seeds']}: the answer above is a fixed-sample test, which is not the "
                     "test whose error rate was checked for seeds added by looking at results (see Sequential seeds).")
    need = p.get("seeds_needed")
    if need and p["verdict"] == UNDECIDED and not (seq and "mismatch" not in seq):
        lo, hi = need["sd_ci95"]
        lines.append(f"A decision at 80% power would take about {_n(need['difference']['at_sd'])} seeds to find a "
                     f"difference of {m}, or {_n(need['equivalence']['at_sd'])} to show equivalence within {m} if the "
                     f"true difference is 0, at the observed seed SD of {need['sd']:.3f}. That SD comes from "
                     f"{p['n_seeds']} seeds and its 95% interval is [{lo:.3f}, {hi:.3f}], so the seeds needed range "
                     f"from {_n(need['difference']['range'][0])} to {_n(need['difference']['range'][1])} (difference) "
                     f"and {_n(need['equivalence']['range'][0])} to {_n(need['equivalence']['range'][1])} (equivalence).")
    if plot:
        lines += ["", f"![per-seed deltas of the primary endpoint]({plot})"]
    return lines


def calibration(run: Run) -> list[dict]:
    """The primary test between two halves of each condition's seeds: noise alone (report.json's
    `calibration`, rows like the headline's). [] without a primary endpoint or two seeds."""
    from domtok.eval.stats import seed_item_test, tost
    from domtok.rundir import primary_field

    pr = run.spec.primary
    out = []
    if not pr:
        return out
    field, cat = primary_field(run.spec.benchmarks[pr["benchmark"]]["kind"], pr["metric"])
    for rung, view in views(run):
        for cond in view.conditions:
            nodes = _by_seed(view, pr["stage"], cond, pr["benchmark"])
            seeds = [s for s in view.spec.seeds if s in nodes]
            half = len(seeds) // 2
            if half < 1:
                continue
            first, second = seeds[:half], seeds[half:2 * half]
            a = [_values(view, nodes[s], field, cat) for s in first]
            b = [_values(view, nodes[s], field, cat) for s in second]
            row = {"benchmark": pr["benchmark"], "metric": pr["metric"], "stage": pr["stage"], "condition": cond,
                   "rung": rung, "seeds_a": first, "seeds_b": second}
            try:
                r = seed_item_test(b, a, alpha=ALPHA, clusters=templates(view, nodes[first[0]]))
            except ValueError as e:
                out.append({**row, "error": f"items differ between the seeds ({e})"})
                continue
            eq = tost(r["delta"], r["se"], r["df"], pr["margin"], ALPHA)
            out.append({**row, "delta": _num(r["delta"]), "ci_low": _num(r["ci"][0]), "ci_high": _num(r["ci"][1]),
                        "p": _num(r["p"]), "df": _num(r["df"]), "method": r["method"], "n_seeds": r["n_seeds"],
                        "per_seed_deltas": r["per_seed_deltas"],
                        "verdict": verdict(r["delta"], r["p"], eq["p"]) if r["n_seeds"] > 1 else UNDECIDED,
                        "rejects_at_0.05": bool(r["p"] < ALPHA)})
    return out


def calibration_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no calibration: it needs a `primary:` endpoint and at least two seeds of a condition)"]
    lines = ["| condition | seeds (first half) | seeds (second half) | Δ (second − first) | 95% CI | p | test |",
             "|---|---|---|---:|---|---:|---|"]
    for r in rows:
        cond = r["condition"] if r.get("rung") is None else f"rung {r['rung']}: {r['condition']}"
        if "error" in r:
            lines.append(f"| {cond} | {r['seeds_a']} | {r['seeds_b']} | – | – | – | {r['error']} |")
            continue
        lines.append(f"| {cond} | {r['seeds_a']} | {r['seeds_b']} | {_signed(r['delta'])} | "
                     f"[{_signed(r['ci_low'])}, {_signed(r['ci_high'])}] | {_p_text(r['p'])} | {r['method']} |")
    flagged = [r for r in rows if r.get("rejects_at_0.05")]
    lines += ["", "Both sides of each row are the same condition: every difference here is noise. "
              + (f"{len(flagged)} of {len(rows)} rows {'reaches' if len(flagged) == 1 else 'reach'} p < 0.05 on "
                 "noise alone"
                 + (", all of them one-seed tests over items: a single pair of networks differs by more than items "
                    "explain, which is why no single-seed test decides anything here." if all(r["n_seeds"] == 1 for r in flagged)
                    else ".") if flagged else f"None of the {len(rows)} rows reaches p < 0.05.")]
    return lines


def primary_deltas(run_dir: str | Path) -> list[float]:
    """The primary endpoint's per-seed deltas (domain − baseline, first domain condition; the
    last ladder rung in a ladder), in seed order, for seeds evaluated in both conditions; []
    when the spec has no primary endpoint or nothing has been evaluated in both."""
    from domtok.report.compare import _primary_metric, _test

    run = Run(Path(run_dir))
    pr = run.spec.primary
    domain = run.domain
    if not pr or run.baseline is None or not domain:
        return []
    view = run.rung(run.spec.ladder[-1].name) if run.spec.ladder else run
    (bench, _, field, cat), = _primary_metric(view, pr["stage"])
    r = _test(_by_seed(view, pr["stage"], run.baseline, bench), _by_seed(view, pr["stage"], domain[0], bench),
              view, field, cat)
    return list(r.get("per_seed_deltas", []))
