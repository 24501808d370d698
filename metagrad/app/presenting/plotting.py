"""Shared matplotlib helpers of the benches and comparisons: honest log axes, theory lines,
captions, PDF + PNG, in the one palette and with the human names of
:mod:`metagrad.app.presenting.names`.

* :func:`series_panel` / :func:`series_grid` draw result rows against a setting field. On a log
  y axis a point whose interval reaches 0 (or whose value is 0) is never dropped: it is drawn as an
  open down-triangle at its interval's upper end (an upper bound; at the bottom edge where even
  that is 0), and the fitted exponent in the legend uses the resolved points only (none shown
  where it cannot be fitted). Integer axes get integer ticks, sample sizes that are powers of two
  a log2 axis. A linear axis whose error bars would dwarf the points is clipped, the clipped bars
  ending in an up-arrow labelled with their true upper end; values spanning orders of magnitude
  get a log (positive) or symlog axis.
* :func:`save_figure` writes the PNG (200 dpi) and a PDF beside it; with a caption, also
  ``<name>.caption.md``, which the report prints next to the figure.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, no pyplot state, no
display needed) and saved atomically (:mod:`metagrad.app.presenting.outputs`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, MaxNLocator, NullFormatter, NullLocator, ScalarFormatter

from metagrad.app.judging.statistics import power_law_exponent, standard_error
from metagrad.app.presenting.names import COLORS, PALETTE, Style, human
from metagrad.app.presenting.outputs import write_bytes_atomic, write_text_atomic
from metagrad.app.running.rows import METRIC_FIELDS, ResultRow

__all__ = [
    "DPI",
    "caption_path",
    "curves_panel",
    "new_figure",
    "rows_caption",
    "save_figure",
    "series_grid",
    "series_panel",
]

DPI = 200
_BOUNDED = frozenset({"corr", "cosine_of_mean"})


def caption_path(png: str | Path) -> Path:
    """Where :func:`save_figure` writes a figure's caption (``<name>.caption.md``)."""
    png = Path(png)
    return png.with_name(png.stem + ".caption.md")


def rows_caption(rows: Sequence[ResultRow]) -> str:
    """What every caption states about the data: preset, tasks x repeats, run seed(s)."""
    if not rows:
        return ""
    presets = ", ".join(dict.fromkeys(f"{r.bench}/{r.preset}" for r in rows))
    budgets = ", ".join(
        dict.fromkeys(f"{r.metrics.num_tasks} tasks x {r.metrics.repeats} repeats" for r in rows)
    )
    seeds = ", ".join(str(s) for s in sorted({r.seed for r in rows}))
    return f"Preset {presets}; {budgets}; run seed {seeds}."


def _error_kind(ykey: str) -> str:
    if ykey == "bias_debiased":
        return "95% bootstrap CI (repeats resampled within tasks)"
    if f"{ykey}_se" in METRIC_FIELDS:
        return "± 1 standard error over tasks and repeats"
    return "none"


def _interval(r: ResultRow, ykey: str) -> tuple[float, float, float]:
    """``(value, low, high)`` of one point."""
    y = float(r.value(ykey))
    if ykey == "bias_debiased":
        return y, r.metrics.bias_ci_low, r.metrics.bias_ci_high
    if f"{ykey}_se" in METRIC_FIELDS:
        se = float(r.value(f"{ykey}_se"))
        return y, y - se, y + se
    return y, y, y


@dataclass(frozen=True)
class _Points:
    x: np.ndarray
    y: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _x(r: ResultRow, xkey: str) -> float:
    """A row's abscissa: a metric or setting field, else a field of its cell (``n``)."""
    value = r.value(xkey)
    return float(r.cell[xkey] if value is None else value)


def _points(rows: Sequence[ResultRow], xkey: str, ykey: str) -> _Points:
    xs = np.array([_x(r, xkey) for r in rows])
    vals = np.array([_interval(r, ykey) for r in rows], dtype=float).reshape(-1, 3)
    return _Points(xs, vals[:, 0], vals[:, 1], vals[:, 2])


def _set_x_axis(ax: Any, xs: np.ndarray, log: bool) -> None:
    """log2 with the values as ticks for powers of two; log10 where asked; integer ticks where
    every value is an integer."""
    values = np.unique(xs[np.isfinite(xs)])
    integer = values.size > 0 and bool(np.all(values == np.round(values)))
    powers = integer and bool(np.all(values > 0)) and all(int(v) & (int(v) - 1) == 0 for v in values)
    if powers and values.size >= 3 and values.max() / values.min() >= 8:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(values.tolist()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
    elif log and values.size and values.min() > 0:
        ax.set_xscale("log")
        if values.size <= 10:  # the values themselves as ticks, in plain numbers
            ax.xaxis.set_major_locator(FixedLocator(values.tolist()))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_locator(NullLocator())
        else:
            ax.xaxis.set_minor_formatter(NullFormatter())
    elif integer:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _draw_series(
    ax: Any,
    series: Mapping[str, Sequence[ResultRow]],
    xkey: str,
    ykey: str,
    *,
    log_y: bool,
    fit: bool,
    linestyles: Mapping[str, str] | None = None,
    colors: Mapping[str, Style] | None = None,
) -> dict[str, int]:
    """Draw every series on ``ax``; returns counts of the honest-drawing cases (for the caption)."""
    counts = {"bounds": 0, "zeros": 0, "clipped": 0}
    for label, rows in series.items():
        if not rows:
            continue
        style = (colors or {}).get(label) or PALETTE[rows[0].estimator]
        p = _points(rows, xkey, ykey)
        resolved = p.low > 0 if log_y else np.ones_like(p.y, dtype=bool)
        text = label
        if fit and resolved.sum() >= 2:
            exponent = float(power_law_exponent(p.x[resolved], p.y[resolved]))
            if math.isfinite(exponent):
                text = f"{label} (exponent {exponent:.2f})"
        ls = (linestyles or {}).get(label, "-")
        r = resolved
        if r.any():
            ax.errorbar(
                p.x[r],
                p.y[r],
                yerr=[p.y[r] - p.low[r], p.high[r] - p.y[r]],
                color=style.color,
                marker=style.marker,
                linestyle=ls,
                capsize=3,
                markersize=5,
                label=text,
            )
        if log_y and (~r).any():
            bound = ~r & (p.high > 0)
            zero = ~r & (p.high <= 0)
            counts["bounds"] += int(bound.sum())
            counts["zeros"] += int(zero.sum())
            # the bounds of one series joined faintly in its line style, so that series of one
            # estimator (e.g. random and trained pairs) stay apart
            ax.plot(p.x[bound], p.high[bound], linestyle=ls if bound.sum() > 1 else "none", alpha=0.45,
                    marker="v", markersize=7, markerfacecolor="none", color=style.color)  # fmt: skip
            if r.sum() == 0:  # no resolved point: the label goes on the bounds
                ax.plot(
                    [],
                    [],
                    color=style.color,
                    marker="v",
                    markerfacecolor="none",
                    linestyle=ls,
                    alpha=0.45,
                    label=f"{label} (upper bounds only)",
                )
            if zero.any():
                trans = ax.get_xaxis_transform()
                ax.plot(p.x[zero], np.full(zero.sum(), 0.02), transform=trans, linestyle="none", marker="v",
                        markersize=7, markerfacecolor="none", color=style.color, clip_on=False)  # fmt: skip
    return counts


def _y_axis(ax: Any, series: Mapping[str, Sequence[ResultRow]], xkey: str, ykey: str, loglog: bool) -> bool:
    """Choose the y scale before drawing: log where asked or where the positive values span more
    than two orders of magnitude (symlog if some are <= 0). Returns whether it is log."""
    pts = [_points(rows, xkey, ykey) for rows in series.values() if rows]
    if not pts:
        return False
    y = np.concatenate([p.y for p in pts])
    high = np.concatenate([p.high for p in pts])
    if loglog and (high > 0).any():
        ax.set_yscale("log")
        return True
    positive = y[y > 0]
    if ykey in _BOUNDED:  # correlations and cosines live in [-1, 1]: always linear
        return False
    if positive.size >= 2 and positive.max() / positive.min() > 100:
        if (y > 0).all():
            ax.set_yscale("log")
            return True
        ax.set_yscale("symlog", linthresh=float(positive.min()))
    return False


def _clip_linear(ax: Any, series: Mapping[str, Sequence[ResultRow]], xkey: str, ykey: str) -> int:
    """On a linear axis, clip error bars that would stretch it beyond 3x the points' own span;
    the clipped ends get an up/down arrow labelled with their true value. Returns how many."""
    pts = [(_points(rows, xkey, ykey), rows) for rows in series.values() if rows]
    y = np.concatenate([p.y for p, _ in pts])
    low = np.concatenate([p.low for p, _ in pts])
    high = np.concatenate([p.high for p, _ in pts])
    span = max(float(y.max() - y.min()), 1e-12 + 0.1 * float(np.abs(y).max()))
    top, bottom = float(y.max()) + 1.5 * span, float(y.min()) - 1.5 * span
    if high.max() <= top and low.min() >= bottom:
        return 0
    top, bottom = min(top, float(high.max())), max(bottom, float(low.min()))
    margin = 0.05 * (top - bottom)
    ax.set_ylim(bottom - margin, top + margin)
    clipped = 0
    for p, rows in pts:
        color = PALETTE[rows[0].estimator].color
        for x, h, lo in zip(p.x, p.high, p.low, strict=True):
            for value, edge, marker in ((h, top, "^"), (lo, bottom, "v")):
                if (marker == "^" and value > edge) or (marker == "v" and value < edge):
                    clipped += 1
                    ax.plot([x], [edge], marker=marker, color=color, linestyle="none")
                    ax.annotate(f"{value:.3g}", (x, edge), textcoords="offset points", xytext=(4, -3),
                                fontsize=6, color=color)  # fmt: skip
    return clipped


def _reference_slope(
    ax: Any, series: Mapping[str, Sequence[ResultRow]], xkey: str, ykey: str, slope: float
) -> None:
    """A dashed grey line of ``slope`` on log-log axes through the geometric mean of the
    resolved points."""
    pts = [_points(rows, xkey, ykey) for rows in series.values() if rows]
    xs = np.concatenate([p.x[p.low > 0] for p in pts]) if pts else np.array([])
    ys = np.concatenate([p.y[p.low > 0] for p in pts]) if pts else np.array([])
    if xs.size < 2:
        return
    x0, y0 = np.exp(np.log(xs).mean()), np.exp(np.log(ys).mean())
    grid = np.geomspace(xs.min(), xs.max(), 50)
    ax.plot(grid, y0 * (grid / x0) ** slope, color="0.5", linestyle="--", linewidth=1,
            label=f"slope {slope:g} (theory reference)")  # fmt: skip


def _finish(
    ax: Any, xlabel: str, ylabel: str, title: str, legend_size: int = 7, outside: bool = False
) -> None:
    """Labels, title and grid; ``outside``: the legend below the axes, where it hides no point."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    handles = ax.get_legend_handles_labels()[0]
    if handles and outside:
        ax.legend(fontsize=legend_size, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                  ncol=2 if len(handles) > 3 else 1, frameon=False)  # fmt: skip
    elif handles:
        ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)
    _log_minor_labels(ax)


def _log_minor_labels(ax: Any) -> None:
    """On a log y axis spanning more than a decade, no labels on the minor ticks (they overlap)."""
    low, high = ax.get_ylim()
    if ax.get_yscale() == "log" and low > 0 and high / low > 10:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _panel(
    ax: Any,
    series: Mapping[str, Sequence[ResultRow]],
    xkey: str,
    ykey: str,
    *,
    loglog: bool,
    logx: bool,
    reference_slope: float | None,
    theory: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None,
    linestyles: Mapping[str, str] | None,
    colors: Mapping[str, Style] | None,
    fit: bool = True,
) -> dict[str, int]:
    log_y = _y_axis(ax, series, xkey, ykey, loglog)
    counts = _draw_series(
        ax, series, xkey, ykey, log_y=log_y, fit=fit and loglog, linestyles=linestyles, colors=colors
    )
    if not log_y and ax.get_yscale() == "linear":
        counts["clipped"] = _clip_linear(ax, series, xkey, ykey)
    xs = np.concatenate([_points(rows, xkey, ykey).x for rows in series.values() if rows] or [np.array([])])
    _set_x_axis(ax, xs, loglog or logx)
    if reference_slope is not None and log_y:
        _reference_slope(ax, series, xkey, ykey, reference_slope)
    theory = theory or {}
    for i, (label, (tx, ty)) in enumerate(theory.items()):
        # one legend entry for several curves of one kind (they sit on their series)
        text = label if len(theory) == 1 else f"{label.split(',')[0]} (dotted, one per series)"
        ax.plot(tx, ty, color="0.3", linestyle=":", linewidth=1.5, label=None if i else text)
    return counts


def _caption(
    rows: Sequence[ResultRow], ykey: str, counts: Mapping[str, int], *, fit: bool, notes: str
) -> str:
    parts = [rows_caption(rows), f"Error bars: {_error_kind(ykey)}."]
    if counts.get("bounds"):
        parts.append(
            "Open down-triangles: points whose interval reaches 0 (unresolved), drawn at the upper end "
            "of the interval (an upper bound)."
        )
    if counts.get("zeros"):
        parts.append("Open down-triangles at the bottom edge: value and interval exactly 0.")
    if counts.get("clipped"):
        parts.append("Arrows at the edge: error bars clipped there, labelled with their true end.")
    if fit:
        parts.append(
            "Legend: exponent of a power-law fit to the resolved points (none where it cannot be fitted)."
        )
    if notes:
        parts.append(notes)
    return " ".join(p for p in parts if p)


def series_panel(
    path: str | Path,
    series: Mapping[str, Sequence[ResultRow]],
    xkey: str,
    ykey: str,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    loglog: bool = False,
    logx: bool = False,
    reference_slope: float | None = None,
    theory: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    linestyles: Mapping[str, str] | None = None,
    colors: Mapping[str, Style] | None = None,
    notes: str = "",
) -> Path:
    """One figure (PNG + PDF + caption): a line per series of result rows, ``ykey`` against
    ``xkey`` with error bars (the bootstrap CI for ``bias_debiased``, else ``{ykey}_se``).

    Colours and markers from :data:`PALETTE` by each series' estimator (``colors`` overrides per
    label); ``linestyles`` per label. ``loglog``: log axes, power-law exponents in the legend and
    ``reference_slope`` drawn; ``logx``: log x only; ``theory``: label -> ``(x, y)`` curves drawn
    dotted. ``notes`` end the caption (e.g. what the theory line is)."""
    fig, ax = new_figure((5.5, 5))
    counts = _panel(
        ax, series, xkey, ykey, loglog=loglog, logx=logx, reference_slope=reference_slope,
        theory=theory, linestyles=linestyles, colors=colors,
    )  # fmt: skip
    _finish(ax, xlabel, ylabel, title, outside=True)
    rows = [r for rs in series.values() for r in rs]
    return save_figure(fig, path, caption=_caption(rows, ykey, counts, fit=loglog, notes=notes))


def series_grid(
    path: str | Path,
    panels: Mapping[str, Mapping[str, Sequence[ResultRow]]],
    xkey: str,
    ykey: str,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    loglog: bool = False,
    logx: bool = False,
    ncols: int = 4,
    notes: str = "",
) -> Path:
    """:func:`series_panel` for several panels (title -> series) in a grid sharing the axes'
    meaning, one legend for the figure."""
    n = len(panels)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(3.3 * ncols, 2.8 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).reshape(-1)
    counts: dict[str, int] = {}
    for ax, (name, series) in zip(axes, panels.items(), strict=False):
        c = _panel(
            ax, series, xkey, ykey, loglog=loglog, logx=logx, reference_slope=None, theory=None,
            linestyles=None, colors=None, fit=False,
        )  # fmt: skip
        counts = {k: counts.get(k, 0) + v for k, v in c.items()}
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        _log_minor_labels(ax)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_axis_off()
    estimators = dict.fromkeys(rs[0].estimator for series in panels.values() for rs in series.values() if rs)
    handles = [
        Line2D([], [], color=PALETTE[e].color, marker=PALETTE[e].marker, label=human(e)) for e in estimators
    ]
    if counts.get("bounds") or counts.get("zeros"):
        handles.append(
            Line2D([], [], color="0.3", marker="v", markerfacecolor="none", linestyle="none",
                   label="upper bound (interval reaches 0)")
        )  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.07 + 0.03 * (len(handles) > 6), 1, 1))
    rows = [r for series in panels.values() for rs in series.values() for r in rs]
    return save_figure(fig, path, caption=_caption(rows, ykey, counts, fit=False, notes=notes), layout=False)


def new_figure(figsize: tuple[float, float], ncols: int = 1) -> tuple[Figure, Any]:
    """A new figure and its axes (one, or a row of ``ncols``), independent of pyplot."""
    fig = Figure(figsize=figsize)
    axes = fig.subplots(1, ncols)
    return fig, axes


def save_figure(
    fig: Figure, path: str | Path, *, dpi: int = DPI, caption: str | None = None, layout: bool = True
) -> Path:
    """Lay out and save ``fig`` atomically: at ``path`` (format from the suffix, PNG at ``dpi``)
    and, for a PNG, a PDF beside it; ``caption`` goes to :func:`caption_path`. Returns ``path``."""
    path = Path(path)
    if layout:
        fig.tight_layout()
    formats = [path] + ([path.with_suffix(".pdf")] if path.suffix == ".png" else [])
    for target in formats:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=target.suffix.lstrip(".") or "png", dpi=dpi)
        write_bytes_atomic(target, buffer.getvalue())
    if caption:
        write_text_atomic(caption_path(path), caption + "\n")
    return path


def curves_panel(
    path: str | Path,
    curves: Mapping[str, tuple[Sequence[float], Sequence[Sequence[float]]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    hlines: Mapping[str, float] | None = None,
    caption: str | None = None,
) -> Path:
    """One figure of learning curves: per label, ``(x, runs)`` with ``runs [seeds][len(x)]``; the
    line is the mean over runs and the band one standard error; ``hlines``: label -> y of a
    reference drawn dashed (e.g. the rewards of mutual cooperation and defection)."""
    fig, ax = new_figure((6.5, 4.2))
    for i, (label, (x, runs)) in enumerate(curves.items()):
        y = np.asarray(runs, dtype=float)
        mean = y.mean(0)
        se = standard_error(y) if len(y) > 1 else np.zeros_like(mean)
        color = COLORS[i % len(COLORS)]
        ax.plot(x, mean, label=label, color=color)
        ax.fill_between(x, mean - se, mean + se, alpha=0.2, color=color)
    for label, level in (hlines or {}).items():
        ax.axhline(level, color="0.4", linestyle="--", linewidth=1)
        ax.annotate(label, (0.01, level), xycoords=("axes fraction", "data"), textcoords="offset points",
                    xytext=(0, 3), fontsize=7, color="0.3")  # fmt: skip
    _finish(ax, xlabel, ylabel, title, legend_size=8)
    text = caption or "Lines: mean over runs; bands: ± 1 standard error over runs."
    return save_figure(fig, path, caption=text)
