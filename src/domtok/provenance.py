"""What produced a result: the code's commit (and whether it had uncommitted changes), the
versions of domtok, torch and Python, the device, the CPU and torch's thread count.

Every finished node records this in its manifest (`provenance`), so a report states what ran
the study rather than what made the report.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from pathlib import Path


@functools.lru_cache(maxsize=1)
def _git() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout domtok is imported from; (None, None) outside git."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


@functools.lru_cache(maxsize=1)
def _cpu() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect() -> dict:
    """{commit, dirty, domtok, torch, python, device, cpu, threads} of this process."""
    import torch

    import domtok

    commit, dirty = _git()
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    return {"commit": commit, "dirty": dirty, "domtok": domtok.__version__, "torch": torch.__version__,
            "python": sys.version.split()[0], "device": device, "cpu": _cpu(), "threads": torch.get_num_threads()}
