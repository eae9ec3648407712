"""`domtok run --seeds auto`: run seeds in looks until the primary endpoint decides.

A spec's `sequential: {max_seeds, per_look, spending}` section (read with the spec by
`domtok.eval.sequential.parse_sequential`) declares the plan (e.g. tiny:
at most 12 seeds, looks of 3, O'Brien-Fleming-type spending). The driver runs the study for
the first `per_look` seeds of every condition, reads the primary endpoint's paired per-seed
deltas (`domtok.report.primary.primary_deltas`), asks `domtok.eval.stats.sequential_decision`,
and either stops (`helps`, `hurts`, `equivalent`, or `undecided` at max_seeds) or runs the next
`per_look` seeds. The seeds come in one order (`seed_order`: the spec's, then the next integers
that are not tuning seeds), so look k always holds the same seeds.

Every look is recorded in `<run dir>/looks.json` (written atomically after the look's test):
{"plan": {...}, "looks": [{"look", "seeds", "n", "per_seed_deltas", "decision", "reason",
"boundary", "t", "delta", "ci"}], "decision", "stopped_because", "seeds_used", "biased", "wall_seconds" (summed over every
`--seeds auto` invocation of this run dir, up to its last recorded look)}. A killed or
rerun study replays the recorded looks against the seeds already finished (the pipeline skips
finished nodes), so it reaches the same decision; a recorded look whose deltas differ from the
run dir's (the spec changed) is an error, not a silent new answer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from domtok.config import atomic_write_json
from domtok.errors import DomtokError

LOOKS_FILE = "looks.json"


def seed_order(spec, max_seeds: int) -> list[int]:
    """The seeds in the order the looks take them: the spec's own, then the next integers
    (never a `tuning_seeds` one)."""
    seeds = list(spec.seeds)[:max_seeds]
    nxt = max(spec.seeds) + 1 if spec.seeds else 0
    while len(seeds) < max_seeds:
        if nxt not in spec.tuning_seeds:
            seeds.append(nxt)
        nxt += 1
    return seeds


def check_plan(spec) -> float | None:
    """What --seeds auto needs from the spec, checked before anything runs: a `sequential:`
    section and a `primary:` endpoint. Returns the primary's margin."""
    if spec.sequential is None:
        raise DomtokError(f"{spec.path or spec.name}: --seeds auto needs a `sequential: {{max_seeds, per_look, "
                          "spending}` section in the spec; add one, or give --seeds N")
    if not spec.primary:
        raise DomtokError(f"{spec.path or spec.name}: --seeds auto tests the spec's primary endpoint; add "
                          "`primary: {benchmark, metric, stage, margin}`")
    return spec.primary.get("margin")


def read_looks(run_dir: Path) -> dict | None:
    path = Path(run_dir) / LOOKS_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DomtokError(f"{path}: not valid JSON ({e}); it is domtok's record of the looks: restore it, or "
                          "move it away to start the looks again") from None


def _look_entry(k: int, seeds: list[int], deltas: list[float], r: dict) -> dict:
    return {"look": k, "seeds": seeds, "n": len(seeds), "per_seed_deltas": deltas, "decision": r["decision"],
            "reason": r["reason"], "boundary": r["boundary"], "equivalence_boundary":
            r["equivalence_boundaries"][k - 1], "t": r["t"], "df": r["df"], "delta": r["delta"], "se": r["se"],
            "ci": r["ci"]}


def run_sequential(spec, opts, run_experiment, deltas_fn=None, say=print) -> int:
    """Run `spec` look by look until the primary endpoint decides (see the module docstring).

    `run_experiment(spec, opts) -> rc` runs (or resumes) the study for `spec.seeds`;
    `deltas_fn(run_dir) -> [float]` gives the primary's per-seed deltas of the run dir's seeds
    (default `domtok.report.primary.primary_deltas`). Returns the last run's exit code."""
    import dataclasses

    from domtok.eval.stats import sequential_decision
    from domtok.report import write_report
    from domtok.report.compare import lower_is_better

    margin = check_plan(spec)
    if deltas_fn is None:
        from domtok.report.primary import primary_deltas as deltas_fn
    plan = dict(spec.sequential)
    # a gold_*bpb primary is lower-is-better: the test runs on baseline − domain, so helps = fewer bits
    lower = lower_is_better(spec.primary["metric"])
    run_dir = Path(spec.runs_dir) / spec.name
    order = seed_order(spec, plan["max_seeds"])
    record_plan = {**plan, "margin": margin, "seed_order": order, "lower_is_better": lower}
    old = read_looks(run_dir)
    if old is not None and old.get("plan") != record_plan:
        raise DomtokError(f"{run_dir / LOOKS_FILE}: recorded for another plan ({old.get('plan')}); this spec's is "
                          f"{record_plan}; use another run dir (--runs-dir) or restore the spec")
    recorded = (old or {}).get("looks", [])
    looks: list[dict] = []
    t0 = time.time()
    wall_before = float((old or {}).get("wall_seconds") or 0.0)
    from domtok.eval.sequential import look_sizes

    for k, n in enumerate(look_sizes(plan["max_seeds"], plan["per_look"]), start=1):
        seeds = order[:n]
        say(f"domtok run --seeds auto: look {k}: seeds {seeds}")
        raw = {**spec.raw, "seeds": seeds}
        rc = run_experiment(dataclasses.replace(spec, seeds=seeds, raw=raw), opts)  # (opts: no report of its own)
        if rc != 0:
            say(f"look {k}: the run did not finish every node (exit {rc}); no decision recorded for it; report: "
                f"{write_report(run_dir)}")
            return rc
        deltas = [float(x) for x in deltas_fn(run_dir)]
        if len(deltas) != n:
            raise DomtokError(f"{run_dir}: look {k} expected the primary endpoint for {n} seeds, found {len(deltas)}")
        r = sequential_decision([-x for x in deltas] if lower else deltas, max_seeds=plan["max_seeds"],
                                per_look=plan["per_look"], alpha=plan["alpha"], margin=margin,
                                spending=plan["spending"])
        entry = _look_entry(k, seeds, deltas, r)
        if k <= len(recorded) and recorded[k - 1]["per_seed_deltas"] != deltas:
            raise DomtokError(f"{run_dir / LOOKS_FILE}: look {k} recorded deltas {recorded[k - 1]['per_seed_deltas']}, "
                              f"the run dir now gives {deltas}; the results changed under the record: restore them, "
                              "or start the looks in a new run dir")
        looks.append(entry)
        final = r["decision"] != "continue"
        result = {"plan": record_plan, "looks": looks, "decision": r["decision"] if final else None,
                  "stopped_because": r["reason"] if final else None, "seeds_used": n if final else None,
                  "biased": r["biased"], "wall_seconds": wall_before + time.time() - t0}
        atomic_write_json(run_dir / LOOKS_FILE, result)
        say(f"look {k}: {r['decision']}: {r['reason']}")
        path = write_report(run_dir)  # the report answers with the look just recorded
        if final:
            break
    say(f"domtok run --seeds auto: {result['decision']} after {result['seeds_used']} seeds per condition; report: {path}")
    return 0
