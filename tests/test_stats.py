"""Statistics: known values, scipy cross-checks, the headline test's calibration, and comparisons of items files."""

from __future__ import annotations


import numpy as np
import pytest

from domtok.errors import DomtokError
from scipy import stats as scipy_stats

from domtok.eval.stats import (across_seeds, compare_items, holm, mcnemar_exact, min_detectable_effect,
                               one_sample_t_test, paired_bootstrap, sd_interval, seed_item_test, seed_t,
                               seeds_for_power, tost, welch_t_test, wilson_ci)


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


def test_seed_item_test_is_scipys_paired_t_on_per_seed_deltas():
    rng = np.random.default_rng(2)
    for K in (2, 3, 5, 10):
        a = rng.random((K, 80)) < 0.55
        b = rng.random((K, 80)) < 0.45
        r = seed_item_test(_by_seed(a), _by_seed(b))
        deltas = a.mean(axis=1) - b.mean(axis=1)
        ref = scipy_stats.ttest_1samp(deltas, 0.0)
        assert r["df"] == K - 1 and r["method"].startswith("paired t-test on the")
        assert abs(r["delta"] - deltas.mean()) < 1e-12 and abs(r["p"] - ref.pvalue) < 1e-9
        assert np.allclose(r["ci_unbounded"], tuple(ref.confidence_interval(0.95)), atol=1e-9, rtol=0)
        assert np.allclose(r["per_seed_deltas"], deltas, atol=1e-12) and r["n_seeds"] == K and r["n_items"] == 80
    # items nested in seeds (each seed scored on its own items): the same test
    nested_a = [{f"s{k}-{i}": float(rng.random() < 0.5 + 0.05 * k) for i in range(40)} for k in range(3)]
    nested_b = [{key: float(rng.random() < 0.5) for key in d} for d in nested_a]
    deltas = [np.mean(list(x.values())) - np.mean(list(y.values())) for x, y in zip(nested_a, nested_b)]
    assert abs(seed_item_test(nested_a, nested_b)["p"] - scipy_stats.ttest_1samp(deltas, 0).pvalue) < 1e-9
    with pytest.raises(ValueError, match="same"):
        seed_item_test(_by_seed([a[0]]), [{"other": 1.0}])


def test_one_seed_is_a_test_over_items_or_over_their_clusters():
    rng = np.random.default_rng(5)
    a, b = rng.random(60) < 0.6, rng.random(60) < 0.4
    r = seed_item_test(_by_seed([a]), _by_seed([b]))
    ref = scipy_stats.ttest_rel(a.astype(float), b.astype(float))
    assert abs(r["p"] - ref.pvalue) < 1e-10 and r["df"] == ref.df
    assert np.allclose(r["ci"], tuple(ref.confidence_interval(0.95)), atol=1e-10, rtol=0)
    # 6 templates of 10 items: the variance is that of the template totals, with 5 df; the
    # reference is the cluster-robust (CR1 with the C / (C - 1) factor) mean from statsmodels
    import statsmodels.api as sm

    clusters = {f"q{i}": f"t{i // 10}" for i in range(60)}
    rc = seed_item_test(_by_seed([a]), _by_seed([b]), clusters=clusters)
    d = a.astype(float) - b
    fit = sm.OLS(d, np.ones(60)).fit(cov_type="cluster", cov_kwds={"groups": np.arange(60) // 10,
                                                                    "use_correction": False})
    assert rc["df"] == 5 and rc["n_clusters"] == 6 and "6 item clusters" in rc["method"]
    assert abs(rc["se"] - float(fit.bse[0]) * np.sqrt(6 / 5)) < 1e-12
    assert abs(rc["p"] - 2 * scipy_stats.t.sf(abs(d.mean()) / rc["se"], 5)) < 1e-12
    # a template effect (every item of a template moves together) widens the interval
    shifted = np.repeat(rng.normal(0, 0.3, 6), 10)
    wide = seed_item_test([{f"q{i}": x for i, x in enumerate(shifted)}], [{f"q{i}": 0.0 for i in range(60)}],
                          clusters=clusters)
    narrow = seed_item_test([{f"q{i}": x for i, x in enumerate(shifted)}], [{f"q{i}": 0.0 for i in range(60)}])
    assert wide["se"] > 2 * narrow["se"]
    with pytest.raises(ValueError, match="no group"):
        seed_item_test(_by_seed([a]), _by_seed([b]), clusters={"q0": "t0"})


def test_ties_and_identical_conditions():
    # two seeds with exactly the same delta: no spread, but the grid step (1/40) bounds it from
    # below, so the test is not "infinitely significant"
    a = [np.arange(40) < 22, np.arange(40) >= 18]
    b = [np.arange(40) < 20, np.arange(40) >= 20]
    r = seed_item_test(_by_seed(a), _by_seed(b))
    assert r["per_seed_deltas"] == [0.05, 0.05] and r["se"] == pytest.approx(1 / 40 / np.sqrt(12) / np.sqrt(2))
    half = scipy_stats.t.ppf(0.975, 1) * r["se"]
    assert r["p"] > 0.001 and r["ci"] == pytest.approx((0.05 - half, 0.05 + half))
    # both conditions answer every item alike: nothing to test
    same = seed_item_test(_by_seed(a), _by_seed(a))
    assert same["delta"] == 0 and same["ci"] == (0.0, 0.0) and same["p"] == 1.0 and "nothing" in same["method"]


def test_accuracy_interval_stays_inside_minus_one_to_one():
    # three seeds that disagree wildly (delta 1, 0, 0.9 on 0/1 items): 2 degrees of freedom and
    # a t-interval reaching past 1, which no difference of two accuracies can
    I = 40
    a = [np.ones(I), np.zeros(I), (np.arange(I) < 36).astype(float)]
    b = [np.zeros(I), np.zeros(I), np.zeros(I)]
    r = seed_item_test(_by_seed(a), _by_seed(b))
    assert r["ci_unbounded"][1] > 1.0 and r["ci"] == (r["ci_unbounded"][0], 1.0)
    assert r["df"] == 2
    # values outside [0, 1] (a score, not an accuracy) keep the t-interval itself
    r2 = seed_item_test(_by_seed([x * 3 for x in a]), _by_seed(b))
    assert r2["ci"] == r2["ci_unbounded"] and r2["ci"][1] > 3.0


def _null_deltas(rng, n_sims, K, I=200, offset_sd=0.15, effect=0.0):
    """Per-seed deltas of n_sims null studies: binary items of varied difficulty (logit ~
    N(0, 1.5), the same items in both conditions and every seed), each trained model with its
    own offset on the logit scale (N(0, offset_sd)), and `effect` added to the domain logit."""
    diff = rng.normal(0, 1.5, (n_sims, 1, I)).astype(np.float32)
    counts = []
    for shift in (effect, 0.0):  # float32 and one condition at a time: seconds, not tens of them
        p = 1 / (1 + np.exp(-(diff + np.float32(shift) + rng.normal(0, offset_sd, (n_sims, K, 1)).astype(np.float32))))
        counts.append((rng.random(p.shape, dtype=np.float32) < p).sum(axis=2))
    # counts, not float means: two seeds with the same count have exactly the same delta
    return (counts[0] - counts[1]) / I


# Measured with N_SIMS = 20,000 per seed count (seed 19), for the note; the test asserts the bounds.
N_SIMS = 20_000


@pytest.mark.parametrize("K", [2, 3, 5, 10])
def test_null_simulation_false_positives_and_coverage(K):
    """The issue's reviewer simulation: no true effect, 200 binary items of varied difficulty,
    a per-model offset. False-positive rates at alpha 0.05 and 0.001 are within Monte-Carlo
    error of nominal (3 standard errors) or below it, and the 95% CI covers 0 in >= 94% of
    runs. Measured (20,000 runs each): 2 seeds 0.0488 / 0.0000, coverage 0.951; 3 seeds 0.0483 /
    0.0009, 0.952; 5 seeds 0.0502 / 0.0008, 0.950; 10 seeds 0.0511 / 0.0013, 0.949. With 2 seeds nothing is rejected at 0.001: every delta lies on a 1/200 grid,
    and the 0.1% of the t(1) tail that a continuous delta would reach lies inside one grid
    step of a tie."""
    rng = np.random.default_rng(19 + K)
    deltas = _null_deltas(rng, N_SIMS, K)
    for alpha in (0.05, 0.001):
        r = seed_t(deltas, alpha=alpha, step=1 / 200)
        rate = float(np.mean(r["p"] < alpha))
        mc = 3 * np.sqrt(alpha * (1 - alpha) / N_SIMS)
        assert rate <= alpha + mc, (K, alpha, rate)
        if K > 2 or alpha == 0.05:
            assert rate >= alpha - mc, (K, alpha, rate)
    r = seed_t(deltas, alpha=0.05, step=1 / 200)
    assert np.mean((r["ci_low"] <= 0) & (0 <= r["ci_high"])) >= 0.94
    # the vectorised core is the public test's arithmetic, row for row
    for row in deltas[:3]:
        counts = np.round(row * 200).astype(int)
        a = [{f"q{i}": float(i < 100 + c) for i in range(200)} for c in counts]
        b = [{f"q{i}": float(i < 100) for i in range(200)} for _ in counts]
        one = seed_item_test(a, b)
        ref = seed_t(row[None, :], step=1 / 200)
        assert abs(one["p"] - ref["p"][0]) < 1e-12 and abs(one["ci_unbounded"][0] - ref["ci_low"][0]) < 1e-12


def test_planted_effect_is_found_and_null_is_not():
    rng = np.random.default_rng(4)
    base = [{f"q{i}": bool(rng.random() < 0.40) for i in range(150)} for _ in range(3)]
    better = [{q: bool(rng.random() < 0.60) for q in d} for d in base]
    found = seed_item_test(better, base)
    assert found["p"] < 0.05 and found["ci"][0] > 0 and found["delta"] == pytest.approx(0.2, abs=0.06)
    # in the null simulation's design, a planted logit effect of 0.5 (about +0.08 accuracy) is
    # found in about three runs of four with 5 seeds (measured 0.75)
    deltas = _null_deltas(np.random.default_rng(7), 2000, 5, effect=0.5)
    assert np.mean(deltas) == pytest.approx(0.08, abs=0.02)
    assert np.mean(seed_t(deltas, step=1 / 200)["p"] < 0.05) > 0.65


def test_tost_equivalence():
    # |delta| small against a tight interval: equivalent; the 90% CI is the t-interval at 1 - 2 alpha
    r = tost(0.01, 0.01, 4, margin=0.05)
    assert r["equivalent"] and r["ci90"] == pytest.approx((0.01 - scipy_stats.t.ppf(0.95, 4) * 0.01,
                                                            0.01 + scipy_stats.t.ppf(0.95, 4) * 0.01))
    assert r["p"] == pytest.approx(scipy_stats.t.cdf((0.01 - 0.05) / 0.01, 4))
    # the same delta with a wide interval is not shown equivalent; equivalence <=> 90% CI inside the margin
    rng = np.random.default_rng(8)
    for _ in range(200):
        d, se, df = rng.normal(0, 0.05), rng.uniform(0.001, 0.05), int(rng.integers(1, 10))
        r = tost(d, se, df, 0.05)
        assert r["equivalent"] == (-0.05 < r["ci90"][0] and r["ci90"][1] < 0.05)
    # calibration: a true difference AT the margin is called equivalent in <= 5% of runs (3 seeds)
    K = 3
    deltas = 0.05 + rng.normal(0, 0.03, (20000, K))
    m, s = deltas.mean(axis=1), deltas.std(axis=1, ddof=1) / np.sqrt(K)
    rate = np.mean([tost(x, y, K - 1, 0.05)["equivalent"] for x, y in zip(m[:4000], s[:4000])])
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 4000)
    with pytest.raises(ValueError):
        tost(0.0, 0.1, 3, margin=0)


def test_sd_interval_and_seeds_for_power():
    lo, hi = sd_interval(1.0, 1)
    assert lo == pytest.approx(0.446, abs=1e-3) and hi == pytest.approx(31.9, abs=0.1)
    lo, hi = sd_interval(0.02, 9)
    assert lo == pytest.approx(0.02 * np.sqrt(9 / scipy_stats.chi2.ppf(0.975, 9)))
    # seeds for power: the chosen n reaches 80% power (checked by simulation) and n - 1 does not
    sd, eff = 0.03, 0.05
    n = seeds_for_power(sd, eff)
    crit = scipy_stats.t.ppf(0.975, n - 1)
    assert scipy_stats.nct.sf(crit, n - 1, eff * np.sqrt(n) / sd) >= 0.8 - 1e-3
    crit1 = scipy_stats.t.ppf(0.975, n - 2)
    assert scipy_stats.nct.sf(crit1, n - 2, eff * np.sqrt(n - 1) / sd) < 0.8
    rng = np.random.default_rng(9)  # the noncentral t's power is the t-test's, by simulation
    x = eff + sd * rng.standard_normal((20000, n))
    power = scipy_stats.nct.sf(crit, n - 1, eff * np.sqrt(n) / sd) + scipy_stats.nct.cdf(-crit, n - 1, eff * np.sqrt(n) / sd)
    assert np.mean(scipy_stats.ttest_1samp(x, 0, axis=1).pvalue < 0.05) == pytest.approx(power, abs=0.015)
    # equivalence at a true 0 needs more seeds than finding a difference of the margin
    ne = seeds_for_power(sd, eff, equivalence=True)
    x = sd * rng.standard_normal((4000, ne))
    m, s = x.mean(axis=1), x.std(axis=1, ddof=1) / np.sqrt(ne)
    assert np.mean([tost(a, b, ne - 1, eff)["equivalent"] for a, b in zip(m, s)]) >= 0.77
    assert seeds_for_power(1.0, 0.001) is None and seeds_for_power(0.0, 0.05) == 2


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
