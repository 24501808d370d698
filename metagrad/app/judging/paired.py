"""Paired comparisons between estimators scored on the same tasks and samples.

Every estimator of one setting sees the same tasks, trajectories and critic noise (common random
numbers, :mod:`metagrad.app.suite`), and every row keeps its per-task metrics (``row.per_task``,
:func:`metagrad.scoring.task_metrics`). A comparison between two estimators is then the mean over
tasks of their per-task differences, and its confidence interval a bootstrap over tasks that
resamples the *same* task indices for both: what the two share (which MDPs happen to be hard, which
trajectories happen to be unlucky) cancels, and only the difference the estimators make is left.

This module reads rows (per-task values, pairing checks) and hands the numbers to
:mod:`metagrad.app.judging.statistics` (BCa bootstrap intervals from ``scipy.stats.bootstrap``,
percentile where BCa is undefined), seeded from the rows compared (:func:`metagrad.seeding.stable_hash`),
so the same rows always give the same interval. The estimand is the mean over the task
distribution (random MDPs, policy pairs), so the intervals include the task-to-task variation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from metagrad.app.judging.statistics import (
    CONFIDENCE,
    NUM_RESAMPLES,
    Interval,
    independent_difference,
    mean_se,
    paired_mean_difference,
    stratified_mean,
    task_bootstrap,
    wins,
)
from metagrad.app.running.rows import ResultRow
from metagrad.seeding import stable_hash

__all__ = [
    "DERIVED_TASK_METRICS",
    "PairedDifference",
    "check_paired",
    "has_task_values",
    "paired_difference",
    "probability_of_improvement",
    "stratified_improvement",
    "task_matrix",
    "task_mean",
    "task_values",
    "unpaired_difference",
]


@dataclass(frozen=True)
class PairedDifference:
    """``first - second`` in ``metric``, mean over tasks, with its task-bootstrap interval."""

    metric: str
    first: str
    second: str
    interval: Interval
    num_tasks: int

    def format(self, spec: str = ".3g") -> str:
        return f"{self.first} - {self.second}: {self.interval.format(spec)}"


# Per-task metrics derived from the stored ones: name -> (stored metric, row -> factor)
DERIVED_TASK_METRICS: dict[str, tuple[str, Callable[[ResultRow], float]]] = {
    "mse_x_episodes": ("mse", lambda r: float(r.episodes_per_estimate)),
}


def has_task_values(row: ResultRow, metric: str) -> bool:
    """Whether :func:`task_values` can give ``metric`` for ``row``."""
    return DERIVED_TASK_METRICS.get(metric, (metric,))[0] in row.per_task


def task_values(row: ResultRow, metric: str) -> np.ndarray:
    """``[N]``: ``row``'s per-task ``metric``, stored (``mse``, ``bias_sq_debiased``, ...) or
    derived (``mse_x_episodes``: the per-task MSE times the expected episodes per estimate, the
    cost-aware comparison)."""
    if not has_task_values(row, metric):
        raise ValueError(f"row {row.label}: no per-task {metric!r} (rows from before per-task metrics)")
    stored, factor = DERIVED_TASK_METRICS.get(metric, (metric, lambda r: 1.0))
    return np.asarray(row.per_task[stored], dtype=float) * factor(row)


def task_mean(row: ResultRow, metric: str) -> tuple[float, float]:
    """The mean over tasks of ``row``'s per-task ``metric`` and its standard error (0 for one
    task; NaN for both where the row lacks the metric)."""
    if metric not in row.per_task:
        return math.nan, math.nan
    mean, se = mean_se(row.per_task[metric])
    return mean, se if len(row.per_task[metric]) > 1 else 0.0


def check_paired(rows: Sequence[ResultRow], metric: str) -> None:
    """Raise ``ValueError`` unless every row has ``metric`` per task and all share one pairing
    key (same tasks, same random numbers)."""
    pairings = {r.cell.get("pairing") for r in rows}
    if len(pairings) != 1 or None in pairings:
        raise ValueError(
            "rows are not paired (different settings or no pairing key): "
            + ", ".join(f"{r.label} {r.cell.get('pairing')}" for r in rows)
        )
    for r in rows:
        task_values(r, metric)


def task_matrix(rows: Sequence[ResultRow], metric: str) -> np.ndarray:
    """``[N, len(rows)]``: the per-task ``metric`` of rows scored on the same tasks (checked by
    the number of tasks and the run config; the rows may be different settings, e.g. the points
    of a sweep)."""
    if not rows:
        raise ValueError("task_matrix: no rows")
    values = [task_values(r, metric) for r in rows]
    sizes = {v.size for v in values}
    seeds = {r.seed for r in rows}
    if len(sizes) != 1 or len(seeds) != 1:
        raise ValueError(f"rows are not on the same tasks (tasks {sorted(sizes)}, seeds {sorted(seeds)})")
    return np.array(values, dtype=float).T


def paired_difference(
    first: ResultRow,
    second: ResultRow,
    metric: str = "bias_sq_debiased",
    *,
    confidence: float = CONFIDENCE,
    num_resamples: int = NUM_RESAMPLES,
) -> PairedDifference:
    """``first - second`` in a per-task ``metric`` (default the debiased squared bias; ``mse``,
    ``variance``, ``corr``, ...), mean over tasks, with a bootstrap interval over tasks that
    resamples the same tasks for both. The rows must be paired (:func:`check_paired`)."""
    check_paired([first, second], metric)
    data = task_matrix([first, second], metric)
    interval = paired_mean_difference(
        data,
        seed=stable_hash(first.cell_id, second.cell_id, metric),
        confidence=confidence,
        num_resamples=num_resamples,
    )
    return PairedDifference(metric, first.estimator, second.estimator, interval, data.shape[0])


def unpaired_difference(
    first: ResultRow,
    second: ResultRow,
    metric: str = "bias_sq_debiased",
    *,
    confidence: float = CONFIDENCE,
    num_resamples: int = NUM_RESAMPLES,
) -> Interval:
    """The same difference with the two rows' tasks resampled independently (what a comparison
    that ignores the pairing reports); for contrast with :func:`paired_difference`."""
    return independent_difference(
        np.asarray(first.per_task[metric], dtype=float),
        np.asarray(second.per_task[metric], dtype=float),
        seed=stable_hash(first.cell_id, second.cell_id, metric, "unpaired"),
        confidence=confidence,
        num_resamples=num_resamples,
    )


def _improvement(x: np.ndarray) -> np.ndarray:
    return wins(x[..., 0], x[..., 1]).mean(-1)


def probability_of_improvement(
    first: ResultRow,
    second: ResultRow,
    metric: str = "mse",
    *,
    confidence: float = CONFIDENCE,
    num_resamples: int = NUM_RESAMPLES,
) -> Interval:
    """The probability that ``first`` has the *lower* per-task ``metric`` than ``second`` on a
    task drawn from the tasks scored (ties count 1/2), with its bootstrap interval over tasks
    (in the manner of rliable's probability of improvement, Agarwal et al., NeurIPS 2021; here one
    score per task, both estimators on the same samples)."""
    check_paired([first, second], metric)
    return task_bootstrap(
        task_matrix([first, second], metric),
        _improvement,
        seed=stable_hash(first.cell_id, second.cell_id, metric, "improvement"),
        confidence=confidence,
        num_resamples=num_resamples,
        vectorized=True,
    )


def stratified_improvement(
    strata: Sequence[tuple[ResultRow, Sequence[ResultRow]]],
    metric: str = "mse",
    *,
    confidence: float = CONFIDENCE,
    num_resamples: int = NUM_RESAMPLES,
) -> Interval:
    """The probability that an estimator has the lower per-task ``metric`` than its opponents,
    over several settings: per setting (stratum) one ``(row, opponents)`` of paired rows; per
    task, the share of opponents it beats (ties 1/2); the mean over tasks, then over settings
    (each setting weighs the same), with a stratified bootstrap interval over the tasks of each
    setting (:func:`stratified_mean`). One opponent per setting gives the pairwise
    :func:`probability_of_improvement` pooled over settings."""
    if not strata:
        raise ValueError("stratified_improvement: no settings")
    per_stratum = []
    for row, opponents in strata:
        if not opponents:
            raise ValueError(f"stratified_improvement: no opponents for {row.label}")
        check_paired([row, *opponents], metric)
        data = task_matrix([row, *opponents], metric)
        per_stratum.append(wins(data[:, :1], data[:, 1:]).mean(-1))
    seed = stable_hash(metric, *(r.cell_id for row, ops in strata for r in (row, *ops)))
    return stratified_mean(per_stratum, seed=seed, confidence=confidence, num_resamples=num_resamples)
