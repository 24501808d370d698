"""What every result row carries: package versions, the suite's own commit, device, threads, host.

The ``metagrad`` version is always recorded (``versions``); ``git_commit`` is the suite's own
commit (with ``-dirty`` for local changes) only when it runs from its checkout, and ``"none"``
otherwise: an installed copy inside a user's git repository never records the user's commit.
"""

from __future__ import annotations

import functools
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

import torch

import metagrad
from metagrad.app.running.rows import Provenance

__all__ = [
    "NO_CHECKOUT",
    "checkout_commit",
    "code_version",
    "git_commit",
    "package_versions",
    "provenance",
    "run_metadata",
]

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


NO_CHECKOUT = "none"


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def checkout_commit(package_dir: str | Path) -> str | None:
    """``HEAD`` (with ``-dirty`` when tracked files changed) of the metagrad checkout whose own
    ``metagrad/`` folder is ``package_dir``; None for any other location: an installed copy, or a
    copy inside someone else's git repository (whose commit says nothing about this code)."""
    package_dir = Path(package_dir).resolve()
    try:
        top = Path(_git(["rev-parse", "--show-toplevel"], package_dir)).resolve()
        pyproject = (top / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", pyproject, re.MULTILINE | re.DOTALL)
    named = project and re.search(r"^name\s*=\s*[\"']metagrad[\"']\s*$", project.group(1), re.MULTILINE)
    if not named or top / "metagrad" != package_dir:
        return None
    try:
        sha = _git(["rev-parse", "HEAD"], top)
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], top)
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The suite's own commit when it runs from its checkout (``<sha>`` or ``<sha>-dirty``), else
    ``"none"`` (the version, recorded in every row's ``versions``, then names the code)."""
    return checkout_commit(Path(metagrad.__file__).resolve().parent) or NO_CHECKOUT


def code_version(provenance: Provenance | None = None) -> str:
    """How messages name the code behind ``provenance`` (default: this process): its commit, or
    ``metagrad <version>`` outside a checkout."""
    if provenance is None:
        return git_commit() if git_commit() != NO_CHECKOUT else f"metagrad {package_versions()['metagrad']}"
    if provenance.git_commit not in (NO_CHECKOUT, "unknown"):
        return provenance.git_commit
    return f"metagrad {provenance.versions.get('metagrad', 'unknown version')}"


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
