"""The report's compute-matching verdict and confounds, on a run directory written by hand:
a verdict only when every condition and seed has its pretraining row, naming what matches."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from conftest import MICRO
from domtok.report import Run, compute_table, confounds
from domtok.rundir import load_run

PRETRAIN = {"params": 120_000, "steps": 8, "tokens_per_step": 512, "tokens_trained": 4096, "unique_tokens": 40_000,
            "epochs": 0.1, "total_flops": 2.5e9, "domain_token_share": 0.0}


def write_run(root: Path, seeds=(0, 1), pretrain=None, sft_drops=None) -> Path:
    """A run dir of the micro spec whose prepare, pretrain and sft nodes have manifests."""
    spec = copy.deepcopy(MICRO)
    spec["seeds"] = list(seeds)
    run_dir = root / "micro"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    _, nodes = load_run(run_dir)
    for n in nodes:
        if n.kind == "prepare":
            tokens = 30_000 if n.condition == "baseline" else 26_000
            summary = {"splits": {"train": {"tokens": tokens, "bytes": 100_000}}}
        elif n.kind == "pretrain":
            summary = dict(PRETRAIN, **(pretrain or {}).get((n.condition, n.seed), {}))
        elif n.kind == "sft":
            ids = (sft_drops or {}).get(n.condition, ["r3", "r7"])
            summary = {"steps": 5, "data": {"micro": {"train": {"broken_annotations": len(ids),
                                                                "broken_annotation_ids": ids},
                                                      "val": {"broken_annotations": 0, "broken_annotation_ids": []}}}}
        else:
            continue
        n.out_dir.mkdir(parents=True, exist_ok=True)
        n.manifest_path.write_text(json.dumps({"hash": n.hash, "summary": summary}))
    return run_dir


def docs(cond):  # the domain condition reads further in the same steps
    return {"documents_seen": 50 if cond == "baseline" else 58, "bytes_seen": 5000 if cond == "baseline" else 5800}


def test_verdict_names_what_matches_and_shows_documents_and_bytes(tmp_path):
    extra = {(c, s): docs(c) for c in ("baseline", "mul_tokens") for s in (0, 1)}
    lines = compute_table(Run(write_run(tmp_path, pretrain=extra)))
    rows = [line for line in lines if line.startswith("| baseline") or line.startswith("| mul_tokens")]
    assert len(rows) == 4 and any("| 58 | 5,800 |" in r for r in rows) and any("| 50 | 5,000 |" in r for r in rows)
    (verdict,) = [line for line in lines if "compute-matched" in line]
    assert verdict.startswith("- ✅") and all(w in verdict for w in ("parameters (120,000)", "steps (8)",
                                                                        "tokens per step (512)", "tokens (4,096)",
                                                                        "FLOPs (2.500e+09)"))
    assert "mul_tokens seed 1: 58 documents, 5,800 bytes" in "\n".join(lines)


def test_a_corrupt_manifest_names_the_missing_row_and_gives_no_verdict(tmp_path):
    run_dir = write_run(tmp_path)
    (run_dir / "mul_tokens" / "seed1" / "pretrain" / "manifest.json").write_text("{not json")
    text = "\n".join(compute_table(Run(run_dir)))
    assert "compute-matched" not in text and "✅" not in text and "❌" not in text
    assert "no compute-matching verdict" in text and "mul_tokens seed 1 (incomplete)" in text
    assert "baseline seed 0" not in text.split("no compute-matching verdict")[1]  # only the missing one is named
    # a row missing because the node never ran is named too
    run_dir2 = write_run(tmp_path / "b")
    (run_dir2 / "baseline" / "seed0" / "pretrain" / "manifest.json").unlink()
    assert "baseline seed 0" in "\n".join(compute_table(Run(run_dir2))).split("no compute-matching verdict")[1]


def test_a_mismatch_is_named(tmp_path):
    lines = compute_table(Run(write_run(tmp_path, pretrain={("mul_tokens", 1): {"steps": 9, "tokens_trained": 4608}})))
    (verdict,) = [line for line in lines if "compute-matched" in line]
    assert verdict.startswith("- ❌") and "steps, tokens differ" in verdict


def test_confounds_list_token_budgets_and_sft_drops(tmp_path):
    text = "\n".join(confounds(Run(write_run(tmp_path))))
    budget = next(line for line in text.splitlines() if line.startswith("- Token budgets"))
    for knob in ("stage `grpo` max_completion_length=8", "benchmark `gsm_synthetic` max_new_tokens=8",
                 "benchmark `probes` max_new_tokens=4", "stage `pretrain` seq_len=64",
                 "sft stage `micro` max_length=128"):
        assert knob in budget, knob
    assert "baseline 300.0, mul_tokens 260.0)" in budget  # tokens per 1,000 bytes, from prepare's counts
    assert "2 record(s) dropped from every condition" in text
    assert "different documents" not in text  # no val_documents recorded: nothing to compare
    differing = "\n".join(confounds(Run(write_run(tmp_path / "d", sft_drops={"baseline": []}))))
    assert "dropped different records" in differing
    val = {(c, s): {"val_documents": 469 if c == "baseline" else 582} for c in ("baseline", "mul_tokens") for s in (0, 1)}
    capped = "\n".join(confounds(Run(write_run(tmp_path / "v", pretrain=val))))
    assert "different documents (the first 469 for baseline seed 0" in capped and "582 for mul_tokens seed 1" in capped
    same = {k: {"val_documents": 600} for k in val}
    assert "different documents" not in "\n".join(confounds(Run(write_run(tmp_path / "w", pretrain=same))))
