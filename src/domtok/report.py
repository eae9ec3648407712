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

import copy
import json
import math
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

    def rung(self, name: str) -> "Run":
        """The same run restricted to one ladder rung's nodes (its whole study)."""
        view = copy.copy(self)
        view.nodes = [n for n in self.nodes if n.rung == name]
        view.all_nodes = [n for n in self.all_nodes if n.rung == name]
        return view

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


# What compute matching compares: summary key -> its name in the verdict.
COMPUTE_KEYS = {"params": "parameters", "steps": "steps", "tokens_per_step": "tokens per step",
                "tokens_trained": "tokens", "total_flops": "FLOPs"}


def _mismatched(summaries: list[dict]) -> list[str]:
    """The compute quantities that differ between these pretraining summaries (or are missing)."""
    return [name for k, name in COMPUTE_KEYS.items() if len({s.get(k) for s in summaries}) > 1
            or None in {s.get(k) for s in summaries}]


def compute_matched(run: Run) -> bool | None:
    """Whether every condition and seed trained with the same compute; None until every row is there."""
    first_pre = next((s.name for s in run.spec.stages if s.kind == "pretrain"), None)
    if first_pre is None:
        return None
    rows = [n for c in run.conditions for n in run.training(first_pre, c)]
    if len({(n.condition, n.seed) for n in rows}) < len(run.conditions) * len(run.spec.seeds):
        return None
    return not _mismatched([run.summary[n.id] for n in rows])


def compute_table(run: Run) -> list[str]:
    """One row per condition and seed of the first pretraining stage, and a verdict on compute
    matching that is given only when every row is there (a missing row could be the one that
    differs). Documents and UTF-8 bytes read are shown, not judged: the domain condition,
    shorter in tokens, is meant to read further in the same steps."""
    first_pre = next((s.name for s in run.spec.stages if s.kind == "pretrain"), None)
    if first_pre is None:
        return ["(no pretraining stage in this run)"]
    lines = ["| condition | seed | params | steps | tokens/step | tokens trained | unique tokens | epochs | "
             "training FLOPs | documents read | UTF-8 bytes read | domain-token share | wall time (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    warnings, missing, rows = [], [], []
    for cond in run.conditions:
        for seed in run.spec.seeds:
            nodes = [n for n in run.training(first_pre, cond) if n.seed == seed]
            if not nodes:
                node = next((n for n in run.all_nodes if n.stage == first_pre and n.condition == cond
                             and n.seed == seed and n.benchmark is None), None)
                missing.append(f"{cond} seed {seed} ({node_state(node) if node else 'no node'})")
                continue
            s = run.summary[nodes[0].id]
            rows.append((cond, seed, s))
            ep = s.get("epochs")
            lines.append(f"| {cond} | {seed} | {_fmt(s.get('params'))} | {_fmt(s.get('steps'))} | "
                         f"{_fmt(s.get('tokens_per_step'))} | {_fmt(s.get('tokens_trained'))} | {_fmt(s.get('unique_tokens'))} | "
                         f"{_fmt(ep, 2)} | {_sci(s.get('total_flops'))} | {_fmt(s.get('documents_seen'))} | "
                         f"{_fmt(s.get('bytes_seen'))} | {_fmt(s.get('domain_token_share'), 6)} | "
                         f"{_fmt(s.get('wall_time_s'), 1)} |")
            if isinstance(ep, (int, float)) and ep > 1:
                warnings.append(f"- ⚠ {cond} seed {seed} saw its training data {ep:.2f} times (repeated data).")
    if missing:
        return lines + ["", f"- ⚠ no compute-matching verdict: {first_pre} has no finished row for "
                        + ", ".join(missing) + "; finish (or repair) those nodes and re-run `domtok report`."] + warnings
    names = COMPUTE_KEYS
    values = {k: {s.get(k) for _, _, s in rows} for k in names}
    mismatched = _mismatched([s for _, _, s in rows])
    if mismatched:
        verdict = f"- ❌ conditions are NOT compute-matched: {', '.join(mismatched)} differ (or are not recorded)."
    else:
        (params,), (steps,), (tps,), (tokens,), (flops,) = (values[k] for k in names)
        verdict = (f"- ✅ conditions are compute-matched: the same parameters ({params:,}), steps ({steps:,}), "
                   f"tokens per step ({tps:,}), tokens ({tokens:,}) and FLOPs ({flops:.3e}) in every condition and seed.")
    read = [f"{c} seed {seed}: {_fmt(s.get('documents_seen'))} documents, {_fmt(s.get('bytes_seen'))} bytes"
            for c, seed, s in rows]
    reading = ("- Read in those steps (whole documents of one seeded order, shared by the conditions, and their "
               "original UTF-8 bytes): " + "; ".join(read) + ".")
    return lines + ["", verdict, reading] + warnings


# Token budgets of the stages and benchmarks that generate or cut text: (config class, key).
TOKEN_BUDGETS = {
    "gsm8k": ("domtok.eval.gsm8k", "GSM8KEvalConfig", "max_new_tokens"),
    "probes": ("domtok.eval.probes", "ProbesConfig", "max_new_tokens"),
    "grpo": ("domtok.train.grpo", "GRPOConfig", "max_completion_length"),
    "pretrain": ("domtok.train.pretrain", "PretrainConfig", "seq_len"),
    "sft_stage": ("domtok.train.sft", "SFTStage", "max_length"),
}


def _budget(kind: str, config: dict) -> tuple[str, int] | None:
    """(knob, value) of a stage's or benchmark's token budget, the class default when unset."""
    if kind not in TOKEN_BUDGETS:
        return None
    import dataclasses
    import importlib

    module, cls, key = TOKEN_BUDGETS[kind]
    if key in config:
        return key, config[key]
    default = {f.name: f.default for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}[key]
    return key, default


def _encoding_lengths(run: Run) -> dict[str, float]:
    """Training tokens per 1,000 UTF-8 bytes of original text, per condition (prepare's meta)."""
    out = {}
    for n in run.nodes:
        if n.kind == "prepare":
            train = run.summary[n.id].get("splits", {}).get("train", {})
            if train.get("tokens") and train.get("bytes"):
                out[n.condition] = 1000 * train["tokens"] / train["bytes"]
    return out


def _val_documents(run: Run) -> list[str]:
    """Pretraining stages whose conditions measured validation on different documents (a token
    cap, `eval_batches`, fits more documents of the shorter encoding)."""
    out = []
    for st in run.spec.stages:
        if st.kind != "pretrain":
            continue
        counts = {f"{cond} seed {n.seed}": run.summary[n.id].get("val_documents")
                  for cond in run.conditions for n in run.training(st.name, cond)}
        if len(set(counts.values())) > 1:
            out.append(f"- Stage `{st.name}` measured validation loss and bits per byte on different documents "
                       f"(the first {', '.join(f'{v} for {k}' for k, v in counts.items())}): `eval_batches` caps "
                       "tokens, and the shorter encoding fits more documents. Set `eval_batches: 0` to score the "
                       "whole validation split in every condition.")
    return out


def _sft_drops(run: Run) -> list[str]:
    """Records every condition dropped because their injection would break an annotation."""
    out = []
    for st in run.spec.stages:
        if st.kind != "sft":
            continue
        for seed in run.spec.seeds:
            per_cond = {}
            for cond in run.conditions:
                for n in run.training(st.name, cond):
                    if n.seed == seed:
                        data = run.summary[n.id].get("data", {})
                        per_cond[cond] = tuple((sub, part, tuple(r.get(part, {}).get("broken_annotation_ids", [])))
                                               for sub, r in sorted(data.items()) for part in ("train", "val"))
            if len(per_cond) < len(run.conditions):
                continue  # judged once every condition has finished this stage
            counts = {cond: sum(len(ids) for *_, ids in parts) for cond, parts in per_cond.items()}
            if len(set(per_cond.values())) == 1:
                out.append(f"- SFT stage `{st.name}` seed {seed}: {next(iter(counts.values()))} record(s) dropped "
                           f"from every condition (the same ids: injecting them would break a `<<expr=result>>` "
                           "annotation).")
            else:
                out.append(f"- ⚠ SFT stage `{st.name}` seed {seed}: the conditions dropped different records "
                           f"({', '.join(f'{c} {k}' for c, k in counts.items())}): they trained on different data.")
    return out


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
    budgets = [f"stage `{st.name}` {b[0]}={b[1]}" for st in run.spec.stages if (b := _budget(st.kind, st.config))]
    budgets += [f"sft stage `{sub.get('name', '?')}` max_length={b[1]} (longer examples are cut)"
                for st in run.spec.stages if st.kind == "sft" for sub in st.config.get("stages", [])
                if (b := _budget("sft_stage", sub))]
    budgets += [f"benchmark `{name}` {b[0]}={b[1]}" for name, bench in run.spec.benchmarks.items()
                if (b := _budget(bench["kind"], bench["config"]))]
    if budgets and len(run.conditions) > 1:
        lengths = _encoding_lengths(run)
        measured = (" (training tokens per 1,000 bytes of the same text: "
                    + ", ".join(f"{c} {v:.1f}" for c, v in lengths.items()) + ")") if len(lengths) > 1 else ""
        out.append("- Token budgets are counted in tokens, so the condition with the shorter encoding fits more text "
                   f"into each{measured}. Budgets in this run: " + ", ".join(budgets) + ".")
    out += _val_documents(run)
    out += _sft_drops(run)
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
