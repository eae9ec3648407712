"""The scaling ladder: rungs in the spec, their node hashes, the trend fit, and a micro ladder end to end."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import MICRO

from domtok.errors import DomtokError
from domtok.report.ladder import seed_trend, trend_lines, trends
from domtok.rundir import build_nodes, load_spec

RUNGS = [{"name": "xs", "n_layer": 1, "n_head": 2, "n_embd": 32, "tokens": 4096},
         {"name": "s", "n_layer": 2, "n_head": 2, "n_embd": 64, "tokens_per_param": 0.05}]


def _write(tmp_path: Path, data: dict, name: str = "ladder.yaml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return str(p)


def _ladder(rungs=RUNGS, **extra) -> dict:
    d = copy.deepcopy(MICRO)
    d["name"] = "microladder"
    d["ladder"] = copy.deepcopy(rungs)
    d.update(extra)
    return d


# --------------------------------------------------------------------------- the spec

def test_rung_budget_and_shape_reach_the_pretrain_config(tmp_path):
    import torch

    from domtok.model.gpt import GPT, GPTConfig

    spec = load_spec(_write(tmp_path, _ladder()))
    xs, s = spec.ladder
    nodes = {n.id: n for n in build_nodes(spec, tmp_path / "run")}
    pre = MICRO["stages"][0]["config"]
    for rung in (xs, s):
        cfg = nodes[f"rung-{rung.name}/baseline/seed0/pretrain"].config
        assert (cfg["n_layer"], cfg["n_head"], cfg["n_embd"]) == (rung.n_layer, rung.n_head, rung.n_embd)
        # the count is the real model's: built with the layout of a 512-id BPE + the mul set (576 ids)
        with torch.device("meta"):
            ref = GPT(GPTConfig(block_size=256, vocab_size=576, n_layer=rung.n_layer, n_head=rung.n_head,
                                n_embd=rung.n_embd)).num_params(non_embedding=False)
        assert rung.params == ref
        assert cfg["max_steps"] == rung.steps == round(rung.budget / pre["tokens_per_step"])
        # every other key of the stage is the spec's own
        assert {k: v for k, v in cfg.items() if k in pre and k not in ("n_layer", "n_head", "n_embd", "max_steps")} \
            == {k: v for k, v in pre.items() if k not in ("n_layer", "n_head", "n_embd", "max_steps")}
    assert xs.budget == 4096 and xs.steps == 8
    assert s.budget == round(0.05 * s.params)


def test_adding_a_rung_reruns_nothing_else(tmp_path):
    two = {n.id: n.hash for n in build_nodes(load_spec(_write(tmp_path, _ladder())), tmp_path / "run")}
    bigger = RUNGS[:1] + [{"name": "m", "n_layer": 3, "n_head": 2, "n_embd": 64, "tokens": 8192}] + RUNGS[1:]
    three = {n.id: n.hash for n in build_nodes(load_spec(_write(tmp_path, _ladder(bigger))), tmp_path / "run")}
    assert {k: three[k] for k in two} == two  # every old node, shared ones included, keeps its hash
    assert len([k for k in three if k.startswith("rung-m/")]) == len([k for k in two if k.startswith("rung-s/")])
    # rungs share the tokenizer and the prepared corpus of the plain study
    plain = {n.id: n.hash for n in build_nodes(load_spec(_write(tmp_path, copy.deepcopy(MICRO), "plain.yaml")),
                                               tmp_path / "run")}
    for k in ("tokenizer", "baseline/prepare", "mul_tokens/prepare"):
        assert two[k] == plain[k]
    assert not [k for k in two if k.endswith("/prepare") and k.startswith("rung-")]
    # the rung is in the hash even where the configs agree: the same rung under another name is another node
    renamed = copy.deepcopy(RUNGS)
    renamed[0]["name"] = "xs2"
    other = {n.id: n.hash for n in build_nodes(load_spec(_write(tmp_path, _ladder(renamed))), tmp_path / "run")}
    assert other["rung-xs2/baseline/seed0/pretrain"] != two["rung-xs/baseline/seed0/pretrain"]


def test_rung_set_and_prepare_change_only_that_rung(tmp_path):
    rungs = copy.deepcopy(RUNGS)
    rungs[1]["set"] = {"pretrain": {"lr": 1e-4}, "sft": {"eval_every": 7}}
    rungs[1]["prepare"] = {"n_docs": 800}
    spec = load_spec(_write(tmp_path, _ladder(rungs)))
    nodes = {n.id: n for n in build_nodes(spec, tmp_path / "run")}
    assert nodes["rung-s/baseline/seed0/pretrain"].config["lr"] == 1e-4
    assert nodes["rung-s/baseline/seed0/sft"].config["eval_every"] == 7
    assert "eval_every" not in nodes["rung-xs/baseline/seed0/sft"].config
    assert nodes["rung-xs/baseline/seed0/pretrain"].config.get("lr") != 1e-4
    # its own corpus: own prepare nodes under the rung, which its pretraining reads
    own = nodes["rung-s/baseline/prepare"]
    assert own.config["n_docs"] == 800 and own.out_dir == tmp_path / "run" / "rung-s" / "baseline" / "prepare"
    assert nodes["rung-s/baseline/seed0/pretrain"].deps == [own]
    assert nodes["rung-xs/baseline/seed0/pretrain"].deps == [nodes["baseline/prepare"]]


@pytest.mark.parametrize("rung, message", [
    ({"name": "a", "n_layer": 1, "n_head": 2, "n_embd": 32}, "exactly one of `tokens` and `tokens_per_param`"),
    ({"name": "a", "n_layer": 1, "n_head": 3, "n_embd": 32, "tokens": 4096}, "not divisible by n_head"),
    ({"name": "a", "n_layer": 0, "n_head": 2, "n_embd": 32, "tokens": 4096}, "`n_layer` must be a positive integer"),
    ({"name": "a", "n_layer": 1, "n_head": 2, "n_embd": 32, "tokens": 4096, "width": 3}, "unknown keys"),
    ({"name": "a", "n_layer": 1, "n_head": 2, "n_embd": 32, "tokens": 4096, "set": {"nope": {"lr": 1}}},
     "unknown stages"),
    ({"name": "a", "n_layer": 1, "n_head": 2, "n_embd": 32, "tokens": 1024}, "warmup_steps"),
    ({"name": "a/b", "n_layer": 1, "n_head": 2, "n_embd": 32, "tokens": 4096}, "becomes a directory name"),
])
def test_bad_rungs_are_one_readable_error(tmp_path, rung, message):
    path = _write(tmp_path, _ladder([rung]))
    with pytest.raises(DomtokError, match=message) as e:
        load_spec(path)
    assert str(e.value).startswith(path) and "\n" not in str(e.value)


def test_duplicate_rung_names_are_refused(tmp_path):
    with pytest.raises(DomtokError, match="used twice"):
        load_spec(_write(tmp_path, _ladder([RUNGS[0], RUNGS[0]])))


def test_nominal_vocab_is_the_real_tokenizers(gpt2_dir):
    from domtok.ladder import nominal_vocab_size
    from domtok.tokens.tokenizer import load_tokenizer

    assert nominal_vocab_size({"base": "gpt2"}, "mul") == load_tokenizer("gpt2", "baseline", gpt2_dir=gpt2_dir).vocab_size


# --------------------------------------------------------------------------- the trend

def test_seed_trend_is_a_t_test_over_per_seed_slopes():
    """The trend: per seed, a least-squares slope over the rungs (numpy's polyfit); then
    scipy's one-sample t-test of those slopes, K - 1 df."""
    from scipy import stats

    rng = np.random.default_rng(3)
    flops = [1e12, 3e12, 1e13, 4e13, 1e14]
    x = np.log10(flops)
    deltas = 0.02 * x[:, None] - 0.2 + rng.normal(0, 0.02, (5, 4))  # (rungs, seeds)
    fit = seed_trend(flops, deltas.tolist())
    slopes = [np.polyfit(x, deltas[:, k], 1)[0] for k in range(4)]
    ref = stats.ttest_1samp(slopes, 0.0)
    assert fit["per_seed_slopes"] == pytest.approx(slopes, rel=1e-9)
    assert fit["slope_per_decade"] == pytest.approx(np.mean(slopes), rel=1e-12) and fit["df"] == 3
    assert fit["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (fit["ci_low"], fit["ci_high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)
    assert fit["decades"] == pytest.approx(2.0) and fit["exploratory"] is False
    # the band at a rung is the t-interval of the per-seed fitted values there
    mid, lo, hi = __import__("domtok.report.ladder", fromlist=["trend_band"]).trend_band(fit, [x[2]])
    fitted = [np.polyval(np.polyfit(x, deltas[:, k], 1), x[2]) for k in range(4)]
    assert mid[0] == pytest.approx(np.mean(fitted)) and (lo[0], hi[0]) == pytest.approx(
        tuple(stats.ttest_1samp(fitted, 0).confidence_interval(0.95)), rel=1e-9)
    # half a decade: exploratory; one seed or one rung: not estimable
    assert seed_trend([1e12, 3e12], [[0.0, 0.1], [0.1, 0.1]])["exploratory"] is True
    assert seed_trend([1e12, 1e14], [[0.0], [0.2]]) is None and seed_trend([1e12], [[0.1, 0.2]]) is None


def test_trend_null_simulation_rungs_sharing_items():
    """No trend, 3 rungs that share their items and 3 seeds, each seed with its own offset
    common to its rungs: the slope test rejects at about its nominal 5%."""
    rng = np.random.default_rng(11)
    n = 4000
    item = rng.normal(0, 0.03, (n, 1, 1))   # shared by every rung and seed: the items drawn
    seed = rng.normal(0, 0.02, (n, 1, 3))   # seed k's offset, common to its rungs
    noise = rng.normal(0, 0.02, (n, 3, 3))
    deltas = item + seed + noise
    flops = [1e12, 1e13, 1e14]
    rate = np.mean([seed_trend(flops, d.tolist())["p"] < 0.05 for d in deltas])
    assert abs(rate - 0.05) < 3 * np.sqrt(0.05 * 0.95 / n)


def _row(rung, flops, delta, lo, hi, deltas=(0.0, 0.0)):
    return {"rung": rung, "flops": flops, "headline": [
        {"benchmark": "probes", "metric": "accuracy_mul_table", "stage": "sft", "condition": "mul_tokens",
         "delta": delta, "ci_low": lo, "ci_high": hi, "p": 0.5, "p_holm": 1.0, "seeds": [0, 1],
         "per_seed_deltas": list(deltas)}]}


def test_smallest_rung_whose_ci_excludes_zero():
    rows = [_row("s", 1e12, 0.01, -0.05, 0.07), _row("m", 1e13, 0.08, 0.02, 0.14), _row("l", 1e14, 0.1, 0.05, 0.15)]
    t = trends(rows)
    assert t[0]["first_rung_excluding_zero"] == "m"
    assert "smallest rung whose 95% CI excludes zero for some headline effect is `m`" in "\n".join(trend_lines(rows, t))
    null = [_row("s", 1e12, 0.01, -0.05, 0.07, (0.0, 0.02)), _row("m", 1e13, -0.02, -0.09, 0.05, (-0.03, -0.01))]
    text = "\n".join(trend_lines(null, trends(null)))
    assert "No rung's 95% CI excludes zero for any headline effect" in text
    assert "The rungs span 1.00 decades of training compute per model." in text
    short = [_row("s", 1e12, 0.01, -0.05, 0.07), _row("m", 5e12, -0.02, -0.09, 0.05)]
    assert "less than one decade, so any trend here is exploratory" in "\n".join(trend_lines(short, trends(short)))


# --------------------------------------------------------------------------- presets

def test_ladder_cpu_smallest_rung_is_the_default_study():
    from domtok.config import from_dict
    from domtok.train.pretrain import PretrainConfig, build_model

    ladder, tiny = load_spec("ladder-cpu"), load_spec("tiny")
    assert len(ladder.ladder) == 3 and len(ladder.seeds) == 2
    assert "extends" not in ladder.raw and ladder.raw["prepare"] == tiny.raw["prepare"]  # the saved spec stands alone

    def model_and_steps(cfg):
        import torch

        pc = from_dict(PretrainConfig, cfg, where="test")
        with torch.device("meta"):
            m = build_model(pc, 1088).config
        return (m.n_layer, m.n_head, m.n_embd, m.block_size), pc.max_steps * pc.tokens_per_step, pc.seq_len, pc.lr

    smallest = ladder.ladder[0].stage_configs["pretrain"]
    assert model_and_steps(smallest) == model_and_steps(tiny.stage("pretrain").config)
    assert [r.params for r in ladder.ladder] == sorted(r.params for r in ladder.ladder)
    for st in tiny.stages[1:]:  # post-training as in the default study
        assert ladder.ladder[0].stage_configs[st.name] == st.config
    assert ladder.benchmarks == tiny.benchmarks and ladder.evals_after == tiny.evals_after


def test_ladder_gpt2_rungs_share_one_corpus_at_20_tokens_per_param(tmp_path):
    spec = load_spec("ladder-gpt2")
    assert [round(r.params / 1e6) for r in spec.ladder] == [19, 52, 125, 355]
    assert all(r.tokens_per_param == 20 and r.budget == round(20 * r.params) for r in spec.ladder)
    nodes = build_nodes(spec, tmp_path)
    assert sorted(n.id for n in nodes if n.kind == "prepare") == ["baseline/prepare", "mul_tokens/prepare"]
    # sample-10BT holds ~10B GPT-2 tokens: the largest budget fits without repeating data
    assert max(r.budget for r in spec.ladder) < 10e9 * (1 - spec.prepare["val_fraction"])


def test_learns_section_is_checked_and_validated(tmp_path):
    from domtok.report.tables import learn_check

    spec = load_spec(_write(tmp_path, _ladder(learns={"stage": "grpo", "minimum": {"probes.accuracy_mul_table": 0.9}})))
    assert spec.learns == {"stage": "grpo", "minimum": {"probes.accuracy_mul_table": 0.9}}
    acc = {"baseline": {"grpo": {"probes.accuracy_mul_table": 0.95}}, "mul_tokens": {"grpo": {"probes.accuracy_mul_table": 0.5}}}
    lines, misses = learn_check(spec.learns, acc)
    assert misses == ["mul_tokens probes.accuracy_mul_table 0.500 < 0.90"]
    assert "0.950 ✅" in lines[-1] and "0.500 ❌" in lines[-1]
    with pytest.raises(DomtokError, match="not evaluated"):
        load_spec(_write(tmp_path, _ladder(learns={"stage": "sft", "minimum": {"probes.accuracy_mul_table": 0.9}})))
    with pytest.raises(DomtokError, match="not BENCHMARK.METRIC"):
        load_spec(_write(tmp_path, _ladder(learns={"stage": "grpo", "minimum": {"nope.accuracy": 0.9}})))


# --------------------------------------------------------------------------- a micro ladder end to end

MICRO_RUNGS = [{"name": "xs", "n_layer": 1, "n_head": 2, "n_embd": 32, "tokens": 4096},
               {"name": "s", "n_layer": 2, "n_head": 2, "n_embd": 64, "tokens": 8192}]


def _micro_ladder_spec(rungs) -> dict:
    d = _ladder(rungs)
    d["evals"] = {"after": ["pretrain", "grpo"],
                  "benchmarks": {k: v for k, v in MICRO["evals"]["benchmarks"].items() if k != "hellaswag"}}
    return d


@pytest.fixture(scope="module")
def micro_ladder(tmp_path_factory):
    """Two rungs of micro models, one seed, every stage kind: `domtok run` in process."""
    import torch

    from domtok.pipeline import RunOptions, run_experiment

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ladder")
    path = _write(root, _micro_ladder_spec(MICRO_RUNGS))
    spec = load_spec(path)
    spec.runs_dir = str(root / "runs")
    rc = run_experiment(spec, RunOptions(quiet=True))
    yield {"rc": rc, "spec": spec, "run_dir": root / "runs" / "microladder", "root": root}
    torch.set_num_threads(threads)


def test_micro_ladder_runs_every_rung_and_reports_it(micro_ladder):
    import torch
    from PIL import Image

    from domtok.model.gpt import GPT, GPTConfig
    from domtok.rundir import read_summary

    assert micro_ladder["rc"] == 0
    run_dir, spec = micro_ladder["run_dir"], micro_ladder["spec"]
    report = json.loads((run_dir / "report.json").read_text())
    rows = report["ladder"]
    assert [r["rung"] for r in rows] == ["xs", "s"]
    vocab = json.loads((run_dir / "tokenizer" / "manifest.json").read_text())["summary"]["vocab_size"]
    nodes = {n.id: n for n in build_nodes(spec, run_dir)}
    for r, rung in zip(rows, spec.ladder):
        pre = read_summary(nodes[f"rung-{rung.name}/baseline/seed0/pretrain"])
        with torch.device("meta"):
            model = GPT(GPTConfig(block_size=256, vocab_size=vocab, n_layer=rung.n_layer, n_head=rung.n_head,
                                  n_embd=rung.n_embd))
        assert r["params"] == pre["params"] == model.num_params(non_embedding=False) == rung.params
        assert r["tokens"] == pre["tokens_trained"] == rung.steps * MICRO["stages"][0]["config"]["tokens_per_step"]
        assert r["flops"] == pytest.approx(model.flops_per_token(MICRO["stages"][0]["config"]["seq_len"]) * r["tokens"])
        assert r["compute_matched"] is True and r["wall_time_s"] > r["pretrain_wall_time_s"] > 0
        assert r["elapsed_s"] >= r["wall_time_s"] - 2  # one job: the nodes ran one after another
        # the rung's own headline: every main metric after every evaluated stage
        keys = {(h["benchmark"], h["metric"], h["stage"]) for h in r["headline"]}
        assert ("gsm_synthetic", "accuracy_flexible", "grpo") in keys and ("probes", "accuracy_mul_table", "pretrain") in keys
        assert all(h["ci_low"] <= h["delta"] <= h["ci_high"] for h in r["headline"])
        assert set(r["accuracy"]) == {"baseline", "mul_tokens"}
    assert rows[0]["flops"] < rows[1]["flops"]
    # a trend per headline effect, and the plots of it and of the accuracies, readable PNGs
    assert {(t["benchmark"], t["metric"], t["stage"]) for t in report["ladder_trend"]} == keys
    for name in ("ladder_effects.png", "ladder_accuracy.png", "rung-xs/loss_pretrain.png", "rung-s/loss_grpo.png"):
        with Image.open(run_dir / "plots" / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    md = (run_dir / "report.md").read_text()
    assert md.index("## Ladder") < md.index("## Rung `xs`") < md.index("## Rung `s`")
    assert "The effect against compute" in md and ("smallest rung whose 95% CI excludes zero" in md
                                                   or "No rung's 95% CI excludes zero" in md)


def test_micro_ladder_checks_compute_per_rung(micro_ladder, tmp_path):
    import shutil

    from domtok.report import write_report

    run_dir = tmp_path / "copy"
    shutil.copytree(micro_ladder["run_dir"], run_dir)
    # rung s's domain model trained one step more: only rung s is not compute-matched
    m = run_dir / "rung-s" / "mul_tokens" / "seed0" / "pretrain" / "manifest.json"
    data = json.loads(m.read_text())
    data["summary"]["tokens_trained"] += data["summary"]["tokens_per_step"]
    data["summary"]["steps"] += 1
    m.write_text(json.dumps(data))
    write_report(run_dir)
    rows = {r["rung"]: r for r in json.loads((run_dir / "report.json").read_text())["ladder"]}
    assert rows["xs"]["compute_matched"] is True and rows["s"]["compute_matched"] is False
    md = (run_dir / "report.md").read_text()
    xs, s = md[md.index("## Rung `xs`"):md.index("## Rung `s`")], md[md.index("## Rung `s`"):]
    assert "✅ conditions are compute-matched" in xs and "NOT compute-matched" not in xs
    assert "❌ conditions are NOT compute-matched: steps, tokens differ" in s
    assert "within rung(s) s the conditions are NOT compute-matched" in md


def test_adding_a_rung_to_a_finished_ladder_runs_only_its_nodes(micro_ladder, tmp_path):
    import shutil

    from domtok.pipeline import RunOptions, run_experiment

    runs = tmp_path / "runs"
    shutil.copytree(micro_ladder["run_dir"], runs / "microladder")
    stamps = {str(p): p.stat().st_mtime_ns for p in (runs / "microladder").glob("**/manifest.json")}
    rungs = MICRO_RUNGS + [{"name": "m", "n_layer": 2, "n_head": 2, "n_embd": 32, "tokens": 4096}]
    spec = load_spec(_write(tmp_path, _micro_ladder_spec(rungs)))
    spec.runs_dir = str(runs)
    assert run_experiment(spec, RunOptions(quiet=True)) == 0
    after = {str(p): p.stat().st_mtime_ns for p in (runs / "microladder").glob("**/manifest.json")}
    assert {k: after[k] for k in stamps} == stamps
    assert sorted({Path(k).relative_to(runs / "microladder").parts[0] for k in set(after) - set(stamps)}) == ["rung-m"]


def test_trend_of_seeds_with_the_same_slope():
    # every seed moves alike: the slope has no spread to be tested against
    fit = seed_trend([1e12, 1e13, 1e14], [[0.0, 0.0], [0.1, 0.1], [0.2, 0.2]])
    assert fit["slope_per_decade"] == pytest.approx(0.1) and fit["p"] == 1.0 and fit["ci_low"] is None


def test_planted_ladder_effect_is_found_from_its_first_rung(tmp_path):
    """A fake ladder (the report's fake run dirs, items planted): mul_tokens helps on
    mul_multidigit in rungs `mid` and `big`, not in `small`; nothing else differs."""
    from test_report import write_fake_run

    from domtok.report import write_report

    ladder = [{"name": "small", "n_layer": 1, "n_head": 1, "n_embd": 8, "tokens": 8192},
              {"name": "mid", "n_layer": 1, "n_head": 1, "n_embd": 16, "tokens": 8192},
              {"name": "big", "n_layer": 1, "n_head": 1, "n_embd": 32, "tokens": 8192}]
    run_dir = write_fake_run(tmp_path, seeds=(0, 1, 2), ladder=ladder)
    spec_path = run_dir / "spec.yaml"
    spec_data = yaml.safe_load(spec_path.read_text())
    spec_data["learns"] = {"stage": "sft", "minimum": {"probes.accuracy_mul_multidigit": 0.5}}
    spec_path.write_text(yaml.safe_dump(spec_data))
    flops = {"small": 1e12, "mid": 1e13, "big": 1e14}
    for m in run_dir.glob("rung-*/*/seed*/pretrain/manifest.json"):
        data = json.loads(m.read_text())
        rung = m.parts[-5][len("rung-"):]
        data["summary"] = {"params": 1000, "steps": 8, "tokens_per_step": 1024, "tokens_trained": 8192,
                           "total_flops": flops[rung], "epochs": 0.5, "wall_time_s": 1.0}
        m.write_text(json.dumps(data))
    write_report(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    assert [r["rung"] for r in report["ladder"]] == ["small", "mid", "big"]
    assert [r["flops"] for r in report["ladder"]] == [1e12, 1e13, 1e14]
    trend = {(t["metric"], t["stage"]): t for t in report["ladder_trend"] if t["benchmark"] == "probes"}
    helped = trend["accuracy_mul_multidigit", "sft"]
    assert helped["first_rung_excluding_zero"] == "mid"
    assert trend["accuracy_mul_table", "sft"]["first_rung_excluding_zero"] is None
    # the slope is the mean of the per-seed slopes of the report's own per-rung, per-seed effects
    rows = [next(h for h in r["headline"] if h["metric"] == "accuracy_mul_multidigit" and h["stage"] == "sft")
            for r in report["ladder"]]
    slopes = [np.polyfit([12, 13, 14], [h["per_seed_deltas"][k] for h in rows], 1)[0] for k in range(3)]
    assert helped["trend"]["slope_per_decade"] == pytest.approx(np.mean(slopes)) and np.mean(slopes) > 0.1
    assert helped["trend"]["n_seeds"] == 3 and helped["trend"]["decades"] == pytest.approx(2.0)
    md = (run_dir / "report.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| probes.accuracy_mul_multidigit after sft"))
    assert line.endswith("| mid |")
    # GRPO lowers mul_tokens' GSM-style accuracy at every rung (planted): the smallest rung with any effect
    assert ("smallest rung whose 95% CI excludes zero for some headline effect is `small` "
            "(gsm_synthetic.accuracy_flexible after grpo (mul_tokens))") in md
    # the learns figure: the baseline misses it in every rung, mul_tokens only in `small`
    missed = md[md.index("Not every model reaches the figures"):].splitlines()[0]
    assert all(f"`{r}` baseline probes.accuracy_mul_multidigit 0.350 < 0.50" in missed for r in flops)
    assert "`small` mul_tokens" in missed and "`mid` mul_tokens" not in missed and "`big` mul_tokens" not in missed
    for name in ("ladder_effects.png", "ladder_accuracy.png", "rung-big/forest.png"):
        assert (run_dir / "plots" / name).stat().st_size > 1000


# --------------------------------------------------------------------------- --smoke on a ladder

def test_smoke_shrinks_every_rung_and_its_spec_yaml_rebuilds_the_same_nodes(tmp_path):
    from domtok.smoke import Sources, smoke_spec

    spec = load_spec("ladder-gpt2")
    smoke, changes = smoke_spec(spec, Sources(tmp_path / "fixtures", False), "cpu")
    for real, small in zip(spec.ladder, smoke.ladder):
        cfg = small.stage_configs["pretrain"]
        assert (cfg["n_layer"], cfg["n_head"], cfg["n_embd"]) == (real.n_layer, real.n_head, real.n_embd)
        assert cfg["max_steps"] == small.steps == 2 and cfg["seq_len"] <= 64 and small.steps < real.steps
        assert f"ladder.{real.name}.pretrain.max_steps: {real.steps} -> 2" in changes
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(smoke.raw))
    again = load_spec(str(path))
    assert {n.id: n.hash for n in build_nodes(again, tmp_path)} == {n.id: n.hash for n in build_nodes(smoke, tmp_path)}


def test_smoke_runs_a_micro_ladder(tmp_path, one_thread):
    from domtok.pipeline import RunOptions, run_experiment
    from domtok.smoke import run_smoke

    spec = load_spec(_write(tmp_path, _micro_ladder_spec(MICRO_RUNGS)))
    spec.runs_dir = str(tmp_path / "runs")
    assert run_smoke(spec, RunOptions(quiet=True), run_experiment) == 0
    result = json.loads((tmp_path / "runs" / "microladder-smoke" / "smoke.json").read_text())
    assert result["passed"] and all(r["result"] == "passed" for r in result["nodes"])
    assert {r["node"].split("/")[0] for r in result["nodes"]} >= {"rung-xs", "rung-s"}
    # the real config's plan, per rung: its own parameters and token budget
    plans = {p["stage"]: p for p in result["plans"]}
    assert set(plans) == {"xs/pretrain", "s/pretrain"}
    assert [plans[f"{r.name}/pretrain"]["tokens"] for r in spec.ladder] == [r.steps * 512 for r in spec.ladder]
    # the smoke dir reads back whole: its report has every rung's models
    report = json.loads((tmp_path / "runs" / "microladder-smoke" / "report.json").read_text())
    assert [r["models"] for r in report["ladder"]] == [2, 2] and all(r["compute_matched"] for r in report["ladder"])
