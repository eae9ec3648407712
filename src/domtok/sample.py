"""`domtok sample`: ask a model a question, once or in a REPL.

    domtok sample --model runs/.../model --question "What is 7 times 8?" --num-samples 4
    domtok sample --model DIR --interactive        # /temp 0.5, /greedy, /system TEXT, /quit
    domtok sample --model user/name --condition mul_tokens --question ...   # a Hub model id

The prompt is rendered by `domtok.chat.render_prompt`, the same text SFT trained on and
evaluation uses. Answers are cut where the model starts a new "User:" turn. Sample i of a
question draws from its own seed, derived from --seed (see `domtok.engine.row_seed`), so
`--seed 3 --num-samples 4` gives four different answers, the same four every time.
"""

from __future__ import annotations

import argparse
import sys

from domtok.chat import STOP_STRINGS, render_prompt
from domtok.errors import DomtokError

REPL_HELP = "commands: /temp X (sampling temperature), /greedy, /system TEXT (empty clears it), /quit"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="model dir (domtok or Hugging Face GPT-2) or a Hub model id user/name[@rev]")
    p.add_argument("--condition", default=None,
                   help="baseline | mul_tokens: the tokenizer of a GPT-2 dir whose files do not say (the reference "
                        "study's models); must agree with a domtok dir")
    p.add_argument("--question", help="the question to answer")
    p.add_argument("--interactive", action="store_true", help="read questions from stdin (a REPL)")
    p.add_argument("--num-samples", type=int, default=1, help="answers per question (default 1)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="keep the k most likely tokens; 0 = off (default 50)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass; 1 = off (default 1)")
    p.add_argument("--greedy", action="store_true", help="argmax decoding (temperature 0)")
    p.add_argument("--seed", type=int, default=0, help="seed; sample i uses a seed derived from it")
    p.add_argument("--max-new-tokens", type=int, default=256, help="most tokens per answer (default 256)")
    p.add_argument("--system", default=None, help="system message put before the question")
    p.add_argument("--calculator", action="store_true", help="evaluate <<expr= annotations and force the result")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")


def main(args: argparse.Namespace) -> int:
    if not args.interactive and not args.question:
        raise DomtokError("sample: nothing to answer; give --question TEXT or --interactive")
    from domtok.config import check_value

    for key in ("num_samples", "max_new_tokens", "temperature", "top_p", "top_k", "seed"):  # the knobs' ranges
        check_value(key, getattr(args, key), f"sample --{key.replace('_', '-')}")
    from domtok.engine import Engine
    from domtok.eval.common import load_eval_model
    from domtok.utils import pick_device

    engine = Engine(*load_eval_model(args.model, pick_device(args.device), args.condition))
    state = {"temperature": 0.0 if args.greedy else args.temperature, "system": args.system}
    if not args.interactive:
        answer(engine, args, state, args.question, args.seed)
        return 0

    print(f"domtok sample: {args.model}. {REPL_HELP}", flush=True)
    turn = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, rest = line.partition(" ")
            if cmd == "/quit":
                break
            elif cmd == "/greedy":
                state["temperature"] = 0.0
                print("temperature 0 (greedy)", flush=True)
            elif cmd == "/temp":
                try:
                    state["temperature"] = max(0.0, float(rest))
                except ValueError:
                    print(f"/temp needs a number, e.g. /temp 0.7 ({REPL_HELP})", flush=True)
                    continue
                print(f"temperature {state['temperature']}", flush=True)
            elif cmd == "/system":
                state["system"] = rest.strip() or None
                print(f"system: {state['system']!r}", flush=True)
            else:
                print(f"unknown command {cmd}; {REPL_HELP}", flush=True)
            continue
        # a fresh seed per question, so asking again gives new samples, reproducibly
        answer(engine, args, state, line, args.seed + turn)
        turn += 1
    return 0


def answer(engine, args, state: dict, question: str, seed: int) -> None:
    from domtok.engine import SamplingParams

    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=state["temperature"], top_k=args.top_k,
        top_p=args.top_p, seed=seed, stop_strings=STOP_STRINGS, calculator=args.calculator,
    )
    prompt = render_prompt(question, system=state["system"])
    gens = engine.generate([prompt], params, num_samples=args.num_samples)
    if gens and gens[0].prompt_truncated:
        print(f"(the prompt was {gens[0].prompt_truncated} tokens too long for the model's context and was cut "
              "from the left)", file=sys.stderr, flush=True)
    for g in gens:
        if g.finish_reason == "context":
            print(f"(sample {g.sample_index} stopped at the model's context of {engine.block_size} tokens)",
                  file=sys.stderr, flush=True)
        text = g.text.split("User:")[0].strip()  # a new user turn is past the answer
        if args.num_samples > 1:
            print(f"--- sample {g.sample_index} ({g.num_tokens} tokens, {g.finish_reason})")
        print(text, flush=True)
