"""Bad input through the real command line (issue 12): every case runs `python -m domtok ...` as
a subprocess and must end in exit code 2 with ONE line on stderr that names the file and the
fix, no traceback, nothing written that looks complete, and no file lost that domtok did not
write. The context cases (valid input that used to crash) must succeed and record what the
context cut. Fixtures are tiny and built once per session; cases are grouped per process
where one process can check several things.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import MICRO

BLOCK = 64  # the micro model's context


def domtok(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`python -m domtok ARGS` with this test's PYTHONPATH (the tree under test)."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "domtok", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def bad(r: subprocess.CompletedProcess, *needles: str, rc: int = 2) -> str:
    """Assert the promised answer to bad input; returns the message line."""
    err = r.stderr.strip()
    assert r.returncode == rc, (r.returncode, r.stdout[-2000:], err[-2000:])
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    return r


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def micro(tmp_path_factory):
    """A tiny BPE (no merges touch `~`, so each `~` is one token), a random GPT of context 64
    saved as a model dir, and GSM8K-schema questions whose prompts have exactly context - 1,
    context and context + 50 tokens, mixed with short ones."""
    import torch

    from domtok.chat import render_prompt
    from domtok.model.checkpoint import save_model_dir
    from domtok.model.gpt import GPT, GPTConfig
    from domtok.tokens.build import train_bpe
    from domtok.tokens.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("bad_inputs")
    train_bpe(["the cat sat on the mat, 6 times 9 is 54. " * 20] * 20, 300, root / "bpe")
    tok = load_tokenizer(str(root / "bpe"), "baseline")
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=BLOCK, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16))
    save_model_dir(model, tok, root / "model")

    def question(n_tokens: int) -> str:
        base = len(tok.encode(render_prompt("Q ")))
        q = "Q " + "~" * (n_tokens - base)
        assert len(tok.encode(render_prompt(q))) == n_tokens
        return q

    lengths = [BLOCK - 1, BLOCK, BLOCK + 50, 20, 21, 22, 23, 24, 25, 26]
    gsm = root / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": question(n), "answer": "so\n#### 1"}) + "\n" for n in lengths))
    return {"root": root, "model": root / "model", "tok": tok, "gsm": gsm, "lengths": lengths}


@pytest.fixture(scope="session")
def shards(micro):
    """A `domtok prepare` output of the micro tokenizer (in-process: one subprocess less)."""
    from domtok.data.prepare import PrepareConfig, run

    out = micro["root"] / "shards"
    run(PrepareConfig(source="synthetic:math-web", n_docs=200, tokenizer=str(micro["root"] / "bpe"),
                      shard_tokens=100000, val_fraction=0.1), out)
    return out


def spec_file(path: Path, **changes) -> Path:
    data = json.loads(json.dumps(MICRO))
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- the context (valid input)

def test_eval_gsm8k_batch_mixing_prompts_at_and_past_the_context(micro, tmp_path):
    out = tmp_path / "gsm"
    ok(domtok("eval", "gsm8k", "--model", micro["model"], "--data", micro["gsm"], "--max-new-tokens", 32,
              "--batch-size", 10, "--device", "cpu", "--out", out))
    items = {int(r["id"].split("-")[-1]): r for r in map(json.loads, (out / "items.jsonl").read_text().splitlines())}
    by_len = {n: items[i] for i, n in enumerate(micro["lengths"])}
    assert [by_len[n]["prompt_truncated"] for n in (BLOCK - 1, BLOCK, BLOCK + 50)] == [0, 1, 51]
    for n in (BLOCK - 1, BLOCK, BLOCK + 50):
        assert by_len[n]["finish_reason"] in ("context", "eos") and by_len[n]["response_tokens"] == 1
    assert all(by_len[n]["prompt_truncated"] == 0 and by_len[n]["response_tokens"] <= 32 for n in micro["lengths"][3:])
    m = json.loads((out / "summary.json").read_text())["metrics"]
    assert m["prompts_truncated"] == 2
    assert m["context_rate"] == pytest.approx(sum(r["finish_reason"] == "context" for r in items.values()) / 10)


def test_probes_and_sample_stop_at_the_context(micro, tmp_path):
    out = tmp_path / "probes"
    ok(domtok("eval", "probes", "--model", micro["model"], "--n", 3, "--categories", "mul_table,addition",
              "--max-new-tokens", 64, "--batch-size", 6, "--device", "cpu", "--out", out))
    rows = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    ctx = [r for r in rows if r["finish_reason"] == "context"]
    assert all(r["prompt_truncated"] == 0 for r in rows)
    assert json.loads((out / "summary.json").read_text())["metrics"]["context_rate"] == len(ctx) / len(rows)
    r = ok(domtok("sample", "--model", micro["model"], "--question", "Q " + "~" * 120, "--num-samples", 2,
                  "--max-new-tokens", 4, "--device", "cpu"))
    assert "cut from the left" in r.stderr and "stopped at the model's context" in r.stderr


def test_grpo_and_rft_sample_past_the_context(micro, tmp_path):
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(yaml.safe_dump({"grpo": {
        "model": str(micro["model"]), "prompts": {"kind": "gsm8k", "path": str(micro["gsm"])}, "num_prompts": 10,
        "num_generations": 2, "max_completion_length": 8, "per_device_train_batch_size": 20,
        "decode_batch_size": 20, "max_steps": 1, "device": "cpu", "temperature": 1.0}}))
    ok(domtok("grpo", cfg, "--out", tmp_path / "grpo"))
    row = json.loads((tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["prompts_truncated"] == 4 and row["context_rate"] > 0  # 2 prompts x 2 generations
    rft = tmp_path / "rft.yaml"
    rft.write_text(yaml.safe_dump({"rft": {
        "model": str(micro["model"]), "questions": {"kind": "gsm8k", "path": str(micro["gsm"])},
        "num_samples": 2, "max_new_tokens": 8, "decode_batch_size": 20, "device": "cpu",
        "require_eos": False}}))
    r = domtok("rft", rft, "--out", tmp_path / "rft")
    assert "IndexError" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


# --------------------------------------------------------------------------- the spec, before anything runs

@pytest.mark.parametrize("override,needle", [
    ("bogus_key=1", "unknown key(s) ['bogus_key']"),
    ("stages.0.config.lrr=1", "unknown key(s) ['lrr']"),
    ("stages.1.config.stages.0.lrr=1", "unknown key(s) ['lrr']"),
    ("stages.0.bogus=1", "unknown key(s) ['bogus']"),
    ("evals.benchmarks.probes.bogus=1", "unknown key(s) ['bogus']"),
    ("evals.bogus=1", "unknown key(s) ['bogus']"),
    ("tokenizer.bogus=1", "unknown key(s) ['bogus']"),
    ("prepare.bogus=1", "unknown key(s) ['bogus']"),
    ("seeds=abc", "seeds=[0,1,2]"),
    ("seeds=5", "seeds=[0,1,2]"),
    ("seeds=[]", "empty list"),
    ("seeds=[0,0]", "distinct"),
    ("stages=[]", "empty list"),
    ("conditions={}", "empty"),
    ("stages.0.config.max_steps=abc", "expected an integer"),
    ("tokenizer.base=bpe-abc", "bpe-N"),
])
def test_spec_is_validated_whole_before_the_first_node(tmp_path, override, needle):
    spec = spec_file(tmp_path / "micro.yaml")
    msg = bad(domtok("run", spec, override, "--runs-dir", tmp_path / "runs"), needle)
    assert "micro.yaml" in msg
    assert not (tmp_path / "runs" / "micro").exists()  # nothing ran, nothing written


def test_options_before_and_after_overrides(tmp_path):
    for args in (["tiny", "--out", tmp_path / "o", "bogus=1"], ["tiny", "bogus=1", "--out", tmp_path / "o"]):
        bad(domtok("pretrain", *args), "unknown key(s) ['bogus']")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- paths that are not what they should be

def test_paths_that_are_files_directories_or_not_utf8(tmp_path, micro):
    f = tmp_path / "afile"
    f.write_text("mine\n")
    bad(domtok("run", "--runs-dir", f), str(f), "is a file")
    bad(domtok("pretrain", "tiny", "--out", f), str(f), "is a file")
    bad(domtok("pretrain", "tiny", "--out", f / "sub"), str(f), "is a file")
    bad(domtok("eval", "probes", "--model", micro["model"], "--out", f), str(f), "is a file")
    bad(domtok("run", tmp_path), str(tmp_path), "is a directory")  # a config path that is a dir
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    bad(domtok("run", latin), "latin1.yaml", "UTF-8")
    assert f.read_text() == "mine\n"


def test_out_dirs_never_lose_what_domtok_did_not_write(tmp_path, micro):
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "thesis.tex").write_text("\\section{mine}\n")
    for args in (["export", micro["model"], user], ["import", micro["model"], user],
                 ["tokenizer", "build", "--base", "bpe-300", "--corpus", micro["gsm"], "--out", user],
                 ["eval", "probes", "--model", micro["model"], "--out", user],
                 ["pretrain", "tiny", "--out", user]):
        bad(domtok(*args), str(user), "not written by domtok")
    assert sorted(p.name for p in user.iterdir()) == ["thesis.tex"]

    hf = tmp_path / "hf"
    ok(domtok("export", micro["model"], hf))
    mode = {p.name: p.stat().st_mode & 0o777 for p in hf.iterdir() if p.is_file()}
    assert mode["model.safetensors"] == mode["config.json"], mode
    assert "max_length" not in json.loads((hf / "generation_config.json").read_text())
    bad(domtok("export", micro["model"], hf), str(hf), "--force")  # a domtok output: only with --force
    ok(domtok("export", micro["model"], hf, "--force"))
    bad(domtok("export", micro["model"], micro["model"].parent), "would delete the input")
    bad(domtok("import", hf, hf), "would delete the input")
    assert (micro["model"] / "model.safetensors").exists()

    ckpt = tmp_path / "run" / "checkpoints" / "step_000001"
    ckpt.parent.mkdir(parents=True)
    import shutil
    shutil.copytree(micro["model"], ckpt)
    (ckpt / "trainer_state.json").write_text("{}")  # but no COMPLETE: a save cut short
    bad(domtok("export", ckpt, tmp_path / "hf2"), "COMPLETE")
    assert not (tmp_path / "hf2").exists()


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path, micro):
    out = tmp_path / "hf"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from domtok.outdir import lock_dir; "
                               f"lock_dir({str(out)!r}); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        bad(domtok("export", micro["model"], out), str(out), f"in use by process {holder.pid}")
        bad(domtok("run", spec_file(tmp_path / "m.yaml", name="hf"), "--runs-dir", tmp_path),
            f"in use by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()
    lock = tmp_path / ".hf.lock"
    lock.write_text(json.dumps({"pid": 999999999, "command": "domtok export (killed)"}))  # stale: no live holder
    ok(domtok("export", micro["model"], out))
    assert (out / "model.safetensors").exists() and not lock.exists()


def test_only_with_a_changed_config_needs_force(tmp_path):
    """Finished nodes (manifests as `domtok run` writes them) and a changed pretrain config."""
    from domtok.pipeline import build_nodes, load_spec

    spec_path = spec_file(tmp_path / "micro.yaml")
    spec = load_spec(str(spec_path))
    run_dir = tmp_path / "runs" / "micro"
    for n in build_nodes(spec, run_dir):
        n.out_dir.mkdir(parents=True, exist_ok=True)
        (n.out_dir / "manifest.json").write_text(json.dumps({"hash": n.hash, "summary": {}}))
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(MICRO))
    before = {p: p.read_text() for p in run_dir.rglob("manifest.json")}
    msg = bad(domtok("run", spec_path, "stages.0.config.max_steps=9", "--only", "pretrain",
                     "--runs-dir", tmp_path / "runs"), "--force", "baseline/seed0/pretrain", "stale")
    assert "sft" in msg
    assert {p: p.read_text() for p in run_dir.rglob("manifest.json")} == before
    assert yaml.safe_load((run_dir / "spec.yaml").read_text()) == MICRO  # the refused spec is not saved


# --------------------------------------------------------------------------- tracebacks that are messages

def test_devices_probes_n_and_hub(tmp_path, micro):
    import torch

    if not torch.cuda.is_available():
        bad(domtok("eval", "probes", "--model", micro["model"], "--device", "cuda", "--out", tmp_path / "p"),
            "--device cuda", "--device cpu")
    bad(domtok("eval", "probes", "--model", micro["model"], "--device", "tpu", "--out", tmp_path / "p"),
        "--device 'tpu'", "auto, cpu")
    bad(domtok("eval", "probes", "--model", micro["model"], "--n", 0, "--device", "cpu", "--out", tmp_path / "p"),
        "n_per_category=0", ">= 1")
    assert not (tmp_path / "p" / "summary.json").exists()

    # hub: the run dir is checked before the token, and a dead network is one line
    bad(domtok("hub", "push", tmp_path / "nonexistent", "--repo-prefix", "u/x", env={"HF_TOKEN": ""}),
        "nonexistent", "not a domtok run directory")
    run_dir = tmp_path / "hubrun"
    run_dir.mkdir()
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(MICRO))
    bad(domtok("hub", "push", run_dir, "--repo-prefix", "u/x",
               env={"HF_TOKEN": "hf_fake", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2",
                    "HF_HUB_DOWNLOAD_TIMEOUT": "2"}), "u/x-results", "network")


def test_shards_with_ids_past_the_vocabulary(tmp_path, shards):
    bad_dir = tmp_path / "shards"
    import shutil
    shutil.copytree(shards, bad_dir)
    meta = json.loads((bad_dir / "meta.json").read_text())
    first = sorted(bad_dir.glob("train_*.npy"))[0]
    arr = np.load(first)
    arr[5] = meta["vocab_size"] + 3
    np.save(first, arr)
    out = tmp_path / "pt"
    bad(domtok("pretrain", "pretrain-tiny", f"data_dir={bad_dir}", "max_steps=1", "--out", out),
        first.name, "vocab_size", "domtok prepare")
    assert not (out / "config.yaml").exists() and not any(out.glob("*")) if out.exists() else True


# --------------------------------------------------------------------------- silent results

def test_invalid_utf8_is_counted_as_malformed(tmp_path, micro):
    good = [json.dumps({"question": f"q{i}", "answer": "#### 1"}).encode() for i in range(3)]
    data = tmp_path / "gsm_latin.jsonl"
    data.write_bytes(b"\n".join(good + [b'{"question": "caf\xe9", "answer": "#### 1"}']) + b"\n")
    msg = bad(domtok("eval", "gsm8k", "--model", micro["model"], "--data", data, "--device", "cpu",
                     "--out", tmp_path / "g"), str(data), "invalid UTF-8", "--set max_bad_fraction=")
    assert "1 of 4" in msg
    # the suggested fix works
    ok(domtok("eval", "gsm8k", "--model", micro["model"], "--data", data, "--device", "cpu", "--max-new-tokens", 2,
              "--set", "max_bad_fraction=0.5", "--out", tmp_path / "g"))
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["n"] == 3

    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"the cat sat\n" * 3 + b"caf\xe9 au lait\n")
    bad(domtok("tokenizer", "build", "--base", "bpe-300", "--corpus", corpus, "--out", tmp_path / "tok"),
        str(corpus), "1 of 4", "invalid UTF-8")
    assert not (tmp_path / "tok").exists()


def test_bpe_smaller_than_asked_is_named_by_its_size(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("abc abd abe\n" * 50)
    r = ok(domtok("tokenizer", "build", "--base", "bpe-100000", "--corpus", corpus, "--out", tmp_path / "tok"))
    assert "warning" in r.stderr and "not the 100000 asked" in r.stderr
    meta = json.loads((tmp_path / "tok" / "domtok_tokenizer.json").read_text())
    rec = json.loads((tmp_path / "tok" / "bpe_train.json").read_text())
    assert meta["base"] == rec["name"] == f"bpe-{rec['n_base']}" and rec["n_base"] < 1000
    assert rec["asked_n_base"] == 100000


def test_tokenizer_fix_condition_change_needs_force_and_rewrites_every_file(tmp_path, micro):
    hf = tmp_path / "hf"
    ok(domtok("export", micro["model"], hf))
    before = {p: p.read_bytes() for p in hf.rglob("*") if p.is_file()}
    bad(domtok("tokenizer", "fix", hf, "--condition", "mul_tokens"), str(hf), "--force", "baseline")
    assert {p: p.read_bytes() for p in hf.rglob("*") if p.is_file()} == before
    ok(domtok("tokenizer", "fix", hf, "--condition", "mul_tokens", "--force"))
    assert json.loads((hf / "domtok_tokenizer.json").read_text())["condition"] == "mul_tokens"
    assert json.loads((hf / "config.json").read_text())["condition"] == "mul_tokens"
    assert "| condition | mul_tokens" in (hf / "README.md").read_text()  # the model card follows


# --------------------------------------------------------------------------- messages that mislead

def test_compare_says_the_delta_is_b_minus_a(tmp_path):
    for name, correct in (("a", [0, 0, 0, 1]), ("b", [1, 1, 1, 1])):
        d = tmp_path / name
        d.mkdir()
        (d / "items.jsonl").write_text("".join(json.dumps({"id": str(i), "correct": bool(c)}) + "\n"
                                               for i, c in enumerate(correct)))
    r = ok(domtok("eval", "compare", tmp_path / "a", tmp_path / "b", "--n-boot", 200))
    assert "B − A" in r.stdout and "+0.7500" in r.stdout, r.stdout


def test_tokenize_inject(tmp_path, micro):
    tok_dir = micro["root"] / "bpe"
    plain = json.loads(ok(domtok("tokenize", "--tokenizer", tok_dir, "--condition", "mul_tokens", "6 × 9 = 54")).stdout)
    injected = json.loads(ok(domtok("tokenize", "--tokenizer", tok_dir, "--condition", "mul_tokens", "--inject",
                                    "6 × 9 = 54")).stdout)
    assert len(injected) == 1 and injected != plain
    bad(domtok("tokenize", "--tokenizer", tok_dir, "--condition", "baseline", "--inject", "6 × 9 = 54"),
        "--inject", "mul_tokens")


# --------------------------------------------------------------------------- more bad inputs (found trying thirty more)

@pytest.mark.parametrize("args,needles", [
    (["run", "name=../escape"], ["spec name '../escape'", "letters, digits"]),
    (["run", "--nproc", "0"], ["--nproc 0", "at least 1"]),
    (["run", "--only", "nosuch"], ["no stage 'nosuch'"]),
    (["pretrain", "pretrain-tiny", "max_steps=-5", "data_dir={T}/x", "--out", "{T}/p"], ["max_steps=-5", ">= 1"]),
    (["prepare", "tiny", "bogus=1", "--out", "{T}/prep"], ["unknown key(s) ['bogus']"]),
    (["tokenizer", "build", "--base", "bpe-100", "--corpus", "{T}/empty.txt", "--out", "{T}/tok"], ["bpe-258"]),
    (["tokenizer", "build", "--base", "bpe-300", "--corpus", "{T}/empty.txt", "--out", "{T}/tok"], ["empty.txt"]),
    (["hub", "list", "{T}/nonexistent"], ["not a domtok run directory"]),
    (["eval", "gsm8k", "--model", "{M}", "--data", "{T}/empty.jsonl", "--out", "{T}/e"], ["empty.jsonl", "no GSM8K"]),
    (["eval", "gsm8k", "--model", "{M}", "--data", "{G}", "--n", "-3", "--out", "{T}/e"], ["n=-3 is out of range"]),
    (["eval", "gsm8k", "--model", "{M}", "--data", "{G}", "--max-new-tokens", "0", "--out", "{T}/e"], ["max_new_tokens"]),
])
def test_more_bad_inputs(tmp_path, micro, args, needles):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "empty.jsonl").write_text("")
    fill = {"{T}": str(tmp_path), "{M}": str(micro["model"]), "{G}": str(micro["gsm"])}
    args = [a.replace(k, v) for a in args for k, v in [next(((k, v) for k, v in fill.items() if k in a), ("", ""))]]
    bad(domtok(*args, "--runs-dir", tmp_path / "runs") if args[0] == "run" else domtok(*args), *needles)
    for name in ("runs", "p", "prep", "tok", "e"):  # nothing that looks complete
        p = tmp_path / name
        assert not p.exists() or not any(p.rglob("manifest.json")) and not any(p.rglob("config.yaml")), name


def test_every_shipped_spec_passes_the_whole_spec_validation():
    """The validation rejects unknown keys: it must know every key the shipped presets use."""
    from domtok.config import PRESET_DIR, is_experiment_spec, load_yaml
    from domtok.rundir import load_spec
    from domtok.wiring import check_stage_configs

    specs = [p for p in sorted(PRESET_DIR.glob("*.yaml")) if is_experiment_spec(load_yaml(p)) or "extends" in load_yaml(p)]
    assert len(specs) >= 3
    for p in specs:
        check_stage_configs(load_spec(str(p)), where=str(p))
