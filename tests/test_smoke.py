"""`domtok run SPEC --smoke`: the replication preset and the tiny study, every node at toy scale.

CI runs both smokes here (the replication's GPT-2 124M with the GPT-2 tokenizer from
../shared/data/gpt2, ~2 steps per stage, hub sources replaced by fixtures in their schema).
The real-config projection is checked against independent references: transformers' GPT-2
for the parameter count, and what autograd really saves for the activation estimate.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from domtok.data import sources
from domtok.preflight import activation_bytes
from domtok.smoke import fixture_records

from conftest import GPT2_DIR

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")


def smoke(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, float, float]:
    """Run a smoke in a subprocess: (result, smoke.json, wall seconds, CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "domtok", "run", *args, "--smoke", "--runs-dir", str(tmp_path)],
                         env=ENV, capture_output=True, text=True, timeout=3600, cwd=tmp_path)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    name = args[0]
    report = tmp_path / f"{name}-smoke" / "smoke.json"
    data = json.loads(report.read_text()) if report.exists() else {}
    print(f"smoke {name}: wall {time.time() - t0:.0f}s, CPU {cpu:.0f}s")  # shown with -s: CI's timing
    return res, data, time.time() - t0, cpu


@pytest.fixture(scope="module")
def replication(tmp_path_factory):
    if not (GPT2_DIR / "vocab.bpe").exists():
        pytest.skip(f"GPT-2 BPE files not found at {GPT2_DIR} (../shared/data/gpt2)")
    tmp = tmp_path_factory.mktemp("replication")
    return (tmp, *smoke(tmp, "gpt2-124m-10b"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    return (tmp, *smoke(tmp, "tiny"))


@pytest.fixture(scope="module")
def controls(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("controls")
    return (tmp, *smoke(tmp, "tiny-controls", "--seeds", "1"))


def test_controls_smoke_runs_every_node(controls):
    """tiny-controls (one seed): the control set is built beside the tokenizer, the
    document-matched arm reads exactly the baseline's documents, every node finishes."""
    from domtok.rundir import build_nodes, load_spec, node_state, read_summary

    out, res, _, _, _ = controls
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = out / "tiny-controls-smoke"
    nodes = build_nodes(load_spec(str(run / "spec.yaml")), run)
    assert {n.condition for n in nodes} >= {"baseline", "mul_tokens", "mul_tokens_docs", "control_tokens"}
    assert all(node_state(n) == "done" for n in nodes)
    pre = {n.condition: read_summary(n) for n in nodes if n.kind == "pretrain"}
    assert pre["mul_tokens_docs"]["documents_seen"] == pre["baseline"]["documents_seen"]
    assert pre["mul_tokens_docs"]["match"]["documents"] == pre["baseline"]["documents_seen"]
    built = json.loads((run / "tokenizer" / "token_sets" / "control.json").read_text())["build"]
    assert abs(built["shrink"] - built["target"]) <= 0.01
    assert f"control by {built['shrink']:.2%}" in (run / "tokenizer" / "log.txt").read_text()  # the build prints both
    # the report: the mechanism section with both controls, the document-matched arm's verdict
    from domtok.report.mechanism import COMPRESSION, COMPRESSION_ALONE, MORE_TEXT, SAME_TEXT

    report = (run / "report.md").read_text()
    for text in ("## Mechanism", f"| {MORE_TEXT} | mul_tokens − mul_tokens_docs |",
                 f"| {SAME_TEXT} | mul_tokens_docs − baseline |", f"| {COMPRESSION} | mul_tokens − control_tokens |",
                 f"| {COMPRESSION_ALONE} | control_tokens − baseline |",
                 "mul_tokens_docs is document-matched (data-matched) to baseline: the same documents",
                 "Its controls (`mul_tokens_docs`, `control_tokens`)"):
        assert text in report, text
    js = json.loads((run / "report.json").read_text())
    mech = js["mechanism"]
    assert {r["question"] for r in mech["matching"]} >= {MORE_TEXT, SAME_TEXT, COMPRESSION, COMPRESSION_ALONE}
    assert {r["condition"] for r in js["headline"]} == {"mul_tokens"}  # the controls are not the question
    answers = [r for r in mech["controls"] if r["primary"]]
    assert len(answers) == 4 and all(r["verdict"] in ("helps", "hurts", "equivalent", "undecided") for r in answers)
    pre = [r for r in mech["controls"] if r["stage"] == "pretrain" and "p" in r]
    assert pre and all(r["family"] == "descriptive" and r.get("p_holm") is None for r in pre)


def test_replication_preset_smoke_runs_every_node(replication):
    tmp_path, res, r, wall, cpu = replication
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    # the study's whole layout: 8 training nodes and 3 evaluations after each, per condition, + tokenizer and prepare
    assert len(r["nodes"]) == 1 + 2 * (1 + 7 * 4) and all(n["result"] == "passed" for n in r["nodes"])
    for stage in ("sft_sbs", "grpo_binary", "grpo_shaped", "grpo_shaped_fair"):
        assert f"| baseline/seed0/{stage}/eval/gsm8k | passed |" in res.stdout
    grpo = tmp_path / "gpt2-124m-10b-smoke" / "mul_tokens" / "seed0" / "grpo_shaped_fair"
    assert (grpo / "completions" / "completions_00002.jsonl").exists()  # log_completions, at the smoke's last step
    # the output says how it was shrunk, and every hub source became a fixture in its schema
    assert "pretrain.max_steps: 19073 -> 2" in r["shrunk"]
    assert "pretrain.compile: true -> false" in r["shrunk"]
    assert any("hub:HuggingFaceFW/fineweb-edu:sample-10BT@train" in s and "fixture" in s for s in r["sources"])
    # the real config: GPT-2 124M with the 50,368-id layout; transformers' own count as reference
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=50368, n_positions=1024))
    (plan,) = r["plans"]
    assert plan["params"] == hf.num_parameters() == 124_525_056
    assert plan["tokens"] == 19073 * 524288
    assert plan["memory_per_gpu"]["adamw"] == 8 * plan["params"] and plan["gpu"] == "H100" and plan["mfu"] == 0.4
    assert plan["wall_s"] == pytest.approx(plan["flops"] / (989e12 * 0.4))
    checks = "\n".join(r["checks"])
    assert "OK: pretrain: tokens_per_step 524,288 = 32 x 1024 x 1 GPU(s) x grad_accum 16" in checks
    # offline, the smoke reads a fixture, not FineWeb-Edu: the domain condition's figure is a bound, not a projection
    # of the fixture's injection ratio
    mul = next(c for c in r["checks"] if c.startswith("WARN: pretrain [mul_tokens]"))
    assert "over at most 9,990,000,000 training tokens" in mul and "at least 1.001 epochs" in mul
    assert "whose x 0." in mul and "is not this corpus's" in mul
    assert "evals.gsm8k.data: hub:openai/gsm8k:main is on the hub" in checks
    assert "disk: the real run writes ~107 GB" in checks  # 2 x 20 GB of shards + checkpoints of 8 training stages
    t = r["prepare_throughput"]
    assert t["workers"] == 16 and t["limit"] in ("reader", "workers") and t["projected_s"] > 0
    assert "limited by the" in res.stdout
    # the wall and CPU time, for the README's figure (printed, not asserted: timings are for benchmarks)
    print(f"replication smoke: {wall:.0f}s wall, {cpu:.0f}s CPU")


# --------------------------------------------------------------------------- every README command

def readme_commands() -> list[list[str]]:
    """Every command line of the README's bash blocks (continuations joined, comments dropped)."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip():
                out.append(shlex.split(line, comments=True))
    return out


def run_parser():
    import argparse

    from domtok.pipeline import add_arguments

    p = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(p)
    return p


def ray_start_help() -> str:
    pytest.importorskip("ray")
    return subprocess.run(["ray", "start", "--help"], capture_output=True, text=True, check=True).stdout


def _cli(argv: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    exe = {"domtok": [sys.executable, "-m", "domtok"], "torchrun": [sys.executable, "-m", "torch.distributed.run"],
           "python3": [sys.executable]}[argv[0]]
    res = subprocess.run(exe + argv[1:], env=ENV, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert res.returncode == 0, (argv, res.stdout[-3000:], res.stderr[-3000:])
    return res


SHRINK_PRETRAIN = ["max_steps=2", "seq_len=64", "micro_batch_size=2", "tokens_per_step=256", "warmup_steps=1",
                   "eval_every=0", "eval_batches=1", "ckpt_every=0", "hellaswag_every=0", "compile=false",
                   "progress=false"]


def test_every_readme_command_runs(replication, tiny, controls, tmp_path):
    """Each README command runs as written where this CPU machine can; where it needs GPUs or
    the network, its smoke / --help / local-fixture equivalent runs instead, as noted per branch."""
    rep_dir, rep_res, _, _, _ = replication
    smoke_dir = rep_dir / "gpt2-124m-10b-smoke"
    fineweb = next((smoke_dir / "fixtures").glob("fineweb-*/train.jsonl"))
    manual = tmp_path / "manual"

    def local(a: str) -> str:
        return a.replace("runs/manual", str(manual)).replace("runs/gpt2-124m-10b", str(smoke_dir))

    ran = []
    for argv in readme_commands():
        line = " ".join(argv)
        if argv[0] == "pip":  # installing needs the network: check what the lines name instead
            import tomllib

            import torch as _torch

            pins = [a.split("==")[1] for a in argv if a.startswith("torch==")]
            assert all(_torch.__version__.split("+")[0] == v for v in pins), (pins, _torch.__version__)
            if pins:  # the pinned line is the CPU build: PyPI's torch on Linux is the CUDA one
                assert argv[argv.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu", line
            project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
            assert "dev" in project["optional-dependencies"] and project["name"] == "domtok"
            extras = [e for a in argv for e in re.findall(r"^\.\[(\w+)\]$", a)]
            assert all(e in project["optional-dependencies"] for e in extras), extras
        elif argv == ["domtok", "run"]:  # the full tiny study takes minutes: its --smoke (fixture `tiny`)
            assert tiny[1].returncode == 0
        elif argv[:3] == ["domtok", "run", "--seeds"]:  # the looks of a whole study: tests/test_sequential_run.py
            assert argv[3] == "auto" and "auto" in _cli(["domtok", "run", "--help"], tmp_path).stdout
        elif argv[:2] == ["domtok", "plan"]:  # on the smoke's run dir; its models carry no seed SD: --sd
            out = _cli(["domtok", "plan", str(tiny[0] / "tiny-smoke"), *argv[3:], "--sd", "0.1"], tmp_path).stdout
            assert out.strip().splitlines()[-1].startswith("seeds per condition for 80% power")
        elif argv == ["domtok", "run", "tiny-controls"]:  # minutes too: its --smoke (fixture `controls`)
            assert controls[1].returncode == 0
        elif argv[:2] == ["domtok", "run"] and "--nnodes" in argv:  # several machines: tests/test_multinode.py
            assert "--rdzv" in argv and "--node-rank" in argv
        elif argv[:2] == ["domtok", "run"] and "--executor" in argv:  # a Ray cluster: tests/test_ray.py runs the
            assert run_parser().parse_args(argv[2:]).executor == "ray"  # tiny smoke on a local one; flags parse
        elif argv[:2] == ["domtok", "run"] and "--gpus-per-job" in argv:  # 8 GPUs: their sets, faked
            from domtok.executors import gpu_sets  # (tests/test_executors.py: each worker sees only its own)

            a = run_parser().parse_args(argv[2:])
            sets = [s.split(",") for s in gpu_sets(a.jobs, a.gpus_per_job, [str(i) for i in range(8)])]
            assert sum(len(s) for s in sets) == len({g for s in sets for g in s}) == 8  # every GPU, none twice
        elif argv[:2] == ["ray", "start"]:  # a cluster of machines: the flags are Ray's own
            assert all(a.split("=")[0] in ray_start_help() for a in argv if a.startswith("--"))
        elif argv[0] == "sbatch":  # SLURM: the script is valid bash, and its ray / domtok lines are well formed
            script = (ROOT / argv[1]).read_text()
            subprocess.run(["bash", "-n", str(ROOT / argv[1])], check=True)
            flags = re.findall(r"ray start (.*?)--block", script.replace("\\\n", " "), re.S)
            assert len(flags) == 2 and all(f.split("=")[0] in ray_start_help() for fl in flags
                                           for f in fl.split() if f.startswith("--"))
            (line,) = [ln for ln in script.splitlines() if ln.startswith("domtok run")]
            assert run_parser().parse_args(shlex.split(line)[2:]).executor == "ray"
        elif argv[:2] == ["domtok", "run"]:  # GPUs: the --smoke of the same spec (fixture `replication`)
            assert argv[2] == "gpt2-124m-10b" and rep_res.returncode == 0
        elif argv[:2] in (["domtok", "status"], ["domtok", "report"]):  # on the smoke's run dir
            _cli([local(a) for a in argv], tmp_path)
        elif argv[:3] == ["domtok", "hub", "push"]:  # network and a token: its --help
            assert "--repo-prefix" in _cli(argv[:3] + ["--help"], tmp_path).stdout
        elif argv[:2] == ["domtok", "prepare"]:  # FineWeb-Edu from the hub: the smoke's fixture of it
            argv = [local(a) for a in argv]
            at = argv.index("--out")
            _cli(argv[:at] + [f"source={fineweb}", "val_fraction=0.05"] + argv[at:], ROOT)
        elif argv[0] == "torchrun":  # 8 GPUs: one CPU process, 2 steps at toy lengths
            argv = [local(a) for a in argv]
            argv[argv.index("--nproc_per_node") + 1] = "1"
            _cli(argv[:-2] + SHRINK_PRETRAIN + argv[-2:], ROOT)
        elif argv[:2] == ["domtok", "export"]:
            _cli([local(a) for a in argv], tmp_path)
            assert (manual / "mul_tokens" / "hf" / "config.json").exists()
        elif argv[0] == "srun":  # SLURM: the torchrun line inside is what tests/test_multinode.py runs
            inner = argv[-1]
            for flag in ("--nnodes", "--node-rank", "--master-addr", "--master-port", "-m domtok pretrain"):
                assert flag in inner, flag
        elif argv[:3] == ["python3", "-m", "pytest"]:  # the suite itself: collected, not re-run inside itself
            _cli(argv + ["--collect-only"], ROOT)
        else:
            pytest.fail(f"README command with no test: {line}")
        ran.append(line)
    assert len(ran) >= 16


def test_tiny_smoke_passes_and_a_broken_stage_is_reported_with_its_log(tiny, tmp_path):
    out, res, r, _, _ = tiny
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]
    from domtok.rundir import build_nodes, load_spec

    every = build_nodes(load_spec("tiny"), out / "tiny-smoke")  # every node of every condition and seed
    assert all(n["result"] == "passed" for n in r["nodes"]) and [n["node"] for n in r["nodes"]] == [n.id for n in every]
    first = f"seed{load_spec('tiny').seeds[0]}"  # the first reported seed (3: 0-2 are tuning seeds)
    assert (out / "tiny-smoke" / "mul_tokens" / first / "grpo" / "model" / "model.safetensors").exists()
    assert not (out / "tiny").exists()  # its own run dir only
    probes = out / "tiny-smoke" / "baseline" / first / "sft" / "eval" / "probes" / "items.jsonl"
    assert len(probes.read_text().splitlines()) == 8  # max_items: a seeded subset of every category's items

    # a defect in one stage's config: that node fails with its log, the rest still runs
    res, r, _, _ = smoke(tmp_path, "tiny", "stages.2.config.loss_type=bogus")
    assert res.returncode == 1
    failed = {n["node"]: n for n in r["nodes"] if n["result"] != "passed"}
    assert set(failed) == {f"{c}/seed{s}/grpo{e}" for c in ("baseline", "mul_tokens") for s in load_spec("tiny").seeds
                           for e in ("", "/eval/probes", "/eval/gsm_synthetic")}
    log = Path(failed[f"baseline/{first}/grpo"]["log"])
    assert log.exists() and "loss_type" in log.read_text()
    assert f"FAILED ({log})" in res.stdout and "smoke: FAILED" in res.stdout


@pytest.mark.parametrize("kind,check,split", [("fineweb", sources.check_text, "train"),
                                              ("tulu", sources.check_messages, "train"),
                                              ("gsm8k", sources.check_gsm8k, "test"),
                                              ("hellaswag", sources.check_hellaswag, "validation"),
                                              ("tinygsm", sources.check_tinygsm, "train")])
def test_fixtures_pass_the_real_loaders_checks(kind, check, split):
    recs = fixture_records(kind, 12, split=split)
    assert len(recs) == 12 and all(isinstance(check(r), dict) for r in recs)
    keys = {"fineweb": {"text", "id", "url", "score", "int_score", "token_count"},
            "tulu": {"id", "messages", "source"}, "gsm8k": {"question", "answer"},
            "hellaswag": {"ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "label", "split"},
            "tinygsm": {"question", "code"}}[kind]
    assert keys <= set(recs[0])
    if kind == "hellaswag":
        assert all(isinstance(r["label"], str) and len(r["endings"]) == 4 for r in recs)  # Rowan/hellaswag's types


def test_activation_estimate_matches_what_autograd_saves():
    """The formula behind the per-GPU memory figure against the tensors autograd keeps on CPU (fp32)."""
    from domtok.model.gpt import GPT, GPTConfig

    cfg = GPTConfig(block_size=128, vocab_size=512, n_layer=3, n_head=4, n_embd=64)
    model = GPT(cfg)
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        if t.data_ptr() not in params and t.is_floating_point():
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    B, T = 4, 128
    x = torch.randint(0, 512, (B, T))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, loss = model(x, x)
    measured = sum(seen.values())
    est = activation_bytes(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size, B * T, 4)["saved"]
    assert abs(est - measured) / measured < 0.1, (est, measured)


def test_shrinking_leaves_the_real_spec_alone_and_local_sources_are_read_head_first(tmp_path):
    from domtok.pipeline import load_spec
    from domtok.smoke import Sources, smoke_spec
    from domtok.utils import read_jsonl, write_jsonl

    real = load_spec("gpt2-124m-10b")
    before = json.dumps(real.raw, sort_keys=True, default=str), json.dumps([s.config for s in real.stages], default=str)
    srcs = Sources(tmp_path / "fixtures", online=False)
    s, changes = smoke_spec(real, srcs, "cpu")
    assert (json.dumps(real.raw, sort_keys=True, default=str), json.dumps([s.config for s in real.stages], default=str)) == before
    assert s.name == "gpt2-124m-10b-smoke" and s.stages[0].config["model"] == "gpt2-124m"  # the architecture stays
    pre = s.stages[0].config
    assert pre["tokens_per_step"] == pre["micro_batch_size"] * pre["seq_len"] * 2 and pre["max_steps"] == 2
    assert all(Path(p).exists() for p in [s.prepare["source"], s.benchmarks["gsm8k"]["config"]["data"]])
    assert len(changes) == len(set(changes)) > 40
    # a local source is read head first, in its own schema (a reachable hub source the same way)
    write_jsonl(tmp_path / "corpus.jsonl", [{"text": f"doc {i}", "extra": i} for i in range(100)])
    path = srcs.get("fineweb", str(tmp_path / "corpus.jsonl"), "train", n=5)
    assert list(read_jsonl(path)) == [{"text": f"doc {i}", "extra": i} for i in range(5)]
