"""The ipd suite's figures (PNG + PDF + caption): one line per estimator (its colour) and kind
of policy pair (its line style), with CIs."""

from __future__ import annotations

from pathlib import Path

from metagrad.app.presenting.names import human
from metagrad.app.presenting.plotting import series_panel
from metagrad.app.running.rows import ResultRow
from metagrad.app.suites.ipd.config import PAIR_KINDS

__all__ = ["PANELS", "series_of", "write_figures"]


def series_of(rows: list[ResultRow], experiment: str, xkey: str, kind: str) -> dict[str, list[ResultRow]]:
    out: dict[str, list[ResultRow]] = {}
    for r in rows:
        if r.experiment == experiment and r.get("pair_kind") == kind:
            label = str(r.get("combination")) if experiment == "off_policy" else r.estimator
            out.setdefault(label, []).append(r)
    return {k: sorted(v, key=lambda r: r.value(xkey)) for k, v in out.items()}


PANELS = (
    (
        "sweep_n",
        "n_inner",
        "bias_debiased",
        "batch n (inner = outer, episodes)",
        "debiased bias (95% CI)",
        True,
    ),
    (
        "sweep_n",
        "n_inner",
        "corr",
        "batch n (inner = outer, episodes)",
        "correlation with the exact gradient",
        False,
    ),
    ("sweep_lr", "lookahead_lr", "bias_debiased", "lookahead step size", "debiased bias (95% CI)", False),
    ("sweep_steps", "lookahead_steps", "bias_debiased", "lookahead steps", "debiased bias (95% CI)", False),
)
_KIND_STYLES = ("-", "--", ":", "-.")


def write_figures(rows: list[ResultRow], folder: Path, stem: str = "ipd") -> list[Path]:
    """Figures (PNG + PDF + caption) per experiment: one line per estimator (its colour) and pair
    kind (its line style), with CIs."""
    folder = Path(folder)
    written = []
    for experiment, xkey, ykey, xlabel, ylabel, loglog in PANELS:
        series, styles = {}, {}
        for i, kind in enumerate(PAIR_KINDS):
            for label, rs in series_of(rows, experiment, xkey, kind).items():
                series[f"{human(label)} ({kind} pairs)"] = rs
                styles[f"{human(label)} ({kind} pairs)"] = _KIND_STYLES[i % len(_KIND_STYLES)]
        if series:
            written.append(
                series_panel(
                    folder / f"{stem}_{experiment}_{ykey}.png",
                    series,
                    xkey,
                    ykey,
                    xlabel=xlabel,
                    ylabel=ylabel,
                    title=f"LOLA in the IPD: {human(experiment).lower()}"
                    if experiment != "sweep_n"
                    else "LOLA in the IPD: bias vs batch size",
                    loglog=loglog,
                    reference_slope=-0.5 if loglog else None,
                    linestyles=styles,
                    notes="Line styles: pair kinds (random or trained policy pairs)."
                    + (
                        " Dashed grey: slope -1/2 reference (sampling error of n episodes)." if loglog else ""
                    ),
                )
            )
    return written
