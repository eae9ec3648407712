"""HellaSwag: batched scoring equals a naive per-ending computation; preprocessing; the run's files."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from domtok.eval.hellaswag import (HellaSwagEvalConfig, hellaswag_accuracy, item_result, preprocess, render, run,
                                   score_items)
from domtok.model.gpt import GPT, GPTConfig


class CharTokenizer:
    """One token per byte: a tokenizer with no dependencies, enough to test the scoring."""

    eot_id = 0

    def encode(self, text):
        return [b + 1 for b in text.encode()]


# Two items in the original HellaSwag jsonl schema (rowan-zellers/hellaswag), one per source.
ITEMS = [
    {"ind": 24, "activity_label": "Roof shingle removal",
     "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
     "ctx": "A man is sitting on a roof. he",
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
     "label": 3, "split": "val", "split_type": "indomain", "source_id": "activitynet~v_-JhWjGDPHMY"},
    {"ind": 92, "activity_label": "Clean and jerk",
     "ctx_a": "A lady walks to a barbell. She bends down and grabs the pole.", "ctx_b": "the lady",
     "ctx": "A lady walks to a barbell. She bends down and grabs the pole. the lady",
     "endings": ["swings and lands in her arms.", "pulls the barbell forward.",
                 "pulls a rope attached to the barbell.", "stands and lifts the weight over her head."],
     "label": 3, "split": "val", "split_type": "zeroshot", "source_id": "activitynet~v_-lJS58hyo1c"},
    {"ind": 105, "activity_label": "Home and Garden",
     "ctx_a": "[header] How to clean a slate floor [title] Sweep the floor.", "ctx_b": "remove",
     "ctx": "[header] How to clean a slate floor [title] Sweep the floor. remove",
     "endings": ["[substeps] the dust with a broom.", "the rug first.", "all  furniture.", "it now [step] ok."],
     "label": 0, "split": "val", "split_type": "indomain", "source_id": "wikihow~1"},
]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=128, vocab_size=320, n_layer=2, n_head=2, n_embd=32)).eval()


def naive_scores(model, tok, item, style):
    """One ending at a time, no padding, no batching: log p(ending | context)."""
    ctx, endings = render(item, style)
    out = []
    for e in endings:
        c, t = tok.encode(ctx), tok.encode(e)
        ids = torch.tensor([c + t])
        with torch.no_grad():
            logits, _ = model(ids[:, :-1])
        lp = F.log_softmax(logits.float(), -1)[0]
        s = sum(lp[len(c) - 1 + j, t[j]].item() for j in range(len(t)))
        out.append((s, len(t)))
    return out


@pytest.mark.parametrize("style", ["raw", "harness"])
def test_batched_scoring_equals_naive(tiny_model, style):
    tok = CharTokenizer()
    batched = score_items(tiny_model, tok, ITEMS, "cpu", style, items_per_batch=3)  # 12 rows, padded
    for item, row in zip(ITEMS, batched):
        naive = naive_scores(tiny_model, tok, item, style)
        assert row["logprobs"] == pytest.approx([s for s, _ in naive], abs=1e-5)
        assert row["ending_tokens"] == [n for _, n in naive]
        # the three conventions from the naive numbers
        sums = [s for s, _ in naive]
        assert row["pred_sum"] == max(range(4), key=lambda i: sums[i])
        assert row["pred_norm_token"] == max(range(4), key=lambda i: naive[i][0] / naive[i][1])
        _, endings = render(item, style)
        assert row["pred_norm_char"] == max(range(4), key=lambda i: naive[i][0] / (len(endings[i]) - 1))


def test_conventions_can_disagree():
    # ending 0: short and likely in total; ending 1: long with a better per-token and per-char score
    item = {"ctx": "x", "endings": ["ab", "abcdefgh", "c", "d"], "label": 1}
    scores = [(-2.0, 1), (-4.0, 4), (-3.0, 1), (-3.5, 1)]
    r = item_result(item, scores, "raw")
    assert (r["pred_sum"], r["pred_norm_token"], r["pred_norm_char"]) == (0, 1, 1)
    assert (r["acc"], r["acc_norm_token"], r["acc_norm_char"], r["correct"]) == (False, True, True, True)


def test_harness_preprocessing_known_strings():
    assert preprocess("[header] How to clean a slate floor [title] Sweep the floor.") == \
        " How to clean a slate floor. Sweep the floor."
    # exactly the harness: the space left by a removed leading artefact stays (and counts as a char)
    assert preprocess("[substeps] the dust with a broom.") == " the dust with a broom."
    assert preprocess("all  furniture.") == "all furniture."
    ctx, endings = render(ITEMS[0], "harness")
    assert ctx == "Roof shingle removal: A man is sitting on a roof. He"
    assert endings[0] == " is using wrap to wrap a pair of skis."
    ctx, endings = render(ITEMS[2], "harness")
    assert ctx == "Home and Garden: How to clean a slate floor. Sweep the floor. Remove"
    assert endings[3] == " it now ok."
    ctx, endings = render(ITEMS[0], "raw")
    assert ctx == ITEMS[0]["ctx"] and endings[3] == " starts pulling up roofing on a roof."


def test_hook_restores_mode(tiny_model):
    tiny_model.train()
    r = hellaswag_accuracy(tiny_model, CharTokenizer(), ITEMS, "cpu")
    assert tiny_model.training
    tiny_model.eval()
    assert r["n"] == 3 and 0 <= r["acc_norm_char"] <= 1


def test_run_writes_items_and_summary(tiny_model, tmp_path, capsys):
    data = tmp_path / "hellaswag_val.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in ITEMS))
    cfg = HellaSwagEvalConfig(model="tiny", data=str(data), batch_size=2, device="cpu")
    s = run(cfg, tmp_path / "out", model=tiny_model, tokenizer=CharTokenizer())
    rows = [json.loads(l) for l in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["validation-24", "validation-92", "validation-105"]
    assert set(s["metrics"]) == {"acc", "acc_norm_token", "acc_norm_char"}
    assert s["metrics"]["acc"] == pytest.approx(sum(r["acc"] for r in rows) / 3)
    assert s["n"] == 3 and s["benchmark"] == "hellaswag" and len(s["ci"]["acc"]) == 2
    assert not (tmp_path / "out" / "manifest.json").exists()  # the caller writes it (domtok.manifest)
    from domtok.progress import parse_line

    last = [p for p in map(parse_line, capsys.readouterr().err.splitlines()) if p][-1]
    assert (last["desc"], last["n"], last["total"], last["unit"]) == ("hellaswag", 3, 3, "items")
    # a seeded subset is reproducible
    cfg2 = HellaSwagEvalConfig(model="tiny", data=str(data), n=2, seed=5, device="cpu")
    a = run(cfg2, tmp_path / "a", model=tiny_model, tokenizer=CharTokenizer())
    b = run(cfg2, tmp_path / "b", model=tiny_model, tokenizer=CharTokenizer())
    assert (tmp_path / "a" / "items.jsonl").read_text() == (tmp_path / "b" / "items.jsonl").read_text()
    assert a["n"] == 2 == b["n"]


def test_cli_hellaswag_on_saved_model(tmp_path, capsys):
    from domtok.cli import main as cli_main
    from domtok.model.checkpoint import save_model_dir
    from domtok.tokens.build import train_bpe
    from domtok.tokens.tokenizer import load_tokenizer

    train_bpe([it["ctx"] + " " + " ".join(it["endings"]) for it in ITEMS] * 5, 300, tmp_path / "bpe")
    tok = load_tokenizer(str(tmp_path / "bpe"), "baseline")
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32))
    save_model_dir(model, tok, tmp_path / "model")
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in ITEMS))
    rc = cli_main(["eval", "hellaswag", "--model", str(tmp_path / "model"), "--data", str(data), "--style", "harness",
                   "--device", "cpu", "--out", str(tmp_path / "out")])
    assert rc == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["style"] == "harness" and s["n"] == 3
    # same numbers as the in-process hook on the same model (block_size 64 truncates contexts)
    direct = hellaswag_accuracy(model.eval(), tok, ITEMS, "cpu", style="harness")
    assert {k: s["metrics"][k] for k in ("acc", "acc_norm_token", "acc_norm_char")} == \
        {k: direct[k] for k in ("acc", "acc_norm_token", "acc_norm_char")}
    assert cli_main(["eval", "hellaswag", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "none.jsonl"),
                     "--device", "cpu", "--out", str(tmp_path / "o2")]) == 2


def test_hook_accepts_wrapped_model(tiny_model):
    class Wrapper(torch.nn.Module):  # stands in for DistributedDataParallel (.module)
        def __init__(self, m):
            super().__init__()
            self.module = m

    a = hellaswag_accuracy(tiny_model, CharTokenizer(), ITEMS[:2], "cpu")
    b = hellaswag_accuracy(Wrapper(tiny_model), CharTokenizer(), ITEMS[:2], "cpu")
    assert a == b
