"""The group-sequential seed test: its error rate, power and boundaries, checked by simulation
and against published and exact references."""

import math

import numpy as np
import pytest
from scipy import stats

from domtok.eval.sequential import boundaries, operating_characteristics, sequential_decision, spent_alpha


def _run_study(rng, effect, max_seeds, per_look, spending, margin=None, sd=1.0):
    """One simulated study, look by look, through the public rule: (decision, seeds used, deltas)."""
    deltas = list(rng.standard_normal(max_seeds) * sd + effect)
    for n in range(per_look, max_seeds + per_look, per_look):
        r = sequential_decision(deltas[:min(n, max_seeds)], max_seeds=max_seeds, per_look=per_look,
                                margin=margin, spending=spending)
        if r["decision"] != "continue":
            return r["decision"], r["n"]
    raise AssertionError("the rule said continue with max_seeds deltas in")


@pytest.mark.parametrize("spending,per_look", [("obrien-fleming", 3), ("pocock", 3), ("obrien-fleming", 2)])
def test_null_error_rate_is_alpha(spending, per_look):
    # an independent simulation (its own generator, whole deltas, the public function) of the
    # design the boundaries were calibrated for: helps or hurts at most alpha, within MC error
    rng = np.random.default_rng(12345)
    n_sim = 4000
    wrong = sum(_run_study(rng, 0.0, 12, per_look, spending)[0] in ("helps", "hurts") for _ in range(n_sim))
    rate = wrong / n_sim
    se = math.sqrt(0.05 * 0.95 / n_sim)
    assert rate <= 0.05 + 2.5 * se, rate
    assert rate >= 0.05 - 3.5 * se, rate  # calibrated, not merely conservative


def test_null_rate_holds_for_heavy_tailed_deltas():
    # t(5)-distributed seed deltas: the boundaries assume normal ones; the rate stays near alpha
    rng = np.random.default_rng(7)
    n_sim, wrong = 3000, 0
    for _ in range(n_sim):
        d = list(rng.standard_t(5, size=12))
        for n in (3, 6, 9, 12):
            r = sequential_decision(d[:n], max_seeds=12, per_look=3, margin=None)
            if r["decision"] != "continue":
                wrong += r["decision"] in ("helps", "hurts")
                break
    assert wrong / n_sim <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / n_sim)


def test_power_at_one_and_a_half_sd_and_early_stop():
    rng = np.random.default_rng(99)
    runs = [_run_study(rng, 1.5, 12, 3, "obrien-fleming") for _ in range(1500)]
    helps = sum(d == "helps" for d, _ in runs) / len(runs)
    assert helps >= 0.80, helps
    assert np.mean([n for _, n in runs]) < 12 - 1.5  # stops early on average (about 8.6 seeds)
    oc = operating_characteristics(1.5, max_seeds=12, per_look=3, margin=None)
    assert abs(oc["power"] - helps) < 0.03 and abs(oc["expected_seeds"] - np.mean([n for _, n in runs])) < 0.3


def test_obrien_fleming_matches_published_boundaries():
    # Lan-DeMets O'Brien-Fleming, 4 equal looks, two-sided alpha 0.05 (ldbounds / gsDesign):
    # 4.3326, 2.9631, 2.3590, 2.0141. With 10,000 seeds per look the t boundaries are z ones.
    got = boundaries(40000, 10000, 0.05, "obrien-fleming")["boundary"]
    for g, ref in zip(got, [4.3326, 2.9631, 2.3590, 2.0141]):
        assert g == pytest.approx(ref, abs=0.04)


def test_spending_functions_end_at_alpha_and_pocock_first_look_is_exact():
    for sp in ("obrien-fleming", "pocock"):
        assert spent_alpha(1.0, 0.05, sp) == pytest.approx(0.05)
        assert spent_alpha(0.5, 0.05, sp) < 0.05
    b = boundaries(12, 3, 0.05, "pocock")
    a1 = 0.05 * math.log(1 + (math.e - 1) * 0.25)
    assert b["boundary"][0] == pytest.approx(stats.t.ppf(1 - a1 / 2, 2))
    assert b["boundary"][0] > b["boundary"][-1] > stats.t.ppf(0.975, 11)  # looking costs width


def test_one_look_is_the_paired_t_test():
    # a single look at all seeds is the ordinary two-sided t-test at alpha (scipy's ttest_1samp)
    rng = np.random.default_rng(3)
    for _ in range(200):
        d = rng.standard_normal(5) + rng.uniform(-1.5, 1.5)
        r = sequential_decision(d, max_seeds=5, per_look=5, margin=None)
        p = stats.ttest_1samp(d, 0.0).pvalue
        assert r["decision"] == ("undecided" if p >= 0.05 else "helps" if d.mean() > 0 else "hurts")
        assert r["t"] == pytest.approx(stats.ttest_1samp(d, 0.0).statistic)


def test_never_continue_at_max_seeds_and_partial_looks():
    rng = np.random.default_rng(0)
    for _ in range(50):
        d = rng.standard_normal(12) * 0.1
        assert sequential_decision(d, max_seeds=12, per_look=3, margin=0.01)["decision"] != "continue"
        assert sequential_decision(list(d) + [5.0], max_seeds=12, per_look=3, margin=0.01)["n"] == 12
    # four deltas with looks of three: the decision is the first look's, on the first three
    r = sequential_decision([0.1, 0.2, 0.3, 9.0], max_seeds=12, per_look=3, margin=None)
    assert (r["look"], r["n"], r["decision"]) == (1, 3, "continue")
    assert r["delta"] == pytest.approx(0.2)
    assert sequential_decision([0.1, 0.2], max_seeds=12, per_look=3, margin=None)["decision"] == "continue"


def test_equivalence_stops_inside_margin_and_its_error_is_controlled():
    tight = [0.01, -0.01, 0.0, 0.005, -0.005, 0.002]
    r = sequential_decision(tight, max_seeds=12, per_look=3, margin=0.05)
    assert r["decision"] == "equivalent" and r["n"] == 6 and r["biased"]  # stopped before max_seeds
    # a true effect exactly at the margin: "equivalent" at most alpha of the time
    oc = operating_characteristics(0.5, max_seeds=12, per_look=3, margin=0.5, sd=1.0, n_sim=20000, seed=5)
    assert oc["p_equivalent"] <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / 20000)
    # no margin: never equivalent
    assert sequential_decision(tight, max_seeds=12, per_look=3, margin=None)["decision"] != "equivalent"


def test_boundaries_are_deterministic_and_bias_is_away_from_zero():
    a = boundaries.__wrapped__(12, 3, 0.05, "obrien-fleming")
    b = boundaries.__wrapped__(12, 3, 0.05, "obrien-fleming")
    assert a == b
    oc = operating_characteristics(0.8, max_seeds=12, per_look=3, margin=None, n_sim=20000)
    assert oc["mean_estimate"] > 0.8  # stopping when the deltas are large inflates the estimate


def test_bad_arguments():
    with pytest.raises(ValueError):
        sequential_decision([1.0, float("nan")], max_seeds=12, per_look=3, margin=None)
    with pytest.raises(ValueError):
        sequential_decision([1.0], max_seeds=12, per_look=3, margin=None, spending="haybittle")
    with pytest.raises(ValueError):
        boundaries(1, 1)


def test_bias_adjusted_estimate_is_whiteheads_fixed_point():
    from domtok.eval.sequential import bias_adjusted

    # stopped at look 2 of 4 with mean delta 0.2, seed SD 0.1: the adjusted estimate is smaller,
    # and the design's expected estimate at that true value is the observed one
    adj = bias_adjusted(0.2, 0.1, max_seeds=12, per_look=3)
    assert 0.15 < adj < 0.2
    m = operating_characteristics(adj, max_seeds=12, per_look=3, sd=0.1, margin=None)["mean_estimate"]
    assert m == pytest.approx(0.2, abs=0.002)
    assert bias_adjusted(0.0, 0.1, max_seeds=12, per_look=3) == pytest.approx(0.0, abs=0.002)


def test_equal_deltas_are_no_evidence():
    # three seeds that agree exactly (binary items make ties possible) give no seed SD: no claim
    r = sequential_decision([0.02, 0.02, 0.02], max_seeds=12, per_look=3, margin=0.05)
    assert r["decision"] == "continue" and r["t"] is None
    assert sequential_decision([0.02] * 3, max_seeds=3, per_look=3, margin=0.05)["decision"] == "undecided"
