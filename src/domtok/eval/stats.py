"""Statistics for comparing evaluation runs: which test answers which question, and why.

The distributions and tests are scipy's (`scipy.stats`); this module only chooses them and
fits them to domtok's results (per-item booleans, the same items for every seed and
condition).

One run, one proportion
- `wilson_ci(k, n)`: Wilson score interval (`binomtest(...).proportion_ci("wilson")`):
  good at small n and near 0 or 1, where the normal interval breaks.

Two runs on the same items (one seed)
- `mcnemar_exact(a, b)`: exact McNemar test, i.e. an exact binomial test (`binomtest`,
  p = 1/2) on the discordant pairs: the only items that carry information about a paired
  difference of two boolean vectors.
- `paired_bootstrap(a, b)`: percentile CI of mean(a - b), resampling items with the pairing
  kept (`scipy.stats.bootstrap` on the per-item differences), with a bootstrap p-value.
- `compare_items(items_a, items_b)`: match two items.jsonl files by id, all of the above per metric.

Several seeds
- `across_seeds(values_a, values_b)`: mean ± std over seeds; Welch's t-test (`ttest_ind`)
  between conditions, or a paired t-test on per-seed differences (`ttest_1samp`).
- `seed_item_test(a_by_seed, b_by_seed)`: the test of domain − baseline: a paired t-test on
  the per-seed deltas, K − 1 degrees of freedom (see its docstring for why and its checks).
- `tost(delta, se, df, margin)`: equivalence within ±margin by two one-sided tests.
- `sd_interval(sd, df)`, `seeds_for_power(sd, effect)`: how uncertain a seed SD is, and the
  seeds a decision would take at 80% power.
- `min_detectable_effect(se, df)`: the smallest true difference the same design detects
  with 80% power (noncentral t, `scipy.stats.nct`).
- `holm(p_values)`: Holm's step-down correction over every comparison a report makes.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import optimize, stats

from domtok.errors import DomtokError


def wilson_ci(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes out of n trials (z = 1.96: 95%)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"wilson_ci: need 0 <= k <= n, got k={k}, n={n}")
    level = 2 * stats.norm.cdf(z) - 1
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    # exact ends: rounding must not make 0/n or n/n exclude the observed proportion
    return (0.0 if k == 0 else float(ci.low), 1.0 if k == n else float(ci.high))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Percentile bootstrap CI of mean(a) - mean(b) over paired items.

    Items are resampled with replacement (bootstrapping the per-item differences keeps the
    pairing); `p` is the two-sided bootstrap p-value: twice the share of resampled means on
    the other side of zero (bounded below by 1/n_boot). Used for per-item fields that are not
    booleans (response length), where McNemar does not apply.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_bootstrap: a and b must be 1-D of the same length, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        return {"diff": float("nan"), "ci": (float("nan"), float("nan")), "p": float("nan"), "n": 0}
    d = a - b
    if np.all(d == d[0]):  # no spread: every resample has the same mean
        diff = float(d[0])
        return {"diff": diff, "ci": (diff, diff), "p": 1.0 if diff == 0 else 1.0 / n_boot, "n": n}
    res = stats.bootstrap((d,), np.mean, n_resamples=n_boot, confidence_level=1 - alpha, method="percentile",
                          batch=max(1, 2_000_000 // n), rng=np.random.default_rng(seed))
    means = res.bootstrap_distribution
    tail = min(np.mean(means <= 0), np.mean(means >= 0))
    return {"diff": float(d.mean()), "ci": (float(res.confidence_interval.low), float(res.confidence_interval.high)),
            "p": float(min(1.0, max(2 * tail, 1.0 / n_boot))), "n": n}


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """Exact McNemar test: a binomial(n01 + n10, 1/2) test on the discordant pairs."""
    if len(a_correct) != len(b_correct):
        raise ValueError(f"mcnemar_exact: lengths differ ({len(a_correct)} vs {len(b_correct)})")
    a_only = sum(1 for x, y in zip(a_correct, b_correct) if x and not y)
    b_only = sum(1 for x, y in zip(a_correct, b_correct) if y and not x)
    p = 1.0 if a_only + b_only == 0 else float(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p": p}


# ---- tests over seeds ----

def _degenerate_t(diff: float, df: float) -> dict:
    """No spread at all: the t statistic is 0/0 or ±inf, and scipy's value is rounding noise."""
    if diff == 0:
        return {"t": float("nan"), "df": df, "p": 1.0}
    return {"t": math.copysign(math.inf, diff), "df": df, "p": 0.0}


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's unequal-variance t-test of mean(a) vs mean(b) (`scipy.stats.ttest_ind`)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return {"t": float("nan"), "df": float("nan"), "p": float("nan")}
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return _degenerate_t(float(a.mean() - b.mean()), float(len(a) + len(b) - 2))
    r = stats.ttest_ind(a, b, equal_var=False)
    return {"t": float(r.statistic), "df": float(r.df), "p": float(r.pvalue)}


def one_sample_t_test(x: Sequence[float], mu: float = 0.0) -> dict:
    """t-test of mean(x) == mu (`scipy.stats.ttest_1samp`); on per-seed differences, a paired test."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return {"t": float("nan"), "df": float("nan"), "p": float("nan")}
    if np.ptp(x) == 0:
        return _degenerate_t(float(x.mean() - mu), float(len(x) - 1))
    r = stats.ttest_1samp(x, mu)
    return {"t": float(r.statistic), "df": float(r.df), "p": float(r.pvalue)}


def across_seeds(values: Sequence[float], values_b: Sequence[float] | None = None, paired: bool = False) -> dict:
    """Mean ± std (ddof=1) over seeds; with `values_b`, a test between the two conditions.

    paired=False: Welch's t-test (seeds of the two conditions are independent runs).
    paired=True:  one-sample t-test on per-seed differences. domtok pairs seed k of A with
                  seed k of B: both start from the same initial weights (same seed, same
                  architecture and vocab size) and read the same pretraining documents and
                  SFT records in the same seeded order; the domain condition's texts are
                  injected, so it reads further in the same pretraining steps.
    """
    v = np.asarray(values, dtype=np.float64)
    out = {"n": int(len(v)), "mean": float(v.mean()) if len(v) else float("nan"),
           "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    if values_b is None:
        return out
    w = np.asarray(values_b, dtype=np.float64)
    out["b"] = {"n": int(len(w)), "mean": float(w.mean()) if len(w) else float("nan"),
                "std": float(w.std(ddof=1)) if len(w) > 1 else 0.0}
    out["diff"] = out["mean"] - out["b"]["mean"]
    if paired:
        if len(v) != len(w):
            raise ValueError(f"across_seeds: paired test needs equal seed counts, got {len(v)} and {len(w)}")
        out["test"] = {"name": "paired_t", **one_sample_t_test(v - w)}
    else:
        out["test"] = {"name": "welch_t", **welch_t_test(v, w)}
    return out


def seed_item_test(a_by_seed: Sequence[Mapping], b_by_seed: Sequence[Mapping], alpha: float = 0.05,
                   clusters: Mapping | None = None) -> dict:
    """Mean over seeds of mean(a) - mean(b): a paired t-test on the per-seed deltas, K - 1 df.

    Input: per seed, {item id: value} of each condition (booleans count as 0/1); seed k of A is
    paired with seed k of B (same initialisation and data order). `clusters` ({item id: group},
    e.g. a word problem's template) matters only with one seed (below).

    Why this test. A trained network is one draw from the training process; the question is
    whether the condition changes what that process gives, so the unit of replication is the
    seed. Per seed k, D_k = mean over items of a - b; the test is the one-sample t-test of the
    D_k against 0 with K - 1 degrees of freedom (`scipy.stats.ttest_1samp`), and the CI is its
    t-interval. It never uses more degrees of freedom for seed-to-seed variation than the seeds
    give: with 2 seeds the t quantile is 12.7 and only large effects are found, as they should
    be. Its inference is about THESE items (the enumerated probe pools, the fixed test split):
    item variation that is the same in every seed (an item that is hard in both conditions)
    cancels in D_k; a condition x item interaction does not enter the interval, and a claim
    about other items of the same kind needs the per-template (or per-category) table beside it.
    An earlier version added an item variance component with Satterthwaite's df; a null
    simulation with such an interaction rejected 6.7% at alpha 0.05 and 0.67% at 0.001 with 2
    seeds (nominal 5% and 0.1%), so it is not used. Checked by simulation
    (tests/test_stats.py, numbers in its docstrings): at 2, 3, 5 and 10 seeds, binary items of
    varied difficulty and a per-model offset, the false-positive rate at 0.05 and 0.001 is
    within Monte-Carlo error of nominal or below, and the 95% CI covers the truth >= 94%.

    Ties. With binary items every D_k lies on a grid of step 1/I, so two seeds can agree
    exactly (2.5% of null runs with 2 seeds and 200 items in that simulation), and a t-test
    would divide by a zero spread and call any mean significant. The per-seed spread is
    therefore never taken below the grid's rounding error, step / sqrt(12) (it only acts on
    exact ties: the smallest non-zero spread of two seeds is step / sqrt(2)). This makes the
    2-seed test conservative at alpha 0.001 (no rejection at all in the simulation).

    Values in [0, 1] (accuracies) have a difference of means in [-1, 1], so the interval is
    intersected with [-1, 1]; the true difference always lies there, so coverage is unchanged.
    `ci_unbounded` keeps the t-interval itself.

    Special cases, each named in `method`:
    - one seed: seed variation cannot be estimated; paired t-test over items (`ttest_rel`,
      df I - 1), or with `clusters` over cluster totals (cluster-robust variance, df C - 1):
      items that share a template are not independent evidence. It says whether these two
      networks differ, not whether the condition does.
    - no item differs in any seed (both conditions answer every item alike): delta 0, CI
      [0, 0], p 1; there is no difference to test.

    Returns delta, se, df, ci, ci_unbounded, p, method, a_mean, b_mean, n_seeds, n_items,
    per_seed_deltas (and n_clusters with one seed and clusters).
    """
    if len(a_by_seed) != len(b_by_seed) or not a_by_seed:
        raise ValueError(f"seed_item_test: need the same seeds in both conditions, got {len(a_by_seed)} "
                         f"and {len(b_by_seed)}")
    for ka, kb in zip(a_by_seed, b_by_seed):
        if set(ka) != set(kb) or not ka:
            raise ValueError("seed_item_test: seed k of A and of B must hold the same (non-empty) items")
    K = len(a_by_seed)
    diffs = [np.array([float(ka[i]) - float(kb[i]) for i in sorted(ka, key=str)]) for ka, kb in zip(a_by_seed, b_by_seed)]
    deltas = np.array([d.mean() for d in diffs])
    binary = all(float(v) in (0.0, 1.0) for k in (*a_by_seed, *b_by_seed) for v in k.values())
    if not any(d.any() for d in diffs):
        out = {"delta": 0.0, "se": 0.0, "df": float(max(K - 1, 1)), "ci": (0.0, 0.0), "p": 1.0,
               "method": "no item differs in any seed (nothing to test)"}
    elif K == 1:
        out = _items_test(diffs[0], sorted(a_by_seed[0], key=str), clusters, alpha)
    else:
        step = 1.0 / min(len(d) for d in diffs) if binary else 0.0
        r = seed_t(deltas[None, :], alpha, step)
        out = {k: float(v[0]) for k, v in r.items()}
        out["ci"] = (out.pop("ci_low"), out.pop("ci_high"))
        out["method"] = f"paired t-test on the {K} per-seed deltas (df {K - 1})"
    out["a_mean"] = float(np.mean([np.mean([float(v) for v in k.values()]) for k in a_by_seed]))
    out["b_mean"] = float(np.mean([np.mean([float(v) for v in k.values()]) for k in b_by_seed]))
    out["ci_unbounded"] = out["ci"]
    if all(0.0 <= float(v) <= 1.0 for k in (*a_by_seed, *b_by_seed) for v in k.values()):
        out["ci"] = (max(out["ci"][0], -1.0), min(out["ci"][1], 1.0))
    out["n_seeds"], out["n_items"] = K, int(round(np.mean([len(d) for d in diffs])))
    out["per_seed_deltas"] = [float(x) for x in deltas]
    return out


def seed_t(deltas: np.ndarray, alpha: float = 0.05, step: float = 0.0) -> dict:
    """The seed-level t-test, vectorised over rows: deltas (n, K) -> arrays delta, se, df, p,
    ci_low, ci_high (`seed_item_test`'s arithmetic; the null simulations call it on many rows).

    `step`: the grid the deltas lie on (1 / items for binary items, else 0): the spread is
    never taken below step / sqrt(12), the rounding error of a value on that grid.
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    K = deltas.shape[1]
    mean = deltas.mean(axis=1)
    sd = np.maximum(deltas.std(axis=1, ddof=1), step / math.sqrt(12))
    se = sd / math.sqrt(K)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, np.abs(mean) / se, np.where(mean == 0, 0.0, np.inf))
    p = 2 * stats.t.sf(t, K - 1)
    half = stats.t.ppf(1 - alpha / 2, K - 1) * se
    return {"delta": mean, "se": se, "df": np.full(len(mean), float(K - 1)), "p": p,
            "ci_low": mean - half, "ci_high": mean + half}


def _items_test(d: np.ndarray, ids: list, clusters: Mapping | None, alpha: float) -> dict:
    """One seed: t-test of the mean item difference, over items or over clusters of items."""
    n = len(d)
    if clusters is None:
        groups = np.arange(n)
    else:
        missing = [i for i in ids if i not in clusters]
        if missing:
            raise ValueError(f"seed_item_test: clusters name no group for items {missing[:3]}")
        names = {c: j for j, c in enumerate(dict.fromkeys(clusters[i] for i in ids))}
        groups = np.array([names[clusters[i]] for i in ids])
    C = int(groups.max()) + 1
    # cluster-robust variance of the mean: the sum of squared cluster totals of the deviations
    totals = np.bincount(groups, weights=d - d.mean(), minlength=C)
    var = C / (C - 1) * float(np.sum(totals ** 2)) / n ** 2 if C > 1 else 0.0
    se, df = math.sqrt(var), float(C - 1)
    delta = float(d.mean())
    if se > 0:
        p = float(2 * stats.t.sf(abs(delta) / se, df))
        half = float(stats.t.ppf(1 - alpha / 2, df)) * se
        ci = (delta - half, delta + half)
    else:  # one cluster, or every item differs alike: no spread to test the mean against
        p, ci = 1.0, (-math.inf, math.inf)
    if clusters is None:
        method = "paired t-test over items (one seed: seed variation not estimable)"
    else:
        method = f"t-test over {C} item clusters (one seed: seed variation not estimable)"
    out = {"delta": delta, "se": se, "df": df, "ci": ci, "p": p, "method": method}
    if clusters is not None:
        out["n_clusters"] = C
    return out


def tost(delta: float, se: float, df: float, margin: float, alpha: float = 0.05) -> dict:
    """Two one-sided t-tests of |true difference| < margin (equivalence), at level alpha.

    Equivalence is shown when both one-sided tests reject, i.e. when the (1 - 2 alpha) CI
    (90% for alpha 0.05) lies inside (-margin, +margin). Returns p (the larger one-sided p),
    the 90% CI and `equivalent`.
    """
    if not (margin > 0):
        raise ValueError(f"tost: margin must be positive, got {margin!r}")
    if not (se > 0 and df > 0):
        return {"p": 1.0, "ci90": (-math.inf, math.inf), "equivalent": False}
    p = max(float(stats.t.sf((delta + margin) / se, df)), float(stats.t.cdf((delta - margin) / se, df)))
    half = float(stats.t.ppf(1 - alpha, df)) * se
    ci = (delta - half, delta + half)
    return {"p": p, "ci90": ci, "equivalent": bool(p < alpha)}


def sd_interval(sd: float, df: float, level: float = 0.95) -> tuple[float, float]:
    """Chi-square confidence interval of a normal standard deviation estimated on df degrees
    of freedom: how uncertain a seed SD from a few seeds is (with 2 seeds the 95% interval
    runs from 0.45 to 32 times the estimate)."""
    if not df > 0:
        return (math.nan, math.nan)
    lo = sd * math.sqrt(df / stats.chi2.ppf(0.5 + level / 2, df))
    hi = sd * math.sqrt(df / stats.chi2.ppf(0.5 - level / 2, df))
    return (float(lo), float(hi))


MAX_SEEDS = 10_000


def seeds_for_power(sd: float, effect: float, alpha: float = 0.05, power: float = 0.8,
                    equivalence: bool = False) -> int | None:
    """Seeds a paired t-test on per-seed deltas needs for `power`, if their SD is `sd`.

    equivalence=False: to find a true difference of `effect` (two-sided, level alpha; the
    noncentral t, `scipy.stats.nct`). equivalence=True: to show |difference| < `effect` by
    TOST when the true difference is 0 (power 1 - 2 P(T' <= t_{1-alpha}), T' noncentral with
    effect sqrt(n) / sd; the usual approximation, close for power >= 0.5). None when more than
    MAX_SEEDS would be needed; 2 at least (a t-test needs two).
    """
    if not (sd > 0):
        return 2
    def achieved(n: int) -> float:
        df, nc = n - 1, effect * math.sqrt(n) / sd
        if equivalence:
            return 1 - 2 * float(stats.nct.cdf(stats.t.ppf(1 - alpha, df), df, nc))
        crit = stats.t.ppf(1 - alpha / 2, df)
        return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    lo, hi = 2, 2
    while achieved(hi) < power:  # doubling, then bisection: power grows with n
        lo, hi = hi, hi * 2
        if hi > MAX_SEEDS:
            return None if achieved(MAX_SEEDS) < power else _bisect(achieved, lo, MAX_SEEDS, power)
    return _bisect(achieved, lo, hi, power) if hi > 2 else 2


def _bisect(achieved, lo: int, hi: int, power: float) -> int:
    """The smallest n in (lo, hi] with achieved(n) >= power (achieved(hi) does)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if achieved(mid) >= power else (mid, hi)
    return hi


def min_detectable_effect(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true |difference| a two-sided t-test at level alpha detects with `power`.

    Exact for the t-test above: the test statistic under a true difference delta follows a
    noncentral t (`scipy.stats.nct`) with noncentrality delta / se; the MDE is the delta whose
    rejection probability P(|T| > t_crit) equals `power`, solved with `brentq`. It uses the
    design's own standard error, so it says how large an effect this many seeds and items
    could have found (about (t_crit + t_power) x se).
    """
    if not (se > 0 and df > 0):
        return float("nan")
    crit = stats.t.ppf(1 - alpha / 2, df)

    def reject(nc: float) -> float:
        p = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
        return (1.0 if math.isnan(p) else p) - power  # scipy's nct gives NaN far in the tail: power 1

    hi = crit + 4.0
    while reject(hi) < 0:
        hi *= 2
    return float(optimize.brentq(reject, 0.0, hi, xtol=1e-10) * se)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given); NaN stays NaN, not counted.

    Controls the family-wise error rate over all comparisons under any dependence between
    them (the same runs feed many comparisons). scipy has no Holm; the procedure is four lines:
    the i-th smallest of m p-values is multiplied by (m - i + 1), then made monotone.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(len(p), np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(x) for x in out]


# ---- comparing two items files ----

# Per-item fields that are bookkeeping, not metrics.
_NOT_METRICS = {"id", "seed", "index", "gold", "label", "prompt", "completion", "ids"}


def _metric_fields(row: dict) -> list[str]:
    # pred_* are chosen indices (HellaSwag), not quantities whose mean means anything
    return [k for k, v in row.items() if k not in _NOT_METRICS and not k.startswith("pred_")
            and isinstance(v, (bool, int, float))]


def compare_items(items_a: list[dict], items_b: list[dict], key: str = "id", n_boot: int = 10000,
                  seed: int = 0, names: tuple[str, str] = ("A", "B")) -> dict:
    """Compare two runs of the same benchmark item by item.

    Items are matched by `key`; the two runs must hold the same items (a paired test on
    different items means nothing) and the same benchmark if the rows name one. For every
    numeric or boolean per-item field present in both: mean of A, mean of B, difference with a
    paired bootstrap 95% CI, and for booleans the exact McNemar p (else the bootstrap p).
    """
    def index(items, name):
        out = {}
        for r in items:
            if key not in r:
                raise DomtokError(f"run {name}: an item has no {key!r} field; compare items.jsonl files written by domtok eval")
            if r[key] in out:
                raise DomtokError(f"run {name}: duplicate item {key} {r[key]!r}; is this a merged or corrupted items.jsonl?")
            out[r[key]] = r
        return out

    ia, ib = index(items_a, names[0]), index(items_b, names[1])
    bench_a = {r.get("benchmark") for r in items_a} - {None}
    bench_b = {r.get("benchmark") for r in items_b} - {None}
    if bench_a and bench_b and bench_a != bench_b:
        raise DomtokError(f"runs are different benchmarks ({sorted(bench_a)} vs {sorted(bench_b)}); compare two runs of one benchmark")
    if set(ia) != set(ib):
        only_a, only_b = sorted(set(ia) - set(ib), key=str), sorted(set(ib) - set(ia), key=str)
        raise DomtokError(f"runs hold different items ({len(only_a)} only in {names[0]}, e.g. {only_a[:3]}; "
                          f"{len(only_b)} only in {names[1]}, e.g. {only_b[:3]}); evaluate both on the same items (same n and seed)")
    ids = sorted(ia, key=str)
    if not ids:
        raise DomtokError("runs hold no items")
    fields = [f for f in _metric_fields(ia[ids[0]]) if f in ib[ids[0]]]
    metrics = {}
    for f in fields:
        try:
            va = [ia[i][f] for i in ids]
            vb = [ib[i][f] for i in ids]
        except KeyError:
            continue  # a field only some items have is not a per-item metric
        if any(v is None or isinstance(v, (str, list, dict)) for v in va + vb):
            continue
        boot = paired_bootstrap([float(x) for x in va], [float(x) for x in vb], n_boot=n_boot, seed=seed)
        is_bool = all(isinstance(v, bool) for v in va + vb)
        row = {"a": float(np.mean(va)), "b": float(np.mean(vb)), "delta": boot["diff"], "ci": list(boot["ci"]),
               "p": boot["p"], "test": "bootstrap"}
        if is_bool:
            mc = mcnemar_exact(va, vb)
            row.update(p=mc["p"], test="mcnemar_exact", a_only=mc["a_only"], b_only=mc["b_only"])
        metrics[f] = row
    return {"n": len(ids), "benchmark": (sorted(bench_a) or [None])[0], "metrics": metrics}


from domtok.eval.sequential import sequential_decision  # noqa: E402,F401  (the group-sequential seed test)
