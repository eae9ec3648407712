from dataclasses import dataclass, field

import pytest

from domtok.chat import render_conversation, render_conversation_text, render_prompt
from domtok.config import ConfigError, apply_overrides, config_hash, from_dict, load_config


@dataclass
class Opt:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])


@dataclass
class Cfg:
    name: str = "x"
    steps: int = 10
    opt: Opt = field(default_factory=Opt)
    note: str | None = None


def test_overrides_and_hash(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\nopt:\n  lr: 0.1\n")
    cfg = load_config(Cfg, p, ["opt.lr=3e-4", "steps=5"])
    assert cfg.opt.lr == pytest.approx(3e-4) and cfg.steps == 5 and cfg.name == "a"
    assert config_hash(cfg) != config_hash(Cfg())
    assert config_hash(cfg) == config_hash(load_config(Cfg, p, ["steps=5", "opt.lr=3e-4"]))


def test_bad_keys_and_types_are_readable():
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(Cfg, {"stepz": 3})
    with pytest.raises(ConfigError, match="integer"):
        from_dict(Cfg, {"steps": "many"})
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["nonsense"])


class CharTok:
    """One id per character; EOS is 0. Enough to check mask boundaries exactly."""

    eot_id = 0

    def encode(self, text):
        return [ord(c) for c in text]


def test_chat_mask_is_exact():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2"}]
    text = render_conversation_text(msgs)
    assert text == "S\n\nUser: q1\nAssistant: a1<|endoftext|>\nUser: q2\nAssistant: a2<|endoftext|>"
    r = render_conversation(msgs, CharTok())
    trained = "".join("E" if i == 0 else chr(i) for i, m in zip(r.ids, r.mask) if m)
    assert trained == " a1E a2E"
    assert len(r.ids) == len(r.mask)
    assert render_prompt("What is 7 times 8?") == "User: What is 7 times 8?\nAssistant:"
    with pytest.raises(ValueError, match="alternate"):
        render_conversation_text([{"role": "assistant", "content": "x"}])


def test_stage_set_takes_dotted_keys_and_merges_plain_ones():
    from domtok.config import load_yaml, stage_section

    preset = load_yaml("sft-gsm_sbs")["sft"]
    cfg = stage_section({"name": "sbs", "kind": "sft", "config": "sft-gsm_sbs",
                         "set": {"stages.0.epochs": 2, "stages.0.data.0.n": 64, "seed": 3}}, "spec")
    st = cfg["stages"][0]
    assert st["epochs"] == 2 and st["data"][0]["n"] == 64 and cfg["seed"] == 3
    # every other key of the list item is the preset's (a plain `stages:` key would replace the list)
    assert st["learning_rate"] == preset["stages"][0]["learning_rate"] and st["data"][0]["kind"] == "gsm_sbs"
    assert load_yaml("sft-gsm_sbs")["sft"]["stages"][0]["epochs"] == 10  # the preset itself is untouched
    merged = stage_section({"name": "g", "kind": "grpo", "config": "grpo-shaped",
                            "set": {"reward": {"kind": "shaped_fair"}}}, "spec")
    assert merged["reward"]["kind"] == "shaped_fair" and merged["reward"]["domain"] == 0.2  # mapping merged
    with pytest.raises(ConfigError, match=r"set stages\.5\.epochs: '5' is not an index of a list of 1"):
        stage_section({"name": "s", "kind": "sft", "config": "sft-gsm_sbs", "set": {"stages.5.epochs": 2}}, "spec")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        stage_section({"name": "s", "kind": "sft", "config": "sft-gsm_sbs", "set": {"seed.x": 2}}, "spec")


def test_readme_override_examples_resolve():
    """The README's `stages.N.set.KEY=...` examples reach the stages they name in gpt2-124m-10b."""
    from domtok.wiring import check_stage_configs
    from domtok.rundir import load_spec

    spec = load_spec("gpt2-124m-10b", ["stages.0.set.report_to=tensorboard", "stages.5.set.beta=0.2"])
    assert spec.stage("pretrain").config["report_to"] == "tensorboard"
    assert spec.stage("grpo_shaped").config["beta"] == 0.2 and spec.stage("grpo_shaped_fair").config["beta"] == 0.5
    check_stage_configs(spec)
