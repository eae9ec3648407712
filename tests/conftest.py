"""Shared test fixtures: where the real data lives, and skips when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DOMTOK_SHARED_DATA", ROOT.parent / "shared" / "data"))
GPT2_DIR = SHARED_DATA / "gpt2"
GSM8K_DIR = SHARED_DATA / "gsm8k"

# Tokenizers built from the GPT-2 files find them through this variable.
if GPT2_DIR.is_dir():
    os.environ.setdefault("DOMTOK_GPT2_DIR", str(GPT2_DIR))


@pytest.fixture
def gpt2_dir() -> Path:
    if not (GPT2_DIR / "vocab.bpe").exists():
        pytest.skip(f"GPT-2 BPE files not found at {GPT2_DIR} (../shared/data/gpt2)")
    return GPT2_DIR


@pytest.fixture
def gsm8k_dir() -> Path:
    if not (GSM8K_DIR / "test.jsonl").exists():
        pytest.skip(f"GSM8K files not found at {GSM8K_DIR} (../shared/data/gsm8k)")
    return GSM8K_DIR
