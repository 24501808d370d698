"""Number formats and markdown tables shared by the leaderboard, the report and the suites'
summaries: one way to print a value that may be missing, a value with its standard error, an
interval, a grid of rows, and text that came from a result row (:func:`text`: escaped, so a row
can never inject markup into a Markdown page or the HTML report built from it)."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["format_interval", "format_number", "markdown_grid", "plus_minus", "text"]


def format_number(value: float | None, spec: str = ".4g", missing: str = "n/a") -> str:
    """``value`` in ``spec``, or ``missing`` where it is not a finite number (never ``nan``)."""
    if value is None or not math.isfinite(value):
        return missing
    return f"{value:{spec}}"


def plus_minus(value: float, se: float, spec: str = ".4g") -> str:
    """``value ± se``; ``n/a`` for a non-finite value, the value alone for a non-finite s.e."""
    if not math.isfinite(value):
        return "n/a"
    return f"{value:{spec}}" + (f" ± {se:.2g}" if math.isfinite(se) else "")


def format_interval(value: float, low: float, high: float, spec: str = ".3g") -> str:
    """``value [low, high]`` (an estimate and its confidence interval)."""
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


def markdown_grid(
    rows: Sequence[Any],
    row_of: Callable[[Any], str],
    col_of: Callable[[Any], Any],
    cell: Callable[[Any], str],
    corner: str,
) -> list[str]:
    """A markdown table of ``rows``: one line per ``row_of`` label (in order of appearance), one
    column per ``col_of`` value (sorted; strings last), each entry ``cell(row)`` or ``-``."""
    cols = sorted({col_of(r) for r in rows}, key=lambda c: (isinstance(c, str), c))
    labels = list(dict.fromkeys(row_of(r) for r in rows))
    at = {(row_of(r), col_of(r)): r for r in rows}
    lines = ["| " + corner + " | " + " | ".join(str(c) for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label in labels:
        lines.append(
            f"| {label} | "
            + " | ".join(cell(at[(label, c)]) if (label, c) in at else "-" for c in cols)
            + " |"
        )
    return [*lines, ""]


_MARKDOWN_SPECIALS = str.maketrans({c: "\\" + c for c in "\\`*[]|"})


def text(value: object, limit: int = 200) -> str:
    """Row-derived text for a Markdown table or heading: HTML special characters escaped
    (``<``, ``>``, ``&``, quotes), Markdown specials backslash-escaped, newlines flattened, and at
    most ``limit`` characters (an ellipsis marks a cut). Every string that comes from a result row
    (names, presets, commits, labels) goes through here before it reaches a page."""
    shown = " ".join(str(value).split())
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return html.escape(shown, quote=True).translate(_MARKDOWN_SPECIALS)
