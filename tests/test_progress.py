"""Progress lines: the format every loop writes and `domtok status` / `domtok run` read back."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from domtok import progress
from domtok.progress import Progress, clock, last_progress, parse_clock, parse_line


def test_line_round_trips_and_counts_rate_and_eta(monkeypatch, capsys):
    monkeypatch.setenv("DOMTOK_PROGRESS_EVERY", "0")  # a line at every update
    now = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: now[0])
    bar = Progress(100, "sft", initial=20)  # resumed at step 20: the rate counts this process's steps
    now[0] += 40.0
    bar.update(20, loss=1.5)                # 20 steps in 40 s: 0.5 steps/s, 60 left -> 120 s
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["progress sft: 40/100 steps (40.0%) · 0.5 steps/s · elapsed 40s · ETA 2m00s · loss 1.5"]
    p = parse_line(err[0])
    assert p == {"desc": "sft", "n": 40, "total": 100, "unit": "steps", "rate": 0.5, "elapsed_s": 40.0,
                 "eta_s": 120.0}
    assert parse_line("step 40: train 1.2 val 1.3") is None


def test_lines_come_at_the_interval_and_at_the_end(monkeypatch, capsys):
    monkeypatch.setenv("DOMTOK_PROGRESS_EVERY", "15")
    now = [0.0]
    monkeypatch.setattr(progress.time, "time", lambda: now[0])
    with Progress(10, "grpo") as bar:
        for _ in range(10):
            now[0] += 4.0  # a step every 4 s: lines at steps 1 (first), 5 (20 s after it), 9, then 10 (the end)
            bar.update()
    steps = [parse_line(x)["n"] for x in capsys.readouterr().err.splitlines()]
    assert steps == [1, 5, 9, 10]


def test_a_loop_that_stops_early_says_where(monkeypatch, capsys):
    monkeypatch.setenv("DOMTOK_PROGRESS_EVERY", "1000")
    bar = Progress(10, "sft")
    bar.update()
    bar.update()
    bar.close()
    assert [parse_line(x)["n"] for x in capsys.readouterr().err.splitlines()] == [1, 2]


def test_disabled_rank_writes_nothing(monkeypatch, capsys):
    monkeypatch.setenv("DOMTOK_PROGRESS_EVERY", "0")
    bar = Progress(3, "gsm8k", unit="items", enabled=False)
    bar.update(3)
    bar.write("hello")
    bar.close()
    assert capsys.readouterr() == ("", "")


def test_clock_round_trips():
    for s in (0, 9, 60, 61, 3599, 3600, 7384):
        assert parse_clock(clock(s)) == s
    assert clock(7384) == "2h03m04s" and clock(212) == "3m32s" and clock(12) == "12s"


def test_last_progress_reads_the_newest_line_and_counts_down(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("pretrain: 1,000 params\n"
                   "progress pretrain: 10/100 steps (10.0%) · 1 steps/s · elapsed 10s · ETA 1m30s\n"
                   "step 10: train 2.1\n"
                   "progress pretrain: 20/100 steps (20.0%) · 1 steps/s · elapsed 20s · ETA 1m20s · loss 2.0\n"
                   "step 20: train 2.0\n")
    t = time.time() - 30  # the log was last written 30 s ago
    os.utime(log, (t, t))
    p = last_progress(log)
    assert p["n"] == 20 and p["eta_s"] == 80.0 and 49 <= p["left_s"] <= 50.5
    assert last_progress(tmp_path / "missing.txt") is None
    assert progress.describe(p).startswith("pretrain 20/100 steps (20%), ~")


def test_status_shows_a_running_nodes_progress_and_the_runs_time_left(tmp_path):
    """A running node (its running.json names a live process) shows its percentage on the board
    and, under it, its progress line and the run's time left."""
    from conftest import MICRO
    from domtok.rundir import build_nodes, load_spec
    from domtok.status import board

    run_dir = tmp_path / "runs" / "micro"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(MICRO))
    spec = load_spec(str(run_dir / "spec.yaml"))
    node = next(n for n in build_nodes(spec, run_dir) if n.id == "baseline/seed0/pretrain")
    node.out_dir.mkdir(parents=True)
    (node.out_dir / "running.json").write_text(json.dumps({"pid": os.getpid(), "started": time.time() - 60}))
    (node.out_dir / "node.json").write_text("{}")
    (node.out_dir / "log.txt").write_text(
        "progress pretrain: 2/8 steps (25.0%) · 0.0333 steps/s · elapsed 1m00s · ETA 3m00s · loss 5.1\n")
    text = board(run_dir)
    row = next(ln for ln in text.splitlines() if ln.startswith("| pretrain |"))
    assert "⏳ running 25%" in row
    assert "running baseline/seed0/pretrain (1m00s): pretrain 2/8 steps (25%), ~3m00s left" in text
    # the other pretraining is timed from this one (1 + 3 minutes); the rest is not yet timed
    run_line = next(ln for ln in text.splitlines() if ln.startswith("  run: "))
    assert "1 running" in run_line and "not yet timed" in run_line


def test_domtok_run_prints_running_nodes_while_one_runs_in_process(tmp_path, monkeypatch, capsys):
    """--jobs 1 runs a node inside `domtok run`; its heartbeat still reaches the terminal with
    the node's progress (read from its log) and the run's time left. The nodes are stand-ins
    that write a progress line and a manifest: this tests the scheduler, not the stages."""
    from conftest import MICRO
    from domtok import pipeline
    from domtok.pipeline import RunOptions, load_spec, run_experiment

    monkeypatch.setenv("DOMTOK_PROGRESS_EVERY", "0.25")  # a heartbeat every second

    def fake_node(node, run_dir, opts, fresh):
        node.out_dir.mkdir(parents=True, exist_ok=True)
        (node.out_dir / "node.json").write_text("{}")  # as run_node does when a node starts
        (node.out_dir / "log.txt").write_text(
            f"progress {node.kind}: 3/10 steps (30.0%) · 1 steps/s · elapsed 3s · ETA 7s\n")
        if node.kind == "pretrain":
            time.sleep(2.5)
        (node.out_dir / "manifest.json").write_text(json.dumps({"hash": node.hash, "wall_time_s": 1.0}))
        return True

    monkeypatch.setattr(pipeline, "run_node", fake_node)
    p = tmp_path / "one.yaml"
    p.write_text(yaml.safe_dump(dict(MICRO, conditions={"baseline": {"token_set": None}}, stages=MICRO["stages"][:1],
                                     evals={"after": [], "benchmarks": {}})))
    spec = load_spec(str(p))
    spec.runs_dir = str(tmp_path / "runs")
    monkeypatch.setattr("domtok.report.write_report", lambda run_dir: run_dir / "report.md")
    assert run_experiment(spec, RunOptions(jobs=1)) == 0
    out = capsys.readouterr().out
    assert "  running baseline/seed0/pretrain (" in out and "): pretrain 3/10 steps (30%), ~" in out, out
    assert "  run: 1 running, 0 waiting, ~" in out  # the node runs inside `domtok run`: counted once


def test_a_submitted_node_that_has_not_started_is_queued_not_running(tmp_path):
    """A Ray task waits in Ray's queue until a worker has resources: until its node.json is
    written it is counted and shown as queued on the executor, not as running."""
    from types import SimpleNamespace

    t0 = time.time() - 5
    nodes = [SimpleNamespace(id=f"n{i}", kind="pretrain", stage="pretrain", benchmark=None,
                             out_dir=tmp_path / f"n{i}") for i in range(3)]
    for n in nodes:
        n.out_dir.mkdir()
    (nodes[0].out_dir / "node.json").write_text("{}")  # started
    old = nodes[1].out_dir / "node.json"
    old.write_text("{}")
    os.utime(old, (t0 - 100, t0 - 100))  # left by an earlier attempt: not this submission's start
    lines = progress.running_lines([(n, t0) for n in nodes], [], {}, jobs=3)
    assert lines[0].startswith("  running n0 (") and lines[1].startswith("  queued n1 (")
    assert lines[2].startswith("  queued n2 (") and "not started" in lines[2]
    assert lines[-1].startswith("  run: 1 running, 2 queued on the executor, 0 waiting")


def test_finished_nodes_are_settled_while_the_job_slots_are_full(tmp_path, monkeypatch, capsys):
    """A node that is done already needs no job slot: it is settled while the slots are busy,
    so "waiting" counts only the nodes that will still run (a later look of --seeds auto lists
    every earlier seed's finished nodes behind the new seeds' ones)."""
    from conftest import MICRO
    from domtok import pipeline
    from domtok.pipeline import RunOptions, load_spec, run_experiment

    def fake_node(node, run_dir, opts, fresh):
        node.out_dir.mkdir(parents=True, exist_ok=True)
        (node.out_dir / "node.json").write_text("{}")
        (node.out_dir / "manifest.json").write_text(json.dumps({"hash": node.hash, "wall_time_s": 1.0}))
        return True

    monkeypatch.setattr(pipeline, "run_node", fake_node)
    monkeypatch.setattr("domtok.report.write_report", lambda run_dir: run_dir / "report.md")
    p = tmp_path / "one.yaml"
    p.write_text(yaml.safe_dump(dict(MICRO, conditions={"baseline": {"token_set": None}}, stages=MICRO["stages"][:1],
                                     evals={"after": [], "benchmarks": {}})))
    for seeds in ([1], [0, 1]):  # seed 1 first: in the second run its node comes after seed 0's
        spec = load_spec(str(p), [f"seeds={seeds}"])
        spec.runs_dir = str(tmp_path / "runs")
        assert run_experiment(spec, RunOptions(jobs=1)) == 0
    out = capsys.readouterr().out.split("seeds [0, 1]")[-1]  # the second run
    lines = out.splitlines()
    settled = next(i for i, ln in enumerate(lines) if "baseline/seed1/pretrain: done already" in ln)
    ran = next(i for i, ln in enumerate(lines) if "baseline/seed0/pretrain: done in" in ln)
    assert settled < ran and "waiting" not in lines[ran], out


def test_a_forced_rerun_never_deletes_a_file_domtok_did_not_write(tmp_path, monkeypatch, capsys):
    """A finished node's manifest lists the files it wrote; `domtok run --force` (or a changed
    config) deletes a node directory only when it holds nothing else, and otherwise stops before
    any work (exit 2 from the CLI), naming the file. The stages are stand-ins that write files."""
    from conftest import MICRO
    from domtok import pipeline
    from domtok.errors import DomtokError
    from domtok.pipeline import RunOptions, load_spec, run_experiment
    from domtok.rundir import build_nodes

    def fake_stage(cfg, out_dir):
        (Path(out_dir) / "model").mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "model" / "weights.bin").write_text("w")
        return {"ok": 1}

    monkeypatch.setattr(pipeline, "stage_call", lambda node, run_dir: (fake_stage, {}))
    monkeypatch.setattr("domtok.report.write_report", lambda run_dir: run_dir / "report.md")
    p = tmp_path / "one.yaml"
    p.write_text(yaml.safe_dump(dict(MICRO, conditions={"baseline": {"token_set": None}}, stages=MICRO["stages"][:1],
                                     evals={"after": [], "benchmarks": {}})))
    spec = load_spec(str(p))
    spec.runs_dir = str(tmp_path / "runs")
    assert run_experiment(spec, RunOptions(jobs=1)) == 0
    node = next(n for n in build_nodes(spec, tmp_path / "runs" / "micro") if n.id == "baseline/seed0/pretrain")
    assert json.loads(node.manifest_path.read_text())["files"] == ["log.txt", "model/weights.bin"]
    assert run_experiment(spec, RunOptions(jobs=1, force=True)) == 0  # only its own files: re-run from empty
    mine = node.out_dir / "model" / "my_notes.txt"
    mine.write_text("mine")
    with pytest.raises(DomtokError, match=r"my_notes.txt: not written by domtok .* re-running baseline/seed0/pretrain"):
        run_experiment(spec, RunOptions(jobs=1, force=True))
    assert mine.read_text() == "mine" and (node.out_dir / "model" / "weights.bin").exists()


def test_a_run_without_its_report_leaves_it_to_the_caller(tmp_path, monkeypatch):
    """`--seeds auto` runs each look with `report=False` and writes the report itself once the
    look is recorded: the report is made once per look, not twice."""
    from conftest import MICRO
    from domtok import pipeline
    from domtok.pipeline import RunOptions, load_spec, run_experiment

    def fake_node(node, run_dir, opts, fresh):
        node.out_dir.mkdir(parents=True, exist_ok=True)
        (node.out_dir / "manifest.json").write_text(json.dumps({"hash": node.hash, "wall_time_s": 1.0}))
        return True

    written = []
    monkeypatch.setattr(pipeline, "run_node", fake_node)
    monkeypatch.setattr("domtok.report.write_report", lambda run_dir: written.append(run_dir) or run_dir / "report.md")
    p = tmp_path / "one.yaml"
    p.write_text(yaml.safe_dump(dict(MICRO, conditions={"baseline": {"token_set": None}}, stages=MICRO["stages"][:1],
                                     evals={"after": [], "benchmarks": {}})))
    spec = load_spec(str(p))
    spec.runs_dir = str(tmp_path / "runs")
    assert run_experiment(spec, RunOptions(jobs=1, report=False)) == 0 and written == []
    assert run_experiment(spec, RunOptions(jobs=1)) == 0 and len(written) == 1
