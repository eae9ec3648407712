"""`domtok tokenizer build|fix`: train a small BPE, or repair a model dir's tokenizer files.

    domtok tokenizer build --base bpe-4096 --corpus PATH --out DIR
        trains a byte-level BPE of 4096 base ids on a corpus (.txt, .jsonl, .json, or a folder
        of them) and saves it as a domtok tokenizer; `load_tokenizer(DIR, condition)` then
        gives any condition with the standard layout.

    domtok tokenizer fix MODEL_DIR [--condition C]
        re-writes the tokenizer files of an existing model dir (domtok or Hugging Face) with
        the layout and flags domtok uses. The reference study exported models whose domain
        tokens were registered as *special* tokens (dropped by skip_special_tokens) and whose
        pad token was EOS; this makes their HF tokenizer right without touching the weights.
        It refuses when the dir's domain-token ids differ from domtok's layout: that cannot
        be fixed by re-writing a tokenizer (the embedding rows would be wrong).

`train_bpe(texts, vocab_size, out_dir)` is the trainer behind `build` (and behind `domtok
prepare` for a `bpe-N` base): a GPT-2-style byte-level BPE saved as a baseline Tokenizer.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Iterable, Iterator

from domtok.config import atomic_write_json, atomic_write_text
from domtok.errors import DomtokError
from domtok.tokens.bpe import EOT, GPT2_BASE_VOCAB_SHA256, read_hf_vocab_merges, vocab_sha256
from domtok.tokens.sets import TOKEN_SETS, get_token_set
from domtok.tokens.tokenizer import META_FILE, Tokenizer

CORPUS_SUFFIXES = (".txt", ".jsonl", ".json")
CHUNK_CHARS = 1 << 16  # .txt files are fed to the trainer in pieces of about this size
MAX_BAD_FRACTION = 0.01  # malformed records tolerated, as for every data source (domtok.data.sources)


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir, name: str | None = None,
              split_digits: bool = False) -> "Tokenizer":
    """Train a GPT-2-style byte-level BPE of `vocab_size` base ids and save it to `out_dir`.

    `split_digits`: the trainer sees every digit as a piece of its own, so no merge ever joins
    a digit to anything; encoding (GPT-2's pre-tokenizer, unchanged) then writes every number
    one digit per token (` 47` -> ` `, `4`, `7`): a sum or product is written digit by digit, not
    as one token per number, and the files stay plain GPT-2 BPE files.

    EOT is the LAST base id (vocab_size - 1), as in GPT-2; the 256 bytes are always in the
    vocabulary, so any text encodes. If the corpus runs out of merges first, n_base is
    smaller than asked: the tokenizer is named by its real size (`bpe-8605`, recorded in
    domtok_tokenizer.json), never by the size asked for, and `small_bpe_warning` says so.
    Returns the saved Tokenizer. `out_dir` is a saved baseline
    Tokenizer: `load_tokenizer(out_dir, condition)` gives any condition.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 258:
        raise DomtokError(f"bpe vocab_size {vocab_size} is too small: it needs the 256 bytes, EOT and at least one merge")
    hf = HFTokenizer(models.BPE(fuse_unk=False))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if split_digits:
        hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), hf.pre_tokenizer])
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    hf.train_from_iterator(texts, trainer)
    model = json.loads(hf.to_str())["model"]
    vocab = {str(k): int(v) for k, v in model["vocab"].items()}
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if not merges:
        raise DomtokError("bpe training learnt no merges: the corpus is empty or too small")
    tok = Tokenizer(name or f"bpe-{vocab_size}", "baseline", get_token_set("mul"), vocab, merges)
    assert tok.splits_digits or not split_digits, "the trainer joined a digit to something"
    if tok.n_base < vocab_size:
        tok = Tokenizer(f"bpe-{tok.n_base}", "baseline", get_token_set("mul"), vocab, merges)
    tok.save(out_dir)
    return tok


def small_bpe_warning(tok: "Tokenizer", asked: int) -> None:
    """Say on stderr when a corpus gave fewer base tokens than asked for (train_bpe)."""
    if tok.n_base < asked:
        print(f"warning: the corpus yields only {tok.n_base} base tokens, not the {asked} asked for; the "
              f"tokenizer is {tok.base} (a larger corpus gives more merges)", file=sys.stderr, flush=True)



# ---- build ------------------------------------------------------------------------------


def record_text(rec) -> str | None:
    """The text of one corpus record: `text`, GSM-style question+answer, chat messages, or None."""
    if isinstance(rec, str):
        return rec
    if not isinstance(rec, dict):
        return None
    if isinstance(rec.get("text"), str):
        return rec["text"]
    if isinstance(rec.get("question"), str) and isinstance(rec.get("answer"), str):
        return rec["question"] + "\n" + rec["answer"]
    if isinstance(rec.get("messages"), list):
        parts = [m.get("content") for m in rec["messages"] if isinstance(m, dict)]
        parts = [p for p in parts if isinstance(p, str)]
        return "\n".join(parts) if parts else None
    return None


def read_corpus(path, stats: dict | None = None) -> Iterator[str]:
    """Texts from a .txt/.jsonl/.json file or a folder of them (sorted, recursive)."""
    path = Path(path)
    stats = {} if stats is None else stats
    stats.setdefault("documents", 0)
    stats.setdefault("skipped", [])
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in CORPUS_SUFFIXES)
        if not files:
            raise DomtokError(f"{path}: no {'/'.join(CORPUS_SUFFIXES)} files in this folder; pass a corpus file or folder")
    elif path.is_file():
        files = [path]
    else:
        raise DomtokError(f"{path}: no such corpus file or folder; pass --corpus PATH to text (.txt/.jsonl/.json)")
    for f in files:
        if f.suffix == ".jsonl":
            with open(f, "rb") as fh:
                for lineno, raw in enumerate(fh, 1):
                    try:  # invalid UTF-8 makes the record malformed, like bad JSON; line 1 may start with a BOM
                        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                        text = record_text(json.loads(line)) if line.strip() else ""
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        text = None
                    if text == "":
                        continue
                    if text is None:
                        stats["skipped"].append(f"{f}:{lineno}")
                        continue
                    stats["documents"] += 1
                    stats["good"] = stats.get("good", 0) + 1
                    yield text
        elif f.suffix == ".json":
            try:
                data = json.loads(f.read_text(encoding="utf-8-sig"))
            except UnicodeDecodeError as e:
                raise DomtokError(f"{f}: not UTF-8 (byte {e.start}: {e.reason}); convert it to UTF-8") from None
            except json.JSONDecodeError as e:
                raise DomtokError(f"{f}: not valid JSON ({e}); use a JSON list of records or .jsonl") from e
            for k, rec in enumerate(data if isinstance(data, list) else [data]):
                text = record_text(rec)
                if text is None:
                    stats["skipped"].append(f"{f}[{k}]")
                    continue
                stats["documents"] += 1
                stats["good"] = stats.get("good", 0) + 1
                yield text
        else:  # .txt (or a file named explicitly): whole lines, in chunks; a line is a record
            stats["documents"] += 1
            with open(f, "rb") as fh:
                buf, size = [], 0
                for lineno, raw in enumerate(fh, 1):
                    try:
                        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                    except UnicodeDecodeError:
                        stats["skipped"].append(f"{f}:{lineno}")
                        continue
                    stats["good"] = stats.get("good", 0) + 1
                    buf.append(line)
                    size += len(line)
                    if size >= CHUNK_CHARS:
                        yield "".join(buf)
                        buf, size = [], 0
                if buf:
                    yield "".join(buf)


def parse_bpe_base(base: str) -> int:
    if base.startswith("bpe-") and base[4:].isdigit():
        if int(base[4:]) < 258:
            raise DomtokError(f"--base {base}: too small; a byte-level BPE needs the 256 bytes, EOT and at least one "
                              "merge: use bpe-258 or more (e.g. bpe-4096)")
        return int(base[4:])
    raise DomtokError(f"--base {base!r}: expected bpe-N (e.g. bpe-4096); gpt2 needs no building")


def build(base: str, corpus, out_dir, max_docs: int | None = None,
          max_bad_fraction: float = MAX_BAD_FRACTION, split_digits: bool = False) -> Tokenizer:
    """Train into a temporary sibling and rename it into place: a failure (a corpus with too
    many malformed records) leaves no tokenizer that looks complete."""
    from domtok.model.checkpoint import atomic_dir

    vocab_size = parse_bpe_base(base)
    stats: dict = {}
    texts = read_corpus(corpus, stats)
    if max_docs is not None:
        texts = itertools.islice(texts, max_docs)  # stops reading the corpus after max_docs
    with atomic_dir(out_dir, only_own=True) as tmp:
        try:
            trained = train_bpe(texts, vocab_size, tmp, name=base, split_digits=split_digits)
        except DomtokError as e:
            raise DomtokError(f"{corpus}: {e}") from None
        if stats["documents"] == 0:
            raise DomtokError(f"{corpus}: no usable text (skipped {len(stats['skipped'])} records)")
        # the same rule as every other reader: skip malformed records, fail past max_bad_fraction
        bad = len(stats["skipped"])
        total = bad + stats.get("good", 0)
        if bad and bad / max(1, total) > max_bad_fraction:
            raise DomtokError(f"{stats['skipped'][0].rsplit(':', 1)[0]}: {bad} of {total} records are malformed "
                              f"(bad JSON or invalid UTF-8, e.g. {stats['skipped'][0]}; {bad / total:.1%} > "
                              f"{max_bad_fraction:.1%}); fix the corpus (e.g. iconv -f latin1 -t utf-8) or pass "
                              f"--max-bad-fraction {min(1.0, 2 * bad / total):.2f}")
        tok = Tokenizer.load(tmp)
        write_train_record(tmp, base, corpus, stats, tok)
    small_bpe_warning(trained, vocab_size)
    return Tokenizer.load(out_dir)


def write_train_record(out_dir: Path, base: str, corpus, stats: dict, tok: Tokenizer) -> None:
    atomic_write_json(Path(out_dir) / "bpe_train.json", {
        "base": base, "asked_n_base": parse_bpe_base(base), "name": tok.base, "corpus": str(corpus),
        "documents": stats["documents"],
        "skipped": len(stats["skipped"]), "skipped_examples": stats["skipped"][:20],
        "n_base": tok.n_base, "vocab_size": tok.vocab_size, "splits_digits": tok.splits_digits,
    })
    return tok


# ---- fix --------------------------------------------------------------------------------


def read_model_tokenizer(model_dir: Path, condition: str | None) -> tuple[Tokenizer, list[str]]:
    """The domtok Tokenizer a model dir SHOULD have, and notes on what its files had wrong."""
    notes: list[str] = []
    if (model_dir / META_FILE).exists():
        tok = Tokenizer.load(model_dir)
        if condition is not None and condition != tok.condition:
            notes.append(f"condition {tok.condition} -> {condition}")
            tok = tok.with_condition(condition)
        return tok, notes

    hf_path = model_dir / "tokenizer.json"
    if not hf_path.exists():
        raise DomtokError(f"{model_dir}: no {META_FILE} or tokenizer.json; `tokenizer fix` needs a domtok "
                          f"or Hugging Face model dir with its tokenizer files")
    vocab, merges = read_hf_vocab_merges(hf_path)
    added = json.loads(hf_path.read_text(encoding="utf-8")).get("added_tokens", [])
    base = "gpt2" if vocab_sha256(vocab) == GPT2_BASE_VOCAB_SHA256 else f"bpe-{len(vocab) + 1}"
    # Domain tokens the file holds (special or not), per registered set. Sets with the same
    # facts differ by their layout: a leading_space set (mul_space) is the one whose " <MUL_..>"
    # texts the file holds.
    spaced = any(t["content"].startswith(" ") and any(s.canonical_text(t["content"][1:]) for s in TOKEN_SETS.values())
                 for t in added)
    found = {name: {t["content"]: t for t in added
                    if s.canonical_text(t["content"].removeprefix(" ")) == t["content"].removeprefix(" ")}
             for name, s in TOKEN_SETS.items() if s.leading_space == spaced}
    found = {k: v for k, v in found.items() if v}
    if condition is None:
        if len(found) > 1:
            raise DomtokError(f"{hf_path}: tokens of several sets {sorted(found)}; pass --condition")
        condition = f"{next(iter(found))}_tokens" if found else "baseline"
    tok = Tokenizer(base, condition, TOKEN_SETS[next(iter(found))] if found else
                    TOKEN_SETS["mul"], vocab, merges).with_condition(condition)
    for name, tokens in found.items():
        wrong = [f"{c}={t['id']} (domtok {tok.layout_ids.get(c)})" for c, t in tokens.items()
                 if tok.layout_ids.get(c) != t["id"]]
        if wrong:
            raise DomtokError(f"{hf_path}: domain token ids differ from domtok's layout: {', '.join(wrong[:5])}; "
                              f"re-writing the tokenizer cannot fix this (the embedding rows would be wrong)")
        special = sum(1 for t in tokens.values() if t.get("special"))
        if special:
            notes.append(f"{special} {name} tokens were special (dropped by skip_special_tokens) -> ordinary")
    cfg_path = model_dir / "tokenizer_config.json"
    if cfg_path.exists():
        try:
            pad = json.loads(cfg_path.read_text(encoding="utf-8")).get("pad_token")
        except json.JSONDecodeError:
            pad = None
        if isinstance(pad, dict):
            pad = pad.get("content")
        if pad == EOT:
            notes.append(f"pad_token was {EOT} (= eos, masks EOS labels) -> {tok.pad_token}")
    config_path = model_dir / "config.json"
    if config_path.exists():
        try:
            n_model = json.loads(config_path.read_text(encoding="utf-8")).get("vocab_size")
        except json.JSONDecodeError:
            n_model = None
        if isinstance(n_model, int) and n_model < tok.vocab_size:
            if tok.uses_domain_tokens and n_model < tok.domain_start + len(tok.layout_texts):
                raise DomtokError(f"{config_path}: vocab_size {n_model} is too small for the domain tokens "
                                  f"(need {tok.domain_start + len(tok.layout_texts)})")
            notes.append(f"model vocab_size {n_model} < tokenizer's {tok.vocab_size}: ids >= {n_model} are "
                         f"padding, never produced by encode")
    return tok, notes


def fix(model_dir, condition: str | None = None, force: bool = False) -> list[str]:
    """Re-write every tokenizer file of a model dir (and of an export's `domtok/` sidecar, and the
    `condition` of its config.json files) from one Tokenizer, so they cannot disagree.

    Changing the condition of a trained model relabels what it was trained as: refused unless
    `force` (the weights stay as they are either way)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise DomtokError(f"{model_dir}: no such model dir")
    held, _ = read_model_tokenizer(model_dir, None)
    if condition is not None and condition != held.condition and not force:
        raise DomtokError(f"{model_dir}: holds a {held.condition} model; --condition {condition} would relabel it "
                          f"(the weights were trained as {held.condition}); pass --force if the files are wrong "
                          "and the model really is " + condition)
    tok, notes = read_model_tokenizer(model_dir, condition)
    tok.save(model_dir)
    sidecar = model_dir / "domtok"  # an export's native copy (domtok.model.checkpoint.SIDECAR)
    if (sidecar / META_FILE).exists():
        tok.save(sidecar)
    for cfg_path in (model_dir / "config.json", sidecar / "config.json"):
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(cfg, dict) and cfg.get("format") == "domtok" and cfg.get("condition") != tok.condition:
            notes.append(f"{cfg_path.relative_to(model_dir)}: condition {cfg.get('condition')} -> {tok.condition}")
            cfg["condition"] = tok.condition
            atomic_write_json(cfg_path, cfg)
            if (cfg_path.parent / "README.md").exists():  # the model card names the condition too
                from domtok.model.card import model_card

                atomic_write_text(cfg_path.parent / "README.md", model_card(cfg))
    stale = model_dir / "added_tokens.json"  # slow-tokenizer file; its tokens would be re-added
    if stale.exists():
        stale.unlink()
        notes.append("removed stale added_tokens.json")
    return [f"{tok!r}"] + notes


# ---- CLI --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="train a byte-level BPE tokenizer on a corpus")
    b.add_argument("--base", default="bpe-4096", help="bpe-N: N base ids incl. EOT (default bpe-4096)")
    b.add_argument("--corpus", required=True, help=".txt/.jsonl/.json file or a folder of them")
    b.add_argument("--out", required=True, help="output dir (a saved domtok tokenizer)")
    b.add_argument("--max-docs", type=int, default=None, help="train on at most this many documents")
    b.add_argument("--max-bad-fraction", type=float, default=MAX_BAD_FRACTION,
                   help=f"malformed records (bad JSON, invalid UTF-8) tolerated before failing (default {MAX_BAD_FRACTION})")
    b.add_argument("--split-digits", action="store_true",
                   help="learn no merge that joins a digit: every number is written one digit per token")
    b.add_argument("--force", action="store_true", help="replace --out when it already holds a tokenizer")
    f = sub.add_parser("fix", help="re-write a model dir's tokenizer files with domtok's layout and flags")
    f.add_argument("model_dir", help="model dir whose tokenizer files to re-write (a domtok dir or a Hugging Face GPT-2 dir)")
    f.add_argument("--condition", default=None, help="baseline | mul_tokens (default: what the dir holds)")
    f.add_argument("--force", action="store_true", help="allow --condition to change the condition the dir holds")


def main(args: argparse.Namespace) -> int:
    from domtok.outdir import claim_out_dir, lock_dir

    if args.action == "build":
        claim_out_dir(args.out, replace=True, force=args.force, what="--out directory")
        tok = build(args.base, args.corpus, args.out, args.max_docs, args.max_bad_fraction, args.split_digits)
        print(f"wrote {args.out}: {tok!r}")
    else:
        lock_dir(args.model_dir)
        for line in fix(args.model_dir, args.condition, force=args.force):
            print(line)
    return 0
