"""Numbers for the post-training note, on a tiny model, CPU, ~1-2 minutes.

1. a random-init tiny GPT (4 layers, 128 wide) over a 384-id BPE trained on synthetic text;
2. SFT on arithmetic drills (tier1 add/sub, tier2 = the 1-digit multiplication table):
   EOS rate and accuracy on held-out drill questions (greedy, 24 tokens) before and after;
3. GRPO (binary reward, temperature 1.5) from the SFT model on 16 multiplication prompts:
   sampled reward on those prompts before/after, and the training reward per step.
Prints one JSON line. Usage: python benchmarks/posttrain_tiny.py [OUT_DIR] [--quick]
(--quick: 1 SFT epoch on 300 drills and 3 GRPO steps; proves the script runs, for CI.)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def main(out: Path, quick: bool = False) -> dict:
    from domtok.chat import qa_messages, render_conversation_text, render_prompt
    from domtok.data.drills import drills
    from domtok.data.gsm_sbs import gsm_sbs
    from domtok.engine import Engine, SamplingParams
    from domtok.eval.gsm8k import is_correct
    from domtok.notation import parse_gold
    from domtok.model.checkpoint import load_model, save_model_dir
    from domtok.model.gpt import GPT, config_from_preset
    from domtok.tokens.build import train_bpe
    from domtok.tokens.tokenizer import load_tokenizer
    from domtok.train import grpo, sft
    from domtok.train.rewards import RewardConfig
    from domtok.train.sft_data import DataSource

    t0 = time.time()
    recs = drills("tier1", 300, 1) + drills("tier2", 300, 2) + gsm_sbs(100, 3)
    train_bpe([render_conversation_text(qa_messages(r["question"], r["answer"])) for r in recs], 384, out / "bpe")
    tok = load_tokenizer(str(out / "bpe"), "baseline")
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", vocab_size=tok.vocab_size, block_size=128))
    save_model_dir(model, tok, out / "init")

    held = drills("tier1", 50, seed=99) + drills("tier2", 50, seed=98)

    def probe(model_dir):
        m, t = load_model(model_dir)
        gens = Engine(m, t).generate([render_prompt(r["question"]) for r in held],
                                     SamplingParams(max_new_tokens=24, temperature=0.0))
        return {"eos_rate": sum(g.finish_reason == "eos" for g in gens) / len(gens),
                "accuracy": sum(is_correct(g.text, parse_gold(r["answer"])) for g, r in zip(gens, held)) / len(gens)}

    before = probe(out / "init")
    stage = sft.SFTStage(name="drills", data=[DataSource(kind="drills", n=300 if quick else 1500,
                                                         drill_kinds=["tier1", "tier2"])],
                         val_size=50 if quick else 200, epochs=1 if quick else 3, learning_rate=2e-3, warmup_ratio=0.05, weight_decay=0.0,
                         max_length=64, batch_size=32, grad_accum=1)
    s = sft.run(sft.SFTConfig(model=str(out / "init"), device="cpu", stages=[stage], eval_every=20), out / "sft")
    rows = [json.loads(x) for x in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    after = probe(out / "sft" / "model")

    # GRPO: 16 multiplication-table prompts, sampled at temperature 1.5 (room to improve),
    # 8 prompts x 8 generations per step, binary reward; reward measured on the same prompts
    # (8 samples each, fixed seed) before and after, and per step during training.
    items = drills("tier2", 16, 8)
    prompts = out / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in items))

    def sampled_reward(model_dir):
        m, t = load_model(model_dir)
        gens = Engine(m, t).generate([render_prompt(r["question"]) for r in items],
                                     SamplingParams(max_new_tokens=24, temperature=1.5, seed=123), num_samples=8)
        return sum(is_correct(x.text, parse_gold(items[x.prompt_index]["answer"])) for x in gens) / len(gens)

    r_before = sampled_reward(out / "sft" / "model")
    grpo.run(grpo.GRPOConfig(model=str(out / "sft" / "model"), device="cpu",
                             prompts=DataSource(kind="jsonl", path=str(prompts)), num_prompts=16,
                             reward=RewardConfig(kind="binary"), num_generations=8, per_device_train_batch_size=64,
                             gradient_accumulation_steps=1, learning_rate=1e-4, beta=0.0, temperature=1.5,
                             max_completion_length=24, max_steps=3 if quick else 20, seed=0), out / "grpo")
    r_after = sampled_reward(out / "grpo" / "model")
    grows = [json.loads(x) for x in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    r = [x["reward_mean"] for x in grows]
    result = {"benchmark": "posttrain_tiny", "model": "tiny 4x128, bpe-384, random init",
              "sft": {"steps": s["steps"], "val_loss_step20": vals[0], "val_loss_last": vals[-1],
                      "val_bpb_last": s["stages"][0]["val_bpb"], "eos_rate_before": before["eos_rate"],
                      "eos_rate_after": after["eos_rate"], "drill_accuracy_before": before["accuracy"],
                      "drill_accuracy_after": after["accuracy"]},
              "grpo": {"steps": len(r), "reward_before": r_before, "reward_after": r_after,
                       "reward_mean_first5": sum(r[:5]) / len(r[:5]), "reward_mean_last5": sum(r[-5:]) / len(r[-5:]),
                       "reward_per_step": [round(x, 3) for x in r], "frac_zero_std_groups_mean":
                       sum(x["frac_zero_std_groups"] for x in grows) / len(grows)},
              "wall_time_s": round(time.time() - t0, 1), "quick": quick}
    return result


if __name__ == "__main__":
    torch.set_num_threads(1)  # the CI/dev box has 2 shared cores; more threads only contend
    args = [a for a in sys.argv[1:] if a != "--quick"]
    out = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="posttrain_tiny_"))
    print(json.dumps(main(out, quick="--quick" in sys.argv[1:])))
