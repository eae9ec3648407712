"""The report's headline, report.json and forest plot, on fake run directories.

The run directories are written by hand in the pipeline's schema (spec.yaml, one manifest per
node with its hash, items.jsonl per evaluation), with effects planted in the items, so the
statistics can be checked against scipy without training a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from domtok.report import write_report
from domtok.rundir import build_nodes, load_spec

CATEGORIES = ("mul_table", "mul_multidigit", "addition")
N_PER_CATEGORY = 80
N_GSM = 120

SPEC = {
    "name": "fake", "seeds": [0, 1, 2], "token_set": "mul",
    "conditions": {"baseline": {"token_set": None}, "mul_tokens": {"token_set": "mul"}},
    "tokenizer": {"base": "gpt2"},
    "prepare": {"source": "synthetic:math-web", "n_docs": 10},
    "stages": [{"name": "pretrain", "kind": "pretrain", "config": {}},
               {"name": "sft", "kind": "sft", "config": {}},
               {"name": "grpo", "kind": "grpo", "config": {}}],
    "evals": {"after": ["sft", "grpo"], "benchmarks": {
        "probes": {"kind": "probes", "categories": list(CATEGORIES)},
        "gsm_synthetic": {"kind": "gsm8k", "data": "synthetic:word_problems"}}},
}


def p_correct(cond: str, stage: str, bench: str, cat: str | None, rung: str | None = None) -> float:
    """The planted truth: mul_tokens is far better on mul_multidigit after both stages (not in
    a ladder's rung `small`); GRPO raises the GSM-style accuracy of the baseline and lowers
    that of mul_tokens; else equal."""
    if bench == "probes":
        helped = cond == "mul_tokens" and rung != "small"
        return {"mul_table": 0.9, "addition": 0.5}.get(cat, 0.75 if helped else 0.35)
    return {("baseline", "sft"): 0.3, ("baseline", "grpo"): 0.5,
            ("mul_tokens", "sft"): 0.3, ("mul_tokens", "grpo"): 0.15}[(cond, stage)]


def _answers(rng, p: float, n: int) -> list[bool]:
    """round(p n) right answers at random positions: every seed has the planted accuracy
    exactly, so the seeds differ in which items they get right, not in how many."""
    right = np.zeros(n, dtype=bool)
    right[rng.permutation(n)[:round(p * n)]] = True
    return [bool(x) for x in right]


def write_fake_run(root: Path, seeds=(0, 1, 2), rng_seed=0, ladder=None, truth=p_correct, **extra) -> Path:
    spec = dict(SPEC, seeds=list(seeds), **extra)
    if ladder:
        spec["ladder"] = ladder
        spec["stages"] = [dict(st) for st in SPEC["stages"]]
        spec["stages"][0]["config"] = {"tokens_per_step": 1024, "warmup_steps": 1}
    run_dir = root / "fake"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    rng = np.random.default_rng(rng_seed)
    for node in build_nodes(load_spec(str(run_dir / "spec.yaml")), run_dir):
        node.out_dir.mkdir(parents=True, exist_ok=True)
        summary: dict = {}
        if node.benchmark is not None:
            kind = spec["evals"]["benchmarks"][node.benchmark]["kind"]
            rows = []
            if kind == "probes":
                for cat in CATEGORIES:
                    p = truth(node.condition, node.stage, "probes", cat, node.rung)
                    rows += [{"id": f"{cat}-{i}", "benchmark": "probes", "category": cat, "correct": c}
                             for i, c in enumerate(_answers(rng, p, N_PER_CATEGORY))]
                metrics = {f"accuracy_{c}": float(np.mean([r["correct"] for r in rows if r["category"] == c]))
                           for c in CATEGORIES}
                metrics["accuracy_all"] = float(np.mean([r["correct"] for r in rows]))
            else:
                p = truth(node.condition, node.stage, "gsm", None)
                rows = [{"id": f"synthetic-test-{i}", "benchmark": "gsm8k", "correct_flexible": c, "correct_strict": c,
                         "correct": c} for i, c in enumerate(_answers(rng, p, N_GSM))]
                metrics = {"accuracy_flexible": float(np.mean([r["correct_flexible"] for r in rows]))}
                metrics["accuracy_strict"] = metrics["accuracy_flexible"]
            (node.out_dir / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            summary = {"benchmark": kind, "n": len(rows), "metrics": metrics}
        (node.out_dir / "manifest.json").write_text(json.dumps(
            {"id": node.id, "hash": node.hash, "kind": node.kind, "stage": node.stage, "condition": node.condition,
             "seed": node.seed, "benchmark": node.benchmark, "summary": summary, "wall_time_s": 1.0}))
    return run_dir


def _items(run_dir: Path, cond: str, seed: int, stage: str, bench: str, field: str, cat: str | None = None) -> dict:
    path = run_dir / cond / f"seed{seed}" / stage / "eval" / bench / "items.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return {r["id"]: float(r[field]) for r in rows if cat is None or r["category"] == cat}


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    run_dir = write_fake_run(tmp_path_factory.mktemp("report"))
    write_report(run_dir)
    return run_dir, json.loads((run_dir / "report.json").read_text()), (run_dir / "report.md").read_text()


def _row(report, metric, stage, bench="probes"):
    return next(r for r in report["headline"] if r["metric"] == metric and r["stage"] == stage and r["benchmark"] == bench)


def test_report_json_schema(fake_run):
    _, report, _ = fake_run
    assert report["seeds"] == [0, 1, 2]
    keys = {"benchmark", "metric", "stage", "condition", "baseline_mean", "domain_mean", "delta", "ci_low",
            "ci_high", "p", "p_holm", "verdict"}
    # every probe category and the GSM-style test, after each evaluated stage
    assert {(r["metric"], r["stage"]) for r in report["headline"]} == \
        {(f"accuracy_{c}", s) for c in CATEGORIES for s in ("sft", "grpo")} | {("accuracy_flexible", s) for s in ("sft", "grpo")}
    for r in report["headline"]:
        assert keys <= set(r) and r["condition"] == "mul_tokens"
        assert r["verdict"] in ("helps", "hurts", "no detectable difference")
        assert r["ci_low"] <= r["delta"] <= r["ci_high"] and r["p"] <= r["p_holm"] <= 1
    acc = report["accuracy"]
    assert set(acc) == {"baseline", "mul_tokens"} and set(acc["baseline"]) == {"sft", "grpo"}
    # mean over seeds of the summaries' metrics
    want = np.mean([np.mean(list(_items(fake_run[0], "mul_tokens", s, "sft", "probes", "correct", "mul_multidigit").values()))
                    for s in (0, 1, 2)])
    assert acc["mul_tokens"]["sft"]["probes.accuracy_mul_multidigit"] == pytest.approx(want)
    assert "probes.accuracy_all" in acc["mul_tokens"]["sft"] and "gsm_synthetic.accuracy_flexible" in acc["baseline"]["grpo"]


def test_planted_effect_is_found_and_null_is_not(fake_run):
    _, report, _ = fake_run
    for stage in ("sft", "grpo"):
        planted = _row(report, "accuracy_mul_multidigit", stage)
        assert planted["verdict"] == "helps" and planted["p_holm"] < 0.05
        assert planted["ci_low"] > 0.2 and planted["delta"] == pytest.approx(0.40, abs=0.08)
        for cat in ("mul_table", "addition"):
            null = _row(report, f"accuracy_{cat}", stage)
            assert null["verdict"] == "no detectable difference" and null["ci_low"] < 0 < null["ci_high"]
    # mul_tokens' GRPO lowered its GSM-style accuracy: a detectable harm after grpo, none after sft
    assert _row(report, "accuracy_flexible", "grpo", "gsm_synthetic")["verdict"] == "hurts"
    assert _row(report, "accuracy_flexible", "sft", "gsm_synthetic")["verdict"] == "no detectable difference"


def test_headline_statistics_match_scipy_and_holm(fake_run):
    """With one seed the headline test is scipy's paired t-test over items; Holm covers every p."""
    from domtok.eval.stats import holm

    run_dir, report, md = fake_run
    ps = [r["p"] for r in report["headline"]] + [g["p"] for g in report["grpo"]]
    table = md.split("## Paired comparison")[1].split("## Compute")[0]
    n_per_seed_rows = sum(ln.startswith(("| probes |", "| gsm_synthetic |")) for ln in table.splitlines())
    # 4 metrics x 2 stages, GRPO in 2 conditions, 2 benchmarks x 2 stages x 3 seeds
    assert report["comparisons"] == len(ps) + n_per_seed_rows == 8 + 2 + 2 * 2 * 3
    # the headline's Holm p is at least the Holm p within its own family and at most m * p
    for r, h in zip(report["headline"], holm(ps)):
        assert h <= r["p_holm"] <= min(1.0, report["comparisons"] * r["p"]) + 1e-12

    one = write_fake_run(run_dir.parent / "one_seed", seeds=(0,))
    write_report(one)
    rep1 = json.loads((one / "report.json").read_text())
    r = _row(rep1, "accuracy_mul_multidigit", "sft")
    a = _items(one, "baseline", 0, "sft", "probes", "correct", "mul_multidigit")
    b = _items(one, "mul_tokens", 0, "sft", "probes", "correct", "mul_multidigit")
    ids = sorted(a)
    ref = stats.ttest_rel([b[i] for i in ids], [a[i] for i in ids])
    ci = ref.confidence_interval(0.95)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert r["delta"] == pytest.approx(np.mean(list(b.values())) - np.mean(list(a.values())))


def test_report_md_opens_with_the_answer(fake_run):
    run_dir, report, md = fake_run
    sections = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert sections[0] == "## Headline"
    head = md.split("## Headline")[1].split("\n## ")[0]
    assert "**Question.**" in head and "`mul_tokens`" in head and "`baseline`" in head
    answer = next(ln for ln in head.splitlines() if ln.startswith("**Answer"))
    assert "helps on accuracy_mul_multidigit" in answer and "hurts on gsm_synthetic" in answer
    assert "no detectable difference on accuracy_mul_table, accuracy_addition" in answer
    # one plain sentence per metric and stage, each with the design's minimum detectable effect
    sentences = [ln for ln in head.splitlines() if ln.startswith("- accuracy_") or ln.startswith("- gsm_synthetic")]
    assert len(sentences) == len(report["headline"])
    assert all("the smallest effect this design detects with 80% power is ±0." in s for s in sentences)
    assert (run_dir / "plots" / "forest.png").stat().st_size > 5000 and "plots/forest.png" in head


def test_report_says_whether_grpo_raised_held_out_accuracy(fake_run):
    run_dir, report, md = fake_run
    g = {r["condition"]: r for r in report["grpo"]}
    assert g["baseline"]["raised"] is True and g["mul_tokens"]["raised"] is False
    assert g["baseline"]["start"] == "sft" and len(g["baseline"]["per_seed"]) == 3
    head = md.split("## Headline")[1].split("\n## ")[0]
    assert "GRPO `grpo` raised held-out accuracy on gsm_synthetic above its `sft` start in baseline" in head
    assert "GRPO `grpo` did NOT raise held-out accuracy on gsm_synthetic above its `sft` start in mul_tokens" in head
    assert "⚠ GRPO did not earn its place" in head
    # ... and for every run
    table = md.split("### Does GRPO raise held-out accuracy?")[1].split("\n## ")[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("| grpo |")]
    assert len(rows) == 6
    for ln in rows:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        cond, seed, start, end = cells[2], int(cells[3]), float(cells[5]), float(cells[6])
        want = np.mean(list(_items(run_dir, cond, seed, "sft", "gsm_synthetic", "correct_flexible").values()))
        assert start == pytest.approx(want, abs=5e-4)
        assert cells[8] == ("yes" if end > start else "NO")


def test_partial_run_reports_what_is_missing(tmp_path):
    run_dir = write_fake_run(tmp_path, seeds=(0, 1))
    for p in (run_dir / "mul_tokens").glob("seed*/grpo/eval/*/manifest.json"):
        p.unlink()  # mul_tokens' GRPO evaluations did not finish
    write_report(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    missing = [r for r in report["headline"] if r["stage"] == "grpo"]
    assert missing and all(r["p"] is None and r["verdict"] is None and r["error"] for r in missing)
    assert all(r["p"] is not None for r in report["headline"] if r["stage"] == "sft")
    md = (run_dir / "report.md").read_text()
    assert "**Answer (after `sft`, 2 seed(s)).**" in md


def test_a_ladder_reports_each_rung(tmp_path):
    """Each rung is its own study: its effects are computed from its own nodes, and Holm runs
    over the comparisons of every rung."""
    ladder = [{"name": "small", "n_layer": 1, "n_head": 1, "n_embd": 8, "tokens": 8192},
              {"name": "big", "n_layer": 1, "n_head": 1, "n_embd": 16, "tokens": 8192}]
    run_dir = write_fake_run(tmp_path, seeds=(0, 1, 2), ladder=ladder)
    write_report(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    rows = {(r["rung"], r["stage"]): r for r in report["headline"] if r["metric"] == "accuracy_mul_multidigit"}
    assert set(rows) == {(rung, stage) for rung in ("small", "big") for stage in ("sft", "grpo")}
    for stage in ("sft", "grpo"):
        assert rows["big", stage]["verdict"] == "helps" and rows["small", stage]["verdict"] == "no detectable difference"
        assert rows["small", stage]["delta"] == pytest.approx(0.0)
    assert report["comparisons"] == 2 * (8 + 2 + 2 * 2 * 3)  # per rung: headline, GRPO, per-seed rows
    assert {g["rung"] for g in report["grpo"]} == {"small", "big"}
    assert "rung-big/probes.accuracy_mul_multidigit" in report["accuracy"]["mul_tokens"]["sft"]
    md = (run_dir / "report.md").read_text()
    assert "**Answer (rung `small`, after `grpo`, 3 seed(s)).**" in md and "**Answer (rung `big`, after `grpo`" in md


def test_a_metric_nobody_learned_is_not_called_a_null_result(tmp_path):
    """0% in both conditions is a broken or untrained model, not 'no detectable difference'."""
    def truth(cond, stage, bench, cat, rung=None):
        return 0.0 if cat == "addition" else p_correct(cond, stage, bench, cat, rung)

    run_dir = write_fake_run(tmp_path, seeds=(0, 1), truth=truth)
    write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    answer = next(ln for ln in md.splitlines() if ln.startswith("**Answer"))
    assert "cannot be compared on accuracy_addition (0 in both)" in answer
    assert "no detectable difference on accuracy_mul_table" in answer and "accuracy_addition," not in answer
    assert "- accuracy_addition after `sft`: no difference to measure: both conditions score 0.000" in md
    row = _row(json.loads((run_dir / "report.json").read_text()), "accuracy_addition", "sft")
    assert row["delta"] == 0 and row["p"] == 1 and row["mde"] is None


def test_the_headline_opens_the_report_before_the_learns_check(tmp_path):
    run_dir = write_fake_run(tmp_path, seeds=(0, 1),
                             learns={"stage": "sft", "minimum": {"probes.accuracy_mul_table": 0.85,
                                                                 "probes.accuracy_mul_multidigit": 0.5}})
    write_report(run_dir)
    sections = [ln for ln in (run_dir / "report.md").read_text().splitlines() if ln.startswith("## ")]
    assert sections[:3] == ["## Headline", "## Do the models learn what is tested? (mean over seeds after `sft`)",
                            "## Losses"]
    assert "baseline probes.accuracy_mul_multidigit 0.350 < 0.50" in (run_dir / "report.md").read_text()


def test_an_mde_beyond_the_range_of_an_accuracy_difference_says_nothing_is_detectable():
    from domtok.report.compare import _mde_text

    assert _mde_text({"mde": 0.073}) == "±0.073"
    text = _mde_text({"mde": 2.418})  # 3 seeds that disagree: df 2 at Holm's strictest level
    assert text.startswith("none: even a difference of 1 would be missed") and "±2.42" in text
