"""The report's PNG plots: losses and rewards per stage, accuracy per benchmark, and the forest
plot of every effect."""

from __future__ import annotations

from pathlib import Path

from domtok.report.compare import EQUIVALENT, HELPS, HURTS, UNDECIDED, _label
from domtok.report.run import HEADLINE, Run, _mean_std
from domtok.utils import read_items

def _series(rows: list[dict], keys: tuple[str, ...]) -> list[tuple]:
    """(step, value) of the first key each row has as a number."""
    out = []
    for r in rows:
        v = next((r[k] for k in keys if isinstance(r.get(k), (int, float))), None)
        if v is not None and "step" in r:
            out.append((r["step"], v))
    return out


def save(fig, out: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def plots(run: Run, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    made = []
    train_stages = [s for s in run.spec.stages]
    for st in train_stages:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        drew = False
        for cond in run.conditions:
            for n in run.training(st.name, cond):
                rows = read_items(n.out_dir / "metrics.jsonl")
                left, right = (("reward_mean",), ("accuracy",)) if st.kind == "grpo" else \
                    (("loss", "train_loss"), ("val_bpb", "val_loss"))
                tr = _series(rows, left)
                va = _series(rows, right)
                label = f"{cond} s{n.seed}"
                if tr:
                    ax1.plot(*zip(*tr), label=label, alpha=0.8)
                    drew = True
                if va:
                    ax2.plot(*zip(*va), marker="o", label=label)
        if not drew:
            plt.close(fig)
            continue
        if st.kind == "grpo":
            ax1.set(title=f"{st.name}: mean reward", xlabel="step", ylabel="reward")
            ax2.set(title=f"{st.name}: accuracy of sampled completions", xlabel="step", ylabel="accuracy")
        else:
            ax1.set(title=f"{st.name}: training loss", xlabel="step", ylabel="loss (nats/token)")
            ax2.set(title=f"{st.name}: validation", xlabel="step", ylabel="bits per byte")
        for ax in (ax1, ax2):
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        made.append(save(fig, out, f"loss_{st.name}.png"))
    for bench, b in run.spec.benchmarks.items():
        metric = HEADLINE.get(b["kind"], (["accuracy"], None))[0][0 if b["kind"] != "gsm8k" else 1]
        fig, ax = plt.subplots(figsize=(7, 4))
        drew = False
        width = 0.8 / max(1, len(run.conditions))
        for j, cond in enumerate(run.conditions):
            xs, ys, lo, hi = [], [], [], []
            for i, stage in enumerate(run.spec.evals_after):
                sums = [run.summary[n.id] for n in run.evals(stage, cond, bench)]
                vals = [s["metrics"][metric] for s in sums if metric in s.get("metrics", {})]
                if not vals:
                    continue
                if len(vals) == 1:
                    m = vals[0]
                    ci = sums[0].get("ci", {}).get(metric, [m, m])
                    e_lo, e_hi = m - ci[0], ci[1] - m
                else:
                    m, sd = _mean_std(vals)
                    e_lo = e_hi = sd
                xs.append(i + (j - (len(run.conditions) - 1) / 2) * width)
                ys.append(m); lo.append(max(0.0, e_lo)); hi.append(max(0.0, e_hi))
            if xs:
                ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=4, label=cond)
                drew = True
        if not drew:
            plt.close(fig)
            continue
        ax.set_xticks(range(len(run.spec.evals_after)), run.spec.evals_after)
        ax.set(title=f"{bench}: {metric} by stage (95% CI or ±1 std over seeds)", ylabel=metric)
        ax.legend()
        made.append(save(fig, out, f"accuracy_{bench}.png"))
    return made


def forest_plot(comps: dict, out: Path) -> str | None:
    """Every effect of the headline and the GRPO checks, with its 95% CI, one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{_label(r)} · {r['stage']} · {r['condition']}", r) for r in comps["headline"] if "p" in r]
    rows += [(f"GRPO {r['benchmark']} · {r['stage']} − {r['start']} · {r['condition']}", r) for r in comps["grpo"] if "p" in r]
    if not rows:
        return None
    colour = {HELPS: "tab:green", HURTS: "tab:red", EQUIVALENT: "tab:blue", UNDECIDED: "tab:gray"}
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.2))
    for y, (_, r) in enumerate(reversed(rows)):
        ax.errorbar(r["delta"], y, xerr=[[r["delta"] - r["ci"][0]], [r["ci"][1] - r["delta"]]], fmt="o",
                    color=colour[r["verdict"]] if r["family"] != "descriptive" else "tab:gray", capsize=3,
                    alpha=0.45 if r["family"] == "descriptive" else 1.0)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [name for name, _ in reversed(rows)], fontsize=8)
    ax.set_xlabel("difference in accuracy (domain − baseline; GRPO − its start), 95% CI")
    ax.set_title("green: helps, red: hurts, blue: equivalent, grey: undecided or descriptive (primary alone, "
                 "secondary Holm-corrected)", fontsize=8)
    out.mkdir(parents=True, exist_ok=True)
    return save(fig, out, "forest.png")


def primary_plot(primary: dict, out: Path, name: str = "primary.png") -> str | None:
    """The primary endpoint's per-seed deltas as dots, their mean with its 95% CI, and the
    equivalence margin as a band: what the answer rests on, seed by seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deltas = primary.get("per_seed_deltas") or []
    if not deltas:
        return None
    fig, ax = plt.subplots(figsize=(7, 2.2))
    m = primary["margin"]
    ax.axvspan(-m, m, color="tab:blue", alpha=0.12, label=f"equivalence margin ±{m:g}")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.scatter(deltas, [1.0] * len(deltas), color="tab:orange", zorder=3, label="one seed's Δ")
    for s, d in zip(primary["seeds"], deltas):
        ax.annotate(f"s{s}", (d, 1.0), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    lo, hi = primary["ci_low"], primary["ci_high"]
    if lo is not None and hi is not None:
        ax.errorbar(primary["delta"], 0.0, xerr=[[primary["delta"] - lo], [hi - primary["delta"]]], fmt="s",
                    color="black", capsize=4, label="mean, 95% CI")
    ax.set_ylim(-0.8, 1.8)
    ax.set_yticks([0.0, 1.0], ["mean", "seeds"])
    ax.set_xlabel(f"Δ {primary['metric']} after {primary['stage']} ({primary['condition']} − baseline)")
    ax.set_title(f"primary endpoint: {primary['benchmark']}, verdict: {primary['verdict']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    out.mkdir(parents=True, exist_ok=True)
    return save(fig, out, name)
