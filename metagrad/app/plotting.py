"""Shared matplotlib helpers of the benches and comparisons.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, no pyplot state, no
display needed) and saved atomically (:mod:`metagrad.app.outputs`).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from metagrad.app.claims import power_law_exponent
from metagrad.app.outputs import write_bytes_atomic
from metagrad.app.rows import METRIC_FIELDS, ResultRow

__all__ = ["curves_panel", "mean_se", "new_figure", "save_figure", "series_panel"]


def series_panel(
    path: str | Path,
    series: dict[str, list[ResultRow]],
    xkey: str,
    ykey: str,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    loglog: bool = False,
    logx: bool = False,
) -> Path:
    """One PNG: a line per series of result rows, ``ykey`` against ``xkey`` with error bars.

    Error bars: the bootstrap CI for ``bias_debiased``, else the row's ``{ykey}_se`` when present.
    On log-log axes the legend gives each series' fitted slope; ``logx`` logs the x axis only.
    """
    fig, ax = new_figure((5.5, 4))
    for label, rows in series.items():
        x = [r.value(xkey) for r in rows]
        y = [r.value(ykey) for r in rows]
        if ykey == "bias_debiased":
            err = [
                [r.metrics.bias_debiased - r.metrics.bias_ci_low for r in rows],
                [r.metrics.bias_ci_high - r.metrics.bias_debiased for r in rows],
            ]
        else:
            err = [r.value(f"{ykey}_se") for r in rows] if f"{ykey}_se" in METRIC_FIELDS else None
        if loglog:
            label = f"{label} (exponent {power_law_exponent(x, np.asarray(y, dtype=float)):.2f})"
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    if loglog or logx:
        ax.set_xscale("log")
    if loglog:
        ax.set_yscale("log")
    return _save(fig, ax, path, xlabel, ylabel, title, legend_size=7)


def new_figure(figsize: tuple[float, float], ncols: int = 1) -> tuple[Figure, Any]:
    """A new figure and its axes (one, or a row of ``ncols``), independent of pyplot."""
    fig = Figure(figsize=figsize)
    axes = fig.subplots(1, ncols)
    return fig, axes


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Lay out and save ``fig`` (format from the suffix) atomically."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi)
    return write_bytes_atomic(path, buffer.getvalue())


def _save(
    fig: Figure, ax: Any, path: str | Path, xlabel: str, ylabel: str, title: str, *, legend_size: int
) -> Path:
    """Label, legend, grid, save and return the path."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (nan s.e. for fewer than two values)."""
    v = np.asarray(list(values), dtype=float)
    if v.size < 2:
        return float(v.mean()) if v.size else float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))


def curves_panel(
    path: str | Path,
    curves: dict[str, tuple[list[float], list[list[float]]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path:
    """One PNG of learning curves: per label, ``(x, runs)`` with ``runs [seeds][len(x)]``; the
    line is the mean over runs and the band one standard error."""
    fig, ax = new_figure((6.5, 4.2))
    for label, (x, runs) in curves.items():
        y = np.asarray(runs, dtype=float)
        mean = y.mean(0)
        se = y.std(0, ddof=1) / np.sqrt(len(y)) if len(y) > 1 else np.zeros_like(mean)
        ax.plot(x, mean, label=label)
        ax.fill_between(x, mean - se, mean + se, alpha=0.2)
    return _save(fig, ax, path, xlabel, ylabel, title, legend_size=8)
