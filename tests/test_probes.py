"""Arithmetic probes: the suite, scoring (never the digits inside a domain token), a tiny-model
run through the real engine, the CLI, and torchrun with 2 processes == 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from domtok.engine import Generation
from domtok.errors import DomtokError
from domtok.eval.gsm8k import read_answer
from domtok.eval.probes import ANSWER_MODE, ProbesConfig, build_prompt, make_probes, notation, run, score

ROOT = Path(__file__).resolve().parents[1]


def test_reference_suite_shape_and_determinism():
    from domtok.eval.probes import pool

    items = make_probes()
    cats = [it["category"] for it in items]
    # the seeded categories ask min(100, pool) distinct pairs: mul_multidigit's test pool is smaller
    n_mul = len(pool("mul_multidigit", "test"))
    assert 40 < n_mul < 100 and len(pool("addition", "test")) > 100
    assert cats.count("mul_table") == 81 and cats.count("mul_multidigit") == n_mul and cats.count("addition") == 100
    assert len(items) == 181 + n_mul and len({it["id"] for it in items}) == len(items)
    table = {it["question"]: it["gold"] for it in items if it["category"] == "mul_table"}
    assert table["What is 7 times 8?"] == "56" and table["What is 8 times 7?"] == "56"
    for it in items:
        q = it["question"].rstrip("?").split()
        a, op, b = int(q[2]), q[3], int(q[4])
        assert int(it["gold"]) == (a * b if op == "times" else a + b)
        if it["category"] == "mul_multidigit":
            assert 10 <= a <= 99 and 2 <= b <= 9
        if it["category"] == "addition":
            assert 1 <= a <= 100 and 1 <= b <= 100
    assert make_probes(seed=42) == items and make_probes(seed=1) != items
    # adding categories never changes the others' items
    more = make_probes(("mul_table", "mul_multidigit", "addition", "subtraction", "mul_2digit", "symbolic"))
    assert [it for it in more if it["category"] in ("mul_table", "mul_multidigit", "addition")] == items
    assert all(int(it["gold"]) >= 0 for it in more if it["category"] == "subtraction")
    with pytest.raises(DomtokError, match="unknown probe categories"):
        make_probes(["division"])
    with pytest.raises(DomtokError, match="unknown split"):
        make_probes(split="validation")


def _pair(it):
    a, _, b = it["question"].rstrip("?").split()[2:5]
    a, b = int(a), int(b)
    return (it["category"], min(a, b), max(a, b)) if it["category"] in ("addition", "mul_2digit") else (it["category"], a, b)


def test_probes_are_drawn_without_replacement_and_dev_is_disjoint_from_test():
    """No pair is asked twice (not even as b + a for a + b), n is capped at the pool, and the dev
    and test splits share no seeded pair; the table facts are the same in both."""
    from domtok.eval.probes import pool

    seeded = ("mul_multidigit", "addition", "subtraction", "mul_2digit")
    splits = {s: make_probes(("mul_table",) + seeded, 1000, split=s) for s in ("dev", "test")}
    for split, items in splits.items():
        pairs = [_pair(it) for it in items if it["category"] in seeded]
        assert len(pairs) == len(set(pairs))  # distinct pairs, not only distinct strings
        for cat in seeded:  # n = 1000 asks the whole pool
            asked = sorted(p[1:] for p in pairs if p[0] == cat)
            assert asked == sorted(pool(cat, split)) and len(asked) > 20
        # with a smaller n, a seeded sample of the pool, still distinct
        few = make_probes(seeded, 20, seed=7, split=split)
        assert len({_pair(it) for it in few}) == len(few) == 80
    dev = {_pair(it) for it in splits["dev"] if it["category"] in seeded}
    test = {_pair(it) for it in splits["test"] if it["category"] in seeded}
    assert not dev & test and 0.2 < len(dev) / (len(dev) + len(test)) < 0.4
    assert [it for it in splits["dev"] if it["category"] == "mul_table"] == \
        [it for it in splits["test"] if it["category"] == "mul_table"]
    # both orders of a sum are asked across items (the pool holds each pair once)
    adds = [it for it in splits["test"] if it["category"] == "addition"]
    firsts = [int(it["question"].split()[2]) > int(it["question"].rstrip("?").split()[4]) for it in adds]
    assert 0.35 < sum(firsts) / len(firsts) < 0.65


def test_prompt_styles():
    it = {"category": "mul_table", "question": "What is 7 times 8?"}
    assert build_prompt(it, "answer_is") == "User: What is 7 times 8?\nAssistant: The answer is"
    assert build_prompt(it, "chat") == "User: What is 7 times 8?\nAssistant:"
    assert build_prompt({"category": "symbolic", "question": "7 × 8 ="}, "plain") == "7 × 8 ="


@pytest.fixture(scope="module")
def gpt2_pair():
    from domtok.tokens.tokenizer import load_tokenizer

    try:
        return load_tokenizer("gpt2", "baseline"), load_tokenizer("gpt2", "mul_tokens")
    except DomtokError as e:
        pytest.skip(f"GPT-2's BPE files are not here: {e}")


def test_each_condition_is_probed_in_its_training_notation(gpt2_pair):
    """One mechanism for both conditions: the question goes through the condition's injector
    (`Tokenizer.inject`). Old code: `symbolic_injected` raised for the baseline, and the domain
    model's in-context fact went through the injector with default settings."""
    base, dom = gpt2_pair
    items = [it for it in make_probes(["symbolic", "symbolic_context", "mul_table"]) if it["id"].endswith("-6x9")]
    sym, ctx, table = (next(it for it in items if it["category"] == c) for c in ("symbolic", "symbolic_context", "mul_table"))
    c, d = (int(x) for x in ctx["question"].split(" = ")[0].split(" × "))
    fact = f"<MUL_{min(c, d)}_{max(c, d)}_{c * d}>"
    assert ctx["question"] == f"{c} × {d} = {c * d}, so 6 × 9 ="
    # the baseline sees digits, the domain model its token; the asked product is never rewritten
    assert build_prompt(ctx, "plain", base) == ctx["question"]
    assert build_prompt(ctx, "plain", dom) == f"{fact}, so 6 × 9 ="
    assert build_prompt(ctx, "answer_is", dom).endswith(f"User: {fact}, so 6 × 9 =\nAssistant: The answer is")
    assert build_prompt(ctx, "plain", dom, inject=False) == ctx["question"]
    for it in (sym, table):   # no answer leaks into a prompt
        assert build_prompt(it, "plain", dom) == it["question"]
    # the condition's settings are the ones used: strict mode still rewrites the complete fact,
    # word forms rewrite `3 times 4 is 12`, which the default settings leave alone
    worded = {"category": "symbolic_context", "question": "3 times 4 is 12, so 6 × 9 ="}
    assert build_prompt(worded, "plain", dom) == worded["question"]
    assert build_prompt(worded, "plain", dom.with_injection("strict", True)) == "<MUL_3_4_12>, so 6 × 9 ="
    # the summary says what each saw
    prompts = [build_prompt(it, "plain", dom) for it in items]
    assert notation(dom, items, prompts, True) == {"condition": "mul_tokens", "injected": True,
                                                   "injection": {"mode": "weak", "word_forms": False},
                                                   "prompts_changed": 1, "prompts": 3}
    assert notation(base, items, [build_prompt(it, "plain", base) for it in items], True)["injected"] is False
    with pytest.raises(DomtokError, match="unknown probe categories"):
        make_probes(["symbolic_injected"])


@pytest.mark.parametrize("completion,answer,rule", [
    (" 7 × 8 = 56", "56", "first"),                      # old: 7, the restated operand
    (" 7 × 8 = <MUL_7_8_56>", "56", "first"),            # old: 7
    (" <MUL_7_8_56>", "56", "first"),
    (" So 7 times 8 is 56.\n#### 56", "56", "####"),      # old: 7
    (" The answer is 56", "56", "answer is"),
    (" 7 times 8 is 56.", "56", "first"),                 # old: 7
    (" What is 7 times 8? 56", "56", "first"),           # old: 7
    (" 7 × 8 = 54", "54", "first"),                       # wrong, and read as wrong
    (" 7", "7", "first"),
    (" 7 times 8", None, None),                           # an unanswered restatement states nothing
    (" 56, because 7 * 8 = 56. Also 12", "56", "first"),  # the first statement, not later rambling
    (" <MUL_7_8_56> no wait 3", "56", "first"),
    (" unsure", None, None),
])
def test_an_operand_is_never_the_answer(completion, answer, rule):
    got = read_answer(completion, ANSWER_MODE["answer_is"])
    assert (got.value, got.rule) == (answer, rule)
    (row,) = score([{"gold": "56"}], [completion], "answer_is")
    assert row["correct"] is (answer == "56") and row["answer_rule"] == rule
    if answer == "56" and "no wait" not in completion and "Also" not in completion:   # chat: flexible, same answer
        assert read_answer(completion, ANSWER_MODE["chat"]).value == "56"


def test_reading_the_answer():
    items = [{"gold": "56"}, {"gold": "56"}, {"gold": "54"}]
    s = score(items, [" <MUL_7_8_56>", " 7", " <MUL_6_9_54>"], "answer_is")
    assert [r["correct"] for r in s] == [True, False, True]
    assert [r["answer_from_token"] for r in s] == [True, False, True]
    assert score([{"gold": "56"}], [" 7 × 8 = <MUL_7_8_56>"], "chat")[0]["answer_from_token"] is True
    assert score([{"gold": "56"}], [" 56 <MUL_2_3_6>"], "answer_is")[0]["answer_from_token"] is False
    # the operand digits inside a token are never the answer
    assert score([{"gold": "7"}], [" <MUL_7_8_56>"], "answer_is")[0]["correct"] is False


class StubTokenizer:
    uses_domain_tokens = False

    def encode(self, text):
        return list(text.encode())

    def inject(self, text):
        from domtok.tokens.inject import InjectResult

        return InjectResult(text)

    def count_domain_tokens(self, ids):
        return sum(1 for i in ids if i >= 1000)


class GoldOnMulTable:
    """Answers the multiplication table right (half of it as a domain token), everything else 0."""

    tokenizer = StubTokenizer()

    def generate(self, prompts, params, num_samples=1, batch_size=32):
        out = []
        for k, p in enumerate(prompts):
            q = p.split("User: ")[1].split("\n")[0].rstrip("?").split()
            a, op, b = int(q[2]), q[3], int(q[4])
            if op == "times" and a < 10 and b < 10:
                text = f" <MUL_{a}_{b}_{a * b}>" if a <= b else f" {a * b}."
                ids = [1000] if a <= b else [5, 6]
            else:
                text, ids = " 0.", [1]
            out.append(Generation(k, 0, ids, text, "eos", len(ids)))
        return out


def test_accuracy_per_category_with_stub(tmp_path):
    from domtok.eval.probes import pool

    s = run(ProbesConfig(model="stub", batch_size=50, device="cpu"), tmp_path, engine=GoldOnMulTable())
    m = s["metrics"]
    n = len(make_probes())
    assert m["accuracy_mul_table"] == 1.0 and m["accuracy_mul_multidigit"] == 0.0
    assert m["accuracy_addition"] == 0.0 and m["accuracy_all"] == pytest.approx(81 / n)
    assert m["answer_from_token_rate"] == pytest.approx(45 / n)
    assert m["domain_tokens_per_response"] == pytest.approx(45 / n)
    n_mul = len(pool("mul_multidigit", "test"))
    assert s["split"] == "test" and s["items_per_category"] == {"mul_table": 81, "mul_multidigit": n_mul,
                                                                 "addition": 100}
    assert s["pool_per_category"] == {"mul_table": 81, "mul_multidigit": n_mul,
                                      "addition": len(pool("addition", "test"))}
    lo, hi = s["ci"]["accuracy_mul_table"]
    assert hi == 1.0 and 0.95 < lo < 1.0
    rows = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [it["id"] for it in make_probes()]
    assert {r["split"] for r in rows} == {"test"}
    assert {"id", "category", "prompt", "completion", "ids", "answer", "gold", "correct",
            "response_tokens", "domain_tokens", "answer_from_token", "answer_rule", "answer_span"} <= set(rows[0])
    assert s["notation"] == {"condition": None, "injected": False, "injection": None,
                             "prompts_changed": 0, "prompts": n}


# ---- a tiny real model through the real engine, the CLI and torchrun ----

@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from domtok.model.checkpoint import save_model_dir
    from domtok.model.gpt import GPT, GPTConfig
    from domtok.tokens.build import train_bpe
    from domtok.tokens.tokenizer import load_tokenizer

    d = tmp_path_factory.mktemp("tiny")
    texts = [f"User: What is {a} times {b}?\nAssistant: The answer is {a * b}." for a in range(1, 10) for b in range(1, 10)]
    train_bpe(texts * 3, 320, d / "bpe")
    tok = load_tokenizer(str(d / "bpe"), "mul_tokens")
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=128, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32))
    save_model_dir(model, tok, d / "model")
    return d / "model"


def _cli(args, nproc=1, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    if nproc == 1:
        cmd = [sys.executable, "-m", "domtok"] + args
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               "-m", "domtok"] + args
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def test_tiny_model_run_in_process(tiny_model_dir, tmp_path):
    cfg = ProbesConfig(model=str(tiny_model_dir), categories=["mul_table", "symbolic_context"], batch_size=32,
                       max_new_tokens=6, device="cpu")
    s = run(cfg, tmp_path / "a")
    rows = [json.loads(line) for line in (tmp_path / "a" / "items.jsonl").read_text().splitlines()]
    assert s["n"] == 162 == len(rows)
    assert all(0 < r["response_tokens"] <= 6 for r in rows)
    assert {r["category"] for r in rows} == {"mul_table", "symbolic_context"}
    assert {r["answer_rule"] for r in rows} <= {"first", "answer is", "####", None}
    assert s["notation"]["injected"] is True and s["notation"]["prompts_changed"] == 81
    inj = next(r for r in rows if r["category"] == "symbolic_context")
    assert inj["prompt"].endswith("The answer is")
    assert inj["prompt"].count("<MUL_") == 1 and f"_{inj['gold']}>" not in inj["prompt"]  # injected, no leak
    # same seed, same numbers
    run(cfg, tmp_path / "b")
    assert (tmp_path / "a" / "items.jsonl").read_text() == (tmp_path / "b" / "items.jsonl").read_text()


def test_torchrun_two_processes_equal_one(tiny_model_dir, tmp_path):
    args = ["eval", "probes", "--model", str(tiny_model_dir), "--categories", "mul_table,addition",
            "--n-per-category", "20", "--batch-size", "16", "--max-new-tokens", "6", "--device", "cpu"]
    r = _cli(args + ["--out", str(tmp_path / "one")])
    assert json.loads(r.stdout.strip().splitlines()[-1])["n"] == 101
    _cli(args + ["--out", str(tmp_path / "two")], nproc=2)
    one = (tmp_path / "one" / "items.jsonl").read_text()
    two = (tmp_path / "two" / "items.jsonl").read_text()
    assert one == two and len(one.splitlines()) == 101
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s1["metrics"] == s2["metrics"] and s2["world_size"] == 2
    # compare: the same items against themselves -> zero difference; writes JSON
    r = _cli(["eval", "compare", str(tmp_path / "one"), str(tmp_path / "two"), "--n-boot", "200",
              "--out", str(tmp_path / "cmp.json")])
    assert "correct" in r.stdout and "mcnemar_exact" in r.stdout
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert cmp["metrics"]["correct"]["delta"] == 0 and cmp["metrics"]["correct"]["p"] == 1.0


def test_report_states_what_each_condition_saw():
    from types import SimpleNamespace as NS

    from domtok.report import notation_lines

    nodes = [NS(id="b/p", kind="prepare", condition="baseline"), NS(id="m/p", kind="prepare", condition="mul_tokens"),
             NS(id="b/e", kind="probes", condition="baseline"), NS(id="m/e", kind="probes", condition="mul_tokens")]
    summary = {
        "b/p": {"injection": None, "domain_tokens_after_space": {"all": 0, "share": 0.0}},
        "m/p": {"injection": {"mode": "weak", "word_forms": False},
                "domain_tokens_after_space": {"all": 439, "share": 0.3443}},
        "b/e": {"notation": {"injected": False, "prompts_changed": 0, "prompts": 331},
                "metrics": {"accuracy_symbolic": 0.1}},
        "m/e": {"notation": {"injected": True, "prompts_changed": 81, "prompts": 331}},
    }
    run = NS(conditions=["baseline", "mul_tokens"], nodes=nodes, summary=summary)
    assert notation_lines(run)[:2] == [
        "- Notation, `baseline`: training text as written; probe questions as written.",
        "- Notation, `mul_tokens`: training text injected (mode weak, word forms off); 34.4% of its domain tokens "
        "(439) follow a lone space token; probe questions through the same injector (81 of 331 prompts changed).",
    ]
    assert "`symbolic` asks `a × b =` in every condition" in notation_lines(run)[2]
    summary["b/e"]["metrics"] = {}
    assert len(notation_lines(run)) == 2


def test_times_table_page_in_each_notation(gpt2_pair):
    """`symbolic_table`: the page the pretraining corpus writes, up to the asked line, in each
    condition's notation; the asked fact is never in the prompt."""
    from domtok.data.corpus import math_web_corpus

    base, dom = gpt2_pair
    items = make_probes(["symbolic_table"])
    assert len(items) == 81
    it = next(i for i in items if i["id"] == "symbolic_table-6x9")
    assert it["gold"] == "54" and it["question"].startswith("The 6 times table\n6 × 1 = 6, so 6 times 1 is 6.\n")
    assert it["question"].endswith("6 × 8 = 48, so 6 times 8 is 48.\n") and "6 × 9" not in it["question"]
    assert build_prompt(it, "plain", base) == it["question"]
    assert build_prompt(it, "plain", dom) == "The 6 times table\n" + "".join(
        f"<MUL_{min(6, k)}_{max(6, k)}_{6 * k}>, so 6 times {k} is {6 * k}.\n" for k in range(1, 9))
    # the pages are the corpus's own: each prompt is a prefix of a generated table document,
    # written by the same injector the domain condition's shards were
    pages = [d for d in math_web_corpus(400, 0) if d.startswith("The 6 times table\n")]
    assert pages and all(d.startswith(it["question"]) for d in pages)
    assert all(dom.inject(d).text.startswith(build_prompt(it, "plain", dom)) for d in pages)
    assert score([it], ["6 × 9 = 54, so 6 times 9 is 54.\n6 × 10"], "plain")[0]["correct"]
    assert score([it], ["<MUL_6_9_54>, so 6 times 9 is 54."], "plain")[0]["correct"]
    assert not score([it], ["6 × 8 = 48, so"], "plain")[0]["correct"]
