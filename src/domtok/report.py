"""`domtok report [RUN_DIR]`: report.md, report.json and PNG plots from the results on disk.

Everything here is derived from files the stages wrote (manifests, summary.json,
metrics.jsonl, items.jsonl), read through `domtok.rundir`, so a report can be re-made at any
time, on any machine that has the run directory. report.md opens with the answer:

  0. headline: the study's question in one sentence; for each main metric (each probe
     category, each GSM-style test) after each evaluated stage, domain − baseline as the mean
     over seeds with a 95% CI that counts seed and item variation, p and Holm p (over every
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
        self._items: dict[str, list[dict]] = {}

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

    def items(self, node) -> list[dict]:
        """The per-item results of an evaluation node (read once)."""
        if node.id not in self._items:
            self._items[node.id] = read_items(node.out_dir / "items.jsonl")
        return self._items[node.id]


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


def matrix_metrics(run: Run, bench: str) -> list[str]:
    """The summary metrics of a benchmark shown in the matrix (and report.json): the kind's
    headline metrics, and for probes every category's accuracy."""
    kind = run.spec.benchmarks[bench]["kind"]
    metrics = list(HEADLINE.get(kind, ([], None))[0])
    for stage in run.spec.evals_after:
        for cond in run.conditions:
            for n in run.evals(stage, cond, bench):
                for k in run.summary[n.id].get("metrics", {}):
                    if kind == "probes" and k.startswith("accuracy_") and k not in metrics:
                        metrics.append(k)
    return metrics


def eval_matrix(run: Run) -> list[str]:
    out = []
    for bench, b in run.spec.benchmarks.items():
        kind = b["kind"]
        metrics = matrix_metrics(run, bench)
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
    out += notation_lines(run)
    out.append("- Validation loss per token depends on the tokenizer; compare conditions by bits per byte.")
    return out


def notation_lines(run: Run) -> list[str]:
    """What each condition saw: its injector settings (prepare's meta.json), how often one of
    its domain tokens followed a lone space token, and the notation of its probe prompts."""
    out = []
    for cond in run.conditions:
        prep = next((run.summary[n.id] for n in run.nodes if n.kind == "prepare" and n.condition == cond), {})
        probe = next((run.summary[n.id]["notation"] for n in run.nodes
                      if n.kind == "probes" and n.condition == cond and run.summary[n.id].get("notation")), None)
        parts = []
        inj, spaces = prep.get("injection"), prep.get("domain_tokens_after_space")
        if prep:
            parts.append("training text as written" if not inj else
                         f"training text injected (mode {inj['mode']}, word forms {'on' if inj['word_forms'] else 'off'})")
        if inj and spaces:
            parts.append(f"{spaces['share']:.1%} of its domain tokens ({spaces['all']:,}) follow a lone space token")
        if probe:
            parts.append("probe questions as written" if not probe["injected"] else
                         f"probe questions through the same injector ({probe['prompts_changed']} of "
                         f"{probe['prompts']} prompts changed)")
        if parts:
            out.append(f"- Notation, `{cond}`: " + "; ".join(parts) + ".")
    if any(n.kind == "probes" and "accuracy_symbolic" in run.summary[n.id].get("metrics", {}) for n in run.nodes):
        out.append("- Probe category `symbolic` asks `a × b =` in every condition, a string a domain condition saw "
                   "only where its injector left it (its complete facts were tokens); `symbolic_context` and "
                   "`symbolic_table` ask in each condition's own notation.")
    return out


# --------------------------------------------------------------------------- the statistics

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


def _views(run: Run) -> list[tuple[str | None, Run]]:
    """(rung, view) per study in the run: the run itself, or each ladder rung's whole study."""
    return [(r.name, run.rung(r.name)) for r in run.spec.ladder] or [(None, run)]


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
    for rung, view in _views(run):
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
    for rung, cond in [(rung, c) for rung, _ in _views(run) for c in domain]:
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
              f"Its 95% CI and p come from {'; '.join(methods)} — a t-interval whose variance counts both seed and "
              "item variation, intersected with [-1, 1] where no accuracy difference can lie outside it "
              "(`domtok.eval.stats.seed_item_test`). Holm's correction runs over every p-value in "
              f"this report (m = {comps['m']}: this table, the GRPO checks and the per-seed paired table). MDE: the "
              "smallest true difference this design detects with 80% power at Holm's strictest level α/m "
              "(noncentral t with the design's own standard error and degrees of freedom). df: when the seeds "
              "disagree more than item noise explains, the seed variance enters the CI with K − 1 degrees of "
              "freedom (2 for 3 seeds), and only large effects can be detected; otherwise the seeds are pooled. "
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
                        "the headline's test pools the seeds and counts both seed and item variation."]


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
    for rung, view in _views(run):  # a ladder's keys name the rung: "rung-s/probes.accuracy_all"
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


def forest_plot(comps: dict, out: Path) -> str | None:
    """Every effect of the headline and the GRPO checks, with its 95% CI, one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{_label(r)} · {r['stage']} · {r['condition']}", r) for r in comps["headline"] if "p" in r]
    rows += [(f"GRPO {r['benchmark']} · {r['stage']} − {r['start']} · {r['condition']}", r) for r in comps["grpo"] if "p" in r]
    if not rows:
        return None
    colour = {HELPS: "tab:green", HURTS: "tab:red", NULL: "tab:gray"}
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.2))
    for y, (_, r) in enumerate(reversed(rows)):
        ax.errorbar(r["delta"], y, xerr=[[r["delta"] - r["ci"][0]], [r["ci"][1] - r["delta"]]], fmt="o",
                    color=colour[r["verdict"]], capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [name for name, _ in reversed(rows)], fontsize=8)
    ax.set_xlabel("difference in accuracy (domain − baseline; GRPO − its start), 95% CI")
    ax.set_title("green: helps, red: hurts, grey: no detectable difference (Holm-corrected)", fontsize=9)
    out.mkdir(parents=True, exist_ok=True)
    return _save(fig, out, "forest.png")


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

def study_sections(run: Run, comps: dict, plots_dir: Path, rel: str, h: str = "##",
                   after_headline: list[str] = ()) -> list[str]:
    """Every section of one study's report, headline first (a whole run, or one ladder rung);
    its plots go to `plots_dir`, linked as `rel/NAME`; headings at level `h`; `after_headline`
    comes right after the headline, before the detail."""
    figs = plots(run, plots_dir)
    forest = forest_plot(comps, plots_dir)
    lines = [f"{h} Headline", "", *headline(run, comps, rel), "",
             *([f"![forest plot]({rel}/{forest})", ""] if forest else []), *after_headline,
             f"{h} Losses", "", *loss_table(run), "",
             f"{h} Reinforcement learning", "", *reward_table(run), "",
             f"{h}# Does GRPO raise held-out accuracy?", "", *grpo_table(run, comps), "",
             f"{h} Evaluation matrix", "", "Each cell: value [95% Wilson CI] for one seed; mean ± std over seeds otherwise.", "",
             *eval_matrix(run), "",
             f"{h} Generation (GSM-style benchmarks)", "", *generation_table(run), "",
             f"{h} Paired comparison: domain vs baseline", "",
             "One row per seed: same items, same seed, delta = domain − baseline, paired bootstrap 95% CI, "
             "exact McNemar p.", "",
             *paired_comparisons(run, comps), "",
             f"{h} Compute matching", "", *compute_table(run), "",
             f"{h} Confounds", "", *confounds(run), "",
             f"{h} Plots", ""]
    return lines + ([f"![{f}]({rel}/{f})" for f in figs] or ["(nothing to plot yet)"])


def _rung_part(comps: dict, rung: str) -> dict:
    """The comparisons of one ladder rung (Holm p and m stay those of the whole ladder)."""
    return {**{k: [r for r in comps[k] if r.get("rung") == rung] for k in ("headline", "grpo", "per_seed")},
            "m": comps["m"]}


def ladder_report(run: Run, comps: dict) -> tuple[list[str], dict]:
    """A ladder's report.md body and report.json: per-rung compute and "learns" checks, each
    headline effect against training FLOPs with a fitted trend, then every rung's whole study
    (Holm's correction, from `comparisons`, runs over every comparison of every rung)."""
    from domtok import ladder

    js = report_json(run, comps)
    rows = []
    for rung in run.spec.ladder:
        view = run.rung(rung.name)
        prefix = f"rung-{rung.name}/"  # report_json's accuracy keys of this rung
        accuracy = {c: {st: {k[len(prefix):]: v for k, v in by_metric.items() if k.startswith(prefix)}
                        for st, by_metric in by_stage.items()} for c, by_stage in js["accuracy"].items()}
        accuracy = {c: {st: m for st, m in by.items() if m} for c, by in accuracy.items()}
        rows.append({**ladder.rung_compute(view, rung), "compute_matched": compute_matched(view),
                     "headline": [h for h in js["headline"] if h["rung"] == rung.name],
                     "grpo": [g for g in js["grpo"] if g["rung"] == rung.name],
                     "accuracy": {c: by for c, by in accuracy.items() if by}})
    trend_rows = ladder.trends(rows)
    figs = ladder.plots(rows, trend_rows, run.dir / "plots")
    lines = ["## Ladder", "",
             "Every rung runs the whole study. FLOPs: pretraining FLOPs of one model (6N + attention per token, "
             "x tokens trained); wall times are summed over the rung's models (pretraining) and over every finished node of "
             "the rung, all conditions and seeds (nodes that ran at once under `--jobs` each count in full); elapsed: from the "
             "rung's first node start to its last node end.", "",
             *ladder.rung_table(rows), ""]
    if run.spec.learns:
        lines += [f"### Do the models learn what is tested? (mean over seeds after `{run.spec.learns['stage']}`)", ""]
        missed = []
        for r in rows:
            check, misses = ladder.learn_check(run.spec.learns, r["accuracy"])
            lines += [f"Rung `{r['rung']}`:", "", *check, ""]
            missed += [f"`{r['rung']}` {m}" for m in misses]
        lines += ["- ⚠ Not every model reaches the figures: " + "; ".join(missed) + "." if missed else
                  "- ✅ Every rung's models reach every figure, in every condition.", ""]
    lines += ["### The effect against compute", "",
              "Weighted least squares of each headline effect on log10(FLOPs), weights 1 / SE² of each rung's "
              "effect; slope CI from those variances (scaled up by χ²/dof when the rungs scatter more than "
              f"their errors allow). Holm's correction in the per-rung tables runs over all {comps['m']} "
              "comparisons of the ladder.", "",
              *ladder.trend_lines(rows, trend_rows), "", *[f"![{f}](plots/{f})" for f in figs], ""]
    for rung in run.spec.ladder:
        view = run.rung(rung.name)
        lines += [f"## Rung `{rung.name}`: {rung.n_layer} layers x {rung.n_embd} wide, {rung.n_head} heads", "",
                  *study_sections(view, _rung_part(comps, rung.name), run.dir / "plots" / rung.dir_name,
                                  f"plots/{rung.dir_name}", "###"), ""]
    return lines, {**js, "ladder": rows, "ladder_trend": trend_rows}


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
            from domtok.ladder import learn_check

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
