"""The experiment pipeline end to end on a micro study: kill after pretraining, resume, report.

The micro study (fixture `micro_run` in conftest.py) is run once per session and shared
with test_hub.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import MICRO, _manifest_times
from domtok.pipeline import RunOptions, build_nodes, load_spec, node_state, run_experiment

def test_resume_after_kill_repeats_no_finished_stage(micro_run):
    assert micro_run["before"], "no finished prepare/pretrain manifests before the kill"
    assert micro_run["before"] == micro_run["after"], "a stage finished before the kill was run again"
    # Everything except the deliberately broken benchmark finished.
    spec, run_dir = micro_run["spec"], micro_run["run_dir"]
    states = {n.id: node_state(n) for n in build_nodes(spec, run_dir)}
    broken = {k for k in states if k.endswith("/eval/hellaswag")}
    assert all(states[k] == "failed" for k in broken) and len(broken) == 4
    assert all(v == "done" for k, v in states.items() if k not in broken), states
    assert micro_run["rc"] == 1  # failures are reported in the exit code


def test_failed_node_names_its_log(micro_run):
    run_dir = micro_run["run_dir"]
    failed = json.loads((run_dir / "baseline/seed0/pretrain/eval/hellaswag/failed.json").read_text())
    assert "nonexistent" in failed["error"] and Path(failed["log"]).exists()


def test_rerun_is_a_no_op_and_changes_rerun_only_downstream(micro_run, capsys):
    spec = micro_run["spec"]
    stamps = _manifest_times(micro_run["run_dir"], "**/manifest.json")
    rc = run_experiment(spec, RunOptions(only="sft"))
    out = capsys.readouterr().out
    assert rc == 0 and out.count("done already") == 2  # sft of both conditions, nothing re-run
    assert _manifest_times(micro_run["run_dir"], "**/manifest.json") == stamps
    # A changed SFT config changes the hashes of SFT and everything after it, nothing before.
    changed = load_spec(str(micro_run["spec_path"]), ["stages.1.config.stages.0.epochs=2"])
    changed.runs_dir = spec.runs_dir
    old = {n.id: n.hash for n in build_nodes(spec, micro_run["run_dir"])}
    new = {n.id: n.hash for n in build_nodes(changed, micro_run["run_dir"])}
    differ = {k for k in old if old[k] != new[k]}
    assert differ and all(("/sft" in k or "/grpo" in k) for k in differ)
    assert any("/grpo/eval/" in k for k in differ)


def test_report_has_every_table_and_plots(micro_run):
    run_dir = micro_run["run_dir"]
    report = (run_dir / "report.md").read_text()
    for heading in ("## Losses", "## Evaluation matrix", "## Generation (GSM-style benchmarks)",
                    "## Paired comparison: domain vs baseline", "## Compute matching", "## Confounds", "## Plots"):
        assert heading in report, heading
    for row in ("| pretrain | baseline |", "| pretrain | mul_tokens |", "| sft | mul_tokens |", "| grpo | baseline |"):
        assert row in report, row
    assert "### probes (probes)" in report and "### gsm_synthetic (gsm8k)" in report
    assert "conditions are compute-matched" in report and "NOT compute-matched" not in report
    assert report.index("## Headline") < report.index("## Losses") and "**Question.**" in report
    assert "the smallest effect this design detects with 80% power" in report  # the plain sentence per metric
    assert "shaped reward" in report  # the GRPO confound is stated
    assert "not finished:" in report and "hellaswag" in report  # the broken benchmark is listed
    for png in ("loss_pretrain.png", "accuracy_probes.png", "accuracy_gsm_synthetic.png"):
        assert (run_dir / "plots" / png).stat().st_size > 1000
        assert f"plots/{png}" in report


def test_status_board(micro_run):
    from domtok.status import board

    text = board(micro_run["run_dir"])
    lines = {ln.split("|")[1].strip(): ln for ln in text.splitlines() if ln.startswith("| ") and "stage" not in ln}
    assert "✅" in lines["pretrain"] and "val_bpb=" in lines["pretrain"]
    assert "❌ failed" in lines["grpo · eval hellaswag"]
    assert lines["tokenizer"].count("✅") == 2  # shared node shown in both columns


def test_spec_errors_are_readable(tmp_path):
    from domtok.errors import DomtokError

    bad = dict(MICRO, stages=[{"name": "sft", "kind": "sft"}])
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(bad))
    with pytest.raises(DomtokError, match="needs a stage before it"):
        load_spec(str(p))
    with pytest.raises(DomtokError, match="neither a file nor a preset"):
        load_spec("no-such-preset")
    for tokenizer, message in [({"base": "bpe-300", "split_digits": "yes"}, "must be true or false"),
                               ({"base": "gpt2", "split_digits": True}, "applies to a BPE domtok trains")]:
        p.write_text(yaml.safe_dump(dict(MICRO, tokenizer=tokenizer)))
        with pytest.raises(DomtokError, match=message):
            load_spec(str(p))


def test_nproc2_matches_single_process(tmp_path):
    """`domtok run --nproc 2` (every training and eval stage under torchrun, gloo) reaches the
    numbers of the single-process run."""
    import copy

    spec_data = copy.deepcopy(MICRO)
    spec_data["stages"][0]["config"]["tokens_per_step"] = 1024  # divisible by 2 processes x 8 x 64
    spec_data["stages"][1]["config"]["stages"][0].update(batch_size=4, grad_accum=2)
    spec_data["stages"][2]["config"].update(per_device_train_batch_size=4, gradient_accumulation_steps=2)
    spec_data["evals"] = {"after": ["grpo"], "benchmarks": {"probes": MICRO["evals"]["benchmarks"]["probes"]}}
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(spec_data))
    summaries = {}
    for nproc in (1, 2):
        spec = load_spec(str(path))
        spec.runs_dir = str(tmp_path / f"runs{nproc}")
        assert run_experiment(spec, RunOptions(nproc=nproc, quiet=True)) == 0
        run_dir = Path(spec.runs_dir) / "micro"
        summaries[nproc] = {n.id: json.loads(n.manifest_path.read_text())["summary"]
                            for n in build_nodes(spec, run_dir)}
    for node, one in summaries[1].items():
        two = summaries[2][node]
        for key in ("final_train_loss", "final_val_loss", "reward_mean_last_quarter"):
            if isinstance(one.get(key), float):
                assert two[key] == pytest.approx(one[key], abs=1e-5), (node, key)
        if "/eval/" in node:
            assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-9), node


def test_saved_spec_records_the_seeds_that_ran(tmp_path):
    """`domtok run --seeds 1` saves seeds [0] in the run's spec.yaml, so status and report count its nodes."""
    from domtok.pipeline import _dump_spec
    from domtok.rundir import load_run

    p = tmp_path / "micro.yaml"
    p.write_text(yaml.safe_dump(dict(MICRO, seeds=[0, 1, 2])))
    spec = load_spec(str(p), seeds=1)
    run_dir = tmp_path / "runs" / "micro"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text(_dump_spec(spec))
    saved, nodes = load_run(run_dir)
    assert saved.seeds == [0] and yaml.safe_load((run_dir / "spec.yaml").read_text())["seeds"] == [0]
    assert len(nodes) == len(build_nodes(spec, run_dir)) and all(n.seed in (None, 0) for n in nodes)


def test_every_loop_of_the_run_wrote_progress_lines(micro_run):
    """Pretraining, SFT, GRPO and the generating evaluations each end their log with a progress
    line at 100%, the line `domtok status` reads."""
    from domtok.progress import last_progress

    spec, run_dir = micro_run["spec"], micro_run["run_dir"]
    seen = set()
    for n in build_nodes(spec, run_dir):
        if n.kind in ("pretrain", "sft", "grpo", "probes", "gsm8k") and node_state(n) == "done":
            p = last_progress(n.out_dir / "log.txt")
            assert p is not None and p["n"] == p["total"] > 0 and p["desc"] == n.kind, (n.id, p)
            seen.add(n.kind)
    assert seen == {"pretrain", "sft", "grpo", "probes", "gsm8k"}


def test_replication_preset_is_the_studys_whole_layout(tmp_path):
    """gpt2-124m-10b: Tulu SFT -> GSM8K SFT -> GSM-SBS (2 epochs) -> three GRPO branches from the
    same start (the study's binary and shaped runs, and shaped_fair), RFT an optional branch,
    evaluations after every stage; figures from ../shared/reference (INVENTORY.md, the log)."""
    spec = load_spec("gpt2-124m-10b")
    assert [(s.name, s.kind, s.after) for s in spec.stages] == [
        ("pretrain", "pretrain", None), ("sft_instruct", "sft", "pretrain"), ("sft_gsm8k", "sft", "sft_instruct"),
        ("sft_sbs", "sft", "sft_gsm8k"), ("grpo_binary", "grpo", "sft_sbs"), ("grpo_shaped", "grpo", "sft_sbs"),
        ("grpo_shaped_fair", "grpo", "sft_sbs")]
    assert spec.evals_after == [s.name for s in spec.stages]
    sbs = spec.stage("sft_sbs").config["stages"][0]
    assert sbs["epochs"] == 2 and sbs["data"][0]["kind"] == "gsm_sbs" and sbs["learning_rate"] == 1e-5
    want = {"grpo_binary": ("binary", 0.1, 8, 4, 1e-6), "grpo_shaped": ("shaped", 0.5, 4, 8, 5e-7),
            "grpo_shaped_fair": ("shaped_fair", 0.5, 4, 8, 5e-7)}
    for name, (reward, beta, gens, prompts_per_step, lr) in want.items():
        c = spec.stage(name).config
        assert (c["reward"]["kind"], c["beta"], c["num_generations"], c["learning_rate"]) == (reward, beta, gens, lr)
        assert c["per_device_train_batch_size"] * c["gradient_accumulation_steps"] // gens == prompts_per_step
        assert (c["num_prompts"], c["prompts"]["kind"], c["temperature"], c["max_completion_length"],
                c["num_train_epochs"], c["log_completions"]) == (1000, "gsm8k", 0.7, 256, 1, True)
    # the two shaped branches differ only in the reward's kind
    a, b = spec.stage("grpo_shaped").config, spec.stage("grpo_shaped_fair").config
    assert {k for k in a if a[k] != b[k]} == {"reward"} and {k for k in a["reward"] if a["reward"][k] != b["reward"][k]} == {"kind"}
    nodes = build_nodes(spec, tmp_path)
    sbs_model = {n.id: n for n in nodes}["mul_tokens/seed0/sft_sbs"]
    for name in want:  # every branch starts from the same warm-start model
        assert {n.id: n for n in nodes}[f"mul_tokens/seed0/{name}"].deps[0] is sbs_model
    with_rft = load_spec("gpt2-124m-10b", ["stages.7.enabled=true"])
    assert with_rft.stage("rft").after == "sft_sbs" and with_rft.evals_after[-1] == "rft"
    # rft and its 3 evaluations, per condition
    assert len(build_nodes(with_rft, tmp_path)) - len(nodes) == 2 * (1 + len(spec.benchmarks))


def test_a_stage_after_a_disabled_one_is_an_error(tmp_path):
    from domtok.errors import DomtokError

    stages = [dict(MICRO["stages"][0]), dict(MICRO["stages"][1], enabled=False), dict(MICRO["stages"][2])]
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(dict(MICRO, stages=stages)))
    with pytest.raises(DomtokError, match="comes after 'sft', which is not enabled"):
        load_spec(str(p))
    stages[2]["after"] = "pretrain"  # the branch skips it: fine, and sft's evaluations go too
    p.write_text(yaml.safe_dump(dict(MICRO, stages=stages, evals={**MICRO["evals"], "after": ["sft", "grpo"]})))
    spec = load_spec(str(p))
    assert [s.name for s in spec.stages] == ["pretrain", "grpo"] and spec.evals_after == ["grpo"]
