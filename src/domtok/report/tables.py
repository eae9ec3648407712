"""The report's detail tables: losses, GRPO rewards, the evaluation matrix, generation,
compute matching, confounds and notation, and the check of the spec's `learns:` figures."""

from __future__ import annotations

from domtok.report.run import HEADLINE, Run, _fmt, _mean_std, _sci
from domtok.rundir import document_partner, node_state

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


def loss_table(run: Run) -> list[str]:
    lines = ["| stage | condition | train loss, last steps | train loss, run mean | val loss | val bits/byte | steps |",
             "|---|---|---:|---:|---:|---:|---:|"]
    last_n: set[str] = set()
    for stage in run.stages:
        if run.spec.stage(stage).kind == "grpo":
            continue  # reported in the reward table
        for cond in run.conditions:
            nodes = run.training(stage, cond)
            if not nodes:
                continue
            cols = []
            last_n |= {f"{run.summary[n.id]['final_train_loss_steps']} ({stage})" for n in nodes
                       if "final_train_loss_steps" in run.summary[n.id]}
            for key in ("final_train_loss", "train_loss_mean", "final_val_loss", "final_val_bpb", "steps"):
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
    return lines + ["", "Train loss, last steps: the mean over the last steps of the run (how many: "
                    + (", ".join(sorted(last_n)) or "–") + "); run mean: the mean over every step, which is what "
                    "HF Trainer reports as `train_loss` (the reference study's tables)."]


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


def rft_table(run: Run) -> list[str]:
    """RFT stages, one row per round: samples drawn, correct, kept (unique, finished), the yield
    (kept / sampled), the share of questions with a kept answer, and the round's SFT."""
    lines = ["| stage | condition | seed | round | sampled | correct | kept | yield | questions solved | "
             "SFT steps | SFT train loss, last steps |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for st in run.spec.stages:
        if st.kind != "rft":
            continue
        for cond in run.conditions:
            for n in run.training(st.name, cond):
                for r in run.summary[n.id].get("rounds", []):
                    sft = r.get("sft") or {}
                    lines.append(f"| {st.name} | {cond} | {n.seed} | {r['round']} | {r['sampled']:,} | {r['correct']:,} | "
                                 f"{r['kept']:,} | {r['yield']:.3f} | {r['questions_solved']:.3f} | "
                                 f"{_fmt(sft.get('steps'))} | {_fmt(sft.get('final_train_loss'))} |")
    return lines if len(lines) > 2 else []


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


def token_matched(run: Run) -> list[str]:
    """The conditions matched by compute (`match: tokens`, the default); a document-matched one
    (`match: {documents: OTHER}`) reads its partner's documents in fewer or more steps instead."""
    return [c for c in run.conditions if document_partner(run.spec.conditions, c) is None]


def compute_matched(run: Run) -> bool | None:
    """Whether every compute-matched condition and seed trained with the same compute; None until
    every row is there. Document-matched conditions are data-matched and not part of it."""
    first_pre = next((s.name for s in run.spec.stages if s.kind == "pretrain"), None)
    if first_pre is None:
        return None
    conds = token_matched(run)
    rows = [n for c in conds for n in run.training(first_pre, c)]
    if len({(n.condition, n.seed) for n in rows}) < len(conds) * len(run.spec.seeds):
        return None
    return not _mismatched([run.summary[n.id] for n in rows])


def _document_matching(run: Run, rows: list[tuple[str, int, dict]]) -> list[str]:
    """One line per document-matched condition: its partner, whether every seed read exactly the
    partner's documents, and its steps and FLOPs beside the partner's."""
    by = {(c, seed): s for c, seed, s in rows}
    out = []
    for cond in run.conditions:
        partner = document_partner(run.spec.conditions, cond)
        if partner is None:
            continue
        pairs = [(seed, by[(cond, seed)], by[(partner, seed)]) for seed in run.spec.seeds
                 if (cond, seed) in by and (partner, seed) in by]
        same = all(s.get("documents_seen") == p.get("documents_seen") for _, s, p in pairs)
        detail = "; ".join(f"seed {seed}: {_fmt(s.get('documents_seen'))} documents in {_fmt(s.get('steps'))} steps, "
                           f"{_sci(s.get('total_flops'))} FLOPs ({s['total_flops'] / p['total_flops']:.1%} of "
                           f"{partner}'s)" if s.get("total_flops") and p.get("total_flops") else f"seed {seed}: –"
                           for seed, s, p in pairs)
        mark = "✅" if same and pairs else "❌"
        out.append(f"- {mark} {cond} is document-matched (data-matched) to {partner}: "
                   + ("the same documents in the same order, " if same and pairs else
                      "its documents DIFFER from its partner's, ")
                   + f"for as many steps as they take (the last one partial); {detail or 'no finished pair yet'}.")
    return out


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
    conds = token_matched(run)
    matched_rows = [s for c, _, s in rows if c in conds]
    values = {k: {s.get(k) for s in matched_rows} for k in names}
    mismatched = _mismatched(matched_rows)
    which = "conditions" if len(conds) == len(run.conditions) else f"the conditions matched by compute (`match: tokens`: {', '.join(conds)})"
    if mismatched:
        verdict = f"- ❌ {which} are NOT compute-matched: {', '.join(mismatched)} differ (or are not recorded)."
    else:
        (params,), (steps,), (tps,), (tokens,), (flops,) = (values[k] for k in names)
        verdict = (f"- ✅ {which} are compute-matched: the same parameters ({params:,}), steps ({steps:,}), "
                   f"tokens per step ({tps:,}), tokens ({tokens:,}) and FLOPs ({flops:.3e}) in every condition and seed.")
    verdict = "\n".join([verdict, *_document_matching(run, rows)])
    read = [f"{c} seed {seed}: {_fmt(s.get('documents_seen'))} documents, {_fmt(s.get('bytes_seen'))} bytes"
            for c, seed, s in rows]
    reading = ("- Read in those steps (whole documents of one seeded order, shared by the conditions, and their "
               "original UTF-8 bytes): " + "; ".join(read) + ".")
    return lines + ["", verdict, reading] + warnings


def method_lines(run: Run) -> list[str]:
    """What "compute-matched" means here, and what each condition read in its pretraining
    (mean over the seeds that finished): documents, tokens and original UTF-8 bytes."""
    first_pre = next((s.name for s in run.spec.stages if s.kind == "pretrain"), None)
    lines = ["- Compute-matched means: every condition and seed pretrains the same architecture (same parameter "
             "count) for the same optimizer steps on the same number of tokens per step, so the same tokens and "
             "training FLOPs; post-training stages run the same configs. It does not mean the same text: a tokenizer "
             "that writes the same text in fewer tokens reads more documents in those tokens (see the rows below "
             "and Compute matching)."]
    if first_pre is None:
        return lines + ["- (no pretraining stage in this run)"]
    read = []
    for cond in run.conditions:
        sums = [run.summary[n.id] for n in run.training(first_pre, cond)]
        if not sums:
            continue
        def mean(key):
            vals = [s.get(key) for s in sums if isinstance(s.get(key), (int, float))]
            return sum(vals) / len(vals) if vals else None
        docs, toks, nbytes = mean("documents_seen"), mean("tokens_trained"), mean("bytes_seen")
        read.append(f"`{cond}` {_fmt(round(docs) if docs is not None else None)} documents, "
                    f"{_fmt(round(toks) if toks is not None else None)} tokens, "
                    f"{_fmt(round(nbytes) if nbytes is not None else None)} bytes")
    if read:
        lines.append(f"- Read in `{first_pre}` (mean over seeds): " + "; ".join(read) + ".")
    return lines


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


def learn_check(learns: dict, accuracy: dict) -> tuple[list[str], list[str]]:
    """(markdown lines, misses) of the `learns:` figures against {condition: {stage: {metric: mean}}}."""
    if not learns:
        return [], []
    stage, minimum = learns["stage"], learns["minimum"]
    conds = list(accuracy)
    lines = [f"| after {stage} | minimum | " + " | ".join(conds) + " |", "|---|---:|" + "---:|" * len(conds)]
    misses = []
    for key, lo in minimum.items():
        cells = []
        for c in conds:
            v = accuracy.get(c, {}).get(stage, {}).get(key)
            ok = isinstance(v, (int, float)) and v >= lo
            if not ok:
                misses.append(f"{c} {key} {'not evaluated' if v is None else f'{v:.3f}'} < {lo:.2f}")
            cells.append(("–" if v is None else f"{v:.3f}") + (" ✅" if ok else " ❌"))
        lines.append(f"| {key} | {lo:.2f} | " + " | ".join(cells) + " |")
    return lines, misses
