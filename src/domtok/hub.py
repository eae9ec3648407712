"""`domtok hub push | pull | list`: a run's artifacts on the Hugging Face Hub.

One run becomes several Hub repos under a prefix `USER/name`:

    USER/name-results                  report, plots, every summary/items/metrics file, registry.json
    USER/name-tokenizer                the shared base tokenizer (trained BPE runs only)
    USER/name-<condition>-s<seed>-<stage>   one exported GPT2LMHeadModel per trained stage
    USER/name-<rung>-<condition>-s<seed>-<stage>   the same, per rung of a ladder

`registry.json` (in the results repo) maps each name to its repo, stage, condition and seed,
so `domtok hub pull --repo-prefix USER/name --models baseline` on a fresh machine knows what
to fetch. Groups: a stage name (`pretrain`, `sft`), a condition (`baseline`, `mul_tokens`),
`models`, `all`. Intermediate training checkpoints are large and stay local unless
`--include-checkpoints`. What is already there (same node hash) is skipped unless `--force`.

The token comes from the environment (HF_TOKEN) or the saved HF login, resolved by
huggingface_hub itself; domtok never reads it into a variable it could print.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import tempfile
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

from domtok.errors import DomtokError

RESULT_PATTERNS = ("*.json", "*.jsonl", "*.md", "*.yaml", "*.png", "log.txt")


@dataclass
class Entry:
    name: str        # "mul_tokens-s0-sft"
    repo: str        # "USER/name-mul_tokens-s0-sft"
    kind: str        # model | tokenizer | results
    stage: str | None = None
    condition: str | None = None
    seed: int | None = None
    path: str | None = None   # relative to the run dir
    hash: str | None = None   # node hash: same hash on the Hub means nothing to upload


def HfApi():  # a seam for tests: they replace it with a fake that writes to a local dir
    from huggingface_hub import HfApi as _HfApi

    return _HfApi()


def snapshot_download(**kwargs):
    from huggingface_hub import snapshot_download as _sd

    return _sd(**kwargs)


def _repo_name(prefix: str, suffix: str) -> str:
    if prefix.count("/") != 1 or not all(prefix.split("/")):
        raise DomtokError(f"--repo-prefix {prefix!r} must look like USER/name")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{prefix.split('/')[1]}-{suffix}")[:96]
    return f"{prefix.split('/')[0]}/{name}"


def build_registry(run_dir: Path, prefix: str) -> list[Entry]:
    """The registry of a local run: every finished trained stage, the tokenizer, the results."""
    from domtok.rundir import TRAINING_KINDS, load_run, node_state

    spec, nodes = load_run(run_dir)
    entries = [Entry("results", _repo_name(prefix, "results"), "results", path=".")]
    for n in nodes:
        if n.kind == "tokenizer" and (n.out_dir / "domtok_tokenizer.json").exists():
            entries.append(Entry("tokenizer", _repo_name(prefix, "tokenizer"), "tokenizer",
                                 path=str(n.out_dir.relative_to(run_dir)), hash=n.hash))
        if n.kind in TRAINING_KINDS and node_state(n) == "done":
            # a ladder trains the same (condition, seed, stage) once per rung: the rung names the repo
            name = (f"{n.rung}-" if n.rung is not None else "") + f"{n.condition}-s{n.seed}-{n.stage}"
            entries.append(Entry(name, _repo_name(prefix, name), "model", n.stage, n.condition, n.seed,
                                 str(n.out_dir.relative_to(run_dir)), n.hash))
    return entries


def select(entries: list[Entry], wanted: list[str] | None) -> list[Entry]:
    """Entries matching names or groups (stage, condition, `models`, `all`); default all."""
    if not wanted or "all" in wanted:
        return entries
    out = []
    for e in entries:
        keys = {e.name, e.kind, e.stage, e.condition, "models" if e.kind == "model" else None}
        if keys & set(wanted):
            out.append(e)
    unknown = set(wanted) - {k for e in entries for k in (e.name, e.kind, e.stage, e.condition, "models")}
    if unknown:
        raise DomtokError(f"unknown model(s) or group(s) {sorted(unknown)}; see `domtok hub list`")
    return out


def _require_token() -> None:
    from huggingface_hub import get_token

    if not get_token():
        raise DomtokError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")


def _already_there(api, entry: Entry) -> bool:
    """True when the Hub repo holds this exact node (same hash in its domtok_node.json)."""
    try:
        if not api.repo_exists(entry.repo):
            return False
        if not api.file_exists(entry.repo, "domtok_node.json"):
            return False
        local = snapshot_download(repo_id=entry.repo, allow_patterns=["domtok_node.json"])
        return json.loads((Path(local) / "domtok_node.json").read_text()).get("hash") == entry.hash
    except Exception:  # any doubt: upload again
        return False


def _hub_call(what: str, fn, *args, **kwargs):
    """Call the Hub; a network or server failure becomes one readable line."""
    try:
        return fn(*args, **kwargs)
    except DomtokError:
        raise
    except Exception as e:  # requests' ConnectionError, HfHubHTTPError, offline mode, ...
        detail = " ".join(str(e).split())[:200]
        raise DomtokError(f"{what}: the Hugging Face Hub could not be reached or refused ({type(e).__name__}: "
                          f"{detail}); check the network, HF_ENDPOINT and the token, then run the command again "
                          "(what is already there is skipped)") from None


def push(run_dir: Path, prefix: str, wanted: list[str] | None = None, include_checkpoints: bool = False,
         force: bool = False, private: bool = True, log=print) -> list[Entry]:
    # the run dir first (build_registry reads it): a wrong path is the likelier mistake, and
    # needs no token to report
    _repo_name(prefix, "results")
    registry = build_registry(run_dir, prefix)
    _require_token()
    api = HfApi()
    pushed = []
    for e in select(registry, wanted):
        if e.kind != "results" and not force and _already_there(api, e):
            log(f"skip {e.name}: {e.repo} already has it (use --force to upload again)")
            continue
        _hub_call(e.repo, api.create_repo, e.repo, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            folder = _stage_folder(run_dir, e, registry, Path(tmp), include_checkpoints)
            _hub_call(e.repo, api.upload_folder, repo_id=e.repo, folder_path=str(folder),
                      commit_message=f"domtok: {e.name}")
        log(f"pushed {e.name} -> {e.repo}")
        pushed.append(e)
    return pushed


def _stage_folder(run_dir: Path, e: Entry, registry: list[Entry], tmp: Path, include_checkpoints: bool) -> Path:
    """A folder laid out as the repo should look."""
    out = tmp / "repo"
    if e.kind == "results":
        for root, dirs, files in os.walk(run_dir):
            dirs[:] = [d for d in dirs if d not in ("checkpoints", "model")]  # weights go to model repos
            for name in files:
                if any(fnmatch.fnmatch(name, p) for p in RESULT_PATTERNS):
                    f = Path(root) / name
                    dst = out / f.relative_to(run_dir)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dst)
        out.mkdir(parents=True, exist_ok=True)
        (out / "registry.json").write_text(json.dumps([asdict(x) for x in registry], indent=2))
        return out
    src = run_dir / e.path
    if e.kind == "tokenizer":
        shutil.copytree(src, out)
    else:
        from domtok.model.hf import export_hf

        export_hf(src / "model", out)
        if include_checkpoints and (src / "checkpoints").is_dir():
            shutil.copytree(src / "checkpoints", out / "checkpoints")
    (out / "domtok_node.json").write_text(json.dumps(asdict(e), indent=2))
    return out


def fetch_registry(prefix: str, cache: Path | None = None) -> list[Entry]:
    repo = _repo_name(prefix, "results")
    try:
        local = snapshot_download(repo_id=repo, allow_patterns=["registry.json"], local_dir=cache)
    except Exception as e:
        raise DomtokError(f"could not read the registry of {repo} from the Hub: {e}") from None
    path = Path(local) / "registry.json"
    if not path.exists():
        raise DomtokError(f"{repo} has no registry.json; was it pushed with `domtok hub push`?")
    return [_entry(x, f"{repo}: registry.json") for x in _registry_rows(path, repo)]


def _registry_rows(path: Path, repo: str) -> list:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DomtokError(f"{repo}: registry.json is not valid JSON ({e}); push the run again") from None
    if not isinstance(rows, list):
        raise DomtokError(f"{repo}: registry.json holds {type(rows).__name__}, not a list of entries; push the run again")
    return rows


def _entry(x, where: str) -> Entry:
    """One registry entry, checked: `pull` writes into `<out>/<path>`, so the path must stay inside
    the run directory (each part a plain name, as the spec's names are)."""
    from domtok.config import ConfigError, check_path_name

    fields = {f.name for f in dataclasses.fields(Entry)}
    if not isinstance(x, dict) or set(x) - fields or not {"name", "repo", "kind"} <= set(x):
        raise DomtokError(f"{where}: an entry is not {{name, repo, kind, ...}}: {str(x)[:80]}; push the run again")
    for part in str(x.get("path") or ".").split("/"):
        if part == ".":  # the run directory itself (the results entry)
            continue
        try:
            check_path_name(part, where, "entry path part")
        except ConfigError as e:
            raise DomtokError(f"{e} (entry {x.get('name')!r}); the registry would write outside the run directory") from None
    return Entry(**x)


def pull(prefix: str, out_dir: Path, wanted: list[str] | None = None, include_checkpoints: bool = False,
         force: bool = False, log=print) -> list[Entry]:
    """Download the results and the chosen models into a run directory of the same layout."""
    registry = fetch_registry(prefix)
    got = []
    for e in select(registry, wanted):
        if e.kind == "results":
            dst = out_dir
            ignore = None
        else:
            dst = out_dir / e.path / ("model" if e.kind == "model" else "")
            ignore = None if include_checkpoints else ["checkpoints/*"]
        marker = dst / ("registry.json" if e.kind == "results" else "config.json")
        if marker.exists() and not force:
            log(f"skip {e.name}: {dst} exists (use --force to download again)")
            continue
        _hub_call(e.repo, snapshot_download, repo_id=e.repo, local_dir=str(dst), ignore_patterns=ignore)
        log(f"pulled {e.repo} -> {dst}")
        got.append(e)
    return got


def format_registry(entries: list[Entry]) -> str:
    lines = ["| name | repo | kind | stage | condition | seed |", "|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e.name} | {e.repo} | {e.kind} | {e.stage or ''} | {e.condition or ''} | "
                     f"{'' if e.seed is None else e.seed} |")
    stages = sorted({e.stage for e in entries if e.stage})
    conds = sorted({e.condition for e in entries if e.condition})
    lines += ["", f"groups: all, models, {', '.join(stages + conds)}"]
    return "\n".join(lines)


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="hub_cmd", metavar="{push,pull,list}", required=True)
    ps = sub.add_parser("push", help="upload a run's models, tokenizer and results")
    ps.add_argument("run_dir")
    pl = sub.add_parser("pull", help="download results and chosen models of a pushed run")
    pl.add_argument("--out", default=None, help="run directory to fill (default runs/<name>)")
    ls = sub.add_parser("list", help="show the registry of a run (local RUN_DIR or --repo-prefix)")
    ls.add_argument("run_dir", nargs="?")
    for q in (ps, pl, ls):
        q.add_argument("--repo-prefix", required=q is not ls, help="USER/name; repos are USER/name-<suffix>")
    for q in (ps, pl):
        q.add_argument("--models", nargs="*", help="names or groups (stage, condition, models, all)")
        q.add_argument("--all", action="store_true", help="everything in the registry")
        q.add_argument("--include-checkpoints", action="store_true",
                       help="also intermediate training checkpoints (large; off by default)")
        q.add_argument("--force", action="store_true", help="transfer even what is already there")
    ps.add_argument("--public", action="store_true", help="create public repos (default private)")


def main(args) -> int:
    if args.hub_cmd == "list":
        if args.run_dir:
            entries = build_registry(Path(args.run_dir), args.repo_prefix or "USER/run")
        elif args.repo_prefix:
            entries = fetch_registry(args.repo_prefix)
        else:
            raise DomtokError("give RUN_DIR or --repo-prefix")
        print(format_registry(entries))
        return 0
    wanted = None if args.all else args.models
    if args.hub_cmd == "push":
        push(Path(args.run_dir), args.repo_prefix, wanted, args.include_checkpoints, args.force,
             private=not args.public)
    else:
        _repo_name(args.repo_prefix, "results")
        out = Path(args.out) if args.out else Path("runs") / args.repo_prefix.split("/")[1]
        from domtok.outdir import claim_out_dir

        claim_out_dir(out, what="--out run directory")
        pull(args.repo_prefix, out, wanted, args.include_checkpoints, args.force)
    return 0
