"""`domtok plan`: seeds for 80% power (against statsmodels), the sequential plan, and cost."""

import pytest

from domtok.cli import main
from test_report import write_fake_run


def _run(capsys, *args):
    rc = main(["plan", *args])
    cap = capsys.readouterr()
    _run.err = cap.err
    return rc, cap.out.strip().splitlines()


def test_spec_with_given_sd_and_smoke_projection(capsys):
    import math

    from statsmodels.stats.power import TTestPower

    rc, lines = _run(capsys, "tiny", "--effect", "0.1", "--sd", "0.1", "--smoke")
    assert rc == 0
    fixed = math.ceil(TTestPower().solve_power(effect_size=1.0, alpha=0.05, power=0.8))  # a paired t-test, d = 1
    assert lines[-1].startswith(f"seeds per condition for 80% power at effect +0.1: fixed {fixed}, sequential ")
    assert lines[-1].endswith("12 at most")  # the smallest O'Brien-Fleming plan in looks of 3 with 80% power
    # projected cost: 2 conditions x the tiny pretraining's FLOPs (flops per token x tokens)
    from domtok.config import from_dict
    from domtok.ladder import nominal_vocab_size
    from domtok.rundir import load_spec
    from domtok.preflight import pretrain_plan
    from domtok.train.pretrain import PretrainConfig

    spec = load_spec("tiny")
    cfg = from_dict(PretrainConfig, spec.stages[0].config)
    flops = pretrain_plan(cfg, nominal_vocab_size(spec.tokenizer, spec.token_set), 1, "H100", 0.4)["flops"]
    assert flops == pytest.approx(6 * 0.9e6 * 2048 * 800, rel=0.3)  # ~6 N D
    cost = next(ln for ln in lines if ln.startswith("cost per seed"))
    assert f"{2 * flops:.2e} FLOPs" in cost


def test_run_dir_measured_cost_and_errors(tmp_path, capsys):
    run_dir = write_fake_run(tmp_path)
    rc, lines = _run(capsys, str(run_dir), "--effect", "0.2", "--sd", "0.1")
    assert rc == 0
    # the fake run's nodes each took 1.0 s: a seed is 2 conditions x (3 stages + 2 x 2 evaluations)
    cost = next(ln for ln in lines if ln.startswith("cost per seed"))
    assert "0m14s node time" in cost and "measured over 3 finished seed(s)" in cost
    assert _run(capsys, str(run_dir), "--effect", "0")[0] == 2
    assert _run(capsys, str(tmp_path / "nope"), "--effect", "0.1")[0] == 2
    spec = tmp_path / "s.yaml"
    spec.write_text(f"extends: tiny\nruns_dir: {tmp_path / 'empty'}\n")
    rc, _ = _run(capsys, str(spec), "--effect", "0.1")  # no pilot to take the SD from, no --sd
    assert rc == 2 and "pass --sd" in _run.err


def test_pilot_sd_from_the_primary_per_seed_deltas(tmp_path, capsys):
    import math
    import statistics

    import numpy as np
    from statsmodels.stats.power import TTestPower

    from domtok.report import primary_deltas
    from test_report import p_correct

    rng = np.random.default_rng(4)
    run_dir = write_fake_run(tmp_path, seeds=(0, 1, 2, 3),
                             truth=lambda *a: min(1.0, max(0.0, p_correct(*a) + rng.uniform(-0.08, 0.08))))
    d = primary_deltas(run_dir)
    sd = statistics.stdev(d)
    rc, lines = _run(capsys, str(run_dir), "--effect", "0.1")
    assert rc == 0
    assert f"seed SD {sd:.4f}" in lines[1] and "from 4 seeds" in lines[1]
    fixed = max(2, math.ceil(TTestPower().solve_power(effect_size=0.1 / sd, alpha=0.05, power=0.8)))
    assert f"fixed {fixed}," in lines[-1]
    assert any(ln.startswith("over the SD's 95% interval: fixed ") for ln in lines)
