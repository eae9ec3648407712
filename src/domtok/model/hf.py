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

import os
from pathlib import Path

from domtok.errors import DomtokError
from domtok.model.checkpoint import hf_config, load_model, read_config, save_model_dir


def import_hf(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, condition: str | None = None) -> Path:
    """A domtok model dir (with its tokenizer) from any GPT-2 dir `load_model` reads."""
    model, tokenizer = load_model(hf_dir, condition=condition)
    return save_model_dir(model, tokenizer, out_dir, extra={"imported_from": str(Path(hf_dir).resolve())},
                          only_own=True)


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
