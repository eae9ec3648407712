"""`domtok hub push | pull | list`: a run's artifacts on the Hugging Face Hub.

One run becomes several Hub repos under a prefix `USER/name`:

    USER/name-results                  report, plots, every summary/items/metrics file, registry.json
    USER/name-tokenizer                the shared base tokenizer (trained BPE runs only)
    USER/name-<condition>-s<seed>-<stage>   one exported GPT2LMHeadModel per trained stage
    USER/name-<rung>-<condition>-s<seed>-<stage>   the same, per rung of a ladder

`registry.json` (in the results repo) maps each name to its repo, stage, condition and seed,
so `domtok hub pull --repo-prefix USER/name --models baseline` on a fresh machine knows what
to fetch. Groups: a stage name (`pretrain`, `sft`), a condition (`baseline`, `mul_tokens`),
`models`, `all`; and the reference study's download names for the same things: the groups
`pretrained` (= pretrain) and `sft_tulu` (= sft_instruct), and the model names
`hf_<condition>_10b`, `sft_tulu_<condition>`, `sft_gsm8k_<condition>` (that stage and
condition, every seed). Intermediate training checkpoints are large and stay local unless
`--include-checkpoints`. What is already there (same node hash) is skipped unless `--force`.

One model dir goes to one repo of an exact name, as the reference study pushed them:
`domtok hub push runs/x/mul_tokens/seed0/sft --repo USER/domain-token-gpt2-sft-mul-tokens`
(a stage's node dir or its `model/`). Every pushed model carries its model card (README.md,
domtok.model.card) with the run's evaluation results of that model, when it has any.

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
from domtok.model.source import HUB_MODEL_ID

RESULT_PATTERNS = ("*.json", "*.jsonl", "*.md", "*.yaml", "*.png", "log.txt")
# The reference study's download names (its scripts/load_from_hf.py) for domtok's stages
STAGE_ALIASES = {"pretrained": "pretrain", "sft_tulu": "sft_instruct"}
REFERENCE_MODEL = re.compile(r"^(hf|sft_tulu|sft_gsm8k)_(.+?)(_10b)?$")
REFERENCE_MODEL_STAGES = {"hf": "pretrain", "sft_tulu": "sft_instruct", "sft_gsm8k": "sft_gsm8k"}


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


def matches(e: Entry, want: str) -> bool:
    """Whether `want` (a name, a group, or a reference-study alias) covers entry `e`."""
    if want in {e.name, e.kind, e.stage, e.condition} or (want == "models" and e.kind == "model"):
        return True
    if e.kind == "model" and STAGE_ALIASES.get(want) == e.stage:
        return True
    m = REFERENCE_MODEL.match(want)
    return bool(m and e.kind == "model" and e.stage == REFERENCE_MODEL_STAGES[m[1]] and e.condition == m[2])


def select(entries: list[Entry], wanted: list[str] | None) -> list[Entry]:
    """Entries matching names, groups (stage, condition, `models`, `all`) or aliases; default all."""
    if not wanted or "all" in wanted:
        return entries
    unknown = [w for w in wanted if not any(matches(e, w) for e in entries)]
    if unknown:
        raise DomtokError(f"unknown model(s) or group(s) {sorted(unknown)}; see `domtok hub list`")
    return [e for e in entries if any(matches(e, w) for w in wanted)]


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
    if not (run_dir / "spec.yaml").exists() and any((run_dir / p).exists() for p in ("config.json", "model/config.json")):
        raise DomtokError(f"{run_dir}: one model dir, not a run directory; push it with --repo USER/name "
                          "(--repo-prefix pushes a whole run)")
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
        write_card(out, node_results(src), e.name, e.repo)
        if include_checkpoints and (src / "checkpoints").is_dir():
            shutil.copytree(src / "checkpoints", out / "checkpoints")
    (out / "domtok_node.json").write_text(json.dumps(asdict(e), indent=2))
    return out


def node_results(node_dir: Path) -> dict:
    """{benchmark: metrics} of the run's evaluations of the model in `node_dir` (its `eval/*/`)."""
    out = {}
    for summary in sorted(Path(node_dir).glob("eval/*/summary.json")):
        try:
            out[summary.parent.name] = json.loads(summary.read_text())["metrics"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unfinished or unreadable evaluation says nothing
    return out


def write_card(model_dir: Path, results: dict, name: str, repo: str) -> None:
    """The model card of a dir about to be pushed: its facts, results, and how to load it from `repo`."""
    from domtok.model.card import model_card

    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "README.md").write_text(model_card(config, results, name=name, load_path=repo))


def _check_repo(repo: str) -> None:
    if repo.count("/") != 1 or not all(repo.split("/")) or not HUB_MODEL_ID.match(repo) or "@" in repo:
        raise DomtokError(f"--repo {repo!r} must look like USER/name (letters, digits, '.', '_', '-')")


def push_model(path: Path, repo: str, private: bool = True, include_checkpoints: bool = False,
               log=print) -> str:
    """Push one model dir (or a stage's node dir holding `model/`) to the exact repo `repo`."""
    from domtok.model.checkpoint import read_config

    _check_repo(repo)
    path = Path(path)
    node_dir = path
    if (path / "model" / "config.json").exists() and not (path / "config.json").exists():
        path = path / "model"
    else:
        node_dir = path.parent
    if (path / "spec.yaml").exists():
        raise DomtokError(f"{path}: a run directory; --repo pushes one model dir (e.g. RUN/<condition>/seed0/sft), "
                          "--repo-prefix USER/name pushes a whole run")
    if read_config(path).get("format") != "domtok":
        raise DomtokError(f"{path / 'config.json'}: not a domtok model dir; push what a domtok stage, "
                          "`domtok export` or `domtok import` wrote")
    _require_token()
    api = HfApi()
    _hub_call(repo, api.create_repo, repo, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        from domtok.model.hf import export_hf

        out = export_hf(path, Path(tmp) / "repo")
        write_card(out, node_results(node_dir), repo.split("/")[1], repo)
        if include_checkpoints and (node_dir / "checkpoints").is_dir():
            shutil.copytree(node_dir / "checkpoints", out / "checkpoints")
        _hub_call(repo, api.upload_folder, repo_id=repo, folder_path=str(out),
                  commit_message=f"domtok: {path}")
    log(f"pushed {path} -> {repo}")
    return repo


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
    ps = sub.add_parser("push", help="upload a run's models, tokenizer and results (--repo-prefix), or one model "
                                     "dir to one repo (--repo)")
    ps.add_argument("run_dir", metavar="PATH", help="run directory (with --repo-prefix), or one model dir / stage "
                                                   "dir holding model/ (with --repo)")
    ps.add_argument("--repo", help="USER/name: push PATH, one model dir, to exactly this repo (with its model card)")
    pl = sub.add_parser("pull", help="download results and chosen models of a pushed run")
    pl.add_argument("--out", default=None, help="run directory to fill (default runs/<name>)")
    ls = sub.add_parser("list", help="show the registry of a run (local RUN_DIR or --repo-prefix)")
    ls.add_argument("run_dir", nargs="?", help="local run directory (or give --repo-prefix)")
    for q in (ps, pl, ls):
        q.add_argument("--repo-prefix", required=q is pl, help="USER/name; repos are USER/name-<suffix>")
    for q in (ps, pl):
        q.add_argument("--models", nargs="*", help="names or groups (stage, condition, models, all; the reference "
                                                   "study's pretrained, sft_tulu, hf_<condition>_10b, ...)")
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
        if bool(args.repo) == bool(args.repo_prefix):
            raise DomtokError("hub push: give --repo USER/name (one model dir) or --repo-prefix USER/name (a run), "
                              "not both or neither")
        if args.repo:
            if args.models or args.all:
                raise DomtokError("hub push --repo pushes the one model dir PATH; --models/--all choose from a run "
                                  "(use --repo-prefix)")
            push_model(Path(args.run_dir), args.repo, private=not args.public,
                       include_checkpoints=args.include_checkpoints)
            return 0
        push(Path(args.run_dir), args.repo_prefix, wanted, args.include_checkpoints, args.force,
             private=not args.public)
    else:
        _repo_name(args.repo_prefix, "results")
        out = Path(args.out) if args.out else Path("runs") / args.repo_prefix.split("/")[1]
        from domtok.outdir import claim_out_dir

        claim_out_dir(out, what="--out run directory")
        pull(args.repo_prefix, out, wanted, args.include_checkpoints, args.force)
    return 0
