"""Hugging Face GPT-2 layout: every model dir domtok writes, export, import.

A model dir (`<stage>/model/`, `domtok export`, `domtok import`) is a `GPT2LMHeadModel` dir
as it is, so `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` load
it without a conversion step:

    model.safetensors       weights under HF GPT-2 names and shapes, tied head stored once
    config.json             GPT2Config keys (model_type gpt2) + domtok's own keys beside them:
                            "format": "domtok", "model": {GPTConfig}, condition, stage, seed, ...
    generation_config.json  eos = EOT; pad = the tokenizer's pad token (the same id)
    tokenizer files         tokenizer.json, tokenizer_config.json (with the chat template),
                            special_tokens_map.json, domtok_tokenizer.json
    README.md               model card (domtok.model.card)

Training checkpoints (`checkpoints/step_*`) keep the native layout (checkpoint.py): resume
reads them as before, and so does `load_model` for native model dirs written before this
layout.

The two weight layouts hold the same numbers under the same names with one difference: HF's
GPT-2 uses `Conv1D` layers whose weight is stored (in, out), the transpose of `nn.Linear`'s
(out, in). Every Conv1D weight must be transposed: c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj.
The reference study's exporter skipped `attn.c_proj`, which is square (n_embd x n_embd), so
nothing complained and the exported model was silently wrong. Here the list is explicit and
a test compares logits with `transformers` itself. A transpose is exact, so a model saved
and loaded again has bit-identical weights.

Only json and safetensors are used to write; `transformers` is needed only by the tests.

Foreign layouts that `import_hf` / `load_hf_dir` accept:
- exports of earlier domtok versions (a `domtok/` sidecar with the native config and the
  tokenizer, so native -> HF -> native is exact, whatever the tokenizer);
- the reference study's published models: vocab 50,349 with the mul tokens at 50,304-50,348;
  the embedding is padded with zero rows to the tokenizer's vocab (50,368); the tokenizer is
  the dir's own domtok tokenizer after `domtok tokenizer fix DIR --condition C`, else the
  gpt2 tokenizer of `condition`;
- OpenAI's `gpt2` (vocab 50,257, possibly without the `transformer.` prefix and with
  `attn.bias` mask buffers, possibly only `pytorch_model.bin`): padded the same way, baseline.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from domtok.errors import DomtokError
from domtok.model.checkpoint import (
    TOKENIZER_FILE, gpt_config_from_dict, load_model, load_native_state, load_tokenizer_from_dir, read_config,
    read_weights, save_model_dir, save_weights,
)
from domtok.model.gpt import GPT, GPTConfig

CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
SIDECAR = "domtok"  # subdir of an earlier domtok export: native config.json + tokenizer files


def is_conv1d(name: str) -> bool:
    return name.endswith(CONV1D_SUFFIXES)


def native_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Native (Linear) weights -> HF GPT-2 (Conv1D) weights; the tied head stays left out."""
    out = {}
    for k, v in state.items():
        if k == "lm_head.weight":
            continue
        out[k] = v.t().contiguous() if is_conv1d(k) else v.contiguous()
    return out


def hf_to_native(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """HF GPT-2 weights (with or without the `transformer.` prefix) -> native names and shapes."""
    out = {}
    for k, v in state.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of old GPT-2 checkpoints, not weights
        if k == "lm_head.weight":
            continue  # checked against wte below
        name = k if k.startswith("transformer.") else "transformer." + k
        out[name] = v.t().contiguous() if is_conv1d(name) else v
    if "lm_head.weight" in state and "transformer.wte.weight" in out:
        if not torch.equal(state["lm_head.weight"], out["transformer.wte.weight"]):
            raise DomtokError(f"{source}: lm_head.weight differs from the token embedding; domtok models tie "
                              "them, so this checkpoint cannot be imported")
    return out


def _read_hf_weights(hf_dir: Path) -> tuple[dict[str, torch.Tensor], str]:
    st = hf_dir / "model.safetensors"
    if st.exists():
        return read_weights(st), str(st)
    pt = hf_dir / "pytorch_model.bin"
    if pt.exists():
        try:
            return torch.load(pt, map_location="cpu", weights_only=True), str(pt)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
            raise DomtokError(f"{pt}: cannot load with weights_only=True ({e}); convert it to safetensors") from None
    raise DomtokError(f"{hf_dir}: no model.safetensors or pytorch_model.bin; point at a GPT-2 model dir")


def _tokenizer_for(vocab: int, condition: str | None, source: str):
    """The gpt2-base tokenizer of a condition, for HF dirs that carry no domtok tokenizer."""
    if condition is None:
        if vocab == 50257:
            condition = "baseline"  # OpenAI's gpt2 has no domain tokens
        else:
            raise DomtokError(f"{source}: vocab_size {vocab} holds domain-token ids but the files do not say "
                              "which condition trained it; pass --condition baseline|mul_tokens (sample, eval, "
                              "import) or write it into the dir once: domtok tokenizer fix DIR --condition C")
    from domtok.tokens.tokenizer import load_tokenizer

    return load_tokenizer("gpt2", condition)


def load_hf_dir(hf_dir: str | os.PathLike, condition: str | None = None):
    """(GPT, Tokenizer) from a Hugging Face GPT-2 dir (see the module docstring for layouts)."""
    hf_dir = Path(hf_dir)
    config = read_config(hf_dir)
    cfg_path = str(hf_dir / "config.json")
    if config.get("model_type") != "gpt2":
        raise DomtokError(f"{cfg_path}: model_type is {config.get('model_type')!r}, not 'gpt2'; only GPT-2 "
                          "checkpoints can be imported")
    if config.get("n_inner") not in (None, 4 * config.get("n_embd", 0)) or \
            config.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise DomtokError(f"{cfg_path}: n_inner/activation_function differ from GPT-2's; not importable")
    hf_vocab = int(config["vocab_size"])
    state, weights_src = _read_hf_weights(hf_dir)
    state = hf_to_native(state, weights_src)

    sidecar = hf_dir / SIDECAR
    if (sidecar / "config.json").exists():  # written by export_hf: exact native config and tokenizer
        native = read_config(sidecar)
        cfg = gpt_config_from_dict(native["model"], str(sidecar / "config.json"))
        tokenizer = load_tokenizer_from_dir(sidecar)
        if condition is not None and tokenizer is not None and tokenizer.condition != condition:
            raise DomtokError(f"{sidecar}: this export is condition {tokenizer.condition!r}, not {condition!r}; "
                              "drop --condition or pick the matching model")
    else:
        if (hf_dir / TOKENIZER_FILE).exists():  # `domtok tokenizer fix DIR --condition C` wrote it
            tokenizer = load_tokenizer_from_dir(hf_dir)
            if condition is not None and tokenizer.condition != condition:
                raise DomtokError(f"{hf_dir / TOKENIZER_FILE}: this dir's tokenizer is condition "
                                  f"{tokenizer.condition!r}, not {condition!r}; drop --condition or fix the dir "
                                  f"with `domtok tokenizer fix {hf_dir} --condition {condition} --force`")
        else:
            tokenizer = _tokenizer_for(hf_vocab, condition, cfg_path)
        cfg = GPTConfig(block_size=int(config.get("n_positions", config.get("n_ctx", 1024))),
                        vocab_size=tokenizer.vocab_size, n_layer=int(config["n_layer"]),
                        n_head=int(config["n_head"]), n_embd=int(config["n_embd"]))
    if tokenizer is not None and hf_vocab > tokenizer.vocab_size:
        raise DomtokError(f"{cfg_path}: vocab_size {hf_vocab} is larger than the tokenizer's {tokenizer.vocab_size} "
                          "(wrong vocabulary); import with the tokenizer this model was trained with")
    wte = state.get("transformer.wte.weight")
    if wte is not None and wte.shape[0] != hf_vocab:
        raise DomtokError(f"{weights_src}: token embedding has {wte.shape[0]} rows but config.json says "
                          f"vocab_size {hf_vocab}; the files do not belong together")
    if wte is not None and wte.shape[0] < cfg.vocab_size:
        # ids past the HF vocab are padding/reserved in our layout: zero rows (logit exactly 0)
        pad = torch.zeros(cfg.vocab_size - wte.shape[0], wte.shape[1], dtype=wte.dtype)
        state["transformer.wte.weight"] = torch.cat([wte, pad], 0)
    state = {k: v.float() for k, v in state.items()}  # domtok keeps fp32 master weights

    with torch.device("meta"):
        model = GPT(cfg)
    model = model.to_empty(device="cpu")
    model.lm_head.weight = model.transformer.wte.weight
    load_native_state(model, state, weights_src)
    return model.eval(), tokenizer


def import_hf(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, condition: str | None = None) -> Path:
    """A domtok model dir (with its tokenizer) from any GPT-2 dir `load_model` reads."""
    model, tokenizer = load_model(hf_dir, condition=condition)
    return save_model_dir(model, tokenizer, out_dir, extra={"imported_from": str(Path(hf_dir).resolve())},
                          only_own=True)


def hf_config(cfg: GPTConfig, eot_id: int | None, pad_id: int | None = None) -> dict:
    """A GPT2Config dict for `cfg` (field names as transformers writes them)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,  # the padded model vocab: rows past the tokenizer are never produced
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",  # GELU, tanh approximation
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "pad_token_id": pad_id,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def write_model_files(dst: Path, state: dict[str, torch.Tensor], cfg: GPTConfig, tokenizer, meta: dict) -> None:
    """The files of a model dir (module docstring) from native weights, into `dst`.

    `meta`: domtok's keys for config.json (stage, seed, data, config_hash, ...)."""
    eot_id = tokenizer.eot_id if tokenizer is not None else meta.get("eot_id")
    # pad is a padding token, never EOT (pad == eos masked every EOS label in the reference);
    # the tokenizer and generation_config.json name the same id
    pad_id = tokenizer.pad_id if tokenizer is not None else eot_id
    save_weights(native_to_hf(state), dst / "model.safetensors")
    config = {**hf_config(cfg, eot_id, pad_id), "format": "domtok", "model": asdict(cfg)}
    if tokenizer is not None:
        config.update(condition=tokenizer.condition, tokenizer_base=tokenizer.base, eot_id=tokenizer.eot_id)
        tokenizer.save(dst)
    config.update(meta)
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # no max_length: transformers warns when it is set beside generate(max_new_tokens=...);
    # the context length is config.json's n_positions
    gen = {"bos_token_id": eot_id, "eos_token_id": eot_id, "pad_token_id": pad_id}
    (dst / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    from domtok.model.card import model_card

    (dst / "README.md").write_text(model_card(config))


def export_hf(src: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """A model dir (the layout above) from any domtok model dir or complete training checkpoint."""
    src = Path(src)
    config = read_config(src)
    is_checkpoint = (src / "trainer_state.json").exists() or (src / "optimizer.pt").exists()
    if is_checkpoint and not (src / "COMPLETE").exists():
        raise DomtokError(f"{src}: training checkpoint without its COMPLETE marker (a save was cut short); "
                          "export the run's model/ or its latest complete checkpoint instead")
    if config.get("format") != "domtok":
        raise DomtokError(f"{src / 'config.json'}: not a domtok model dir or checkpoint; export reads what "
                          "`domtok pretrain`/`sft` write (use `domtok import` for Hugging Face dirs)")
    model, tokenizer = load_model(src)  # checks the weights against config.json before anything is written
    hf_keys = set(hf_config(model.config, None))
    meta = {k: v for k, v in config.items() if k not in hf_keys and k not in ("format", "model", "step")}
    return save_model_dir(model, tokenizer, out_dir, extra=meta, only_own=True)
