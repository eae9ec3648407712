"""Two report sections about seeds: each metric's signal-to-noise over seeds (to choose a
primary endpoint on a pilot), and the looks of a `--seeds auto` study (its boundaries, why it
stopped, and the bias of an estimate after an early stop)."""

from __future__ import annotations

import json
import math

from domtok.report.run import Run, _fmt, _mean_std

# the metrics whose signal-to-noise the report shows: 0/1 accuracies and the continuous
# teacher-forced scores of domtok.eval.gold
SNR_PREFIXES = ("accuracy", "gold_")


def signal_to_noise(run: Run) -> list[dict]:
    """Per domain condition, evaluated stage, benchmark and metric: the paired per-seed deltas
    (domain − baseline of the seed's summary value), their mean, seed SD and |mean| / SD."""
    rows = []
    if run.baseline is None:
        return rows
    for cond in run.domain:
        for stage in run.spec.evals_after:
            for bench in run.spec.benchmarks:
                base = {n.seed: run.summary[n.id].get("metrics", {}) for n in run.evals(stage, run.baseline, bench)}
                dom = {n.seed: run.summary[n.id].get("metrics", {}) for n in run.evals(stage, cond, bench)}
                seeds = sorted(set(base) & set(dom))
                metrics = sorted({k for s in seeds for k in dom[s] if k.startswith(SNR_PREFIXES)
                                  and all(isinstance(x[s].get(k), (int, float)) for x in (base, dom))})
                for m in metrics:
                    d = [dom[s][m] - base[s][m] for s in seeds]
                    mean, sd = _mean_std(d)
                    rows.append({"condition": cond, "stage": stage, "benchmark": bench, "metric": m,
                                 "n_seeds": len(d), "per_seed_deltas": d, "delta": mean,
                                 "sd": sd if len(d) > 1 else None,
                                 "snr": abs(mean) / sd if len(d) > 1 and sd > 0 else None})
    return rows


def snr_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no metric evaluated in both conditions yet)"]
    out = ["Per metric, the paired per-seed deltas (domain − baseline, one per seed): their mean Δ, their seed SD, "
           "and |Δ| / SD, how many seed SDs the difference is. A paired t-test needs fewer seeds for a metric "
           "with a larger ratio (`domtok plan` gives the numbers), so a pilot can choose the primary metric "
           "before the confirmatory run. `gold_*bpb` is bits per byte of the gold text: lower is better, so "
           "Δ < 0 favours the domain condition; accuracy: higher is better.", "",
           "| condition | stage | benchmark | metric | Δ | seed SD | abs(Δ) / SD | seeds |",
           "|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['condition']} | {r['stage']} | {r['benchmark']} | {r['metric']} | {r['delta']:+.4f} | "
                   f"{_fmt(r['sd'])} | {_fmt(r['snr'], 2)} | {r['n_seeds']} |")
    return out


def read_looks(run: Run) -> dict | None:
    path = run.dir / "looks.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def looks_lines(rec: dict) -> list[str]:
    """The looks of a --seeds auto study: plan, boundaries, decision, why it stopped, bias."""
    from domtok.eval.sequential import bias_adjusted

    plan = rec["plan"]
    out = [f"`domtok run --seeds auto`: at most {plan['max_seeds']} seeds per condition in looks of "
           f"{plan['per_look']}, two-sided α {plan['alpha']} spent over the looks ({plan['spending']}-type "
           f"Lan-DeMets spending), t boundaries for the seeds in hand (eval/sequential.py); equivalence margin "
           f"±{plan['margin']}.",
           *(["", "The primary metric is lower-is-better (bits per byte): Δ, t and the intervals below are of "
              "baseline − domain, so a positive Δ means the domain condition needs fewer bits."]
             if plan.get("lower_is_better") else []), "",
           "| look | seeds | Δ | t | boundary on abs(t) | repeated CI | decision |", "|---:|---|---:|---:|---:|---|---|"]
    for lk in rec["looks"]:
        ci = f"[{lk['ci'][0]:+.4f}, {lk['ci'][1]:+.4f}]" if lk.get("ci") else "–"
        t = "–" if lk["t"] is None else f"{lk['t']:+.3f}"
        b = "–" if lk["boundary"] is None or not math.isfinite(lk["boundary"]) else f"{lk['boundary']:.3f}"
        out.append(f"| {lk['look']} | {lk['n']} ({', '.join(map(str, lk['seeds']))}) | {lk['delta']:+.4f} | {t} | "
                   f"{b} | {ci} | {lk['decision']} |")
    out.append("")
    if rec.get("decision") is None:
        out.append(f"Not finished: {len(rec['looks'])} look(s) recorded, no decision yet (rerun `domtok run --seeds "
                   "auto` to continue from them).")
        return out
    out.append(f"**Decision: {rec['decision']}** after {rec['seeds_used']} seeds per condition. Stopped because "
               f"{rec['stopped_because']}.")
    last = rec["looks"][-1]
    if last.get("se"):
        sd = last["se"] * math.sqrt(last["n"])
        adj = bias_adjusted(last["delta"], sd, max_seeds=plan["max_seeds"], per_look=plan["per_look"],
                            alpha=plan["alpha"], margin=plan["margin"], spending=plan["spending"])
        why = ("The study stopped before max_seeds, so its mean Δ is biased away from zero (a study stops early "
               "when its deltas happen to be large)" if rec.get("biased") else
               "The study ran to max_seeds; its mean Δ is conditioned on the earlier looks not stopping")
        out.append(f"{why}. Mean Δ {last['delta']:+.4f}; bias-adjusted estimate {adj:+.4f} (Whitehead's: the "
                   f"true Δ whose expected estimate at stopping under this design is the observed one, simulated "
                   f"with the seed SD {sd:.4f} taken as known).")
    return out


def seeds_sections(run: Run, h: str = "##") -> tuple[list[str], list[str], dict]:
    """(the looks of a --seeds auto study, for right after the headline; the signal-to-noise
    section, for the end; the report.json keys `sequential` and `signal_to_noise`)."""
    rows = signal_to_noise(run)
    rec = read_looks(run)
    looks = [f"{h} Sequential seeds (--seeds auto)", "", *looks_lines(rec), ""] if rec is not None else []
    snr = ["", f"{h} Signal-to-noise per metric over seeds", "", *snr_lines(rows)]
    return looks, snr, {"signal_to_noise": rows, "sequential": rec}
