"""The report's seed sections: signal-to-noise per metric, and the looks of --seeds auto."""

import json

import numpy as np
import pytest

from domtok.report import write_report
from test_report import write_fake_run


def test_signal_to_noise_rows_are_the_per_seed_deltas(tmp_path):
    run_dir = write_fake_run(tmp_path, seeds=(0, 1, 2, 3))
    # the fake run plants exact accuracies (every seed the same); give each model a noisy gold_bpb
    rng = np.random.default_rng(0)
    truth = {}
    for path in sorted(run_dir.glob("*/seed*/*/eval/gsm_synthetic/manifest.json")):
        man = json.loads(path.read_text())
        man["summary"]["metrics"]["gold_bpb"] = truth[path] = float(rng.normal(1.0, 0.05))
        path.write_text(json.dumps(man))
    write_report(run_dir)
    js = json.loads((run_dir / "report.json").read_text())
    assert js["sequential"] is None
    row = next(r for r in js["signal_to_noise"]
               if (r["stage"], r["benchmark"], r["metric"]) == ("grpo", "gsm_synthetic", "gold_bpb"))
    d = [truth[run_dir / "mul_tokens" / f"seed{s}" / "grpo" / "eval" / "gsm_synthetic" / "manifest.json"]
         - truth[run_dir / "baseline" / f"seed{s}" / "grpo" / "eval" / "gsm_synthetic" / "manifest.json"]
         for s in range(4)]
    assert row["per_seed_deltas"] == pytest.approx(d) and row["n_seeds"] == 4
    assert row["delta"] == pytest.approx(np.mean(d)) and row["sd"] == pytest.approx(np.std(d, ddof=1))
    assert row["snr"] == pytest.approx(abs(np.mean(d)) / np.std(d, ddof=1))
    acc = next(r for r in js["signal_to_noise"]
               if (r["stage"], r["benchmark"], r["metric"]) == ("sft", "probes", "accuracy_mul_multidigit"))
    assert acc["delta"] == pytest.approx(0.4) and acc["snr"] is None  # identical deltas: no SD to divide by
    md = (run_dir / "report.md").read_text()
    assert "## Signal-to-noise per metric over seeds" in md
    assert "do not account for that" not in md  # no looks: nothing to account for
    assert f"| mul_tokens | grpo | gsm_synthetic | gold_bpb | {np.mean(d):+.4f} |" in md


def test_looks_section_states_boundaries_reason_and_bias(tmp_path):
    from domtok.eval.stats import sequential_decision
    from domtok.sequential_run import _look_entry

    run_dir = write_fake_run(tmp_path)
    deltas = [0.1, 0.2, 0.3, 0.15, 0.25, 0.1]
    looks = []
    for k, n in enumerate((3, 6), start=1):
        r = sequential_decision(deltas[:n], max_seeds=12, per_look=3, margin=0.05)
        looks.append(_look_entry(k, list(range(n)), deltas[:n], r))
    assert r["decision"] == "helps"
    rec = {"plan": {"max_seeds": 12, "per_look": 3, "spending": "obrien-fleming", "alpha": 0.05, "margin": 0.05,
                    "seed_order": list(range(12))}, "looks": looks, "decision": "helps",
           "stopped_because": r["reason"], "seeds_used": 6, "biased": True, "wall_seconds": 5.0}
    (run_dir / "looks.json").write_text(json.dumps(rec))
    write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    assert "**Decision: helps** after 6 seeds per condition" in md
    assert f"{looks[0]['boundary']:.3f}" in md and f"{looks[1]['boundary']:.3f}" in md
    assert "biased away from zero" in md and "bias-adjusted estimate" in md
    assert json.loads((run_dir / "report.json").read_text())["sequential"]["decision"] == "helps"


def test_gold_bpb_rows_are_secondary_with_lower_is_better(tmp_path):
    from scipy import stats

    run_dir = write_fake_run(tmp_path, seeds=(0, 1, 2))
    # plant: mul_tokens needs 0.2 fewer bits per byte on the GSM-style gold answers, with seed noise
    rng = np.random.default_rng(1)
    means = {}
    for path in sorted(run_dir.glob("*/seed*/*/eval/gsm_synthetic/items.jsonl")):
        cond, seed = path.parts[-6], int(path.parts[-5][4:])
        shift = rng.normal(0, 0.01) - (0.2 if cond == "mul_tokens" else 0.0)
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        for r in rows:
            r["gold_bpb"] = float(1.5 + shift + rng.normal(0, 0.05))
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        means[(cond, seed, path.parts[-4])] = np.mean([r["gold_bpb"] for r in rows])
    write_report(run_dir)
    js = json.loads((run_dir / "report.json").read_text())
    row = next(r for r in js["headline"] if (r["metric"], r["stage"]) == ("gold_bpb", "sft"))
    d = [means[("mul_tokens", s, "sft")] - means[("baseline", s, "sft")] for s in range(3)]
    assert row["family"] == "secondary" and row["delta"] == pytest.approx(np.mean(d))
    assert row["p"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-6)
    assert row["delta"] < 0 and row["p_holm"] < 0.05 and row["verdict"] == "helps"  # fewer bits: helps
    assert row["p_tost"] is None  # the primary's margin is in accuracy units
    pre = next(r for r in js["headline"] if (r["metric"], r["stage"]) == ("gold_bpb", "pretrain")) \
        if any(r["stage"] == "pretrain" for r in js["headline"]) else None
    assert pre is None or pre["family"] == "descriptive"
    assert "lower is better, so `helps` means Δ < 0" in (run_dir / "report.md").read_text()


def test_a_gold_bpb_primary_helps_when_the_domain_needs_fewer_bits(tmp_path, monkeypatch):
    import domtok.report
    from domtok.report.primary import primary_deltas
    from domtok.sequential_run import run_sequential
    from domtok.rundir import load_spec

    gold = {"benchmark": "gsm_synthetic", "metric": "gold_bpb", "stage": "grpo", "margin": 0.05}
    run_dir = write_fake_run(tmp_path, seeds=(0, 1, 2), primary=gold)
    rng = np.random.default_rng(2)
    for path in sorted(run_dir.glob("*/seed*/*/eval/gsm_synthetic/items.jsonl")):
        shift = rng.normal(0, 0.01) - (0.2 if path.parts[-6] == "mul_tokens" else 0.0)
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        for r in rows:
            r["gold_bpb"] = float(1.5 + shift + rng.normal(0, 0.05))
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(run_dir)
    p = json.loads((run_dir / "report.json").read_text())["primary"]
    assert p["metric"] == "gold_bpb" and p["delta"] < -0.15 and p["verdict"] == "helps"
    # --seeds auto on the same primary: the look tests baseline − domain, so fewer bits helps
    d = primary_deltas(run_dir)
    assert all(x < 0 for x in d)
    spec = load_spec(str(run_dir / "spec.yaml"), ["sequential={max_seeds: 3, per_look: 3}", f"runs_dir={tmp_path}"])
    monkeypatch.setattr(domtok.report, "write_report", lambda d: d / "report.md")
    run_sequential(spec, None, lambda s, o: 0, deltas_fn=lambda _: d, say=lambda m: None)
    rec = json.loads((run_dir / "looks.json").read_text())
    assert rec["plan"]["lower_is_better"] and rec["decision"] == "helps" and rec["looks"][0]["delta"] > 0


def _looks(deltas, seeds, decision=None):
    """looks.json as run_sequential writes it, for looks of 3 over `deltas`."""
    from domtok.eval.stats import sequential_decision
    from domtok.sequential_run import _look_entry

    looks = []
    for k, n in enumerate(range(3, len(deltas) + 1, 3), start=1):
        r = sequential_decision(deltas[:n], max_seeds=12, per_look=3, margin=0.05)
        looks.append(_look_entry(k, seeds[:n], deltas[:n], r))
    final = r["decision"] != "continue"
    return {"plan": {"max_seeds": 12, "per_look": 3, "spending": "obrien-fleming", "alpha": 0.05, "margin": 0.05,
                     "seed_order": list(range(12)), "lower_is_better": False}, "looks": looks,
            "decision": r["decision"] if final else None, "stopped_because": r["reason"] if final else None,
            "seeds_used": len(deltas) if final else None, "biased": r["biased"], "wall_seconds": 1.0}, r


def test_a_seeds_auto_study_is_answered_by_its_sequential_test(tmp_path):
    """Seeds added look by look: the answer is the design's decision and repeated CI, not the
    fixed-sample CI on the same seeds (which ignores the looks)."""
    seeds = list(range(6))
    run_dir = write_fake_run(tmp_path, seeds=seeds, gsm_shift={("mul_tokens", "grpo", s): 0.01 * s for s in seeds})
    rec, r = _looks([0.1, 0.2, 0.3, 0.15, 0.25, 0.1], seeds)  # crosses look 2's boundary
    assert r["decision"] == "helps"
    (run_dir / "looks.json").write_text(json.dumps(rec))
    write_report(run_dir)
    p = json.loads((run_dir / "report.json").read_text())["primary"]
    md = (run_dir / "report.md").read_text()
    answer = next(line for line in md.splitlines() if line.startswith("**Answer"))
    assert p["verdict"] == "helps" and p["sequential"]["look"] == 2 and "fixed_sample_verdict" in p
    assert "tested by the `--seeds auto` design" in answer and f"`{p['condition']}` helps: {r['reason']}" in answer
    assert f"repeated 95% CI [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]" in answer
    assert "is not this design's test" in answer and "biased away from 0" in answer
    assert "A decision at 80% power" not in md  # the design plans the seeds
    assert "fixed-sample tests, which do not account for that" in md  # the secondary rows say what they are

    # a look that did not decide: no verdict, and the next look is the way on
    rec, r = _looks([0.1, -0.2, 0.3, 0.15, -0.25, 0.1], seeds)
    assert r["decision"] == "continue"
    (run_dir / "looks.json").write_text(json.dumps(rec))
    write_report(run_dir)
    p = json.loads((run_dir / "report.json").read_text())["primary"]
    md = (run_dir / "report.md").read_text()
    assert p["verdict"] == "undecided" and p["sequential"]["decision"] == "continue"
    assert f"not decided yet: {r['reason']}" in md and "runs the next look" in md

    # seeds other than the last look's: a fixed-sample answer, flagged
    (run_dir / "looks.json").write_text(json.dumps(_looks([0.1, 0.2, 0.3], seeds)[0]))
    write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    p = json.loads((run_dir / "report.json").read_text())["primary"]
    assert p["sequential"] == {"mismatch": [0, 1, 2]} and "fixed_sample_verdict" not in p
    assert "tested alone at α = 0.05 over 6 seed(s)" in md and "⚠ looks.json records `--seeds auto` looks" in md
