"""The ipd suite's markdown summary: the decomposition tables, each sweep and the off-policy
variants, per kind of policy pair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metagrad.app.judging.statistics import power_law_exponent
from metagrad.app.presenting.outputs import write_text_atomic
from metagrad.app.presenting.tables import format_interval
from metagrad.app.running.rows import ResultRow
from metagrad.app.suites.ipd.config import PAIR_KINDS
from metagrad.app.suites.ipd.figures import PANELS, series_of

__all__ = ["write_summary"]


def _bias_ci(r: ResultRow) -> str:
    m = r.metrics
    return format_interval(m.bias_debiased, m.bias_ci_low, m.bias_ci_high, ".4f")


def write_summary(rows: list[ResultRow], path: Path, total_seconds: float | None = None) -> Path:
    """Markdown summary: the decomposition tables (corr, corr with the outer stage exact, bias,
    variance, MSE) and each sweep, per pair kind."""
    path = Path(path)
    lines = ["# LOLA gradient estimators in the IPD", ""]
    if rows:
        r0 = rows[0]
        lines += [
            f"Preset `{r0.preset}`, game `{r0.get('game')}`, gamma {r0.get('gamma')}, horizon "
            f"{r0.get('horizon')}, critic `{r0.get('critic')}`, {r0.metrics.num_tasks} pairs x "
            f"{r0.metrics.repeats} repeats, seed {r0.seed}, commit `{r0.provenance.git_commit}`."
            + (f" Wall time {total_seconds:.1f} s." if total_seconds else ""),
            "",
        ]
    for kind in PAIR_KINDS:
        dec = [r for r in rows if r.experiment == "decomposition" and r.get("pair_kind") == kind]
        if dec:
            d0 = dec[0]
            lines += [
                f"## Decomposition, {kind} pairs (n = {d0.get('n_inner') or d0.get('n_outer')}, "
                f"lookahead {d0.get('lookahead_steps')} x {d0.get('lookahead_lr')})",
                "",
                "| estimator | corr lll | corr lle (outer exact) | bias ele (Hessian only) | bias lll [CI] "
                "| variance lll | mse lll |",
                "|---|---|---|---|---|---|---|",
            ]
            for est in dict.fromkeys(r.estimator for r in dec):
                by = {r.get("combination"): r for r in dec if r.estimator == est}

                def cell(combo: str, text: Any, by: dict = by) -> str:
                    r = by.get(combo)
                    return "-" if r is None else text(r)

                lines.append(
                    f"| {est} | {cell('lll', lambda r: f'{r.metrics.corr:.3f} ± {r.metrics.corr_se:.3f}')} "
                    f"| {cell('lle', lambda r: f'{r.metrics.corr:.3f} ± {r.metrics.corr_se:.3f}')} "
                    f"| {cell('ele', _bias_ci)} | {cell('lll', _bias_ci)} "
                    f"| {cell('lll', lambda r: f'{r.metrics.variance:.4g}')} "
                    f"| {cell('lll', lambda r: f'{r.metrics.mse:.4g}')} |"
                )
            lines.append("")
        for experiment, xkey, ykey, xlabel, _, _ in PANELS:
            if ykey != "bias_debiased":
                continue
            series = series_of(rows, experiment, xkey, kind)
            if not series:
                continue
            lines += [f"## {experiment}, {kind} pairs: debiased bias and MSE vs {xlabel}", ""]
            lines += ["| series | points (x: bias [CI], mse) | log-log slope of bias |", "|---|---|---|"]
            for label, rs in series.items():
                pts = "; ".join(
                    f"{r.value(xkey)}: {r.metrics.bias_debiased:.4g} [{r.metrics.bias_ci_low:.3g}, "
                    f"{r.metrics.bias_ci_high:.3g}], {r.metrics.mse:.3g}"
                    for r in rs
                )
                slope = power_law_exponent(
                    [r.value(xkey) for r in rs], np.asarray([r.value(ykey) for r in rs])
                )
                lines.append(f"| {label} | {pts} | {slope:.2f} |")
            lines.append("")
        lines += _off_policy_table(
            [r for r in rows if r.experiment == "off_policy" and r.get("pair_kind") == kind]
        )
    write_text_atomic(path, "\n".join(lines))
    return path


def _off_policy_table(rows: list[ResultRow]) -> list[str]:
    """The off-policy variants side by side: corr, MSE and debiased squared bias [CI], with the
    outer gradient exact ('lle', the lookahead alone) and sampled ('lll')."""
    if not rows:
        return []
    r0 = rows[0]
    lines = [
        f"## off_policy, {r0.get('pair_kind')} pairs (lookahead {r0.get('lookahead_lr')}, "
        f"n = {r0.get('n_inner')}, {r0.metrics.num_tasks} pairs x {r0.metrics.repeats} estimates): "
        "corr / MSE / squared bias [CI]",
        "",
        "| lookahead | replay | baseline | outer exact ('lle') | outer sampled ('lll') |",
        "|---|---|---|---|---|",
    ]
    by = {(r.estimator, r.get("replay"), r.get("baseline"), r.get("combination")): r for r in rows}
    for est, replay, baseline in dict.fromkeys(k[:3] for k in by):
        cells = []
        for combo in ("lle", "lll"):
            r = by.get((est, replay, baseline, combo))
            m = None if r is None else r.metrics
            cells.append(
                "-"
                if m is None
                else f"{m.corr:.3f} / {m.mse:.3g} / {m.bias_sq_debiased:.3g} "
                f"[{m.bias_ci_low**2:.2g}, {m.bias_ci_high**2:.2g}]"
            )
        lines.append(f"| {est} | {replay} | {baseline} | {cells[0]} | {cells[1]} |")
    return [*lines, ""]
