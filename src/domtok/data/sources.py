"""Real data sources: one loader per dataset, from the Hugging Face hub or local files.

A *source* is a string:

- `hub:<id>[:<config>][@<split>]`  e.g. `hub:HuggingFaceFW/fineweb-edu:sample-10BT@train`,
  read with `datasets.load_dataset(id, config, split=split, streaming=...)`;
- anything else is a local path: one file (`.jsonl`, `.json`, `.parquet`, `.txt`) or a
  directory of them. In a directory, files whose name starts with the split (`train.jsonl`,
  `test-00000.parquet`, `hellaswag_val.jsonl` for split `validation`) are chosen when there
  are any, otherwise every file is read. A `.txt` file is one document `{"text": ...}`.

Every loader returns `Records`: an iterable of dicts in the dataset's schema plus a
`LoadReport`. A malformed record (bad JSON line, missing field, wrong type) is skipped and
counted with its file and line; only when more than `max_bad_fraction` (default 1%) of the
records are bad does loading fail, with a `DomtokError` naming the file. A missing file or a
hub failure is one `DomtokError`, never a traceback.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from domtok.errors import DomtokError

FINEWEB = "hub:HuggingFaceFW/fineweb-edu:sample-10BT@train"
TULU = "hub:allenai/tulu-3-sft-mixture@train"
GSM8K = "hub:openai/gsm8k:main"
HELLASWAG = "hub:Rowan/hellaswag"
TINYGSM = "hub:TinyGSM/TinyGSM@train"

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt")
MAX_KEPT_ERRORS = 100  # enough to show the pattern; counting goes on past it


@dataclass
class LoadReport:
    """What a load saw: good records, skipped ones, and where the bad ones were."""

    source: str
    records: int = 0
    skipped: int = 0
    errors: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, reason)
    skipped_by_file: Counter = field(default_factory=Counter)

    def add_error(self, file: str, line: int, reason: str) -> None:
        self.skipped += 1
        self.skipped_by_file[file] += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append((file, line, reason))

    @property
    def bad_fraction(self) -> float:
        total = self.records + self.skipped
        return self.skipped / total if total else 0.0

    def summary(self) -> dict:
        return {"source": self.source, "records": self.records, "skipped": self.skipped,
                "errors": [{"file": f, "line": n, "reason": r} for f, n, r in self.errors[:20]]}


# ---------------------------------------------------------------------------- parsing sources

@dataclass(frozen=True)
class SourceSpec:
    kind: str             # "hub" | "local"
    path: str             # hub id or local path
    config: str | None = None
    split: str | None = None


def parse_source(source: str, split: str | None = None) -> SourceSpec:
    """`hub:id[:config][@split]` or a local path; an explicit `@split` wins over `split`."""
    source = str(source)
    if source.startswith("hub:"):
        rest = source[4:]
        if "@" in rest:
            rest, split = rest.rsplit("@", 1)
        config = None
        if ":" in rest:
            rest, config = rest.split(":", 1)
        if not rest:
            raise DomtokError(f"source {source!r}: empty hub id; write hub:<owner/name>[:config][@split]")
        return SourceSpec("hub", rest, config or None, split or None)
    return SourceSpec("local", source, None, split)


# ---------------------------------------------------------------------------- raw readers

def _split_aliases(split: str) -> tuple[str, ...]:
    if split in ("validation", "val", "valid", "dev"):
        return ("validation", "val", "valid", "dev")
    return (split,)


def local_files(path: str | Path, split: str | None = None) -> list[Path]:
    """The data files a local source names, in a fixed (sorted) order."""
    p = Path(path)
    if not p.exists():
        raise DomtokError(f"{p}: no such file or directory; pass an existing path or a hub:<id> source")
    if p.is_file():
        return [p]
    files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in LOCAL_SUFFIXES
                   and not q.name.startswith("."))
    if split:
        names = _split_aliases(split)

        def matches(q: Path) -> bool:
            stem = q.name.lower()
            return any(stem.startswith(a) or f"_{a}" in stem or f"/{a}/" in f"/{q.relative_to(p).as_posix()}"
                       for a in names)

        chosen = [q for q in files if matches(q)]
        files = chosen or files
    if not files:
        raise DomtokError(f"{p}: no {'/'.join(LOCAL_SUFFIXES)} files inside; point the source at a data file")
    return files


def decode_utf8(raw: bytes, path: Path, n: int, report: LoadReport) -> str | None:
    """Strict UTF-8: a record with invalid bytes is malformed (counted), never U+FFFD text.
    A byte-order mark at the start of a file (Windows tools write one) is not part of line 1."""
    try:
        return raw.decode("utf-8-sig" if n == 1 else "utf-8")
    except UnicodeDecodeError as e:
        report.add_error(str(path), n, f"invalid UTF-8 at byte {e.start}")
        return None


def _read_file(path: Path, report: LoadReport) -> Iterator[tuple[int, Any]]:
    """Yield (line or row number, raw record) from one file; JSON and UTF-8 errors go to the report."""
    if path.suffix == ".txt":  # one record: the whole file
        text = decode_utf8(path.read_bytes(), path, 1, report)
        if text is not None:
            yield 1, {"text": text}
    elif path.suffix == ".jsonl":
        yield from _read_file_as_jsonl(path, report)
    elif path.suffix == ".json":
        try:
            # invalid bytes become lone surrogates, found per record below
            data = json.loads(path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff"))
        except json.JSONDecodeError as e:
            # Many ".json" files are really JSON lines; read them as such.
            if e.msg.startswith("Extra data"):
                yield from _read_file_as_jsonl(path, report)
                return
            raise DomtokError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix or replace the file") from None
        if isinstance(data, dict):  # {"data": [...]} / {"rows": [...]} or one record
            lists = [v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
            data = lists[0] if len(lists) == 1 else [data]
        if not isinstance(data, list):
            raise DomtokError(f"{path}: expected a list of records; write JSON lines or a JSON list")
        for n, rec in enumerate(data, 1):
            if _has_bad_bytes(rec):
                report.add_error(str(path), n, "invalid UTF-8")
                continue
            yield n, rec
    elif path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - pyarrow comes with datasets
            raise DomtokError(f"{path}: reading parquet needs pyarrow; pip install pyarrow") from None
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:
            raise DomtokError(f"{path}: not a readable parquet file ({e}); fix or replace it") from None
        n = 0
        for batch in pf.iter_batches(batch_size=1024):  # bounded memory for big files
            for rec in batch.to_pylist():
                n += 1
                yield n, rec
    else:
        raise DomtokError(f"{path}: unsupported file type; use .jsonl, .json, .parquet or .txt")


def _has_bad_bytes(rec: Any) -> bool:
    """Does a record decoded with `surrogateescape` hold a byte that was not UTF-8?"""
    if isinstance(rec, str):
        return any("\udc80" <= c <= "\udcff" for c in rec)
    if isinstance(rec, dict):
        return any(_has_bad_bytes(k) or _has_bad_bytes(v) for k, v in rec.items())
    if isinstance(rec, list):
        return any(_has_bad_bytes(v) for v in rec)
    return False


def _read_file_as_jsonl(path: Path, report: LoadReport) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            line = decode_utf8(raw, path, n, report)
            if line is not None and line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    report.add_error(str(path), n, f"bad JSON: {e.msg}")


def _read_hub(spec: SourceSpec, streaming: bool, report: LoadReport) -> Iterator[tuple[int, Any]]:
    import datasets

    name = f"hub:{spec.path}"
    try:
        ds = datasets.load_dataset(spec.path, spec.config, split=spec.split or "train", streaming=streaming)
    except Exception as e:  # network, auth, unknown config: one clear message
        raise DomtokError(f"{name}: could not load from the Hugging Face hub ({type(e).__name__}: {e}); "
                          "check the id/config/split and your network, or pass a local path") from None
    try:
        for n, rec in enumerate(ds, 1):
            yield n, rec
    except DomtokError:
        raise
    except Exception as e:
        raise DomtokError(f"{name}: reading from the hub failed ({type(e).__name__}: {e}); "
                          "retry or pass a local copy") from None


# ---------------------------------------------------------------------------- records + checks

class Records:
    """Iterable of validated records; `report` fills in while iterating.

    Local files can be iterated again (the report restarts); a streaming hub dataset is read once
    per iteration.
    """

    def __init__(self, source: str, split: str | None, check: Callable[[Any], dict | str],
                 max_bad_fraction: float = 0.01, streaming: bool = False):
        self.spec = parse_source(source, split)
        self.source = source
        self.check = check
        self.max_bad_fraction = max_bad_fraction
        self.streaming = streaming
        self.report = LoadReport(source=source)
        if self.spec.kind == "local":
            self.files = local_files(self.spec.path, self.spec.split)  # fail early on a missing path

    def _raw(self) -> Iterator[tuple[str, int, Any]]:
        if self.spec.kind == "hub":
            for n, rec in _read_hub(self.spec, self.streaming, self.report):
                yield f"hub:{self.spec.path}", n, rec
        else:
            for path in self.files:
                for n, rec in _read_file(path, self.report):
                    yield str(path), n, rec

    def __iter__(self) -> Iterator[dict]:
        report = self.report = LoadReport(source=self.source)
        for name, n, raw in self._raw():
            out = self.check(raw)
            if isinstance(out, str):
                report.add_error(name, n, out)
                continue
            report.records += 1
            yield out
        if report.bad_fraction > self.max_bad_fraction:
            worst = report.skipped_by_file.most_common(1)[0][0]
            first = "; ".join(f"line {n}: {r}" for f, n, r in report.errors if f == worst)
            raise DomtokError(
                f"{worst}: {report.skipped} of {report.records + report.skipped} records are malformed "
                f"({report.bad_fraction:.1%} > {self.max_bad_fraction:.1%}), e.g. {first[:300]}; "
                "fix the file, or tolerate more with max_bad_fraction=0.05 (`domtok eval ... --set "
                "max_bad_fraction=0.05`; an override or config key for the other verbs)")


# The longest question, answer or message a record may hold. GSM8K's longest is under 1,000
# characters; a prompt of megabytes would be tokenized, batched and padded whole (gigabytes of
# memory) before its context cut showed. Longer records are malformed like any other.
MAX_PROMPT_CHARS = 100_000


def _need(rec: Any, fields: dict[str, type | tuple[type, ...]], max_chars: int | None = MAX_PROMPT_CHARS) -> str | None:
    """Reason why `rec` lacks a field, has one of the wrong type or a string over `max_chars`, else None."""
    if not isinstance(rec, dict):
        return f"expected an object, got {type(rec).__name__}"
    for k, tp in fields.items():
        if k not in rec or rec[k] is None:
            return f"missing field {k!r}"
        if not isinstance(rec[k], tp):
            return f"field {k!r} should be {getattr(tp, '__name__', tp)}, got {type(rec[k]).__name__}"
        if max_chars is not None and isinstance(rec[k], str) and len(rec[k]) > max_chars:
            return f"field {k!r} is {len(rec[k]):,} characters, over the {max_chars:,} a prompt or answer may have"
    return None


def check_text(rec: Any) -> dict | str:
    why = _need(rec, {"text": str}, max_chars=None)  # a pretraining document may be long
    return why or rec


def check_messages(rec: Any) -> dict | str:
    """A conversation as the chat format trains on it: known roles, string contents, user and
    assistant taking turns (`chat.validate_messages`), each message of a bounded length."""
    from domtok.chat import validate_messages

    why = _need(rec, {"messages": list})
    if why:
        return why
    for i, m in enumerate(rec["messages"]):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f"messages[{i}] should be {{role: str, content: str}}"
        if len(m["content"]) > MAX_PROMPT_CHARS:
            return f"messages[{i}] is {len(m['content']):,} characters, over the {MAX_PROMPT_CHARS:,} a message may have"
    if not rec["messages"]:
        return "empty messages list"
    try:
        validate_messages(rec["messages"])
    except ValueError as e:
        return str(e)
    return rec


def check_conversation(rec: Any) -> dict | str:
    """A record of a jsonl file of conversations or questions (SFT data, GRPO prompts, RFT
    questions): `messages`, or a `question` with its `answer` (`solution`, `code`: TinyGSM)."""
    if isinstance(rec, dict) and "messages" in rec:
        return check_messages(rec)
    answer = next((k for k in ("answer", "solution", "code") if isinstance(rec, dict) and k in rec), "answer")
    return _need(rec, {"question": str, answer: (str, int, float)}) or rec


def check_gsm8k(rec: Any) -> dict | str:
    from domtok.notation import parse_gold  # the one reader of the `#### N` line

    why = _need(rec, {"question": str, "answer": str})
    if why:
        return why
    try:
        parse_gold(rec["answer"])
    except ValueError as e:
        return str(e)
    return rec


def check_hellaswag(rec: Any) -> dict | str:
    """Accepts both Rowan/hellaswag (label is a string, "" on test) and the original jsonl (int)."""
    why = _need(rec, {"ctx": str, "endings": list})
    if why:
        return why
    if not all(isinstance(e, str) for e in rec["endings"]) or len(rec["endings"]) < 2:
        return "field 'endings' should be a list of at least two strings"
    label = rec.get("label")
    if isinstance(label, str):
        label = int(label) if label.strip().lstrip("-").isdigit() else None
    elif isinstance(label, bool) or not isinstance(label, int):
        label = None
    if label is not None and not 0 <= label < len(rec["endings"]):
        return f"label {label} out of range for {len(rec['endings'])} endings"
    out = dict(rec)
    out["label"] = label  # int, or None for an unlabelled test item
    out.setdefault("ctx_a", rec["ctx"])
    out.setdefault("ctx_b", "")
    out.setdefault("activity_label", "")
    return out


def check_tinygsm(rec: Any) -> dict | str:
    return _need(rec, {"question": str, "code": str}) or rec


# ---------------------------------------------------------------------------- loaders

def load_records(source: str, check: Callable[[Any], dict | str] = check_text, split: str | None = None, *,
                 max_bad_fraction: float = 0.01, streaming: bool = False) -> Records:
    """Any source with a record check; the loaders below fix the check and default source."""
    return Records(source, split, check, max_bad_fraction=max_bad_fraction, streaming=streaming)


def load_fineweb(split: str = "train", path: str | None = None, *, max_bad_fraction: float = 0.01) -> Records:
    """FineWeb-Edu sample-10BT (`text`), streamed from the hub, or local files with `text`."""
    return Records(path or FINEWEB, split, check_text, max_bad_fraction, streaming=True)


def load_tulu(split: str = "train", path: str | None = None, *, max_bad_fraction: float = 0.01) -> Records:
    """Tulu-3 SFT mixture: `messages` = [{role, content}, ...]."""
    return Records(path or TULU, split, check_messages, max_bad_fraction, streaming=True)


def load_gsm8k(split: str = "train", path: str | None = None, *, max_bad_fraction: float = 0.01) -> Records:
    """GSM8K main: `question`, `answer` (with `<<expr=result>>` and a final `#### N`)."""
    if split not in ("train", "test"):
        raise DomtokError(f"gsm8k: unknown split {split!r}; use train or test")
    return Records(path or GSM8K, split, check_gsm8k, max_bad_fraction)


def load_hellaswag(split: str = "validation", path: str | None = None, *,
                   max_bad_fraction: float = 0.01) -> Records:
    """HellaSwag: `ctx`, `ctx_a`, `ctx_b`, `endings`, `label` (int; None when unlabelled)."""
    return Records(path or HELLASWAG, split, check_hellaswag, max_bad_fraction)


def load_tinygsm(split: str = "train", path: str | None = None, *, max_bad_fraction: float = 0.01) -> Records:
    """TinyGSM: `question`, `code` (a Python program that computes the answer; never run here)."""
    return Records(path or TINYGSM, split, check_tinygsm, max_bad_fraction, streaming=True)


# ---------------------------------------------------------------------------- sampling

def sample_records(records: Iterable[dict], n: int, seed: int) -> list[dict]:
    """A seeded uniform random subset of `n` records, in their original order.

    Reservoir sampling (Algorithm R), so a stream is read once and memory is O(n).
    """
    if n < 0:
        raise DomtokError(f"sample_records: n must be >= 0, got {n}")
    rng = random.Random(seed)
    reservoir: list[tuple[int, dict]] = []
    for i, rec in enumerate(records):
        if i < n:
            reservoir.append((i, rec))
        else:
            j = rng.randint(0, i)
            if j < n:
                reservoir[j] = (i, rec)
    reservoir.sort(key=lambda t: t[0])
    return [rec for _, rec in reservoir]
