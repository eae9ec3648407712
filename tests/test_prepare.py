"""`domtok prepare`: shards round-trip to the source documents, conditions see the same documents,
resume after an interruption gives identical bytes, parallel == serial, meta counts are exact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from domtok.data import prepare as prep
from domtok.data import shards as shards_mod
from domtok.data.prepare import PrepareConfig, run
from domtok.data.shards import list_shards, load_meta, read_shard, shard_dtype
from domtok.data.corpus import math_web_corpus
from domtok.errors import DomtokError


def read_docs(out_dir: Path, split: str) -> list[np.ndarray]:
    """Documents of a split as id arrays (EOT stripped), from the shards alone."""
    meta = load_meta(out_dir)
    arr = np.concatenate([read_shard(out_dir / s) for s in meta["splits"][split]["shards"]] or [np.zeros(0)])
    eot = meta["eot_id"]
    starts = np.flatnonzero(arr == eot)
    assert len(starts) == 0 or starts[0] == 0, "a split must start with EOT"
    return [arr[a + 1:b] for a, b in zip(starts, list(starts[1:]) + [len(arr)])]


def shard_bytes(out_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out_dir.glob("*_*.npy"))}


def cfg(**kw) -> PrepareConfig:
    base = dict(n_docs=300, shard_tokens=3000, val_fraction=0.1, seed=1)
    base.update(kw)
    return PrepareConfig(**base)


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory):
    gpt2 = os.environ.get("DOMTOK_GPT2_DIR", "")
    if not (Path(gpt2) / "vocab.bpe").exists():  # conftest sets it when ../shared/data/gpt2 exists
        pytest.skip("GPT-2 BPE files not found (../shared/data/gpt2)")
    out = tmp_path_factory.mktemp("prep") / "baseline"
    run(cfg(condition="baseline"), out)
    return out


def test_shard_dtype():
    assert shard_dtype(50368) == np.uint16 and shard_dtype(65536) == np.uint16
    assert shard_dtype(65537) == np.uint32


def test_baseline_round_trip_and_meta(baseline_dir, tiktoken_gpt2):
    from domtok.tokens.tokenizer import Tokenizer

    out = baseline_dir
    meta = load_meta(out)
    tok = Tokenizer.load(out / "tokenizer")
    assert meta["vocab_size"] == tok.vocab_size == 50368 and meta["dtype"] == "uint16"
    assert meta["condition"] == "baseline" and meta["domain_token_histogram"] == {}
    docs = math_web_corpus(300, seed=1)
    train, val = read_docs(out, "train"), read_docs(out, "val")
    assert len(train) + len(val) == 300 and 10 <= len(val) <= 60
    texts = {"train": [tok.decode(d.tolist()) for d in train], "val": [tok.decode(d.tolist()) for d in val]}
    # every document appears once, whole, in source order within its split
    assert sorted(texts["train"] + texts["val"]) == sorted(docs)
    is_val = prep.val_assigner(cfg(), 300)
    in_val = [is_val(i) for i in range(300)]
    assert texts["val"] == [d for d, v in zip(docs, in_val) if v]
    assert texts["train"] == [d for d, v in zip(docs, in_val) if not v]
    # validation is a random sample, not the first (or last) documents
    val_idx = [i for i, v in enumerate(in_val) if v]
    assert val_idx != list(range(len(val_idx))) and val_idx[-1] - val_idx[0] > 150
    for s in ("train", "val"):
        m = meta["splits"][s]
        assert m["documents"] == len(texts[s])
        assert m["bytes"] == sum(len(t.encode()) for t in texts[s])
        assert m["tokens"] == sum(len(d) + 1 for d in (train if s == "train" else val))
        sizes = [read_shard(out / n).shape[0] for n in m["shards"]]
        assert sum(sizes) == m["tokens"] and all(x == 3000 for x in sizes[:-1]) and 0 < sizes[-1] <= 3000
        assert m["domain_tokens"] == 0
    # independent reference: tiktoken's own gpt2 ids for a document (after the EOT)
    for d, t in zip(train[:5], texts["train"][:5]):
        assert d.tolist() == tiktoken_gpt2.encode_ordinary(t)
    # sidecars say where each shard ends; the header records dtype and count
    side = json.loads((out / "train_000000.json").read_text())
    assert side["tokens"] == 3000 and side["dtype"] == "uint16" and side["config_hash"] == meta["config_hash"]


def test_rerun_is_a_noop_and_other_config_is_refused(baseline_dir):
    before = shard_bytes(baseline_dir)
    meta = run(cfg(condition="baseline", workers=3), baseline_dir)  # workers not in the hash
    assert meta == load_meta(baseline_dir) and shard_bytes(baseline_dir) == before
    with pytest.raises(DomtokError, match="another config"):
        run(cfg(condition="baseline", seed=2), baseline_dir)


def test_conditions_see_same_documents(baseline_dir, tmp_path):
    from domtok.tokens.inject import inject_batch
    from domtok.tokens.tokenizer import Tokenizer

    out = tmp_path / "mul"
    run(cfg(condition="mul_tokens"), out)
    mb, mm = load_meta(baseline_dir), load_meta(out)
    tb, tm = Tokenizer.load(baseline_dir / "tokenizer"), Tokenizer.load(out / "tokenizer")
    assert mm["vocab_size"] == mb["vocab_size"] and mm["condition"] == "mul_tokens"
    total = 0
    for s in ("train", "val"):
        assert mm["splits"][s]["documents"] == mb["splits"][s]["documents"]
        assert mm["splits"][s]["bytes"] == mb["splits"][s]["bytes"]  # original bytes: bpb comparable
        db, dm = read_docs(baseline_dir, s), read_docs(out, s)
        assert len(db) == len(dm)
        base_texts = [tb.decode(d.tolist()) for d in db]
        injected = [r.text for r in inject_batch(base_texts, "mul", mode="weak")]
        assert [tm.decode(d.tolist()) for d in dm] == [tm.token_set.canonicalize(t) for t in injected]
        # counts from raw ids agree with meta
        ids = np.concatenate([read_shard(out / n) for n in mm["splits"][s]["shards"]])
        n_dom = int(((ids >= tm.domain_start) & (ids < tm.domain_start + 45)).sum())
        assert n_dom == mm["splits"][s]["domain_tokens"] == tm.count_domain_tokens(ids.tolist())
        total += n_dom
        base_ids = np.concatenate([read_shard(baseline_dir / n) for n in mb["splits"][s]["shards"]])
        assert not (base_ids >= tb.domain_start).any()  # baseline never emits the reserved ids
    assert total > 300 and sum(mm["domain_token_histogram"].values()) == total
    assert mm["domain_token_histogram"].get("<MUL_6_9_54>", 0) > 0


def test_interrupted_run_resumes_to_identical_shards(baseline_dir, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    real_flush = shards_mod.ShardWriter._flush
    calls = {"n": 0}

    def flaky_flush(self, *a):
        calls["n"] += 1
        if calls["n"] == 5:
            # die half-way through writing: a temp file and an npy without sidecar are left behind
            (self.out_dir / f".{self.info.name}.npy.tmp-1").write_bytes(b"partial")
            np.save(self.out_dir / f"{self.info.name}.npy", np.zeros(7, dtype=np.uint16))
            raise KeyboardInterrupt
        return real_flush(self, *a)

    monkeypatch.setattr(shards_mod.ShardWriter, "_flush", flaky_flush)
    with pytest.raises(KeyboardInterrupt):
        run(cfg(condition="baseline"), out)
    assert not (out / "meta.json").exists()
    assert len(list_shards(out, "train")) == 4  # complete ones only
    monkeypatch.setattr(shards_mod.ShardWriter, "_flush", real_flush)
    with pytest.raises(DomtokError, match="different prepare config"):
        run(cfg(condition="baseline", seed=2), out)  # half-done shards of another config: refused
    run(cfg(condition="baseline"), out)
    assert shard_bytes(out) == shard_bytes(baseline_dir)
    assert load_meta(out)["splits"] == load_meta(baseline_dir)["splits"]
    assert not list(out.glob(".*tmp*"))


def test_two_workers_match_one(baseline_dir, tmp_path):
    out = tmp_path / "par"
    run(cfg(condition="baseline", workers=2, chunk_docs=16), out)
    assert shard_bytes(out) == shard_bytes(baseline_dir)
    assert load_meta(out)["splits"] == load_meta(baseline_dir)["splits"]


def test_local_source_with_bad_records_and_literal_eot(tmp_path, gpt2_dir):
    src = tmp_path / "web.jsonl"
    lines = [json.dumps({"text": f"Document {i}: 3 x 4 = 12 and <|endoftext|> inside."}) for i in range(150)]
    lines.insert(10, "{broken")
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "local"
    meta = run(PrepareConfig(source=str(src), shard_tokens=500, val_docs=0, val_fraction=0.2), out)
    assert meta["skipped"] == 1 and meta["skipped_examples"][0]["line"] == 11
    n = meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"]
    assert n == 150
    # the literal <|endoftext|> is text: exactly one EOT id per document
    ids = np.concatenate([read_shard(out / s) for s in meta["splits"]["train"]["shards"]])
    assert int((ids == meta["eot_id"]).sum()) == meta["splits"]["train"]["documents"]
    # too many bad records: one clear error naming the file
    src.write_text("{broken\n" * 5 + json.dumps({"text": "ok"}) + "\n")
    with pytest.raises(DomtokError, match="web.jsonl"):
        run(PrepareConfig(source=str(src)), tmp_path / "bad")


def test_hub_source_and_val_docs(tmp_path, gpt2_dir, monkeypatch):
    import datasets

    rows = [{"question": f"q{i}", "answer": f"a{i}\n#### {i}"} for i in range(80)]
    calls = []

    def fake_load_dataset(path, name=None, split=None, streaming=False):
        calls.append((path, name, split, streaming))
        return iter(rows)  # a one-shot stream: a second pass would see nothing

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    meta = run(PrepareConfig(source="hub:openai/gsm8k:main", text_field="question,answer", max_docs=50,
                             val_docs=5, shard_tokens=10_000), tmp_path / "hub")
    assert calls == [("openai/gsm8k", "main", "train", True)]  # streamed, read once
    assert meta["splits"]["val"]["documents"] == 5 and meta["splits"]["train"]["documents"] == 45
    assert meta["splits"]["train"]["bytes"] + meta["splits"]["val"]["bytes"] < sum(
        len(r["question"]) + len(r["answer"]) + 1 for r in rows)  # a subset, not all 80
    with pytest.raises(DomtokError, match="val_fraction"):
        run(PrepareConfig(source="hub:openai/gsm8k:main", val_docs=5), tmp_path / "hub2")


def test_trained_bpe_shared_by_conditions(tmp_path):
    base = tmp_path / "b"
    mb = run(cfg(condition="baseline", tokenizer="bpe-320", n_docs=200), base)
    assert mb["vocab_size"] == 384 and mb["eot_id"] == 319
    mm = run(cfg(condition="mul_tokens", tokenizer=str(base / "tokenizer"), n_docs=200), tmp_path / "m")
    assert mm["vocab_size"] == mb["vocab_size"] and mm["eot_id"] == mb["eot_id"]
    assert mm["splits"]["train"]["documents"] == mb["splits"]["train"]["documents"]
    assert mm["splits"]["train"]["domain_tokens"] > 0
    # the trained vocabulary is deterministic
    again = run(cfg(condition="baseline", tokenizer="bpe-320", n_docs=200), tmp_path / "b2")
    assert shard_bytes(tmp_path / "b2") == shard_bytes(base) and again["splits"] == mb["splits"]


def test_spec_tokenizer_split_digits_reaches_the_bpe_and_a_held_one_must_match(tmp_path):
    from domtok.config import spec_prepare_section

    spec_tok = {"base": "bpe-320", "sample_docs": 150, "split_digits": True}
    section = {"source": "synthetic:math-web", "n_docs": 200}
    assert spec_prepare_section({"prepare": section, "tokenizer": spec_tok}, "spec") == \
        {**section, "tokenizer": "bpe-320", "bpe_sample_docs": 150, "bpe_split_digits": True}
    out = prep.build_shared_tokenizer({**spec_tok, "prepare": section}, tmp_path / "tokenizer")
    assert out["splits_digits"] is True
    with pytest.raises(DomtokError, match="split_digits=True, not False"):
        prep.build_shared_tokenizer({**spec_tok, "split_digits": False, "prepare": section}, tmp_path / "tokenizer")


def test_pretraining_reads_the_same_documents_in_the_same_order_in_both_conditions(tmp_path):
    """The documents the first steps of pretraining read, identified from the batches alone,
    are one sequence in both conditions; the shorter domain encoding reads further along it."""
    from domtok.tokens.inject import inject_domain_tokens
    from domtok.tokens.tokenizer import Tokenizer
    from domtok.train.data import TrainLoader

    base, mul = tmp_path / "b", tmp_path / "m"
    run(cfg(condition="baseline", tokenizer="bpe-320", n_docs=200, shard_tokens=2000), base)
    run(cfg(condition="mul_tokens", tokenizer=str(base / "tokenizer"), n_docs=200, shard_tokens=2000), mul)
    tok_b, tok_m = Tokenizer.load(base / "tokenizer"), Tokenizer.load(mul / "tokenizer")
    eot = tok_b.eot_id

    def documents_read(d: Path, tok, steps: int) -> tuple[list[str], TrainLoader]:
        """The texts of the documents the first `steps` steps read whole, in order."""
        loader = TrainLoader(d, seq_len=64, micro_batch_size=4, grad_accum=2, seed=3)
        rows = [x[r] for _ in range(steps) for x, _ in loader.next_step() for r in range(len(x))]
        stream = np.concatenate([r.numpy() for r in rows])  # windows step by seq_len: x rows tile the stream
        starts = list(np.flatnonzero(stream == eot)) + [len(stream)]
        assert starts[0] == 0  # an epoch starts at a document
        return [tok.decode(stream[a + 1:b].tolist()) for a, b in zip(starts[:-2], starts[1:-1])], loader

    seq_b, loader_b = documents_read(base, tok_b, 6)
    seq_m, loader_m = documents_read(mul, tok_m, 6)
    # the same documents in the same order (the domain ones injected) ...
    assert len(seq_b) >= 5
    assert seq_m[:len(seq_b)] == [tok_m.token_set.canonicalize(inject_domain_tokens(t).text) for t in seq_b]
    assert len(seq_m) > len(seq_b)  # ... and the domain condition gets further in the same steps
    in_file_order = [tok_b.decode(d.tolist()) for d in read_docs(base, "train")]  # the original texts
    assert all(t in in_file_order for t in seq_b) and seq_b != in_file_order[:len(seq_b)]  # a seeded order
    # the loader's own count of whole documents and of their original bytes agrees
    assert np.array_equal(loader_b.document_order(0), loader_m.document_order(0))
    for seq, loader in ((seq_b, loader_b), (seq_m, loader_m)):
        n, nbytes = loader.documents_read()
        assert n - len(seq) in (0, 1)  # the last one may end exactly on the last target
        assert nbytes == sum(len(in_file_order[i].encode()) for i in loader.document_order(0)[:n])


def test_cli(tmp_path, gpt2_dir, capsys):
    from domtok.cli import main

    assert main(["prepare", "n_docs=40", "shard_tokens=100000", "--out", str(tmp_path / "c")]) == 0
    assert "train" in capsys.readouterr().out and (tmp_path / "c" / "meta.json").exists()
    assert main(["prepare", "n_docs=40", "source=/nope", "--out", str(tmp_path / "d")]) == 2


def test_readers_refuse_a_shard_without_its_sidecar(baseline_dir, tmp_path):
    """One reader (data/shards.py) for training, validation and the id check: a shard is complete
    once its sidecar exists, and a reader never uses an incomplete one."""
    import shutil

    from domtok.train.data import SplitStream, check_shard_ids

    d = tmp_path / "copy"
    shutil.copytree(baseline_dir, d)
    assert SplitStream(d, "train").num_tokens == load_meta(d)["splits"]["train"]["tokens"]
    (d / "train_000000.json").unlink()
    with pytest.raises(DomtokError, match="train_000000.npy: incomplete shard"):
        SplitStream(d, "train")
    with pytest.raises(DomtokError, match="incomplete shard"):
        check_shard_ids(d, load_meta(d)["vocab_size"])
