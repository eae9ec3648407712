"""The GPT model: KV cache equals a full forward (also left-padded and after select), init,
loss masking, FLOPs formula, param groups, and the native model dir / training checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from domtok.errors import DomtokError
from domtok.model.gpt import GPT, GPTConfig, KVCache, PRESETS, config_from_preset, optimizer_param_groups

CFG = GPTConfig(block_size=64, vocab_size=128, n_layer=2, n_head=4, n_embd=32)


def tiny_model(seed=0, cfg=CFG):
    torch.manual_seed(seed)
    return GPT(cfg).eval()


def test_incremental_decoding_matches_full_forward():
    model = tiny_model()
    idx = torch.randint(0, CFG.vocab_size, (3, 14))
    with torch.no_grad():
        full, _ = model(idx)
        cache = KVCache(CFG, 3, 20, "cpu", torch.float32)
        steps = [model(idx[:, :6], kv_cache=cache)[0]]
        for t in range(6, 14):
            steps.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    assert cache.length == 14
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


def test_left_padded_batch_with_cache_matches_unpadded_rows():
    model = tiny_model(1)
    lengths = [9, 5, 2]
    total = 12  # prompt (left-padded to 9) + 3 decoded tokens
    seqs = [torch.randint(0, CFG.vocab_size, (n + 3,)) for n in lengths]
    P = max(lengths)
    idx = torch.zeros(3, P, dtype=torch.long)
    key_mask = torch.zeros(3, P, dtype=torch.bool)
    positions = torch.zeros(3, P, dtype=torch.long)
    for r, (n, s) in enumerate(zip(lengths, seqs)):
        idx[r, P - n:] = s[:n]
        key_mask[r, P - n:] = True
        positions[r, P - n:] = torch.arange(n)
    with torch.no_grad():
        cache = KVCache(CFG, 3, total, "cpu", torch.float32)
        prefill, _ = model(idx, kv_cache=cache, positions=positions, key_mask=key_mask)
        decoded = []
        for k in range(3):
            step_ids = torch.stack([s[n + k] for n, s in zip(lengths, seqs)]).view(3, 1)
            pos = torch.tensor([[n + k] for n in lengths])
            decoded.append(model(step_ids, kv_cache=cache, positions=pos)[0])
        for r, (n, s) in enumerate(zip(lengths, seqs)):
            ref, _ = model(s.view(1, -1))
            assert torch.isfinite(prefill).all()
            torch.testing.assert_close(prefill[r, P - n:], ref[0, :n], atol=1e-5, rtol=0)
            got = torch.cat([d[r] for d in decoded], 0)
            torch.testing.assert_close(got, ref[0, n:], atol=1e-5, rtol=0)
        # the same left-padded batch without a cache (evaluation scoring) agrees too
        nocache, _ = model(idx, positions=positions, key_mask=key_mask)
        torch.testing.assert_close(nocache[key_mask], prefill[key_mask], atol=1e-5, rtol=0)


def test_padding_keys_are_never_attended():
    # changing the token under a padding position must not change any real position's logits
    model = tiny_model(2)
    idx = torch.randint(0, CFG.vocab_size, (1, 8))
    key_mask = torch.ones(1, 8, dtype=torch.bool)
    key_mask[0, :3] = False
    positions = torch.tensor([[0, 0, 0, 0, 1, 2, 3, 4]])
    other = idx.clone()
    other[0, :3] = (other[0, :3] + 7) % CFG.vocab_size
    with torch.no_grad():
        a, _ = model(idx, positions=positions, key_mask=key_mask)
        b, _ = model(other, positions=positions, key_mask=key_mask)
    torch.testing.assert_close(a[0, 3:], b[0, 3:], atol=1e-6, rtol=0)
    assert (a[0, :3] - b[0, :3]).abs().max() > 1e-3  # the test can see a difference


def test_select_repeats_and_drops_rows():
    model = tiny_model(3)
    prompt = torch.randint(0, CFG.vocab_size, (1, 5))
    conts = torch.randint(0, CFG.vocab_size, (4, 3))
    with torch.no_grad():
        cache = KVCache(CFG, 1, 10, "cpu", torch.float32)
        model(prompt, kv_cache=cache)
        cache.select(torch.tensor([0, 0, 0, 0]))  # one prefill, four samples
        assert cache.batch_size == 4
        out1, _ = model(conts[:, :1], kv_cache=cache)
        cache.select(torch.tensor([3, 1]))  # rows 0 and 2 finished; reorder the rest
        out2, _ = model(conts[[3, 1], 1:2], kv_cache=cache)
        full, _ = model(torch.cat([prompt.expand(4, 5), conts], 1))
    torch.testing.assert_close(out1[:, 0], full[:, 5], atol=1e-5, rtol=0)
    torch.testing.assert_close(out2[:, 0], full[[3, 1], 6], atol=1e-5, rtol=0)


def test_last_only_and_overflow():
    model = tiny_model()
    idx = torch.randint(0, CFG.vocab_size, (2, 10))
    with torch.no_grad():
        full, _ = model(idx)
        last, _ = model(idx, last_only=True)
    assert last.shape == (2, 1, CFG.vocab_size)
    torch.testing.assert_close(last[:, 0], full[:, -1])
    with pytest.raises(ValueError):
        model(torch.zeros(1, CFG.block_size + 1, dtype=torch.long))
    cache = KVCache(CFG, 1, 4, "cpu", torch.float32)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 5, dtype=torch.long), kv_cache=cache)


def test_loss_ignores_minus_100_and_is_fp32_mean_ce():
    model = tiny_model()
    idx = torch.randint(0, CFG.vocab_size, (2, 8))
    targets = torch.randint(0, CFG.vocab_size, (2, 8))
    targets[0, :4] = -100
    logits, loss = model(idx, targets)
    keep = targets != -100
    ref = F.cross_entropy(logits[keep].double(), targets[keep])
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 1e-5
    # ignored positions really are ignored: changing their targets changes nothing
    t2 = targets.clone()
    t2[0, :4] = -100
    assert model(idx, t2)[1].item() == loss.item()


def test_init_and_tied_weights():
    cfg = GPTConfig(block_size=32, vocab_size=256, n_layer=8, n_head=4, n_embd=256)
    model = tiny_model(0, cfg)
    assert model.lm_head.weight is model.transformer.wte.weight
    std_fc = model.transformer.h[0].mlp.c_fc.weight.std().item()
    std_proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h]).std().item()
    assert abs(std_fc - 0.02) < 0.001
    assert abs(std_proj - 0.02 / 4) < 0.0005  # (2 * 8) ** -0.5 = 1/4
    assert model.transformer.h[0].attn.c_attn.bias.abs().max() == 0


def test_presets_param_counts_and_flops():
    tiny = GPT(config_from_preset("tiny", vocab_size=4096))
    assert 0.5e6 < tiny.num_params(non_embedding=False) < 2e6
    cfg = config_from_preset("gpt2-124m", vocab_size=50257)
    assert PRESETS["gpt2-124m"].vocab_size == 50368  # the preset itself is not mutated
    with torch.device("meta"):
        m = GPT(cfg)
    # OpenAI's GPT-2 small has 124,439,808 parameters (tied head counted once)
    assert m.num_params(non_embedding=False) == 124_439_808
    n_nonemb = 124_439_808 - 50257 * 768 - 1024 * 768
    assert m.num_params() == n_nonemb
    T = 1024
    assert m.flops_per_token(T) == 6 * (n_nonemb + 50257 * 768) + 12 * 12 * 768 * T
    from domtok.train.common import mfu
    assert mfu(m.flops_per_token(T), 1000.0, "cpu", peak_flops=1e12) == pytest.approx(m.flops_per_token(T) * 1000 / 1e12)
    with pytest.raises(DomtokError):
        config_from_preset("gpt2-7b")


def test_param_groups_decay_only_matrices():
    model = tiny_model()
    groups = optimizer_param_groups(model, 0.1)
    decay, no_decay = groups[0]["params"], groups[1]["params"]
    assert all(p.dim() >= 2 for p in decay) and all(p.dim() < 2 for p in no_decay)
    assert sum(p.numel() for g in groups for p in g["params"]) == model.num_params(non_embedding=False)
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0


def test_same_seed_same_model_and_training_step():
    def step(seed):
        model = tiny_model(seed)
        model.train()
        opt = torch.optim.AdamW(optimizer_param_groups(model, 0.1), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        idx = torch.randint(0, CFG.vocab_size, (2, 16), generator=g)
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        opt.step()
        return loss.item(), model.transformer.wte.weight.detach().clone()

    (l1, w1), (l2, w2) = step(5), step(5)
    assert l1 == l2 and torch.equal(w1, w2)
    assert step(6)[0] != l1


# ---------------------------------------------------------------------------- model dirs, checkpoints

from domtok.model.checkpoint import (  # noqa: E402
    latest_checkpoint, load_checkpoint, load_model, save_checkpoint, save_model_dir,
)


def test_model_dir_round_trip_is_exact_and_retied(tmp_path):
    model = tiny_model(4)
    save_model_dir(model, None, tmp_path / "m", extra={"stage": "pretrain"})
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["format"] == "domtok" and cfg["model"]["n_embd"] == 32 and cfg["stage"] == "pretrain"
    from safetensors.torch import load_file

    assert "lm_head.weight" not in load_file(str(tmp_path / "m" / "model.safetensors"))  # stored once
    loaded, tok = load_model(tmp_path / "m")
    assert tok is None and not loaded.training
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    # no temp dirs left behind, and saving again replaces the dir
    save_model_dir(tiny_model(5), None, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert not torch.equal(load_model(tmp_path / "m")[0].transformer.wte.weight, model.transformer.wte.weight)


def test_model_dir_shape_mismatch_names_file(tmp_path):
    save_model_dir(tiny_model(), None, tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["vocab_size"] = 192
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(DomtokError, match=r"model\.safetensors.*transformer\.wte\.weight.*vocab"):
        load_model(tmp_path / "m")
    with pytest.raises(DomtokError, match="config.json: not found"):
        load_model(tmp_path / "nowhere")


def test_failed_save_leaves_nothing(tmp_path):
    class Boom:
        vocab_size = CFG.vocab_size
        condition, base, eot_id, pad_id = "baseline", "fake", 0, 1

        def save(self, d):
            raise RuntimeError("disk full")

    save_model_dir(tiny_model(), None, tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    with pytest.raises(RuntimeError):
        save_model_dir(tiny_model(9), Boom(), tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # old dir intact, no temp dir
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before


def test_checkpoints_resume_exactly_and_keep_last(tmp_path):
    def make():
        model = tiny_model(7)
        model.train()
        return model, torch.optim.AdamW(optimizer_param_groups(model, 0.1), lr=1e-2)

    def train_step(model, opt, step):
        g = torch.Generator().manual_seed(step)
        idx = torch.randint(0, CFG.vocab_size, (2, 9), generator=g)
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    model, opt = make()
    ref = [train_step(model, opt, s) for s in range(6)]

    model, opt = make()
    for s in range(4):
        train_step(model, opt, s)
        save_checkpoint(tmp_path, model, opt, {"step": s + 1, "data": {"pos": s}}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000003", "step_000004"]
    # an incomplete newer checkpoint (killed mid-write by another tool) is ignored
    (tmp_path / "checkpoints" / "step_000005").mkdir()
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step_000004" and latest_checkpoint(tmp_path / "checkpoints") == latest
    with pytest.raises(DomtokError, match="incomplete"):
        load_checkpoint(tmp_path / "checkpoints" / "step_000005", model)

    model2, opt2 = make()
    state = load_checkpoint(latest, model2, opt2)
    assert state == {"step": 4, "data": {"pos": 3}}
    resumed = [train_step(model2, opt2, s) for s in range(4, 6)]
    assert resumed == ref[4:]  # bit-identical continuation (optimizer moments restored)
    # a checkpoint is also a model dir
    loaded, _ = load_model(latest)
    assert loaded.config == CFG
    assert latest_checkpoint(tmp_path / "empty") is None


def test_model_dir_with_real_tokenizer(tmp_path, gpt2_dir):
    import domtok.tokens.tokenizer as tk
    tok = tk.load_tokenizer("gpt2", "mul_tokens", gpt2_dir=gpt2_dir)
    cfg = GPTConfig(block_size=32, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16)
    save_model_dir(tiny_model(0, cfg), tok, tmp_path / "m")
    model, tok2 = load_model(tmp_path / "m")
    assert tok2.vocab_size == tok.vocab_size and tok2.condition == "mul_tokens"
    assert tok2.encode("6*9=54 apples") == tok.encode("6*9=54 apples")
    # a tokenizer of another size is refused with the file named
    wrong = GPTConfig(block_size=32, vocab_size=tok.vocab_size + 64, n_layer=1, n_head=2, n_embd=16)
    with pytest.raises(DomtokError, match="vocab_size"):
        save_model_dir(tiny_model(0, wrong), tok, tmp_path / "w")


def test_gpu_peak_table_matches_device_names_in_order():
    """One table (`domtok.gpus`) serves MFU and the smoke's projection; "L40S" must not read as
    "L4", and the PCIe H100's lower clock is its own entry."""
    from domtok.gpus import peak_flops_by_name

    assert peak_flops_by_name("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_by_name("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_by_name("NVIDIA L40S") == 362e12
    assert peak_flops_by_name("NVIDIA L4") == 121e12
    assert peak_flops_by_name("Tesla T4") is None
