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
