"""Reading a finished ladder (see domtok.ladder for the spec section): per-rung compute, the
headline effects against training FLOPs, a trend fitted in log-compute, and the ladder's
report.md sections and report.json keys."""

from __future__ import annotations

import math

from domtok.ladder import Rung
from domtok.report.compare import report_json
from domtok.report.plots import save as save_plot
from domtok.report.run import Run
from domtok.report.primary import calibration
from domtok.report.study import answer_section, study_sections
from domtok.report.tables import compute_matched, learn_check

def rung_compute(view, rung: Rung) -> dict:
    """Parameters, tokens, FLOPs (per model, from the pretrain summaries) and the wall time of
    every finished node of one rung; `view` is the report's Run restricted to the rung."""
    import time

    from domtok.rundir import read_manifest, wall_time

    first = next((s.name for s in view.spec.stages if s.kind == "pretrain"), None)
    pre = [view.summary[n.id] for c in view.conditions for n in view.training(first, c)] if first else []

    def agreed(key):  # None unless every model of the rung has the same value (see compute_matched)
        vals = {s.get(key) for s in pre}
        return vals.pop() if len(vals) == 1 else None

    # elapsed: from the first node's start to the last one's end (finished_at has 1 s resolution)
    spans = []
    for n in view.nodes:
        m = read_manifest(n)
        if m.get("finished_at"):
            end = time.mktime(time.strptime(m["finished_at"], "%Y-%m-%dT%H:%M:%S"))
            spans.append((end - float(m.get("wall_time_s") or 0.0), end))
    elapsed = max(e for _, e in spans) - min(b for b, _ in spans) if spans else None
    return {"rung": rung.name, **rung.shape(), "elapsed_s": elapsed, "params": agreed("params"),
            "tokens": agreed("tokens_trained"),
            "flops": agreed("total_flops"), "epochs": max((s.get("epochs") or 0 for s in pre), default=None),
            "pretrain_wall_time_s": sum(s.get("wall_time_s") or 0.0 for s in pre),
            "wall_time_s": sum(wall_time(n) for n in view.nodes), "models": len(pre)}


def _num(x, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x)) else "–"


def rung_table(rows: list[dict]) -> list[str]:
    """One line per rung: shape, parameters, tokens, FLOPs, wall time, and its compute check."""
    lines = ["| rung | layers x width (heads) | params | tokens trained | tokens / param | epochs | FLOPs per model | "
             "pretraining wall, summed (s) | all nodes' wall, summed (s) | elapsed (s) | conditions compute-matched |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        tpp = r["tokens"] / r["params"] if isinstance(r.get("tokens"), (int, float)) and r.get("params") else None
        matched = {True: "✅ yes", False: "❌ NO", None: "– (not every model has finished)"}[r.get("compute_matched")]
        lines.append(f"| {r['rung']} | {r['n_layer']} x {r['n_embd']} ({r['n_head']}) | {_num(r.get('params'), ',')} | "
                     f"{_num(r.get('tokens'), ',')} | {_num(tpp, '.2f')} | {_num(r.get('epochs'), '.2f')} | "
                     f"{_num(r.get('flops'), '.3e')} | {_num(r.get('pretrain_wall_time_s'), '.1f')} | "
                     f"{_num(r.get('wall_time_s'), '.1f')} | {_num(r.get('elapsed_s'), '.0f')} | {matched} |")
    bad = [r["rung"] for r in rows if r.get("compute_matched") is False]
    if bad:
        lines += ["", f"- ❌ within rung(s) {', '.join(bad)} the conditions are NOT compute-matched: see each rung's "
                  "compute-matching section; their effects are not comparable."]
    repeats = [f"{r['rung']} ({r['epochs']:.2f} epochs)" for r in rows if isinstance(r.get("epochs"), (int, float))
               and r["epochs"] > 1]
    if repeats:
        lines += ["", f"- ⚠ the shared corpus does not cover every budget: {', '.join(repeats)} repeat data; "
                  "prepare more documents (`prepare.n_docs`, or a rung's own `prepare:`)."]
    return lines


def seed_trend(flops: list[float], deltas: list[list[float]], level: float = 0.95) -> dict | None:
    """The effect's trend in log10(training FLOPs), tested over seeds: delta = a + b log10(F).

    `deltas[r][k]`: rung r's domain − baseline for seed k (the same seeds at every rung). Per
    seed, ordinary least squares over the rungs gives one slope b_k (and intercept a_k); the
    trend is their mean, with a t-interval and p on K − 1 degrees of freedom, as the per-rung
    effects are. Every rung is scored on the same items and seed k's rungs share its seed, so
    the rungs' effects are not independent; a seed's slope keeps that dependence inside one
    observation, and only the seeds, which are independent, are counted. Like the per-rung
    tests, the inference is about these items. None with fewer than two rungs at distinct
    FLOPs or fewer than two seeds.
    """
    import numpy as np
    from scipy import stats

    pts = [(math.log10(f), d) for f, d in zip(flops, deltas) if isinstance(f, (int, float)) and f > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    K = min(len(d) for _, d in pts)
    if K < 2 or any(len(d) != K for _, d in pts):
        return None
    x = np.array([x for x, _ in pts])
    y = np.array([d for _, d in pts], dtype=float)  # (rungs, seeds)
    xm = x.mean()
    slopes = ((x - xm)[:, None] * (y - y.mean(axis=0))).sum(axis=0) / ((x - xm) ** 2).sum()
    intercepts = y.mean(axis=0) - slopes * xm
    slope, intercept = float(slopes.mean()), float(intercepts.mean())
    cov = np.cov(np.vstack([intercepts, slopes])) / K
    se = math.sqrt(cov[1, 1])
    q = float(stats.t.ppf(0.5 + level / 2, K - 1))
    if se > 0:
        p = float(2 * stats.t.sf(abs(slope) / se, K - 1))
        lo, hi = slope - q * se, slope + q * se
    else:  # every seed has the same slope: no spread to test it against (no interval)
        p, lo, hi = 1.0, None, None
    decades = float(x.max() - x.min())
    return {"slope_per_decade": slope, "ci_low": lo, "ci_high": hi, "se": se, "p": p, "df": K - 1,
            "intercept": intercept, "n_rungs": len(pts), "n_seeds": K, "per_seed_slopes": [float(s) for s in slopes],
            "decades": decades, "exploratory": decades < 1.0, "cov": cov.tolist(), "t_quantile": q}


def trend_band(fit: dict, log10_flops: list[float]) -> tuple[list[float], list[float], list[float]]:
    """The fitted line and its pointwise CI (the fit's level) at the given log10(FLOPs)."""
    (vaa, vab), (_, vbb) = fit["cov"]
    mid, lo, hi = [], [], []
    for x in log10_flops:
        m = fit["intercept"] + fit["slope_per_decade"] * x
        s = math.sqrt(max(vaa + 2 * x * vab + x * x * vbb, 0.0))
        mid.append(m); lo.append(m - fit["t_quantile"] * s); hi.append(m + fit["t_quantile"] * s)
    return mid, lo, hi


def _key(row: dict) -> tuple:
    return row["benchmark"], row["metric"], row["stage"], row["condition"]


def _label(key: tuple) -> str:
    bench, metric, stage, cond = key
    return f"{bench}.{metric} after {stage} ({cond})"


def effects_by_key(rows: list[dict]) -> dict[tuple, list[tuple[dict, dict]]]:
    """(benchmark, metric, stage, condition) -> [(ladder row, headline row)] in ladder order."""
    out: dict[tuple, list] = {}
    for r in rows:
        for h in r.get("headline", []):
            out.setdefault(_key(h), []).append((r, h))
    return out


def excludes_zero(h: dict) -> bool:
    lo, hi = h.get("ci_low"), h.get("ci_high")
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def trends(rows: list[dict]) -> list[dict]:
    """Per headline effect: the trend over seeds in log-compute (`seed_trend`, on the seeds
    every rung has) and the smallest rung whose CI excludes 0."""
    out = []
    for key, pts in effects_by_key(rows).items():
        pts = sorted(pts, key=lambda p: p[0]["flops"] if isinstance(p[0].get("flops"), (int, float)) else math.inf)
        tested = [p for p in pts if p[1].get("per_seed_deltas")]
        seeds = sorted(set.intersection(*(set(p[1]["seeds"]) for p in tested))) if tested else []
        per_rung = [[dict(zip(p[1]["seeds"], p[1]["per_seed_deltas"]))[s] for s in seeds] for p in tested]
        fit = seed_trend([p[0].get("flops") for p in tested], per_rung)
        first = next((p for p in pts if excludes_zero(p[1])), None)
        out.append({"benchmark": key[0], "metric": key[1], "stage": key[2], "condition": key[3],
                    "trend": fit, "seeds": seeds, "first_rung_excluding_zero": first[0]["rung"] if first else None})
    return out


def trend_lines(rows: list[dict], trend_rows: list[dict]) -> list[str]:
    """The ladder's answer in markdown: one line per effect, the span in decades of compute,
    then the smallest rung sentence."""
    if not trend_rows:
        return ["(no headline effect has finished in any rung yet)"]
    lines = ["| effect | rungs | seeds | slope per decade of FLOPs | 95% CI | p (slope ≠ 0) | span (decades) | "
             "smallest rung whose CI excludes 0 |", "|---|---:|---:|---:|---|---:|---:|---|"]
    for t in trend_rows:
        key = (t["benchmark"], t["metric"], t["stage"], t["condition"])
        fit = t["trend"]
        first = t["first_rung_excluding_zero"] or "none"
        if fit is None:
            n = len([h for r in rows for h in r.get("headline", []) if _key(h) == key and h.get("delta") is not None])
            lines.append(f"| {_label(key)} | {n} | {len(t.get('seeds', []))} | not estimable (fewer than two rungs "
                         f"or two seeds in every rung) | – | – | – | {first} |")
            continue
        ci = (f"[{fit['ci_low']:+.4f}, {fit['ci_high']:+.4f}]" if fit["ci_low"] is not None
              else "– (every seed has the same slope)")
        lines.append(f"| {_label(key)} | {fit['n_rungs']} | {fit['n_seeds']} | {fit['slope_per_decade']:+.4f} | "
                     f"{ci} | {fit['p']:.3g} | {fit['decades']:.2f} | {first} |")
    lines.append("")
    flops = [r["flops"] for r in rows if isinstance(r.get("flops"), (int, float)) and r["flops"] > 0]
    if len(flops) > 1:
        decades = math.log10(max(flops) / min(flops))
        lines.append(f"The rungs span {decades:.2f} decades of training compute per model"
                     + (": less than one decade, so any trend here is exploratory, not a scaling claim."
                        if decades < 1 else "."))
    firsts = [t for t in trend_rows if t["first_rung_excluding_zero"]]
    order = {r["rung"]: i for i, r in enumerate(sorted(rows, key=lambda r: r.get("flops") or math.inf))}
    if firsts:
        best = min(firsts, key=lambda t: order.get(t["first_rung_excluding_zero"], math.inf))
        rung = best["first_rung_excluding_zero"]
        which = [_label((t["benchmark"], t["metric"], t["stage"], t["condition"])) for t in firsts
                 if t["first_rung_excluding_zero"] == rung]
        lines.append(f"The smallest rung whose 95% CI excludes zero for some headline effect is `{rung}` "
                     f"({', '.join(which)}); these per-rung CIs are not corrected for multiple comparisons (see the "
                     "families in the per-rung tables).")
    else:
        lines.append("No rung's 95% CI excludes zero for any headline effect: at these sizes and seeds the ladder "
                     "shows no difference between the conditions (which is not a showing that there is none).")
    return lines


def plots(rows: list[dict], trend_rows: list[dict], out) -> list[str]:
    """ladder_effects.png: each headline effect with its CI and fitted trend against training
    FLOPs; ladder_accuracy.png: each condition's accuracy (mean over seeds) against FLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    out.mkdir(parents=True, exist_ok=True)
    made = []
    by_key = effects_by_key(rows)
    fits = {(t["benchmark"], t["metric"], t["stage"], t["condition"]): t["trend"] for t in trend_rows}
    keys = [k for k, pts in by_key.items() if any(isinstance(p[0].get("flops"), (int, float)) for p in pts)]
    if keys:
        ncol = min(4, len(keys))
        nrow = -(-len(keys) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.3 * nrow), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            pts = sorted((p for p in by_key[key] if isinstance(p[0].get("flops"), (int, float))),
                         key=lambda p: p[0]["flops"])
            xs = [p[0]["flops"] for p in pts]
            ys = [p[1]["delta"] for p in pts]
            lo = [p[1]["delta"] - p[1]["ci_low"] for p in pts]
            hi = [p[1]["ci_high"] - p[1]["delta"] for p in pts]
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=4, color="C0", label="domain − baseline, 95% CI")
            for x, y, p in zip(xs, ys, pts):
                ax.annotate(p[0]["rung"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
            fit = fits.get(key)
            if fit is not None:
                gx = [math.log10(xs[0]) + (math.log10(xs[-1]) - math.log10(xs[0])) * i / 40 for i in range(41)]
                mid, blo, bhi = trend_band(fit, gx)
                fx = [10 ** g for g in gx]
                ax.plot(fx, mid, color="C1", label=f"trend {fit['slope_per_decade']:+.3f}/decade")
                ax.fill_between(fx, blo, bhi, color="C1", alpha=0.2)
            ax.axhline(0.0, color="grey", lw=0.8)
            ax.set_xscale("log")
            ax.set_title(_label(key), fontsize=9)
            ax.set_xlabel("training FLOPs per model")
            ax.set_ylabel("Δ accuracy")
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(keys):]:
            ax.set_visible(False)
        made.append(save_plot(fig, out, "ladder_effects.png"))

    metrics = sorted({m for r in rows for by_stage in (r.get("accuracy") or {}).values()
                      for by_metric in by_stage.values() for m in by_metric})
    stages = list(dict.fromkeys(s for r in rows for by_stage in (r.get("accuracy") or {}).values() for s in by_stage))
    conds = list(dict.fromkeys(c for r in rows for c in (r.get("accuracy") or {})))
    panels = [(m, s) for m in metrics for s in stages]
    if panels and any(isinstance(r.get("flops"), (int, float)) for r in rows):
        ncol = min(len(stages), 4)
        nrow = -(-len(panels) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.3 * nrow), squeeze=False)
        for ax, (metric, stage) in zip(axes.flat, panels):
            for j, cond in enumerate(conds):
                pts = sorted((r["flops"], r["accuracy"][cond][stage][metric]) for r in rows
                             if isinstance(r.get("flops"), (int, float))
                             and isinstance(((r.get("accuracy") or {}).get(cond, {}).get(stage, {})).get(metric), (int, float)))
                if pts:
                    ax.plot(*zip(*pts), marker="o", color=f"C{j}", label=cond)
            ax.set_xscale("log")
            ax.set_title(f"{metric} after {stage}", fontsize=9)
            ax.set_xlabel("training FLOPs per model")
            ax.set_ylabel("accuracy (mean over seeds)")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        made.append(save_plot(fig, out, "ladder_accuracy.png"))
    return made


def _rung_part(comps: dict, rung: str) -> dict:
    """The comparisons of one ladder rung (Holm p and m stay those of the whole ladder)."""
    return {**{k: [r for r in comps[k] if r.get("rung") == rung] for k in ("headline", "grpo", "per_seed")},
            "m": comps["m"]}


def ladder_report(run: Run, comps: dict) -> tuple[list[str], list[str], dict]:
    """A ladder's opening answer (each rung's primary endpoint), report.md body and report.json:
    per-rung compute and "learns" checks, each
    headline effect against training FLOPs with a fitted trend, then every rung's whole study
    (Holm's correction, from `comparisons`, runs over every comparison of every rung)."""

    js = report_json(run, comps)
    rows, answer, primaries = [], [], {}
    for rung in run.spec.ladder:
        view = run.rung(rung.name)
        said, primaries[rung.name] = answer_section(view, comps, run.dir / "plots" / rung.dir_name,
                                                    f"plots/{rung.dir_name}", rung.name)
        answer += [f"Rung `{rung.name}`:", "", *said, ""]
        prefix = f"rung-{rung.name}/"  # report_json's accuracy keys of this rung
        accuracy = {c: {st: {k[len(prefix):]: v for k, v in by_metric.items() if k.startswith(prefix)}
                        for st, by_metric in by_stage.items()} for c, by_stage in js["accuracy"].items()}
        accuracy = {c: {st: m for st, m in by.items() if m} for c, by in accuracy.items()}
        rows.append({**rung_compute(view, rung), "compute_matched": compute_matched(view),
                     "headline": [h for h in js["headline"] if h["rung"] == rung.name],
                     "grpo": [g for g in js["grpo"] if g["rung"] == rung.name],
                     "accuracy": {c: by for c, by in accuracy.items() if by}, "primary": primaries[rung.name]})
    trend_rows = trends(rows)
    figs = plots(rows, trend_rows, run.dir / "plots")
    lines = ["## Ladder", "",
             "Every rung runs the whole study. FLOPs: pretraining FLOPs of one model (6N + attention per token, "
             "x tokens trained); wall times are summed over the rung's models (pretraining) and over every finished node of "
             "the rung, all conditions and seeds (nodes that ran at once under `--jobs` each count in full); elapsed: from the "
             "rung's first node start to its last node end.", "",
             *rung_table(rows), ""]
    if run.spec.learns:
        lines += [f"### Do the models learn what is tested? (mean over seeds after `{run.spec.learns['stage']}`)", ""]
        missed = []
        for r in rows:
            check, misses = learn_check(run.spec.learns, r["accuracy"])
            lines += [f"Rung `{r['rung']}`:", "", *check, ""]
            missed += [f"`{r['rung']}` {m}" for m in misses]
        lines += ["- ⚠ Not every model reaches the figures: " + "; ".join(missed) + "." if missed else
                  "- ✅ Every rung's models reach every figure, in every condition.", ""]
    lines += ["### The effect against compute", "",
              "Per seed, a least-squares line of the effect on log10(FLOPs) across the rungs; the trend is the mean "
              "of the seeds' slopes, with a t-interval on K − 1 degrees of freedom (the rungs share items and seeds, "
              "so only the seeds count as independent). The secondary family's Holm correction in the per-rung "
              f"tables runs over all {comps['m']} secondary comparisons of the ladder.", "",
              *trend_lines(rows, trend_rows), "", *[f"![{f}](plots/{f})" for f in figs], ""]
    for rung in run.spec.ladder:
        view = run.rung(rung.name)
        lines += [f"## Rung `{rung.name}`: {rung.n_layer} layers x {rung.n_embd} wide, {rung.n_head} heads", "",
                  *study_sections(view, _rung_part(comps, rung.name), run.dir / "plots" / rung.dir_name,
                                  f"plots/{rung.dir_name}", "###"), ""]
    # report.json's `primary`: the last rung's (a ladder lists its rungs smallest first)
    primary = primaries[run.spec.ladder[-1].name]
    return answer, lines, {**js, "primary": primary, "calibration": calibration(run), "ladder": rows,
                           "ladder_trend": trend_rows}
