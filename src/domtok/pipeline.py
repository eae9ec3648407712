"""`domtok run`: an experiment spec becomes a DAG of stage nodes, run in order, resumably.

A spec (YAML, see configs/tiny.yaml) names the conditions, the seeds, one tokenizer and one
prepare section shared by all conditions, an ordered list of training stages (each after
the previous one) and the evaluations to run after chosen stages. Every (stage, condition,
seed) is a node with its inputs, its output directory and a config hash that also covers
its inputs' hashes, so changing a stage re-runs it and everything downstream, nothing else.

The spec, the nodes and the run directory's layout are defined in `domtok.rundir`, which
`domtok status`, `report` and `hub` read with; this module runs the nodes. A node's
`manifest.json` is written last and atomically when it has finished: a directory without a
manifest is incomplete and is resumed (training stages continue from their last checkpoint)
or redone. A failed node writes `failed.json` with its log path; nodes that do not depend on
it still run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from domtok import provenance
from domtok.config import atomic_write_json, atomic_write_text
from domtok.errors import DomtokError
from domtok.executors import die_with_parent, job_gpus, machine_cores, make_pool
from domtok.manifest import write_manifest
from domtok.progress import kind_key, running_lines, time_left
# The spec and the DAG are the run directory's; they are re-exported here for `domtok run`'s callers.
from domtok.rundir import (EVAL_KINDS, TRAINING_KINDS, Node, Spec, StageSpec, build_nodes,  # noqa: F401
                           foreign_node_files, key_metric_text, load_spec, node_files, node_state, wall_time)
from domtok.wiring import check_stage_configs, stage_call

# Nodes that run in one process even in a multi-process run (node 0's alone).
SINGLE_PROCESS = ("tokenizer", "prepare")
# Stages that continue from a partial directory of the same config (checkpoints; prepare skips
# finished shards). Any other interrupted node starts again from an empty directory.
RESUMABLE = ("prepare", "pretrain", "sft", "grpo")


# --------------------------------------------------------------------------- running

@dataclass
class RunOptions:
    only: str | None = None
    from_stage: str | None = None
    force: bool = False
    nproc: int = 1
    quiet: bool = False
    nnodes: int = 1             # torchrun's multi-node launch: every node runs `domtok run` with
    node_rank: int = 0          # the same arguments and its own --node-rank; node 0 runs the
    rdzv: str = "127.0.0.1:29500"  # pipeline, the others join each torchrun stage (shared run dir)
    jobs: int = 1                 # nodes run at once, each in its own worker process when > 1
    threads: int | None = None    # torch threads of each job (None: the cores shared among jobs)
    gpus_per_job: float | None = None  # each job's own GPUs (a share 1/k: k jobs per GPU); see executors
    executor: str = "local"       # local (this machine) | ray (a task per node on a Ray cluster)
    address: str | None = None    # the Ray cluster to join (None: start one on this machine)
    retries: int = 1              # Ray: times a node is run again after its worker died
    report: bool = True           # write the report at the end (--seeds auto writes it after recording each look)

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes


def default_jobs() -> int:
    """One job per core on a CPU machine: a tiny model's small matmuls run best on one thread
    each, and the conditions and seeds are independent. One job on a GPU machine, where each
    stage wants the whole device."""
    import torch

    return 1 if torch.cuda.is_available() else machine_cores()


def threads_per_job(opts: RunOptions) -> int:
    if opts.executor == "ray":  # the cores of a cluster's machines are Ray's to share out
        return opts.threads or 1
    return opts.threads or max(1, machine_cores() // max(1, opts.jobs))


def run_experiment(spec: Spec, opts: RunOptions) -> int:
    run_dir = Path(spec.runs_dir) / spec.name
    if opts.node_rank > 0:
        return follow_experiment(spec, opts)
    check_stage_configs(spec, where=spec.path or f"spec {spec.name}")
    nodes = build_nodes(spec, run_dir)
    stage_names = [s.name for s in spec.stages]
    order = ["tokenizer", "prepare"] + stage_names
    for opt in (opts.only, opts.from_stage):
        if opt is not None and opt not in order:
            raise DomtokError(f"{spec.path or spec.name}: no stage {opt!r}; stages: {order}")
    from_index = order.index(opts.from_stage) if opts.from_stage else None
    todo = [n for n in nodes if opts.only is None or n.stage == opts.only]
    check_replacements(nodes, todo, opts)
    forced_ids = {n.id for n in todo if opts.force or (from_index is not None and order.index(n.stage) >= from_index)}
    for n in todo:  # a node redone from empty has its directory deleted: refuse now, before any work,
        if not (n.out_dir.exists() or n.out_dir.is_symlink()):  # where that would go through a link
            continue                                           # or lose a file domtok did not write
        state = node_state(n)
        if not (n.id in forced_ids or state in ("stale", "failed") or (state != "done" and _other_config(n))):
            continue
        if n.out_dir.is_symlink():
            from domtok.outdir import remove_tree
            remove_tree(n.out_dir)  # raises, naming the link and its target
        foreign = foreign_node_files(n.out_dir)
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise DomtokError(f"{foreign[0]}{more}: not written by domtok (no node's manifest lists it), and "
                              f"re-running {n.id} deletes {n.out_dir}; move it out of the run directory, then run "
                              "again")
    # only now, with everything checked: a refused run leaves the run dir's spec as it was
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "spec.yaml", _dump_spec(spec))

    t_start = time.time()
    gpus = f" x {opts.gpus_per_job:g} GPU(s)" if opts.gpus_per_job else ""
    jobs = (f"{opts.jobs} job{'s' * (opts.jobs > 1)} x {threads_per_job(opts)} thread(s){gpus}"
            if opts.jobs > 1 or opts.threads or gpus else "1 job")
    if opts.executor == "ray":
        jobs = (f"a Ray task per node on {opts.address or 'a local Ray cluster'} ({threads_per_job(opts)} thread(s)"
                f"{gpus} each, {f'at most {opts.jobs}' if opts.jobs else 'as many as it has resources for'} "
                f"at once, --retries {opts.retries})")
    _say(opts, f"domtok run {spec.name}: {len(todo)} nodes, conditions {list(spec.conditions)}, "
               f"seeds {spec.seeds}, run dir {run_dir}, {jobs}")
    replaced = [n.id for n in todo if n.id not in forced_ids and node_state(n) == "stale"]
    if replaced:  # a changed config: its finished nodes are redone; say which before any is deleted
        _say(opts, f"replacing {len(replaced)} finished node(s) whose config changed: {', '.join(replaced)}")
    for r in spec.ladder:
        _say(opts, f"  rung {r.name}: {r.n_layer} layers x {r.n_embd} wide ({r.n_head} heads), {r.params:,} params, "
                   f"{r.steps:,} pretraining steps = {r.budget:,} tokens asked ({r.budget / r.params:.1f} per param)")

    def forced(node: Node) -> bool:
        return opts.force or (from_index is not None and order.index(node.stage) >= from_index)

    failed = _schedule(todo, run_dir, opts, forced)
    _say(opts, f"domtok run {spec.name}: finished in {time.time() - t_start:.0f}s, "
               f"{len(failed)} failed or blocked node(s)")
    if opts.only is None and opts.report:
        # Also after failures: the report lists what is missing, and shows what did finish.
        try:
            from domtok.report import write_report
            path = write_report(run_dir)
            _say(opts, f"report: {path}")
        except Exception as e:  # the report is derived; a bug there must not hide finished results
            _say(opts, f"report could not be written: {type(e).__name__}: {e}")
            return 1
    if failed:
        _say(opts, "failed: " + ", ".join(sorted(failed)) + f" (logs under {run_dir})")
    return 1 if failed else 0


def check_replacements(nodes: list[Node], todo: list[Node], opts: RunOptions) -> None:
    """`--only S` after S's config changed would replace finished nodes and leave every finished
    node after them stale without re-running it: say so, and go on only with --force."""
    if opts.only is None or opts.force:
        return
    replaced = [n for n in todo if node_state(n) == "stale"]
    if not replaced:
        return
    gone = {n.id for n in replaced}
    downstream = []
    for n in nodes:  # nodes are in execution order, so one pass follows the dependencies
        if n.id not in gone and any(d.id in gone for d in n.deps):
            gone.add(n.id)
            if node_state(n) in ("done", "stale"):  # finished (its hash moves with its inputs')
                downstream.append(n.id)
    more = f"; {len(downstream)} finished node(s) after them would become stale ({', '.join(downstream[:4])}" \
           f"{' ...' if len(downstream) > 4 else ''})" if downstream else ""
    raise DomtokError(f"{replaced[0].out_dir}: --only {opts.only} with a changed config would replace "
                      f"{len(replaced)} finished node(s) ({', '.join(n.id for n in replaced[:4])}){more}; "
                      "pass --force to replace them, or restore the config")


def _schedule(todo: list[Node], run_dir: Path, opts: RunOptions, forced) -> set[str]:
    """Run `todo` (a valid order) with up to `opts.jobs` nodes at once; returns the failed ids.

    A node starts once every input is done; nodes whose inputs are ready start in `todo`
    order. Each node seeds itself from its own config, so the order and the concurrency do not
    change any number: a run with `--jobs 2` equals one with `--jobs 1` at the same threads per job.
    """
    if opts.jobs > 1 and opts.world_size > 1 and not opts.gpus_per_job:
        raise DomtokError("--jobs N and --nproc M (or --nnodes) together would start N torchruns at once "
                          "on the same GPUs; choose one (--jobs 1 with --nproc, or --nproc 1 with --jobs), "
                          "or give each job its own GPUs with --gpus-per-job M")
    cap = opts.jobs or len(todo)  # 0: no cap (Ray's resources decide what runs at once)
    failed: set[str] = set()
    resolved: set[str] = set()           # done, failed or skipped, in this run
    walls: dict[tuple, list[float]] = {}  # finished wall times, for the estimate of time left
    pending = list(todo)
    in_todo = {n.id for n in todo}
    running: dict[Future, tuple[Node, float]] = {}
    needs_slot: set[str] = set()         # inputs done, not done itself: waits for a job slot
    counter = [0]

    def finish(node: Node, msg: str, ok: bool, left: bool = False) -> None:
        """Settle `node`; `left` adds the run's time left, counting this node's own wall time."""
        counter[0] += 1
        resolved.add(node.id)
        if not ok:
            failed.add(node.id)
        elif wall_time(node):
            walls.setdefault(kind_key(node), []).append(wall_time(node))
        if left:
            msg += time_left(pending, list(running.values()), walls, opts.jobs)
        _say(opts, f"[{counter[0]}/{len(todo)}] {node.id}: {msg}")

    def try_start(node: Node, pool, free: bool) -> bool:
        """Start, skip or settle `node` if it can be decided now; False while an input is still to
        come, or when it must run and no job slot is `free` (a finished or blocked node is settled
        without one, so "waiting" counts only nodes that will run)."""
        blocked = [d.id for d in node.deps if d.id in failed]
        if blocked:
            finish(node, f"skipped, depends on failed {blocked[0]}", False)
            return True
        if any(d.id in in_todo and d.id not in resolved for d in node.deps):
            return False
        if not free and node.id in needs_slot:  # known to need one: no file read on every pass
            return False
        missing = [d.id for d in node.deps if node_state(d) != "done"]
        if missing:
            finish(node, f"skipped, input {missing[0]} is not done (run without --only first)", False)
            return True
        state = node_state(node)
        if state == "done" and not forced(node):
            finish(node, f"done already ({key_metric_text(node)})", True)
            return True
        if not free:
            needs_slot.add(node.id)
            return False
        if state == "running":
            held = {}
            with contextlib.suppress(OSError, ValueError):  # it may just have been released
                held = json.loads((node.out_dir / "running.json").read_text())
            raise DomtokError(f"{node.out_dir}: another `domtok run` is working on this node (process "
                              f"{held.get('pid')} on {held.get('host', 'this machine')}, see running.json); "
                              "wait for it, or remove that file once that process is gone")
        if opts.executor == "ray":  # Ray starts it when the cluster has its resources free
            _say(opts, f"submit {node.id}")
        elif cap > 1:
            others = ", ".join(n.id for n, _ in running.values())
            _say(opts, f"start {node.id}" + (f" (also running: {others})" if others else ""))
        fresh = forced(node) or state in ("stale", "failed")
        active[node.id] = (node, time.time())  # before submit: --jobs 1 runs the node inside it
        running[pool.submit(run_node, node, run_dir, opts, fresh)] = active[node.id]
        return True

    pool = make_pool(opts, threads_per_job(opts))
    if not opts.jobs:  # Ray without a cap: the nodes its cluster runs at once, for the time left
        opts = dataclasses.replace(opts, jobs=pool.width)
    active: dict[str, tuple[Node, float]] = {}  # started and not yet settled, for the heartbeat
    stop = _heartbeat(opts, active, pending, walls)
    try:
        while pending or running:
            for node in list(pending):
                if try_start(node, pool, len(running) < cap):
                    pending.remove(node)
            if not running:
                if pending:  # cannot happen for a valid order; never spin
                    raise AssertionError(f"no node can start: {[n.id for n in pending]}")
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                node, t0 = running.pop(fut)
                active.pop(node.id, None)
                try:
                    ok = fut.result()
                except BrokenProcessPool:  # the worker died (killed, out of memory): the node failed
                    atomic_write_json(node.out_dir / "failed.json",
                                      {"error": "its worker process died", "log": str(node.out_dir / "log.txt")})
                    ok = False
                except Exception as e:  # e.g. a Ray task whose worker died more often than --retries: the
                    # driver writes nothing in the node's dir (it may be another machine's); a later run resumes it
                    _say(opts, f"{node.id}: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
                    ok = False
                if ok:
                    finish(node, f"done in {wall_time(node):.1f}s ({key_metric_text(node)})", True, left=True)
                else:
                    finish(node, f"FAILED: {_failure(node)} — see {node.out_dir / 'log.txt'}", False)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done if f.done()):
                pool.shutdown(wait=True, cancel_futures=True)
                pool = make_pool(opts, threads_per_job(opts))  # a fresh pool for the rest
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    return failed


def _failure(node: Node) -> str:
    """The error a failed node recorded (e.g. "No space left on device"), for its console line."""
    try:
        error = json.loads((node.out_dir / "failed.json").read_text())["error"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no failed.json"
    return " ".join(str(error).split())[:300]


def _other_config(node: Node) -> bool:
    """The node's directory was started by another config (or is not resumable): it is redone from empty."""
    marker = node.out_dir / "node.json"
    if not marker.exists():
        return False
    try:
        old = json.loads(marker.read_text()).get("hash")
    except (json.JSONDecodeError, AttributeError):
        old = None
    return old != node.hash or node.kind not in RESUMABLE


def _heartbeat(opts: RunOptions, active: dict, pending: list, walls: dict):
    """A thread that prints, every 4 x $DOMTOK_PROGRESS_EVERY seconds (a minute by default)
    while a node runs, where each running node is (its log's progress line) and the run's time
    left, to the terminal `domtok run` started on (a node's own output goes to its log, also
    under --jobs 1, where the node runs in this process). Returns the Event that stops it."""
    import threading

    from domtok.progress import every_seconds

    stop = threading.Event()
    out, period = sys.stdout, max(1.0, 4 * every_seconds())

    def beat() -> None:
        while not stop.wait(period):
            try:
                now = list(active.values())
                waiting = [n for n in list(pending) if n.id not in active]  # --jobs 1: the running node is not yet removed
                if now and not opts.quiet:
                    print("\n".join(running_lines(now, waiting, walls, opts.jobs)), file=out, flush=True)
            except Exception:  # the board is advice: never let it stop the run
                continue

    threading.Thread(target=beat, daemon=True, name="domtok-heartbeat").start()
    return stop


def run_node(node: Node, run_dir: Path, opts: RunOptions, fresh: bool, holder: dict | None = None) -> bool:
    """Run one node in this process (or under torchrun when nproc > 1); True when it finished.
    `holder`: more about the process that holds the node, written into its running.json."""
    from domtok.outdir import remove_tree

    if fresh and (node.out_dir.exists() or node.out_dir.is_symlink()):
        remove_tree(node.out_dir)
    if _other_config(node):  # an incomplete directory from another config must not be resumed
        remove_tree(node.out_dir)
    marker = node.out_dir / "node.json"
    node.out_dir.mkdir(parents=True, exist_ok=True)
    (node.out_dir / "failed.json").unlink(missing_ok=True)
    atomic_write_json(marker, {"id": node.id, "hash": node.hash, "kind": node.kind, "config": node.config})
    atomic_write_json(node.out_dir / "running.json", {"pid": os.getpid(), "host": socket.gethostname(),
                                                      "started": time.time(), **(holder or {})})
    log_path = node.out_dir / "log.txt"
    t0 = time.time()
    try:
        if opts.world_size > 1 and node.kind not in SINGLE_PROCESS:
            summary = _run_torchrun(node, run_dir, opts, log_path)
        else:
            fn, cfg = stage_call(node, run_dir)
            # The stage's own output (progress, per-step lines) goes to its log; the terminal
            # gets one line per node from run_experiment.
            with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                summary = _call_stage(fn, cfg, node)
    except Exception as e:  # recorded per node; the run goes on with what does not depend on it
        with open(log_path, "a") as log:
            log.write(traceback.format_exc())
        atomic_write_json(node.out_dir / "failed.json", {"error": f"{type(e).__name__}: {e}", "log": str(log_path)})
        (node.out_dir / "running.json").unlink(missing_ok=True)
        return False
    manifest = {"id": node.id, "hash": node.hash, "kind": node.kind, "stage": node.stage,
                # what the node wrote: a forced re-run deletes the directory only if it holds nothing else
                "files": node_files(node.out_dir),
                "condition": node.condition, "seed": node.seed, "benchmark": node.benchmark,
                "rung": node.rung, "config": node.config, "inputs": [d.id for d in node.deps], "summary": summary or {},
                "wall_time_s": time.time() - t0, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "provenance": provenance.collect()}
    write_manifest(node.out_dir, manifest)
    (node.out_dir / "running.json").unlink(missing_ok=True)
    return True


def torchrun_command(opts: RunOptions) -> list[str]:
    """`torchrun` for this machine: standalone on one node, else its static multi-node launch
    (rank 0 lives on node 0, the one that writes the outputs)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={opts.nproc}"]
    if opts.nnodes == 1:
        return cmd + ["--standalone"]
    host, _, port = opts.rdzv.rpartition(":")
    if not host or not port.isdigit():
        raise DomtokError(f"--rdzv {opts.rdzv!r}: write HOST:PORT (node 0's address), e.g. node001:29500")
    return cmd + [f"--nnodes={opts.nnodes}", f"--node-rank={opts.node_rank}", f"--master-addr={host}",
                  f"--master-port={port}"]


def _run_torchrun(node: Node, run_dir: Path, opts: RunOptions, log_path: Path, job: Path | None = None) -> dict:
    """Run the node's stage function under torchrun in a child process group."""
    job = job or node.out_dir / "torchrun_node.json"
    atomic_write_json(job, {"run_dir": str(run_dir), "node": _node_to_dict(node)})
    cmd = torchrun_command(opts) + ["-m", "domtok.pipeline", "--worker", str(job)]
    with open(log_path, "a") as log:
        # torchrun stops its workers on SIGTERM: it gets one when this process dies, even by SIGKILL
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: die_with_parent(signal.SIGTERM)).returncode
    if rc != 0:
        # The workers' own message (e.g. a config that does not divide by N processes) is the
        # useful one; torchrun's traceback around it is not.
        causes = [ln.split("DomtokError: ", 1)[1].strip() for ln in log_path.read_text(errors="replace").splitlines()
                  if "DomtokError: " in ln]
        raise DomtokError(f"torchrun exited with {rc}" + (f": {causes[-1]}" if causes else ""))
    return json.loads((node.out_dir / "summary.json").read_text()) if (node.out_dir / "summary.json").exists() else {}


def follow_experiment(spec: Spec, opts: RunOptions) -> int:
    """Node `node_rank` > 0 of a multi-node run: join node 0's torchrun for every distributed node.

    It walks the same nodes in the same order as node 0 and makes the same decisions from the
    shared run dir: a node node 0 will skip (done, or blocked by a failure) is skipped here; for
    any other it waits until node 0 has started it (its `running.json` is newer than this
    process), then starts this machine's share of the processes. It writes nothing in the run
    dir; its own torchrun output goes to `<run dir>/node<rank>/<node id>.log`.
    """
    run_dir = Path(spec.runs_dir) / spec.name
    t_start = time.time()
    logs = run_dir / f"node{opts.node_rank}"
    failed: set[str] = set()
    order = ["tokenizer", "prepare"] + [s.name for s in spec.stages]
    from_index = order.index(opts.from_stage) if opts.from_stage else None

    def fresh(path: Path) -> bool:
        return path.exists() and path.stat().st_mtime >= t_start - 1

    _say(opts, f"domtok run {spec.name}: node {opts.node_rank} of {opts.nnodes}, joining {opts.rdzv}")
    for node in build_nodes(spec, run_dir):
        if opts.only is not None and node.stage != opts.only:
            continue
        forced = opts.force or (from_index is not None and order.index(node.stage) >= from_index)
        if any(d.id in failed for d in node.deps) or (opts.only and any(node_state(d) != "done" for d in node.deps)):
            failed.add(node.id)  # node 0 skips it too
            continue
        if node_state(node) == "done" and not forced:
            continue
        if node.kind in SINGLE_PROCESS:  # node 0 alone runs it: wait for its outcome
            while not (fresh(node.manifest_path) or fresh(node.out_dir / "failed.json")):
                time.sleep(1.0)
            if not fresh(node.manifest_path):
                failed.add(node.id)
            continue
        while not fresh(node.out_dir / "running.json"):
            if fresh(node.manifest_path) or fresh(node.out_dir / "failed.json"):
                break  # node 0 did it without us (e.g. it failed before starting torchrun)
            time.sleep(0.5)
        else:
            logs.mkdir(parents=True, exist_ok=True)
            name = node.id.replace("/", "__")
            try:
                _run_torchrun(node, run_dir, opts, logs / f"{name}.log", job=logs / f"{name}.json")
                _say(opts, f"{node.id}: done on node {opts.node_rank}")
            except DomtokError as e:
                failed.add(node.id)
                _say(opts, f"{node.id}: FAILED on node {opts.node_rank}: {e}")
            continue
        if not fresh(node.manifest_path):
            failed.add(node.id)
    _say(opts, f"domtok run {spec.name}: node {opts.node_rank} finished in {time.time() - t_start:.0f}s")
    return 1 if failed else 0


def _node_to_dict(node: Node) -> dict:
    return {"id": node.id, "kind": node.kind, "stage": node.stage, "out_dir": str(node.out_dir),
            "config": node.config, "condition": node.condition, "seed": node.seed,
            "benchmark": node.benchmark, "rung": node.rung, "hash": node.hash,
            "deps": [_node_to_dict(d) for d in node.deps]}


def _node_from_dict(d: dict) -> Node:
    return Node(id=d["id"], kind=d["kind"], stage=d["stage"], out_dir=Path(d["out_dir"]), config=d["config"],
                deps=[_node_from_dict(x) for x in d["deps"]], condition=d["condition"], seed=d["seed"],
                benchmark=d["benchmark"], rung=d.get("rung"), hash=d["hash"])


def _worker(job_path: str) -> int:
    """Entry point of each torchrun process: run the same stage function as the single process."""
    job = json.loads(Path(job_path).read_text())
    node = _node_from_dict(job["node"])
    from domtok.utils import dist_teardown

    fn, cfg = stage_call(node, Path(job["run_dir"]))
    try:
        _call_stage(fn, cfg, node)
    finally:
        dist_teardown()
    return 0


def _call_stage(fn, cfg, node: Node) -> dict:
    """Call a stage function; training stages continue from their last checkpoint."""
    import inspect

    if "resume" in inspect.signature(fn).parameters:
        return fn(cfg, node.out_dir, resume=True)
    return fn(cfg, node.out_dir)


def _say(opts: RunOptions, msg: str) -> None:
    if not opts.quiet:
        print(msg, flush=True)


def _dump_spec(spec: Spec) -> str:
    import yaml

    return yaml.safe_dump(spec.raw, sort_keys=False)


# --------------------------------------------------------------------------- CLI

def add_arguments(p) -> None:
    p.add_argument("spec", nargs="?", default=None, help="experiment spec YAML (default: the tiny preset)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the spec, e.g. seeds=[0,1]")
    p.add_argument("--preset", help="a shipped spec by name (tiny, gpt2-124m-10b)")
    p.add_argument("--seeds", help="run N seeds from the spec's first seed on (tiny: 3, 4, ...; replaces the spec's "
                   "list); `auto`: the spec's `sequential:` plan, seeds in looks until the primary endpoint decides")
    p.add_argument("--only", metavar="STAGE", help="run only this stage (its inputs must be done)")
    p.add_argument("--from", dest="from_stage", metavar="STAGE", help="re-run this stage and everything after it")
    p.add_argument("--force", action="store_true", help="re-run every node, even finished ones; with --only, replace finished nodes of a changed config")
    p.add_argument("--nproc", type=int, default=1, help="processes per node for each training/eval stage (torchrun)")
    p.add_argument("--nnodes", type=int, default=1, help="machines in a multi-node run; start `domtok run` with the "
                   "same arguments on each, with its --node-rank (the run dir must be on a shared filesystem)")
    p.add_argument("--node-rank", type=int, default=0, help="this machine's rank in a multi-node run (0 runs the pipeline)")
    p.add_argument("--rdzv", default="127.0.0.1:29500", metavar="HOST:PORT",
                   help="node 0's address and a free port, for torchrun's multi-node rendezvous")
    p.add_argument("--jobs", type=int, default=None,
                   help="nodes run at once (other seeds, the other condition), each in a worker process "
                        "(default: one per CPU core; 1 on a GPU machine or with --nproc; with --executor ray: "
                        "no limit but the cluster's)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per job (default: the cores divided among the jobs; 1 per Ray task)")
    from domtok.executors import add_arguments as executor_arguments

    executor_arguments(p)
    p.add_argument("--runs-dir", help="where run directories live (default: the spec's runs_dir, `runs`)")
    from domtok.smoke import add_arguments as smoke_arguments

    smoke_arguments(p)


def main(args) -> int:
    spec_arg = args.spec
    overrides = list(args.overrides)
    if spec_arg is not None and "=" in spec_arg and not Path(spec_arg).exists():
        overrides.insert(0, spec_arg)  # `domtok run seeds=[0,1]` with the default spec
        spec_arg = None
    if args.preset and spec_arg:
        raise DomtokError("give either a spec file or --preset, not both")
    if args.nproc < 1:
        raise DomtokError(f"--nproc {args.nproc}: give the number of processes per stage, at least 1")
    auto = args.seeds == "auto"
    if args.seeds is not None and not auto and not str(args.seeds).isdigit():
        raise DomtokError(f"--seeds {args.seeds}: give a number of seeds, or `auto` for the spec's sequential plan")
    if auto and (args.only or args.from_stage or args.smoke or args.nnodes > 1):
        raise DomtokError("--seeds auto runs whole looks on one machine; drop --only, --from, --smoke and --nnodes")
    spec = load_spec(args.preset or spec_arg, overrides, seeds=None if auto or args.seeds is None else int(args.seeds))
    if args.runs_dir:
        spec.runs_dir = args.runs_dir
    if auto:
        from domtok.sequential_run import check_plan, run_sequential

        check_plan(spec)
    if not 0 <= args.node_rank < args.nnodes:
        raise DomtokError(f"--node-rank {args.node_rank} must be in 0..{args.nnodes - 1} (--nnodes {args.nnodes})")
    jobs = args.jobs if args.jobs is not None else (1 if args.nproc > 1 or args.nnodes > 1 else default_jobs())
    for flag, value in (("--jobs", jobs), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise DomtokError(f"{flag} {value}: give a positive number")
    nproc, gpus_per_job = job_gpus(args, jobs)
    opts = RunOptions(only=args.only, from_stage=args.from_stage, force=args.force, nproc=nproc,
                      jobs=jobs, threads=args.threads, nnodes=args.nnodes, node_rank=args.node_rank, rdzv=args.rdzv,
                      gpus_per_job=gpus_per_job, executor=args.executor, address=args.address, retries=args.retries)
    if opts.executor == "ray":
        opts.jobs = args.jobs or 0  # no cap unless asked: the cluster's resources say what runs at once
    check_stage_configs(spec, where=spec.path or f"spec {spec.name}")  # the whole spec, before any dir is made
    if args.smoke:
        from domtok.smoke import run_smoke

        return run_smoke(spec, opts, run_experiment, device=args.device, gpu=args.gpu, mfu=args.mfu)
    if opts.node_rank == 0 and not args.smoke:  # node 0 writes the run dir; the others follow it
        from domtok.outdir import check_writable_dir, claim_out_dir

        check_writable_dir(spec.runs_dir, "--runs-dir")
        claim_out_dir(Path(spec.runs_dir) / spec.name, what="run directory")
    if auto:
        return run_sequential(spec, dataclasses.replace(opts, report=False), run_experiment)
    return run_experiment(spec, opts)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2]))
    print("usage: python -m domtok.pipeline --worker JOB.json (internal; use `domtok run`)", file=sys.stderr)
    sys.exit(2)
