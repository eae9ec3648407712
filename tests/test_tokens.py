"""Domain token sets and tokenizers: layout, tiktoken parity, HF export, save/load, CLI."""

from __future__ import annotations

import io
import json
import operator
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domtok import cli
from domtok.errors import DomtokError
from domtok.tokens.sets import MUL, TOKEN_SETS, condition_token_set, fact_token_set, get_token_set
from domtok.tokens.bpe import EOT, gpt2_vocab_merges, merges_from_ranks, token_bytes
from domtok.tokens.build import train_bpe
from domtok.tokens.tokenizer import Tokenizer, load_tokenizer

# A mixed corpus: prose, math, GSM8K-style annotations, unicode, odd whitespace, token texts.
MIXED = [
    "Hello world",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72",
    "So 6 x 9 = 54, 6*9=54 and 6 × 9 = 54; also <MUL_6_9_54> and <MUL_9_6_54>.",
    "wrong: <MUL_9_6_55>, partial <MUL_6_9, nested <<MUL_2_3_6>> and x<MUL_1_1_1>y<MUL_9_9_81>",
    "  leading spaces,\ttabs\t\tand\n\n\nnewlines   \n  ",
    "Unicode: café naïve 日本語のテキスト 😀🎉 — “quotes” ½ ∑ Ω",
    "don't won't it's we'll they've I'm you're 'quoted'",
    "code: for i in range(10): x = 3*4  # 2x4 lumber, 1920x1080, 0.5*4, 105 × 8",
    "",
    " ",
]
# Special-token texts inside a document are ordinary text for domtok (transformers, like
# GPT-2's own HF tokenizer, maps them to their ids, so these stay out of the HF comparison).
WITH_EOT = ["doc one<|endoftext|>doc two", "<|endoftext|>", "a <|endoftext|> b <MUL_6_9_54>",
            "<|padding_0|> is just text"]


def _synthetic_corpus(n=1500, seed=0):
    rng = random.Random(seed)
    syllables = "ka lo mi ne su ta re vo pa di gu ze ch th st an er in on at".split()
    words = ("the cat sat on a mat apples cost dollars each how many does she have left total times "
             "Natalia sold clips friends half May April").split()
    words += ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(400)]
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        out.append(" ".join(rng.choice(words) for _ in range(20)) + f" {a} x {b} = {a * b}. It's 48/2.\n")
    return out


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpe")
    train_bpe(_synthetic_corpus() + MIXED, 512, d)
    return d


# ---- token sets -------------------------------------------------------------------------


def test_mul_set_is_45_canonical_facts():
    assert len(MUL.tokens) == 45
    assert MUL.tokens[0].text == "<MUL_1_1_1>" and MUL.tokens[-1].text == "<MUL_9_9_81>"
    assert [t.operands for t in MUL.tokens] == [(a, b) for a in range(1, 10) for b in range(a, 10)]
    for t in MUL.tokens:
        assert t.value == t.operands[0] * t.operands[1] and t.op == "*"
        assert t.text == f"<MUL_{t.operands[0]}_{t.operands[1]}_{t.value}>"
    assert MUL.by_text()["<MUL_6_9_54>"].value == 54
    assert MUL.canonical_text("<MUL_9_6_54>") == "<MUL_6_9_54>"
    assert MUL.canonical_text("<MUL_6_9_54>") == "<MUL_6_9_54>"
    for bad in ("<MUL_9_6_55>", "<MUL_06_9_54>", "<MUL_10_2_20>", "<ADD_6_9_15>", "MUL_6_9_54"):
        assert MUL.canonical_text(bad) is None, bad
    assert MUL.canonicalize("a<MUL_9_6_54>b<MUL_9_6_55>") == "a<MUL_6_9_54>b<MUL_9_6_55>"
    assert get_token_set("mul") is MUL and TOKEN_SETS["mul"] is MUL


def test_conditions_map_to_sets():
    assert condition_token_set("baseline") is None
    assert condition_token_set("mul_tokens") == "mul"
    with pytest.raises(DomtokError, match="unknown condition"):
        condition_token_set("mul_token")


def test_addition_set_is_a_local_addition(gpt2_dir):
    add = fact_token_set("add", "ADD", "+", operator.add, range(0, 10))
    assert len(add.tokens) == 55 and add.canonical_text("<ADD_7_3_10>") == "<ADD_3_7_10>"
    tok = load_tokenizer("gpt2", "add_tokens", token_set=add)
    assert tok.domain_ids["<ADD_0_0_0>"] == 50304 and tok.vocab_size == 50368
    assert tok.encode("<ADD_7_3_10>") == tok.encode("<ADD_3_7_10>") == [tok.domain_ids["<ADD_3_7_10>"]]
    assert tok.decode(tok.encode("x <ADD_7_3_10>")) == "x <ADD_3_7_10>"
    with pytest.raises(DomtokError, match="uses token set"):
        load_tokenizer("gpt2", "mul_tokens", token_set=add)


# ---- gpt2 -------------------------------------------------------------------------------


@pytest.mark.parametrize("condition", ["baseline", "mul_tokens"])
def test_gpt2_layout(gpt2_dir, condition):
    tok = load_tokenizer("gpt2", condition, gpt2_dir=gpt2_dir)
    assert (tok.n_base, tok.eot_id, tok.domain_start, tok.vocab_size) == (50257, 50256, 50304, 50368)
    assert tok.domain_ids["<MUL_1_1_1>"] == 50304
    assert tok.domain_ids["<MUL_6_9_54>"] == 50342
    assert tok.domain_ids["<MUL_9_9_81>"] == 50348
    assert tok.id_to_domain[50342].text == "<MUL_6_9_54>"
    assert tok.uses_domain_tokens == (condition == "mul_tokens")
    assert tok.encode("Hello world") == [15496, 995]


def test_gpt2_matches_tiktoken(gpt2_dir, tiktoken_gpt2, gsm8k_dir):
    lines = (gsm8k_dir / "test.jsonl").read_text().splitlines()[:200]
    corpus = MIXED + [json.loads(x)["question"] + "\n" + json.loads(x)["answer"] for x in lines]
    base = load_tokenizer("gpt2", "baseline")
    want = tiktoken_gpt2.encode_ordinary_batch(corpus + WITH_EOT)
    assert base.encode_batch(corpus + WITH_EOT) == want
    assert [base.encode(t) for t in corpus] == want[: len(corpus)]
    # Without token texts in the text, the domain condition is plain GPT-2 too.
    plain = [t for t in corpus if "<MUL_" not in t]
    assert load_tokenizer("gpt2", "mul_tokens").encode_batch(plain) == tiktoken_gpt2.encode_ordinary_batch(plain)
    for ids in want:
        assert base.decode(ids) == tiktoken_gpt2.decode(ids)


def test_domain_vs_baseline_encoding(gpt2_dir, tiktoken_gpt2):
    base, dom = load_tokenizer("gpt2", "baseline"), load_tokenizer("gpt2", "mul_tokens")
    text = "6 x 9 = <MUL_6_9_54>"
    assert base.encode(text) == tiktoken_gpt2.encode_ordinary(text)  # ordinary BPE, many ids
    assert dom.encode(text) == tiktoken_gpt2.encode_ordinary("6 x 9 = ") + [50342]
    assert dom.encode("<MUL_9_6_54>") == [50342]  # non-canonical -> canonical id
    assert dom.encode("<MUL_9_6_55>") == tiktoken_gpt2.encode_ordinary("<MUL_9_6_55>")
    assert dom.encode_batch(["<MUL_9_6_54>", text]) == [[50342], dom.encode(text)]
    every = " ".join(t.text for t in MUL.tokens)
    assert dom.count_domain_tokens(dom.encode(every)) == 45
    for ids in base.encode_batch(MIXED + WITH_EOT + [every]):
        assert max(ids, default=0) < base.n_base and base.count_domain_tokens(ids) == 0


@pytest.mark.parametrize("condition", ["baseline", "mul_tokens"])
def test_literal_endoftext_is_text(gpt2_dir, bpe_dir, tiktoken_gpt2, condition):
    for tok in (load_tokenizer("gpt2", condition), load_tokenizer(bpe_dir, condition)):
        for text in WITH_EOT:
            ids = tok.encode(text)
            assert tok.eot_id not in ids and tok.count_domain_tokens(ids) == text.count("<MUL_") * tok.uses_domain_tokens
            assert all(i < tok.n_base or i in tok.id_to_domain for i in ids)  # no padding ids
            assert tok.decode(ids) == text
        assert tok.encode_batch(WITH_EOT) == [tok.encode(t) for t in WITH_EOT]
    assert load_tokenizer("gpt2", condition).encode("<|endoftext|>") == tiktoken_gpt2.encode_ordinary(EOT)


@pytest.mark.parametrize("condition", ["baseline", "mul_tokens"])
def test_every_id_decodes(gpt2_dir, tiktoken_gpt2, condition):
    tok = load_tokenizer("gpt2", condition)
    texts = [tok.decode([i]) for i in range(tok.vocab_size)]
    assert texts[tok.eot_id] == EOT
    assert all(t == "" for t in texts[tok.n_base: tok.domain_start] + texts[tok.domain_start + 45:])
    domain = texts[tok.domain_start: tok.domain_start + 45]
    assert domain == ([t.text for t in MUL.tokens] if condition == "mul_tokens" else [""] * 45)
    assert tok.decode(range(tok.n_base)) == tiktoken_gpt2.decode(list(range(tok.n_base)))
    # byte-split sequences: "😀" is several ids; a prefix decodes with a replacement char
    ids = tok.encode("😀")
    assert len(ids) > 1 and tok.decode(ids[:1]) == "\ufffd" and tok.decode(ids) == "😀"
    for bad in (-1, tok.vocab_size):
        with pytest.raises(ValueError):
            tok.decode([bad])


def test_gpt2_merges_from_ranks_match_vocab_bpe(gpt2_dir):
    # the tiktoken-only fallback (no vocab.bpe) must export the same merge rules
    vocab, merges = gpt2_vocab_merges(str(gpt2_dir))
    assert merges_from_ranks({token_bytes(t): i for t, i in vocab.items()}) == merges


def test_gpt2_dir_errors(tmp_path, monkeypatch):
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\na b\n")
    with pytest.raises(DomtokError, match="encoder.json"):
        gpt2_vocab_merges(str(tmp_path))
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(DomtokError, match="not GPT-2's original files"):
        gpt2_vocab_merges(str(tmp_path))
    with pytest.raises(DomtokError, match="tokenizer build"):
        load_tokenizer("bpe-4096", "baseline")


# ---- Hugging Face export ----------------------------------------------------------------


@pytest.mark.parametrize("base", ["gpt2", "bpe"])
@pytest.mark.parametrize("condition", ["baseline", "mul_tokens", "mul_space_tokens"])
def test_hf_export_matches_transformers(gpt2_dir, bpe_dir, tmp_path, base, condition):
    transformers = pytest.importorskip("transformers")
    tok = load_tokenizer("gpt2" if base == "gpt2" else bpe_dir, condition)
    tok.export_hf(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert len(hf) == tok.vocab_size
    assert hf.eos_token_id == tok.eot_id and hf.pad_token_id != hf.eos_token_id
    assert hf.pad_token_id is not None and tok.decode([hf.pad_token_id]) == ""
    # HF knows only canonical token texts; mapping <MUL_9_6_54> to its id is domtok's job
    # (the injector writes canonical texts only).
    corpus = [t for t in MIXED if MUL.canonicalize(t) == t] + _synthetic_corpus(20, seed=1)
    got = [hf(t, add_special_tokens=False)["input_ids"] for t in corpus]
    assert got == tok.encode_batch(corpus)
    ids = tok.encode("so <MUL_6_9_54>!") + [tok.eot_id]
    text = hf.decode(ids, skip_special_tokens=True)
    if condition == "mul_tokens":
        assert text == "so <MUL_6_9_54>!"  # domain tokens are ordinary: they survive
    else:
        assert text == tok.decode(ids[:-1]) == "so <MUL_6_9_54>!"  # baseline: plain BPE
    # padding and reserved ids are special in HF and empty in domtok
    assert hf.decode(list(range(tok.n_base, tok.vocab_size)), skip_special_tokens=True) == \
        tok.decode([i for i in range(tok.n_base, tok.vocab_size) if i not in tok.id_to_domain or tok.uses_domain_tokens])


# ---- the leading-space layout -----------------------------------------------------------


def test_leading_space_layout(gpt2_dir, tiktoken_gpt2):
    ref, sp = load_tokenizer("gpt2", "mul_tokens"), load_tokenizer("gpt2", "mul_space_tokens")
    base = load_tokenizer("gpt2", "baseline", token_set="mul_space")
    # the reference layout stays 50304-50348
    assert (ref.domain_ids["<MUL_1_1_1>"], ref.domain_ids["<MUL_9_9_81>"], ref.vocab_size) == (50304, 50348, 50368)
    assert ref.layout_texts == [t.text for t in MUL.tokens]
    # its own layout: the 45 facts where the reference has them, then the same 45 with a space
    assert condition_token_set("mul_space_tokens") == "mul_space" and TOKEN_SETS["mul_space"].tokens == MUL.tokens
    assert sp.domain_ids == ref.domain_ids
    assert (sp.layout_ids[" <MUL_1_1_1>"], sp.layout_ids[" <MUL_6_9_54>"], sp.layout_ids[" <MUL_9_9_81>"]) == \
        (50349, 50387, 50393)
    assert sp.vocab_size == base.vocab_size == 50432 and sp.id_to_domain[50387].text == "<MUL_6_9_54>"
    # ids: tiktoken's GPT-2 around the tokens; the space before a token joins it in mul_space
    enc = tiktoken_gpt2.encode_ordinary
    text = "So 6 x 9 = 54, i.e. <MUL_6_9_54> and  <MUL_9_6_54>.<MUL_1_1_1>"
    assert ref.encode(text) == enc("So 6 x 9 = 54, i.e. ") + [50342] + enc(" and  ") + [50342] + enc(".") + [50304]
    assert sp.encode(text) == enc("So 6 x 9 = 54, i.e.") + [50387] + enc(" and ") + [50387] + enc(".") + [50304]
    assert base.encode(text) == enc(text)
    assert sp.count_domain_tokens(sp.encode(text)) == 3
    every = " ".join(t.text for t in MUL.tokens)
    assert sp.encode(every) == [50304] + list(range(50350, 50394))
    # decode gives the text back (token texts canonical), for each layout
    for tok in (ref, sp, base):
        for t in MIXED + WITH_EOT + [text, every]:
            assert tok.decode(tok.encode(t)) == (MUL.canonicalize(t) if tok.uses_domain_tokens else t)
        assert tok.decode(list(range(tok.vocab_size))) == tiktoken_gpt2.decode(list(range(50256))) + EOT + (
            "".join(tok.layout_texts) if tok.uses_domain_tokens else "")


ROUND_TRIP = st.lists(st.sampled_from(["<MUL_6_9_54>", "<MUL_9_6_54>", "<MUL_1_1_1>", " ", "  ", "\n", "\t", "a", "é",
                                       "54", "6 x 9", "<MUL_", ">", "<", "_", "😀", "<|endoftext|>"]),
                      max_size=20).map("".join)


@pytest.mark.parametrize("condition", ["mul_tokens", "mul_space_tokens"])
def test_round_trip_property(gpt2_dir, bpe_dir, condition):
    toks = [load_tokenizer("gpt2", condition), load_tokenizer(bpe_dir, condition)]

    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(ROUND_TRIP)
    def check(text):
        for tok in toks:
            ids = tok.encode(text)
            assert tok.decode(ids) == MUL.canonicalize(text)
            # in the leading-space layout a space before a token is always part of it
            if condition == "mul_space_tokens":
                space, bare = tok.encode(" "), set(tok.domain_ids.values())
                assert not any(a == space[0] and b in bare for a, b in zip(ids, ids[1:])), (text, ids)

    check()


def test_injection_settings_are_saved(bpe_dir, tmp_path):
    tok = load_tokenizer(bpe_dir, "mul_tokens")
    assert tok.injection == {"mode": "weak", "word_forms": False}
    assert tok.inject("So 6 x 9 = 54 and 2*3").text == "So <MUL_6_9_54> and <MUL_2_3_6>"
    strict = tok.with_injection("strict", True)
    assert strict.inject("So 6 times 9 is 54 and 2*3").text == "So <MUL_6_9_54> and 2*3"
    strict.save(tmp_path / "t")
    back = Tokenizer.load(tmp_path / "t")
    assert back.injection == {"mode": "strict", "word_forms": True}
    assert back.with_condition("baseline").injection == back.injection
    assert back.with_condition("baseline").inject("2*3").text == "2*3"
    # a tokenizer saved before the settings were recorded reads as the old defaults
    meta = json.loads((tmp_path / "t" / "domtok_tokenizer.json").read_text())
    del meta["injection"]
    (tmp_path / "t" / "domtok_tokenizer.json").write_text(json.dumps(meta))
    assert Tokenizer.load(tmp_path / "t").injection == {"mode": "weak", "word_forms": False}
    meta["injection"] = {"mode": "loose"}
    (tmp_path / "t" / "domtok_tokenizer.json").write_text(json.dumps(meta))
    with pytest.raises(DomtokError, match="injector mode 'loose'"):
        Tokenizer.load(tmp_path / "t")


def test_save_load_round_trip_offline(gpt2_dir, tmp_path, monkeypatch):
    tok = load_tokenizer("gpt2", "mul_tokens")
    tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "domtok_tokenizer.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    monkeypatch.delenv("DOMTOK_GPT2_DIR")  # loading needs no GPT-2 files
    back = Tokenizer.load(tmp_path)
    assert (back.base, back.condition, back.vocab_size, back.domain_ids) == \
        ("gpt2", "mul_tokens", tok.vocab_size, tok.domain_ids)
    assert back.encode_batch(MIXED + WITH_EOT) == tok.encode_batch(MIXED + WITH_EOT)
    assert load_tokenizer(tmp_path, "baseline").encode("<MUL_6_9_54>") != [50342]
    # a tampered vocabulary is caught
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["model"]["vocab"]["Hello"], data["model"]["vocab"]["world"] = 995, 15496
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(DomtokError, match="does not match"):
        Tokenizer.load(tmp_path)
    with pytest.raises(DomtokError, match="domtok_tokenizer.json"):
        Tokenizer.load(tmp_path / "nowhere")


# ---- trained BPE ------------------------------------------------------------------------


def test_train_bpe_layout_and_determinism(bpe_dir, tmp_path):
    tok = load_tokenizer(bpe_dir, "mul_tokens")
    assert (tok.base, tok.n_base, tok.eot_id, tok.domain_start, tok.vocab_size) == ("bpe-512", 512, 511, 512, 576)
    assert tok.encode("<MUL_9_6_54>") == [tok.domain_start + 38]
    for text in MIXED:
        assert tok.decode(tok.encode(text)) == MUL.canonicalize(text)
    assert tok.encode_batch(MIXED) == [tok.encode(t) for t in MIXED]
    assert [tok.decode([i]) for i in range(576)][tok.eot_id] == EOT
    train_bpe(_synthetic_corpus() + MIXED, 512, tmp_path)
    assert (tmp_path / "tokenizer.json").read_bytes() == (bpe_dir / "tokenizer.json").read_bytes()
    # a corpus that runs out of merges gives fewer base ids; the layout rule still holds
    train_bpe(["ab abc abcd"] * 10, 400, tmp_path / "short")
    short = load_tokenizer(tmp_path / "short", "mul_tokens")
    assert short.n_base < 400 and short.eot_id == short.n_base - 1
    assert short.domain_start == 320 and short.vocab_size == 384  # 256 bytes + merges + EOT -> 320
    assert short.decode(short.encode("abcd <MUL_6_9_54> é")) == "abcd <MUL_6_9_54> é"
    with pytest.raises(DomtokError):
        train_bpe(["x"], 100, tmp_path / "small")


def test_train_bpe_split_digits(tmp_path):
    """No merge joins a digit, so every number is one token per digit, and the saved
    tokenizer.json says the same to transformers (which applies GPT-2's own pre-tokenizer)."""
    transformers = pytest.importorskip("transformers")
    corpus = _synthetic_corpus() + MIXED + [f"{a} + {b} = {a + b} and 1,234,567" for a in range(100) for b in (7, 38)]
    plain = train_bpe(corpus, 512, tmp_path / "plain")
    split = train_bpe(corpus, 512, tmp_path / "split", split_digits=True)
    assert not plain.splits_digits and split.splits_digits
    assert len(plain.encode("47 + 38 = 85")) < 12  # the plain BPE has learnt multi-digit tokens
    tok = load_tokenizer(tmp_path / "split", "mul_tokens")
    text = "Ava has 47 + 38 = 85, <MUL_6_9_54> and 1234."
    pieces = [tok.decode([i]) for i in tok.encode(text)]
    assert [p for p in pieces if any(c.isdigit() for c in p) and not p.startswith("<MUL")] == list("4738851234")
    assert tok.decode(tok.encode(text)) == text
    tok = tok.with_condition("baseline")
    tok.export_hf(tmp_path / "hf")
    fast = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    texts = corpus[-20:] + MIXED + ["year 2024: 3.14159, -42, x9y8"]
    assert [fast(t, add_special_tokens=False)["input_ids"] for t in texts] == tok.encode_batch(texts)


# ---- CLI --------------------------------------------------------------------------------


def _run(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_tokenize(gpt2_dir, capsys, monkeypatch):
    rc, out, _ = _run(["tokenize", "--tokenizer", "gpt2", "--condition", "baseline", "Hello world"], capsys)
    assert rc == 0 and json.loads(out) == [15496, 995]
    rc, out, _ = _run(["tokenize", "--condition", "mul_tokens", "-"], capsys, "<MUL_9_6_54>", monkeypatch)
    assert rc == 0 and json.loads(out) == [50342]
    rc, _, err = _run(["tokenize", "--condition", "nope", "x"], capsys)
    assert rc == 2 and "unknown condition" in err


def test_cli_tokenizer_build_and_fix(gpt2_dir, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in _synthetic_corpus(300)) + "not json\n")
    rc, out, _ = _run(["tokenizer", "build", "--base", "bpe-300", "--corpus", str(corpus),
                       "--out", str(tmp_path / "tok")], capsys)
    assert rc == 0 and "bpe-300" in out
    assert json.loads((tmp_path / "tok" / "bpe_train.json").read_text())["skipped"] == 1
    assert load_tokenizer(tmp_path / "tok", "mul_tokens").vocab_size == 384

    # A reference-style HF export: domain tokens registered as special, pad == eos.
    model = tmp_path / "hf_model"
    load_tokenizer("gpt2", "mul_tokens").export_hf(model)
    data = json.loads((model / "tokenizer.json").read_text())
    for t in data["added_tokens"]:
        t["special"] = True
    (model / "tokenizer.json").write_text(json.dumps(data))
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg.pop("added_tokens_decoder")
    cfg["pad_token"] = EOT
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))
    (model / "config.json").write_text(json.dumps({"vocab_size": 50349}))
    broken = transformers.AutoTokenizer.from_pretrained(model)
    assert broken.decode([50342], skip_special_tokens=True) == ""  # the reference's bug

    rc, out, _ = _run(["tokenizer", "fix", str(model)], capsys)
    assert rc == 0 and "mul_tokens" in out and "special" in out and "pad_token" in out
    fixed = transformers.AutoTokenizer.from_pretrained(model)
    assert fixed.decode([15496, 50342, 50256], skip_special_tokens=True) == "Hello<MUL_6_9_54>"
    assert fixed.pad_token_id not in (None, fixed.eos_token_id)
    assert Tokenizer.load(model).encode("<MUL_9_6_54>") == [50342]

    # ids that disagree with the layout cannot be fixed by re-writing files
    data = json.loads((model / "tokenizer.json").read_text())
    for t in data["added_tokens"]:
        if t["content"] == "<MUL_1_1_1>":
            t["id"] = 50257
    (model / "tokenizer.json").write_text(json.dumps(data))
    (model / "domtok_tokenizer.json").unlink()
    rc, _, err = _run(["tokenizer", "fix", str(model)], capsys)
    assert rc == 2 and "differ from domtok's layout" in err


def test_prepare_counts_domain_tokens_after_a_lone_space(gpt2_dir, tmp_path):
    """meta.json's `domain_tokens_after_space`: the reference layout spends a ` ` id before
    every token that follows a space in the injected text; the mul_space layout spends none,
    and its leading-space ids are exactly those tokens."""
    import re

    from domtok.data.prepare import PrepareConfig, run
    from domtok.data.corpus import math_web_corpus
    from domtok.tokens.inject import inject_domain_tokens

    n_docs = 200
    docs = [inject_domain_tokens(d).text for d in math_web_corpus(n_docs, 0)]
    after_space = sum(len(re.findall(r"(?<= )<MUL_\d+_\d+_\d+>", d)) for d in docs)
    total = sum(len(re.findall(r"<MUL_\d+_\d+_\d+>", d)) for d in docs)
    assert 0 < after_space < total
    metas = {}
    for cond in ("mul_tokens", "mul_space_tokens", "baseline"):
        metas[cond] = run(PrepareConfig(n_docs=n_docs, condition=cond, val_fraction=0.2, shard_tokens=3000,
                                        token_set="mul_space" if cond == "baseline" else ""), tmp_path / cond)
    ref, sp = metas["mul_tokens"]["domain_tokens_after_space"], metas["mul_space_tokens"]["domain_tokens_after_space"]
    assert (ref["all"], ref["space_id"], ref["train"] + ref["val"]) == (after_space, 220, after_space)
    assert ref["share"] == pytest.approx(after_space / total)
    assert sp["all"] == 0 and sp["share"] == 0.0
    spaced = sum(c for k, c in metas["mul_space_tokens"]["domain_token_histogram"].items() if k.startswith(" "))
    assert spaced == after_space
    assert metas["mul_space_tokens"]["splits"]["train"]["tokens"] + metas["mul_space_tokens"]["splits"]["val"]["tokens"] \
        == metas["mul_tokens"]["splits"]["train"]["tokens"] + metas["mul_tokens"]["splits"]["val"]["tokens"] - after_space
    assert metas["baseline"]["domain_tokens_after_space"]["all"] == 0 and metas["baseline"]["vocab_size"] == 50432


@pytest.mark.parametrize("condition,set_name,vocab", [("mul_tokens", "mul", 50368), ("mul_space_tokens", "mul_space", 50432)])
def test_hf_files_tell_the_two_layouts_apart(gpt2_dir, tmp_path, condition, set_name, vocab):
    """Both sets hold the same token texts: `tokenizer fix` reads a Hugging Face dir as
    mul_space only when it has the leading-space ids (old code: 'tokens of several sets')."""
    from domtok.tokens.build import read_model_tokenizer

    load_tokenizer("gpt2", condition).export_hf(tmp_path)
    tok, notes = read_model_tokenizer(tmp_path, None)
    assert (tok.condition, tok.token_set.name, tok.vocab_size, notes) == (condition, set_name, vocab, [])
