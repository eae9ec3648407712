"""Model directories and training checkpoints on disk.

A model dir is what every stage hands to the next. `save_model_dir` writes it in the Hugging
Face GPT-2 layout (described in domtok.model.hf's docstring; the conversion is here, so this
module never imports hf.py: transformers loads the dir as it is); `load_model` reads that,
foreign GPT-2 dirs, and the native layout below, which training checkpoints keep and model
dirs of earlier domtok versions have:

    model.safetensors   weights under native (nanoGPT) names; the tied output head is stored
                        once, as transformer.wte.weight, and re-tied on load
    config.json         {"format": "domtok", "model": {GPTConfig fields}, "condition", ...}
    tokenizer files     written by Tokenizer.save (domtok_tokenizer.json + base + HF files)

A training checkpoint `checkpoints/step_000100/` is a native model dir plus `optimizer.pt`,
`trainer_state.json` (step, data position, RNG states: whatever the trainer passes) and a
`COMPLETE` marker. Every directory is written under a temporary name and renamed into place,
so a killed process leaves either the old state or the new one, never half of one; the
marker is belt and braces for copies made with tools that do not rename atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from domtok.errors import DomtokError
from domtok.model.gpt import GPT, GPTConfig
from domtok.utils import read_json_object, short_json

TOKENIZER_FILE = "domtok_tokenizer.json"  # written by Tokenizer.save; marks a dir with a tokenizer
STEP_PREFIX = "step_"


# ---------------------------------------------------------------------------- atomic dirs

@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, only_own: bool = False):
    """Yield a temporary sibling directory; on success it replaces `path` as a whole.

    only_own: `path` is a directory the user chose (export, import, tokenizer build --force);
    replacing it may delete only files the new output writes again. Any other file there (the
    user's notes, a whole run directory) is named in an error and nothing is replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if only_own and path.is_dir():
            from domtok.outdir import refuse_foreign

            refuse_foreign(path, _relative_files(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():  # rename cannot replace a non-empty directory: move the old one aside
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _relative_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------------------- state dicts

def unwrap(model: torch.nn.Module) -> GPT:
    """The plain GPT inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def native_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights to save: contiguous CPU tensors, the tied head left out (it is wte)."""
    sd = unwrap(model).state_dict()
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items() if k != "lm_head.weight"}


def load_native_state(model: GPT, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model`, with a readable error for missing, extra or misshapen tensors."""
    model = unwrap(model)
    expected = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected) - {"lm_head.weight"})
    if missing or extra:
        raise DomtokError(f"{source}: weights do not match the model in config.json (missing {missing[:5]}, "
                          f"unexpected {extra[:5]}); re-export the model or fix config.json")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            hint = ("the vocabulary differs from the model's vocab_size; use the tokenizer the model was "
                    "trained with" if k == "transformer.wte.weight" else "config.json does not describe these weights")
            raise DomtokError(f"{source}: {k} has shape {tuple(state[k].shape)}, model expects {tuple(v.shape)}; {hint}")
    with torch.no_grad():
        for k, v in expected.items():
            v.copy_(state[k])
    # the head is tied to wte by construction; copying into wte updated both


def read_config(model_dir: str | os.PathLike) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise DomtokError(f"{path}: not found; point at a model dir written by domtok (or a Hugging Face GPT-2 dir)")
    config = read_json_object(path, "re-save or re-export the model")
    if config.get("format") == "domtok" and not isinstance(config.get("model"), dict):
        raise DomtokError(f"{path}: `model` must be an object of GPT fields, got {short_json(config.get('model'))}; "
                          "re-save or re-export the model")
    return config


def gpt_config_from_dict(d: dict, source: str) -> GPTConfig:
    names = {f.name for f in fields(GPTConfig)}
    unknown = set(d) - names
    if unknown:
        raise DomtokError(f"{source}: unknown model fields {sorted(unknown)}; expected {sorted(names)}")
    return GPTConfig(**d)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise DomtokError(f"{path}: not found; the model dir is incomplete, re-save or re-export it")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise DomtokError(f"{path}: cannot read safetensors ({e}); re-save the model") from None


# ---------------------------------------------------------------------------- model dirs

def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors file with the mode of every other file we write (safetensors itself creates
    0600, which hides a shared model from the other users of a machine)."""
    save_file(state, str(path), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _check_vocab(dst: Path, cfg: GPTConfig, tokenizer) -> None:
    if tokenizer is not None and tokenizer.vocab_size != cfg.vocab_size:
        raise DomtokError(f"{dst}: tokenizer vocab_size {tokenizer.vocab_size} != model vocab_size "
                          f"{cfg.vocab_size}; build the model with GPTConfig(vocab_size=tokenizer.vocab_size)")


def _write_model_files(dst: Path, model: torch.nn.Module, tokenizer, extra: dict | None) -> None:
    """A native model dir's files (training checkpoints)."""
    cfg = unwrap(model).config
    _check_vocab(dst, cfg, tokenizer)
    save_weights(native_state_dict(model), dst / "model.safetensors")
    config = {"format": "domtok", "model": asdict(cfg)}
    if tokenizer is not None:
        config.update(condition=tokenizer.condition, tokenizer_base=tokenizer.base, eot_id=tokenizer.eot_id)
        tokenizer.save(dst)
    config.update(extra or {})
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")


# ---------------------------------------------------------------------------- the Hugging Face GPT-2 layout
# (model dirs; the layouts are described in domtok.model.hf's docstring)

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


def save_model_dir(model: torch.nn.Module, tokenizer, dir: str | os.PathLike, extra: dict | None = None,
                   only_own: bool = False) -> Path:
    """Write a model dir (Hugging Face GPT-2 layout, see domtok.model.hf) atomically. `extra`
    adds keys to config.json (stage, seed, data, ...) and to the model card; `only_own` as in
    `atomic_dir` (a directory the user chose: export, import)."""
    dir = Path(dir)
    cfg = unwrap(model).config
    _check_vocab(dir, cfg, tokenizer)
    with atomic_dir(dir, only_own=only_own) as tmp:
        write_model_files(tmp, native_state_dict(model), cfg, tokenizer, dict(extra or {}))
    return dir


def load_tokenizer_from_dir(dir: Path):
    """The Tokenizer saved in a model dir, or None when it has no tokenizer files."""
    if not (dir / TOKENIZER_FILE).exists():
        return None
    from domtok.tokens.tokenizer import Tokenizer

    return Tokenizer.load(dir)


def load_model(dir: str | os.PathLike, device="cpu", condition: str | None = None):
    """(GPT, Tokenizer) from a domtok model dir (either layout), a training checkpoint, or a
    foreign Hugging Face GPT-2 dir (converted on the fly; `condition` picks its tokenizer when
    the files cannot tell, and must agree with a domtok dir's own). The model is in eval mode;
    the tokenizer is None if the dir has none."""
    dir = Path(dir)
    config = read_config(dir)
    if "model_type" in config and config.get("format") != "domtok":  # a foreign HF dir
        model, tokenizer = load_hf_dir(dir, condition=condition)
        return model.to(device).eval(), tokenizer
    if config.get("format") != "domtok" or "model" not in config:
        raise DomtokError(f"{dir / 'config.json'}: neither a domtok model dir (\"format\": \"domtok\") nor a "
                          "Hugging Face GPT-2 dir (\"model_type\": \"gpt2\"); point at a model dir")
    cfg = gpt_config_from_dict(config["model"], str(dir / "config.json"))
    tokenizer = load_tokenizer_from_dir(dir)
    if tokenizer is not None and tokenizer.vocab_size != cfg.vocab_size:
        raise DomtokError(f"{dir / TOKENIZER_FILE}: tokenizer vocab_size {tokenizer.vocab_size} != model "
                          f"vocab_size {cfg.vocab_size} in config.json; the tokenizer files belong to another model, "
                          "re-save the model dir with its own tokenizer")
    # Both conditions share one id layout, so the vocab sizes agree even when the files do not:
    # a baseline model with a mul_tokens tokenizer would be evaluated (injected) as mul_tokens.
    trained_as = config.get("condition")
    if tokenizer is not None and isinstance(trained_as, str) and trained_as != tokenizer.condition:
        raise DomtokError(f"{dir / TOKENIZER_FILE}: a {tokenizer.condition} tokenizer, but config.json says the weights "
                          f"were trained as {trained_as}; the files disagree: restore them with `domtok tokenizer fix "
                          f"{dir} --condition {trained_as} --force`")
    if condition is not None and tokenizer is not None and tokenizer.condition != condition:
        raise DomtokError(f"{dir}: holds a {tokenizer.condition} model, not {condition}; drop --condition or "
                          "pick the matching model")
    state = read_weights(dir / "model.safetensors")
    if config.get("model_type") == "gpt2":  # the HF layout save_model_dir writes
        state = hf_to_native(state, str(dir / "model.safetensors"))
    with torch.device("meta"):
        model = GPT(cfg)  # no random init of weights we are about to overwrite
    model = model.to_empty(device="cpu")
    model.lm_head.weight = model.transformer.wte.weight  # to_empty keeps the tie, make it explicit
    load_native_state(model, state, str(dir / "model.safetensors"))
    return model.to(device).eval(), tokenizer


# ---------------------------------------------------------------------------- training checkpoints

def _checkpoints_root(dir: str | os.PathLike) -> Path:
    """Accept either a run dir (checkpoints go in dir/checkpoints) or the checkpoints dir itself."""
    dir = Path(dir)
    return dir if dir.name == "checkpoints" else dir / "checkpoints"


def list_checkpoints(dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = _checkpoints_root(dir)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir()
            if p.is_dir() and p.name.startswith(STEP_PREFIX) and p.name[len(STEP_PREFIX):].isdigit()
            and (p / "COMPLETE").exists()]
    return sorted(done, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def latest_checkpoint(dir: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(dir)
    return ckpts[-1] if ckpts else None


def save_checkpoint(dir: str | os.PathLike, model: torch.nn.Module, optimizer, trainer_state: dict,
                    tokenizer=None, keep_last: int | None = None) -> Path:
    """Write `<dir>/checkpoints/step_{step:06d}/` (step from trainer_state["step"]) atomically,
    `COMPLETE` last; then delete all but the newest `keep_last` complete checkpoints."""
    if "step" not in trainer_state:
        raise ValueError("trainer_state needs a 'step'")
    root = _checkpoints_root(dir)
    path = root / f"{STEP_PREFIX}{int(trainer_state['step']):06d}"
    with atomic_dir(path) as tmp:
        _write_model_files(tmp, model, tokenizer, {"step": int(trainer_state["step"])})
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2) + "\n")
        (tmp / "COMPLETE").write_text("ok\n")
    if keep_last is not None and keep_last > 0:
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer=None, map_location="cpu") -> dict:
    """Restore model (and optimizer) in place from a checkpoint dir; returns trainer_state."""
    path = Path(path)
    if not (path / "COMPLETE").exists():
        raise DomtokError(f"{path}: checkpoint is incomplete (no COMPLETE marker); resume from latest_checkpoint()")
    load_native_state(model, read_weights(path / "model.safetensors"), str(path / "model.safetensors"))
    if optimizer is not None:
        opt_path = path / "optimizer.pt"
        if not opt_path.exists():
            raise DomtokError(f"{opt_path}: not found; this checkpoint has no optimizer state")
        optimizer.load_state_dict(torch.load(opt_path, map_location=map_location, weights_only=True))
    return json.loads((path / "trainer_state.json").read_text())
