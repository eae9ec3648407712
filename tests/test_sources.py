"""Data sources: local files in each dataset's real schema, the hub path (datasets monkeypatched),
malformed-record accounting, and seeded sampling."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from domtok.data.sources import (load_fineweb, load_gsm8k, load_hellaswag, load_tinygsm, load_tulu, parse_source,
                                 sample_records)
from domtok.errors import DomtokError


def write_jsonl(path, rows, extra_lines=()):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def test_parse_source():
    s = parse_source("hub:HuggingFaceFW/fineweb-edu:sample-10BT@train")
    assert (s.kind, s.path, s.config, s.split) == ("hub", "HuggingFaceFW/fineweb-edu", "sample-10BT", "train")
    s = parse_source("hub:openai/gsm8k:main", split="test")
    assert (s.kind, s.path, s.config, s.split) == ("hub", "openai/gsm8k", "main", "test")
    s = parse_source("data/x.jsonl", split="train")
    assert (s.kind, s.path, s.split) == ("local", "data/x.jsonl", "train")
    with pytest.raises(DomtokError):
        parse_source("hub:")


def test_gsm8k_local_dir_picks_split(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"question": "q1", "answer": "a\n#### 1"}] * 3)
    write_jsonl(tmp_path / "test.jsonl", [{"question": "t1", "answer": "a\n#### 2"}])
    assert [r["question"] for r in load_gsm8k("test", tmp_path)] == ["t1"]
    assert len(list(load_gsm8k("train", tmp_path))) == 3
    with pytest.raises(DomtokError, match="unknown split"):
        load_gsm8k("dev", tmp_path)


def test_real_gsm8k(gsm8k_dir):
    recs = load_gsm8k("test", gsm8k_dir)
    rows = list(recs)
    assert len(rows) == 1319 and recs.report.skipped == 0 and recs.report.records == 1319
    assert rows[0]["question"].startswith("Janet")
    assert len(list(load_gsm8k("train", gsm8k_dir))) == 7473


def test_malformed_records_counted_with_file_and_line(tmp_path):
    good = [{"text": f"doc {i}"} for i in range(200)]
    p = write_jsonl(tmp_path / "web.jsonl", good, extra_lines=["{not json", json.dumps({"txt": "wrong key"})])
    recs = load_fineweb(path=str(p))
    rows = list(recs)
    assert len(rows) == 200
    rep = recs.report
    assert rep.records == 200 and rep.skipped == 2
    assert rep.errors[0][0] == str(p) and rep.errors[0][1] == 201 and "bad JSON" in rep.errors[0][2]
    assert rep.errors[1][1] == 202 and "missing field 'text'" in rep.errors[1][2]


def test_too_many_malformed_is_fatal_and_names_file(tmp_path):
    rows = [{"text": "ok"}] * 10 + [{"text": 3}] * 2  # wrong type, 17% bad
    p = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DomtokError, match="bad.jsonl.*2 of 12"):
        list(load_fineweb(path=str(p)))
    # a looser threshold lets it through
    assert len(list(load_fineweb(path=str(p), max_bad_fraction=0.5))) == 10


def test_missing_path_is_one_clear_error(tmp_path):
    with pytest.raises(DomtokError, match="no such file"):
        load_gsm8k("train", tmp_path / "nope")


def test_tulu_messages_schema(tmp_path):
    rows = [{"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
             "source": "x"},
            {"id": "b", "messages": [{"role": "user"}]},  # no content
            {"id": "c", "messages": "not a list"}]
    p = write_jsonl(tmp_path / "tulu.jsonl", rows)
    recs = load_tulu(path=str(p), max_bad_fraction=1.0)
    out = list(recs)
    assert [r["id"] for r in out] == ["a"] and recs.report.skipped == 2


def test_hellaswag_original_and_rowan_labels(tmp_path):
    base = {"ctx": "A man", "ctx_a": "A man", "ctx_b": "is", "activity_label": "Fun",
            "endings": ["runs", "sits", "flies", "swims"]}
    write_jsonl(tmp_path / "hellaswag_val.jsonl", [dict(base, label=2, ind=1)])
    write_jsonl(tmp_path / "hellaswag_train.jsonl", [dict(base, label=0, ind=2)])
    rows = list(load_hellaswag("validation", tmp_path))
    assert len(rows) == 1 and rows[0]["label"] == 2 and rows[0]["ind"] == 1
    # Rowan/hellaswag parquet: label is a string, "" on the unlabelled test split
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([dict(base, label="3"), dict(base, label="")])
    pq.write_table(table, tmp_path / "validation-00000.parquet")
    rows = list(load_hellaswag("validation", str(tmp_path / "validation-00000.parquet")))
    assert [r["label"] for r in rows] == [3, None]
    bad = write_jsonl(tmp_path / "x.jsonl", [dict(base, label=7)])
    recs = load_hellaswag("validation", str(bad), max_bad_fraction=1.0)
    assert list(recs) == [] and "out of range" in recs.report.errors[0][2]


def test_tinygsm_json_list_and_txt(tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps([{"question": "q", "code": "def simple_math_problem():\n    return 1"}]))
    rows = list(load_tinygsm(path=str(tmp_path / "tiny.json")))
    assert rows[0]["code"].startswith("def")
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_text("first doc")
    (d / "b.txt").write_text("second doc")
    assert [r["text"] for r in load_fineweb(path=str(d))] == ["first doc", "second doc"]


def test_hub_path_via_datasets(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None, streaming=False):
        calls.append((path, name, split, streaming))
        if path == "openai/gsm8k":
            return iter([{"question": "q", "answer": "#### 1"}])
        return iter([{"text": "hello"}, {"text": "world"}, {"nope": 1}])

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    recs = load_fineweb(max_bad_fraction=0.5)
    assert [r["text"] for r in recs] == ["hello", "world"]
    assert calls == [("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", True)]
    assert recs.report.errors == [("hub:HuggingFaceFW/fineweb-edu", 3, "missing field 'text'")]
    list(load_gsm8k("test"))  # openai/gsm8k main, not streamed
    assert calls[-1] == ("openai/gsm8k", "main", "test", False)


def test_hub_failure_is_domtok_error(monkeypatch):
    import datasets

    def boom(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(DomtokError, match="hub:allenai/tulu-3-sft-mixture.*no network"):
        list(load_tulu())


def test_sample_records_is_seeded_uniform_and_ordered():
    data = list(range(1000))
    a = sample_records(iter(data), 50, seed=1)
    assert a == sample_records(iter(data), 50, seed=1)
    assert a != sample_records(iter(data), 50, seed=2)
    assert len(a) == 50 and a == sorted(a) and a != data[:50]
    assert sample_records(data, 5000, seed=0) == data
    # uniform: every position has the same chance; check the mean position over many seeds
    counts = Counter()
    for s in range(300):
        counts.update(x // 100 for x in sample_records(data, 10, seed=s))
    assert min(counts.values()) > 200 and max(counts.values()) < 400  # expected 300 per decile
