"""SFT examples for every stage: load records, apply the condition's injection policy, render
through `domtok.chat`, and batch with explicit loss masks.

Sources (`DataSource.kind`):
    instruct       Tulu-3 SFT mixture conversations (`messages`), local file or hub id
    gsm8k          GSM8K *train* (question/answer); validation is a held-out part of train,
                   never test (the reference validated on the first 500 test items)
    gsm_sbs        the step-by-step multiplication warm start (synthetic drills; with `path` =
                   GSM8K train, 80% are GSM8K items rewritten step by step)
    drills         arithmetic drills, one `drill_kinds` entry per tier (synthetic)
    word_problems  simple word problems (synthetic)
    tinygsm        TinyGSM-format question + solution, local file or hub id
    jsonl          any local jsonl of `messages` or `question`/`answer`

Injection policy (from the condition, never a separate flag): the baseline never injects;
a domain condition injects into assistant text only, and into user text only when the
config says `inject_user: true` (injecting a question like "What is 6*9?" would put the
answer, 54, into the prompt). System messages are never injected.

Both conditions train on the same records: a record whose injection would break a GSM8K
`<<expr=result>>` annotation is dropped from every condition, the baseline included (it is
injected with the layout's token set only to decide that, and trained on as plain text), so
the conditions have the same examples, steps and batches. The dropped ids are in the report.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import torch

from domtok.chat import qa_messages, render_conversation
from domtok.notation import ANNOTATION_RE, split_annotation
from domtok.errors import DomtokError


@dataclass
class DataSource:
    kind: str = "gsm8k"        # instruct | gsm8k | gsm_sbs | drills | word_problems | tinygsm | jsonl
    path: str | None = None    # local file/dir (or a hub id for instruct/tinygsm); None = default
    n: int = 0                 # seeded random subset of this many records (0 = all)
    repeat: int = 1            # list the records this many times (e.g. GSM-SBS x3 in curriculum)
    drill_kinds: list[str] = field(default_factory=list)  # for kind=drills: one entry per tier
    seed: int = 0              # for the synthetic generators and the subset draw
    max_bad_fraction: float = 0.01  # malformed records of a file tolerated before failing


@dataclass
class SFTExample:
    ids: list[int]
    mask: list[int]   # 1 = trained (assistant tokens + closing EOS)
    n_bytes: int      # UTF-8 bytes of the ORIGINAL (uninjected) assistant text: bits per byte


# --- loading ---------------------------------------------------------------------------------

def load_records(src: DataSource) -> list[dict]:
    """Records of one source as dicts with `messages` or `question`/`answer`."""
    from domtok.data import sources
    from domtok.data.drills import drills
    from domtok.data.gsm_sbs import gsm_sbs
    from domtok.data.word_problems import word_problems

    k = src.kind
    if k == "instruct":
        recs = _take(sources.load_tulu("train", path=src.path, max_bad_fraction=src.max_bad_fraction), src)
    elif k == "gsm8k":
        recs = list(sources.load_gsm8k("train", path=src.path, max_bad_fraction=src.max_bad_fraction))
    elif k == "tinygsm":
        recs = _take(sources.load_tinygsm("train", path=src.path, max_bad_fraction=src.max_bad_fraction), src)
    elif k == "jsonl":
        if not src.path:
            raise DomtokError("sft data: kind 'jsonl' needs `path` (a jsonl file of messages or question/answer)")
        # the same reader and rule as every other file source: malformed records (unknown roles,
        # a `content` that is not text) are counted, and more than max_bad_fraction is an error
        if not os.path.isfile(src.path):
            raise DomtokError(f"{src.path}: no such file; give a jsonl with one {{'messages': [...]}} or "
                              "{'question', 'answer'} object per line")
        recs = list(sources.Records(src.path, None, sources.check_conversation, src.max_bad_fraction))
    elif k == "gsm_sbs":
        # `path` = GSM8K train (file, dir or hub id): 80% rewritten GSM8K items + 20% drills,
        # like the reference's 512 + 128; no path: drills only (the tiny study has no GSM8K)
        gsm8k = list(sources.load_gsm8k("train", path=src.path, max_bad_fraction=src.max_bad_fraction)) if src.path else None
        try:
            recs = gsm_sbs(src.n or 640, src.seed, gsm8k=gsm8k)
        except ValueError as e:
            raise DomtokError(f"{src.path}: {e}") from None
    elif k == "word_problems":
        recs = list(word_problems(src.n or 5000, src.seed, "train"))
    elif k == "drills":
        kinds = src.drill_kinds or ["tier1", "tier2", "tier3", "tier4", "tier5"]
        recs = []
        for i, dk in enumerate(kinds):
            recs.extend(drills(dk, src.n or 2000, src.seed + i))
        src = DataSource(**{**src.__dict__, "n": 0})  # n was per tier
    else:
        raise DomtokError(f"sft data kind {k!r}: expected instruct, gsm8k, gsm_sbs, drills, word_problems, "
                          "tinygsm or jsonl")
    if src.n and src.kind not in ("gsm_sbs", "word_problems", "instruct", "tinygsm") and len(recs) > src.n:
        recs = sources.sample_records(recs, src.n, src.seed)
    return recs * max(1, src.repeat)


def _take(records, src: DataSource) -> list[dict]:
    """A seeded subset of a (possibly streamed) source, read once."""
    from domtok.data.sources import sample_records

    return sample_records(records, src.n, src.seed) if src.n else list(records)


def to_messages(rec: dict) -> list[dict] | None:
    """A record as chat messages, or None if it has neither messages nor a question/answer."""
    if isinstance(rec.get("messages"), list):
        return [{"role": m.get("role"), "content": m.get("content")} for m in rec["messages"]]
    q = rec.get("question")
    a = rec.get("answer", rec.get("solution", rec.get("code")))  # TinyGSM: converted solution or program
    if isinstance(q, str) and isinstance(a, str):
        return qa_messages(q, a)
    return None


def split_train_val(records: list, val_size: float, seed: int) -> tuple[list, list]:
    """Seeded held-out split of ONE list (train); val_size < 1 is a fraction, else a count."""
    idx = list(range(len(records)))
    random.Random(seed).shuffle(idx)
    n_val = int(round(val_size * len(records))) if val_size < 1 else int(val_size)
    n_val = min(n_val, max(0, len(records) - 1))
    val = [records[i] for i in sorted(idx[:n_val])]
    train = [records[i] for i in sorted(idx[n_val:])]
    return train, val


# --- injection policy ------------------------------------------------------------------------

def annotations(text: str) -> tuple[list[str], int]:
    """(results of the well-formed `<<expr=result>>` annotations, count of stray '<<'/'>>'; an
    annotation without `=` counts as two strays). Notation: `domtok.notation`."""
    results: list[str] = []

    def take(m):
        parts = split_annotation(m.group(1))
        if parts is None:
            return m.group(0)
        results.append(parts[1])
        return ""

    rest = ANNOTATION_RE.sub(take, text)
    return results, rest.count("<<") + rest.count(">>")


def annotations_intact(original: str, injected: str) -> bool:
    """True when injection kept every annotation well formed with the same results."""
    a, stray_a = annotations(original)
    b, stray_b = annotations(injected)
    return a == b and stray_b == stray_a


def inject_messages(messages: list[dict], token_set: str | None, inject_user: bool,
                    injection: dict) -> list[dict] | None:
    """The condition's injection applied to one conversation; None if it broke an annotation.

    `injection` is the condition's `Tokenizer.injection` ({"mode", "word_forms"})."""
    if token_set is None:
        return messages
    from domtok.tokens.inject import check_annotations, inject_domain_tokens

    out = []
    for m in messages:
        if m["role"] == "assistant" or (m["role"] == "user" and inject_user):
            text = inject_domain_tokens(m["content"], token_set=token_set, mode=injection["mode"],
                                        word_forms=injection["word_forms"]).text
            # same annotations with the same results, and each still evaluates (calculator)
            # wherever it did before injection
            if not annotations_intact(m["content"], text) or (
                    "<<" in text and len(check_annotations(text, token_set)) > len(check_annotations(m["content"], token_set))):
                return None
            m = {**m, "content": text}
        out.append(m)
    return out


@dataclass
class BuildReport:
    examples: int = 0
    malformed: int = 0          # no messages / bad roles
    broken_annotations: int = 0  # dropped in every condition: injection would break a <<expr=result>>
    broken_annotation_ids: list = field(default_factory=list)  # their `id` (or position in the records)
    truncated: int = 0           # longer than max_length (cut; EOS lost)
    no_trained_tokens: int = 0   # nothing left to train on after truncation


def build_examples(records: list[dict], tokenizer, token_set: str | None, inject_user: bool,
                   max_length: int, report: BuildReport | None = None,
                   drop_set: str | None = None) -> list[SFTExample]:
    """Render records into examples (ids + mask) under the condition's injection policy.

    `drop_set`: the token set whose injection decides which records are dropped (the layout's
    set, in every condition, so all conditions drop the same records); None = `token_set`.
    """
    report = report if report is not None else BuildReport()
    drop_set = drop_set or token_set
    out = []
    for i, rec in enumerate(records):
        msgs = to_messages(rec)
        if msgs is None:
            report.malformed += 1
            continue
        # the injector settings are the condition's (the baseline's tokenizer records the same)
        injected = inject_messages(msgs, drop_set, inject_user, tokenizer.injection)
        if injected is None:
            report.broken_annotations += 1
            report.broken_annotation_ids.append(rec.get("id", i))
            continue
        if token_set is None:
            injected = msgs  # this condition trains on the plain text
        try:
            r = render_conversation(injected, tokenizer)
        except ValueError:
            report.malformed += 1
            continue
        n_bytes = sum(len((" " + m["content"]).encode("utf-8")) for m in msgs if m["role"] == "assistant")
        ids, mask = r.ids, r.mask
        if len(ids) > max_length:
            report.truncated += 1
            full = sum(mask)
            ids, mask = ids[:max_length], mask[:max_length]
            # bytes of the kept part, pro rata (exact bytes of a cut token string are unknowable
            # across conditions; this keeps bits per byte comparable)
            n_bytes = int(round(n_bytes * sum(mask) / max(1, full)))
        if sum(mask[1:]) == 0:
            report.no_trained_tokens += 1
            continue
        out.append(SFTExample(ids, mask, n_bytes))
    report.examples += len(out)
    return out


def collate(examples: list[SFTExample], pad_id: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) right-padded: x = ids[:-1], y = ids[1:] with -100 wherever the mask is 0.

    Padding positions are never trained (y = -100) and, with causal attention and right
    padding, never seen by a real token, so no attention mask is needed.
    """
    T = max(len(e.ids) for e in examples) - 1
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)
    y = torch.full((len(examples), T), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        ids = torch.tensor(e.ids, dtype=torch.long)
        m = torch.tensor(e.mask[1:], dtype=torch.bool)
        n = len(e.ids) - 1
        x[i, :n] = ids[:-1]
        y[i, :n] = torch.where(m, ids[1:], torch.full_like(ids[1:], -100))
    return x.to(device), y.to(device)
