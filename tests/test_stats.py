"""Statistics: known values, scipy cross-checks, the headline test's calibration, and comparisons of items files."""

from __future__ import annotations


import numpy as np
import pytest

from domtok.errors import DomtokError
from scipy import stats as scipy_stats

from domtok.eval.stats import (across_seeds, compare_items, holm, mcnemar_exact, min_detectable_effect,
                               one_sample_t_test, paired_bootstrap, seed_item_test, welch_t_test, wilson_ci)


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


def test_t_tests_are_scipys():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.normal(0.3, 0.05, size=rng.integers(2, 8))
        b = rng.normal(0.32, 0.08, size=rng.integers(2, 8))
        ours = welch_t_test(a, b)
        ref = scipy_stats.ttest_ind(a, b, equal_var=False)
        assert ours["t"] == pytest.approx(ref.statistic, rel=1e-12) and ours["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    x = rng.normal(size=7)
    y = x + rng.normal(0.1, 0.2, 7)
    assert across_seeds(x, y, paired=True)["test"]["p"] == pytest.approx(scipy_stats.ttest_rel(x, y).pvalue, rel=1e-12)
    b = scipy_stats.binomtest(3, 17, 0.5).pvalue
    assert mcnemar_exact([True] * 3 + [False] * 14, [False] * 3 + [True] * 14)["p"] == pytest.approx(b, rel=1e-12)
    # no spread: scipy's statistic would be rounding noise; the difference is all there is
    assert one_sample_t_test([0.1, 0.1, 0.1]) == {"t": float("inf"), "df": 2.0, "p": 0.0}
    assert one_sample_t_test([0.0, 0.0])["p"] == 1.0


def _by_seed(matrix) -> list[dict]:
    return [{f"q{i}": v for i, v in enumerate(row)} for row in np.asarray(matrix, dtype=float)]


def test_seed_item_test_special_cases_are_scipys_t_tests():
    rng = np.random.default_rng(2)
    # one seed: the paired t-test over items
    a, b = rng.random(60) < 0.6, rng.random(60) < 0.4
    r = seed_item_test(_by_seed([a]), _by_seed([b]))
    ref = scipy_stats.ttest_rel(a.astype(float), b.astype(float))
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-10) and r["df"] == ref.df
    assert r["ci"] == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-10)
    # every item moves by its seed's shift: only seed variation is left, so it is the t-test on
    # the per-seed deltas (df = K - 1), however many items there are
    shift = np.array([0.10, 0.02, 0.07, 0.12])
    base = rng.random((1, 50)).repeat(4, axis=0)
    r = seed_item_test(_by_seed(base + shift[:, None]), _by_seed(base))
    ref = scipy_stats.ttest_1samp(shift, 0.0)
    assert r["delta"] == pytest.approx(shift.mean()) and r["df"] == pytest.approx(3)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert r["ci"] == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)
    # items nested in seeds (each seed scored on its own items): the t-test on per-seed deltas
    nested_a = [{f"s{k}-{i}": float(rng.random() < 0.5 + 0.05 * k) for i in range(40)} for k in range(3)]
    nested_b = [{key: float(rng.random() < 0.5) for key in d} for d in nested_a]
    r = seed_item_test(nested_a, nested_b)
    deltas = [np.mean(list(x.values())) - np.mean(list(y.values())) for x, y in zip(nested_a, nested_b)]
    assert "different items" in r["method"] and r["p"] == pytest.approx(scipy_stats.ttest_1samp(deltas, 0).pvalue)
    with pytest.raises(ValueError, match="same"):
        seed_item_test(_by_seed([a]), [{"other": 1.0}])


def test_accuracy_interval_stays_inside_minus_one_to_one():
    # three seeds that disagree wildly (delta 1, 0, 0.9 on 0/1 items): 2 degrees of freedom and
    # a t-interval reaching past 1, which no difference of two accuracies can
    I = 40
    a = [np.ones(I), np.zeros(I), (np.arange(I) < 36).astype(float)]
    b = [np.zeros(I), np.zeros(I), np.zeros(I)]
    r = seed_item_test(_by_seed(a), _by_seed(b))
    assert r["ci_unbounded"][1] > 1.0 and r["ci"] == (r["ci_unbounded"][0], 1.0)
    assert r["df"] == pytest.approx(2, abs=0.1)
    # values outside [0, 1] (a score, not an accuracy) keep the t-interval itself
    r2 = seed_item_test(_by_seed([x * 3 for x in a]), _by_seed(b))
    assert r2["ci"] == r2["ci_unbounded"] and r2["ci"][1] > 3.0


def _crossed_null(rng, K, I, seed_sd, item_sd, effect=0.0):
    """Per-item differences d = effect + s_k + u_i + e_ki (Gaussian crossed random effects)."""
    return effect + rng.normal(0, seed_sd, (K, 1)) + rng.normal(0, item_sd, (1, I)) + rng.normal(0, 1.0, (K, I))


def test_seed_item_variance_is_unbiased_and_ci_covers():
    """The CI's variance counts seeds and items: its mean matches the true variance of the mean
    difference, and the 95% interval covers the truth about 95% of the time."""
    rng = np.random.default_rng(3)
    for K, I, s_sd, u_sd in [(3, 40, 0.3, 0.5), (3, 60, 0.1, 0.3), (5, 30, 0.2, 0.0)]:
        true_var = s_sd ** 2 / K + u_sd ** 2 / I + 1.0 / (K * I)
        var, covered, zeros = [], 0, np.zeros((K, I))
        for _ in range(600):
            d = _crossed_null(rng, K, I, s_sd, u_sd)
            r = seed_item_test(_by_seed(d), _by_seed(zeros))
            var.append(r["se"] ** 2)
            covered += r["ci"][0] <= 0.0 <= r["ci"][1]
        # a negative variance component is set to 0, so the estimate errs on the high side
        assert 0.97 * true_var <= np.mean(var) <= 1.25 * true_var
        # with 3 seeds and seeds dominating the variance, t with Satterthwaite's df is a little short
        assert 0.92 <= covered / 600 <= 0.99, (K, I, s_sd, u_sd, covered)


def test_seed_and_item_variation_both_widen_the_interval():
    """Where seeds disagree, a test over items alone is far too sure; where the same items are
    hard for one condition in every seed, a test over the per-seed deltas alone is."""
    rng = np.random.default_rng(4)
    zeros = _by_seed(np.zeros((3, 60)))
    for s_sd, u_sd, naive_axis in [(0.4, 0.0, 1), (0.0, 1.5, 2)]:
        d = np.stack([_crossed_null(rng, 3, 60, s_sd, u_sd) for _ in range(400)])  # (400, seeds, items)
        ours = np.mean([seed_item_test(_by_seed(x), zeros)["p"] < 0.05 for x in d])
        # the test that ignores the other source: over item means (1) or over seed means (2)
        naive = np.mean(scipy_stats.ttest_1samp(d.mean(axis=naive_axis), 0, axis=1).pvalue < 0.05)
        assert ours < 0.09 and naive > 0.15 + ours, (s_sd, u_sd, ours, naive)


def test_planted_effect_is_found_and_null_is_not():
    rng = np.random.default_rng(4)
    base = [{f"q{i}": bool(rng.random() < 0.40) for i in range(150)} for _ in range(3)]
    better = [{q: bool(rng.random() < 0.60) for q in d} for d in base]
    same = [{q: bool(rng.random() < 0.40) for q in d} for d in base]
    found, null = seed_item_test(better, base), seed_item_test(same, base)
    assert found["p"] < 1e-4 and found["ci"][0] > 0.05 and found["delta"] == pytest.approx(0.2, abs=0.06)
    assert null["p"] > 0.05 and null["ci"][0] < 0 < null["ci"][1]
    assert found["method"].startswith("crossed") and found["n_seeds"] == 3 and found["n_items"] == 150


def test_min_detectable_effect_has_the_power_it_claims():
    # large df: the normal-theory formula (z_{1-a/2} + z_power) * se
    assert min_detectable_effect(0.05, 1e6) == pytest.approx((1.959964 + 0.841621) * 0.05, rel=1e-4)
    # small df, by simulation of the t statistic under a true difference of one MDE
    rng = np.random.default_rng(6)
    se, df = 0.04, 4
    mde = min_detectable_effect(se, df, alpha=0.01)
    t = (mde / se + rng.standard_normal(200_000)) / np.sqrt(rng.chisquare(df, 200_000) / df)
    assert np.mean(np.abs(t) > scipy_stats.t.ppf(0.995, df)) == pytest.approx(0.8, abs=0.005)
    assert min_detectable_effect(se, df, alpha=0.001) > mde > min_detectable_effect(se, 40, alpha=0.01)
    assert np.isnan(min_detectable_effect(0.0, 10))


def test_holm():
    # m = 4: sorted 0.005 x 4, 0.01 x 3, 0.03 x 2, 0.04 x 1, made monotone
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []
    out = holm([0.01, float("nan"), 0.02])  # NaN is not a comparison
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)
    # the step-down rule itself: reject the k smallest while p_(i) <= alpha / (m - i + 1)
    rng = np.random.default_rng(7)
    for _ in range(50):
        p = rng.random(12) ** 3
        order = np.argsort(p)
        k = next((i for i, j in enumerate(order) if p[j] > 0.05 / (12 - i)), 12)
        assert set(np.flatnonzero(np.array(holm(p)) <= 0.05)) == set(order[:k])


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
    assert "40 paired items" in out and "-0.3750" in out and "mcnemar_exact" in out  # B − A
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
    assert r["diff"] == pytest.approx(-0.1) and r["test"]["p"] < 0.01  # B − A
    # mixing benchmarks is refused with exit code 2
    assert cli_main(["eval", "compare", runs_a, f"{tmp_path / 'a'},{tmp_path / 'b'}"]) == 2
