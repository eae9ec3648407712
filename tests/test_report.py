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
    "primary": {"benchmark": "gsm_synthetic", "metric": "accuracy_flexible", "stage": "grpo", "margin": 0.05},
}


def p_correct(cond: str, stage: str, bench: str, cat: str | None, rung: str | None = None) -> float:
    """The planted truth: mul_tokens is far better on mul_multidigit after both stages (not in
    a ladder's rung `small`); GRPO raises the GSM-style accuracy of the baseline and lowers
    that of mul_tokens; else equal."""
    if bench == "probes":
        helped = cond == "mul_tokens" and rung != "small"
        return {"mul_table": 0.9, "addition": 0.5}.get(cat, 0.75 if helped else 0.35)
    return {("baseline", "pretrain"): 0.05, ("baseline", "sft"): 0.3, ("baseline", "grpo"): 0.5,
            ("mul_tokens", "pretrain"): 0.05, ("mul_tokens", "sft"): 0.3, ("mul_tokens", "grpo"): 0.15}[(cond, stage)]


def _answers(rng, p: float, n: int) -> list[bool]:
    """round(p n) right answers at random positions: every seed has the planted accuracy
    exactly, so the seeds differ in which items they get right, not in how many."""
    right = np.zeros(n, dtype=bool)
    right[rng.permutation(n)[:round(p * n)]] = True
    return [bool(x) for x in right]


def write_fake_run(root: Path, seeds=(0, 1, 2), rng_seed=0, ladder=None, truth=p_correct, gsm_shift=None,
                   **extra) -> Path:
    """A finished run dir with planted accuracies; `gsm_shift`: {(condition, stage, seed): x}
    added to the GSM-style accuracy of that model, so seeds can differ."""
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
                p = truth(node.condition, node.stage, "gsm", None) + (gsm_shift or {}).get(
                    (node.condition, node.stage, node.seed), 0.0)
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
            "ci_high", "p", "p_holm", "verdict", "family", "per_seed_deltas", "seeds"}
    # every probe category and the GSM-style test, after each evaluated stage
    assert {(r["metric"], r["stage"]) for r in report["headline"]} == \
        {(f"accuracy_{c}", s) for c in CATEGORIES for s in ("sft", "grpo")} | {("accuracy_flexible", s) for s in ("sft", "grpo")}
    for r in report["headline"]:
        assert keys <= set(r) and r["condition"] == "mul_tokens"
        assert r["verdict"] in ("helps", "hurts", "equivalent", "undecided")
        assert r["ci_low"] <= r["delta"] <= r["ci_high"] and r["p"] <= r["p_holm"] <= 1
        assert r["family"] == ("primary" if (r["metric"], r["stage"]) == ("accuracy_flexible", "grpo") else "secondary")
    assert {"benchmark", "metric", "stage", "delta", "ci_low", "ci_high", "p", "margin", "verdict", "n_seeds",
            "per_seed_deltas", "seeds_needed"} <= set(report["primary"])
    assert {"commit", "dirty", "domtok", "torch", "python", "device", "cpu", "threads", "wall_seconds"} <= \
        set(report["provenance"])
    assert report["calibration"] and {"delta", "ci_low", "ci_high", "p", "verdict"} <= set(report["calibration"][0])
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
            # the planted accuracies are equal in every seed: the 90% CI is inside ±0.05
            assert null["verdict"] == "equivalent" and null["ci_low"] < 0 < null["ci_high"]
    # mul_tokens' GRPO lowered its GSM-style accuracy: the primary endpoint (after grpo) says hurts
    assert _row(report, "accuracy_flexible", "grpo", "gsm_synthetic")["verdict"] == "hurts"
    assert report["primary"]["verdict"] == "hurts" and report["primary"]["delta"] == pytest.approx(0.15 - 0.5)
    assert _row(report, "accuracy_flexible", "sft", "gsm_synthetic")["verdict"] == "equivalent"


def test_families_holm_and_the_one_seed_test_match_scipy(fake_run):
    """Holm runs over the secondary family only (headline rows but the primary, and the GRPO
    checks); the per-seed McNemar rows are in no family; with one seed the test is scipy's
    paired t-test over items and decides nothing."""
    from domtok.eval.stats import holm

    run_dir, report, md = fake_run
    secondary = [r for r in report["headline"] if r["family"] == "secondary"] + report["grpo"]
    assert report["comparisons"] == len(secondary) == 7 + 2
    for r, h in zip(secondary, holm([r["p"] for r in secondary])):
        assert r["p_holm"] == pytest.approx(h, rel=1e-12)
    primary = _row(report, "accuracy_flexible", "grpo", "gsm_synthetic")
    assert primary["p_holm"] == primary["p"] == report["primary"]["p"]  # tested alone
    table = md.split("## Paired comparison")[1].split("## Compute")[0]
    assert "Holm" not in table and "p (descriptive)" in table

    one = write_fake_run(run_dir.parent / "one_seed", seeds=(0,))
    write_report(one)
    rep1 = json.loads((one / "report.json").read_text())
    r = _row(rep1, "accuracy_mul_multidigit", "sft")
    a = _items(one, "baseline", 0, "sft", "probes", "correct", "mul_multidigit")
    b = _items(one, "mul_tokens", 0, "sft", "probes", "correct", "mul_multidigit")
    ids = sorted(a)
    ref = stats.ttest_rel([b[i] for i in ids], [a[i] for i in ids])
    ci = ref.confidence_interval(0.95)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-9) and r["p"] < 1e-6
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert r["delta"] == pytest.approx(np.mean(list(b.values())) - np.mean(list(a.values())))
    assert r["verdict"] == "undecided" and rep1["primary"]["verdict"] == "undecided"
    assert "one seed compares two networks" in (one / "report.md").read_text()


def test_report_md_opens_with_the_answer(fake_run):
    run_dir, report, md = fake_run
    lines = md.splitlines()
    assert lines[0] == "# domtok report: fake" and lines[2].startswith("**Question.**")
    assert lines[4].startswith("**Answer.** Primary endpoint, gsm_synthetic accuracy_flexible after `grpo`, tested alone")
    assert "`mul_tokens` hurts (95% CI [" in lines[4] and "per seed s0 -0.350, s1 -0.350, s2 -0.350" in lines[4]
    assert lines[6] == "![per-seed deltas of the primary endpoint](plots/primary.png)"
    assert (run_dir / "plots" / "primary.png").stat().st_size > 5000
    sections = [ln for ln in lines if ln.startswith("## ")]
    assert sections[:2] == ["## Calibration: the same test on noise alone", "## Headline"]
    head = md.split("## Headline")[1].split("\n## ")[0]
    answer = next(ln for ln in head.splitlines() if ln.startswith("**Secondary"))
    assert answer.startswith("**Secondary (after `grpo`, 3 seed(s)).** `mul_tokens` helps on accuracy_mul_multidigit")
    assert "is equivalent within ±0.050 on accuracy_mul_table, accuracy_addition" in answer
    # one plain sentence per secondary metric and stage, each with the design's minimum detectable effect
    sentences = [ln for ln in head.splitlines() if ln.startswith("- accuracy_") or ln.startswith("- gsm_synthetic")]
    assert len(sentences) == len(report["headline"]) - 1
    assert all("the smallest effect this design detects with 80% power is ±0." in s for s in sentences)
    assert (run_dir / "plots" / "forest.png").stat().st_size > 5000 and "plots/forest.png" in head
    method = md.split("## Method")[1].split("\n## ")[0]
    assert "Compute-matched means" in method and "reads more documents" in method


def test_report_says_whether_grpo_raised_held_out_accuracy(fake_run):
    run_dir, report, md = fake_run
    g = {r["condition"]: r for r in report["grpo"]}
    assert g["baseline"]["raised"] is True and g["mul_tokens"]["raised"] is False
    assert g["baseline"]["verdict"] == "helps" and g["mul_tokens"]["verdict"] == "hurts"
    assert g["baseline"]["start"] == "sft" and len(g["baseline"]["per_seed"]) == 3
    head = md.split("## Headline")[1].split("\n## ")[0]
    assert "GRPO `grpo` raised held-out accuracy on gsm_synthetic relative to its `sft` start in baseline" in head
    assert "GRPO `grpo` lowered held-out accuracy on gsm_synthetic relative to its `sft` start in mul_tokens" in head
    assert "⚠ GRPO is not shown to raise held-out accuracy in every condition" in head
    # ... and for every run
    table = md.split("### Does GRPO raise held-out accuracy?")[1].split("\n## ")[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("| grpo |")]
    assert len(rows) == 6
    for ln in rows:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        cond, seed, start, end = cells[2], int(cells[3]), float(cells[5]), float(cells[6])
        want = np.mean(list(_items(run_dir, cond, seed, "sft", "gsm_synthetic", "correct_flexible").values()))
        assert start == pytest.approx(want, abs=5e-4)
        assert cells[8] == ("yes" if end > start else "no")


def test_an_undecided_primary_says_how_many_seeds_a_decision_takes(tmp_path):
    from domtok.eval.stats import sd_interval, seeds_for_power
    from domtok.report import primary_deltas

    # mul_tokens' GRPO ends near the baseline's 0.5, differently in each seed
    shift = {("mul_tokens", "grpo", 0): 0.35 + 0.05, ("mul_tokens", "grpo", 1): 0.35 - 0.025,
             ("mul_tokens", "grpo", 2): 0.35}
    run_dir = write_fake_run(tmp_path, gsm_shift=shift)
    write_report(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    pr = report["primary"]
    want = [np.mean(list(_items(run_dir, "mul_tokens", s, "grpo", "gsm_synthetic", "correct_flexible").values()))
            - np.mean(list(_items(run_dir, "baseline", s, "grpo", "gsm_synthetic", "correct_flexible").values()))
            for s in (0, 1, 2)]
    assert pr["per_seed_deltas"] == pytest.approx(want) and primary_deltas(run_dir) == pytest.approx(want)
    ref = stats.ttest_1samp(want, 0.0)
    assert pr["p"] == pytest.approx(ref.pvalue, rel=1e-9) and pr["verdict"] == "undecided"
    sd = float(np.std(want, ddof=1))
    need = pr["seeds_needed"]
    assert need["sd"] == pytest.approx(sd) and need["sd_ci95"] == pytest.approx(list(sd_interval(sd, 2)))
    assert need["difference"]["at_sd"] == seeds_for_power(sd, 0.05)
    assert need["equivalence"]["range"] == [seeds_for_power(sd_interval(sd, 2)[0], 0.05, equivalence=True),
                                            seeds_for_power(sd_interval(sd, 2)[1], 0.05, equivalence=True)]
    md = (run_dir / "report.md").read_text()
    assert "undecided: the 95% CI [" in md and "A decision at 80% power would take about" in md
    assert f"its 95% interval is [{need['sd_ci95'][0]:.3f}, {need['sd_ci95'][1]:.3f}]" in md


def test_an_equivalent_primary(tmp_path):
    shift = {("mul_tokens", "grpo", s): 0.35 + x for s, x in zip((0, 1, 2, 3), (0.0083, -0.0083, 0.0, 0.0083))}
    run_dir = write_fake_run(tmp_path, seeds=(0, 1, 2, 3), gsm_shift=shift)
    write_report(run_dir)
    pr = json.loads((run_dir / "report.json").read_text())["primary"]
    assert pr["verdict"] == "equivalent" and -0.05 < pr["ci90_low"] < pr["ci90_high"] < 0.05
    assert pr["ci_low"] < 0 < pr["ci_high"] and pr["p_tost"] < 0.05
    assert "equivalent within ±0.050: the 90% CI [" in (run_dir / "report.md").read_text()


def test_calibration_compares_seed_halves_of_one_condition(tmp_path):
    run_dir = write_fake_run(tmp_path, seeds=(0, 1, 2, 3))
    write_report(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    rows = {r["condition"]: r for r in report["calibration"]}
    assert set(rows) == {"baseline", "mul_tokens"}
    assert rows["baseline"]["seeds_a"] == [0, 1] and rows["baseline"]["seeds_b"] == [2, 3]
    assert rows["baseline"]["method"].startswith("paired t-test on the 2 per-seed deltas")
    a = [np.mean(list(_items(run_dir, "baseline", s, "grpo", "gsm_synthetic", "correct_flexible").values()))
         for s in range(4)]
    assert rows["baseline"]["per_seed_deltas"] == pytest.approx([a[2] - a[0], a[3] - a[1]])
    md = (run_dir / "report.md").read_text()
    assert "every difference here is noise" in md


def test_provenance_comes_from_the_nodes(tmp_path):
    import subprocess

    from domtok import provenance

    here = provenance.collect()
    assert set(here) == {"commit", "dirty", "domtok", "torch", "python", "device", "cpu", "threads"}
    src = Path(provenance.__file__).parent
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert here["commit"] == head.stdout.strip() and isinstance(here["dirty"], bool)
    run_dir = write_fake_run(tmp_path, seeds=(0,))
    for i, m in enumerate(sorted(run_dir.rglob("manifest.json"))):
        data = json.loads(m.read_text())
        data["provenance"] = {**here, "dirty": i == 3}
        m.write_text(json.dumps(data))
    write_report(run_dir)
    prov = json.loads((run_dir / "report.json").read_text())["provenance"]
    assert prov["commit"] == here["commit"] and prov["torch"] == here["torch"] and prov["dirty"] is True
    assert prov["wall_seconds"] == pytest.approx(1.0 * len(list(run_dir.rglob("manifest.json"))))


@pytest.mark.parametrize("primary, message", [
    ({"benchmark": "nope", "metric": "accuracy_flexible", "stage": "grpo", "margin": 0.05}, "not an enabled benchmark"),
    ({"benchmark": "gsm_synthetic", "metric": "accuracy_mul_table", "stage": "grpo", "margin": 0.05}, "per-item accuracies"),
    ({"benchmark": "probes", "metric": "accuracy_symbolic", "stage": "grpo", "margin": 0.05}, "per-item accuracies"),
    ({"benchmark": "gsm_synthetic", "metric": "accuracy_flexible", "stage": "pretrain", "margin": 0.05}, "not evaluated"),
    ({"benchmark": "gsm_synthetic", "metric": "accuracy_flexible", "stage": "grpo", "margin": 0}, "between 0 and 1"),
    ({"benchmark": "gsm_synthetic", "metric": "accuracy_flexible", "stage": "grpo", "margin": True}, "between 0 and 1"),
    ({"benchmark": "gsm_synthetic", "metric": "accuracy_flexible", "stage": "grpo"}, "give exactly"),
])
def test_primary_spec_is_validated(tmp_path, primary, message):
    from domtok.errors import DomtokError

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(dict(SPEC, primary=primary)))
    with pytest.raises(DomtokError, match=message):
        load_spec(str(path))
    assert load_spec("tiny").primary == {"benchmark": "gsm_synthetic", "metric": "accuracy_flexible", "stage": "grpo",
                                         "margin": 0.05}
    ok = dict(SPEC, primary={"benchmark": "probes", "metric": "accuracy_addition", "stage": "sft", "margin": 0.1})
    path.write_text(yaml.safe_dump(ok))
    assert load_spec(str(path)).primary["metric"] == "accuracy_addition"


def test_partial_run_reports_what_is_missing(tmp_path):
    run_dir = write_fake_run(tmp_path, seeds=(0, 1))
    for p in (run_dir / "mul_tokens").glob("seed*/grpo/eval/*/manifest.json"):
        p.unlink()  # mul_tokens' GRPO evaluations did not finish
    write_report(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    missing = [r for r in report["headline"] if r["stage"] == "grpo"]
    assert missing and all(r["p"] is None and r["verdict"] is None and r["error"] for r in missing)
    assert all(r["p"] is not None for r in report["headline"] if r["stage"] == "sft")
    assert report["primary"] is None
    md = (run_dir / "report.md").read_text()
    assert "**Secondary (after `sft`, 2 seed(s)).**" in md
    assert "**Answer.** None yet: the primary endpoint, gsm_synthetic accuracy_flexible after `grpo`" in md


def test_a_ladder_reports_each_rung(tmp_path):
    """Each rung is its own study: its effects are computed from its own nodes, and Holm runs
    over the secondary comparisons of every rung."""
    ladder = [{"name": "small", "n_layer": 1, "n_head": 1, "n_embd": 8, "tokens": 8192},
              {"name": "big", "n_layer": 1, "n_head": 1, "n_embd": 16, "tokens": 8192}]
    run_dir = write_fake_run(tmp_path, seeds=(0, 1, 2), ladder=ladder)
    write_report(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    rows = {(r["rung"], r["stage"]): r for r in report["headline"] if r["metric"] == "accuracy_mul_multidigit"}
    assert set(rows) == {(rung, stage) for rung in ("small", "big") for stage in ("sft", "grpo")}
    for stage in ("sft", "grpo"):
        assert rows["big", stage]["verdict"] == "helps" and rows["small", stage]["verdict"] != "helps"
        assert rows["small", stage]["delta"] == pytest.approx(0.0)
    assert report["comparisons"] == 2 * (7 + 2)  # per rung: secondary headline rows, GRPO
    assert {g["rung"] for g in report["grpo"]} == {"small", "big"}
    assert report["primary"]["rung"] == "big" and [r["primary"]["rung"] for r in report["ladder"]] == ["small", "big"]
    assert "rung-big/probes.accuracy_mul_multidigit" in report["accuracy"]["mul_tokens"]["sft"]
    md = (run_dir / "report.md").read_text()
    assert md.splitlines()[2] == "Rung `small`:" and "**Answer (rung `big`).** Primary endpoint" in md
    assert "**Secondary (rung `small`, after `grpo`, 3 seed(s)).**" in md and "**Secondary (rung `big`, after `grpo`" in md


def test_a_metric_nobody_learned_is_not_called_a_null_result(tmp_path):
    """0% in both conditions is a broken or untrained model, not 'no detectable difference'."""
    def truth(cond, stage, bench, cat, rung=None):
        return 0.0 if cat == "addition" else p_correct(cond, stage, bench, cat, rung)

    run_dir = write_fake_run(tmp_path, seeds=(0, 1), truth=truth)
    write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    answer = next(ln for ln in md.splitlines() if ln.startswith("**Secondary"))
    assert "cannot be compared on accuracy_addition (0 in both)" in answer
    assert "is undecided on accuracy_mul_table" in answer and "accuracy_addition," not in answer
    assert "- accuracy_addition after `sft`: no difference to measure: both conditions score 0.000" in md
    row = _row(json.loads((run_dir / "report.json").read_text()), "accuracy_addition", "sft")
    assert row["delta"] == 0 and row["p"] == 1 and row["mde"] is None


def test_pretrained_models_and_own_notation_are_descriptive(tmp_path):
    """Pretrained models' task accuracy and symbolic_context are shown, with the reason, in no family."""
    spec = dict(SPEC, evals={"after": ["pretrain", "sft", "grpo"], "benchmarks": {
        "probes": {"kind": "probes", "categories": list(CATEGORIES) + ["symbolic_context"]},
        "gsm_synthetic": {"kind": "gsm8k", "data": "synthetic:word_problems"}}})
    run_dir = write_fake_run(tmp_path, **{k: v for k, v in spec.items() if k == "evals"})
    # the fake run writes the reference categories; add symbolic_context items to every probes node
    rng = np.random.default_rng(1)
    for items in run_dir.rglob("probes/items.jsonl"):
        rows = [json.loads(x) for x in items.read_text().splitlines()]
        rows += [{"id": f"symbolic_context-{i}", "benchmark": "probes", "category": "symbolic_context",
                  "correct": bool(rng.random() < 0.5)} for i in range(20)]
        items.write_text("".join(json.dumps(r) + "\n" for r in rows))
        for name in ("manifest.json", "summary.json"):  # the node's item count follows its items.jsonl
            f = items.parent / name
            if f.exists():
                d = json.loads(f.read_text())
                (d["summary"] if name == "manifest.json" else d)["n"] = len(rows)
                f.write_text(json.dumps(d))
    write_report(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    desc = [r for r in report["headline"] if r["family"] == "descriptive"]
    assert {r["stage"] for r in desc if r["metric"] != "accuracy_symbolic_context"} == {"pretrain"}
    assert {r["stage"] for r in desc if r["metric"] == "accuracy_symbolic_context"} == {"pretrain", "sft", "grpo"}
    assert all(r["p_holm"] is None and r["verdict"] == "undecided" and r["reason"] for r in desc)
    secondary = [r for r in report["headline"] if r["family"] == "secondary"] + report["grpo"]
    assert report["comparisons"] == len(secondary)
    md = (run_dir / "report.md").read_text()
    assert "descriptive only: the pretrained models have not been taught the chat format" in md
    assert "descriptive only: each condition is asked in its own notation" in md


def test_the_headline_opens_the_report_before_the_learns_check(tmp_path):
    run_dir = write_fake_run(tmp_path, seeds=(0, 1),
                             learns={"stage": "sft", "minimum": {"probes.accuracy_mul_table": 0.85,
                                                                 "probes.accuracy_mul_multidigit": 0.5}})
    write_report(run_dir)
    sections = [ln for ln in (run_dir / "report.md").read_text().splitlines() if ln.startswith("## ")]
    assert sections[:4] == ["## Calibration: the same test on noise alone", "## Headline",
                            "## Do the models learn what is tested? (mean over seeds after `sft`)", "## Method"]
    assert "baseline probes.accuracy_mul_multidigit 0.350 < 0.50" in (run_dir / "report.md").read_text()


def test_an_mde_beyond_the_range_of_an_accuracy_difference_says_nothing_is_detectable():
    from domtok.report.compare import _mde_text

    assert _mde_text({"mde": 0.073}) == "±0.073"
    text = _mde_text({"mde": 2.418})  # 3 seeds that disagree: df 2 at Holm's strictest level
    assert text.startswith("none: even a difference of 1 would be missed") and "±2.42" in text
