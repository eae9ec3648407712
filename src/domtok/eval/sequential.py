"""A group-sequential test over seeds: buy the seeds a decision needs, and control the error of
looking more than once.

The data are the paired per-seed differences `domain - baseline` of one endpoint (one trained
model per condition and seed). They arrive in looks of `per_look` seeds, up to `max_seeds`.
After each look the one-sample t statistic `t = mean / (sd / sqrt(n))` on `n - 1` degrees of
freedom is compared with that look's boundary `c_k`:

- `|t| >= c_k`: stop, `helps` (t > 0) or `hurts` (t < 0);
- else, when a margin is given and the repeated (1 - 2 alpha) interval `mean +- e_k * se` lies
  inside `(-margin, +margin)`: stop, `equivalent` (two one-sided tests at level alpha each, with
  their own boundaries `e_k`);
- else `continue`, or `undecided` once `max_seeds` deltas are in (never `continue` then).

Boundaries. The two-sided alpha is spent over the looks by a Lan-DeMets spending function of
the information fraction `f = n / max_seeds`:
    "obrien-fleming": alpha(f) = 2 (2 - 2 Phi(z_{1-alpha/4} / sqrt(f)))  (alpha/2 per side, spent
                      almost entirely at the late looks)
    "pocock":         alpha(f) = alpha * ln(1 + (e - 1) f)                 (spent evenly)
Textbook boundaries are z values for a known variance; with 3 to 12 seeds the variance is
estimated from few seeds and a z boundary on the t statistic would reject far too often. So the
boundaries here are for the t statistic itself: the first look's is the exact t quantile
(`scipy.stats.t`), each later one the value that makes P(stop first at look k with |t| >= c_k)
equal to the alpha spent at look k, computed by Monte-Carlo over normal per-seed deltas (the t
statistic's null distribution does not depend on the seed SD). The simulation draws only the
sufficient statistics of each look (the batch's sum, normal, and its within-batch sum of
squares, chi-square), 200,000 paths from a fixed generator seed: same arguments, same
boundaries. The resulting error rate is checked by an independent simulation in
tests/test_sequential.py. Looks with fewer than 2 deltas test nothing (no SD) and spend nothing.

The estimate after an early stop is biased away from zero: a study stops early when its deltas
happened to be large. `sequential_decision` reports the plain mean (`delta`) and says so;
`operating_characteristics` simulates the design (power, expected seeds, the mean estimate at
stopping) so a planner can see the size of that bias.

A spec's `sequential: {max_seeds, per_look, spending, alpha}` section is checked here too
(`parse_sequential`, its `DEFAULTS`); `domtok.sequential_run` drives the looks.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import stats

from domtok.config import ConfigError

SPENDINGS = ("obrien-fleming", "pocock")
# A spec's `sequential:` section (`parse_sequential`): its keys and their defaults.
SEQUENTIAL_KEYS = ("max_seeds", "per_look", "spending", "alpha")
DEFAULTS = {"max_seeds": 12, "per_look": 3, "spending": "obrien-fleming", "alpha": 0.05}
N_PATHS = 200_000      # Monte-Carlo paths behind each boundary
BOUNDARY_SEED = 20260  # the generator seed of that simulation: the boundaries are deterministic


def parse_sequential(raw, where: str) -> dict | None:
    """The spec's `sequential:` section, checked and with its defaults; None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: `sequential` must be a mapping {{max_seeds, per_look, spending}}, got {raw!r}")
    unknown = sorted(set(raw) - set(SEQUENTIAL_KEYS))
    if unknown:
        raise ConfigError(f"{where}: sequential: unknown keys {unknown}; allowed: {list(SEQUENTIAL_KEYS)}")
    plan = {**DEFAULTS, **raw}
    for key in ("max_seeds", "per_look"):
        if not isinstance(plan[key], int) or isinstance(plan[key], bool) or plan[key] < 1:
            raise ConfigError(f"{where}: sequential.{key} must be a positive integer, got {plan[key]!r}")
    if plan["max_seeds"] < 2 or plan["per_look"] > plan["max_seeds"]:
        raise ConfigError(f"{where}: sequential: need 2 <= max_seeds and per_look <= max_seeds, got "
                          f"max_seeds {plan['max_seeds']}, per_look {plan['per_look']}")
    if plan["spending"] not in SPENDINGS:
        raise ConfigError(f"{where}: sequential.spending {plan['spending']!r}; one of {list(SPENDINGS)}")
    if not isinstance(plan["alpha"], (int, float)) or not 0 < plan["alpha"] < 1:
        raise ConfigError(f"{where}: sequential.alpha must be in (0, 1), got {plan['alpha']!r}")
    return plan


def spent_alpha(fraction: float, alpha: float, spending: str) -> float:
    """Cumulative two-sided alpha spent at information fraction `fraction` (0 < f <= 1)."""
    f = min(max(fraction, 0.0), 1.0)
    if f == 0.0:
        return 0.0
    if spending == "obrien-fleming":  # alpha/2 spent on each side, as ldbounds and gsDesign do
        return float(2.0 * (2.0 - 2.0 * stats.norm.cdf(stats.norm.ppf(1.0 - alpha / 4.0) / math.sqrt(f))))
    if spending == "pocock":
        return float(alpha * math.log(1.0 + (math.e - 1.0) * f))
    raise ValueError(f"spending must be one of {SPENDINGS}, got {spending!r}")


def look_sizes(max_seeds: int, per_look: int) -> list[int]:
    """Seeds in hand at each look: per_look, 2 per_look, ..., max_seeds (the last look may be smaller)."""
    if max_seeds < 2:
        raise ValueError(f"max_seeds must be >= 2 (a t statistic needs two deltas), got {max_seeds}")
    if per_look < 1:
        raise ValueError(f"per_look must be >= 1, got {per_look}")
    sizes = list(range(per_look, max_seeds, per_look))
    return sizes + [max_seeds]


def _looks(sizes: list[int], n_paths: int, rng, effect: float = 0.0, sd: float = 1.0):
    """For `n_paths` simulated studies of N(effect, sd^2) deltas, yield (mean, se) arrays at each
    look (se nan where n < 2), one look at a time (memory O(n_paths), whatever the looks).

    Exact in distribution: per batch of m deltas, draw its sum ~ N(m effect, m sd^2) and its
    within-batch sum of squares about the batch mean ~ sd^2 chi2(m - 1)."""
    s = np.zeros(n_paths)
    q = np.zeros(n_paths)
    prev = 0
    for n in sizes:
        m = n - prev
        batch_sum = rng.standard_normal(n_paths) * (sd * math.sqrt(m)) + m * effect
        within = rng.chisquare(m - 1, n_paths) * sd**2 if m > 1 else np.zeros(n_paths)
        s += batch_sum
        q += within + batch_sum**2 / m
        prev = n
        mean = s / n
        se = np.sqrt(np.maximum(q - s**2 / n, 0.0) / (n - 1) / n) if n >= 2 else np.full(n_paths, np.nan)
        yield mean, se


def _t(mean: np.ndarray, se: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, mean / se, np.sign(mean) * np.inf)


@lru_cache(maxsize=64)
def boundaries(max_seeds: int, per_look: int, alpha: float = 0.05, spending: str = "obrien-fleming") -> dict:
    """The design's boundaries: {"looks": [n_k], "boundary": [c_k], "alpha_spent": [cumulative]}.

    `c_k` is a bound on |t| (two-sided `alpha`); inf where a look tests nothing (n < 2).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if spending not in SPENDINGS:
        raise ValueError(f"spending must be one of {SPENDINGS}, got {spending!r}")
    sizes = look_sizes(max_seeds, per_look)
    rng = np.random.default_rng(BOUNDARY_SEED)
    alive = np.ones(N_PATHS, dtype=bool)
    bounds, spent, rejected = [], [], 0
    for k, (n, (mean, se)) in enumerate(zip(sizes, _looks(sizes, N_PATHS, rng))):
        target = spent_alpha(n / max_seeds, alpha, spending) if n >= 2 else 0.0
        if n < 2:
            bounds.append(math.inf)
            spent.append(target)
            continue
        t = np.abs(_t(mean, se))
        if not any(m >= 2 for m in sizes[:k]):
            # the first tested look: the exact t quantile
            bounds.append(float(stats.t.ppf(1.0 - target / 2.0, n - 1)))
        else:
            # reject the paths still running whose |t| is largest, as many as the alpha still to spend
            want = int(round(target * N_PATHS)) - rejected
            vals = -np.sort(-t[alive])
            if want <= 0:
                bounds.append(float(vals[0]) * (1 + 1e-9) if len(vals) else math.inf)
            else:
                want = min(want, len(vals))
                # midway between the last rejected and the first kept value
                lo = vals[want] if want < len(vals) else vals[want - 1]
                bounds.append(float((vals[want - 1] + lo) / 2.0))
        hit = alive & (t >= bounds[-1])
        rejected += int(hit.sum())
        alive &= ~hit
        spent.append(target)
    return {"looks": sizes, "boundary": bounds, "alpha_spent": spent}


def sequential_decision(per_seed_deltas: Sequence[float], *, max_seeds: int, per_look: int, alpha: float = 0.05,
                        margin: float | None, spending: str = "obrien-fleming") -> dict:
    """The group-sequential decision after the deltas seen so far (see the module docstring).

    `per_seed_deltas`: paired domain - baseline differences, one per seed, in the order the
    seeds were run. The decision is taken at the last complete look (n_k <= len(deltas), using
    the first n_k deltas); deltas past max_seeds are ignored. Returns
    {"decision", "reason", "look", "n", "looks", "boundaries", "equivalence_boundaries",
     "alpha_spent", "boundary", "t", "df", "delta", "se", "ci" (the repeated 1 - alpha interval
     mean +- c_k se), "margin", "alpha", "spending", "max_seeds", "per_look", "biased": bool}.
    """
    d = np.asarray([float(x) for x in per_seed_deltas], dtype=float)
    if not np.all(np.isfinite(d)):
        raise ValueError("sequential_decision: every per-seed delta must be a finite number")
    if margin is not None and not margin >= 0:
        raise ValueError(f"sequential_decision: margin must be >= 0 or None, got {margin}")
    design = boundaries(max_seeds, per_look, alpha, spending)
    equiv = boundaries(max_seeds, per_look, min(2 * alpha, 0.999), spending)
    sizes = design["looks"]
    base = {"looks": list(sizes), "boundaries": list(design["boundary"]),
            "equivalence_boundaries": list(equiv["boundary"]), "alpha_spent": list(design["alpha_spent"]),
            "margin": margin, "alpha": alpha, "spending": spending, "max_seeds": max_seeds, "per_look": per_look}
    done = [k for k, n in enumerate(sizes) if n <= len(d)]
    if not done:
        return {**base, "decision": "continue", "look": 0, "n": len(d), "boundary": None, "t": None, "df": None,
                "delta": float(d.mean()) if len(d) else None, "se": None, "ci": None, "biased": False,
                "reason": f"{len(d)} of the first look's {sizes[0]} seeds are in"}
    k = done[-1]
    n = sizes[k]
    x = d[:n]
    final = n == sizes[-1]
    mean = float(x.mean())
    c, e = design["boundary"][k], equiv["boundary"][k]
    out = {**base, "look": k + 1, "n": n, "boundary": c, "delta": mean, "df": n - 1 if n >= 2 else None}
    sd = float(x.std(ddof=1)) if n >= 2 else 0.0
    if sd == 0.0:  # one seed, or every delta equal: no seed SD to test against, so no test
        why = "one seed gives no SD" if n < 2 else "every per-seed delta is equal: no seed SD to test against"
        return {**out, "decision": "undecided" if final else "continue", "t": None, "se": None, "ci": None,
                "biased": False, "reason": f"{why} at look {k + 1} ({n} seeds)"}
    se = sd / math.sqrt(n)
    t = mean / se
    out.update(t=t, se=se, ci=[mean - c * se, mean + c * se] if math.isfinite(c) else None)
    early = not final
    if abs(t) >= c:
        word = "helps" if t > 0 else "hurts"
        return {**out, "decision": word, "biased": early,
                "reason": f"|t| = {abs(t):.3f} >= boundary {c:.3f} at look {k + 1} ({n} seeds)"}
    if margin is not None and margin > 0 and abs(mean) + e * se < margin:
        return {**out, "decision": "equivalent", "biased": early,
                "reason": f"the {1 - 2 * alpha:.0%} repeated interval [{mean - e * se:+.4f}, {mean + e * se:+.4f}] "
                          f"lies inside +-{margin} at look {k + 1} ({n} seeds)"}
    if final:
        return {**out, "decision": "undecided", "biased": False,
                "reason": f"max_seeds ({max_seeds}) reached: |t| = {abs(t):.3f} < boundary {c:.3f}"
                          + ("" if not margin else f" and the interval is not inside +-{margin}")}
    return {**out, "decision": "continue", "biased": False,
            "reason": f"|t| = {abs(t):.3f} < boundary {c:.3f} at look {k + 1} ({n} seeds)"}


def operating_characteristics(effect: float, *, max_seeds: int, per_look: int, alpha: float = 0.05,
                              margin: float | None = None, spending: str = "obrien-fleming", sd: float = 1.0,
                              n_sim: int = 20_000, seed: int = 0) -> dict:
    """Simulated behaviour of the design for a true mean delta `effect` and seed SD `sd`
    (normal deltas): {"power" (P(helps) for effect > 0, P(hurts) for < 0, P(either) for 0),
    "p_helps", "p_hurts", "p_equivalent", "p_undecided", "expected_seeds", "stop_at" (share
    stopping at each look), "mean_estimate" (mean delta at stopping, to see the bias)}.
    Deterministic in `seed`; the decisions are exactly `sequential_decision`'s rule."""
    design = boundaries(max_seeds, per_look, alpha, spending)
    equiv = boundaries(max_seeds, per_look, min(2 * alpha, 0.999), spending) if margin else None
    sizes = design["looks"]
    rng = np.random.default_rng(seed)
    decision = np.zeros(n_sim, dtype=np.int8)  # 0 running/undecided, 1 helps, 2 hurts, 3 equivalent
    stop_look = np.full(n_sim, len(sizes) - 1)
    est = np.zeros(n_sim)
    alive = np.ones(n_sim, dtype=bool)
    for k, (n, (mean, se)) in enumerate(zip(sizes, _looks(sizes, n_sim, rng, effect, sd))):
        est[alive] = mean[alive]
        if n < 2:
            continue
        tk = _t(mean, se)
        c = design["boundary"][k]
        rej = alive & (np.abs(tk) >= c)
        decision[rej & (tk > 0)] = 1
        decision[rej & (tk < 0)] = 2
        eq = (alive & ~rej & (np.abs(mean) + equiv["boundary"][k] * se < margin) if equiv
              else np.zeros(n_sim, dtype=bool))
        decision[eq] = 3
        stop_look[rej | eq] = k
        alive &= ~(rej | eq)
    p = {w: float(np.mean(decision == code)) for code, w in enumerate(("undecided", "helps", "hurts", "equivalent"))}
    power = p["helps"] if effect > 0 else p["hurts"] if effect < 0 else p["helps"] + p["hurts"]
    seeds = np.asarray(sizes)[stop_look]
    return {"effect": effect, "sd": sd, "power": power, "p_helps": p["helps"], "p_hurts": p["hurts"],
            "p_equivalent": p["equivalent"], "p_undecided": p["undecided"], "expected_seeds": float(seeds.mean()),
            "max_seeds": max_seeds, "looks": list(sizes),
            "stop_at": [float(np.mean(stop_look == k)) for k in range(len(sizes))],
            "mean_estimate": float(est.mean()), "n_sim": n_sim}


def sequential_plan(effect: float, sd: float, *, per_look: int, alpha: float = 0.05, power: float = 0.8,
                    spending: str = "obrien-fleming", margin: float | None = None, start: int = 2,
                    limit: int = 200, n_sim: int = 10_000) -> dict | None:
    """The smallest sequential design (max_seeds a multiple of per_look, at least `start`) whose
    simulated power for a true mean delta `effect` with seed SD `sd` is at least `power`:
    `operating_characteristics` of it, plus `expected_seeds_null` (the seeds it spends when there
    is no effect). Pass the fixed design's seeds as `start`: the last boundary of a sequential
    design is above the fixed test's, so it never needs fewer seeds at most. Bisection over the
    multiples of per_look (power grows with max_seeds, up to Monte-Carlo error). None when more
    than `limit` seeds would be needed."""
    if not (sd > 0) or effect == 0 or start > limit:
        return None

    def oc(k: int) -> dict:
        return operating_characteristics(effect, max_seeds=k * per_look, per_look=per_look, alpha=alpha,
                                         margin=margin, spending=spending, sd=sd, n_sim=n_sim)

    lo = max(1, -(-max(2, start) // per_look)) - 1   # multiples of per_look: lo fails (or is 0), hi passes
    top = limit // per_look
    hi = min(top, max(lo + 1, math.ceil((lo + 1) * 1.15)))
    best = oc(hi)
    while best["power"] < power:
        if hi >= top:
            return None
        lo, hi = hi, min(top, hi * 2)
        best = oc(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mid * per_look < 2:
            lo = mid
            continue
        r = oc(mid)
        lo, hi, best = (lo, mid, r) if r["power"] >= power else (mid, hi, best)
    null = operating_characteristics(0.0, max_seeds=hi * per_look, per_look=per_look, alpha=alpha, margin=margin,
                                     spending=spending, sd=sd, n_sim=n_sim)
    return {**best, "per_look": per_look, "spending": spending, "alpha": alpha,
            "expected_seeds_null": null["expected_seeds"]}


def bias_adjusted(delta: float, sd: float, *, max_seeds: int, per_look: int, alpha: float = 0.05,
                  margin: float | None = None, spending: str = "obrien-fleming", iterations: int = 8,
                  n_sim: int = 20_000) -> float:
    """Whitehead's bias-adjusted estimate: the true mean delta theta whose expected estimate at
    stopping under this design equals the observed `delta` (E[mean at stop | theta] = delta),
    found by fixed-point iteration theta <- delta - (E[mean at stop | theta] - theta), each
    expectation simulated (`operating_characteristics`, fixed generator seed) with the seed SD
    `sd` taken as known. It shrinks an early stop's estimate toward zero."""
    theta = delta
    if not (sd > 0):
        return delta
    for _ in range(iterations):
        m = operating_characteristics(theta, max_seeds=max_seeds, per_look=per_look, alpha=alpha, margin=margin,
                                      spending=spending, sd=sd, n_sim=n_sim)["mean_estimate"]
        theta = delta - (m - theta)
    return float(theta)
