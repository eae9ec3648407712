"""GSM8K: answer extraction, OpenAI's own labels as an external check, and the evaluation run."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domtok.engine import Generation
from domtok.errors import DomtokError
from domtok.eval.gsm8k import GSM8KEvalConfig, extract_answer, is_correct, read_answer, run
from domtok.notation import normalize_number, parse_gold

MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


@pytest.mark.parametrize("text,strict,flexible", [
    ("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18", "18", "18"),
    ("#### $1,000", "1000", "1000"),
    ("#### 18.00", "18", "18"),
    ("#### -5", "-5", "-5"),
    ("So the total is 42 dollars.", None, "42"),
    ("The answer is 1,234.50.", None, "1234.5"),
    ("The answer is: $7", None, "7"),
    ("The answer is 12. Then 99 more", None, "12"),            # the stated answer, not the last number
    ("Work: 3 + 4 = 7\nA: 7", None, "7"),                     # the GSM8K paper's form
    ("It weighs 5kg", None, "5"),                              # a unit glued to the number
    ("The tax rate is 25%", None, "25"),
    ("He lost 10-3=7 then owes -4", None, "-4"),              # '-' after a digit is an operator
    ("10-3=7", None, "7"),
    ("no number here", None, None),
    ("#### 7\nUser: #### 9", "7", "7"),                         # the first #### wins
    ("It costs .5 dollars", None, "0.5"),
])
def test_extract_answer(text, strict, flexible):
    assert extract_answer(text, "strict") == strict
    assert extract_answer(text, "flexible") == flexible


def test_domain_token_digits_are_never_read():
    # the operands 6 and 9 inside the token are never a number; the token states its value
    assert extract_answer("She has <MUL_6_9_54> eggs", "flexible") == "54"
    assert extract_answer("#### <MUL_6_9_54>", "strict") == "54"
    assert extract_answer("The answer is <MUL_9_6_54>", "flexible") == "54"  # non-canonical order
    assert extract_answer("<MUL_2_3_6> then 10 more", "flexible") == "10"
    assert extract_answer("<MUL_2_3_6>", "flexible") == "6"
    assert extract_answer("<MUL_2_3_6>", "strict") is None
    assert is_correct("#### <MUL_6_9_54>", 54) and not is_correct("#### <MUL_6_9_54>", 6)
    assert not is_correct("x <MUL_6_9_54>", "9")


@pytest.mark.parametrize("text,flexible,rule", [
    # to "What is 7 times 8?": right, right, right, right, right, wrong, wrong
    ("7 × 8 = 56", "56", "last"),
    ("7 × 8 = <MUL_7_8_56>", "56", "last"),
    ("<MUL_7_8_56>", "56", "last"),
    ("So 7 times 8 is 56.\n#### 56", "56", "####"),
    ("The answer is 56", "56", "answer is"),
    ("7 × 8 = 54", "54", "last"),
    ("7", "7", "last"),
    # operands are never the answer, wherever the statement sits
    ("So the product is 7 × 8", None, None),                    # old: 8
    ("The answer is 7 × 8 = 56", "56", "answer is"),            # old: 7
    ("#### 7 × 8 = 56", "56", "####"),                          # old: 7
    ("A: 7 times 8 is 56", "56", "A:"),                         # old: 7
    ("56 apples. Check: 7 × 8", "56", "last"),                  # old: 8
    ("12 × 12 = (10 + 2) × 12 = 10 × 12 + 2 × 12 = 120 + 24 = 144", "144", "last"),
    ("The answer is 7 × 8. So 60", "60", "last"),               # an unanswered "answer is" falls through
    ("x = -4", "-4", "last"),
    ("a 4 x 8 sheet", None, None),
])
def test_read_answer_reads_statements(text, flexible, rule):
    a = read_answer(text, "flexible")
    assert (a.value, a.rule) == (flexible, rule)
    assert extract_answer(text) == flexible


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.integers(0, 999), st.integers(0, 999), st.integers(0, 9999),
       st.sampled_from([" × ", "×", " * ", "*", " x ", " times ", " plus ", " + ", " - ", " / "]),
       st.sampled_from(["", "What is ", "So ", "Q: "]), st.sampled_from(["", "?", ".", "\n"]))
def test_property_restated_operands_are_never_answers(a, b, c, op, lead, end):
    """A restated question states no answer; the same statement with `= c` states c."""
    for mode in ("first", "flexible"):
        assert read_answer(f"{lead}{a}{op}{b}{end}", mode).value is None
        assert read_answer(f"{lead}{a}{op}{b} = {c}{end}", mode).value == str(c)
        assert read_answer(f"{lead}{a}{op}{b}{end} {c}", mode).value == str(c)
        assert read_answer(f"{lead}{a}{op}{b} = <MUL_7_8_56>{end}", mode).value == "56"
    word = " is " if op.strip().isalpha() else " = "
    assert read_answer(f"{a}{op}{b}{word}{c}. Then {a}{op}{b}", "first").value == str(c)


def test_first_mode_and_rules():
    assert read_answer("56, then 7 × 8 = 56 and 12", "first").value == "56"
    assert read_answer("What is 7 times 8? 7 times 8 is 56. Next: 3", "first").value == "56"
    assert read_answer("7 times 8", "first").value is None
    a = read_answer("7 × 8 = <MUL_7_8_56> apples", "first")
    assert (a.value, a.rule, a.from_token) == ("56", "first", True)
    assert read_answer("#### 5", "strict").rule == "####" and read_answer("5", "strict").value is None
    with pytest.raises(ValueError):
        read_answer("5", "last")


def test_is_correct_and_gold():
    assert parse_gold("blah\n#### 1,000") == "1000"
    assert is_correct("#### 18.0", "18") and is_correct("answer: $18", 18)
    assert not is_correct("The answer is 17", "18")
    assert not is_correct("18", "18", mode="strict") and is_correct("18", "18")
    assert normalize_number("-0.50") == "-0.5" and normalize_number("abc") is None
    with pytest.raises(ValueError):
        parse_gold("no final line")
    with pytest.raises(ValueError):
        extract_answer("x", mode="lenient")


def test_openai_labels_agree(gsm8k_dir):
    """Grade OpenAI's 5,276 example solutions against test.jsonl gold; their labels must agree.

    Measured agreement is 5,276 / 5,276 (100%), so any disagreement is a regression. Every
    solution ends with `A: N` and OpenAI graded by that number; our flexible extraction reads
    it (no `####` and no "The answer is" occur in these solutions).
    """
    sols = [json.loads(line) for line in open(gsm8k_dir / "example_model_solutions.jsonl")]
    test = [json.loads(line) for line in open(gsm8k_dir / "test.jsonl")]
    assert len(sols) == len(test) == 1319
    n, disagree = 0, []
    for i, (s, t) in enumerate(zip(sols, test)):
        assert s["question"] == t["question"]
        gold = parse_gold(t["answer"])
        for m in MODELS:
            n += 1
            ours = is_correct(s[m]["solution"], gold)
            if ours != s[m]["is_correct"]:
                disagree.append((i, m, gold, extract_answer(s[m]["solution"]), s[m]["is_correct"]))
    assert n == 5276
    assert disagree == [], f"{len(disagree)} disagreements, e.g. {disagree[:5]}"
    # the ground-truth solutions in the same file grade as correct too
    assert all(is_correct(s["ground_truth"], parse_gold(t["answer"])) for s, t in zip(sols, test))


def test_math_verify_agrees(gsm8k_dir):
    """math-verify (Hugging Face's grader, an independent reference) grades the same 5,276
    solutions as we do: measured 5,276 / 5,276, so any disagreement is a regression."""
    math_verify = pytest.importorskip("math_verify")
    sols = [json.loads(line) for line in open(gsm8k_dir / "example_model_solutions.jsonl")]
    test = [json.loads(line) for line in open(gsm8k_dir / "test.jsonl")]
    disagree = []
    for i, (s, t) in enumerate(zip(sols, test)):
        gold = parse_gold(t["answer"])
        parsed_gold = math_verify.parse(gold)
        for m in MODELS:
            text = s[m]["solution"]
            theirs = bool(math_verify.verify(parsed_gold, math_verify.parse(text)))
            if is_correct(text, gold) != theirs:
                disagree.append((i, m, gold, read_answer(text), theirs))
    assert disagree == [], f"{len(disagree)} disagreements, e.g. {disagree[:5]}"


# ---- the run, with a stub engine that answers known strings ----

class StubTokenizer:
    """Byte-level ids; ids >= 1000 stand for domain tokens."""

    uses_domain_tokens = False
    condition = "baseline"
    eot_id = 0

    def encode(self, text):
        return list(text.encode())

    def count_domain_tokens(self, ids):
        return sum(1 for i in ids if i >= 1000)


class StubEngine:
    """Answers item k's gold for every item whose question mentions an even number of 'a's."""

    def __init__(self, answers):
        self.tokenizer = StubTokenizer()
        self.answers = answers  # question text -> (completion, finish_reason, ids)
        self.calls = []

    def generate(self, prompts, params, num_samples=1, batch_size=32):
        self.calls.append((len(prompts), params))
        out = []
        for k, p in enumerate(prompts):
            q = p.split("User: ", 1)[1].split("\nAssistant:")[0]
            text, reason, ids = self.answers[q]
            out.append(Generation(k, 0, ids, text, reason, len(ids)))
        return out


QUESTIONS = [
    ("Tom has 3 apples and buys 4 more. How many?", "3 + 4 = <<3+4=7>>7\n#### 7"),
    ("A box holds 6 rows of 9 cans. How many cans?", "6 * 9 = <<6*9=54>>54\n#### 54"),
    ("Sue earns $1,200 a month. How much in a year?", "1200 * 12 = <<1200*12=14400>>14400\n#### 14,400"),
    ("Ann had 10 pens and gave away 12. Net?", "10 - 12 = <<10-12=-2>>-2\n#### -2"),
    ("What is half of 9?", "9 / 2 = <<9/2=4.5>>4.5\n#### 4.5"),
]


@pytest.fixture
def gsm_file(tmp_path):
    f = tmp_path / "test.jsonl"
    f.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    return f


def test_run_metrics_with_stub_engine(gsm_file, tmp_path):
    answers = {
        QUESTIONS[0][0]: ("3 + 4 = 7\n#### 7", "eos", [1, 2, 0]),                     # right, strict
        QUESTIONS[1][0]: ("<MUL_6_9_54> cans", "eos", [1000, 5, 0]),                  # right (flexible only)
        QUESTIONS[2][0]: ("The answer is $14,400.", "eos", [1, 2, 3, 0]),           # right (flexible only)
        QUESTIONS[3][0]: ("the the the the the the " * 5, "length", list(range(8))),  # wrong, loops
        QUESTIONS[4][0]: ("#### 5", "stop", [7, 7]),                                  # wrong
    }
    eng = StubEngine(answers)
    cfg = GSM8KEvalConfig(model="stub", data=str(gsm_file), batch_size=2, max_new_tokens=8, device="cpu")
    s = run(cfg, tmp_path / "out", engine=eng)
    m = s["metrics"]
    assert m["accuracy_strict"] == pytest.approx(1 / 5)
    assert m["accuracy_flexible"] == pytest.approx(3 / 5)
    assert m["hit_max_rate"] == pytest.approx(1 / 5) and m["eos_rate"] == pytest.approx(3 / 5)
    assert m["repetition_rate"] == pytest.approx(1 / 5)
    assert m["domain_tokens_total"] == 1 and m["avg_response_tokens"] == pytest.approx((3 + 3 + 4 + 8 + 2) / 5)
    lo, hi = s["ci"]["accuracy_flexible"]
    assert lo < 0.6 < hi
    assert [c[0] for c in eng.calls] == [2, 2, 1] and eng.calls[0][1].max_new_tokens == 8
    assert eng.calls[0][1].temperature == 0.0 and eng.calls[0][1].stop_strings == ("\nUser:",)
    rows = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"test-{i}" for i in range(5)]  # dataset order, not batch order
    assert [r["answer_rule"] for r in rows] == ["####", "last", "answer is", None, "####"]  # which rule read it
    need = {"id", "prompt", "completion", "ids", "answer_strict", "answer_flexible", "gold", "correct_strict",
            "correct_flexible", "correct", "response_tokens", "hit_max_tokens", "emitted_eos", "domain_tokens",
            "repetition"}
    assert need <= set(rows[0])
    assert rows[1]["answer_flexible"] == "54" and rows[1]["domain_tokens"] == 1
    assert rows[2]["gold"] == "14400" and rows[3]["gold"] == "-2"
    assert rows[0]["prompt"] == f"User: {QUESTIONS[0][0]}\nAssistant:"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["benchmark"] == "gsm8k" and summary["n"] == 5 and len(summary["config_hash"]) == 16
    assert not (tmp_path / "out" / "manifest.json").exists()  # the caller writes it (domtok.manifest)


def test_synthetic_word_problems_carry_template_and_split(tmp_path):
    """gsm_synthetic rows say their template, whether it multiplies, and their split; dev and
    test share no question; an unknown split is a clear error."""
    from domtok.data.word_problems import TEMPLATE_HAS_MUL, word_problems
    from domtok.eval.gsm8k import SYNTHETIC_SOURCE, load_items

    test = load_items(GSM8KEvalConfig(data=SYNTHETIC_SOURCE, n=40))
    dev = load_items(GSM8KEvalConfig(data=SYNTHETIC_SOURCE, n=40, split="dev"))
    assert [it["question"] for it in test] == [r["question"] for r in word_problems(40, 0, "test")]
    assert not {it["question"] for it in test} & {it["question"] for it in dev}
    assert test[0]["id"] == "synthetic-test-0" and dev[0]["id"] == "synthetic-dev-0"
    assert {it["template"] for it in test} == set(TEMPLATE_HAS_MUL)
    assert all(it["has_mul"] == TEMPLATE_HAS_MUL[it["template"]] for it in test + dev)
    answers = {it["question"]: (f"#### {it['gold']}" if it["has_mul"] else "#### 0", "eos", [0]) for it in dev}
    s = run(GSM8KEvalConfig(model="stub", data=SYNTHETIC_SOURCE, n=40, split="dev", device="cpu"), tmp_path / "o",
            engine=StubEngine(answers))
    rows = [json.loads(line) for line in (tmp_path / "o" / "items.jsonl").read_text().splitlines()]
    assert [(r["id"], r["template"], r["has_mul"]) for r in rows] == [(it["id"], it["template"], it["has_mul"]) for it in dev]
    assert {r["split"] for r in rows} == {"dev"} and all(r["correct"] == r["has_mul"] for r in rows)
    assert s["metrics"]["accuracy_flexible"] == 0.5
    with pytest.raises(DomtokError, match="not an evaluation split"):
        load_items(GSM8KEvalConfig(data=SYNTHETIC_SOURCE, split="train"))


def test_seeded_subset_and_errors(gsm_file, tmp_path):
    answers = {q: ("#### 0", "eos", [0]) for q, _ in QUESTIONS}
    ids = []
    for _ in range(2):
        cfg = GSM8KEvalConfig(model="stub", data=str(gsm_file), n=3, seed=7, device="cpu")
        run(cfg, tmp_path / "sub", engine=StubEngine(answers))
        ids.append([json.loads(line)["id"] for line in (tmp_path / "sub" / "items.jsonl").read_text().splitlines()])
    assert ids[0] == ids[1] and len(ids[0]) == 3
    cfg = GSM8KEvalConfig(model="stub", data=str(gsm_file), inject_prompt=True, device="cpu")
    with pytest.raises(DomtokError, match="domain-token model"):
        run(cfg, tmp_path / "inj", engine=StubEngine(answers))
    with pytest.raises(DomtokError):
        run(GSM8KEvalConfig(model="stub", data=str(tmp_path / "missing.jsonl"), device="cpu"), tmp_path / "x",
            engine=StubEngine(answers))


# ---- the CLI on a tiny real model (real engine, real tokenizer) ----

@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import torch

    from domtok.model.checkpoint import save_model_dir
    from domtok.model.gpt import GPT, GPTConfig
    from domtok.tokens.build import train_bpe
    from domtok.tokens.tokenizer import load_tokenizer

    d = tmp_path_factory.mktemp("tiny_gsm")
    train_bpe([q + " " + a for q, a in QUESTIONS] * 5, 300, d / "bpe")
    tok = load_tokenizer(str(d / "bpe"), "mul_tokens")
    torch.manual_seed(0)
    save_model_dir(GPT(GPTConfig(block_size=128, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32)),
                   tok, d / "model")
    return d / "model"


def test_cli_on_tiny_model(tiny_model_dir, gsm_file, tmp_path, capsys):
    from domtok.cli import main as cli_main
    from domtok.tokens.tokenizer import Tokenizer

    out = tmp_path / "run"
    rc = cli_main(["eval", "gsm8k", "--model", str(tiny_model_dir), "--data", str(gsm_file), "--n", "3",
                   "--max-new-tokens", "8", "--batch-size", "2", "--device", "cpu", "--inject-prompt",
                   "--calculator", "--out", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["n"] == 3 and "accuracy_flexible" in printed["metrics"]
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    tok = Tokenizer.load(tiny_model_dir)
    for r in rows:
        assert 1 <= r["response_tokens"] == len(r["ids"]) <= 8
        assert r["hit_max_tokens"] == (r["finish_reason"] == "length")
        assert r["domain_tokens"] == tok.count_domain_tokens(r["ids"])
        assert r["correct_flexible"] == is_correct(r["completion"], r["gold"])
    # the prompt is the chat prompt of the injected question
    from domtok.chat import render_prompt
    from domtok.tokens.inject import inject_domain_tokens

    expected = {render_prompt(inject_domain_tokens(q, "mul").text) for q, _ in QUESTIONS}
    assert all(r["prompt"] in expected for r in rows)
    cfg_text = (out / "config.yaml").read_text()
    assert "inject_prompt: true" in cfg_text and "calculator: true" in cfg_text and "n: 3" in cfg_text


def test_cli_bad_input_exits_2(tmp_path, capsys):
    from domtok.cli import main as cli_main

    assert cli_main(["eval", "gsm8k", "--data", "x.jsonl"]) == 2
    assert "--model" in capsys.readouterr().err
    assert cli_main(["eval", "gsm8k", "--model", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli_main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "items.jsonl" in capsys.readouterr().err


def test_repetition_flag():
    from domtok.eval.common import is_repetitive

    assert not is_repetitive("She buys 3 apples for $2 = $6.\nThen 6 + 4 = 10.\n#### 10")
    assert is_repetitive("He has 5 apples now.\nHe has 5 apples now.\n")          # a repeated line
    assert is_repetitive("so the total is 5 " * 4)  # a looping 6-gram (3 full repeats)
    assert not is_repetitive("so the total is 5 so the total is 5")                # twice is allowed
