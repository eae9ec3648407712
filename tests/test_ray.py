"""`domtok run --executor ray`: the tiny smoke as one Ray task per node, on a local Ray cluster of
this machine's cores (2 in CI), against `--jobs 1` in one process, both at one torch thread per
node: the same nodes with the same hashes and the same numbers, although a Ray worker was
SIGKILLed in the middle of a node (Ray ran it again and it resumed from its own checkpoint).
Killing the driver of a Ray run stops its tasks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from domtok.rundir import pid_alive
from test_scheduler import _items, _numbers

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1",
           PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0")
TRAINING = ("pretrain", "sft", "grpo")


def domtok(*args: str) -> list[str]:
    return [sys.executable, "-m", "domtok", *args]


def held_by(node_dir: Path) -> dict | None:
    try:
        return json.loads((node_dir / "running.json").read_text())
    except (OSError, ValueError):
        return None


def kill_one_after_its_checkpoint(run_dir: Path, stop: threading.Event, killed: dict) -> None:
    """SIGKILL the Ray worker of the first training node seen with a complete checkpoint and no
    manifest yet (its last steps' checkpoint is written ~0.2 s before its manifest)."""
    while not stop.is_set() and not killed:
        for ckpt in run_dir.glob("*/seed*/*/checkpoints/step_*/COMPLETE"):
            node_dir = ckpt.parents[2]
            held = held_by(node_dir)
            if node_dir.name in TRAINING and held and "ray_task" in held and not (node_dir / "manifest.json").exists():
                try:
                    os.kill(held["pid"], signal.SIGKILL)
                except OSError:
                    continue
                killed.update(node=node_dir, pid=held["pid"], ckpt=ckpt.parent, inode=ckpt.parent.stat().st_ino,
                              mtime=ckpt.stat().st_mtime_ns)
                return
        time.sleep(0.01)


@pytest.fixture(scope="module")
def smokes(tmp_path_factory):
    """The tiny smoke (one seed) with --jobs 1, then through Ray with one worker killed mid-node."""
    root = tmp_path_factory.mktemp("ray")
    args = ["run", "tiny", "--smoke", "--seeds", "1", "--threads", "1"]
    t0 = time.time()
    ref = subprocess.run(domtok(*args, "--jobs", "1", "--runs-dir", str(root / "jobs1")), env=ENV,
                         capture_output=True, text=True, timeout=900)
    t1 = time.time()
    stop, killed = threading.Event(), {}
    watcher = threading.Thread(target=kill_one_after_its_checkpoint, args=(root / "ray" / "tiny-smoke", stop, killed))
    watcher.start()
    proc = subprocess.Popen(domtok(*args, "--executor", "ray", "--runs-dir", str(root / "ray")), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out = proc.communicate(timeout=900)[0]
    finally:
        stop.set()
        watcher.join()
        with_group_gone(proc.pid)
    print(f"tiny smoke --seeds 1: --jobs 1 {t1 - t0:.0f}s, --executor ray {time.time() - t1:.0f}s")
    return root, ref, (proc.returncode, out), killed


def with_group_gone(pgid: int) -> None:
    """Ray's own helper processes of a local cluster (agents) may outlive a driver: end the group."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def results(runs: Path) -> dict:
    from domtok.rundir import build_nodes, load_spec

    spec = load_spec(str(runs / "tiny-smoke" / "spec.yaml"))
    out = {}
    for n in build_nodes(spec, runs / "tiny-smoke"):
        m = json.loads(n.manifest_path.read_text())
        out[n.id] = (m["hash"], _numbers(m["summary"], str(runs)), _items(n))
    return out


def test_ray_equals_jobs1_node_for_node_with_a_worker_killed(smokes):
    root, ref, (rc, out), killed = smokes
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    assert rc == 0, out[-5000:]
    assert "a Ray task per node on a local Ray cluster (1 thread(s) each" in out
    one, ray = results(root / "jobs1"), results(root / "ray")
    assert ray.keys() == one.keys() and len(one) == 21  # 1 seed: tokenizer, 2 prepares, 2 x 9 per condition
    for node_id, (hash1, numbers1, items1) in one.items():
        hash_r, numbers_r, items_r = ray[node_id]
        assert hash_r == hash1, node_id
        assert numbers_r == numbers1, node_id
        assert items_r == items1, node_id
    assert any(items for _, _, items in one.values())  # evaluated items were compared, not nothing
    # the hashes of the spec's DAG, so a later run without Ray finds these nodes done
    from domtok.rundir import build_nodes, load_spec, node_state

    spec = load_spec(str(root / "ray" / "tiny-smoke" / "spec.yaml"))
    nodes = build_nodes(spec, root / "ray" / "tiny-smoke")
    assert all(node_state(n) == "done" and ray[n.id][0] == n.hash for n in nodes)

    # a worker died mid-node; Ray ran the node again, which resumed from that checkpoint (not
    # rewritten: a fresh start would have removed the node's directory and trained again)
    assert killed, "no training node was seen between its checkpoint and its manifest"
    assert not pid_alive(killed["pid"])
    assert killed["ckpt"].stat().st_ino == killed["inode"]
    assert (killed["ckpt"] / "COMPLETE").stat().st_mtime_ns == killed["mtime"]
    assert (killed["node"] / "manifest.json").exists() and not (killed["node"] / "running.json").exists()


def test_status_reads_a_ray_run_and_a_later_run_without_ray_has_nothing_to_do(smokes, tmp_path):
    root = smokes[0]
    board = subprocess.run(domtok("status", str(root / "ray" / "tiny-smoke")), env=ENV, capture_output=True,
                           text=True, timeout=120)
    assert board.returncode == 0 and board.stdout.count("✅") >= 10 and "pending" not in board.stdout
    from domtok.pipeline import RunOptions, load_spec, run_experiment

    spec = load_spec(str(root / "ray" / "tiny-smoke" / "spec.yaml"))
    spec.runs_dir = str(root / "ray")
    assert run_experiment(spec, RunOptions(only="sft", quiet=True)) == 0  # every sft node: done already
    assert not list((root / "ray" / "tiny-smoke").rglob("running.json"))


def test_killing_the_ray_driver_stops_its_tasks(tmp_path):
    """SIGKILL of `domtok run --executor ray` while a Ray task holds a node: the task's worker
    stops, and no node is held by a live process, so a resume can start right away."""
    from domtok.rundir import build_nodes, load_spec, node_state

    proc = subprocess.Popen(domtok("run", "tiny", "--smoke", "--seeds", "1", "--threads", "1", "--executor", "ray",
                                   "--runs-dir", str(tmp_path)), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    run_dir = tmp_path / "tiny-smoke"
    try:
        deadline, held = time.time() + 300, None
        while held is None:
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
            for path in run_dir.rglob("running.json") if run_dir.exists() else []:  # any node a Ray task holds
                h = held_by(path.parent)
                if h and "ray_task" in h and pid_alive(h["pid"]):
                    held = h
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no handler of the driver runs
        proc.wait()
        t = time.time()
        while pid_alive(held["pid"]) and time.time() - t < 30:
            time.sleep(0.1)
        assert not pid_alive(held["pid"]), "the Ray worker outlived its driver"
        spec = load_spec(str(run_dir / "spec.yaml"))
        assert all(node_state(n) != "running" for n in build_nodes(spec, run_dir))
    finally:
        with_group_gone(proc.pid)


def test_more_gpus_than_any_machine_of_the_cluster_is_refused(tmp_path):
    res = subprocess.run(domtok("run", "tiny", "--executor", "ray", "--gpus-per-job", "1", "--runs-dir", str(tmp_path)),
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "--gpus-per-job 1: no machine of the Ray cluster at this machine has that many GPUs (most: 0)" in res.stderr
    assert not list(tmp_path.rglob("manifest.json")) and not list(tmp_path.rglob("running.json"))
