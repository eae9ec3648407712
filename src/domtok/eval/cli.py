"""`domtok eval gsm8k|hellaswag|probes|compare`: thin wrappers over the evaluation modules.

Each benchmark verb builds its config from `--config FILE` (the `eval_<benchmark>:` section of
an experiment spec, or a flat file), then the flags given on the command line, then dotted
`--set key=value` overrides; it runs `run(cfg, out_dir)` and prints a results table, then the
summary's metrics as one JSON line (the last line). `--n` evaluates a seeded random subset (a
fair sample of the benchmark); `--limit` the first N items in dataset order, as
lm-evaluation-harness does (quick, but the first items need not be typical).
Under torchrun the items are sharded over ranks and rank 0 writes the results. (torchrun's own
parser swallows `--n`, a prefix of its `--nnodes`: use the long spellings `--num-items` /
`--n-per-category` after `torchrun ... -m domtok eval`.)

`compare RUN_A RUN_B` pairs two runs of one benchmark item by item (paired bootstrap 95% CI,
exact McNemar p for accuracies). Every delta is B − A (the second run minus the first), in
the table and in the `--out` JSON (`"delta": "B - A"`). A run may be a comma-separated list of run dirs (one per
seed): then the table is over seeds (mean ± std per condition, Welch t-test or, with
--paired-seeds, a paired t-test), read from each run's summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from domtok.errors import DomtokError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_cmd", metavar="BENCHMARK", required=True)

    def common(p, batch_default):
        p.add_argument("--model", help="model dir (domtok or Hugging Face GPT-2) or a Hub model id user/name[@rev]")
        p.add_argument("--condition", help="baseline | mul_tokens: the tokenizer of a GPT-2 dir whose files do not "
                                           "say (the reference study's models); must agree with a domtok dir")
        p.add_argument("--out", help="output dir (default runs/eval/<benchmark>-<config hash>)")
        p.add_argument("--seed", type=int, help="subset / probe seed")
        p.add_argument("--batch-size", type=int, help=f"batch size (default {batch_default})")
        p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
        p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                       help="autocast dtype (auto = bfloat16 on CUDA, float32 on CPU; bfloat16 autocasts on CPU too)")
        p.add_argument("--config", help="YAML file with the benchmark's config (or an experiment spec)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")

    g = sub.add_parser("gsm8k", help="GSM8K test accuracy (strict and flexible extraction)")
    common(g, 32)
    g.add_argument("--data", help="local GSM8K jsonl or dir (default: hub openai/gsm8k)")
    g.add_argument("--n", "--num-items", type=int, dest="n",
                   help="seeded random subset of N items (default: all; --seed picks it); under torchrun spell it "
                        "--num-items")
    g.add_argument("--limit", type=int, help="the first N items in dataset order, as lm-evaluation-harness's --limit "
                        "(for quick checks; --n draws a seeded random subset instead, a fair sample of the benchmark)")
    g.add_argument("--split", help="the data's split (default test); with --data synthetic:word_problems "
                   "test or dev (for tuning)")
    g.add_argument("--max-new-tokens", type=int, help="most tokens per answer (default 256)")
    g.add_argument("--calculator", action="store_true", default=None, help="evaluate <<expr= annotations")
    g.add_argument("--inject-prompt", action="store_true", default=None,
                   help="inject domain tokens into the question, with the model's injector settings "
                        "(domain-token models only)")

    h = sub.add_parser("hellaswag", help="HellaSwag acc / acc_norm (per token and per character)")
    common(h, 8)
    h.add_argument("--data", help="local HellaSwag jsonl (original schema) or dir; required offline")
    h.add_argument("--n", "--num-items", type=int, dest="n",
                   help="seeded random subset of N items (default: all; --seed picks it); under torchrun spell it "
                        "--num-items")
    h.add_argument("--limit", type=int, help="the first N items in dataset order, as lm-evaluation-harness's --limit "
                        "(for quick checks; --n draws a seeded random subset instead, a fair sample of the benchmark)")
    h.add_argument("--style", choices=["raw", "harness"], help="context style (default raw)")
    h.add_argument("--split", help="split (default validation)")

    p = sub.add_parser("probes", help="arithmetic probes, per-category accuracy")
    common(p, 64)
    p.add_argument("--categories", help="comma-separated (default mul_table,mul_multidigit,addition); "
                   "also subtraction, mul_2digit, symbolic, symbolic_context, symbolic_table")
    p.add_argument("--no-inject-prompt", dest="inject_prompt", action="store_false", default=None,
                   help="show a domain-token model the questions as written, not in its training notation")
    p.add_argument("--prompt-style", choices=["answer_is", "chat", "plain"],
                   help="answer_is: chat prompt ending in \"Assistant: The answer is\" (default); chat: the bare "
                        "chat prompt; plain: the question without the chat format")
    p.add_argument("--n", "--n-per-category", type=int, dest="n_per_category",
                   help="items per seeded category (default 100, capped at its pool of held-out pairs); "
                        "under torchrun spell it --n-per-category")
    p.add_argument("--limit", type=int, help="the first N items of each category, as lm-evaluation-harness's "
                                             "--limit per subtask (--n sets how many a seeded category draws)")
    p.add_argument("--split", choices=["dev", "test"], help="held-out pairs to ask: test (default) or dev (for tuning)")
    p.add_argument("--max-new-tokens", type=int, help="most tokens per answer (default 32)")

    c = sub.add_parser("compare", help="compare two runs (paired by item) or two sets of seeds")
    c.add_argument("run_a", help="run dir or items.jsonl; several seeds: DIR1,DIR2,...")
    c.add_argument("run_b", help="run dir or items.jsonl; several seeds: DIR1,DIR2,...")
    c.add_argument("--out", help="write the comparison as JSON here")
    c.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples for the CI (default 10000)")
    c.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    c.add_argument("--paired-seeds", action="store_true", help="seed k of A pairs with seed k of B")


def _config(args, cls, section: str, flag_map: dict):
    from domtok.config import load_config

    overrides = [f"{key}={json.dumps(getattr(args, attr))}" for attr, key in flag_map.items()
                 if getattr(args, attr, None) is not None]
    return load_config(cls, args.config, overrides + list(args.set), section=section)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from domtok.eval.common import default_out_dir

    common_flags = {"model": "model", "condition": "condition", "seed": "seed", "batch_size": "batch_size",
                    "device": "device", "dtype": "dtype", "limit": "limit"}
    if args.eval_cmd == "compare":
        return compare_main(args)
    if args.eval_cmd == "gsm8k":
        from domtok.eval import gsm8k as mod

        cfg = _config(args, mod.GSM8KEvalConfig, "eval_gsm8k",
                      {**common_flags, "data": "data", "n": "n", "split": "split", "max_new_tokens": "max_new_tokens",
                       "calculator": "calculator", "inject_prompt": "inject_prompt"})
    elif args.eval_cmd == "hellaswag":
        from domtok.eval import hellaswag as mod

        cfg = _config(args, mod.HellaSwagEvalConfig, "eval_hellaswag",
                      {**common_flags, "data": "data", "n": "n", "style": "style", "split": "split"})
    else:
        from domtok.eval import probes as mod

        if args.categories is not None:
            args.categories = [c.strip() for c in args.categories.split(",") if c.strip()]
        cfg = _config(args, mod.ProbesConfig, "eval_probes",
                      {**common_flags, "categories": "categories", "prompt_style": "prompt_style",
                       "n_per_category": "n_per_category", "max_new_tokens": "max_new_tokens",
                       "inject_prompt": "inject_prompt", "split": "split"})
    if not cfg.model:
        raise DomtokError(f"eval {args.eval_cmd}: no model; pass --model DIR")
    out = Path(args.out) if args.out else default_out_dir(args.eval_cmd, cfg)
    from domtok.outdir import claim_out_dir

    claim_out_dir(out, what="--out directory")
    from domtok.manifest import clear_manifest, write_verb_manifest

    is_main = os.environ.get("RANK", "0") == "0"
    if is_main:
        clear_manifest(out)
    try:
        summary = mod.run(cfg, out)
    finally:
        from domtok.utils import dist_teardown

        dist_teardown()
    if summary and is_main:
        write_verb_manifest(out, f"eval_{args.eval_cmd}", summary,
                            {"model": cfg.model, "data": getattr(cfg, "data", None)})
    if summary:  # rank 0: a table to read, then the summary's numbers as one JSON line to parse
        print(results_table(summary, out))
        print(json.dumps({"benchmark": summary["benchmark"], "n": summary["n"], "out": str(out),
                          "metrics": summary["metrics"], "ci": summary["ci"]}))
    return 0


def results_table(summary: dict, out) -> str:
    """The metrics of one evaluation as a table, lm-evaluation-harness style."""
    rows = []
    for k, v in summary["metrics"].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            ci = summary.get("ci", {}).get(k)
            rows.append([k, f"{v:.4f}", f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""])
    title = f"{summary['benchmark']}: {summary['n']} items, model {summary['model']} -> {out}"
    return title + "\n" + _table(["metric", "value", "95% CI"], rows)


# ---------------------------------------------------------------------------- compare

def compare_main(args: argparse.Namespace) -> int:
    from domtok.config import atomic_write_json, check_value

    check_value("n_boot", args.n_boot, "eval compare --n-boot")  # before scipy is imported: a refusal is instant
    check_value("seed", args.seed, "eval compare --seed")
    from domtok.eval.stats import across_seeds, compare_items
    from domtok.utils import provenance

    runs_a = [r for r in args.run_a.split(",") if r]
    runs_b = [r for r in args.run_b.split(",") if r]
    if len(runs_a) == 1 and len(runs_b) == 1:
        result = compare_items(_run_items(runs_a[0]), _run_items(runs_b[0]), n_boot=args.n_boot, seed=args.seed)
        for m in result["metrics"].values():  # compare_items gives A - B; the table says B - A
            m["delta"], m["ci"] = -m["delta"], [-m["ci"][1], -m["ci"][0]]
        result.update(run_a=runs_a[0], run_b=runs_b[0], kind="paired_items", delta="B - A")
        header = ["metric", "A", "B", "delta B−A", "95% CI of B−A", "p", "test"]
        rows = [[k, f"{m['a']:.4f}", f"{m['b']:.4f}", f"{m['delta']:+.4f}",
                 f"[{m['ci'][0]:+.4f}, {m['ci'][1]:+.4f}]", f"{m['p']:.4g}", m["test"]]
                for k, m in result["metrics"].items()]
        title = f"{result['benchmark'] or 'items'}: {result['n']} paired items"
    else:
        sa, sb = [_run_summary(r) for r in runs_a], [_run_summary(r) for r in runs_b]
        benches = {s.get("benchmark") for s in sa + sb}
        if len(benches) != 1:
            raise DomtokError(f"runs are different benchmarks ({sorted(map(str, benches))}); compare one benchmark")
        keys = [k for k in sa[0]["metrics"] if all(k in s["metrics"] for s in sa + sb)
                and isinstance(sa[0]["metrics"][k], (int, float))]
        metrics = {}
        for k in keys:
            r = across_seeds([s["metrics"][k] for s in sa], [s["metrics"][k] for s in sb], paired=args.paired_seeds)
            r["diff"] = -r["diff"]  # across_seeds gives A - B; the table says B - A
            if isinstance(r.get("test", {}).get("t"), (int, float)):
                r["test"]["t"] = -r["test"]["t"]
            metrics[k] = r
        result = {"kind": "across_seeds", "benchmark": benches.pop(), "runs_a": runs_a, "runs_b": runs_b,
                  "metrics": metrics, "delta": "B - A"}
        header = ["metric", "A (mean ± std)", "B (mean ± std)", "delta B−A", "seeds", "p", "test"]
        rows = [[k, f"{m['mean']:.4f} ± {m['std']:.4f}", f"{m['b']['mean']:.4f} ± {m['b']['std']:.4f}",
                 f"{m['diff']:+.4f}", f"{m['n']} vs {m['b']['n']}", f"{m['test']['p']:.4g}", m["test"]["name"]]
                for k, m in metrics.items()]
        title = f"{result['benchmark']}: {len(runs_a)} vs {len(runs_b)} seeds"
    result["versions"] = provenance()
    print(f"{title}; A = {args.run_a}, B = {args.run_b}; delta = B − A")
    print(_table(header, rows))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _run_items(run: str) -> list[dict]:
    """Items of an evaluation dir given to `eval compare` (or its items.jsonl path), with a clear
    error when absent or damaged (rows read by `utils.read_items`)."""
    from domtok.utils import read_items as read_rows

    p = Path(run)
    f = p / "items.jsonl" if p.is_dir() else p
    if not f.exists():
        raise DomtokError(f"{f}: no items.jsonl; pass a directory written by `domtok eval` or its items.jsonl")
    return read_rows(f)


def _run_summary(run: str) -> dict:
    from domtok.utils import read_json_object

    f = Path(run) / "summary.json"
    if not f.exists():
        raise DomtokError(f"{f}: no summary.json; pass a directory written by `domtok eval`")
    return read_json_object(f, "re-run the evaluation")


if __name__ == "__main__":  # `python -m domtok.eval.cli` (torchrun -m domtok eval ... also works)
    from domtok.cli import main as cli_main

    sys.exit(cli_main(["eval"] + sys.argv[1:]))
