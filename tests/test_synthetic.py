"""Synthetic data: every number is right (checked by an independent tiny evaluator), generators are
seeded, and word-problem splits are disjoint."""

from __future__ import annotations

import ast
import operator
import re

import pytest

from domtok.calculator import evaluate
from domtok.data.corpus import math_web_corpus
from domtok.data.drills import DRILL_KINDS, drills
from domtok.data.gsm_sbs import MAX_STEP_LINES, gsm_sbs, gsm_sbs_rewrite, rewrite_answer
from domtok.data.steps import add_steps, mul_steps, sub_steps
from domtok.data.word_problems import TEMPLATE_HAS_MUL, TEMPLATES, word_problems
from domtok.errors import DomtokError
from domtok.tokens.inject import check_annotations, inject_domain_tokens

OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def safe_eval(expr: str):
    """+ - * / and parentheses on integers; nothing else (test-local, independent of domtok)."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(f"not allowed: {ast.dump(node)}")
    return ev(ast.parse(expr.replace("×", "*"), mode="eval"))


ANNOT = re.compile(r"<<([^=<>]+)=([^<>]+)>>")


def check_item(item):
    """Every annotation evaluates to its result, every `=` chain is constant, #### matches the last."""
    ans = item["answer"]
    assert set(item) >= {"id", "question", "answer"}
    assert ans.count("####") == 1
    final = ans.rsplit("#### ", 1)[1].strip()
    assert re.fullmatch(r"-?\d+", final), ans
    annots = ANNOT.findall(ans)
    for expr, res in annots:
        assert safe_eval(expr) == int(res), (expr, res)
    body = ANNOT.sub("", ans.rsplit("####", 1)[0])  # GSM8K writes the result right after
    last_value = None
    for line in body.splitlines():
        for chain in re.findall(r"[\d(][\d ()+\-×*/]*(?:=[\d ()+\-×*/$]+)+", line):
            values = {safe_eval(part.replace("$", "").strip()) for part in chain.split("=")}
            assert len(values) == 1, (line, chain)
            last_value = values.pop()
    if annots or last_value is not None:
        assert last_value == int(final), ans
    return int(final)


def test_mul_steps_example_and_recursion():
    assert mul_steps(12, 12) == ["2 × 12 = 2 × (10 + 2) = 2 × 10 + 2 × 2 = 20 + 4 = 24",
                                 "12 × 12 = (10 + 2) × 12 = 10 × 12 + 2 × 12 = 120 + 24 = 144"]
    assert mul_steps(6, 9) == ["6 × 9 = 54"]
    for a in list(range(1, 60)) + [99, 101, 347, 999]:
        for b in (1, 2, 7, 9, 10, 11, 19, 25, 40, 87):
            lines = mul_steps(a, b)
            assert lines[-1].startswith(f"{a} × {b} = ") and lines[-1].endswith(f"= {a * b}")
            for line in lines:
                parts = line.split(" = ")
                assert len({safe_eval(p) for p in parts}) == 1, line
            # the multiplications that are *evaluated* (last product line) are facts, x10^k, or
            # were derived on an earlier line
            derived = {ln.split(" = ")[0] for ln in lines}
            for ln in lines:
                for x, y in re.findall(r"(\d+) × (\d+)", ln.split(" = ", 1)[1]):
                    x, y = int(x), int(y)
                    ok = (x <= 9 and y <= 9) or str(x).rstrip("0") == "1" or str(y).rstrip("0") == "1" \
                        or f"{x} × {y}" in derived or re.fullmatch(r"\d0*", str(x)) and re.fullmatch(r"\d0*", str(y))
                    assert ok, (a, b, ln)


@pytest.mark.parametrize("kind", DRILL_KINDS)
def test_drills_correct_and_seeded(kind):
    items = drills(kind, 300, seed=3)
    assert items == drills(kind, 300, seed=3)
    assert items != drills(kind, 300, seed=4)
    assert len({i["id"] for i in items}) == 300
    for it in items:
        check_item(it)
        nums = [int(x) for x in re.findall(r"\d+", it["question"])]
        if kind == "tier5":
            assert all(10 <= x <= 20 for x in nums)
        if kind in ("tier2", "mul_table", "times_table"):
            assert all(1 <= x <= 9 for x in nums)
        if kind == "add_100":
            assert all(1 <= x <= 100 for x in nums)
        if kind == "mul_2x1":
            assert 10 <= nums[0] <= 99 and 2 <= nums[1] <= 9


def test_times_table_drills_cover_every_fact_and_both_wordings():
    items = drills("times_table", 162, seed=0)
    facts = [tuple(map(int, re.findall(r"\d+", it["question"]))) for it in items]
    assert sorted(facts[:81]) == sorted(facts[81:]) == [(a, b) for a in range(1, 10) for b in range(1, 10)]
    # the probes' wording ("times", "plus") and the symbols, both
    for kind, word, sym in (("times_table", "times", "×"), ("add_100", "plus", "+"), ("mul_2x1", "times", "×")):
        qs = [it["question"] for it in drills(kind, 200, seed=1)]
        assert 60 < sum(f" {word} " in q for q in qs) < 140 and 60 < sum(f" {sym} " in q for q in qs) < 140


def test_mul_steps_can_work_the_final_sum_by_place_value():
    """sum_steps (the tiny study's format) works a sum of two partial products with add_steps;
    the default keeps the reference's one-step sum."""
    assert mul_steps(72, 7, sum_steps=True) == [
        "70 × 7 = 7 × 7 × 10 = 49 × 10 = 490",
        "72 × 7 = (70 + 2) × 7 = 70 × 7 + 2 × 7 = 490 + 14 = 400 + 90 + 10 + 4 = 400 + 100 + 4 = 504"]
    assert mul_steps(72, 7)[-1] == "72 × 7 = (70 + 2) × 7 = 70 × 7 + 2 × 7 = 490 + 14 = 504"
    assert mul_steps(12, 4, sum_steps=True) == ["12 × 4 = (10 + 2) × 4 = 10 × 4 + 2 × 4 = 40 + 8 = 48"]
    for a in list(range(10, 100, 7)) + [347]:
        for b in (2, 7, 9, 13):
            lines = mul_steps(a, b, sum_steps=True)
            assert lines[-1].startswith(f"{a} × {b} = ") and lines[-1].endswith(f"= {a * b}")
            assert all(len({safe_eval(p) for p in line.split(" = ")}) == 1 for line in lines), lines
    for it in drills("mul_2x1", 50, seed=0):  # the tiny study's drills use it, the reference's tier4 not
        a, b = map(int, re.findall(r"\d+", it["question"]))
        assert it["answer"].rsplit("\n####", 1)[0] == "\n".join(mul_steps(a, b, sum_steps=True))
    for it in drills("tier4", 50, seed=0):
        a, b = map(int, re.findall(r"\d+", it["question"]))
        assert it["answer"].rsplit("\n####", 1)[0] == "\n".join(mul_steps(a, b))


def test_add_and_sub_steps():
    assert add_steps(47, 38) == "47 + 38 = 40 + 7 + 30 + 8 = 70 + 15 = 85"  # each number split where it stands
    assert add_steps(134, 250) == "134 + 250 = 100 + 30 + 4 + 200 + 50 = 300 + 80 + 4 = 384"
    assert add_steps(3, 42) == "3 + 42 = 3 + 40 + 2 = 40 + 5 = 45"
    assert add_steps(100, 47) == "100 + 47 = 100 + 40 + 7 = 147"  # no step repeated
    assert add_steps(40, 8) == "40 + 8 = 48" and add_steps(7, 8) == "7 + 8 = 15"
    assert sub_steps(85, 27) == "85 - 27 = 85 - 20 - 7 = 65 - 7 = 58"
    assert sub_steps(85, 7) == "85 - 7 = 78" and sub_steps(85, 20) == "85 - 20 = 65"
    for a in range(0, 130, 3):
        for b in range(0, 130, 7):
            for line in [add_steps(a, b)] + ([sub_steps(a, b)] if b <= a else []):
                values = {safe_eval(part) for part in line.split(" = ")}
                assert len(values) == 1 and line.endswith(f"= {values.pop()}"), line
    with pytest.raises(ValueError):
        sub_steps(3, 5)


def test_gsm_sbs():
    items = gsm_sbs(200, seed=0)
    assert items == gsm_sbs(200, seed=0)
    for it in items:
        a, b = map(int, re.fullmatch(r"What is (\d+) times (\d+)\?", it["question"]).groups())
        assert check_item(it) == a * b
        assert f"{a} × {b} = " in it["answer"]


def test_word_problems_correct_and_disjoint():
    train = word_problems(1500, seed=0, split="train")
    dev = word_problems(200, seed=0, split="dev")
    test = word_problems(200, seed=0, split="test")
    assert train == word_problems(1500, seed=0, split="train") and test == word_problems(200, seed=0, split="test")
    assert {t["template"] for t in train} == {t["template"] for t in test} == set(TEMPLATES) == set(TEMPLATE_HAS_MUL)
    for it in train + dev + test:
        check_item(it)
        # has_mul says whether the worked answer multiplies (the negative control has none)
        assert it["has_mul"] == TEMPLATE_HAS_MUL[it["template"]] == ("×" in it["answer"])
    assert 3 <= sum(not v for v in TEMPLATE_HAS_MUL.values()) and 3 <= sum(TEMPLATE_HAS_MUL.values())
    assert len({t["question"] for t in train}) == 1500
    key = lambda t: (t["template"], tuple(t["params"]))  # noqa: E731
    for a, b in ((train, dev), (train, test), (dev, test)):
        assert not {t["question"] for t in a} & {t["question"] for t in b}
        assert not {key(t) for t in a} & {key(t) for t in b}
    # an evaluation split never asks the same numbers of a template twice
    assert len({key(t) for t in dev}) == 200 and len({key(t) for t in test}) == 200
    assert [t["template"] for t in test[:len(TEMPLATES)]] == list(TEMPLATES)  # 20 items per template
    # a different seed of the training split still never touches the dev or test parameters
    other = word_problems(1500, seed=9, split="train")
    assert not {key(t) for t in other} & {key(t) for t in dev + test}
    two_step = [t for t in train if t["template"] in ("mul_add", "price_change", "bus", "add_three", "mul_sub")]
    assert all(t["answer"].count("\n") == 2 for t in two_step)  # two worked lines, then ####
    # numbers up to 99, worked with the steps the probes test
    assert all(max(t["params"]) <= 99 for t in train + dev + test)
    adds = [t for t in train if t["template"] == "add"]
    assert all(add_steps(*t["params"]) in t["answer"] for t in adds)
    with pytest.raises(ValueError, match="ran out of distinct test items"):
        word_problems(1000, seed=0, split="test")  # "mul" has about 31 test pairs of numbers
    with pytest.raises(ValueError, match="split must be"):
        word_problems(1, seed=0, split="validation")


def test_math_web_corpus_shows_every_value_in_both_conditions():
    """Injected, a times-table page still says each product's value after its factors, and the
    worksheets ask the probes' questions with the work that answers them."""
    docs = math_web_corpus(400, seed=0)
    tables = [d for d in docs if d.startswith("The ") and "times table" in d]
    assert tables
    for d in tables:
        injected = inject_domain_tokens(d, "mul").text
        for a, b, c in re.findall(r"(\d) × (\d) = (\d+)", d):
            assert f"{a} times {b} is {c}." in injected
        assert "<MUL_" in injected
    sheets = [d for d in docs if d.startswith("Worksheet")]
    assert sheets and any(" plus " in d for d in sheets) and any(" times " in d for d in sheets)
    for d in sheets:
        blocks = d.split("\nQ: ")[1:]
        assert blocks
        for block in blocks:  # the work starts from the question's own numbers
            x, word, y = re.match(r"What is (\d+) (times|plus|×|\+) (\d+)\?\nA: ", block).groups()
            op = {"times": "×", "plus": "+"}.get(word, word)
            assert f"\n{x} {op} {y} = " in "\n" + block.split("\nA: ", 1)[1], block


def test_math_web_corpus_has_facts():
    docs = math_web_corpus(200, seed=0)
    assert docs == math_web_corpus(200, seed=0) and docs != math_web_corpus(200, seed=1)
    assert len(docs) == 200 and all(isinstance(d, str) and d for d in docs)
    # standalone facts (not the `40 × 6 + 5 × 6 = 240 + 30` sums of a worked product)
    facts = re.findall(r"(?<!\+ )\b([1-9]) ?[×*x] ?([1-9]) ?= ?(\d+)\b(?! \+)", "\n".join(docs))
    assert len(facts) >= 200
    for a, b, c in facts:
        assert int(a) * int(b) == int(c)
    for d in docs:  # every annotated word problem inside is right too
        for expr, res in ANNOT.findall(d):
            assert safe_eval(expr) == int(res)


# ---------------------------------------------------------------------------- GSM-SBS from GSM8K items

def _gsm(q, *lines):
    return {"question": q, "answer": "\n".join(lines)}


def check_rewrite(original: str, rewritten: str) -> list[str]:
    """The inserted step lines; checks that the GSM8K lines are kept in order, character for
    character, that every annotation evaluates, and that every step line's `=` chain is exact."""
    assert rewritten.rsplit("\n", 1)[1] == original.rsplit("\n", 1)[1] and original.rsplit("\n", 1)[1].startswith("####")
    orig_lines = original.split("\n")
    kept = [ln for ln in rewritten.split("\n") if ln in orig_lines]
    assert kept == orig_lines
    steps = [ln for ln in rewritten.split("\n") if ln not in orig_lines]
    for ln in steps:
        assert "<<" not in ln and len({safe_eval(p) for p in ln.split(" = ")}) == 1, ln
    assert check_annotations(rewritten) == []
    for expr, res in ANNOT.findall(rewritten):
        assert abs(evaluate(expr) - float(res.replace(",", ""))) < 1e-6 * max(1.0, abs(float(res.replace(",", ""))))
    return steps


def test_rewrite_known_cases():
    # one product: its steps go right before the line that uses it
    a = _gsm("q", "He buys 12 * 15 = <<12*15=180>>180 eggs.", "He sells 180-5 = <<180-5=175>>175.", "#### 175")
    r = rewrite_answer(a["answer"])
    assert r.split("\n")[:2] == mul_steps(12, 15) and len(mul_steps(12, 15)) == 2
    assert check_rewrite(a["answer"], r) == mul_steps(12, 15)
    # a product used twice is worked once; a step already written (2 × 15 inside 12 × 15) is not repeated
    b = _gsm("q", "x = <<2*15=30>>30", "y = <<12*15=180>>180 and <<12*15=180>>180 again", "#### 210")
    steps = check_rewrite(b["answer"], rewrite_answer(b["answer"]))
    assert steps == mul_steps(12, 15) and len(steps) == 2
    assert rewrite_answer(b["answer"]).split("\n")[0] == mul_steps(2, 15)[0]
    # money results (`60.00`) and factor order as written; 5 × 12 takes 1 line, 147 × 8 two
    c = _gsm("q", "She gets 5*12 = $<<5*12=60.00>>60.00", "and 147*8 = <<147*8=1176>>1176", "#### 1236")
    steps = check_rewrite(c["answer"], rewrite_answer(c["answer"]))
    assert steps == mul_steps(5, 12) + mul_steps(147, 8)
    assert steps[0].startswith("5 × 12 = ") and len(mul_steps(5, 12)) == 1 and len(mul_steps(147, 8)) == 2
    # left alone: facts, ×10, decimals, three factors, products inside larger expressions
    for expr, res in [("6*9", "54"), ("10*37", "370"), ("37*100", "3700"), ("0.5*12", "6"), ("2*3*14", "84"),
                      ("5*12+3", "63"), ("(5*12)", "60")]:
        assert rewrite_answer(f"It is <<{expr}={res}>>{res}\n#### {res}") is None, expr
    # ... and a clean product beside them is still rewritten, the others untouched
    d = _gsm("q", "<<0.5*12=6>>6 and <<2*3*14=84>>84", "<<13*14=182>>182", "#### 182")
    assert check_rewrite(d["answer"], rewrite_answer(d["answer"])) == mul_steps(13, 14)
    # items left out: an annotation the calculator cannot check, a wrong result, too many steps
    assert rewrite_answer("<<560//10=56>>56 and <<12*15=180>>180\n#### 1") is None
    assert rewrite_answer("<<12*15=181>>181\n#### 181") is None
    assert len(mul_steps(98, 3400)) > MAX_STEP_LINES and rewrite_answer("<<98*3400=333200>>\n#### 333200") is None


def test_gsm_sbs_rewrite_seeded_and_mixed():
    recs = [_gsm(f"q{i}", f"He buys {i} * 15 = <<{i}*15={i * 15}>>{i * 15}.", f"#### {i * 15}") for i in range(2, 60)]
    recs += [_gsm("fact", "<<6*9=54>>54", "#### 54"), {"question": "no answer"}]
    everything = gsm_sbs_rewrite(recs, None, seed=0)
    assert len(everything) == 57  # i = 2..59 but 10 (×10 is a base case); the fact, the malformed record out
    items = gsm_sbs_rewrite(recs, 20, seed=1)
    assert items == gsm_sbs_rewrite(recs, 20, seed=1) and items != gsm_sbs_rewrite(recs, 20, seed=2)
    assert len({it["id"] for it in items}) == 20 and [it["id"] for it in items] == sorted(it["id"] for it in items)
    for it in items:
        src = recs[int(it["id"].split("-")[1])]
        assert it["question"] == src["question"]
        assert check_rewrite(src["answer"], it["answer"]) == mul_steps(*map(int, re.search(r"<<(\d+)\*(\d+)=", src["answer"]).groups()))
    with pytest.raises(ValueError, match="only 57 records"):
        gsm_sbs_rewrite(recs, 58, seed=0)
    # the gsm_sbs mix: 80% rewritten (512 of 640 in the reference) then drills; no GSM8K = drills only
    mixed = gsm_sbs(25, seed=3, gsm8k=recs)
    assert [it["id"].startswith("gsm_sbs_rw") for it in mixed] == [True] * 20 + [False] * 5
    assert mixed[:20] == gsm_sbs_rewrite(recs, 20, seed=3) and mixed[20:] == gsm_sbs(5, seed=3)
    assert gsm_sbs(25, seed=3, gsm8k=recs, n_rewritten=0) == gsm_sbs(25, seed=3)


def test_rewritten_answers_survive_injection():
    recs = [_gsm("q", f"{a} x {b} = <<{a}*{b}={a * b}>>{a * b}", f"{a * b} - 3 = <<{a * b}-3={a * b - 3}>>{a * b - 3}",
                 f"#### {a * b - 3}") for a in (3, 12, 47, 250) for b in (7, 15, 36)]
    for it in gsm_sbs_rewrite(recs, None, seed=0):
        inj = inject_domain_tokens(it["answer"], "mul")
        assert check_annotations(inj.text, "mul") == []
        assert re.findall(r"<<[^<>]*?=([^<>=]*)>>", inj.text.replace("<MUL", "(MUL")) == \
            re.findall(r"<<[^<>]*?=([^<>=]*)>>", it["answer"])
        # every token that appears is a single-digit fact that was written in the text
        for x, y, v in re.findall(r"<MUL_(\d)_(\d)_(\d+)>", inj.text):
            assert int(x) * int(y) == int(v)
            assert re.search(rf"(?<!\d)({x} [×x*] {y}|{y} [×x*] {x}|{x}\*{y}|{y}\*{x})(?!\d)", it["answer"])


def test_step_facts_become_domain_tokens():
    steps = "\n".join(mul_steps(12, 15))  # 2 × 15 = ... = 2 × 10 + 2 × 5 = 20 + 10 = 30
    assert inject_domain_tokens(steps, "mul").count >= 1


def test_gsm_sbs_from_real_gsm8k(gsm8k_dir):
    import json

    recs = [json.loads(ln) for ln in (gsm8k_dir / "train.jsonl").read_text().splitlines()]
    everything = gsm_sbs_rewrite(recs, None, seed=0)
    print(f"\nGSM8K train: {len(everything)} of {len(recs)} items rewritable")
    assert 2000 < len(everything) < len(recs)
    items = gsm_sbs(640, seed=0, gsm8k=recs)
    rewritten = [it for it in items if it["id"].startswith("gsm_sbs_rw")]
    assert len(items) == 640 and len(rewritten) == 512
    for it in everything:
        src = recs[int(it["id"].split("-")[1])]
        assert it["question"] == src["question"]
        steps = check_rewrite(src["answer"], it["answer"])
        assert 1 <= len(steps)
        inj = inject_domain_tokens(it["answer"], "mul").text
        assert check_annotations(inj, "mul") == []


def test_sft_source_gsm_sbs_uses_gsm8k_path(tmp_path):
    import json

    from domtok.train.sft_data import DataSource, load_records

    recs = [_gsm(f"q{i}", f"He buys {i} * 15 = <<{i}*15={i * 15}>>{i * 15}.", f"#### {i * 15}") for i in range(11, 31)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    got = load_records(DataSource(kind="gsm_sbs", path=str(path), n=10, seed=4, repeat=2))
    assert got == (gsm_sbs_rewrite(recs, 8, seed=4) + gsm_sbs(2, seed=4)) * 2
    assert load_records(DataSource(kind="gsm_sbs", n=10, seed=4)) == gsm_sbs(10, seed=4)  # no path: drills
    with pytest.raises(DomtokError, match=str(path)):
        load_records(DataSource(kind="gsm_sbs", path=str(path), n=100))  # 80 rewritten wanted, 20 exist


def test_probe_pairs_are_held_out_of_every_training_generator():
    """The probes ask sums and products that no generated training text asks, works, or shows as
    a step of another problem: every question's operand pair and every line that starts working a
    pair is outside `probe_pair`; every sum, difference and product inside a worked chain
    (`90 × 7` of `98 × 7`, `70 + 15` of `47 + 38`, `65 - 7` of `85 - 27`), read here by a
    test-local parser, is one `training_step_pairs` knows, and no probe asks one; the word
    problems' test split is not filtered (it is a test)."""
    from domtok.data.steps import held_out, probe_pair, training_step_pairs
    from domtok.data.word_problems import _WORKED_PAIRS
    from domtok.eval.probes import make_probes

    ops = {"plus": "+", "times": "×", "minus": "-", "+": "+", "×": "×", "-": "-"}
    # probe_pair itself: commutative ops are one pair, single-digit facts are never held out,
    # and about a fifth of the multi-digit pairs are
    assert probe_pair("+", 47, 38) == probe_pair("+", 38, 47) and probe_pair("×", 72, 7) == probe_pair("×", 7, 72)
    assert not any(probe_pair(op, a, b) for op in "+×-" for a in range(10) for b in range(10))
    share = sum(probe_pair("+", a, b) for a in range(1, 101) for b in range(1, 101)) / 10_000
    assert 0.17 < share < 0.23

    probes = make_probes(("mul_multidigit", "addition", "subtraction", "mul_2digit"), 100)
    probes += make_probes(("mul_multidigit", "addition", "subtraction", "mul_2digit"), 100, split="dev")
    for it in probes:
        a, word, b = re.fullmatch(r"What is (\d+) (\w+) (\d+)\?", it["question"]).groups()
        assert probe_pair(ops[word], int(a), int(b)) and held_out(ops[word], int(a), int(b)), it
    asked = {(ops[w], int(a), int(b)) for a, w, b in
             (re.fullmatch(r"What is (\d+) (\w+) (\d+)\?", it["question"]).groups() for it in probes)}
    asked |= {(op, b, a) for op, a, b in asked if op != "-"}

    def pairs_in(text):  # the problems a text poses: its questions and the sums/differences it works
        found = re.findall(r"What is (\d+) (plus|times|minus|\+|×|-) (\d+)\?", text)
        found += [(a, "×", b) for a, b in re.findall(r"How to multiply (\d+) by (\d+)", text)]
        found += re.findall(r"(?m)^(?:\w+ has |The change is |In total \w+ has )?(\d+) ([+-]) (\d+) = ", text)
        return {(ops[w], int(a), int(b)) for a, w, b in found}

    def steps_in(text):  # every operation a worked chain shows: the first two numbers of a product
        # or difference in a `=` segment (`85 - 20 - 7` computes 85 - 20 first), or two numbers of
        # one sum (`40 + 7 + 30 + 8` adds 40 + 30)
        found = set()
        for chain in re.findall(r"\d[\d ()+\-×]*(?: = [\d ()+\-×]+)+", text):
            for seg in chain.split(" = "):
                for a, op, b in re.findall(r"(?=(?<![\d×-] )(?<!\d)(\d+) ([×-]) (\d+)(?!\d))", seg):
                    found.add((op, int(a), int(b)))
                for group in re.findall(r"\(([^()]*)\)", seg) + [re.sub(r"\([^()]*\)", "_", seg)]:
                    terms = [int(t) for t in group.split(" + ") if t.strip().isdigit()]
                    found |= {("+", x, y) for x in terms for y in terms if x != y or terms.count(x) > 1}
        return found

    texts = [it["question"] + "\n" + it["answer"] for k in ("tier3", "tier4", "tier5", "add_100", "mul_2x1")
             for it in drills(k, 2000, seed=0)]
    texts += [it["question"] + "\n" + it["answer"] for it in gsm_sbs(500, seed=0)]
    train = word_problems(2000, seed=0, split="train")
    texts += [it["question"] + "\n" + it["answer"] for it in train]
    texts += math_web_corpus(3000, seed=0)
    seen = set().union(*map(pairs_in, texts))
    assert len(seen) > 5000
    assert not any(probe_pair(*p) for p in seen)
    assert not asked & ({(op, a, b) for op, a, b in seen} | {(op, b, a) for op, a, b in seen if op != "-"})
    assert not any(probe_pair(*p) for it in train for p in _WORKED_PAIRS[it["template"]](*it["params"]))
    test = word_problems(200, seed=0, split="test") + word_problems(200, seed=0, split="dev")
    assert any(probe_pair(*p) for it in test for p in _WORKED_PAIRS[it["template"]](*it["params"]))

    # the steps: every one the texts show is known, none is asked, and some reserved pairs
    # (`probe_pair`) are shown as steps, e.g. 50 × 8 of 58 × 8: those are not held out
    steps = set().union(*map(steps_in, texts))
    known = training_step_pairs()
    key = lambda op, a, b: (op, min(a, b), max(a, b)) if op != "-" else (op, a, b)  # noqa: E731
    assert len(steps) > 3000 and {key(*p) for p in steps} <= known
    assert not asked & steps
    reserved_steps = [p for p in steps if probe_pair(*p)]
    assert len(reserved_steps) > 50 and not any(held_out(*p) for p in reserved_steps)
    assert ("×", 50, 8) in steps and probe_pair("×", 50, 8) and not held_out("×", 50, 8)
