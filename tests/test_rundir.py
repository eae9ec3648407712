"""The house's layering: nothing imports the pipeline; reading a run directory lives in rundir."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import domtok
from domtok.errors import DomtokError

SRC = Path(domtok.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside a function (lazy imports count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_module_imports_the_pipeline():
    # Stages, evaluations, the model, data and the readers (status, report, hub) sit below the
    # pipeline; cli.py names it only as a string in its verb table.
    offenders = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                       if p.name != "pipeline.py" and "domtok.pipeline" in _imported_modules(p))
    assert offenders == []


def test_status_and_report_read_a_run_without_the_pipeline(tmp_path):
    from conftest import MICRO

    run_dir = tmp_path / "micro"
    run_dir.mkdir()
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(MICRO))
    code = ("import sys; from domtok.status import board; from domtok.report import write_report; "
            f"from pathlib import Path; board(Path({str(run_dir)!r})); write_report({str(run_dir)!r}); print('domtok.pipeline' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
    assert (run_dir / "report.md").exists()


def test_prepare_condition_makes_the_runs_prepare_node(tmp_path):
    """`domtok pretrain SPEC` prepares the same shards, in the same layout, as `domtok run` would."""
    from domtok.data.prepare import prepare_condition, prepare_hash, prepare_node_config
    from domtok.rundir import build_nodes, load_spec

    spec = {"name": "p", "seeds": [0], "token_set": "mul",
            "conditions": {"baseline": {"token_set": None}, "mul_tokens": {"token_set": "mul"}},
            "tokenizer": {"base": "bpe-300", "sample_docs": 60},
            "prepare": {"source": "synthetic:math-web", "n_docs": 80, "val_fraction": 0.1, "shard_tokens": 5000,
                        "seed": 0, "workers": 1},
            "stages": [{"name": "pretrain", "kind": "pretrain", "config": {"model": "tiny"}}]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    root = tmp_path / "data"
    out = prepare_condition(str(path), "mul_tokens", root)
    node = next(n for n in build_nodes(load_spec(str(path)), root) if n.id == "mul_tokens/prepare")
    assert out == node.out_dir
    meta = json.loads((out / "meta.json").read_text())
    cfg = prepare_node_config(node.config, str(root / "tokenizer"), where="test")
    assert meta["config_hash"] == prepare_hash(cfg) and meta["condition"] == "mul_tokens"
    assert meta["splits"]["train"]["domain_tokens"] > 0
    stamp = (out / "meta.json").stat().st_mtime_ns
    assert prepare_condition(str(path), "mul_tokens", root) == out  # finished work is reused
    assert (out / "meta.json").stat().st_mtime_ns == stamp


def test_reported_seeds_are_never_tuning_seeds_and_evaluations_score_test():
    """tiny reports seeds 3-5 (0-2 chose its knobs); `--seeds N` counts from the spec's first
    seed; a tuning seed runs only when `tuning_seeds=[]` says so, e.g. a dev-split tuning run."""
    from domtok.rundir import build_nodes, load_spec

    tiny = load_spec("tiny")
    assert tiny.seeds == [3, 4, 5] and tiny.tuning_seeds == [0, 1, 2]
    assert load_spec("tiny", seeds=1).seeds == [3] and load_spec("tiny", seeds=4).seeds == [3, 4, 5, 6]
    assert load_spec("ladder-cpu").seeds == [3, 4] and load_spec("ladder-cpu").tuning_seeds == [0, 1, 2]
    with pytest.raises(DomtokError, match=r"seeds \[0\] were used for tuning"):
        load_spec("tiny", ["seeds=[0,3]"])
    with pytest.raises(DomtokError, match="tuning_seeds"):
        load_spec("tiny", ["tuning_seeds=zero"])
    evals = [n for n in build_nodes(tiny, Path("/nonexistent/run")) if "/eval/" in n.id]
    assert evals and {n.config["split"] for n in evals if n.id.endswith(("probes", "gsm_synthetic"))} == {"test"}
    dev = load_spec("tiny", ["name=tiny-dev", "seeds=[0]", "tuning_seeds=[]", "evals.benchmarks.probes.split=dev",
                             "evals.benchmarks.gsm_synthetic.split=dev"])  # the spec comment's tuning run
    nodes = [n for n in build_nodes(dev, Path("/nonexistent/run")) if n.id.endswith(("probes", "gsm_synthetic"))]
    assert nodes and all(n.config["split"] == "dev" and "/seed0/" in n.id for n in nodes)


@pytest.mark.parametrize("where", ["config", "set"])
def test_a_stage_seed_in_a_spec_is_refused_not_silently_replaced(tmp_path, where):
    """Each node's seed is the spec's `seeds:` entry; a `seed` written into a stage would be
    replaced without a word, so the spec is refused before anything runs."""
    from conftest import MICRO
    from domtok.config import ConfigError
    from domtok.rundir import load_spec

    spec = json.loads(json.dumps(MICRO))
    spec["stages"][1].setdefault(where, {})["seed"] = 7
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"stage 'sft': `seed` comes from the spec's `seeds:` list"):
        load_spec(str(p))
    res = subprocess.run([sys.executable, "-m", "domtok.cli", "run", str(p), "--runs-dir", str(tmp_path / "runs")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and not (tmp_path / "runs").exists()
