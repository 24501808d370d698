"""Shared matplotlib helpers of the benches (headless: the Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["curves_panel", "fit_loglog_slope", "mean_se", "series_panel"]


def fit_loglog_slope(x: Iterable[float], y: Iterable[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (points with y <= 0 are dropped)."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(x, y, strict=True) if a > 0 and b > 0]
    if len(pts) < 2:
        return float("nan")
    xs, ys = np.array(pts).T
    return float(np.polyfit(xs, ys, 1)[0])


def series_panel(
    path: str | Path,
    series: dict[str, list[dict]],
    xkey: str,
    ykey: str,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    loglog: bool = False,
) -> Path:
    """One PNG: a line per series of result rows, ``ykey`` against ``xkey`` with error bars.

    Error bars: the bootstrap CI for ``bias_debiased``, else the row's ``{ykey}_se`` when present.
    On log-log axes the legend gives each series' fitted slope.
    """
    fig, ax = _axes((5.5, 4))
    for label, rows in series.items():
        x = [r[xkey] for r in rows]
        y = [r[ykey] for r in rows]
        if ykey == "bias_debiased":
            err = [[r[ykey] - r["bias_ci_low"] for r in rows], [r["bias_ci_high"] - r[ykey] for r in rows]]
        else:
            err = [r[f"{ykey}_se"] for r in rows] if all(f"{ykey}_se" in r for r in rows) else None
        if loglog:
            label = f"{label} (slope {fit_loglog_slope(x, y):.2f})"
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    if loglog:
        ax.set_xscale("log")
        ax.set_yscale("log")
    return _save(fig, ax, path, xlabel, ylabel, title, legend_size=7)


def _axes(figsize: tuple[float, float]):
    """A new figure and axes on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def _save(fig, ax, path: str | Path, xlabel: str, ylabel: str, title: str, *, legend_size: int) -> Path:
    """Label, legend, grid, save as PNG (dpi 110) and close."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    fig, ax = _axes((6.5, 4.2))
    for label, (x, runs) in curves.items():
        y = np.asarray(runs, dtype=float)
        mean = y.mean(0)
        se = y.std(0, ddof=1) / np.sqrt(len(y)) if len(y) > 1 else np.zeros_like(mean)
        ax.plot(x, mean, label=label)
        ax.fill_between(x, mean - se, mean + se, alpha=0.2)
    return _save(fig, ax, path, xlabel, ylabel, title, legend_size=8)
