"""The leaderboard, built from result rows: for every setting scored by more than one
estimator, the estimators ranked by debiased bias (with its bootstrap CI) and by MSE (with its
standard error), with the sample budget of one estimate.

A *setting* is what a suite declares in ``Suite.setting_fields`` (with bench, preset and
experiment): everything about a cell that is not the estimator itself.
"""

from __future__ import annotations

from pathlib import Path

from metagrad.app.outputs import write_text_atomic
from metagrad.app.rows import ResultRow
from metagrad.app.suites import SUITES

__all__ = ["setting_key", "settings", "write_leaderboard"]

SettingKey = tuple[tuple[str, object], ...]


def setting_key(row: ResultRow) -> SettingKey:
    """The setting of a row: bench, preset, experiment and its suite's setting fields."""
    suite = SUITES.get(row.bench)
    fields = suite.setting_fields if suite is not None else ()
    key: list[tuple[str, object]] = [
        ("bench", row.bench),
        ("preset", row.preset),
        ("experiment", row.experiment),
    ]
    key += [(f, row.get(f)) for f in fields if row.get(f) is not None]
    return tuple(key)


def settings(rows: list[ResultRow]) -> dict[SettingKey, list[ResultRow]]:
    """Rows grouped by setting; only settings scored by two or more estimators."""
    groups: dict[SettingKey, list[ResultRow]] = {}
    for row in rows:
        groups.setdefault(setting_key(row), []).append(row)
    return {k: v for k, v in groups.items() if len({r.estimator for r in v}) > 1}


def _label(row: ResultRow) -> str:
    if row.experiment == "off_policy":
        return f"{row.estimator} (replay {row.get('replay', 0)})"
    return row.estimator


def _setting_title(key: SettingKey) -> str:
    d = dict(key)
    parts = [f"{d.pop('bench')}/{d.pop('preset')}", str(d.pop("experiment"))]
    parts += [f"{k}={v}" for k, v in d.items()]
    return " · ".join(parts)


def write_leaderboard(rows: list[ResultRow], path: str | Path) -> Path:
    """``leaderboard.md``: per setting, estimators ranked by debiased bias and by MSE."""
    path = Path(path)
    lines = [
        "# Leaderboard: which meta-gradient estimator to trust where",
        "",
        "Every number is a distance to the exact meta-gradient (float64 closed form, same horizon and",
        "discount as the samples). Bias: the debiased bias (bias with the sampling noise of the mean",
        "removed) and its 95% bootstrap CI; MSE: mean squared error ± its standard error. Budget: the",
        "episodes one estimate samples (per task or policy pair). Rank 1 is best; ties in CI are not",
        "resolved, so read the intervals.",
        "",
    ]
    commits = sorted({r.provenance.git_commit for r in rows})
    lines += [f"Rows: {len(rows)}; commit(s): {', '.join(f'`{c}`' for c in commits)}.", ""]
    for key, group in settings(rows).items():
        lines += [f"## {_setting_title(key)}", ""]
        lines += [
            "| rank | by bias | debiased bias [95% CI] | by MSE | MSE ± s.e. | corr ± s.e. | budget |",
            "|---|---|---|---|---|---|---|",
        ]
        by_bias = sorted(group, key=lambda r: (r.metrics.bias_debiased, r.metrics.bias_ci_high))
        by_mse = sorted(group, key=lambda r: r.metrics.mse)
        for rank, (rb, rm) in enumerate(zip(by_bias, by_mse, strict=True), start=1):
            b, m = rb.metrics, rm.metrics
            lines.append(
                f"| {rank} | {_label(rb)} | {b.bias_debiased:.4g} [{b.bias_ci_low:.3g}, "
                f"{b.bias_ci_high:.3g}] | {_label(rm)} | {m.mse:.4g} ± {m.mse_se:.2g} "
                f"| {m.corr:.3f} ± {m.corr_se:.3f} | {rm.episodes_per_estimate} |"
            )
        lines.append("")
    return write_text_atomic(path, "\n".join(lines))
