"""Bad input, second round (issue 23): every class of the issue with at least two members.

Each case calls the command line in-process (`domtok.cli.main`), which is what `python -m
domtok` runs, and checks the promise: exit code 2, ONE line on stderr naming the file and the
fix, no traceback, no file lost that domtok did not write, nothing written that looks
complete. Validation fails before any training; only the NaN-loss case trains (a 1-layer
model, a few steps).
"""

from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import MICRO
from domtok.cli import main


def bad(capsys, *argv, needles=(), rc: int = 2) -> str:
    """Run `domtok ARGV` in-process; assert the promised answer to bad input; return its line."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == rc, (code, out[-2000:], err[-2000:])
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("progress ")]  # a stage's progress
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def ok(capsys, *argv) -> tuple[str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, (out[-2000:], err[-2000:])
    return out, err


def tree(path: Path) -> dict:
    """Every file under `path` with its bytes: equal before and after means nothing was touched."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def spec_file(path: Path, **changes) -> Path:
    data = json.loads(json.dumps(MICRO))
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def fake_finished_run(tmp_path: Path, spec_path: Path) -> Path:
    """The micro study's run dir with every node finished, as `domtok run` leaves it (manifest
    with the node's hash; evaluations with items.jsonl and their count in the summary)."""
    from domtok.rundir import EVAL_KINDS, build_nodes, load_spec

    spec = load_spec(str(spec_path))
    run_dir = tmp_path / "runs" / spec.name
    for n in build_nodes(spec, run_dir):
        n.out_dir.mkdir(parents=True, exist_ok=True)
        summary = {}
        if n.kind in EVAL_KINDS:
            (n.out_dir / "items.jsonl").write_text("".join(json.dumps({"id": str(i), "correct": i % 2 == 0}) + "\n"
                                                           for i in range(4)))
            summary = {"n": 4, "metrics": {"accuracy": 0.5}}
        (n.out_dir / "manifest.json").write_text(json.dumps({"hash": n.hash, "summary": summary}))
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(spec.raw))))
    return run_dir


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A tiny BPE and a random 1-layer GPT saved as a model dir; token shards of that BPE."""
    import torch

    from domtok.data.prepare import PrepareConfig, run
    from domtok.model.checkpoint import save_model_dir
    from domtok.model.gpt import GPT, GPTConfig
    from domtok.tokens.build import train_bpe
    from domtok.tokens.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("bad_inputs_2")
    train_bpe(["the cat sat on the mat, 6 times 9 is 54. " * 20] * 20, 300, root / "bpe")
    tok = load_tokenizer(str(root / "bpe"), "baseline")
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16))
    save_model_dir(model, tok, root / "model")
    run(PrepareConfig(source="synthetic:math-web", n_docs=200, tokenizer=str(root / "bpe"),
                      shard_tokens=100000, val_fraction=0.1), root / "shards")
    return {"root": root, "model": root / "model", "bpe": root / "bpe", "shards": root / "shards"}


# --------------------------------------------------------------------------- names that leave the run dir

@pytest.mark.parametrize("override,needle", [
    ('conditions={"../../victim": {token_set: null}}', "condition name '../../victim'"),
    ('conditions={"/tmp/victim": {token_set: null}}', "condition name '/tmp/victim'"),
    ('conditions={baseline: {token_set: null}, tokenizer: {token_set: mul}}', "condition name 'tokenizer' is reserved"),
    ('conditions={baseline: {token_set: null}, Baseline: {token_set: mul}}', "differ only in case"),
    ("stages.0.name=../../victim", "stages[0] name '../../victim'"),
    ('evals.benchmarks={"../../victim": {kind: probes}}', "benchmark name '../../victim'"),
    ('ladder=[{name: "../victim", n_layer: 1, n_head: 2, n_embd: 32, tokens: 4096}]', "rung name '../victim'"),
    ("name=../victim", "spec name '../victim'"),
    ("name=.hidden", "spec name '.hidden'"),
])
def test_names_that_become_paths_are_one_plain_component(capsys, tmp_path, override, needle):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("mine\n")
    runs = tmp_path / "a" / "b" / "runs"
    msg = bad(capsys, "run", spec_file(tmp_path / "micro.yaml"), override, "--only", "prepare", "--force",
              "--runs-dir", runs, needles=(needle, "letters, digits") if needle.endswith("'") else (needle,))
    assert "micro.yaml" in msg
    assert tree(victim) == {"thesis.txt": b"mine\n"} and not runs.exists()


@pytest.mark.parametrize("rows,needle", [
    ([{"name": "m", "repo": "u/x-m", "kind": "model", "path": "../../victim"}], "entry path part name '..'"),
    ([{"name": "m", "repo": "u/x-m", "kind": "model", "path": "/tmp/victim"}], "entry path part name ''"),
    ({"name": "m"}, "not a list of entries"),
    ([["m", "u/x-m"]], "an entry is not {name, repo, kind"),
])
def test_a_hub_registry_cannot_write_outside_the_run_dir(capsys, tmp_path, monkeypatch, rows, needle):
    import domtok.hub as hub

    def snapshot_download(repo_id, local_dir=None, **kw):  # the Hub's answer: this registry
        d = Path(local_dir or tmp_path / "cache")
        d.mkdir(parents=True, exist_ok=True)
        (d / "registry.json").write_text(json.dumps(rows))
        return str(d)

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("mine\n")
    bad(capsys, "hub", "pull", "--repo-prefix", "u/x", "--out", tmp_path / "a" / "b" / "run", needles=(needle,))
    assert tree(victim) == {"thesis.txt": b"mine\n"}


# --------------------------------------------------------------------------- --smoke claims its folder

def test_smoke_claims_its_folder_and_keeps_the_users_files(capsys, tmp_path):
    spec = spec_file(tmp_path / "micro.yaml")
    smoke = tmp_path / "runs" / "micro-smoke"
    smoke.mkdir(parents=True)
    (smoke / "notes.txt").write_text("mine\n")  # a folder domtok never wrote
    bad(capsys, "run", spec, "--smoke", "--runs-dir", tmp_path / "runs", needles=(str(smoke), "not written by domtok"))
    (smoke / "spec.yaml").write_text("name: micro-smoke\n")  # an earlier smoke run's folder, plus the user's notes
    (smoke / "baseline").mkdir()
    (smoke / "baseline" / "draft.md").write_text("mine too\n")
    bad(capsys, "run", spec, "--smoke", "--runs-dir", tmp_path / "runs",
        needles=(str(smoke), "notes.txt", "baseline/draft.md", "move those"))
    assert (smoke / "notes.txt").read_text() == "mine\n" and (smoke / "baseline" / "draft.md").exists()


# --------------------------------------------------------------------------- --force removes only domtok's files

def test_force_replaces_only_what_domtok_wrote(capsys, tmp_path, micro):
    hf = tmp_path / "hf"
    ok(capsys, "export", micro["model"], hf)
    (hf / "MY_NOTES.txt").write_text("mine\n")
    before = tree(hf)
    bad(capsys, "export", micro["model"], hf, "--force", needles=(str(hf), "MY_NOTES.txt", "did not write"))
    assert tree(hf) == before

    run_dir = fake_finished_run(tmp_path, spec_file(tmp_path / "micro.yaml"))  # a whole experiment
    before = tree(run_dir)
    bad(capsys, "export", micro["model"], run_dir, "--force", needles=(str(run_dir), "baseline/prepare/manifest.json", "did not write"))
    assert tree(run_dir) == before

    clean = tmp_path / "hf_clean"
    ok(capsys, "export", micro["model"], clean)
    imp = tmp_path / "imp"
    ok(capsys, "import", clean, imp)
    (imp / "notes").mkdir()
    (imp / "notes" / "a.txt").write_text("mine\n")
    bad(capsys, "import", clean, imp, "--force", needles=("notes/a.txt",))
    assert (imp / "notes" / "a.txt").read_text() == "mine\n" and (imp / "model.safetensors").exists()

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n" * 50)
    tok = tmp_path / "tok"
    ok(capsys, "tokenizer", "build", "--base", "bpe-300", "--corpus", corpus, "--out", tok)
    (tok / "README.md").write_text("mine\n")
    bad(capsys, "tokenizer", "build", "--base", "bpe-300", "--corpus", corpus, "--out", tok, "--force",
        needles=("README.md",))
    assert (tok / "README.md").read_text() == "mine\n"
    (tok / "README.md").unlink()
    ok(capsys, "tokenizer", "build", "--base", "bpe-300", "--corpus", corpus, "--out", tok, "--force")  # all domtok's


def test_a_linked_node_dir_is_refused_with_its_path(capsys, tmp_path):
    spec = spec_file(tmp_path / "micro.yaml")
    run_dir = fake_finished_run(tmp_path, spec)
    node = run_dir / "baseline" / "prepare"
    elsewhere = tmp_path / "elsewhere"
    shutil.move(node, elsewhere)
    (elsewhere / "thesis.txt").write_text("mine\n")
    node.symlink_to(elsewhere)
    before = tree(elsewhere)
    for extra in (["--only", "prepare", "--force"], ["--from", "prepare"]):
        bad(capsys, "run", spec, *extra, "--runs-dir", tmp_path / "runs",
            needles=(str(node), "symbolic link", str(elsewhere)))
    assert tree(elsewhere) == before


# --------------------------------------------------------------------------- replacing finished nodes is said first

def test_finished_nodes_of_a_changed_config_are_named_before_they_are_replaced(capsys, tmp_path, monkeypatch):
    spec = spec_file(tmp_path / "micro.yaml")
    run_dir = fake_finished_run(tmp_path, spec)
    before = tree(run_dir)
    # --only refuses (as before) and names them
    bad(capsys, "run", spec, "stages.1.config.stages.0.epochs=2", "--only", "sft", "--runs-dir", tmp_path / "runs",
        needles=("baseline/seed0/sft", "mul_tokens/seed0/sft", "--force"))
    assert tree(run_dir) == before
    # a whole run says which finished nodes it will replace before it starts the first one
    import domtok.pipeline as pipeline

    seen = []

    def schedule(todo, run_dir, opts, forced):
        seen.append(capsys.readouterr().out)
        return set()

    monkeypatch.setattr(pipeline, "_schedule", schedule)
    monkeypatch.setattr("domtok.report.write_report", lambda run_dir: run_dir / "report.md")
    ok(capsys, "run", spec, "stages.1.config.stages.0.epochs=2", "--jobs", "1", "--runs-dir", tmp_path / "runs")
    line = next(ln for ln in seen[0].splitlines() if ln.startswith("replacing"))
    for node in ("baseline/seed0/sft", "mul_tokens/seed0/grpo", "mul_tokens/seed0/grpo/eval/probes"):
        assert node in line, line
    assert "pretrain" not in line.replace("after", "")  # unchanged nodes are kept


# --------------------------------------------------------------------------- values, before any work

@pytest.mark.parametrize("override,needle", [
    ("stages.2.config.temperature=-1", "temperature=-1 is out of range; give temperature > 0"),
    ("stages.0.config.lr=.inf", "lr=inf is not a finite number"),
    ("stages.0.config.lr=.nan", "lr=nan is not a finite number"),
    ("stages.0.config.max_steps=.nan", "expected an integer, got nan"),
    ("stages.0.config.max_steps=.inf", "expected an integer, got inf"),
    ("stages.0.config.max_steps=100000000000", "max_steps=100000000000 is out of range"),
    ("stages.0.config.dropout=1.0", "dropout=1 is out of range"),
    ("stages.0.config.betas=[0.9,1.5]", "betas=1.5 is out of range"),
    ("stages.1.config.stages.0.learning_rate=0", "learning_rate=0 is out of range"),
    ("stages.2.config.top_p=0", "top_p=0 is out of range"),
    ("stages.2.config.num_generations=1", "num_generations=1 is out of range"),
    ("stages.2.config.num_train_epochs=0", "num_train_epochs=0 is out of range"),
    ("stages.2.config.reward.close=.inf", "close=inf is not a finite number"),
    ("prepare.val_fraction=1", "val_fraction=1 is out of range"),
    ("tokenizer.sample_docs=0", "bpe_sample_docs=0 is out of range"),
    ("evals.benchmarks.probes.max_new_tokens=0", "max_new_tokens=0 is out of range"),
    ("evals.benchmarks.gsm_synthetic.temperature=-0.5", "temperature=-0.5 is out of range"),
    ("seeds=[4294967296]", "seed=4294967296 is out of range"),
])
def test_every_value_is_in_range_before_the_first_node(capsys, tmp_path, override, needle):
    bad(capsys, "run", spec_file(tmp_path / "micro.yaml"), override, "--runs-dir", tmp_path / "runs", needles=(needle,))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args,needle", [
    (["pretrain", "pretrain-tiny", "lr=inf"], "lr=inf is not a finite number"),
    (["pretrain", "pretrain-tiny", f"seed={2**70}"], "seed=1180591620717411303424 is out of range"),
    (["pretrain", "pretrain-tiny", "max_steps=1e29"], "expected an integer"),
    (["grpo", "grpo-binary", "max_steps=0", "num_train_epochs=0"], "num_train_epochs=0 is out of range"),
    (["sft", "sft-tiny", "stages.0.epochs=-1"], "epochs=-1 is out of range"),
    (["rft", "rft", "num_samples=0"], "num_samples=0 is out of range"),
    (["prepare", "tiny", "shard_tokens=0"], "shard_tokens=0 is out of range"),
    (["eval", "gsm8k", "--model", "{M}", "--set", "temperature=.nan"], "temperature=nan is not a finite number"),
    (["eval", "probes", "--model", "{M}", "--batch-size", "0"], "batch_size=0 is out of range"),
    (["sample", "--model", "{M}", "--question", "q", "--temperature", "nan"], "temperature=nan is not a finite"),
    (["sample", "--model", "{M}", "--question", "q", "--seed", str(2**70)], "seed=1180591620717411303424 is out"),
    (["eval", "compare", "{M}", "{M}", "--n-boot", "0"], "n_boot=0 is out of range"),
    (["run", "micro.yaml", "--smoke", "--mfu", "0"], "mfu=0 is out of range"),
    (["run", "micro.yaml", "--smoke", "--mfu", "nan"], "mfu=nan is not a finite number"),
])
def test_single_verbs_check_values_before_writing(capsys, tmp_path, micro, args, needle):
    args = [a.replace("{M}", str(micro["model"])) for a in args]
    if args[0] == "run":
        args[1] = str(spec_file(tmp_path / "micro.yaml"))
    out = tmp_path / "out"
    extra = ["--runs-dir", out] if args[0] == "run" else [] if args[0] in ("sample", "eval") and args[1] in (
        "compare", "--model") else ["--out", out]
    bad(capsys, *args, *extra, needles=(needle,))
    assert not out.exists()


def test_a_loss_that_turns_nan_fails_the_stage(capsys, tmp_path, micro):
    out = tmp_path / "pt"
    msg = bad(capsys, "pretrain", "pretrain-tiny", f"data_dir={micro['shards']}", "n_layer=1", "n_head=2", "n_embd=16",
              "seq_len=32", "micro_batch_size=2", "tokens_per_step=64", "max_steps=6", "warmup_steps=0", "lr=1e30",
              "min_lr=1e30", "grad_clip=0", "eval_every=0", "ckpt_every=0", "device=cpu",
              "--out", out, needles=("metrics.jsonl", "diverged", "lower the learning rate"))
    assert "nan" in msg or "inf" in msg
    assert not (out / "model").exists() and not (out / "summary.json").exists()
    assert not any(out.rglob("manifest.json"))

    from domtok.errors import DomtokError
    from domtok.train.common import MetricsLogger

    for row in ({"step": 3, "train_loss": math.inf}, {"step": 4, "loss": 2.0, "val_loss": math.nan}):
        with pytest.raises(DomtokError, match="diverged"):
            MetricsLogger(tmp_path / "rank1", enabled=False).log(row)  # every rank stops, not only rank 0
    assert not (tmp_path / "rank1").exists()


# --------------------------------------------------------------------------- YAML

@pytest.mark.parametrize("text,needle", [
    ("name: &n [*n]\n", "recursive alias"),
    ("a: &a {b: *a}\n", "recursive alias"),
    ("a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
     "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
     "h: [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\n", "alias bomb"),
    ("name: micro\nseeds: [0]\nseeds: [1]\n", "key 'seeds' appears twice"),
    ("pretrain:\n  lr: 1e-3\n  max_steps: 2\n  lr: 1e-2\n", "key 'lr' appears twice"),
])
def test_yaml_that_loops_explodes_or_repeats_a_key(capsys, tmp_path, text, needle):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    verb = ["pretrain", cfg, "--out", tmp_path / "out"] if text.startswith("pretrain") else \
        ["run", cfg, "--runs-dir", tmp_path / "runs"]
    bad(capsys, *verb, needles=(str(cfg), needle))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_yaml_in_an_override_value(capsys, tmp_path):
    bad(capsys, "run", spec_file(tmp_path / "micro.yaml"), "seeds=&s [*s]", "--runs-dir", tmp_path / "runs",
        needles=("seeds=&s [*s]", "recursive alias"))
    bad(capsys, "run", spec_file(tmp_path / "micro.yaml"), "tokenizer={base: gpt2, base: bpe-512}",
        "--runs-dir", tmp_path / "runs", needles=("key 'base' appears twice",))


# --------------------------------------------------------------------------- run-dir files of the wrong shape

def test_status_shows_damaged_and_cut_short_nodes_as_incomplete(capsys, tmp_path):
    spec = spec_file(tmp_path / "micro.yaml")
    run_dir = fake_finished_run(tmp_path, spec)
    damaged = {
        run_dir / "baseline" / "seed0" / "pretrain" / "manifest.json": "[]",
        run_dir / "mul_tokens" / "seed0" / "pretrain" / "manifest.json": json.dumps({"hash": "x", "summary": "done"}),
        run_dir / "baseline" / "prepare" / "manifest.json": "{not json",
    }
    for path, text in damaged.items():
        path.write_text(text)
    items = run_dir / "baseline" / "seed0" / "grpo" / "eval" / "probes" / "items.jsonl"
    items.write_text(items.read_text().splitlines()[0] + "\n")  # 1 row of the 4 its summary counts
    out, _ = ok(capsys, "status", run_dir)
    rows = {ln.split("|")[1].strip(): ln for ln in out.splitlines() if ln.startswith("| ")}
    assert rows["pretrain"].count("incomplete") == 2 and "✅" not in rows["pretrain"], rows["pretrain"]
    assert rows["prepare"].count("incomplete") == 1
    assert "incomplete" in rows["grpo · eval probes"].split("|")[2]  # baseline's column
    assert "✅" in rows["grpo · eval probes"].split("|")[3]

    from domtok.rundir import load_run, node_state

    _, nodes = load_run(run_dir)
    state = {n.id: node_state(n) for n in nodes}
    assert state["baseline/seed0/grpo/eval/probes"] == "incomplete" and state["mul_tokens/seed0/grpo/eval/probes"] == "done"


@pytest.mark.parametrize("file,content,needle", [
    ("items.jsonl", '{"id": "0", "correct": true}\n[1]\n{"id": "2", "correct": true}\n', "items.jsonl:2: holds list [1]"),
    ("items.jsonl", '{"id": "0", "correct": true}\ngarbage\n{"id": "2", "correct": true}\n', "items.jsonl:2: not valid JSON"),
    ("metrics.jsonl", '{"step": 1, "loss": 3.0}\n42\n', "metrics.jsonl:2: holds int 42"),
])
def test_report_names_the_file_and_line_of_a_damaged_row(capsys, tmp_path, file, content, needle):
    spec = spec_file(tmp_path / "micro.yaml")
    run_dir = fake_finished_run(tmp_path, spec)
    node = run_dir / "baseline" / "seed0" / "pretrain"
    if file == "items.jsonl":
        node = node / "eval" / "probes"
        content_rows = [ln for ln in content.splitlines() if ln.strip()]
        m = json.loads((node / "manifest.json").read_text())
        m["summary"]["n"] = len(content_rows)  # done, by its count: the damage is inside the rows
        (node / "manifest.json").write_text(json.dumps(m))
    (node / file).write_text(content)
    bad(capsys, "report", run_dir, needles=(str(node / file).replace(f"/{file}", ""), needle, "damaged"))
    assert not (run_dir / "report.md").exists()


def test_a_torn_last_line_is_skipped_but_not_a_torn_middle(tmp_path):
    from domtok.errors import DomtokError
    from domtok.utils import read_items

    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_items(f) == [{"step": 1}, {"step": 2}]
    f.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(DomtokError, match="metrics.jsonl:2: not valid JSON"):
        read_items(f)


def test_shard_meta_of_the_wrong_shape(capsys, tmp_path, micro):
    shards = tmp_path / "shards"
    shutil.copytree(micro["shards"], shards)
    (shards / "meta.json").write_text("[]")
    bad(capsys, "pretrain", "pretrain-tiny", f"data_dir={shards}", "--out", tmp_path / "pt",
        needles=(str(shards / "meta.json"), "holds list [], not a JSON object"))
    (shards / "meta.json").write_text('{"splits": {}}')
    bad(capsys, "pretrain", "pretrain-tiny", f"data_dir={shards}", "--out", tmp_path / "pt",
        needles=(str(shards / "meta.json"), "vocab_size"))
    assert not (tmp_path / "pt" / "model").exists()


def test_model_and_eval_files_of_the_wrong_shape(capsys, tmp_path, micro):
    model = tmp_path / "model"
    shutil.copytree(micro["model"], model)
    (model / "config.json").write_text("[1, 2]")
    bad(capsys, "sample", "--model", model, "--question", "q", "--device", "cpu",
        needles=(str(model / "config.json"), "holds list [1, 2], not a JSON object"))
    (model / "config.json").write_text(json.dumps({"format": "domtok", "model": [1]}))
    bad(capsys, "eval", "probes", "--model", model, "--device", "cpu", "--out", tmp_path / "p",
        needles=(str(model / "config.json"), "`model` must be an object"))
    assert not (tmp_path / "p" / "summary.json").exists()
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "items.jsonl").write_text('{"id": "0", "correct": true}\n[1]\n{"id": "2", "correct": false}\n')
    bad(capsys, "eval", "compare", a, b, needles=(str(a / "items.jsonl") + ":2", "not a JSON object"))
    for d in (a, b):
        (d / "items.jsonl").write_text('{"id": "0", "correct": true}\n')
    (a / "summary.json").write_text('"a string"')
    bad(capsys, "eval", "compare", f"{a},{a}", f"{b},{b}", "--paired-seeds", needles=(str(a / "summary.json"), "not a JSON object"))


# --------------------------------------------------------------------------- data files

def _gsm(tmp_path: Path, name: str, rows: list, prefix: bytes = b"") -> Path:
    f = tmp_path / name
    f.write_bytes(prefix + "".join(json.dumps(r) + "\n" for r in rows).encode())
    return f


def test_gsm8k_records_that_cannot_be_scored(capsys, tmp_path, micro):
    words = _gsm(tmp_path, "words.jsonl", [{"question": f"q{i}", "answer": "so\n#### abc"} for i in range(5)])
    bad(capsys, "eval", "gsm8k", "--model", micro["model"], "--data", words, "--device", "cpu", "--out", tmp_path / "g",
        needles=(str(words), "5 of 5", "not a number"))
    huge = _gsm(tmp_path, "huge.jsonl", [{"question": "x" * 10_000_000, "answer": "#### 1"}])
    bad(capsys, "eval", "gsm8k", "--model", micro["model"], "--data", huge, "--device", "cpu", "--out", tmp_path / "g",
        needles=(str(huge), "10,000,000 characters"))
    assert not (tmp_path / "g" / "summary.json").exists()


def test_sft_records_one_rule_for_every_file(capsys, tmp_path, micro):
    def sft(data: Path, name: str):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({"sft": {"model": str(micro["model"]), "device": "cpu", "stages": [
            {"name": "s", "data": [{"kind": "jsonl", "path": str(data)}], "max_length": 64, "batch_size": 2,
             "grad_accum": 1, "val_size": 1}]}}))
        return cfg

    conv = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]} for i in range(8)]
    dict_content = conv[:7] + [{"messages": [{"role": "user", "content": {"text": "q"}}, {"role": "assistant", "content": "a"}]}]
    roles = conv[:8] + [{"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 2
    for name, rows, needle in (("dict", dict_content, "should be {role: str, content: str}"),
                               ("roles", roles, "unknown role 'bot'")):
        data = _gsm(tmp_path, f"{name}.jsonl", rows)
        bad(capsys, "sft", sft(data, name), "--out", tmp_path / name, needles=(str(data), needle, "max_bad_fraction"))
        assert not (tmp_path / name / "model").exists()


def test_a_byte_order_mark_is_not_a_bad_record(capsys, tmp_path, micro):
    rows = [{"question": f"What is {i} + 1?", "answer": f"so\n#### {i + 1}"} for i in range(3)]
    data = _gsm(tmp_path, "bom.jsonl", rows, prefix=b"\xef\xbb\xbf")
    ok(capsys, "eval", "gsm8k", "--model", micro["model"], "--data", data, "--device", "cpu", "--max-new-tokens", 2,
       "--out", tmp_path / "g")
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["n"] == 3
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps({"text": "the cat sat " * 5}).encode() + b"\n"
                                                   for _ in range(20)))
    _, err = ok(capsys, "tokenizer", "build", "--base", "bpe-260", "--corpus", corpus, "--out", tmp_path / "tok")
    assert "skipped" not in err
    from domtok.data.sources import Records, check_text

    assert [r["text"] for r in Records(str(corpus), None, check_text)][0].startswith("the cat")


def test_a_model_whose_tokenizer_is_another_conditions(capsys, tmp_path, micro):
    from domtok.tokens.tokenizer import load_tokenizer

    model = tmp_path / "baseline_model"
    shutil.copytree(micro["model"], model)
    load_tokenizer(str(micro["bpe"]), "mul_tokens").save(model)  # same ids, other condition
    for verb in (["eval", "probes", "--model", model, "--device", "cpu", "--out", tmp_path / "p"],
                 ["sample", "--model", model, "--question", "q", "--device", "cpu"]):
        bad(capsys, *verb, needles=("mul_tokens tokenizer", "trained as baseline", "tokenizer fix"))
    ok(capsys, "tokenizer", "fix", model, "--condition", "baseline", "--force")  # the suggested fix works
    ok(capsys, "sample", "--model", model, "--question", "q", "--device", "cpu", "--max-new-tokens", "2")


# --------------------------------------------------------------------------- messages

def test_the_console_line_names_a_full_disk(capsys, tmp_path, monkeypatch, micro):
    import domtok.data.prepare as prepare
    import domtok.model.hf as hf

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "runs" / "x"))

    monkeypatch.setattr(prepare, "build_shared_tokenizer", full)
    code = main(["run", str(spec_file(tmp_path / "micro.yaml")), "--only", "tokenizer", "--jobs", "1",
                 "--runs-dir", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    line = next(ln for ln in out.splitlines() if "tokenizer: FAILED" in ln)
    assert "No space left on device" in line and "log.txt" in line, line

    monkeypatch.setattr(hf, "export_hf", full)
    bad(capsys, "export", micro["model"], tmp_path / "hf", needles=("No space left on device", "disk"))
