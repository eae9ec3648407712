"""Statistics for comparing evaluation runs: intervals, paired tests, tests over seeds.

Everything here is pure Python + numpy (scipy is not a dependency): the exact binomial
for McNemar, and the Student t distribution through the regularised incomplete beta function
(Numerical Recipes' continued fraction), checked against scipy in the tests when present.

- `wilson_ci(k, n)`: 95% interval for one proportion (good at small n and near 0 or 1,
  where the normal interval breaks -- GSM8K accuracies of 2% are exactly there).
- `paired_bootstrap(a, b)`: CI of mean(a - b) over the SAME items, resampling items.
- `mcnemar_exact(a, b)`: exact two-sided p on the discordant pairs of two boolean vectors.
- `compare_items(items_a, items_b)`: match two items.jsonl files by id, all of the above per metric.
- `across_seeds(values_a, values_b=None)`: mean ± std over seeds; Welch's t-test between
  two conditions (or a one-sample t-test of the values against 0).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from domtok.errors import DomtokError


def wilson_ci(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes out of n trials."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"wilson_ci: need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # exact ends: rounding must not make 0/n or n/n exclude the observed proportion
    return (0.0 if k == 0 else lo, 1.0 if k == n else hi)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Percentile bootstrap CI of mean(a) - mean(b) over paired items.

    Items are resampled with replacement (the same index for a and b, which keeps the pairing);
    `p` is the two-sided bootstrap p-value: twice the share of resampled differences on the
    other side of zero (bounded below by 1/n_boot).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_bootstrap: a and b must be 1-D of the same length, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        return {"diff": float("nan"), "ci": (float("nan"), float("nan")), "p": float("nan"), "n": 0}
    d = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)  # bound memory: n_boot x n indices at most ~2M at a time
    for s in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - s), n))
        means[s:s + len(idx)] = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    diff = float(d.mean())
    if np.all(d == 0):
        p = 1.0
    else:
        tail = min(np.mean(means <= 0), np.mean(means >= 0))
        p = float(min(1.0, max(2 * tail, 1.0 / n_boot)))
    return {"diff": diff, "ci": (float(lo), float(hi)), "p": p, "n": n}


def binom_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided binomial test p-value for k of n with p = 1/2 (min(1, 2 * smaller tail))."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """Exact McNemar test: a binomial(n01 + n10, 1/2) test on the discordant pairs."""
    if len(a_correct) != len(b_correct):
        raise ValueError(f"mcnemar_exact: lengths differ ({len(a_correct)} vs {len(b_correct)})")
    a_only = sum(1 for x, y in zip(a_correct, b_correct) if x and not y)
    b_only = sum(1 for x, y in zip(a_correct, b_correct) if y and not x)
    return {"a_only": a_only, "b_only": b_only, "p": binom_two_sided_p(a_only, a_only + b_only)}


# ---- Student t distribution, from the regularised incomplete beta function ----

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc_reg(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value of Student's t with df degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    if math.isnan(t) or df <= 0:
        return float("nan")
    if math.isinf(t):
        return 0.0
    return betainc_reg(df / 2, 0.5, df / (df + t * t))


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's unequal-variance t-test of mean(a) vs mean(b)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return {"t": float("nan"), "df": float("nan"), "p": float("nan")}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = a.mean() - b.mean()
    if va + vb == 0:
        return {"t": float("nan") if diff == 0 else math.copysign(math.inf, diff), "df": float(len(a) + len(b) - 2),
                "p": 1.0 if diff == 0 else 0.0}
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return {"t": float(t), "df": float(df), "p": t_two_sided_p(float(t), float(df))}


def one_sample_t_test(x: Sequence[float], mu: float = 0.0) -> dict:
    """t-test of mean(x) == mu (use on per-seed differences for a paired test over seeds)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return {"t": float("nan"), "df": float("nan"), "p": float("nan")}
    sd = x.std(ddof=1)
    diff = x.mean() - mu
    df = float(len(x) - 1)
    if sd == 0:
        return {"t": float("nan") if diff == 0 else math.copysign(math.inf, diff), "df": df, "p": 1.0 if diff == 0 else 0.0}
    t = diff / (sd / math.sqrt(len(x)))
    return {"t": float(t), "df": df, "p": t_two_sided_p(float(t), df)}


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
