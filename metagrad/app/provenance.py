"""What every result row carries: package versions, git commit, device, host threads."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from metagrad.app.rows import Provenance

__all__ = ["config_hash", "git_commit", "package_versions", "provenance", "run_metadata"]

_PACKAGES = (
    "metagrad",
    "torch",
    "numpy",
    "gymnasium",
    "ale-py",
    "stable-baselines3",
    "pettingzoo",
    "matplotlib",
)


def config_hash(payload: object) -> str:
    """A stable 16-hex-digit hash of a JSON-able config (keys sorted; non-JSON values as str)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Installed versions of the suite's dependencies (``"absent"`` where not installed)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """``HEAD`` of the checkout holding this package, with ``-dirty`` if it has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def run_metadata(device: str | torch.device = "cpu") -> dict[str, object]:
    """Versions, git commit, device and torch thread count, as a dict for JSON outputs."""
    return provenance(device).to_json()


def provenance(device: str | torch.device = "cpu") -> Provenance:
    """The provenance of a result row computed in this process on ``device``."""
    return Provenance(
        versions=package_versions(),
        git_commit=git_commit(),
        device=str(device),
        torch_threads=torch.get_num_threads(),
        host=platform.node(),
    )
