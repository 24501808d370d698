"""The leaderboard, built from result rows: for every setting scored by more than one
estimator, the estimators ranked by paired comparisons on the same tasks and samples.

A *setting* is what a suite declares in ``Suite.setting_fields`` (with bench, preset, experiment
and run seed): everything about a cell that is not the estimator itself. Every estimator of a
setting saw the same tasks, trajectories and critic noise (common random numbers), so two of
them are compared by the mean over tasks of their per-task differences, with a bootstrap CI over
tasks (:mod:`metagrad.app.paired`). An estimator's rank is 1 + the number of estimators it is
*resolved* worse than (the CI of the paired difference lies above 0): estimators that cannot be
told apart share a rank, and an unresolved zero never ranks above a resolved small value.
"""

from __future__ import annotations

from pathlib import Path

from metagrad.app.outputs import write_text_atomic
from metagrad.app.paired import Interval, PairedDifference, paired_difference
from metagrad.app.rows import ResultRow
from metagrad.app.suites import SUITES

__all__ = ["RANKED_METRICS", "paired_ranks", "setting_key", "settings", "write_leaderboard"]

SettingKey = tuple[tuple[str, object], ...]

# metric -> (what the table calls it); lower is better for both
RANKED_METRICS = {"bias_sq_debiased": "debiased squared bias", "mse": "MSE"}
_LEADERBOARD_RESAMPLES = 1000


def setting_key(row: ResultRow) -> SettingKey:
    """The setting of a row: bench, preset, experiment, run seed and its suite's setting fields."""
    suite = SUITES.get(row.bench)
    fields = suite.setting_fields if suite is not None else ()
    key: list[tuple[str, object]] = [
        ("bench", row.bench),
        ("preset", row.preset),
        ("experiment", row.experiment),
        ("seed", row.seed),
    ]
    key += [(f, row.get(f)) for f in fields if row.get(f) is not None]
    return tuple(key)


def settings(rows: list[ResultRow]) -> dict[SettingKey, list[ResultRow]]:
    """Rows grouped by setting; only settings scored by two or more estimators."""
    groups: dict[SettingKey, list[ResultRow]] = {}
    for row in rows:
        groups.setdefault(setting_key(row), []).append(row)
    return {k: v for k, v in groups.items() if len({_label(r) for r in v}) > 1}


def _label(row: ResultRow) -> str:
    if row.experiment == "off_policy":
        return f"{row.estimator} (replay {row.get('replay', 0)}, baseline {row.get('baseline', '?')})"
    return row.estimator


def _setting_title(key: SettingKey) -> str:
    d = dict(key)
    parts = [f"{d.pop('bench')}/{d.pop('preset')}", str(d.pop("experiment")), f"seed {d.pop('seed')}"]
    parts += [f"{k}={v}" for k, v in d.items()]
    return " · ".join(parts)


def _paired(a: ResultRow, b: ResultRow, metric: str) -> PairedDifference | None:
    """``a - b`` paired over tasks, or None where the rows carry no per-task metrics or are not
    paired (e.g. rows from before common random numbers)."""
    try:
        return paired_difference(a, b, metric, num_resamples=_LEADERBOARD_RESAMPLES)
    except ValueError:
        return None


def paired_ranks(group: list[ResultRow], metric: str) -> list[tuple[int, ResultRow, str]]:
    """``(rank, row, note)`` of the estimators of one setting in ``metric`` (lower is better),
    best first. Rank: 1 + the number of estimators resolved better (paired CI of the difference
    above 0); ties in rank are estimators the data cannot order. ``note``: the paired difference
    to the row above (``vs X: estimate [CI]``), or why there is none."""

    def mean(r: ResultRow) -> float:
        values = r.per_task.get(metric)
        return sum(values) / len(values) if values else r.value(metric)

    differences: dict[tuple[int, int], PairedDifference | None] = {}
    for i, a in enumerate(group):
        for b in group[i + 1 :]:
            differences[(id(b), id(a))] = diff = _paired(b, a, metric)
            differences[(id(a), id(b))] = None if diff is None else _negated(diff)
    worse = {
        id(a): sum(
            1 for b in group if b is not a and (d := differences[(id(a), id(b))]) and d.interval.low > 0
        )
        for a in group
    }
    ordered = sorted(group, key=lambda r: (worse[id(r)], mean(r)))
    out = []
    for i, r in enumerate(ordered):
        note = ""
        if i:
            above = ordered[i - 1]
            diff = differences[(id(r), id(above))]
            note = "no paired data" if diff is None else f"vs {_label(above)}: {diff.interval.format('.3g')}"
        out.append((1 + worse[id(r)], r, note))
    return out


def _negated(diff: PairedDifference) -> PairedDifference:
    i = diff.interval
    return PairedDifference(
        diff.metric, diff.second, diff.first, Interval(-i.estimate, -i.high, -i.low), diff.num_tasks
    )


def write_leaderboard(rows: list[ResultRow], path: str | Path) -> Path:
    """``leaderboard.md``: per setting, one table per metric ranking the estimators by paired
    comparisons, with their cost."""
    path = Path(path)
    lines = [
        "# Leaderboard: which meta-gradient estimator to trust where",
        "",
        "Every number is a distance to the exact meta-gradient. All estimators of a setting saw the",
        "same tasks, trajectories and critic noise (common random numbers), so they are compared by",
        "paired differences over tasks: the column 'paired difference' gives each estimator minus",
        "the one above it (mean over tasks, 95% bootstrap CI over tasks). Rank = 1 + the number of",
        "estimators resolved better (CI above 0): equal ranks are ties the data cannot break. Squared",
        "bias: debiased (noise of the mean removed; can be below 0 when the bias is below the noise).",
        "Cost: episodes sampled per estimate (per task or policy pair).",
        "",
    ]
    commits = sorted({r.provenance.git_commit for r in rows})
    groups = settings(rows)
    lines += [f"Rows: {len(rows)}; commit(s): {', '.join(f'`{c}`' for c in commits)}.", ""]
    if not groups:
        lines += ["No setting was scored by two or more estimators: nothing to rank.", ""]
    for key, group in groups.items():
        lines += [f"## {_setting_title(key)}", ""]
        for metric, title in RANKED_METRICS.items():
            lines += [
                f"| rank by {title} | estimator | {title} | paired difference | corr | cost |",
                "|---|---|---|---|---|---|",
            ]
            for rank, r, note in paired_ranks(group, metric):
                m = r.metrics
                value = m.bias_sq_debiased if metric == "bias_sq_debiased" else m.mse
                lines.append(
                    f"| {rank} | {_label(r)} | {value:.4g} | {note} | {m.corr:.3f} ± {m.corr_se:.3f} "
                    f"| {r.episodes_per_estimate} |"
                )
            lines.append("")
    return write_text_atomic(path, "\n".join(lines))
