"""Hub sync offline: huggingface_hub is replaced at its boundary by a fake backed by a folder.

Uses the micro study of test_pipeline.py (a session fixture), so push has real exported
models to upload; pulled models are checked with transformers' own loader.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import pytest

from domtok import hub

TOKEN = "hf_THIS_IS_A_SECRET_TOKEN"


class FakeHub:
    def __init__(self, root: Path):
        self.root = root
        self.uploads: list[str] = []

    def path(self, repo: str) -> Path:
        return self.root / repo.replace("/", "__")

    # HfApi surface used by domtok.hub
    def create_repo(self, repo_id, private=None, exist_ok=False):
        assert exist_ok
        self.path(repo_id).mkdir(parents=True, exist_ok=True)

    def upload_folder(self, repo_id, folder_path, commit_message=None):
        shutil.copytree(folder_path, self.path(repo_id), dirs_exist_ok=True)
        self.uploads.append(repo_id)

    def repo_exists(self, repo_id):
        return self.path(repo_id).exists()

    def file_exists(self, repo_id, filename):
        return (self.path(repo_id) / filename).exists()

    def snapshot_download(self, repo_id, local_dir=None, allow_patterns=None, ignore_patterns=None, **_):
        src = self.path(repo_id)
        if not src.exists():
            raise FileNotFoundError(repo_id)
        dst = Path(local_dir) if local_dir else self.root.parent / "cache" / repo_id.replace("/", "__")
        for f in src.rglob("*"):
            rel = str(f.relative_to(src))
            if f.is_dir() or (allow_patterns and not any(fnmatch.fnmatch(rel, p) for p in allow_patterns)):
                continue
            if ignore_patterns and any(fnmatch.fnmatch(rel, p) for p in ignore_patterns):
                continue
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / rel)
        return str(dst)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(hub, "HfApi", lambda: fake)
    monkeypatch.setattr(hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return fake


def test_push_skip_force_pull_list(micro_run, fake_hub, tmp_path, capsys):
    from domtok.cli import main

    run_dir = micro_run["run_dir"]
    assert main(["hub", "push", str(run_dir), "--repo-prefix", "alice/micro"]) == 0
    models = [r for r in fake_hub.uploads if r not in ("alice/micro-results", "alice/micro-tokenizer")]
    assert sorted(models) == sorted(f"alice/micro-{c}-s0-{s}" for c in ("baseline", "mul_tokens")
                                    for s in ("pretrain", "sft", "grpo"))
    assert "alice/micro-tokenizer" in fake_hub.uploads and "alice/micro-results" in fake_hub.uploads
    # checkpoints stay local by default
    assert not list(fake_hub.path("alice/micro-baseline-s0-pretrain").glob("checkpoints"))

    # a second push uploads no model again; --force does
    fake_hub.uploads.clear()
    main(["hub", "push", str(run_dir), "--repo-prefix", "alice/micro"])
    assert fake_hub.uploads == ["alice/micro-results"]
    main(["hub", "push", str(run_dir), "--repo-prefix", "alice/micro", "--models", "baseline", "--force",
          "--include-checkpoints"])
    assert "alice/micro-baseline-s0-sft" in fake_hub.uploads and "alice/micro-mul_tokens-s0-sft" not in fake_hub.uploads
    assert list(fake_hub.path("alice/micro-baseline-s0-pretrain").glob("checkpoints/step_*"))

    # pull one condition's models into a fresh run dir; results come along
    out = tmp_path / "pulled"
    assert main(["hub", "pull", "--repo-prefix", "alice/micro", "--out", str(out),
                 "--models", "baseline", "results"]) == 0
    pulled = out / "baseline/seed0/sft/model"
    assert (pulled / "config.json").exists() and not (out / "mul_tokens/seed0/sft/model").exists()
    assert not list(out.rglob("checkpoints"))
    assert (out / "report.md").exists()
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(pulled)
    assert hf.config.vocab_size % 64 == 0

    # the registry lists names, repos and groups
    transfers = capsys.readouterr()  # everything push and pull printed
    assert "pushed baseline-s0-sft -> alice/micro-baseline-s0-sft" in transfers.out and "pulled" in transfers.out
    main(["hub", "list", "--repo-prefix", "alice/micro"])
    listing = capsys.readouterr().out
    assert "| mul_tokens-s0-grpo | alice/micro-mul_tokens-s0-grpo | model | grpo | mul_tokens | 0 |" in listing
    assert "groups: all, models" in listing and "baseline" in listing

    captured = capsys.readouterr()
    assert TOKEN not in transfers.out + transfers.err + listing + captured.out + captured.err


def test_push_without_token_is_a_clear_error(micro_run, tmp_path, monkeypatch, capsys):
    from domtok.cli import main

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    monkeypatch.setattr(hub, "HfApi", lambda: pytest.fail("no upload may start without a token"))
    assert main(["hub", "push", str(micro_run["run_dir"]), "--repo-prefix", "alice/micro"]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err


def test_unknown_group_and_bad_prefix(micro_run):
    from domtok.errors import DomtokError

    reg = hub.build_registry(micro_run["run_dir"], "alice/micro")
    assert len(hub.select(reg, ["sft"])) == 2 and len(hub.select(reg, ["models"])) == 6
    with pytest.raises(DomtokError, match="unknown model"):
        hub.select(reg, ["nope"])
    with pytest.raises(DomtokError, match="USER/name"):
        hub.build_registry(micro_run["run_dir"], "no-slash")


# --------------------------------------------------------------------------- one model, exact repo

def test_select_takes_the_reference_studys_names():
    E = hub.Entry
    entries = [E("results", "u/r-results", "results")] + [
        E(f"{c}-s{s}-{st}", f"u/r-{c}-s{s}-{st}", "model", st, c, s)
        for c in ("baseline", "mul_tokens") for s in (0, 1) for st in ("pretrain", "sft_instruct", "sft_gsm8k")]
    names = lambda wanted: sorted(e.name for e in hub.select(entries, wanted))  # noqa: E731
    assert names(["pretrained"]) == names(["pretrain"]) == [
        "baseline-s0-pretrain", "baseline-s1-pretrain", "mul_tokens-s0-pretrain", "mul_tokens-s1-pretrain"]
    assert names(["sft_tulu"]) == names(["sft_instruct"])
    assert names(["hf_mul_tokens_10b"]) == ["mul_tokens-s0-pretrain", "mul_tokens-s1-pretrain"]
    assert names(["sft_tulu_baseline", "sft_gsm8k_mul_tokens"]) == [
        "baseline-s0-sft_instruct", "baseline-s1-sft_instruct", "mul_tokens-s0-sft_gsm8k", "mul_tokens-s1-sft_gsm8k"]
    with pytest.raises(hub.DomtokError, match="sft_tulu_nobody"):
        hub.select(entries, ["pretrained", "sft_tulu_nobody"])


def test_push_one_model_dir_to_an_exact_repo_with_its_card(micro_run, fake_hub, tmp_path, capsys):
    import json

    from domtok.cli import main

    node = micro_run["run_dir"] / "mul_tokens" / "seed0" / "grpo"
    results = {p.parent.name: json.loads(p.read_text())["metrics"] for p in node.glob("eval/*/summary.json")}
    assert results  # the micro study evaluates after grpo
    assert main(["hub", "push", str(node), "--repo", "alice/domain-token-gpt2-sft-mul-tokens"]) == 0
    assert fake_hub.uploads == ["alice/domain-token-gpt2-sft-mul-tokens"]
    repo = fake_hub.path("alice/domain-token-gpt2-sft-mul-tokens")
    card = (repo / "README.md").read_text()
    assert "| condition | mul_tokens" in card and "| stage | grpo |" in card and "| seed | 0 |" in card
    bench, metrics = next(iter(results.items()))
    metric, value = next((k, v) for k, v in metrics.items() if isinstance(v, float))
    assert f"| {bench} | {metric} | {value:.4f} |" in card
    assert 'from_pretrained("alice/domain-token-gpt2-sft-mul-tokens")' in card
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(repo) is not None
    assert AutoTokenizer.from_pretrained(repo).pad_token == "<|padding_0|>"
    # the model dir itself works as PATH too
    assert main(["hub", "push", str(node / "model"), "--repo", "alice/m2"]) == 0
    # a run dir is not one model; a model dir is not a run
    assert main(["hub", "push", str(micro_run["run_dir"]), "--repo", "alice/x"]) == 2
    assert "--repo-prefix" in capsys.readouterr().err
    assert main(["hub", "push", str(node), "--repo-prefix", "alice/x"]) == 2
    assert "--repo USER/name" in capsys.readouterr().err
    assert main(["hub", "push", str(node), "--repo", "not-a-repo"]) == 2
    assert main(["hub", "push", str(node)]) == 2
    assert TOKEN not in capsys.readouterr().err


def test_pull_by_the_reference_group_name(micro_run, fake_hub, tmp_path):
    from domtok.cli import main

    run_dir = micro_run["run_dir"]
    assert main(["hub", "push", str(run_dir), "--repo-prefix", "bob/micro", "--models", "pretrained", "results"]) == 0
    assert sorted(fake_hub.uploads) == ["bob/micro-baseline-s0-pretrain", "bob/micro-mul_tokens-s0-pretrain",
                                        "bob/micro-results"]
    out = tmp_path / "pulled"
    assert main(["hub", "pull", "--repo-prefix", "bob/micro", "--out", str(out), "--models", "hf_baseline_10b"]) == 0
    assert (out / "baseline/seed0/pretrain/model/config.json").exists()
    assert not (out / "mul_tokens/seed0/pretrain/model").exists()
