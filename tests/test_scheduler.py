"""`domtok run --jobs N`: independent nodes run at once in worker processes, with the numbers
of a sequential run.

The micro study (conftest.MICRO, without its deliberately broken benchmark) runs once with
`--jobs 1` in this process and once with `--jobs 2` in two worker processes, both at one torch
thread per job: every node's summary and every evaluated item must be the same.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import MICRO
from domtok.pipeline import RunOptions, build_nodes, load_spec, run_experiment, threads_per_job

# Fields of a summary that measure the machine, not the model (and config_hash, which hashes
# the run's own absolute paths).
TIMING = ("time", "per_s", "wall", "elapsed", "mfu", "flops", "sec", "config_hash")


def _numbers(summary, root: str):
    """The summary without timings, with paths relative to the run's root."""
    if isinstance(summary, dict):
        return {k: _numbers(v, root) for k, v in summary.items() if not any(t in k for t in TIMING)}
    if isinstance(summary, list):
        return [_numbers(v, root) for v in summary]
    return summary.replace(root, "ROOT") if isinstance(summary, str) else summary


def _items(node) -> list:
    path = node.out_dir / "items.jsonl"
    if not path.exists():
        return []
    keep = ("id", "completion", "answer", "correct")
    return [{k: r.get(k) for k in keep} for r in map(json.loads, path.read_text().splitlines())]


def test_jobs2_equals_jobs1_and_runs_nodes_at_once(tmp_path, capsys, one_thread):
    spec_data = copy.deepcopy(MICRO)
    del spec_data["evals"]["benchmarks"]["hellaswag"]
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(spec_data))
    results, outs, spans = {}, {}, {}
    for jobs in (1, 2):
        spec = load_spec(str(path))
        spec.runs_dir = str(tmp_path / f"runs{jobs}")
        assert run_experiment(spec, RunOptions(jobs=jobs, threads=1)) == 0
        outs[jobs] = capsys.readouterr().out
        nodes = build_nodes(spec, Path(spec.runs_dir) / "micro")
        results[jobs] = {n.id: (_numbers(json.loads(n.manifest_path.read_text())["summary"], spec.runs_dir), _items(n))
                         for n in nodes}
        # when each node ran: node.json is written as it starts, manifest.json as it ends
        spans[jobs] = {n.id: ((n.out_dir / "node.json").stat().st_mtime, n.manifest_path.stat().st_mtime)
                       for n in nodes}
    assert results[1].keys() == results[2].keys()
    for node_id, one in results[1].items():
        assert results[2][node_id] == one, node_id
    assert any(r[1] for r in results[1].values())  # evaluated items were compared, not nothing

    # With two jobs the two conditions' pretraining overlapped in time; with one they did not.
    def overlap(s, a, b):
        return min(s[a][1], s[b][1]) > max(s[a][0], s[b][0])

    pre = ("baseline/seed0/pretrain", "mul_tokens/seed0/pretrain")
    assert overlap(spans[2], *pre) and not overlap(spans[1], *pre)
    # Progress: which nodes start alongside which, what finished, and the time left.
    assert "2 jobs x 1 thread(s)" in outs[2]
    assert "start mul_tokens/seed0/pretrain (also running: baseline/seed0/pretrain)" in outs[2]
    assert "baseline/seed0/pretrain: done in" in outs[2] and " left" in outs[2]
    assert outs[2].count(": done in") == len(results[2])


def test_threads_share_the_cores(monkeypatch):
    import domtok.pipeline as pipeline

    monkeypatch.setattr(pipeline, "machine_cores", lambda: 16)
    assert threads_per_job(RunOptions(jobs=2)) == 8
    assert threads_per_job(RunOptions(jobs=16)) == 1 and threads_per_job(RunOptions(jobs=40)) == 1
    assert threads_per_job(RunOptions(jobs=2, threads=3)) == 3


def test_one_job_takes_the_threads_it_is_given(monkeypatch, one_thread):
    """`--jobs 1 --threads 1` runs its nodes in this process on one thread (two such runs side by
    side on 2 cores, each on the default 2 threads, ran 2.7x slower)."""
    import torch

    from domtok.executors import make_pool

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "2")
    torch.set_num_threads(2)
    make_pool(RunOptions(jobs=1, threads=1), 1)
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"  # and for its torchruns
    torch.set_num_threads(2)
    make_pool(RunOptions(jobs=1), 2)  # no --threads: the process keeps what it has
    assert torch.get_num_threads() == 2


def test_jobs_with_nproc_is_refused(tmp_path):
    from domtok.errors import DomtokError

    spec_data = copy.deepcopy(MICRO)
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(spec_data))
    spec = load_spec(str(path))
    spec.runs_dir = str(tmp_path / "runs")
    with pytest.raises(DomtokError, match="choose one"):
        run_experiment(spec, RunOptions(jobs=2, nproc=2, quiet=True))
