"""Where the nodes of `domtok run` execute: in the `domtok run` process (`--jobs 1`), in worker
processes on this machine (`--jobs N`, each job on its own GPUs with `--gpus-per-job G`), or as
one Ray task per node on a Ray cluster (`--executor ray`).

Every executor has the two methods of `concurrent.futures` that the scheduler
(`pipeline._schedule`) uses: `submit(run_node, node, run_dir, opts, fresh)` returns a Future of
run_node's result, and `shutdown`. The scheduler decides what starts when (a node once its
inputs are done) from the run dir's manifests; an executor only decides where a node runs. So
the manifests stay the one record of what is done, whichever executor ran a node.

No orphans: a worker process dies with its parent (`die_with_parent`), so `kill -9` of
`domtok run` stops its jobs too, and a resume right after it finds no node held by a live
process. A Ray task belongs to the Ray job of its driver: Ray stops it when the driver exits,
and `shutdown` cancels what is still running when the driver stops on an error or Ctrl-C.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from domtok.errors import DomtokError

# --------------------------------------------------------------------------- dying with the parent

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Have this process receive `sig` when its parent process exits, however it exits.

    Linux: prctl(PR_SET_PDEATHSIG). Elsewhere: a thread that polls the parent's pid each second.
    `parent`: the pid the parent had; if it died before this call, this process is already an
    orphan (its parent pid changed), and it gets `sig` now.
    """
    parent = os.getppid() if parent is None else parent
    ok = False
    if sys.platform.startswith("linux"):
        try:
            ok = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
        except (OSError, AttributeError):
            ok = False
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)
    if not ok:
        def watch():
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), sig)

        threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def machine_cores() -> int:
    """CPU cores this process may use (the affinity mask, which a container may limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- GPUs per job

def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (a SLURM allocation or a
    container may have narrowed them already: their names are kept, not renumbered)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def check_gpus_per_job(g: float) -> float:
    """A whole number of GPUs per job, or a share 1/k of one (k jobs on each GPU, when asked)."""
    if g >= 1 and g == int(g):
        return float(g)
    if 0 < g < 1 and abs(1 / g - round(1 / g)) < 1e-6:
        return 1 / round(1 / g)
    raise DomtokError(f"--gpus-per-job {g:g}: give a whole number of GPUs per job (1, 2, 8), or a share 1/k "
                      "of one GPU to put k jobs on each (0.5, 0.25)")


def gpu_sets(jobs: int, gpus_per_job: float, gpus: list[str]) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each of `jobs` jobs: job i gets GPUs i*G .. i*G+G-1 of `gpus`, its
    own; with a share 1/k, jobs i*k .. i*k+k-1 get GPU i. More than the GPUs there are is refused."""
    g = check_gpus_per_job(gpus_per_job)
    if jobs * g > len(gpus) + 1e-9:
        raise DomtokError(f"--jobs {jobs} x --gpus-per-job {g:g} needs {jobs * g:g} GPUs, but this machine "
                          f"has {len(gpus)}{f' ({chr(44).join(gpus)})' if gpus else ''}; run fewer jobs, or "
                          "share GPUs on purpose with a fraction (--gpus-per-job 0.5 puts 2 jobs on each)")
    if g >= 1:
        n = int(g)
        return [",".join(gpus[i * n:(i + 1) * n]) for i in range(jobs)]
    k = round(1 / g)
    return [gpus[i // k] for i in range(jobs)]


# --------------------------------------------------------------------------- this machine

class Inline:
    """The executor of `--jobs 1`: runs a node in this process when it is submitted."""

    def submit(self, fn, *args) -> Future:
        f = Future()
        f.set_result(fn(*args))
        return f

    def shutdown(self, wait=True, cancel_futures=False) -> None:
        pass


def make_pool(opts, threads: int):
    """The executor for `opts` (a pipeline.RunOptions), its jobs on `threads` torch threads each."""
    if opts.executor == "ray":
        return RayPool(opts, threads)
    gpus = gpu_sets(opts.jobs, opts.gpus_per_job, visible_gpus()) if opts.gpus_per_job else None
    if opts.jobs <= 1:
        if opts.threads or gpus:  # --jobs 1 --threads T: this process takes the share it was given
            init_job(threads if opts.threads else None, gpus[0] if gpus else None)
        return Inline()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter per worker, never a fork of a process whose torch threads run
    ctx = multiprocessing.get_context("spawn")
    slots = None
    if gpus:  # each worker takes one job's GPUs as it starts; a pool never has more workers than jobs
        slots = ctx.Queue()
        for s in gpus:
            slots.put(s)
    return ProcessPoolExecutor(max_workers=opts.jobs, mp_context=ctx, initializer=init_job,
                               initargs=(threads, slots, os.getpid()))


def init_job(threads: int | None, gpus=None, parent: int | None = None) -> None:
    """A job's process: its share of the cores and its own GPUs, for torch and for any child
    (torchrun); a worker process also dies with `parent`, the `domtok run` that started it."""
    if parent is not None:
        die_with_parent(signal.SIGKILL, parent)
    if gpus is not None and not isinstance(gpus, str):
        gpus = gpus.get()  # a worker's slot from the pool's queue
    if gpus is not None:  # read by CUDA when torch first touches it, and inherited by torchrun
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    if threads is None:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- Ray

class RayPool:
    """One Ray task per node: its resource request is the node's CPUs (`--threads`, or a prepare
    node's workers) and, for a training or evaluation node, `--gpus-per-job` GPUs (Ray sets
    CUDA_VISIBLE_DEVICES to them; more than one: the node runs under torchrun on them). Ray runs a
    task whose worker died again, up to `--retries` times, and the retry resumes the node from its
    own checkpoint. Tasks read and write the run dir, which must be on storage every machine of
    the cluster sees at the same path; the driver writes nothing a task writes."""

    def __init__(self, opts, threads: int):
        try:
            import ray
        except ImportError:
            raise DomtokError("--executor ray: Ray is not installed; pip install 'domtok[ray]' "
                              "(or pip install 'ray[default]')") from None
        self.ray, self.opts, self.threads = ray, opts, threads
        if not ray.is_initialized():
            if opts.address:  # an existing cluster: `ray start --head` / its workers
                ray.init(address=opts.address, log_to_driver=False)
            else:  # a cluster of this machine's cores (and GPUs), for as long as this run
                # "local": a new cluster even where `ray start` left the address of another one
                ray.init(address="local", num_cpus=machine_cores(), log_to_driver=False, include_dashboard=False)
        # A task asking for more than any one machine has would wait forever: refuse it, or ask less.
        machines = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        self.most_cpus = max(m.get("CPU", 0) for m in machines)
        most_gpus = max(m.get("GPU", 0) for m in machines)
        if (opts.gpus_per_job or 0) > most_gpus:
            self.shutdown()
            raise DomtokError(f"--gpus-per-job {opts.gpus_per_job:g}: no machine of the Ray cluster at "
                              f"{opts.address or 'this machine'} has that many GPUs (most: {most_gpus:g}); ask "
                              "for fewer, or add machines with GPUs (`ray start --address HEAD:6379 --num-gpus N`)")
        if threads > self.most_cpus:
            self.shutdown()
            raise DomtokError(f"--threads {threads}: no machine of the Ray cluster has that many CPUs (most: "
                              f"{self.most_cpus:g}); ask for fewer")
        # nodes the cluster runs at once, for the estimate of time left
        total = ray.cluster_resources()
        self.width = max(1, int(total.get("GPU", 0) // opts.gpus_per_job) if opts.gpus_per_job
                         else int(total.get("CPU", 1) // threads))
        self.task = ray.remote(_ray_task)
        self.refs: dict[Future, object] = {}

    def resources(self, node) -> dict:
        from domtok.rundir import EVAL_KINDS, TRAINING_KINDS

        cpus = self.threads
        if node.kind == "prepare":
            cpus = max(cpus, min(int(node.config.get("workers") or 1), int(self.most_cpus)))
        gpus = float(self.opts.gpus_per_job or 0) if node.kind in TRAINING_KINDS + EVAL_KINDS else 0.0
        return {"num_cpus": cpus, "num_gpus": gpus}

    def submit(self, fn, node, run_dir: Path, opts, fresh: bool) -> Future:
        ref = self.task.options(name=node.id, max_retries=opts.retries, **self.resources(node)).remote(
            fn, node, run_dir, opts, fresh, self.threads)
        fut = ref.future()
        self.refs[fut] = ref
        return fut

    def shutdown(self, wait=True, cancel_futures=False) -> None:
        for fut, ref in getattr(self, "refs", {}).items():
            if not fut.done():
                self.ray.cancel(ref, force=True)  # stops the worker process, and its torchrun with it
        self.refs = {}
        self.ray.shutdown()


def _ray_task(fn, node, run_dir: Path, opts, fresh: bool, threads: int) -> bool:
    """A node in a Ray worker. The first attempt starts a `fresh` node from an empty directory; a
    retry (the same Ray task id in the node's running.json) continues what the dead attempt left."""
    import json

    import ray

    task = ray.get_runtime_context().get_task_id()
    if fresh:
        try:
            held = json.loads((node.out_dir / "running.json").read_text())
            fresh = held.get("ray_task") != task
        except (OSError, ValueError):
            pass
    init_job(threads)
    return fn(node, run_dir, opts, fresh, {"ray_task": task})


# --------------------------------------------------------------------------- CLI (of `domtok run`)

def add_arguments(p) -> None:
    p.add_argument("--gpus-per-job", type=float, default=None, metavar="G",
                   help="each job's own GPUs (CUDA_VISIBLE_DEVICES); G > 1 runs a job's training and "
                        "evaluation nodes under torchrun on its G GPUs; a share 1/k (0.5) puts k jobs on each "
                        "GPU (default with --jobs N > 1 on a GPU machine: 1; under Ray: 0, no GPU)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this machine (--jobs); ray: every node is a Ray task, placed by its CPUs "
                        "and GPUs, on a Ray cluster. With Ray the run dir (--runs-dir) must be on storage "
                        "every machine of the cluster sees at the same path, and domtok installed on each")
    p.add_argument("--address", default=None, help="the Ray cluster to join, e.g. auto or HEAD_IP:6379 "
                   "(default: start a Ray cluster of this machine for this run)")
    p.add_argument("--retries", type=int, default=1,
                   help="Ray: times a node is run again after its worker died; it resumes from its checkpoint")


def job_gpus(args, jobs: int) -> tuple[int, float | None]:
    """(processes per node, GPUs per job) from --nproc, --gpus-per-job and --executor; a job of G
    GPUs runs its nodes under torchrun with G processes. Checked before anything is written."""
    if args.retries < 0:
        raise DomtokError(f"--retries {args.retries}: give 0 or more")
    if args.executor == "ray" and args.nnodes > 1:
        raise DomtokError("--executor ray places the nodes on the cluster itself: leave out --nnodes")
    if args.executor != "ray" and (args.address or args.retries != 1):
        raise DomtokError("--address and --retries are the Ray executor's: add --executor ray")
    g = args.gpus_per_job
    if g is None and args.executor == "local" and jobs > 1 and args.nproc == 1 and visible_gpus():
        g = 1.0  # never two jobs on one GPU unless asked
    if g is None or g == 0:
        return args.nproc, None
    g = check_gpus_per_job(g)
    if g > 1 and args.nproc not in (1, int(g)):
        raise DomtokError(f"--nproc {args.nproc} with --gpus-per-job {g:g}: a job runs one process per GPU; "
                          "leave out --nproc")
    if args.executor == "local":
        gpu_sets(jobs, g, visible_gpus())  # refused here when the jobs need more GPUs than there are
    return max(args.nproc, int(g)), g
