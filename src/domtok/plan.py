"""`domtok plan RUN_DIR_OR_SPEC --effect X`: how many seeds, and what they cost, for a decision.

From a finished pilot's per-seed deltas of the primary endpoint (domain - baseline, one per
seed: `domtok.report.primary.primary_deltas`) or a given `--sd`, it prints the seeds each
condition needs for 80% power (`--power`) to find a true difference of X:

- fixed design: a paired t-test on all seeds at once (`stats.seeds_for_power`, noncentral t);
- the sequential plan of the spec's `sequential:` section (looks of per_look seeds, its alpha
  spending): the smallest max_seeds with that power, and the seeds it is expected to spend
  when the difference is X and when there is none (`eval.sequential.sequential_plan`, simulated).

A seed SD from a few seeds is itself uncertain: the same numbers are given at both ends of its
95% chi-square interval (`stats.sd_interval`), when the SD comes from a pilot.

Cost per seed (one model of every condition):
- from a run dir, measured: the summed wall time of that seed's nodes (their manifests; one
  node at a time: `--jobs J` runs about J at once), and the pretraining FLOPs its summaries
  report, projected to GPU hours on `--gpu` at `--mfu`;
- with `--smoke`, projected for the real (unshrunk) spec, as `domtok run SPEC --smoke` does
  (`preflight.pretrain_plan`: FLOPs of every pretraining stage, GPU hours on `--gpu` at `--mfu`).
The last line names the seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

from domtok.errors import DomtokError


def _load(target: str):
    """(spec, run dir or None): a run dir (holds spec.yaml), or a spec file / preset name (its
    run dir, runs_dir/name, when that exists)."""
    from domtok.rundir import load_spec

    p = Path(target)
    if p.is_dir():
        if not (p / "spec.yaml").exists():
            raise DomtokError(f"{p}: not a domtok run directory (no spec.yaml); pass a run dir or a spec")
        return load_spec(str(p / "spec.yaml")), p
    spec = load_spec(target)
    run_dir = Path(spec.runs_dir) / spec.name
    return spec, run_dir if (run_dir / "spec.yaml").exists() else None


def measured_cost(run_dir: Path) -> dict:
    """Per seed (every condition's model of that seed): mean wall seconds of its nodes and
    pretraining FLOPs, over the seeds whose nodes all finished."""
    from domtok.rundir import load_run, node_state, read_summary, wall_time

    spec, nodes = load_run(run_dir)
    per_seed = {}
    for seed in spec.seeds:
        mine = [n for n in nodes if n.seed == seed]
        if mine and all(node_state(n) == "done" for n in mine):
            per_seed[seed] = (sum(wall_time(n) for n in mine),
                              sum(float(read_summary(n).get("total_flops") or 0.0) for n in mine if n.kind == "pretrain"))
    if not per_seed:
        raise DomtokError(f"{run_dir}: no seed has finished every node; no measured cost (try --smoke)")
    walls = [w for w, _ in per_seed.values()]
    flops = [f for _, f in per_seed.values()]
    return {"source": f"measured over {len(per_seed)} finished seed(s) in {run_dir}",
            "wall_s": sum(walls) / len(walls), "flops": sum(flops) / len(flops)}


def projected_cost(spec, gpu: str, mfu: float) -> dict:
    """Per seed, for the real spec: pretraining FLOPs of every condition and their GPU hours."""
    from domtok.config import from_dict
    from domtok.ladder import nominal_vocab_size
    from domtok.preflight import pretrain_plan
    from domtok.train.pretrain import PretrainConfig

    vocab = nominal_vocab_size(spec.tokenizer, spec.token_set)
    flops = gpu_s = 0.0
    configs = ([r.stage_configs[st.name] for r in spec.ladder for st in spec.stages if st.kind == "pretrain"]
               or [st.config for st in spec.stages if st.kind == "pretrain"])
    for config in configs:
        cfg = from_dict(PretrainConfig, {k: v for k, v in config.items() if k != "data_dir"}, where="pretrain")
        p = pretrain_plan(cfg, vocab, 1, gpu, mfu)
        flops += p["flops"]
        gpu_s += p["wall_s"]
    n = len(spec.conditions)
    return {"source": f"projected for the real spec {spec.name} (pretraining only, as `domtok run --smoke`)",
            "wall_s": None, "flops": n * flops, "gpu_hours": n * gpu_s / 3600}


def gpu_hours(flops: float, gpu: str, mfu: float) -> float:
    from domtok.gpus import GPUS

    return flops / (GPUS[gpu][0] * mfu) / 3600


def plan(effect: float, sd: float, *, per_look: int, spending: str, alpha: float = 0.05, power: float = 0.8,
         margin: float | None = None) -> dict:
    """Seeds per condition for `power` at a true mean delta `effect` with seed SD `sd`."""
    from domtok.eval.sequential import sequential_plan
    from domtok.eval.stats import seeds_for_power

    fixed = seeds_for_power(sd, abs(effect), alpha=alpha, power=power)
    seq = sequential_plan(abs(effect), sd, per_look=per_look, alpha=alpha, power=power, spending=spending,
                          margin=margin, start=fixed or 2) if fixed else None
    return {"sd": sd, "fixed": fixed, "sequential": seq}


def _clock(seconds: float) -> str:
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _seq_text(seq: dict | None) -> str:
    if seq is None:
        return "more than 200 seeds (not simulated further)"
    return (f"at most {seq['max_seeds']} seeds, {seq['expected_seeds']:.1f} expected at the effect, "
            f"{seq['expected_seeds_null']:.1f} if there is none (power {seq['power']:.2f})")


def _cost_text(seeds: float | None, cost: dict, gpu: str, mfu: float) -> str:
    if seeds is None:
        return "-"
    parts = []
    if cost.get("wall_s") is not None:
        parts.append(f"{_clock(seeds * cost['wall_s'])} node time")
    if cost.get("flops"):
        parts.append(f"{seeds * cost['flops']:.2e} FLOPs")
        hours = cost.get("gpu_hours", gpu_hours(cost["flops"], gpu, mfu))
        parts.append(f"{seeds * hours:.3g} GPU-hours on {gpu} at {mfu:.0%} MFU")
    return ", ".join(parts)


def add_arguments(p) -> None:
    from domtok.gpus import GPUS
    from domtok.preflight import DEFAULT_GPU, DEFAULT_MFU

    p.add_argument("target", metavar="RUN_DIR_OR_SPEC", help="a finished pilot's run dir, or a spec file / preset")
    p.add_argument("--effect", type=float, required=True, help="the true domain - baseline difference to detect")
    p.add_argument("--sd", type=float, help="seed SD of the per-seed deltas (default: from the run dir's pilot)")
    p.add_argument("--smoke", action="store_true",
                   help="cost projected for the real spec (as `domtok run --smoke`) instead of measured in a run dir")
    p.add_argument("--power", type=float, default=0.8, help="power to reach (default 0.8)")
    p.add_argument("--alpha", type=float, default=None, help="two-sided level (default: the spec's sequential.alpha, 0.05)")
    p.add_argument("--gpu", default=DEFAULT_GPU, choices=sorted(GPUS), help=f"GPU of the projection (default {DEFAULT_GPU})")
    p.add_argument("--mfu", type=float, default=DEFAULT_MFU, help=f"MFU the projection assumes (default {DEFAULT_MFU})")


def main(args) -> int:
    from domtok.eval.stats import sd_interval
    from domtok.eval.sequential import DEFAULTS

    if not (args.effect != 0 and math.isfinite(args.effect)):
        raise DomtokError(f"--effect {args.effect}: give the non-zero difference to detect, e.g. --effect 0.1")
    if args.sd is not None and not (args.sd > 0 and math.isfinite(args.sd)):
        raise DomtokError(f"--sd {args.sd}: give a positive seed SD")
    if not 0 < args.power < 1 or not 0 < args.mfu <= 1:
        raise DomtokError("--power and --mfu must be in (0, 1)")
    spec, run_dir = _load(args.target)
    design = spec.sequential or DEFAULTS
    alpha = args.alpha if args.alpha is not None else design["alpha"]
    if not 0 < alpha < 1:
        raise DomtokError(f"--alpha {alpha}: give a level in (0, 1)")
    primary = spec.primary
    margin = primary.get("margin")
    lines = [f"domtok plan {args.target}: effect {args.effect:+g} at {args.power:.0%} power, two-sided alpha {alpha}"]
    deltas = None
    if args.sd is None:
        if run_dir is None:
            raise DomtokError(f"{args.target}: no finished run to take the seed SD from; pass --sd S or a run dir")
        from domtok.report.primary import primary_deltas

        deltas = primary_deltas(run_dir)
        if len(deltas) < 2:
            raise DomtokError(f"{run_dir}: the primary endpoint has {len(deltas)} per-seed delta(s); an SD needs 2 "
                              "(run more seeds, or pass --sd S)")
        import statistics

        sd = statistics.stdev(deltas)
        if not sd > 0:
            raise DomtokError(f"{run_dir}: the per-seed deltas are all equal ({deltas[0]:+g}); pass --sd S")
        lo, hi = sd_interval(sd, len(deltas) - 1)
        what = f"{primary.get('benchmark')}.{primary.get('metric')} after {primary.get('stage')}" if primary else "primary"
        lines.append(f"pilot: {what}, per-seed deltas {' '.join(f'{d:+.3f}' for d in deltas)}: seed SD {sd:.4f} "
                     f"(95% interval {lo:.4f} - {hi:.4f}, from {len(deltas)} seeds)")
    else:
        sd, lo, hi = args.sd, None, None
        lines.append(f"seed SD {sd:g} (given)")
    seq_name = (f"sequential ({design['spending']}, looks of {design['per_look']}"
                + ("" if spec.sequential else "; the default plan, the spec has no `sequential:`") + ")")
    main_plan = plan(args.effect, sd, per_look=design["per_look"], spending=design["spending"], alpha=alpha,
                     power=args.power, margin=margin)
    fixed, seq = main_plan["fixed"], main_plan["sequential"]
    lines.append(f"fixed design: {fixed if fixed else 'more than 10,000'} seeds per condition")
    lines.append(f"{seq_name}: {_seq_text(seq)}")
    if lo is not None:
        ends = [plan(args.effect, s, per_look=design["per_look"], spending=design["spending"], alpha=alpha,
                     power=args.power, margin=margin) for s in (lo, hi)]
        lines.append(f"over the SD's 95% interval: fixed {ends[0]['fixed']} - {ends[1]['fixed'] or '>10,000'} seeds; "
                     f"sequential at most {(ends[0]['sequential'] or {}).get('max_seeds', '>200')} - "
                     f"{(ends[1]['sequential'] or {}).get('max_seeds', '>200')}")
    if args.smoke:
        cost = projected_cost(spec, args.gpu, args.mfu)
    elif run_dir is not None:
        cost = measured_cost(run_dir)
    else:
        cost = None
        lines.append("cost: no run dir to measure; pass --smoke for the real spec's projection")
    if cost is not None:
        lines.append(f"cost per seed ({len(spec.conditions)} conditions; {cost['source']}): "
                     f"{_cost_text(1, cost, args.gpu, args.mfu)}")
        lines.append(f"cost, fixed: {_cost_text(fixed, cost, args.gpu, args.mfu)}")
        if seq is not None:
            lines.append(f"cost, sequential: expected {_cost_text(seq['expected_seeds'], cost, args.gpu, args.mfu)}; "
                         f"at most {_cost_text(seq['max_seeds'], cost, args.gpu, args.mfu)}")
    seq_seeds = (f"sequential {seq['expected_seeds']:.1f} expected, {seq['max_seeds']} at most" if seq
                 else "sequential more than 200")
    lines.append(f"seeds per condition for {args.power:.0%} power at effect {args.effect:+g}: "
                 f"fixed {fixed if fixed else '>10,000'}, {seq_seeds}")
    print("\n".join(lines), flush=True)
    return 0
