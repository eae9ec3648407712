"""`domtok report [RUN_DIR]`: report.md and PNG plots from the results on disk.

Everything here is derived from files the stages wrote (manifests, summary.json,
metrics.jsonl, items.jsonl), so a report can be re-made at any time, on any machine that
has the run directory. Sections, in the order a paper draft needs them:

  1. loss per stage and condition (train/val loss; bits per byte for pretraining)
  2. the evaluation matrix: condition x stage -> headline metrics with 95% CIs (mean ± std
     over seeds when there are several)
  3. the GSM-style generation table (accuracy, response length, hit-max, EOS, repetition,
     domain tokens, eval time)
  4. paired comparisons domain vs baseline: delta, bootstrap CI, exact McNemar p, and a
     sentence saying plainly whether the difference is significant
  5. compute matching (FLOPs, tokens, unique tokens, epochs, domain-token share)
  6. stated confounds
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from domtok.config import atomic_write_text
from domtok.errors import DomtokError
from domtok.rundir import find_run_dir, load_run, node_state, read_items, read_summary

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


def _cell(summaries: list[dict], metric: str) -> str:
    """One matrix cell: value [CI] for one seed, mean ± std (n seeds) for several."""
    vals = [s["metrics"][metric] for s in summaries if isinstance(s.get("metrics", {}).get(metric), (int, float))]
    if not vals:
        return "–"
    if len(vals) == 1:
        ci = summaries[0].get("ci", {}).get(metric)
        return f"{vals[0]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{vals[0]:.3f}"
    m, s = _mean_std(vals)
    return f"{m:.3f} ± {s:.3f} (n={len(vals)})"


class Run:
    """The finished nodes of a run directory, indexed for the tables."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.spec, nodes = load_run(run_dir)
        self.nodes = [n for n in nodes if node_state(n) == "done"]
        self.all_nodes = nodes
        self.summary = {n.id: read_summary(n) for n in self.nodes}
        self.conditions = list(self.spec.conditions)
        self.baseline = next((c for c, v in self.spec.conditions.items() if not v.get("token_set")), None)
        self.stages = [s.name for s in self.spec.stages]

    def training(self, stage: str, cond: str) -> list:
        return [n for n in self.nodes if n.stage == stage and n.condition == cond and n.benchmark is None
                and n.kind not in ("prepare", "tokenizer")]

    def evals(self, stage: str, cond: str, bench: str) -> list:
        return [n for n in self.nodes if n.stage == stage and n.condition == cond and n.benchmark == bench]


# --------------------------------------------------------------------------- tables

def loss_table(run: Run) -> list[str]:
    lines = ["| stage | condition | train loss | val loss | val bits/byte | steps |", "|---|---|---:|---:|---:|---:|"]
    for stage in run.stages:
        if run.spec.stage(stage).kind == "grpo":
            continue  # reported in the reward table
        for cond in run.conditions:
            nodes = run.training(stage, cond)
            if not nodes:
                continue
            cols = []
            for key in ("final_train_loss", "final_val_loss", "final_val_bpb", "steps"):
                vals = [run.summary[n.id].get(key) for n in nodes]
                vals = [v for v in vals if isinstance(v, (int, float))]
                if not vals:
                    cols.append("–")
                elif len(vals) == 1:
                    cols.append(_fmt(vals[0]) if key != "steps" else f"{int(vals[0]):,}")
                else:
                    m, s = _mean_std(vals)
                    cols.append(f"{m:.4f} ± {s:.4f}")
            lines.append(f"| {stage} | {cond} | " + " | ".join(cols) + " |")
    return lines


def reward_table(run: Run) -> list[str]:
    """GRPO stages: mean reward at the start and the end of training, and the last accuracy."""
    lines = ["| stage | condition | seed | reward | steps | mean reward, first quarter | mean reward, last quarter | "
             "accuracy (last step) |", "|---|---|---|---|---:|---:|---:|---:|"]
    for st in run.spec.stages:
        if st.kind != "grpo":
            continue
        for cond in run.conditions:
            for n in run.training(st.name, cond):
                s = run.summary[n.id]
                lines.append(f"| {st.name} | {cond} | {n.seed} | {s.get('reward', '–')} | {_fmt(s.get('steps'))} | "
                             f"{_fmt(s.get('reward_mean_first_quarter'))} | {_fmt(s.get('reward_mean_last_quarter'))} | "
                             f"{_fmt(s.get('accuracy_last'), 3)} |")
    return lines if len(lines) > 2 else ["(no GRPO stage in this run)"]


def eval_matrix(run: Run) -> list[str]:
    out = []
    for bench, b in run.spec.benchmarks.items():
        kind = b["kind"]
        metrics = list(HEADLINE.get(kind, ([], None))[0])
        # probes also report every category
        for stage in run.spec.evals_after:
            for cond in run.conditions:
                for n in run.evals(stage, cond, bench):
                    for k in run.summary[n.id].get("metrics", {}):
                        if kind == "probes" and k.startswith("accuracy_") and k not in metrics:
                            metrics.append(k)
        rows = []
        for stage in run.spec.evals_after:
            for cond in run.conditions:
                sums = [run.summary[n.id] for n in run.evals(stage, cond, bench)]
                if sums:
                    rows.append(f"| {cond} | {stage} | " + " | ".join(_cell(sums, m) for m in metrics) + " |")
        if rows:
            out += [f"### {bench} ({kind})", "",
                    "| condition | stage | " + " | ".join(metrics) + " |",
                    "|---|---|" + "---:|" * len(metrics), *rows, ""]
    return out or ["(no evaluation has finished yet)"]


def generation_table(run: Run) -> list[str]:
    keys = [("accuracy_flexible", "accuracy"), ("avg_response_tokens", "avg tokens"),
            ("hit_max_rate", "hit-max"), ("eos_rate", "EOS rate"), ("repetition_rate", "repetition"),
            ("domain_tokens_total", "domain tokens"), ("domain_tokens_per_response", "per response")]
    lines = []
    for bench, b in run.spec.benchmarks.items():
        if b["kind"] != "gsm8k":
            continue
        rows = []
        for stage in run.spec.evals_after:
            for cond in run.conditions:
                for n in run.evals(stage, cond, bench):
                    s = run.summary[n.id]
                    m = s.get("metrics", {})
                    vals = [_fmt(m.get(k, s.get(k)), 3) for k, _ in keys]
                    rows.append(f"| {bench} | {cond} | {stage} | s{n.seed} | {s.get('n', '–')} | " + " | ".join(vals)
                                + f" | {_fmt(s.get('wall_time_s'), 1)} |")
        if rows:
            lines += ["| benchmark | condition | stage | seed | items | " + " | ".join(h for _, h in keys)
                      + " | eval time (s) |", "|---|---|---|---|---:|" + "---:|" * (len(keys) + 1), *rows, ""]
    return lines or ["(no GSM-style evaluation in this run)"]


def paired_comparisons(run: Run) -> list[str]:
    from domtok.eval.stats import across_seeds, compare_items

    if run.baseline is None:
        return ["(no baseline condition to compare against)"]
    lines = ["| benchmark | stage | condition vs baseline | seed | n | baseline | domain | delta | 95% CI | p | test |",
             "|---|---|---|---|---:|---:|---:|---:|---|---:|---|"]
    sentences = []
    for bench, b in run.spec.benchmarks.items():
        field = HEADLINE.get(b["kind"], (None, "correct"))[1]
        for stage in run.spec.evals_after:
            for cond in run.conditions:
                if cond == run.baseline:
                    continue
                per_seed = []
                for seed in run.spec.seeds:
                    na = [n for n in run.evals(stage, run.baseline, bench) if n.seed == seed]
                    nb = [n for n in run.evals(stage, cond, bench) if n.seed == seed]
                    if not (na and nb):
                        continue
                    ia = read_items(na[0].out_dir / "items.jsonl")
                    ib = read_items(nb[0].out_dir / "items.jsonl")
                    try:
                        cmp = compare_items(ia, ib, names=(run.baseline, cond))
                    except DomtokError as e:
                        lines.append(f"| {bench} | {stage} | {cond} | s{seed} | – | – | – | – | – | – | {e} |")
                        continue
                    r = cmp["metrics"].get(field)
                    if r is None:
                        continue
                    # compare_items gives a - b; report domain - baseline
                    delta, ci = -r["delta"], (-r["ci"][1], -r["ci"][0])
                    per_seed.append((r["a"], r["b"]))
                    lines.append(f"| {bench} | {stage} | {cond} | s{seed} | {cmp['n']} | {r['a']:.3f} | {r['b']:.3f} | "
                                 f"{delta:+.3f} | [{ci[0]:+.3f}, {ci[1]:+.3f}] | {r['p']:.3g} | {r['test']} |")
                    verdict = "is statistically significant" if r["p"] < ALPHA else "is NOT statistically significant"
                    sentences.append(f"- {bench} after {stage}, seed {seed}: {cond} − {run.baseline} = {delta:+.3f} "
                                     f"({field}); the difference {verdict} (p = {r['p']:.3g}, {r['test']}, α = {ALPHA}).")
                if len(per_seed) > 1:
                    t = across_seeds([x[1] for x in per_seed], [x[0] for x in per_seed], paired=True)
                    verdict = "significant" if t["test"]["p"] < ALPHA else "NOT significant"
                    sentences.append(f"- {bench} after {stage}, across {len(per_seed)} seeds: {cond} "
                                     f"{t['mean']:.3f} ± {t['std']:.3f} vs {run.baseline} {t['b']['mean']:.3f} ± "
                                     f"{t['b']['std']:.3f}; paired t-test over seeds p = {t['test']['p']:.3g} ({verdict}).")
    if len(lines) == 2:
        return ["(no pair of finished evaluations to compare yet)"]
    n_tests = len(lines) - 2
    caution = (f"These are {n_tests} tests at α = {ALPHA} with no correction for multiple comparisons: about "
               f"{ALPHA * n_tests:.1f} would come out significant by chance alone. Trust a difference that "
               "holds across seeds and stages.")
    return lines + [""] + sentences + ["", caution]


def compute_table(run: Run) -> list[str]:
    lines = ["| condition | seed | params | steps | tokens/step | tokens trained | unique tokens | epochs | "
             "training FLOPs | domain-token share | wall time (s) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    first_pre = next((s.name for s in run.spec.stages if s.kind == "pretrain"), None)
    warnings = []
    for cond in run.conditions:
        for n in run.training(first_pre, cond) if first_pre else []:
            s = run.summary[n.id]
            ep = s.get("epochs")
            lines.append(f"| {cond} | {n.seed} | {_fmt(s.get('params'))} | {_fmt(s.get('steps'))} | "
                         f"{_fmt(s.get('tokens_per_step'))} | {_fmt(s.get('tokens_trained'))} | {_fmt(s.get('unique_tokens'))} | "
                         f"{_fmt(ep, 2)} | {_sci(s.get('total_flops'))} | "
                         f"{_fmt(s.get('domain_token_share'), 6)} | {_fmt(s.get('wall_time_s'), 1)} |")
            if isinstance(ep, (int, float)) and ep > 1:
                warnings.append(f"- ⚠ {cond} seed {n.seed} saw its training data {ep:.2f} times (repeated data).")
    keys = ("params", "steps", "tokens_per_step", "tokens_trained", "total_flops")
    by_key = defaultdict(set)
    for cond in run.conditions:
        for n in run.training(first_pre, cond) if first_pre else []:
            for k in keys:
                by_key[k].add(run.summary[n.id].get(k))
    mismatched = [k for k, v in by_key.items() if len(v) > 1]
    verdict = (f"- ❌ conditions are NOT compute-matched: {', '.join(mismatched)} differ." if mismatched else
               "- ✅ conditions are compute-matched: same parameters, steps, tokens per step, tokens and FLOPs.")
    return lines + ["", verdict] + warnings


def confounds(run: Run) -> list[str]:
    out = [f"- {c}" for c in run.spec.confounds]
    for st in run.spec.stages:
        reward = st.config.get("reward") or {}
        reward = reward.get("kind", "shaped") if isinstance(reward, dict) else str(reward)
        if st.kind == "grpo" and reward == "shaped":
            out.append(f"- Stage `{st.name}` uses the shaped reward, whose domain-token bonus (+0.2) can only be "
                       "earned by a domain condition: GRPO differences between conditions are confounded with it. "
                       "Use `reward: shaped_fair` to remove the bonus.")
    for cond, c in run.spec.conditions.items():
        if c.get("inject_user"):
            out.append(f"- Condition `{cond}` injects domain tokens into user text, which can leak answers "
                       "(`What is 6*9?` → the token carries 54).")
    out.append("- Validation loss per token depends on the tokenizer; compare conditions by bits per byte.")
    return out


# --------------------------------------------------------------------------- plots

def _series(rows: list[dict], keys: tuple[str, ...]) -> list[tuple]:
    """(step, value) of the first key each row has as a number."""
    out = []
    for r in rows:
        v = next((r[k] for k in keys if isinstance(r.get(k), (int, float))), None)
        if v is not None and "step" in r:
            out.append((r["step"], v))
    return out


def _save(fig, out: Path, name: str) -> str:
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
        made.append(_save(fig, out, f"loss_{st.name}.png"))
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
        made.append(_save(fig, out, f"accuracy_{bench}.png"))
    return made


# --------------------------------------------------------------------------- report

def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    run = Run(run_dir)
    pending = [n.id for n in run.all_nodes if n not in run.nodes]
    figs = plots(run, run_dir / "plots")
    spec = run.spec
    lines = [f"# domtok report: {spec.name}", "",
             f"Conditions: {', '.join(f'`{c}`' for c in run.conditions)} (baseline: `{run.baseline}`); "
             f"seeds: {spec.seeds}; stages: {' → '.join(['prepare'] + run.stages)}.",
             f"Finished nodes: {len(run.nodes)} of {len(run.all_nodes)}"
             + (f" — not finished: {', '.join(pending[:8])}{' …' if len(pending) > 8 else ''}" if pending else "") + ".",
             "", "## Losses", "", *loss_table(run), "",
             "## Reinforcement learning", "", *reward_table(run), "",
             "## Evaluation matrix", "", "Each cell: value [95% Wilson CI] for one seed; mean ± std over seeds otherwise.", "",
             *eval_matrix(run), "",
             "## Generation (GSM-style benchmarks)", "", *generation_table(run), "",
             "## Paired comparison: domain vs baseline", "",
             "Same items, same seed: delta = domain − baseline, paired bootstrap 95% CI, exact McNemar p.", "",
             *paired_comparisons(run), "",
             "## Compute matching", "", *compute_table(run), "",
             "## Confounds", "", *confounds(run), "",
             "## Plots", ""]
    lines += [f"![{f}](plots/{f})" for f in figs] or ["(nothing to plot yet)"]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def add_arguments(p) -> None:
    p.add_argument("run_dir", nargs="?", help="run directory (default: the latest under ./runs)")


def main(args) -> int:
    path = write_report(find_run_dir(args.run_dir))
    print(f"wrote {path}")
    return 0
