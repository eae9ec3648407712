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
- `seed_item_test(a_by_seed, b_by_seed)`: the headline test of domain − baseline, whose
  95% CI accounts for both seed and item variation (see its docstring for the model).
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


def seed_item_test(a_by_seed: Sequence[Mapping], b_by_seed: Sequence[Mapping], alpha: float = 0.05) -> dict:
    """Mean over seeds of mean(a) - mean(b), with a CI and p that cover seed AND item variation.

    Input: per seed, {item id: value} of each condition (booleans count as 0/1); seed k of A is
    paired with seed k of B (same initialisation and data order), item i with item i.

    Why this test. The question is whether the domain condition is better *in general*: for
    another seed and for other items of the same kind. Both are random samples, so both are
    random effects, and an interval that ignores either is too narrow (Clark 1973, "the
    language-as-fixed-effect fallacy"). A t-interval on the per-seed deltas alone misses the
    item variation: every seed is scored on the SAME items, so the luck of which items were
    drawn is shared by all seeds and invisible between them. A paired test over items alone
    (McNemar) misses the seed variation. With K seeds x I items of per-item differences
    d[k, i] = a - b, the crossed random-effects model d = mu + s_k + u_i + e_ki gives
        Var(mean d) = s2_seed / K + s2_item / I + s2_resid / (K I),
    estimated from the two-way ANOVA mean squares as
        (MS_seed + MS_item - MS_resid) / (K I)
    (unbiased; a negative variance component is then set to 0, i.e. MS_seed or MS_item is
    raised to MS_resid, which errs on the high side). The t reference distribution has
    Satterthwaite's degrees of freedom for that combination of mean squares; CI and p come
    from `scipy.stats.t`. So when the seeds agree within item noise (MS_seed <= MS_resid) they
    are pooled and df is about I - 1; when they disagree, the seed variance enters with its
    K - 1 degrees of freedom (2 for 3 seeds) and only large effects can be detected: that is
    the price of three seeds, and `min_detectable_effect` shows it. Checked by simulation
    (tests/test_stats.py): with 3 seeds the 95% intervals cover at least 92% of the time
    (about 93% when seed variation dominates), where a test over items alone rejects a true
    null in about half the runs once seeds vary. This is an analytic two-way (pigeonhole) design rather than a
    bootstrap: with three seeds a bootstrap over seeds has only 10 distinct resamples and
    understates the seed variance by a third.

    Values in [0, 1] (accuracies) have a difference of means in [-1, 1], so the interval is
    intersected with [-1, 1] (with 2 degrees of freedom a t-interval can reach past it); the
    true difference always lies there, so the coverage is unchanged. `ci_unbounded` keeps the
    t-interval itself.

    Special cases, each named in `method`:
    - one seed: seed variation cannot be estimated; paired t-test over items (`ttest_rel`).
    - seeds scored on different items: items are nested in seeds, so the per-seed deltas
      already vary with the items; t-test on the per-seed deltas (`ttest_1samp`, df = K - 1).
    """
    if len(a_by_seed) != len(b_by_seed) or not a_by_seed:
        raise ValueError(f"seed_item_test: need the same seeds in both conditions, got {len(a_by_seed)} "
                         f"and {len(b_by_seed)}")
    for ka, kb in zip(a_by_seed, b_by_seed):
        if set(ka) != set(kb) or not ka:
            raise ValueError("seed_item_test: seed k of A and of B must hold the same (non-empty) items")
    ids = sorted(a_by_seed[0], key=str)
    crossed = all(set(k) == set(ids) for k in a_by_seed)
    K = len(a_by_seed)
    if crossed:
        d = np.array([[float(ka[i]) - float(kb[i]) for i in ids] for ka, kb in zip(a_by_seed, b_by_seed)])
        out = _crossed(d) if K > 1 else _items_only(d[0])
    else:
        deltas = np.array([np.mean([float(ka[i]) - float(kb[i]) for i in ka]) for ka, kb in zip(a_by_seed, b_by_seed)])
        out = _seeds_only(deltas)
    out["a_mean"] = float(np.mean([np.mean([float(v) for v in k.values()]) for k in a_by_seed]))
    out["b_mean"] = float(np.mean([np.mean([float(v) for v in k.values()]) for k in b_by_seed]))
    out.update(_t_ci_p(out["delta"], out["se"], out["df"], alpha))
    out["ci_unbounded"] = out["ci"]
    if all(0.0 <= float(v) <= 1.0 for k in (*a_by_seed, *b_by_seed) for v in k.values()):
        out["ci"] = (max(out["ci"][0], -1.0), min(out["ci"][1], 1.0))
    out["n_seeds"], out["n_items"] = K, len(ids) if crossed else int(np.mean([len(k) for k in a_by_seed]))
    return out


def _crossed(d: np.ndarray) -> dict:
    K, I = d.shape
    grand = d.mean()
    seed_means, item_means = d.mean(axis=1), d.mean(axis=0)
    ms_seed = I * np.sum((seed_means - grand) ** 2) / (K - 1)
    if I == 1:  # one item: nothing but seed variation
        return {"delta": float(grand), "se": float(math.sqrt(ms_seed / K)), "df": float(K - 1),
                "method": "t-test on per-seed deltas (one item)", "ms": {"seed": float(ms_seed)}}
    ms_item = K * np.sum((item_means - grand) ** 2) / (I - 1)
    resid = d - seed_means[:, None] - item_means[None, :] + grand
    ms_resid = np.sum(resid ** 2) / ((K - 1) * (I - 1))
    # Var(mean) * K * I = MS_seed' + MS_item' - MS_resid, with MS' = max(MS, MS_resid) (no
    # negative variance component); each term with its degrees of freedom for Satterthwaite.
    terms = [(max(ms_seed, ms_resid), K - 1 if ms_seed >= ms_resid else (K - 1) * (I - 1)),
             (max(ms_item, ms_resid), I - 1 if ms_item >= ms_resid else (K - 1) * (I - 1)),
             (-ms_resid, (K - 1) * (I - 1))]
    total = sum(m for m, _ in terms)
    se = math.sqrt(max(total, 0.0) / (K * I))
    denom = sum(m * m / df for m, df in terms)
    df = float(total * total / denom) if denom > 0 else float((K - 1) * (I - 1))
    return {"delta": float(grand), "se": se, "df": df,
            "method": "crossed seeds x items (ANOVA variance components, Satterthwaite df)",
            "ms": {"seed": float(ms_seed), "item": float(ms_item), "resid": float(ms_resid)}}


def _items_only(d: np.ndarray) -> dict:
    I = len(d)
    se = float(d.std(ddof=1) / math.sqrt(I)) if I > 1 else 0.0
    return {"delta": float(d.mean()), "se": se, "df": float(I - 1),
            "method": "paired t-test over items (one seed: seed variation not estimable)"}


def _seeds_only(deltas: np.ndarray) -> dict:
    K = len(deltas)
    se = float(deltas.std(ddof=1) / math.sqrt(K)) if K > 1 else 0.0
    return {"delta": float(deltas.mean()), "se": se, "df": float(K - 1),
            "method": "t-test on per-seed deltas (seeds scored on different items)"}


def _t_ci_p(delta: float, se: float, df: float, alpha: float) -> dict:
    if se == 0 or not df > 0:
        # No spread at all: every seed and item shows the same difference (0 when both
        # conditions answer every item alike), so there is no noise to test it against.
        return {"ci": (delta, delta), "p": 1.0 if delta == 0 else 0.0}
    half = stats.t.ppf(1 - alpha / 2, df) * se
    return {"ci": (float(delta - half), float(delta + half)), "p": float(2 * stats.t.sf(abs(delta) / se, df))}


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
