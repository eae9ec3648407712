"""Executors on this machine: each `--jobs` worker gets its own GPUs (faked device lists here: this
machine has none), too many GPUs asked is refused before anything is written, and killing the
driver of `--jobs 2` with SIGKILL stops its workers, so a resume right after finds no node held."""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import MICRO
from domtok.errors import DomtokError
from domtok.executors import check_gpus_per_job, gpu_sets, job_gpus, make_pool, visible_gpus
from domtok.pipeline import RunOptions
from domtok.rundir import pid_alive

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), PYTHONUNBUFFERED="1")
EIGHT = [str(i) for i in range(8)]


def test_each_job_gets_its_own_gpus():
    assert gpu_sets(8, 1, EIGHT) == EIGHT  # ladder-gpt2 on an 8-GPU node: one job per GPU
    assert gpu_sets(2, 4, EIGHT) == ["0,1,2,3", "4,5,6,7"]
    assert gpu_sets(3, 2, EIGHT) == ["0,1", "2,3", "4,5"]  # fewer jobs than GPUs: the rest stay idle
    assert gpu_sets(2, 1, ["4", "6"]) == ["4", "6"]  # an allocation's own device names
    assert gpu_sets(4, 0.5, ["0", "1"]) == ["0", "0", "1", "1"]  # sharing, when asked
    with pytest.raises(DomtokError, match=r"--jobs 3 x --gpus-per-job 3 needs 9 GPUs, but this machine has 8"):
        gpu_sets(3, 3, EIGHT)
    with pytest.raises(DomtokError, match="needs 1 GPUs, but this machine has 0"):
        gpu_sets(1, 1, [])
    for bad in (0.3, 1.5, -1):
        with pytest.raises(DomtokError, match="whole number of GPUs"):
            check_gpus_per_job(bad)


def _args(**kw) -> argparse.Namespace:
    base = dict(nproc=1, nnodes=1, gpus_per_job=None, executor="local", address=None, retries=1)
    return argparse.Namespace(**(base | kw))


def test_gpus_per_job_sets_torchrun_and_defaults(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(EIGHT))
    assert visible_gpus() == EIGHT
    assert job_gpus(_args(gpus_per_job=2), 4) == (2, 2.0)  # a job of 2 GPUs runs torchrun with 2 processes
    assert job_gpus(_args(), 8) == (1, 1.0)  # several jobs on a GPU machine: one GPU each by default
    assert job_gpus(_args(), 1) == (1, None)
    with pytest.raises(DomtokError, match="needs 9 GPUs"):
        job_gpus(_args(), 9)
    with pytest.raises(DomtokError, match="--nproc 4 with --gpus-per-job 2"):
        job_gpus(_args(gpus_per_job=2, nproc=4), 2)
    assert job_gpus(_args(executor="ray", gpus_per_job=1), 0) == (1, 1.0)  # Ray: the cluster's GPUs, not ours
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert job_gpus(_args(), 2) == (1, None)  # a CPU machine: as before
    with pytest.raises(DomtokError, match="Ray executor's"):
        job_gpus(_args(retries=3), 2)


def _worker_gpus(_):
    time.sleep(1.0)  # both workers busy at once, so two processes answer
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_each_worker_process_sees_only_its_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    pool = make_pool(RunOptions(jobs=2, gpus_per_job=2.0, nproc=2), 1)
    try:
        seen = dict(pool.map(_worker_gpus, range(2)))
    finally:
        pool.shutdown()
    assert len(seen) == 2 and sorted(seen.values()) == ["0,1", "2,3"]


def test_too_many_gpus_is_refused_before_anything_is_written(tmp_path):
    res = subprocess.run([sys.executable, "-m", "domtok", "run", "tiny", "--jobs", "2", "--gpus-per-job", "1",
                          "--runs-dir", str(tmp_path / "runs")], env=dict(ENV, CUDA_VISIBLE_DEVICES=""),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--jobs 2 x --gpus-per-job 1 needs 2 GPUs, but this machine has 0" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_killing_the_driver_of_jobs2_stops_its_workers(tmp_path):
    from domtok.pipeline import load_spec
    from domtok.rundir import build_nodes, node_state

    data = copy.deepcopy(MICRO)
    del data["evals"]["benchmarks"]["hellaswag"]
    # pretraining far longer than the test: a worker that outlived its driver would still be at it
    data["stages"][0]["config"].update(max_steps=100_000, ckpt_every=0, eval_every=0)
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen([sys.executable, "-m", "domtok", "run", str(path), "--jobs", "2", "--threads", "1",
                             "--runs-dir", str(tmp_path / "runs")], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    run_dir = tmp_path / "runs" / "micro"
    try:
        deadline, pids = time.time() + 240, {}
        while len(pids) < 2:  # both conditions' pretraining held by the two workers
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
            for running in run_dir.glob("*/seed0/pretrain/running.json"):
                try:
                    pids[running] = json.loads(running.read_text())["pid"]
                except (OSError, ValueError):
                    pass
            time.sleep(0.05)
        assert proc.pid not in pids.values()  # held by the workers, not the driver
        proc.kill()  # SIGKILL: nothing of the driver runs
        proc.wait()
        t = time.time()
        while any(pid_alive(p) for p in pids.values()) and time.time() - t < 20:
            time.sleep(0.05)
        assert not any(pid_alive(p) for p in pids.values()), "a worker outlived its driver"
        spec = load_spec(str(path))
        spec.runs_dir = str(tmp_path / "runs")
        # what a resume checks first: no node is held by a live process (it would refuse to start)
        states = {n.id: node_state(n) for n in build_nodes(spec, run_dir)}
        assert "running" not in states.values()
        assert states["baseline/seed0/pretrain"] == states["mul_tokens/seed0/pretrain"] == "incomplete"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass


def test_a_child_dies_with_its_parent(tmp_path):
    """die_with_parent on its own: a grandchild that asked for it ends when its parent is SIGKILLed."""
    script = ("import os, subprocess, sys, time\n"
              "c = subprocess.Popen([sys.executable, '-c', 'from domtok.executors import die_with_parent; import time; "
              "die_with_parent(); print(flush=True); time.sleep(60)'], stdout=subprocess.PIPE)\n"
              "c.stdout.readline(); print(c.pid, flush=True); time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        assert pid_alive(child)
        parent.kill()
        parent.wait()
        t = time.time()
        while pid_alive(child) and time.time() - t < 5:
            time.sleep(0.05)
        assert not pid_alive(child)
    finally:
        try:
            os.killpg(parent.pid, signal.SIGKILL)
        except OSError:
            pass
