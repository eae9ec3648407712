"""domtok.notation owns the patterns of domain tokens and GSM8K annotations; the modules that
read them (calculator, injector, SFT checks, GSM-SBS rewriting, answer extraction) agree."""

from __future__ import annotations

from domtok.calculator import evaluate, open_annotation
from domtok.notation import DOMAIN_TOKEN_RE, iter_annotations, stray_brackets, token_value
from domtok.tokens.inject import check_annotations
from domtok.train.sft_data import annotations


def test_domain_token_pattern_and_value():
    assert DOMAIN_TOKEN_RE.fullmatch("<MUL_6_9_54>") and DOMAIN_TOKEN_RE.fullmatch("<ADD_12_-30_-18>")
    assert not DOMAIN_TOKEN_RE.fullmatch("<mul_6_9_54>") and not DOMAIN_TOKEN_RE.fullmatch("<MUL>")
    assert not DOMAIN_TOKEN_RE.fullmatch("<MUL_٦_9_54>")  # ASCII digits only
    assert token_value("<MUL_6_9_54>") == "54" and token_value("<ADD_12_-30_-18>") == "-18"


def test_annotations_are_read_alike_everywhere():
    text = "He pays <<<MUL_2_9_18>=18>>18 and <<100-6*9=46>>46, then <<oops>> and 3 >> 2."
    assert list(iter_annotations(text)) == [("<MUL_2_9_18>", "18"), ("100-6*9", "46"), ("oops", "")]
    assert annotations(text) == (["18", "46"], 3)  # `<<oops>>` (no `=`) is two strays, `>>` one
    assert stray_brackets(text) == 1
    problems = check_annotations(text)
    assert any("no '=result'" in p for p in problems) and any("unbalanced" in p for p in problems)
    assert not check_annotations("It costs <<<MUL_2_9_18>+2=20>>20.")
    # an annotation never spans a line
    assert list(iter_annotations("<<1+\n1=2>>")) == []


def test_open_annotation_holds_tokens():
    assert open_annotation("so <<<MUL_6_9_54>+1=") is not None
    assert evaluate("<MUL_6_9_54>+1", {"<MUL_6_9_54>": 54}) == 55
