"""gold_bpb / gold_solution_bpb: teacher-forced bits per byte of the gold text, checked against
transformers' GPT2LMHeadModel on the exported model."""

import json
import math

import pytest
import torch

from domtok.engine import Engine
from domtok.eval.gold import answer_text, gold_bits_per_byte


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from domtok.model.checkpoint import load_model, save_model_dir
    from domtok.model.gpt import GPT, GPTConfig
    from domtok.model.hf import export_hf
    from domtok.tokens.build import train_bpe
    from domtok.tokens.tokenizer import load_tokenizer

    d = tmp_path_factory.mktemp("gold")
    texts = [f"User: What is {a} times {b}?\nAssistant: {a} × {b} = {a * b}\n#### {a * b}"
             for a in range(1, 10) for b in range(1, 10)]
    train_bpe(texts * 3, 320, d / "bpe")
    tok = load_tokenizer(str(d / "bpe"), "mul_tokens")
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=256, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32))
    save_model_dir(model, tok, d / "model")
    export_hf(d / "model", d / "hf")
    model, tok = load_model(str(d / "model"))
    return Engine(model.eval(), tok, device="cpu"), d


_HF = {}


def _hf_bits(hf_dir, tok, prompt, text):
    """-log2 p(text | prompt) with transformers, the same ids (prompt, then the injected text)."""
    import transformers

    if hf_dir not in _HF:
        _HF[hf_dir] = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    hf = _HF[hf_dir]
    p_ids = tok.encode(prompt)
    g_ids = tok.encode(tok.inject(text).text)
    ids = torch.tensor([p_ids + g_ids])
    with torch.no_grad():
        logp = torch.log_softmax(hf(ids).logits.double(), dim=-1)[0]
    total = sum(logp[len(p_ids) + k - 1, t].item() for k, t in enumerate(g_ids))
    return -total / math.log(2), g_ids


def test_matches_transformers_and_counts_original_bytes(tiny):
    engine, d = tiny
    tok = engine.tokenizer
    prompts = ["User: What is 6 times 9?\nAssistant:", "User: What is 7 times 3?\nAssistant:"]
    texts = [" 6 × 9 = 54\n#### 54", answer_text("21", chat=True)]
    got = gold_bits_per_byte(engine, prompts, texts)
    for prompt, text, g in zip(prompts, texts, got):
        bits, g_ids = _hf_bits(d / "hf", tok, prompt, text)
        assert g == pytest.approx(bits / len(text.encode("utf-8")), rel=1e-4)
    # the domain condition's notation: the fact is its token, the bytes are the written text's
    _, g_ids = _hf_bits(d / "hf", tok, prompts[0], texts[0])
    assert tok.domain_ids["<MUL_6_9_54>"] in g_ids
    assert answer_text("21", chat=False) == " 21"


def test_none_where_nothing_to_score(tiny):
    engine, _ = tiny
    long_text = " " + "1 + 1 = 2\n" * 100  # more tokens than the 256-token context
    got = gold_bits_per_byte(engine, ["User: q\nAssistant:"] * 3, [None, long_text, " 5"])
    assert got[0] is None and got[1] is None and got[2] > 0

    class Stub:  # an engine that only generates
        tokenizer = engine.tokenizer
    assert gold_bits_per_byte(Stub(), ["x"], [" 5"]) == [None]


def test_gsm_and_probe_runs_record_scores(tiny, tmp_path):
    from domtok.eval.gsm8k import GSM8KEvalConfig, build_prompt, load_items
    from domtok.eval.gsm8k import run as gsm_run
    from domtok.eval.probes import ProbesConfig
    from domtok.eval.probes import run as probes_run

    engine, d = tiny
    cfg = GSM8KEvalConfig(model=str(d / "model"), data="synthetic:word_problems", n=3, max_new_tokens=4,
                          device="cpu", batch_size=2)
    s = gsm_run(cfg, tmp_path / "gsm", engine=engine)
    rows = [json.loads(x) for x in (tmp_path / "gsm" / "items.jsonl").read_text().splitlines()]
    assert all(r["gold_bpb"] > 0 and r["gold_solution_bpb"] > 0 for r in rows)
    assert s["metrics"]["gold_bpb"] == pytest.approx(sum(r["gold_bpb"] for r in rows) / 3)
    assert s["metrics"]["gold_solution_bpb"] == pytest.approx(sum(r["gold_solution_bpb"] for r in rows) / 3)
    item = load_items(cfg)[1]  # the scored text is the worked solution after the evaluation's prompt
    bits, _ = _hf_bits(d / "hf", engine.tokenizer, build_prompt(item["question"], engine.tokenizer, cfg),
                       " " + item["solution"])
    assert rows[1]["gold_solution_bpb"] == pytest.approx(bits / len((" " + item["solution"]).encode()), rel=1e-4)

    p = probes_run(ProbesConfig(model=str(d / "model"), categories=["mul_table"], max_new_tokens=2, device="cpu",
                                prompt_style="answer_is"), tmp_path / "probes", engine=engine)
    rows = [json.loads(x) for x in (tmp_path / "probes" / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 81 and all(r["gold_bpb"] > 0 for r in rows)
    assert p["metrics"]["gold_bpb_mul_table"] == pytest.approx(p["metrics"]["gold_bpb_all"])
    bits, _ = _hf_bits(d / "hf", engine.tokenizer, rows[0]["prompt"], " " + rows[0]["gold"])
    assert rows[0]["gold_bpb"] == pytest.approx(bits / len((" " + rows[0]["gold"]).encode()), rel=1e-4)
