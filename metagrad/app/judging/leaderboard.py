"""The leaderboard, built from result rows: an overview (which estimator for which stage), then
for every setting the estimators ranked by paired comparisons on the same tasks and samples.

A *setting* is what a suite declares in ``Suite.setting_fields`` (with bench, preset, experiment
and run seed): everything about a cell that is not the estimator itself. Every estimator of a
setting saw the same tasks, trajectories and critic noise (common random numbers), so two of
them are compared by the mean over tasks of their per-task differences, with a bootstrap CI over
tasks (:mod:`metagrad.app.judging.paired`). An estimator's rank is 1 + the number of estimators it is
*resolved* worse than (the CI of the paired difference lies above 0): estimators that cannot be
told apart share a rank (the table says so), and within a shared rank the estimator with the
smaller upper CI end comes first, so an unresolved zero never ranks above a resolved small value.

The overview pools settings by the stage an estimator is used in (a three-letter combination
with one sampled stage: ``lee`` the inner loop, ``ele`` the Hessian, ``eel`` the outer gradient)
and over every setting: per estimator, the probability that it has the lower per-task metric than
the other estimators of the same setting (ties 1/2), averaged over settings, with a stratified
bootstrap CI over the tasks of each setting (:func:`metagrad.app.judging.paired.stratified_improvement`,
in the manner of rliable's probability of improvement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metagrad.app.judging.paired import (
    PairedDifference,
    has_task_values,
    paired_difference,
    stratified_improvement,
    task_values,
)
from metagrad.app.judging.statistics import Interval, standard_error, task_bootstrap
from metagrad.app.presenting.outputs import write_text_atomic
from metagrad.app.presenting.tables import format_number, plus_minus
from metagrad.app.running.rows import ResultRow
from metagrad.app.suites import SUITES

__all__ = [
    "RANKED_METRICS",
    "STAGE_SCOPES",
    "ScopeEntry",
    "overview",
    "overview_lines",
    "paired_ranks",
    "setting_key",
    "settings",
    "write_leaderboard",
]

SettingKey = tuple[tuple[str, object], ...]

# metric -> what the tables call it; lower is better for every one
RANKED_METRICS = {
    "bias_sq_debiased": "debiased squared bias",
    "mse": "MSE",
    "mse_x_episodes": "MSE x episodes",
}
# the overview's scopes: title -> the combination whose only sampled stage it is (None: every setting)
STAGE_SCOPES: dict[str, str | None] = {
    "Inner stage (only the inner loop sampled: lee)": "lee",
    "Hessian stage (only the Hessian sampled: ele)": "ele",
    "Outer stage (only the outer gradient sampled: eel)": "eel",
    "Whole suite (every setting with two or more estimators)": None,
}
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


def _groups(rows: list[ResultRow]) -> dict[SettingKey, list[ResultRow]]:
    groups: dict[SettingKey, list[ResultRow]] = {}
    for row in rows:
        groups.setdefault(setting_key(row), []).append(row)
    return groups


def settings(rows: list[ResultRow]) -> dict[SettingKey, list[ResultRow]]:
    """Rows grouped by setting; only settings scored by two or more estimators."""
    return {k: v for k, v in _groups(rows).items() if len({_label(r) for r in v}) > 1}


def _label(row: ResultRow) -> str:
    if row.experiment == "off_policy":
        return f"{row.estimator} (replay {row.get('replay', 0)}, baseline {row.get('baseline', '?')})"
    return row.estimator


def _setting_title(key: SettingKey) -> str:
    d = dict(key)
    parts = [f"{d.pop('bench')}/{d.pop('preset')}", str(d.pop("experiment")), f"seed {d.pop('seed')}"]
    parts += [f"{k}={v}" for k, v in d.items() if not (k.startswith("n_") and v == 0)]
    return " · ".join(parts)


def _paired(a: ResultRow, b: ResultRow, metric: str) -> PairedDifference | None:
    """``a - b`` paired over tasks, or None where the rows carry no per-task metrics or are not
    paired (e.g. rows from before common random numbers)."""
    try:
        return paired_difference(a, b, metric, num_resamples=_LEADERBOARD_RESAMPLES)
    except ValueError:
        return None


def _mean_ci(row: ResultRow, metric: str) -> Interval:
    """The mean over tasks of ``row``'s per-task ``metric`` with its bootstrap CI over tasks (the
    row's own aggregate, without CI, for rows without per-task metrics)."""
    if not has_task_values(row, metric):
        value = row.mse_x_episodes if metric == "mse_x_episodes" else float(row.value(metric))
        return Interval(value, -math.inf, math.inf)
    return task_bootstrap(
        task_values(row, metric),
        lambda x: np.mean(x, axis=-1),
        seed=0,
        num_resamples=_LEADERBOARD_RESAMPLES,
        vectorized=True,
    )


def paired_ranks(group: list[ResultRow], metric: str) -> list[tuple[int, ResultRow, str]]:
    """``(rank, row, note)`` of the estimators of one setting in ``metric`` (lower is better),
    best first. Rank: 1 + the number of estimators resolved better (paired CI of the difference
    above 0); ties in rank are estimators the data cannot order, listed by the upper end of their
    CI (so an unresolved zero with a wide CI comes after a resolved small value). ``note``: the
    paired difference to the row above (``vs X: estimate [CI]``), or why there is none."""
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
    cis = {id(r): _mean_ci(r, metric) for r in group}

    def order(r: ResultRow) -> tuple[int, float, float]:
        ci = cis[id(r)]
        high = ci.high if math.isfinite(ci.high) else ci.estimate
        return (worse[id(r)], high, ci.estimate)

    ordered = sorted(group, key=order)
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


def _ties(ranked: list[tuple[int, str]]) -> str:
    """One sentence naming the estimators that share a rank (or saying that none do)."""
    by_rank: dict[int, list[str]] = {}
    for rank, name in ranked:
        by_rank.setdefault(rank, []).append(name)
    shared = [f"{', '.join(names)} (rank {rank})" for rank, names in by_rank.items() if len(names) > 1]
    if not shared:
        return "Ties: none; every estimator has its own rank."
    return "Ties (the data cannot order them): " + "; ".join(shared) + "."


def _interval_text(ci: Interval, spec: str = ".3g") -> str:
    if not math.isfinite(ci.estimate):
        return "n/a"
    return ci.format(spec)


def _setting_tables(group: list[ResultRow]) -> list[str]:
    """One ranked table per metric (each table one ranking) with a line naming its ties; the
    cost-aware table only where the estimators' costs differ."""
    lines: list[str] = []
    metrics = ["bias_sq_debiased", "mse"]
    if len({r.episodes_per_estimate for r in group}) > 1:
        metrics.append("mse_x_episodes")
    for metric in metrics:
        title = RANKED_METRICS[metric]
        ranked = paired_ranks(group, metric)
        extra = (
            "corr ± s.e." if metric == "bias_sq_debiased" else "MSE x episodes ± s.e. | episodes per estimate"
        )
        head = (
            f"| rank by {title} | estimator | {title}, mean over tasks [95% CI] | paired difference "
            f"| {extra} |"
        )
        lines += [head, "|---" * head.count(" | ") + "|---|"]
        for rank, r, note in ranked:
            m = r.metrics
            if metric == "bias_sq_debiased":
                cols = plus_minus(m.corr, m.corr_se, ".3f")
            else:
                cost = plus_minus(r.mse_x_episodes, r.mse_x_episodes_se)
                cols = f"{cost} | {format_number(r.episodes_per_estimate)}"
            lines.append(
                f"| {rank} | {_label(r)} | {_interval_text(_mean_ci(r, metric))} | {note} | {cols} |"
            )
        lines += ["", _ties([(rank, _label(r)) for rank, r, _ in ranked]), ""]
    return lines


@dataclass(frozen=True)
class ScopeEntry:
    """One estimator of an overview scope: its probability of the lower metric than the other
    estimators of its settings (per metric), its rank by the first metric, its settings and cost."""

    estimator: str
    rank: int
    improvement: dict[str, Interval]
    settings: int
    episodes: float
    mse_x_episodes: float
    mse_x_episodes_se: float


def _in_scope(key: SettingKey, combination: str | None) -> bool:
    return combination is None or dict(key).get("combination") == combination


def overview(
    rows: list[ResultRow], combination: str | None, metrics: tuple[str, ...] = ("bias_sq_debiased", "mse")
) -> list[ScopeEntry]:
    """The estimators of the settings of one scope (``combination``: only settings with that
    combination; None: every setting), ranked by the probability of the lower ``metrics[0]``.

    Per estimator and metric: :func:`~metagrad.app.judging.paired.stratified_improvement` against the
    other estimators of each setting it was scored in. Rank: 1 + the number of estimators whose
    pooled pairwise probability of the lower ``metrics[0]`` than it has its CI above 1/2 (resolved
    better); equal ranks are ties. Cost: mean episodes per estimate over its settings, and the mean
    MSE x episodes with the s.e. of that mean (over its settings). Rows without per-task metrics or
    a pairing key are left out."""
    groups = []
    for key, group in settings(rows).items():
        paired = [r for r in group if all(has_task_values(r, m) for m in metrics) and r.cell.get("pairing")]
        if _in_scope(key, combination) and len({_label(r) for r in paired}) > 1:
            groups.append({_label(r): r for r in paired})
    names = sorted({name for g in groups for name in g})
    primary = metrics[0]

    def pooled(name: str, against: list[str], metric: str) -> Interval | None:
        strata = [
            (g[name], [g[o] for o in against if o in g])
            for g in groups
            if name in g and set(against) & set(g)
        ]
        strata = [(row, ops) for row, ops in strata if ops]
        if not strata:
            return None
        return stratified_improvement(strata, metric, num_resamples=_LEADERBOARD_RESAMPLES)

    entries = []
    for name in names:
        others = [o for o in names if o != name]
        beaten_by = sum(1 for o in others if (p := pooled(o, [name], primary)) is not None and p.low > 0.5)
        improvement = {m: pooled(name, others, m) for m in metrics}
        mine = [g[name] for g in groups if name in g]
        cost = np.array([r.mse_x_episodes for r in mine], dtype=float)
        entries.append(
            ScopeEntry(
                name,
                1 + beaten_by,
                {m: i for m, i in improvement.items() if i is not None},
                len(mine),
                float(np.mean([r.episodes_per_estimate for r in mine])),
                float(cost.mean()),
                float(standard_error(cost)) if cost.size > 1 else math.nan,
            )
        )
    return sorted(entries, key=lambda e: (e.rank, -e.improvement.get(primary, Interval(0, 0, 0)).estimate))


def _overview_table(entries: list[ScopeEntry], metrics: tuple[str, ...]) -> list[str]:
    names = [f"P(lower {RANKED_METRICS[m]}) vs others [95% CI]" for m in metrics]
    head = (
        f"| rank by P(lower {RANKED_METRICS[metrics[0]]}) | estimator | "
        + " | ".join(names)
        + " | settings | episodes per estimate | MSE x episodes ± s.e. |"
    )
    lines = [head, "|---" * (head.count(" | ") + 1) + "|"]
    for e in entries:
        cells = [_interval_text(e.improvement[m], ".2f") if m in e.improvement else "n/a" for m in metrics]
        lines.append(
            f"| {e.rank} | {e.estimator} | " + " | ".join(cells) + f" | {e.settings} | "
            f"{format_number(e.episodes)} | {plus_minus(e.mse_x_episodes, e.mse_x_episodes_se)} |"
        )
    return [*lines, "", _ties([(e.rank, e.estimator) for e in entries]), ""]


def overview_lines(rows: list[ResultRow]) -> list[str]:
    """The overview section of ``leaderboard.md`` (also the first table of the report)."""
    lines = [
        "## Overview: which estimator for which stage",
        "",
        "Per scope, each estimator's probability of a *lower* per-task value than the other estimators "
        "of the same setting (same tasks and samples; ties count 1/2), averaged over the settings it was "
        "scored in, with a 95% stratified bootstrap CI (tasks resampled within each setting). 0.5 = no "
        "better than the others. Rank = 1 + the number of estimators resolved better (their pooled "
        "pairwise probability of the lower debiased squared bias has its CI above 0.5); equal ranks are "
        "ties. Cost: expected episodes per estimate and MSE x episodes (mean over its settings ± s.e.); "
        "the cost-aware ranking by P(lower MSE x episodes) closes the overview.",
        "",
    ]
    metrics = ("bias_sq_debiased", "mse")
    for title, combination in STAGE_SCOPES.items():
        entries = overview(rows, combination, metrics)
        lines += [f"### {title}", ""]
        if len(entries) < 2:
            lines += [
                "Fewer than two estimators with paired per-task rows in this scope: nothing to rank.",
                "",
            ]
            continue
        lines += _overview_table(entries, metrics)
    cost_aware = overview(rows, None, ("mse_x_episodes", "mse"))
    if len(cost_aware) >= 2:
        lines += ["### Whole suite, cost-aware (ranked by P(lower MSE x episodes))", ""]
        lines += _overview_table(cost_aware, ("mse_x_episodes", "mse"))
    return lines


def write_leaderboard(rows: list[ResultRow], path: str | Path, overview: list[str] | None = None) -> Path:
    """``leaderboard.md``: the overview (``overview``: its lines from :func:`overview_lines`,
    default computed), then per setting one table per metric ranking the estimators by paired
    comparisons (ties stated), then the settings with a single estimator."""
    path = Path(path)
    commits = sorted({r.provenance.git_commit for r in rows})
    lines = [
        "# Leaderboard: which meta-gradient estimator to trust where",
        "",
        f"Rows: {len(rows)}; commit(s): {', '.join(f'`{c}`' for c in commits) or 'none'}.",
        "",
        "Every number is a distance to the exact meta-gradient (or the suite's stated reference). All "
        "estimators of a setting saw the same tasks, trajectories and critic noise (common random "
        "numbers), so they are compared by paired differences over tasks.",
        "",
    ]
    lines += overview_lines(rows) if overview is None else overview
    groups = _groups(rows)
    ranked = {k: g for k, g in groups.items() if len({_label(r) for r in g}) > 1}
    single = {k: g for k, g in groups.items() if k not in ranked}
    lines += [
        "## Per setting",
        "",
        "One ranking per table. 'paired difference': the estimator minus the one above it (mean over "
        "tasks, 95% bootstrap CI over tasks). Rank = 1 + the number of estimators resolved better (CI "
        "of the difference above 0); within a shared rank, estimators are listed by the upper end of "
        "their CI. Squared bias: debiased (noise of the mean removed; below 0 when the bias is below "
        "the noise). Episodes: sampled per estimate (per task or policy pair).",
        "",
    ]
    if not ranked:
        lines += ["No setting was scored by two or more estimators: nothing to rank.", ""]
    for key, group in ranked.items():
        lines += [f"### {_setting_title(key)}", "", *_setting_tables(group)]
    if single:
        lines += ["## Settings with one estimator: nothing to rank", ""]
        lines += [
            f"- {_setting_title(k)}: only {', '.join(dict.fromkeys(_label(r) for r in g))}"
            for k, g in single.items()
        ]
        lines.append("")
    return write_text_atomic(path, "\n".join(lines))
