"""Memory estimates: a run whose cells cannot fit is refused before anything is allocated.

A cell of a staged suite (tabular, ipd) holds, at its peak, the trajectories of one estimated
stage, ``n + replay`` episodes of ``H`` steps for each of its ``R`` repeats (all repeats are one
batch), with the autograd graph of the log-probabilities; the graphs of the earlier sampled stages
that feed the outer gradient (the Jacobian stages) stay alive beside it. The estimate is

    peak_per_step * H * R * (largest stage's episodes)
    + kept_per_step * H * R * (the other episodes of one estimate) + fixed

with per-step constants chosen per engine as upper bounds of measured single-cell peaks (growth
of ``ru_maxrss`` over a warmed-up process, n = 2,000-40,000, torch 2.13 CPU): tabular 200 / 25
bytes, IPD 220 / 65 (two agents' log-probs). Against those measurements (tabular ele, eel, lee,
lel, lll at K = 1-3; IPD ele, lee, lll at 1-3 lookahead steps, off-policy with replay) the
estimate is 1.0-2.4x the measured peak (2.7x for an off-policy cell with 3x replay), never below
it; ``tests/test_hardening.py::test_memory_estimates_bound_measured_peaks`` (slow) re-measures.
:func:`check_memory` compares the largest cell, and the ``workers`` largest together, with the
memory available now.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from metagrad.staged import StageSpec, stage_cost

__all__ = [
    "InsufficientMemory",
    "MemoryEstimate",
    "StagedRecipe",
    "available_memory",
    "check_memory",
    "format_bytes",
    "staged_estimate",
]


class StagedRecipe(Protocol):
    """What a memory estimate reads of a three-stage recipe (``MetaGradientSpec``, ``LolaSpec``)."""

    @property
    def inner(self) -> StageSpec: ...

    @property
    def hessian(self) -> StageSpec: ...

    @property
    def outer(self) -> StageSpec: ...


class InsufficientMemory(ValueError):
    """A run whose cells would not fit in the memory available."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a cell needs at its peak, what drives the figure, and the flags that lower it."""

    bytes: int
    detail: str
    flags: tuple[str, ...]


def format_bytes(n: float) -> str:
    """``n`` bytes in B, KB, MB, GB or TB (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def staged_estimate(
    spec: StagedRecipe,
    *,
    episodes: int,
    horizon: int,
    repeats: int,
    peak_per_step: int,
    kept_per_step: int,
    fixed: int = 0,
    flags: tuple[str, ...],
    fixed_flags: tuple[str, ...] = (),
) -> MemoryEstimate:
    """The estimate of one cell of a three-stage spec (see the module docstring).

    ``episodes``: all episodes one estimate samples (``episodes_per_estimate``); ``fixed``: the
    cell's memory besides its trajectories (tasks, samples), lowered by ``fixed_flags``.
    """
    critic = getattr(spec, "critic", None)
    stages: list[StageSpec] = [spec.inner, spec.hessian, spec.outer]
    largest = max(
        ((stage_cost(s, critic) if critic is not None else s.n) + s.replay for s in stages if not s.is_exact),
        default=0,
    )
    per_step = horizon * repeats
    rolled = per_step * (peak_per_step * largest + kept_per_step * max(episodes - largest, 0))
    total = rolled + fixed
    if rolled >= fixed:
        detail = f"{largest} episodes in its largest stage x {horizon} steps x {repeats} repeats"
        return MemoryEstimate(total, detail, flags)
    return MemoryEstimate(total, f"{format_bytes(fixed)} of tasks and estimates", fixed_flags or flags)


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes available for new allocations on ``device`` now (None where unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - no sysconf
        return None


def check_memory(
    cells: Iterable[tuple[str, MemoryEstimate]],
    *,
    workers: int,
    device: Any = "cpu",
    available: int | None = None,
) -> None:
    """Raise :class:`InsufficientMemory` (with the figures and the flags to lower) when the
    largest cell, or the ``workers`` largest cells running at once, need more than is available."""
    listed = list(cells)
    if not listed:
        return
    available = available_memory(device) if available is None else available
    if available is None:
        return
    label, worst = max(listed, key=lambda c: c[1].bytes)
    if worst.bytes > available:
        raise InsufficientMemory(
            f"cell {label} needs about {format_bytes(worst.bytes)} of memory ({worst.detail}); about "
            f"{format_bytes(available)} is available on {device}: lower {' or '.join(worst.flags)}"
        )
    together = sum(sorted(e.bytes for _, e in listed)[-workers:])
    if workers > 1 and together > available:
        raise InsufficientMemory(
            f"{workers} cells at once need about {format_bytes(together)} of memory; about "
            f"{format_bytes(available)} is available on {device}: lower --workers "
            f"(or {' or '.join(worst.flags)})"
        )
