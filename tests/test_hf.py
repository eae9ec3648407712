"""Hugging Face interop, checked against `transformers` itself: exported logits equal the
native model's, the square attn.c_proj is transposed, round trips are exact, and the reference
study's and OpenAI's GPT-2 layouts import with identical logits."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from domtok.errors import DomtokError
from domtok.model.checkpoint import load_model, save_model_dir
from domtok.model.gpt import GPT, GPTConfig
from domtok.model.hf import export_hf, import_hf

transformers = pytest.importorskip("transformers")

CFG = GPTConfig(block_size=64, vocab_size=192, n_layer=2, n_head=4, n_embd=32)


def random_model(seed=0, cfg=CFG):
    """A tiny model with every parameter perturbed (non-zero biases, LayerNorm gains != 1),
    so a bias or LayerNorm that is mapped wrongly shows up in the logits."""
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def hf_logits(hf_dir, ids):
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()  # default attn implementation
    with torch.no_grad():
        return hf(ids).logits


def test_export_matches_transformers_and_c_proj_transpose_matters(tmp_path):
    model = random_model()
    save_model_dir(model, None, tmp_path / "native")
    export_hf(tmp_path / "native", tmp_path / "hf")

    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["model_type"] == "gpt2"
    assert config["vocab_size"] == 192 and config["n_positions"] == 64 and config["n_ctx"] == 64
    assert config["activation_function"] == "gelu_new" and config["layer_norm_epsilon"] == 1e-5
    assert config["tie_word_embeddings"] is True
    assert (tmp_path / "hf" / "generation_config.json").exists()
    weights = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert weights["transformer.h.0.mlp.c_fc.weight"].shape == (32, 128)  # Conv1D (in, out)

    ids = torch.randint(0, CFG.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, _ = model(ids)
    diff = (hf_logits(tmp_path / "hf", ids) - ours).abs().max().item()
    assert diff < 1e-4

    # The reference exporter forgot to transpose the square attn.c_proj: nothing errors
    # (the shape fits either way), only the logits are wrong. This test would catch it.
    bad = dict(weights)
    for i in range(CFG.n_layer):
        k = f"transformer.h.{i}.attn.c_proj.weight"
        bad[k] = weights[k].t().contiguous()
    save_file(bad, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    bad_diff = (hf_logits(tmp_path / "hf", ids) - ours).abs().max().item()
    assert bad_diff > 1e-2


def test_round_trip_native_hf_native_is_exact(tmp_path):
    model = random_model(1)
    save_model_dir(model, None, tmp_path / "a", extra={"stage": "sft"})
    export_hf(tmp_path / "a", tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "b")
    back, _ = load_model(tmp_path / "b")
    assert back.config == model.config
    for (k, x), (_, y) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(x, y), k
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # load_model also reads the HF dir directly, converting on the fly
    direct, _ = load_model(tmp_path / "hf")
    assert torch.equal(direct.transformer.h[1].attn.c_proj.weight, model.transformer.h[1].attn.c_proj.weight)


def make_hf_dir(path, vocab, seed=0, openai_layout=False):
    """A GPT-2 dir written by transformers itself (random weights, tiny dims)."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=50256, eos_token_id=50256)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(path)
    if openai_layout:
        # OpenAI's original gpt2 files: no `transformer.` prefix, causal-mask buffers included
        sd = {k.removeprefix("transformer."): v.contiguous() for k, v in hf.state_dict().items()
              if k != "lm_head.weight"}
        for i in range(2):
            sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
        (path / "model.safetensors").unlink()
        torch.save(sd, path / "pytorch_model.bin")
    return hf


def compare_imported(hf, native, vocab):
    ids = torch.randint(0, vocab, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
        ours, _ = native(ids)
    assert ours.shape[-1] == 50368  # padded to the tokenizer layout's vocab
    assert (ours[..., :vocab] - ref).abs().max().item() < 1e-5
    assert torch.all(ours[..., vocab:] == 0)  # padding rows are zeros: logit exactly 0


def test_import_reference_layout_vocab_50349(tmp_path, gpt2_dir):
    hf = make_hf_dir(tmp_path / "ref", 50349)
    with pytest.raises(DomtokError, match="condition"):
        import_hf(tmp_path / "ref", tmp_path / "out")  # the files do not say which condition
    import_hf(tmp_path / "ref", tmp_path / "out", condition="mul_tokens")
    native, tok = load_model(tmp_path / "out")
    assert tok.condition == "mul_tokens" and tok.vocab_size == 50368
    assert tok.domain_ids["<MUL_6_9_54>"] == 50342
    compare_imported(hf, native, 50349)


def test_import_openai_layout(tmp_path, gpt2_dir):
    hf = make_hf_dir(tmp_path / "gpt2", 50257, seed=3, openai_layout=True)
    import_hf(tmp_path / "gpt2", tmp_path / "out")
    native, tok = load_model(tmp_path / "out")
    assert tok.condition == "baseline"
    compare_imported(hf, native, 50257)


def test_wrong_vocab_and_bad_dirs_raise_readable_errors(tmp_path):
    make_hf_dir(tmp_path / "big", 50400)
    with pytest.raises(DomtokError, match=r"config\.json.*vocab_size 50400.*(wrong vocabulary|condition)"):
        import_hf(tmp_path / "big", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # embedding rows that disagree with config.json
    cfg_path = tmp_path / "big" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_type"] = "llama"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(DomtokError, match="not 'gpt2'"):
        import_hf(tmp_path / "big", tmp_path / "out")
    with pytest.raises(DomtokError, match="not a domtok model dir"):
        export_hf(tmp_path / "big", tmp_path / "hf")


def test_wrong_vocab_with_tokenizer(tmp_path, gpt2_dir):
    make_hf_dir(tmp_path / "big", 50400)
    with pytest.raises(DomtokError, match=r"config\.json.*50400.*wrong vocabulary"):
        import_hf(tmp_path / "big", tmp_path / "out", condition="baseline")


def test_cli_export_and_import(tmp_path, capsys):
    from domtok.cli import main

    save_model_dir(random_model(2), None, tmp_path / "run" / "model")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").exists()
    assert main(["import", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_round_trip_with_tokenizer_keeps_condition(tmp_path, gpt2_dir):
    import domtok.tokens.tokenizer as tk
    tok = tk.load_tokenizer("gpt2", "mul_tokens", gpt2_dir=gpt2_dir)
    cfg = GPTConfig(block_size=32, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16)
    model = random_model(5, cfg)
    save_model_dir(model, tok, tmp_path / "a")
    export_hf(tmp_path / "a", tmp_path / "hf")
    assert (tmp_path / "hf" / "tokenizer.json").exists()  # HF tokenizer files beside the weights
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] == tok.eot_id
    import_hf(tmp_path / "hf", tmp_path / "b")  # no --condition needed: the export says
    back, tok2 = load_model(tmp_path / "b")
    assert tok2.condition == "mul_tokens"
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), back.state_dict().values()))
    with pytest.raises(DomtokError, match="condition"):
        import_hf(tmp_path / "hf", tmp_path / "c", condition="baseline")
