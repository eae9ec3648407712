"""The compression-matched control set: literal tokens, lossless encoding, digits untouched,
the build (deterministic, matched to mul's shrinkage), and how a spec names it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domtok.data.corpus import math_web_corpus
from domtok.errors import DomtokError
from domtok.tokens.control import build_control_set, save_control_set
from domtok.tokens.sets import (ARITHMETIC_CHARS, DomainTokenSet, get_token_set, literal_spans,
                                literal_token_set, pretokenize)
from domtok.tokens.build import train_bpe
from domtok.tokens.tokenizer import Tokenizer, load_tokenizer

CONTROL_TEXTS = [" of the", ", so", "?\nSolution:", " the", " How many", ".\n", " each", "Q:"]


@pytest.fixture(scope="module")
def corpus():
    return math_web_corpus(500, 0)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory, corpus):
    d = tmp_path_factory.mktemp("bpe")
    return train_bpe(corpus, 512, d)


@pytest.fixture(scope="module")
def control(bpe):
    ts = literal_token_set("control", CONTROL_TEXTS, "mul")
    return bpe.with_condition("control_tokens", ts)


# ---- the literal set ----------------------------------------------------------------------

def test_literal_set_refuses_digits_and_arithmetic():
    for bad in [" 54", " x1", " = so", " a+b", "####", "", " (a)"]:
        with pytest.raises(DomtokError, match="digit or an arithmetic"):
            literal_token_set("control", [bad], "mul")


def test_literal_spans_are_whole_pieces_longest_first():
    ts = literal_token_set("control", CONTROL_TEXTS, "mul")
    text = "most of the theory of the cat, so the 6 each 7 eachother.\nQ: 5"
    spans = [text[a:b] for a, b in literal_spans(ts, text)]
    # " of the" beats " the"; " the" is never cut out of " theory", " each" never out of " eachother"
    assert spans == [" of the", " of the", ", so", " the", " each", ".\n", "Q:"]
    pieces = set(pretokenize(text))
    assert all(p in pieces for s in spans for p in pretokenize(s))


def test_literal_set_round_trips_through_dict():
    ts = literal_token_set("control", CONTROL_TEXTS, "mul")
    back = DomainTokenSet.from_dict(json.loads(json.dumps(ts.to_dict())))
    assert back == ts and back.literal and back.matches == "mul"


def test_control_is_not_a_registered_set():
    with pytest.raises(DomtokError, match="built from a corpus"):
        get_token_set("control")


# ---- encoding: lossless, same layout, digits untouched -------------------------------------

def test_control_layout_is_muls(bpe, control):
    mul = bpe.with_condition("mul_tokens")
    assert (control.domain_start, control.vocab_size) == (mul.domain_start, mul.vocab_size)
    assert control.layout_ids[" of the"] == control.domain_start + CONTROL_TEXTS.index(" of the")
    ids = control.encode("How many of the apples?\nSolution: 3")
    assert control.layout_ids[" of the"] in ids and control.count_domain_tokens(ids) == 2


_pieces = st.sampled_from(CONTROL_TEXTS + ["6 × 9 = 54", " 105", "0.5", " theory", "\n", " ", "x", "<<6*9=54>>"])
_texts = st.lists(st.one_of(_pieces, st.text(max_size=8)), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(_texts)
def test_control_encoding_is_lossless_and_keeps_every_other_id(bpe, control, text):
    ids = control.encode(text)
    assert control.decode(ids) == text
    # each control id spelled out in base ids gives exactly the baseline's ids: every other
    # piece, every number included, is encoded as the baseline encodes it
    spelled = []
    for i in ids:
        spelled += bpe.encode(control.id_to_domain[i].text) if i in control.id_to_domain else [i]
    assert spelled == bpe.encode(text)
    assert control.encode_batch([text, text]) == [ids, ids]


def test_control_never_touches_a_digit(bpe, control, corpus):
    """No control token holds a digit, and the ids of every digit are the baseline's."""
    assert not any(c.isdigit() or c in ARITHMETIC_CHARS for t in control.token_set.tokens for c in t.text)
    for text in corpus[:100]:
        ids = control.encode(text)
        digits_ctrl = [i for i in ids if any(c.isdigit() for c in control.decode([i]))]
        digits_base = [i for i in bpe.encode(text) if any(c.isdigit() for c in bpe.decode([i]))]
        assert digits_ctrl == digits_base


def test_control_injection_counts_and_leaves_text(control):
    r = control.inject("Q: How many of the 6 × 9 = 54 apples?\nSolution: 54")
    assert r.text == "Q: How many of the 6 × 9 = 54 apples?\nSolution: 54"
    assert r.count == 4 and r.per_token[" of the"] == 1


def test_control_tokenizer_saves_loads_and_exports(tmp_path, control):
    from transformers import AutoTokenizer

    control.save(tmp_path)
    back = Tokenizer.load(tmp_path)
    text = "Q: How many of the cats?\nSolution: 12 each"
    assert back.token_set == control.token_set and back.encode(text) == control.encode(text)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    ids = control.encode(text)
    assert hf.decode(ids, skip_special_tokens=True) == text


# ---- the build -----------------------------------------------------------------------------

def test_build_is_deterministic_and_matches_mul(bpe, corpus, tmp_path):
    lines = []
    ts, rec = build_control_set(corpus, bpe, "mul", log=lines.append)
    ts2, rec2 = build_control_set(corpus, bpe, "mul", log=lambda _: None)
    assert ts == ts2 and rec == rec2
    assert len(ts.tokens) == 45 and ts.literal and ts.matches == "mul"
    assert abs(rec["shrink"] - rec["target"]) <= 0.01, rec
    assert f"{rec['target']:.2%}" in lines[0] and f"{rec['shrink']:.2%}" in lines[0]
    # the record's shrinkage is the tokenizer's own: recount it with the saved set
    save_control_set(tmp_path, ts, rec)
    tok = load_tokenizer(str(bpe_dir_of(bpe, tmp_path)), "control_tokens", token_set="control")
    plain = sum(len(bpe.encode(t)) + 1 for t in corpus)
    assert 1 - sum(len(tok.encode(t)) + 1 for t in corpus) / plain == pytest.approx(rec["shrink"])


def bpe_dir_of(bpe, d):
    bpe.save(d)
    return d


def test_saved_control_set_missing_is_a_clear_error(bpe, tmp_path):
    bpe.save(tmp_path)
    with pytest.raises(DomtokError, match="control.json: missing"):
        load_tokenizer(str(tmp_path), "control_tokens", token_set="control")


# ---- in a spec -----------------------------------------------------------------------------

def _spec(tmp_path, **conditions):
    import yaml

    spec = {"name": "c", "seeds": [0], "token_set": "mul",
            "conditions": conditions or {"baseline": {"token_set": None}, "mul_tokens": {"token_set": "mul"},
                                         "control_tokens": {"token_set": "control"}},
            "tokenizer": {"base": "bpe-400", "sample_docs": 300},
            "prepare": {"source": "synthetic:math-web", "n_docs": 400, "val_fraction": 0.1, "shard_tokens": 20000,
                        "seed": 0, "workers": 1},
            "stages": [{"name": "pretrain", "kind": "pretrain", "config": {"model": "tiny"}}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_spec_condition_names_the_control_set(tmp_path):
    """The tokenizer node builds the set beside the tokenizer; the control condition's shards
    use it, with mul's layout and the same documents as the baseline, numbers untouched."""
    import numpy as np

    from domtok.data.prepare import prepare_condition
    from domtok.data.shards import read_documents
    from domtok.rundir import build_nodes, load_spec

    path = _spec(tmp_path)
    nodes = {n.id: n for n in build_nodes(load_spec(str(path)), tmp_path / "run")}
    assert nodes["tokenizer"].config["control_of"] == "mul"
    assert nodes["control_tokens/prepare"].config["token_set"] == "control"
    assert nodes["baseline/prepare"].config["token_set"] == "mul"
    root = tmp_path / "data"
    out = {c: prepare_condition(str(path), c, root) for c in ("baseline", "control_tokens")}
    saved = json.loads((root / "tokenizer" / "token_sets" / "control.json").read_text())
    assert len(saved["tokens"]) == 45 and saved["build"]["target"] > 0.05
    metas = {c: json.loads((d / "meta.json").read_text()) for c, d in out.items()}
    assert metas["control_tokens"]["token_set"] == "control"
    assert metas["control_tokens"]["vocab_size"] == metas["baseline"]["vocab_size"]
    assert metas["control_tokens"]["splits"]["train"]["domain_tokens"] > 0
    assert metas["baseline"]["splits"]["train"]["domain_tokens"] == 0
    base_docs, ctrl_docs = read_documents(out["baseline"], "train"), read_documents(out["control_tokens"], "train")
    assert np.array_equal(base_docs[1], ctrl_docs[1])  # the same documents (their original bytes)
    tok = Tokenizer.load(out["control_tokens"] / "tokenizer")
    assert tok.token_set.literal and [t.text for t in tok.token_set.tokens] == [t["text"] for t in saved["tokens"]]


def test_spec_refuses_other_sets(tmp_path):
    from domtok.config import ConfigError
    from domtok.rundir import load_spec

    path = _spec(tmp_path, baseline={"token_set": None}, x={"token_set": "mul_space"})
    with pytest.raises(ConfigError, match="shared id layout"):
        load_spec(str(path))


# ---- the report's Mechanism section ----------------------------------------------------------

class _Node:
    def __init__(self, stage, cond, seed, bench, rows):
        self.stage, self.condition, self.seed, self.benchmark, self.id = stage, cond, seed, bench, f"{cond}/{seed}/{bench}"
        self.rows = rows


class _StubRun:
    """Just what report.mechanism reads: spec, conditions, evaluation nodes and their items."""

    def __init__(self, items, conditions):
        from types import SimpleNamespace

        self.spec = SimpleNamespace(conditions=conditions, seeds=[0, 1, 2], token_set="mul", evals_after=["sft"],
                                    benchmarks={"gsm": {"kind": "gsm8k", "config": {}}}, stages=[],
                                    primary={"benchmark": "gsm", "metric": "accuracy_flexible", "stage": "sft",
                                             "margin": 0.05},
                                    stage=lambda name: SimpleNamespace(kind=name))
        from domtok.report.run import fact_conditions

        self.conditions, self.baseline = list(conditions), "baseline"
        self.facts = self.domain = fact_conditions(self.spec, "baseline")
        self.nodes = [_Node("sft", c, s, "gsm", rows) for (c, s), rows in items.items()]
        self.summary = {}

    def evals(self, stage, cond, bench):
        return [n for n in self.nodes if (n.stage, n.condition, n.benchmark) == (stage, cond, bench)]

    def training(self, stage, cond):
        return []

    def items(self, node):
        return node.rows


def test_mechanism_tables_against_scipy():
    import random

    from scipy import stats

    from domtok.report.mechanism import control_pairs, controls, templates, usage

    rng = random.Random(0)
    conditions = {"baseline": {"token_set": None}, "mul_tokens": {"token_set": "mul"},
                  "mul_tokens_docs": {"token_set": "mul", "match": {"documents": "baseline"}},
                  "control_tokens": {"token_set": "control"}}
    kinds = {"add": False, "mul": True, "mul_add": True}
    items = {}
    for c in conditions:
        for s in range(3):
            p = {"baseline": 0.3, "mul_tokens": 0.6}.get(c, 0.4) + 0.05 * s
            items[(c, s)] = [{"id": f"i{k}", "template": t, "has_mul": kinds[t],
                              "correct_flexible": rng.random() < (p if kinds[t] else 0.3),
                              "domain_tokens": int(c != "baseline" and k % 2)}
                             for k, t in enumerate(list(kinds) * 20)]
    run = _StubRun(items, conditions)
    from domtok.report.mechanism import COMPRESSION, COMPRESSION_ALONE, MORE_TEXT, SAME_TEXT

    assert run.domain == ["mul_tokens"]  # the controls are compared in Mechanism, not in the headline
    assert control_pairs(run) == [("mul_tokens_docs", "mul_tokens", MORE_TEXT), ("baseline", "mul_tokens_docs", SAME_TEXT),
                                  ("control_tokens", "mul_tokens", COMPRESSION),
                                  ("baseline", "control_tokens", COMPRESSION_ALONE)]
    # the seed-honest test: a t-test on the per-seed deltas (scipy), delta = condition − reference
    for r in controls(run):
        ref, cond = r["reference"], r["condition"]
        deltas = [sum(a["correct_flexible"] for a in items[(cond, s)]) / 60
                  - sum(a["correct_flexible"] for a in items[(ref, s)]) / 60 for s in range(3)]
        assert r["delta"] == pytest.approx(sum(deltas) / 3)
        assert r["p"] == pytest.approx(stats.ttest_1samp(deltas, 0).pvalue)
    from domtok.report.mechanism import mechanism_section

    from statsmodels.stats.multitest import multipletests

    from domtok.report.mechanism import MEANING, mechanism

    text = "\n".join(mechanism_section(run))
    answers = [r for r in mechanism(run)["controls"] if r["primary"]]
    assert len(answers) == 4 and all(r["family"] == "answer" for r in answers)
    # the answers are a Holm family of their own (statsmodels as the reference)
    assert [r["p_holm"] for r in answers] == pytest.approx(list(multipletests([r["p"] for r in answers],
                                                                              method="holm")[1]))
    # equivalence: two one-sided t-tests within the primary's margin (scipy), Holm over the answers
    tost = [max(stats.t.sf((r["delta"] + 0.05) / r["se"], r["df"]), stats.t.cdf((r["delta"] - 0.05) / r["se"], r["df"]))
            for r in answers]
    assert [r["p_tost_holm"] for r in answers] == pytest.approx(list(multipletests(tost, method="holm")[1]))
    for r in answers:
        want = (("helps" if r["delta"] > 0 else "hurts") if r["p_holm"] < 0.05
                else "equivalent" if r["p_tost_holm"] < 0.05 else "undecided")
        assert r["verdict"] == want
        assert f"{r['condition']} − {r['reference']} = {r['delta']:+.3f}" in text
        assert MEANING[r["question"]][r["verdict"]] in text
    rows = templates(run)
    neg = next(r for r in rows if r["condition"] == "mul_tokens" and r["has_mul"] is False and "all" in r["group"])
    only_add = [[a["correct_flexible"] for a in items[("mul_tokens", s)] if a["template"] == "add"] for s in range(3)]
    assert neg["b_mean"] == pytest.approx(sum(map(sum, only_add)) / 60)
    assert {r["group"] for r in rows} >= {"template `add`", "template `mul`", "all templates with a multiplication"}
    use = {r["condition"]: r for r in usage(run)}
    assert use["baseline"]["used_right"] + use["baseline"]["used_wrong"] == 0
    base = items[("mul_tokens", 0)] + items[("mul_tokens", 1)] + items[("mul_tokens", 2)]
    assert use["mul_tokens"]["used_right"] == sum(1 for a in base if a["domain_tokens"] and a["correct_flexible"])
