"""SFT: masks, injection policy, condition checks, learning (val loss, EOS), resume, torchrun.

Everything runs on a 2-layer model over a 384-id BPE trained here on synthetic text, so a
step costs milliseconds; torch uses one thread (2 shared cores: more threads only contend).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from domtok.chat import qa_messages, render_conversation
from domtok.errors import DomtokError
from domtok.train import sft_data
from domtok.train.sft import SFTConfig, SFTStage, build_stage_data, evaluate, injection_token_set, run, train_stages
from domtok.train.sft_data import DataSource, SFTExample, annotations_intact, build_examples, collate, split_train_val
from domtok.utils import DistInfo

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


# --- shared helpers (test_grpo / test_rft import these) --------------------------------------

def tiny_tokenizer(dir: Path, condition: str = "baseline"):
    """A 384-id byte-level BPE trained on synthetic drills and chat text (fast, offline)."""
    from domtok.data.drills import drills
    from domtok.data.gsm_sbs import gsm_sbs
    from domtok.chat import render_conversation_text
    from domtok.tokens.build import train_bpe
    from domtok.tokens.tokenizer import load_tokenizer

    if not (dir / "domtok_tokenizer.json").exists():
        recs = drills("tier1", 300, 1) + drills("tier2", 300, 2) + gsm_sbs(100, 3)
        texts = [render_conversation_text(qa_messages(r["question"], r["answer"])) for r in recs]
        train_bpe(texts, 384, dir)
    return load_tokenizer(str(dir), condition)


def tiny_model_dir(root: Path, condition: str = "baseline", seed: int = 0) -> Path:
    """A randomly initialised 2-layer GPT saved as a native model dir with its tokenizer."""
    from domtok.model.checkpoint import save_model_dir
    from domtok.model.gpt import GPT, config_from_preset

    out = root / f"model_{condition}_{seed}"
    if not (out / "config.json").exists():
        tok = tiny_tokenizer(root / "bpe", condition)
        torch.manual_seed(seed)
        model = GPT(config_from_preset("tiny", vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=64,
                                       block_size=128))
        save_model_dir(model, tok, out)
    return out


def eos_rate_and_accuracy(model, tokenizer, items: list[dict], max_new_tokens: int = 24) -> tuple[float, float]:
    """Greedy answers to held-out questions: fraction that end with EOS, fraction correct."""
    from domtok.chat import render_prompt
    from domtok.engine import Engine, SamplingParams
    from domtok.eval.gsm8k import is_correct
    from domtok.notation import parse_gold

    gens = Engine(model, tokenizer).generate([render_prompt(r["question"]) for r in items],
                                             SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
    eos = sum(g.finish_reason == "eos" for g in gens) / len(gens)
    acc = sum(is_correct(g.text, parse_gold(r["answer"])) for g, r in zip(gens, items)) / len(gens)
    return eos, acc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("sft")


# --- masks -----------------------------------------------------------------------------------

def test_collate_targets_are_exactly_assistant_tokens_and_eos(workdir):
    tok = tiny_tokenizer(workdir / "bpe")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "5"}, {"role": "user", "content": "And 4 + 4?"},
            {"role": "assistant", "content": "It is 8."}]
    r = render_conversation(msgs, tok)
    # independent expectation: the trained targets are the two answers, each with its EOS
    expected = tok.encode(" 5") + [tok.eot_id] + tok.encode(" It is 8.") + [tok.eot_id]
    ex = SFTExample(r.ids, r.mask, 0)
    x, y = collate([ex, SFTExample(r.ids[:5], r.mask[:5], 0)], pad_id=tok.eot_id)
    assert x.shape == y.shape == (2, len(r.ids) - 1)
    assert x[0].tolist() == r.ids[:-1]
    got = [t for t in y[0].tolist() if t != -100]
    assert got == expected
    assert got.count(tok.eot_id) == 2  # EOS is trained (never masked by value)
    # positions: y[t] is trained iff token t+1 is an assistant/EOS token
    assert [(t != -100) for t in y[0].tolist()] == [bool(m) for m in r.mask[1:]]
    # the short row: its prompt-only tokens are not trained; padding is -100
    assert (y[1] == -100).all()


# --- injection policy ------------------------------------------------------------------------

QA = {"question": "What is 6 × 9?", "answer": "6 × 9 = <<6*9=54>>54\n#### 54"}


def _prompt_and_answer_ids(ex: SFTExample):
    k = ex.mask.index(1)
    return ex.ids[:k], ex.ids[k:]


def test_injection_assistant_only_by_default(workdir):
    tok_dom = tiny_tokenizer(workdir / "bpe", "mul_tokens")
    tok_base = tiny_tokenizer(workdir / "bpe", "baseline")
    dom_id = tok_dom.domain_ids["<MUL_6_9_54>"]

    ts = injection_token_set("mul_tokens", tok_dom)
    (ex,) = build_examples([QA], tok_dom, ts, False, 128)
    prompt, answer = _prompt_and_answer_ids(ex)
    assert dom_id in answer and dom_id not in prompt  # the question (and its answer 54) stays text
    assert ex.n_bytes == len((" " + QA["answer"]).encode())  # bytes of the ORIGINAL text

    qa_u = {"question": "Given 6 × 9 = 54, what is 54 + 1?", "answer": "54 + 1 = <<54+1=55>>55\n#### 55"}
    (ex_u,) = build_examples([qa_u], tok_dom, ts, True, 128)  # the spec asked for user injection
    assert dom_id in _prompt_and_answer_ids(ex_u)[0]
    (ex_n,) = build_examples([qa_u], tok_dom, ts, False, 128)
    assert dom_id not in ex_n.ids

    assert injection_token_set("baseline", tok_base) is None
    (ex_b,) = build_examples([QA], tok_base, None, False, 128)
    assert tok_base.count_domain_tokens(ex_b.ids) == 0


def test_condition_must_match_model_tokenizer(workdir):
    tok_dom = tiny_tokenizer(workdir / "bpe", "mul_tokens")
    tok_base = tiny_tokenizer(workdir / "bpe", "baseline")
    with pytest.raises(DomtokError, match="does not use domain tokens"):
        injection_token_set("mul_tokens", tok_base)
    with pytest.raises(DomtokError, match="uses domain tokens"):
        injection_token_set("baseline", tok_dom)


def test_broken_annotations_are_detected_and_rejected(workdir, monkeypatch):
    # the reference injector's output on a GSM8K line
    assert not annotations_intact("9 * 2 = <<9*2=18>>$18", "<MUL_2_9_18> = <<<MUL_2_9_18>>>$18")
    assert not annotations_intact("<<9*2=18>> and <<18+1=19>>", "<<9*2=18>> and 19")  # one lost
    assert not annotations_intact("<<9*2=18>>", "<<9*2=1 8>>")  # a result changed
    assert annotations_intact("9 * 2 = <<9*2=18>>$18", "9 * 2 = <<<MUL_2_9_18>=18>>$18")

    import domtok.tokens.inject as inject

    class Bad:
        text = "<MUL_6_9_54> = <<<MUL_6_9_54>>>54\n#### 54"

    monkeypatch.setattr(inject, "inject_domain_tokens", lambda text, token_set="mul", **kw: Bad)
    tok_dom = tiny_tokenizer(workdir / "bpe", "mul_tokens")
    rep = sft_data.BuildReport()
    assert build_examples([QA], tok_dom, "mul", False, 128, rep) == []
    assert rep.broken_annotations == 1


def _break_some_injections(monkeypatch):
    """The injector, except that for a third of the texts (a fixed choice) it leaves a stray
    `>>`: an injection that breaks the text's annotations, as a buggy rule would."""
    import zlib

    import domtok.tokens.inject as inject

    real = inject.inject_domain_tokens

    def flaky(text, token_set="mul", **kw):
        r = real(text, token_set, **kw)
        if zlib.crc32(text.encode()) % 3 == 0:
            r.text += " >>"
        return r
    monkeypatch.setattr(inject, "inject_domain_tokens", flaky)


def test_a_record_that_cannot_be_injected_is_dropped_from_both_conditions(workdir, monkeypatch):
    _break_some_injections(monkeypatch)
    tok_dom = tiny_tokenizer(workdir / "bpe", "mul_tokens")
    tok_base = tiny_tokenizer(workdir / "bpe", "baseline")
    recs = [{"id": f"r{i}", "question": f"What is {i} × 3?", "answer": f"{i} × 3 = <<{i}*3={3 * i}>>{3 * i}\n#### {3 * i}"}
            for i in range(1, 31)]
    (workdir / "recs.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    stage = _stage(data=[DataSource(kind="jsonl", path=str(workdir / "recs.jsonl"))], val_size=5)
    reports, examples = {}, {}
    for cond, tok in (("baseline", tok_base), ("mul_tokens", tok_dom)):
        train, val, reports[cond] = build_stage_data(stage, tok, cond, False, seed=0)
        examples[cond] = (train, val)
    broken = reports["mul_tokens"]["train"]["broken_annotations"] + reports["mul_tokens"]["val"]["broken_annotations"]
    assert 3 <= broken <= 20  # the fake injector broke some, not all
    for part in ("train", "val"):
        assert reports["baseline"][part]["broken_annotations"] == reports["mul_tokens"][part]["broken_annotations"]
        assert reports["baseline"][part]["broken_annotation_ids"] == reports["mul_tokens"][part]["broken_annotation_ids"]
        assert reports["baseline"][part]["broken_annotations"] == len(reports["baseline"][part]["broken_annotation_ids"])
    (tb, vb), (tm, vm) = examples["baseline"], examples["mul_tokens"]
    assert len(tb) == len(tm) == 25 - len(reports["mul_tokens"]["train"]["broken_annotation_ids"])
    assert len(vb) == len(vm)
    # the same records, each with the same original bytes; only the domain one is injected
    assert [e.n_bytes for e in tb] == [e.n_bytes for e in tm]
    assert sum(tok_base.count_domain_tokens(e.ids) for e in tb) == 0
    assert sum(tok_dom.count_domain_tokens(e.ids) for e in tm) > 0


def test_sft_runs_of_both_conditions_have_the_same_steps_when_records_are_dropped(workdir, monkeypatch):
    _break_some_injections(monkeypatch)
    stage = _stage(data=[DataSource(kind="drills", n=24, drill_kinds=["tier2"])], val_size=4, epochs=1,
                   batch_size=4, grad_accum=1)
    s = {c: run(SFTConfig(model=str(tiny_model_dir(workdir, c)), condition=c, device="cpu", stages=[stage],
                          eval_every=0), workdir / f"drop_{c}") for c in ("baseline", "mul_tokens")}
    db, dm = s["baseline"]["data"]["t"]["train"], s["mul_tokens"]["data"]["t"]["train"]
    assert dm["broken_annotations"] > 0 and db["broken_annotations"] == dm["broken_annotations"]
    assert db["examples"] == dm["examples"] and s["baseline"]["steps"] == s["mul_tokens"]["steps"]
    assert db["broken_annotation_ids"] == dm["broken_annotation_ids"]
    assert json.loads((workdir / "drop_baseline" / "summary.json").read_text())["data"]["t"]["train"] == db


def test_validation_is_held_out_from_train_only():
    recs = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(100)]
    train, val = split_train_val(recs, 0.1, seed=3)
    assert len(val) == 10 and len(train) == 90
    assert {r["question"] for r in train}.isdisjoint({r["question"] for r in val})
    assert split_train_val(recs, 0.1, seed=3) == (train, val)  # seeded
    assert split_train_val(recs, 0.1, seed=4)[1] != val


# --- learning --------------------------------------------------------------------------------

def _stage(**kw) -> SFTStage:
    base = dict(name="t", data=[DataSource(kind="drills", n=120, drill_kinds=["tier1", "tier2"])], val_size=40,
                epochs=3, learning_rate=3e-3, warmup_ratio=0.05, weight_decay=0.0, max_length=64, batch_size=16,
                grad_accum=1)
    base.update(kw)
    return SFTStage(**base)


def test_sft_lowers_val_loss_and_learns_to_emit_eos(workdir):
    from domtok.data.drills import drills
    from domtok.model.checkpoint import load_model

    model, tok = load_model(tiny_model_dir(workdir))
    stage = _stage()
    train, val, _ = build_stage_data(stage, tok, "baseline", False, seed=0)
    held_out = drills("tier1", 20, seed=99) + drills("tier2", 20, seed=98)
    held_q = {r["question"] for r in held_out}
    assert all(tok.decode(e.ids) not in held_q for e in train)  # sanity: different items

    info = DistInfo(device="cpu")
    before = evaluate(model, val, 16, tok.eot_id, info, "cpu", "float32")
    eos_before, _ = eos_rate_and_accuracy(model, tok, held_out)
    cfg = SFTConfig(model="", device="cpu", seed=0)
    summary = train_stages(model, tok, [(stage, train, val)], cfg, workdir / "learn", info)
    after = summary["stages"][0]
    eos_after, _ = eos_rate_and_accuracy(model, tok, held_out)
    assert after["val_loss"] < 0.6 * before["val_loss"], (before, after)
    assert after["val_bpb"] < before["val_bpb"]
    assert eos_before < 0.2 and eos_after >= 0.8, (eos_before, eos_after)


def test_resume_reaches_identical_weights(workdir):
    from domtok.model.checkpoint import load_model

    src = tiny_model_dir(workdir)
    stage = _stage(data=[DataSource(kind="drills", n=24, drill_kinds=["tier1"])], val_size=8, epochs=2,
                   batch_size=4, grad_accum=2)
    cfg = SFTConfig(model=str(src), device="cpu", stages=[stage], checkpoint_every=2)
    full = run(cfg, workdir / "full")
    assert full["steps"] == 4 and (workdir / "full" / "summary.json").exists()

    cfg_cut = SFTConfig(model=str(src), device="cpu", stages=[stage], checkpoint_every=2, max_steps=2)
    run(cfg_cut, workdir / "cut")  # killed after step 2 (its checkpoint)
    resumed = run(cfg, workdir / "cut", resume=True)
    # the summary covers the whole run, not just the steps after the restart
    for key in ("final_train_loss", "final_val_loss", "final_val_bpb", "stages"):
        assert resumed[key] == full[key], key
    a, _ = load_model(workdir / "full" / "model")
    b, _ = load_model(workdir / "cut" / "model")
    for (k, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), k
    rows = [json.loads(x) for x in (workdir / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    full_rows = [json.loads(x) for x in (workdir / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in full_rows]


def test_torchrun_two_processes_match_one(workdir, tmp_path):
    import yaml

    src = tiny_model_dir(workdir)
    cfg = {"sft": {"model": str(src), "device": "cpu", "seed": 1, "eval_every": 2, "stages": [
        {"name": "t", "data": [{"kind": "drills", "n": 24, "drill_kinds": ["tier1"]}], "val_size": 8, "epochs": 2,
         "learning_rate": 3e-3, "max_length": 64, "batch_size": 4, "grad_accum": 2}]}}
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    from domtok.config import load_config

    run(load_config(SFTConfig, path, section="sft"), tmp_path / "one")  # 1 process, in this one
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "domtok", "sft", str(path), "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    r1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    r2 = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(r1) == len(r2) == 4
    for a, b in zip(r1, r2):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-5, (a, b)
        if "val_loss" in a:
            assert abs(a["val_loss"] - b["val_loss"]) < 1e-5


def test_domain_condition_run_injects_assistant_text(workdir):
    """A mul_tokens model fine-tunes with tokens in its answers; the baseline config is refused."""
    from domtok.model.checkpoint import load_model

    src = tiny_model_dir(workdir, "mul_tokens")
    stage = _stage(data=[DataSource(kind="drills", n=16, drill_kinds=["tier2"])], val_size=4, epochs=1,
                   batch_size=4, grad_accum=1)
    s = run(SFTConfig(model=str(src), condition="mul_tokens", device="cpu", stages=[stage]), workdir / "dom")
    assert s["data"]["t"]["train"]["broken_annotations"] == 0 and s["steps"] == 3
    _, tok = load_model(workdir / "dom" / "model")
    assert tok.uses_domain_tokens
    train, _, _ = build_stage_data(stage, tok, "mul_tokens", False, seed=0)
    assert sum(tok.count_domain_tokens(e.ids) for e in train) > 0
    with pytest.raises(DomtokError, match="uses domain tokens"):
        run(SFTConfig(model=str(src), condition="baseline", device="cpu", stages=[stage]), workdir / "bad")
    assert not (workdir / "bad" / "manifest.json").exists()


def test_resume_refuses_a_checkpoint_of_another_config(workdir):
    """Like pretraining: a checkpoint resumes only the config that wrote it (max_steps, which
    only cuts the run short, may differ)."""
    src = tiny_model_dir(workdir)
    stage = _stage(data=[DataSource(kind="drills", n=24, drill_kinds=["tier1"])], val_size=8, epochs=2,
                   batch_size=4, grad_accum=2)
    run(SFTConfig(model=str(src), device="cpu", stages=[stage], checkpoint_every=2, max_steps=2), workdir / "x")
    other = SFTConfig(model=str(src), device="cpu", stages=[replace(stage, learning_rate=stage.learning_rate * 2)],
                      checkpoint_every=2)
    with pytest.raises(DomtokError, match="written by a different config"):
        run(other, workdir / "x", resume=True)
