"""Statistics: known values, scipy cross-checks (when installed), and comparisons of items files."""

from __future__ import annotations


import numpy as np
import pytest

from domtok.errors import DomtokError
from domtok.eval.stats import (across_seeds, betainc_reg, compare_items, mcnemar_exact, paired_bootstrap,
                               t_two_sided_p, welch_t_test, wilson_ci)


def test_wilson_known_values():
    # 5/10: the textbook value (statsmodels proportion_confint(5, 10, method="wilson"))
    lo, hi = wilson_ci(5, 10)
    assert lo == pytest.approx(0.236593, abs=1e-5) and hi == pytest.approx(0.763407, abs=1e-5)
    # 0/20 does not collapse to a zero-width interval like the normal approximation
    lo, hi = wilson_ci(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.161125, abs=1e-5)
    lo, hi = wilson_ci(20, 20)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.161125, abs=1e-5)
    with pytest.raises(ValueError):
        wilson_ci(11, 10)


def test_mcnemar_known_table():
    # discordant pairs 1 vs 6: p = 2 * P(X <= 1 | n=7, 1/2) = 2 * 8/128
    a = [True] * 1 + [False] * 6 + [True] * 10 + [False] * 5
    b = [False] * 1 + [True] * 6 + [True] * 10 + [False] * 5
    r = mcnemar_exact(a, b)
    assert (r["a_only"], r["b_only"]) == (1, 6)
    assert r["p"] == pytest.approx(0.125)
    assert mcnemar_exact([True, False], [True, False])["p"] == 1.0
    # symmetric: swapping A and B gives the same p
    assert mcnemar_exact(b, a)["p"] == r["p"]


def test_t_distribution_known_values():
    # Student t two-sided p-values from tables: t=2.228, df=10 -> 0.05; t=2, df=10 -> 0.07339
    assert t_two_sided_p(2.228, 10) == pytest.approx(0.05, abs=2e-4)
    assert t_two_sided_p(2.0, 10) == pytest.approx(0.0733880, abs=1e-6)
    assert t_two_sided_p(1.96, 1e6) == pytest.approx(0.04999579, abs=1e-6)  # ~normal
    assert t_two_sided_p(0.0, 5) == pytest.approx(1.0)
    assert betainc_reg(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-10)  # closed form 1-(0.6^4)(1+4*0.4)


def test_against_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.normal(0.3, 0.05, size=rng.integers(2, 8))
        b = rng.normal(0.32, 0.08, size=rng.integers(2, 8))
        ours = welch_t_test(a, b)
        ref = scipy_stats.ttest_ind(a, b, equal_var=False)
        assert ours["t"] == pytest.approx(ref.statistic, rel=1e-9)
        assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)
    for t, df in [(0.5, 3), (3.3, 2.5), (10.0, 40), (-1.2, 7)]:
        assert t_two_sided_p(t, df) == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-8)
    x = rng.normal(size=7)
    y = x + rng.normal(0.1, 0.2, 7)
    assert across_seeds(x, y, paired=True)["test"]["p"] == pytest.approx(scipy_stats.ttest_rel(x, y).pvalue, rel=1e-8)
    b = scipy_stats.binomtest(3, 17, 0.5).pvalue
    assert mcnemar_exact([True] * 3 + [False] * 14, [False] * 3 + [True] * 14)["p"] == pytest.approx(b, rel=1e-12)


def test_paired_bootstrap_covers_true_difference():
    rng = np.random.default_rng(1)
    n, covered = 400, 0
    for rep in range(40):
        # paired binary outcomes: B is right with p=0.30, A adds 0.05 (true difference 0.05)
        u = rng.random(n)
        a = (u < 0.35).astype(float)
        b = (u < 0.30).astype(float)
        r = paired_bootstrap(a, b, n_boot=500, seed=rep)
        covered += r["ci"][0] <= 0.05 <= r["ci"][1]
    assert covered >= 34  # nominal 95% of 40 = 38; allow Monte Carlo slack
    # deterministic for a seed; identical inputs give a zero-width CI at 0 and p = 1
    x = rng.random(50)
    assert paired_bootstrap(x, x[::-1], seed=3) == paired_bootstrap(x, x[::-1], seed=3)
    same = paired_bootstrap(x, x, n_boot=100)
    assert same["ci"] == (0.0, 0.0) and same["p"] == 1.0
    # a clear difference is significant
    assert paired_bootstrap(np.ones(100), np.zeros(100), n_boot=200)["p"] <= 1 / 200


def test_across_seeds_mean_std():
    r = across_seeds([0.30, 0.31, 0.32])
    assert r["mean"] == pytest.approx(0.31) and r["std"] == pytest.approx(0.01)
    r = across_seeds([0.30, 0.31, 0.32], [0.20, 0.21, 0.22])
    assert r["diff"] == pytest.approx(0.10) and r["test"]["name"] == "welch_t"
    assert r["test"]["p"] < 1e-3


def _items(correct, bench="probes"):
    return [{"id": f"q{i}", "benchmark": bench, "correct": c, "response_tokens": 10 + i} for i, c in enumerate(correct)]


def test_compare_items_matches_by_id_and_tests():
    a = _items([True] * 30 + [False] * 10)
    b = _items([True] * 15 + [False] * 25)
    out = compare_items(list(reversed(a)), b, n_boot=500)  # order must not matter
    m = out["metrics"]["correct"]
    assert m["a"] == pytest.approx(0.75) and m["b"] == pytest.approx(0.375)
    assert m["delta"] == pytest.approx(0.375)
    assert m["test"] == "mcnemar_exact" and (m["a_only"], m["b_only"]) == (15, 0)
    assert m["p"] == pytest.approx(2 / 2 ** 15)
    assert m["ci"][0] > 0
    assert out["metrics"]["response_tokens"]["delta"] == 0 and out["metrics"]["response_tokens"]["test"] == "bootstrap"


def test_compare_items_refuses_mismatches():
    with pytest.raises(DomtokError, match="different items"):
        compare_items(_items([True] * 5), _items([True] * 6))
    with pytest.raises(DomtokError, match="different benchmarks"):
        compare_items(_items([True] * 5, "gsm8k"), _items([True] * 5, "probes"))
    with pytest.raises(DomtokError, match="duplicate"):
        compare_items(_items([True] * 2) * 2, _items([True] * 2))


def _write_run(d, bench, metrics, items=None):
    import json

    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"benchmark": bench, "metrics": metrics}))
    if items is not None:
        (d / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))


def test_compare_cli_items_and_seeds(tmp_path, capsys):
    import json

    from domtok.cli import main as cli_main

    _write_run(tmp_path / "a", "probes", {"accuracy_all": 0.75}, _items([True] * 30 + [False] * 10))
    _write_run(tmp_path / "b", "probes", {"accuracy_all": 0.375}, _items([True] * 15 + [False] * 25))
    assert cli_main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--n-boot", "300",
                     "--out", str(tmp_path / "cmp.json")]) == 0
    out = capsys.readouterr().out
    assert "40 paired items" in out and "+0.3750" in out and "mcnemar_exact" in out
    assert json.loads((tmp_path / "cmp.json").read_text())["metrics"]["correct"]["a_only"] == 15
    # across seeds: three seeds per condition, from summary.json
    for k, (x, y) in enumerate([(0.30, 0.20), (0.31, 0.22), (0.32, 0.21)]):
        _write_run(tmp_path / f"A{k}", "hellaswag", {"acc_norm_char": x})
        _write_run(tmp_path / f"B{k}", "hellaswag", {"acc_norm_char": y})
    runs_a = ",".join(str(tmp_path / f"A{k}") for k in range(3))
    runs_b = ",".join(str(tmp_path / f"B{k}") for k in range(3))
    assert cli_main(["eval", "compare", runs_a, runs_b, "--out", str(tmp_path / "seeds.json")]) == 0
    out = capsys.readouterr().out
    assert "3 vs 3 seeds" in out and "0.3100 ± 0.0100" in out and "welch_t" in out
    r = json.loads((tmp_path / "seeds.json").read_text())["metrics"]["acc_norm_char"]
    assert r["diff"] == pytest.approx(0.1) and r["test"]["p"] < 0.01
    # mixing benchmarks is refused with exit code 2
    assert cli_main(["eval", "compare", runs_a, f"{tmp_path / 'a'},{tmp_path / 'b'}"]) == 2
