"""What users of lm-evaluation-harness and the reference study bring to `domtok eval` / `sample`:
`--limit` (the first N items) beside domtok's seeded `--n`, a printed results table, versions
and commit in every results JSON, `--condition` for GPT-2 dirs whose files do not say, and a
Hub model id for `--model` (huggingface_hub's own snapshot_download, offline, from a cache
laid out as the Hub's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import domtok
from domtok.cli import main

transformers = pytest.importorskip("transformers")
SRC = str(Path(domtok.__file__).resolve().parents[1])
QUESTIONS = [(f"Tom has {a} apples and buys {b} more. How many?", f"{a} + {b} = {a + b}\n#### {a + b}")
             for a, b in [(3, 4), (5, 6), (7, 1), (2, 9), (8, 8), (4, 4), (6, 3)]]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny gpt2-vocab mul_tokens model dir, a GSM8K-schema jsonl, a HellaSwag-schema jsonl."""
    from domtok.model.checkpoint import save_model_dir
    from domtok.model.gpt import GPT, GPTConfig
    from domtok.tokens.tokenizer import load_tokenizer
    from domtok.utils import shared_data_dir

    d = tmp_path_factory.mktemp("conv")
    gpt2 = shared_data_dir() / "gpt2" if shared_data_dir() else None
    if gpt2 is None or not (gpt2 / "vocab.bpe").exists():
        pytest.skip("needs ../shared/data/gpt2 (GPT-2's BPE files)")
    tok = load_tokenizer("gpt2", "mul_tokens", gpt2_dir=gpt2)
    torch.manual_seed(0)
    save_model_dir(GPT(GPTConfig(block_size=128, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16)),
                   tok, d / "model", extra={"stage": "sft", "seed": 0})
    gsm = d / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    hs = d / "hs.jsonl"
    hs.write_text("".join(json.dumps({"ind": i, "ctx": f"Item {i}: a man", "label": i % 4, "activity_label": "x",
                                      "endings": ["runs.", "sits.", "eats.", "sleeps."]}) + "\n" for i in range(9)))
    return {"dir": d, "model": d / "model", "gsm": gsm, "hs": hs, "gpt2": gpt2}


def run_eval(capsys, *argv):
    rc = main(["eval", *map(str, argv), "--device", "cpu"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_limit_is_the_first_items_n_a_seeded_subset(files, tmp_path, capsys):
    rc, out, _ = run_eval(capsys, "gsm8k", "--model", files["model"], "--data", files["gsm"], "--limit", 3,
                          "--max-new-tokens", 2, "--out", tmp_path / "lim")
    assert rc == 0
    ids = [json.loads(x)["id"] for x in (tmp_path / "lim" / "items.jsonl").read_text().splitlines()]
    assert ids == ["test-0", "test-1", "test-2"]
    # the results table comes first, then one JSON line with the same numbers
    lines = out.strip().splitlines()
    assert lines[0].startswith("gsm8k: 3 items") and lines[1].split()[:3] == ["metric", "value", "95%"]
    printed = json.loads(lines[-1])
    acc_row = next(x for x in lines if x.startswith("accuracy_strict "))
    assert acc_row.split()[1] == f"{printed['metrics']['accuracy_strict']:.4f}"

    from domtok.data.sources import sample_records

    rc, _, _ = run_eval(capsys, "gsm8k", "--model", files["model"], "--data", files["gsm"], "--n", 3, "--seed", 1,
                        "--max-new-tokens", 2, "--out", tmp_path / "n")
    drawn = [json.loads(x)["id"] for x in (tmp_path / "n" / "items.jsonl").read_text().splitlines()]
    want = [f"test-{r['i']}" for r in sample_records([{"i": i} for i in range(len(QUESTIONS))], 3, 1)]
    assert rc == 0 and drawn == want != ids

    rc, _, err = run_eval(capsys, "gsm8k", "--model", files["model"], "--data", files["gsm"], "--n", 3,
                          "--limit", 2, "--out", tmp_path / "both")
    assert rc == 2 and "both n" in err and not (tmp_path / "both" / "summary.json").exists()


def test_limit_hellaswag_and_probes(files, tmp_path, capsys):
    rc, _, _ = run_eval(capsys, "hellaswag", "--model", files["model"], "--data", files["hs"], "--limit", 4,
                        "--out", tmp_path / "hs")
    assert rc == 0
    s = json.loads((tmp_path / "hs" / "summary.json").read_text())
    assert s["n"] == 4
    rc, _, _ = run_eval(capsys, "probes", "--model", files["model"], "--categories", "mul_table,addition",
                        "--limit", 2, "--max-new-tokens", 1, "--out", tmp_path / "pr")
    from domtok.eval.probes import make_probes

    items = [json.loads(x) for x in (tmp_path / "pr" / "items.jsonl").read_text().splitlines()]
    every = make_probes(["mul_table", "addition"], 100, 42)
    want = [it["id"] for c in ("mul_table", "addition") for it in [x for x in every if x["category"] == c][:2]]
    assert rc == 0 and sorted(it["id"] for it in items) == sorted(want)


def test_results_json_records_versions_and_commit(files, tmp_path, capsys):
    rc, _, _ = run_eval(capsys, "gsm8k", "--model", files["model"], "--data", files["gsm"], "--limit", 1,
                        "--max-new-tokens", 1, "--out", tmp_path / "v")
    v = json.loads((tmp_path / "v" / "summary.json").read_text())["versions"]
    from importlib.metadata import version

    assert rc == 0 and v["domtok"] == domtok.__version__
    assert v["torch"] == version("torch") and v["transformers"] == version("transformers")
    head = subprocess.run(["git", "-C", SRC, "rev-parse", "HEAD"], capture_output=True, text=True)
    assert v["git_commit"] == (head.stdout.strip() if head.returncode == 0 else None)


def reference_dir(path: Path, gpt2: Path) -> Path:
    """A reference-study model as published: transformers' GPT-2 with vocab 50,349 and the HF
    tokenizer files only (no domtok files, nothing naming the condition)."""
    from domtok.tokens.tokenizer import load_tokenizer

    torch.manual_seed(1)
    cfg = transformers.GPT2Config(vocab_size=50349, n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                  bos_token_id=50256, eos_token_id=50256)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    load_tokenizer("gpt2", "mul_tokens", gpt2_dir=gpt2).export_hf(path)
    return path


def test_condition_flag_and_tokenizer_fix_for_reference_dirs(files, tmp_path, capsys):
    ref = reference_dir(tmp_path / "ref", files["gpt2"])
    args = ["probes", "--model", ref, "--categories", "mul_table", "--limit", 1, "--max-new-tokens", 1]
    rc, _, err = run_eval(capsys, *args, "--out", tmp_path / "p0")
    assert rc == 2 and "--condition" in err and "tokenizer fix" in err
    rc, _, _ = run_eval(capsys, *args, "--condition", "mul_tokens", "--out", tmp_path / "p1")
    assert rc == 0
    q = ["sample", "--model", str(ref), "--question", "What is 7 times 8?", "--greedy", "--max-new-tokens", "3",
         "--device", "cpu"]
    assert main(q + ["--condition", "mul_tokens"]) == 0
    with_flag = capsys.readouterr().out
    # the step the error names works too: after it, no flag is needed, and a wrong one is refused
    assert main(["tokenizer", "fix", str(ref), "--condition", "mul_tokens"]) == 0
    capsys.readouterr()
    assert main(q) == 0 and capsys.readouterr().out == with_flag
    rc, _, _ = run_eval(capsys, *args, "--out", tmp_path / "p2")
    assert rc == 0
    assert main(q + ["--condition", "baseline"]) == 2
    assert "not 'baseline'" in capsys.readouterr().err


def hub_cache(cache: Path, repo: str, src: Path, commit: str = "a" * 40) -> None:
    """`src`'s files laid out as huggingface_hub caches a downloaded model repo."""
    import shutil

    root = cache / ("models--" + repo.replace("/", "--"))
    shutil.copytree(src, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)


def test_model_may_be_a_hub_id(files, tmp_path):
    cache = tmp_path / "hf_cache"
    hub_cache(cache, "alice/domtok-sft", files["model"])
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
           "DOMTOK_GPT2_DIR": str(files["gpt2"])}

    def sample(model):
        return subprocess.run([sys.executable, "-m", "domtok", "sample", "--model", model, "--question", "What is 2+2?",
                               "--greedy", "--max-new-tokens", "4", "--device", "cpu"],
                              capture_output=True, text=True, env=env, cwd=tmp_path)

    hub, local = sample("alice/domtok-sft"), sample(str(files["model"]))
    assert hub.returncode == 0, hub.stderr
    assert hub.stdout == local.stdout
    missing = sample("alice/not-there")
    assert missing.returncode == 2 and "alice/not-there: no such local directory" in missing.stderr
    assert "Traceback" not in missing.stderr
