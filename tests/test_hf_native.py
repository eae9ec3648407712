"""Every model dir domtok writes is a Hugging Face GPT-2 dir as it is, checked against
`transformers` itself: AutoModelForCausalLM / AutoTokenizer load it, the logits are domtok's,
the chat template renders domtok's prompts (text and ids), pad agrees everywhere, the model
card says what the dir holds; domtok still loads its own older (native) dirs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from domtok.chat import render_conversation, render_conversation_text, render_prompt
from domtok.model.checkpoint import _write_model_files, load_model, save_checkpoint, save_model_dir
from domtok.model.gpt import GPT, GPTConfig
from domtok.model.hf import export_hf

transformers = pytest.importorskip("transformers")


@pytest.fixture
def mul_tok(gpt2_dir):
    from domtok.tokens.tokenizer import load_tokenizer

    return load_tokenizer("gpt2", "mul_tokens", gpt2_dir=gpt2_dir)


def tiny(tok, seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=32, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # non-zero biases, LayerNorm gains != 1
    return model


def test_stage_model_dir_loads_in_transformers_with_domtoks_logits(tmp_path, mul_tok):
    model = tiny(mul_tok)
    d = save_model_dir(model, mul_tok, tmp_path / "sft" / "model",
                       extra={"stage": "sft", "seed": 3, "data": "gsm8k", "config_hash": "abc"})
    hf = transformers.AutoModelForCausalLM.from_pretrained(d).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    ids = torch.tensor([mul_tok.encode("User: What is <MUL_6_9_54>?\nAssistant: 54")])
    with torch.no_grad():
        ours, _ = model(ids)
        assert (hf(ids).logits - ours).abs().max().item() < 1e-4
    # domtok reads the same dir back bit for bit, with its tokenizer
    back, tok = load_model(d)
    assert tok.condition == "mul_tokens" and back.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    # one copy of the weights, under HF names and Conv1D shapes
    assert sorted(p.name for p in d.glob("*.safetensors")) == ["model.safetensors"]
    assert load_file(str(d / "model.safetensors"))["transformer.h.0.mlp.c_fc.weight"].shape == (16, 64)


def test_chat_template_renders_domtoks_prompts(tmp_path, mul_tok):
    d = save_model_dir(tiny(mul_tok), mul_tok, tmp_path / "m")
    hf_tok = transformers.AutoTokenizer.from_pretrained(d)
    conversations = [
        [{"role": "user", "content": "What is 7 times 8?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6*9?"}],
        [{"role": "user", "content": "Natalia sold 48 clips."}, {"role": "assistant", "content": "<MUL_6_8_48> so 48"},
         {"role": "user", "content": "And then?"}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    ]
    for msgs in conversations:
        prompt = msgs[-1]["role"] == "user"
        text = hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt)
        assert text == render_conversation_text(msgs)
        ids = list(hf_tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=prompt, return_dict=False))
        if prompt and "assistant" not in [m["role"] for m in msgs]:
            # what sample/eval feed domtok's Engine: render_prompt's text, encoded whole
            assert ids == mul_tok.encode(text)
        if msgs[0]["role"] != "system":
            # SFT encodes piece by piece; it equals the whole-text encoding except after a system
            # message, whose "\n\n" is one token (628) there and two (198 198) in a whole encoding
            assert ids == render_conversation(msgs, mul_tok).ids
    q = [{"role": "user", "content": "What is 7 times 8?"}]
    assert hf_tok.apply_chat_template(q, tokenize=False, add_generation_prompt=True) == render_prompt("What is 7 times 8?")


def test_pad_token_agrees_and_is_not_eos(tmp_path, mul_tok):
    d = save_model_dir(tiny(mul_tok), mul_tok, tmp_path / "m")
    hf_tok = transformers.AutoTokenizer.from_pretrained(d)
    gen = transformers.GenerationConfig.from_pretrained(d)
    cfg = transformers.AutoConfig.from_pretrained(d)
    assert hf_tok.pad_token == "<|padding_0|>" and hf_tok.pad_token_id == mul_tok.pad_id == 50257
    assert gen.pad_token_id == cfg.pad_token_id == hf_tok.pad_token_id != hf_tok.eos_token_id
    assert gen.eos_token_id == hf_tok.eos_token_id == mul_tok.eot_id
    # greedy generation in transformers with that config gives domtok's greedy tokens
    model = transformers.AutoModelForCausalLM.from_pretrained(d).eval()
    ids = hf_tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=False)
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    ours, _ = load_model(d)
    x = ids
    for _ in range(5):
        with torch.no_grad():
            logits, _ = ours(x)
        x = torch.cat([x, logits[:, -1:].argmax(-1)], 1)
        if x[0, -1].item() == mul_tok.eot_id:
            break
    assert out[0].tolist()[: x.shape[1]] == x[0].tolist()


def test_model_card_says_what_the_dir_holds(tmp_path, mul_tok):
    d = save_model_dir(tiny(mul_tok), mul_tok, tmp_path / "m",
                       extra={"stage": "grpo", "seed": 2, "data": "gsm8k, 1000 records (seed 0)"})
    card = (d / "README.md").read_text()
    assert "| stage | grpo |" in card and "| seed | 2 |" in card and "mul_tokens" in card
    assert "| data | gsm8k, 1000 records (seed 0) |" in card and "AutoModelForCausalLM.from_pretrained" in card
    assert "No evaluation results: this card was written with the model" in card


def test_old_native_dirs_and_checkpoints_still_load_and_export(tmp_path, mul_tok):
    model = tiny(mul_tok, 1)
    old = tmp_path / "old"
    old.mkdir()
    _write_model_files(old, model, mul_tok, {"stage": "sft"})  # the layout of earlier domtok versions
    assert "model_type" not in json.loads((old / "config.json").read_text())
    back, tok = load_model(old)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    ckpt = save_checkpoint(tmp_path / "run", model, None, {"step": 4}, tokenizer=mul_tok)
    assert "model_type" not in json.loads((ckpt / "config.json").read_text())  # checkpoints stay native
    for src in (old, ckpt):
        out = export_hf(src, tmp_path / f"hf-{src.name}")
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["model_type"] == "gpt2" and cfg["condition"] == "mul_tokens" and "step" not in cfg
        hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
        ids = torch.tensor([[1, 2, 50304, 3]])
        with torch.no_grad():
            assert (hf(ids).logits - model(ids)[0]).abs().max().item() < 1e-4
    with pytest.raises(Exception, match="mul_tokens"):
        load_model(tmp_path / "hf-old", condition="baseline")
