"""Where a model comes from: a local model dir, or a Hugging Face Hub model id fetched into the
Hugging Face cache. Torch-free and below `domtok.hub` (which pushes and pulls whole runs), so
evaluation and sampling can take a Hub id without importing the run-directory machinery."""

from __future__ import annotations

import re
from pathlib import Path

from domtok.errors import DomtokError

# `user/name` or `user/name@revision`; a path that exists locally is always the path
HUB_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def resolve_model(model: str) -> str:
    """A local model dir as given, or a Hub model id (`user/name`, `user/name@revision`) fetched
    into the Hugging Face cache with huggingface_hub's snapshot_download (which returns the
    cached snapshot without a request when HF_HUB_OFFLINE=1)."""
    if Path(model).exists() or not HUB_MODEL_ID.match(model):
        return model
    from huggingface_hub import snapshot_download

    repo, _, revision = model.partition("@")
    try:
        return snapshot_download(repo_id=repo, revision=revision or None)
    except Exception as e:  # not found, offline without a cached copy, network down
        detail = " ".join(str(e).split())[:200]
        raise DomtokError(f"{model}: no such local directory, and no Hugging Face Hub model {repo} could be fetched "
                          f"({type(e).__name__}: {detail}); check the path, or the repo id and the network") from None
