"""The report's "Mechanism" section: where a difference between conditions sits.

1. Token use: per evaluated stage, benchmark and condition, every answer (item x seed) sorted
   by whether the response used a token of the condition's set and whether it was right.
   Descriptive: no test.
2. Per template (GSM-style items that carry `template` and `has_mul`): each headline
   condition − the baseline per template, and pooled over the templates with and without a
   multiplication. The templates without one are the negative control: the domain tokens
   cannot help there, so a difference there is not their doing.
3. The controls (`tiny-controls`): "atomic facts or more text?" in two comparisons, mul
   vs the document-matched arm (what the extra text read in the same compute is worth) and
   the document-matched arm vs its partner (the facts on the same documents, in fewer
   FLOPs); "facts or compression?" in two too, mul vs the compression-matched control set and
   the control set vs the baseline (the shrinkage alone), at equal compute. For every
   comparison the report makes, whether its two conditions are compute-matched (same steps
   and tokens per step) and data-matched (the same documents read), from the pretraining
   summaries.

Tests 2 and 3 use `seed_item_test` (the headline's seed-honest test). The control pairs on the
spec's primary endpoint answer the control questions: a Holm family of their own, with
verdicts. The section's other tests are one Holm family: they are secondary to the headline.
A pretrained model's or an own-notation score is descriptive here as in the headline.
"""

from __future__ import annotations

from domtok.report.compare import (EQUIVALENT, HELPS, HURTS, UNDECIDED, _by_seed, _ci_text, _family, _floor,
                                   _p_text, _primary_metric, _signed, decide_family, main_metrics)
from domtok.report.run import ALPHA, HEADLINE, Run, _fmt
from domtok.rundir import CONTROL_SET, document_partner


# The questions the controls answer (report.md and report.json's `question`).
MORE_TEXT = "atomic facts or more text? (the extra text read in the same compute)"
SAME_TEXT = "atomic facts or more text? (the facts on the same documents, in fewer FLOPs)"
COMPRESSION = "facts or compression? (the facts against as much shrinkage, at equal compute)"
COMPRESSION_ALONE = "facts or compression? (the shrinkage alone, at equal compute)"


def _field(run: Run, bench: str) -> str:
    return HEADLINE.get(run.spec.benchmarks[bench]["kind"], (None, "correct"))[1]


def _generative(run: Run) -> list[str]:
    return [b for b, v in run.spec.benchmarks.items() if v["kind"] in ("gsm8k", "probes")]


# --------------------------------------------------------------------------- 1. token use

def usage(run: Run) -> list[dict]:
    """Per (stage, benchmark, condition): answers by token use (`domain_tokens` > 0) and correctness."""
    out = []
    for stage in run.spec.evals_after:
        for bench in _generative(run):
            field = _field(run, bench)
            for cond in run.conditions:
                nodes = run.evals(stage, cond, bench)
                rows = [r for n in nodes for r in run.items(n) if field in r]
                if not rows:
                    continue
                used = [bool(r.get("domain_tokens", 0)) for r in rows]
                right = [bool(r[field]) for r in rows]
                cell = {(u, k): sum(1 for a, b in zip(used, right) if (a, b) == (u, k)) for u in (True, False)
                        for k in (True, False)}
                out.append({"stage": stage, "benchmark": bench, "condition": cond, "seeds": len(nodes),
                            "answers": len(rows), "used_right": cell[(True, True)], "used_wrong": cell[(True, False)],
                            "unused_right": cell[(False, True)], "unused_wrong": cell[(False, False)],
                            "answer_from_token": sum(1 for r in rows if r.get("answer_from_token"))})
    return out


def _rate(right: int, wrong: int) -> str:
    return f"{right / (right + wrong):.3f}" if right + wrong else "–"


def usage_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no generative evaluation has finished yet)"]
    lines = ["| stage | benchmark | condition | answers (items × seeds) | used a token: right / wrong | "
             "accuracy with | no token: right / wrong | accuracy without | answer read from a token |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['benchmark']} | {r['condition']} | {r['answers']:,} | "
                     f"{r['used_right']} / {r['used_wrong']} | {_rate(r['used_right'], r['used_wrong'])} | "
                     f"{r['unused_right']} / {r['unused_wrong']} | {_rate(r['unused_right'], r['unused_wrong'])} | "
                     f"{r['answer_from_token']} |")
    return lines


# --------------------------------------------------------------------------- tests

def _group_test(run: Run, a_nodes: dict, b_nodes: dict, field: str, keep, category: str | None = None) -> dict:
    """seed_item_test of b − a on the items `keep(row)` selects; {"error"} when it cannot be made.
    With one seed, items are clustered by template (items of one template are not independent)."""
    from domtok.eval.stats import seed_item_test

    seeds = [s for s in run.spec.seeds if s in a_nodes and s in b_nodes]
    if not seeds:
        return {"error": "not evaluated in both", "seeds": []}

    def values(node):
        return {r["id"]: r[field] for r in run.items(node) if "id" in r and field in r and keep(r)
                and (category is None or r.get("category") == category)}

    a, b = [values(a_nodes[s]) for s in seeds], [values(b_nodes[s]) for s in seeds]
    if not all(a) or not all(b):
        return {"error": "no such items", "seeds": seeds}
    clusters = {r["id"]: r["template"] for r in run.items(a_nodes[seeds[0]]) if "template" in r} or None
    try:
        r = seed_item_test(b, a, alpha=ALPHA, clusters=clusters)
    except ValueError as e:
        return {"error": f"items differ between the runs compared ({e})", "seeds": seeds}
    r["a_mean"], r["b_mean"] = r["b_mean"], r["a_mean"]  # a: the reference, b: the other (delta = b − a)
    return {**r, "seeds": seeds}


def templates(run: Run) -> list[dict]:
    """Each condition − baseline per template and pooled by `has_mul`, on GSM-style items with templates."""
    out = []
    if run.baseline is None:
        return out
    for bench, b in run.spec.benchmarks.items():
        if b["kind"] != "gsm8k":
            continue
        field = _field(run, bench)
        for stage in run.spec.evals_after:
            base = _by_seed(run, stage, run.baseline, bench)
            rows = [r for n in base.values() for r in run.items(n)]
            kinds = {r["template"]: bool(r.get("has_mul")) for r in rows if "template" in r}
            if not kinds:
                continue
            groups = [(f"template `{t}`", kinds[t], lambda r, t=t: r.get("template") == t) for t in sorted(kinds)]
            groups += [("all templates with a multiplication", True, lambda r: r.get("has_mul") is True),
                       ("all templates without one (negative control)", False, lambda r: r.get("has_mul") is False)]
            for cond in run.domain:
                dom = _by_seed(run, stage, cond, bench)
                fam = _family(run, bench, "accuracy_flexible", stage, None)
                if fam["family"] == "primary":  # a template is part of the primary endpoint, not the endpoint
                    fam = {"family": "detail", "reason": None}
                for name, has_mul, keep in groups:
                    r = _group_test(run, base, dom, field, keep)
                    out.append({"benchmark": bench, "stage": stage, "condition": cond, "reference": run.baseline,
                                "group": name, "has_mul": has_mul, **fam, **r})
    return out


def control_pairs(run: Run) -> list[tuple[str, str, str]]:
    """(reference, condition, question) of each control comparison the spec allows.

    A document-matched arm D of a fact condition F (the same token set; D reads the documents
    F's partner reads) splits "atomic facts or more text?" in two: F − D is what the extra
    text F reads in the same compute is worth, and D − partner is the facts on the same
    documents (in fewer steps and FLOPs). A `control` condition C splits "facts or
    compression?" in two: F − C, the facts against tokens that shrink the text as much, and
    C − baseline, the shrinkage alone; both at equal compute."""
    conds = run.spec.conditions
    pairs = []
    for d, v in conds.items():
        partner = document_partner(conds, d)
        if partner is None:
            continue
        pairs += [(d, x, MORE_TEXT) for x in run.facts if conds[x].get("token_set") == v.get("token_set") and x != d]
        pairs.append((partner, d, SAME_TEXT))
    for c, v in conds.items():
        if v.get("token_set") == CONTROL_SET:
            pairs += [(c, x, COMPRESSION) for x in run.facts]
            if run.baseline is not None:
                pairs.append((run.baseline, c, COMPRESSION_ALONE))
    return pairs


def controls(run: Run) -> list[dict]:
    """Each control pair on every headline metric and evaluated stage (and the primary endpoint
    when the headline lists no such metric); `primary` marks the spec's primary endpoint, and
    `family` is the headline's rule (`compare._family`): a pretrained model's or an
    own-notation score is descriptive here too."""
    out = []
    prim = getattr(run.spec, "primary", None) or {}
    main = main_metrics(run)
    for ref, cond, question in control_pairs(run):
        for stage in run.spec.evals_after:
            for bench, metric, field, cat in main + [m for m in _primary_metric(run, stage) if m not in main]:
                r = _group_test(run, _by_seed(run, stage, ref, bench), _by_seed(run, stage, cond, bench), field,
                                lambda _: True, category=cat)
                primary = (prim.get("benchmark"), prim.get("metric"), prim.get("stage")) == (bench, metric, stage)
                out.append({"benchmark": bench, "metric": metric, "stage": stage, "condition": cond, "reference": ref,
                            "question": question, "primary": primary, **_family(run, bench, metric, stage, cat), **r})
    return out


def matching(run: Run) -> list[dict]:
    """For each comparison the report makes (headline pairs and control pairs): compute-matched
    (same steps and tokens per step in every seed) and data-matched (same documents read)."""
    pre = next((s.name for s in run.spec.stages if s.kind == "pretrain"), None)
    pairs = [(run.baseline, c, "headline") for c in run.domain if run.baseline]
    pairs += control_pairs(run)
    out = []
    for a, b, question in pairs:
        sa = {n.seed: run.summary[n.id] for n in run.training(pre, a)} if pre else {}
        sb = {n.seed: run.summary[n.id] for n in run.training(pre, b)} if pre else {}
        seeds = [s for s in run.spec.seeds if s in sa and s in sb]
        if not seeds:
            out.append({"reference": a, "condition": b, "question": question, "seeds": []})
            continue
        same = lambda *keys: all(sa[s].get(k) == sb[s].get(k) for s in seeds for k in keys)  # noqa: E731
        ratio = [sb[s]["total_flops"] / sa[s]["total_flops"] for s in seeds
                 if sa[s].get("total_flops") and sb[s].get("total_flops")]
        docs = [sb[s].get("documents_seen", 0) - sa[s].get("documents_seen", 0) for s in seeds]
        out.append({"reference": a, "condition": b, "question": question, "seeds": seeds,
                    "compute_matched": same("steps", "tokens_per_step", "params"),
                    "data_matched": same("documents_seen"), "flops_ratio": sum(ratio) / len(ratio) if ratio else None,
                    "extra_documents": sum(docs) / len(docs)})
    return out


def mechanism(run: Run) -> dict:
    """Every figure of the section (report.json's `mechanism`).

    The control pairs on the spec's primary endpoint are the answers to the control questions:
    one Holm family of their own (`family: "answer"`), each with a verdict as the primary's
    (helps / hurts: the condition scores better / worse than its reference; equivalent within
    the primary's margin by TOST; else undecided). Every other test of the section (the control
    pairs on the other metrics, the per-template effects) is one Holm family (`detail`)."""
    from domtok.eval.stats import holm, tost

    data = {"usage": usage(run), "templates": templates(run), "controls": controls(run), "matching": matching(run)}
    tested = [r for key in ("templates", "controls") for r in data[key] if "p" in r]
    answers = [r for r in tested if r.get("primary")]
    detail = [r for r in tested if not r.get("primary") and r.get("family") != "descriptive"]
    margin = (getattr(run.spec, "primary", None) or {}).get("margin")
    for r in answers:  # the primary endpoint's rows: its units, its margin
        r.update(family="answer", p_tost=tost(r["delta"], r["se"], r["df"], margin, ALPHA)["p"] if margin else None)
    decide_family(answers)
    for r, ph in zip(detail, holm([r["p"] for r in detail])):
        r.update(family="detail", p_holm=ph)
    data["m"], data["m_answers"] = len(detail), len(answers)
    return data


# What an answer's verdict says about its question, in words that claim no more than the test.
MEANING = {
    MORE_TEXT: {HELPS: "the extra text read in the same compute (and the steps that read it) raises the score: "
                       "part of a compute-matched difference can come from more text",
                HURTS: "the extra text read in the same compute lowers the score",
                EQUIVALENT: "the extra text is worth less than the margin: more text does not explain a "
                            "compute-matched difference larger than the margin",
                UNDECIDED: "this study cannot say what the extra text is worth"},
    SAME_TEXT: {HELPS: "on the same documents, in fewer FLOPs, the facts score better: the gain does not need "
                       "more text",
                HURTS: "on the same documents, in fewer FLOPs, the facts score worse",
                EQUIVALENT: "on the same documents the facts change the score by less than the margin",
                UNDECIDED: "this study cannot say what the facts do on the same documents"},
    COMPRESSION: {HELPS: "the facts beat 45 tokens that shrink the text as much: the difference is not compression "
                         "alone",
                  HURTS: "45 tokens that shrink the text as much score better than the facts",
                  EQUIVALENT: "facts and compression are equivalent within the margin: any 45 tokens that shrink "
                              "the text as much do as well",
                  UNDECIDED: "this study cannot tell the facts from compression"},
    COMPRESSION_ALONE: {HELPS: "45 tokens that shrink the text as much as the facts do, without any fact, score "
                               "better than the baseline: shrinkage alone helps",
                        HURTS: "45 tokens that shrink the text as much as the facts do, without any fact, score "
                               "worse than the baseline",
                        EQUIVALENT: "the shrinkage alone changes the score by less than the margin",
                        UNDECIDED: "this study cannot say what the shrinkage alone does"},
}


# --------------------------------------------------------------------------- report.md

def _test_cells(r: dict) -> str:
    if "p" not in r:
        return f"– | – | – | – | – | {r['error']}"
    if r.get("family") == "descriptive":
        verdict, r = "descriptive", {**r, "p_holm": None}
    elif _floor(r) is not None:
        verdict = f"nothing to test ({_floor(r):.0f} in both)"
    else:
        verdict = r.get("verdict") or ("undecided" if not r["p_holm"] < ALPHA
                                       else "higher" if r["delta"] > 0 else "lower")
    return (f"{r['a_mean']:.3f} | {r['b_mean']:.3f} | {_signed(r['delta'])} | {_ci_text(r)} | "
            f"{_p_text(r['p_holm'])} | {verdict}")


def _matching_lines(rows: list[dict]) -> list[str]:
    lines = ["| comparison | answers | compute-matched (steps, tokens/step) | data-matched (documents read) | "
             "FLOPs ratio | extra documents read |", "|---|---|---|---|---:|---:|"]
    for r in rows:
        if not r["seeds"]:
            lines.append(f"| {r['condition']} vs {r['reference']} | {r['question']} | – | – | – | – |")
            continue
        yes = {True: "yes", False: "no"}
        lines.append(f"| {r['condition']} vs {r['reference']} | {r['question']} | {yes[r['compute_matched']]} | "
                     f"{yes[r['data_matched']]} | {_fmt(r['flops_ratio'], 3)} | {r['extra_documents']:+,.0f} |")
    return lines


def mechanism_section(run: Run, h: str = "##") -> list[str]:
    """report.md's Mechanism section (see the module docstring)."""
    data = mechanism(run)
    lines = [f"{h}# Token use and correctness", "",
             "Every answer (item × seed) by whether the response used a token of its condition's set "
             "(a fact token, or a control token for a control set) and whether it was right; descriptive.", "",
             *usage_lines(data["usage"]), ""]
    lines += [f"{h}# Which comparison is matched how", "",
              "From the pretraining summaries, every seed: compute-matched = the same parameters, steps and "
              "tokens per step; data-matched = the same number of documents read (in one shared order, so the "
              "same documents).", "", *_matching_lines(data["matching"]), ""]
    if data["controls"]:
        lines += [f"{h}# Controls", ""]
        answers = [r for r in data["controls"] if r["primary"]]
        if answers:
            lines += [f"The answers: each control comparison on the primary endpoint ({answers[0]['benchmark']} "
                      f"{answers[0]['metric']} after `{answers[0]['stage']}`), Holm over these "
                      f"{data['m_answers']} tests (α = 0.05; equivalence by TOST within the primary's margin).", ""]
        for r in answers:
            if "p" not in r:
                lines.append(f"- {r['question']} {r['condition']} − {r['reference']}: no test ({r['error']}).")
                continue
            lines.append(f"- {r['question']} {r['condition']} − {r['reference']} = {_signed(r['delta'])}, 95% CI "
                         f"{_ci_text(r)}, p {_p_text(r['p'])}, Holm p {_p_text(r['p_holm'])} ({len(r['seeds'])} "
                         f"seed(s), {r['method']}): **{r['verdict']}**: {MEANING[r['question']][r['verdict']]}.")
        lines += [""] * bool(answers) + ["Every control comparison on each headline metric (Δ = condition − reference, "
                  f"`seed_item_test`; the primary endpoint's rows are the answers above; the others are Holm over this "
                  f"section's m = {data['m']} tests with the per-template rows; rows marked descriptive, a pretrained "
                  "model's or an own-notation score, are in no family).", "",
                  "| question | condition − reference | metric | stage | reference | condition | Δ | 95% CI | Holm p | "
                  "verdict |", "|---|---|---|---|---:|---:|---:|---|---:|---|"]
        lines += [f"| {r['question']} | {r['condition']} − {r['reference']} | "
                  f"{r['metric'] if r['metric'] != 'accuracy_flexible' else r['benchmark']}{' (primary)' * r['primary']} "
                  f"| {r['stage']} | {_test_cells(r)} |" for r in data["controls"]]
        lines.append("")
    lines += [f"{h}# Per template (GSM-style items)", ""]
    if data["templates"]:
        lines += ["The templates without a multiplication are the negative control: a difference there is not the "
                  f"domain tokens' doing. Holm over this section's m = {data['m']} tests (higher / lower: the Holm p is "
                  "below 0.05; undecided: it is not; pretrained models' rows are descriptive).", "",
                  "| benchmark | stage | condition − baseline | items | has a multiplication | baseline | condition | Δ | "
                  "95% CI | Holm p | verdict |", "|---|---|---|---|---|---:|---:|---:|---|---:|---|"]
        lines += [f"| {r['benchmark']} | {r['stage']} | {r['condition']} | {r['group']} | "
                  f"{'yes' if r['has_mul'] else 'no'} | {_test_cells(r)} |" for r in data["templates"]]
    else:
        lines.append("(no evaluated GSM-style item carries a `template`: the per-template table needs the "
                     "synthetic word problems' template ids)")
    return lines
