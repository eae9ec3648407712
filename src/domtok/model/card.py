"""The model card (README.md) of a model dir: what the model is and how to load it.

Written by every model dir save (from the facts its config.json holds: condition, stage,
seed, data, config hash) and rewritten by `domtok hub push` with the evaluation results the
run has for that model. It says only what domtok knows: a fact that was not recorded is
left out, never guessed.
"""

from __future__ import annotations

CONDITIONS = {
    "baseline": "baseline: GPT-2's vocabulary; the domain-token ids are reserved and never produced",
    "mul_tokens": "mul_tokens: trained on text where single-digit products are written as one token "
                  "`<MUL_a_b_c>` (45 facts, ids 50304-50348 with the gpt2 base)",
}


def model_card(config: dict, results: dict | None = None, name: str | None = None,
               load_path: str = "PATH") -> str:
    """README.md text for a model dir whose config.json is `config`.

    `results`: {benchmark: {metric: value}} from the run's evaluations of this model, if any.
    `load_path`: what to pass to from_pretrained in the example (a Hub repo id once pushed)."""
    condition = config.get("condition")
    stage = config.get("stage")
    title = name or " ".join(str(x) for x in ("domtok", condition, stage) if x)
    facts = [
        ("condition", CONDITIONS.get(condition, condition)),
        ("stage", stage),
        ("seed", config.get("seed")),
        ("data", config.get("data")),
        ("trained from", config.get("model_in")),
        ("imported from", config.get("imported_from")),
        ("tokenizer base", config.get("tokenizer_base")),
        ("architecture", _arch(config.get("model") or {})),
        ("domtok config hash", config.get("config_hash")),
    ]
    lines = ["---", "library_name: transformers", "tags: [domtok, gpt2]", "---", "", f"# {title}", "",
             "A GPT-2-class causal LM written by domtok (domain-token experiments on GPT-2-class LMs).", "",
             "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in facts if v not in (None, "", {})]
    if results:
        lines += ["", "## Results", "", "| benchmark | metric | value |", "|---|---|---:|"]
        for bench, metrics in sorted(results.items()):
            for metric, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    lines.append(f"| {bench} | {metric} | {value:.4f} |")
    else:
        lines += ["", "No evaluation results: this card was written with the model, before any evaluation; "
                      "`domtok hub push` writes the run's results of the model into the card it uploads."]
    lines += [
        "", "## How to load", "",
        "The chat format is `User: {question}\\nAssistant: {answer}<|endoftext|>`; the tokenizer's chat "
        "template renders it.", "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tok = AutoTokenizer.from_pretrained("{load_path}")',
        f'model = AutoModelForCausalLM.from_pretrained("{load_path}")',
        'ids = tok.apply_chat_template([{"role": "user", "content": "What is 7 times 8?"}],',
        '                              add_generation_prompt=True, return_tensors="pt", return_dict=False)',
        "out = model.generate(ids, max_new_tokens=64, do_sample=False, pad_token_id=tok.pad_token_id)",
        "print(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))",
        "```", "",
        f"With domtok: `domtok sample --model {load_path} --question \"What is 7 times 8?\"`.",
    ]
    if condition and condition != "baseline":
        lines += ["", "This model saw its domain tokens in its training text; `domtok inject` rewrites text "
                      "into that notation."]
    return "\n".join(lines) + "\n"


def _arch(model: dict) -> str | None:
    if not model:
        return None
    return (f"{model.get('n_layer')} layers, {model.get('n_head')} heads, d={model.get('n_embd')}, "
            f"context {model.get('block_size')}, vocab {model.get('vocab_size')}")
