"""Paired comparisons between estimators scored on the same tasks and samples.

Every estimator of one setting sees the same tasks, trajectories and critic noise (common random
numbers, :mod:`metagrad.app.suite`), and every row keeps its per-task metrics (``row.per_task``,
:func:`metagrad.scoring.task_metrics`). A comparison between two estimators is then the mean over
tasks of their per-task differences, and its confidence interval a bootstrap over tasks that
resamples the *same* task indices for both: what the two share (which MDPs happen to be hard, which
trajectories happen to be unlucky) cancels, and only the difference the estimators make is left.
The same task bootstrap serves any statistic of several rows that share their tasks (the points
of a sweep, :func:`task_bootstrap`), e.g. a fitted slope with its CI.

Intervals are bias-corrected and accelerated (BCa) bootstrap intervals from
``scipy.stats.bootstrap`` (percentile where BCa is undefined), seeded from the rows compared, so
the same rows always give the same interval. The estimand is the mean over the task
distribution (random MDPs, policy pairs), so the intervals include the task-to-task variation.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from metagrad.app.rows import ResultRow

__all__ = [
    "CONFIDENCE",
    "DERIVED_TASK_METRICS",
    "NUM_RESAMPLES",
    "Interval",
    "PairedDifference",
    "check_paired",
    "has_task_values",
    "mean_interval",
    "paired_difference",
    "probability_of_improvement",
    "stable_seed",
    "stratified_improvement",
    "stratified_mean",
    "task_bootstrap",
    "task_matrix",
    "task_values",
    "unpaired_difference",
]

CONFIDENCE = 0.95
NUM_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval ``[low, high]``."""

    estimate: float
    low: float
    high: float

    @property
    def sign(self) -> int:
        """+1 when the interval lies above 0, -1 below 0, 0 when it contains 0 (unresolved)."""
        return 1 if self.low > 0 else (-1 if self.high < 0 else 0)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def format(self, spec: str = ".3g") -> str:
        """``estimate [low, high]``; an unbounded interval (fewer than 2 tasks) as ``[CI n/a]``."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"{self.estimate:{spec}} [CI n/a]"
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


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


def stable_seed(*parts: object) -> int:
    """A seed from the text of ``parts`` (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:15], 16)


def task_bootstrap(
    data: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    num_resamples: int = NUM_RESAMPLES,
    vectorized: bool = False,
    method: str = "BCa",
) -> Interval:
    """A statistic of per-task data and its bootstrap interval over tasks.

    Args:
        data: ``[N, ...]``, one row per task (e.g. ``[N, P]``: P points of a sweep or P estimators
            on the same N tasks); rows are resampled jointly, so every column sees the same tasks.
        statistic: ``[N', ...] -> float``; with ``vectorized=True`` it receives ``[B, N', ...]``
            and returns ``[B]``.
        seed: seeds the resampling (the same inputs give the same interval).
        method: ``"BCa"`` (default; falls back to percentile where BCa is undefined) or
            ``"percentile"`` (for statistics with few possible values, such as rank correlations).
    Returns:
        The statistic on ``data`` and its interval (the point itself where every resample gives
        the same value).
    """
    data = np.asarray(data, dtype=float)
    n = data.shape[0]
    estimate = float(statistic(data[None])[0] if vectorized else statistic(data))
    if n < 2:
        return Interval(estimate, -math.inf, math.inf)
    if vectorized:

        def on_indices(idx: np.ndarray, axis: int = -1) -> np.ndarray:
            idx = np.asarray(idx, dtype=int)
            flat = idx.reshape(-1, idx.shape[-1])
            return np.asarray(statistic(data[flat])).reshape(idx.shape[:-1])

    else:

        def on_indices(idx: np.ndarray) -> float:
            return float(statistic(data[np.asarray(idx, dtype=int)]))

    indices = (np.arange(n),)
    return _interval(indices, on_indices, estimate, seed, confidence, num_resamples, vectorized, method)


def _interval(
    samples: tuple[np.ndarray, ...],
    statistic: Callable[..., Any],
    estimate: float,
    seed: int,
    confidence: float,
    num_resamples: int,
    vectorized: bool,
    method: str,
) -> Interval:
    """``scipy.stats.bootstrap`` of ``statistic`` over ``samples`` (each sample resampled on its
    own), ``method`` then percentile where it is undefined; the point itself
    where every resample gives the same value, unbounded where nothing works."""
    for attempt in dict.fromkeys((method, "percentile")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                samples,
                statistic,
                n_resamples=num_resamples,
                confidence_level=confidence,
                method=attempt,
                vectorized=vectorized,
                random_state=np.random.default_rng(seed),
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return Interval(estimate, min(low, estimate), max(high, estimate))
        with np.errstate(invalid="ignore"):  # resamples where the statistic is undefined (inf, nan)
            constant = np.ptp(result.bootstrap_distribution) == 0
        if constant:
            return Interval(estimate, estimate, estimate)
    return Interval(estimate, -math.inf, math.inf)


def stratified_mean(
    strata: Sequence[np.ndarray],
    *,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    num_resamples: int = NUM_RESAMPLES,
) -> Interval:
    """The mean over strata of each stratum's mean, with a *stratified* bootstrap interval: the
    tasks of every stratum (one setting: its tasks, scored by every estimator) are resampled
    within it, so every setting keeps its weight (as rliable's stratified bootstrap resamples the
    runs of each task, Agarwal et al., NeurIPS 2021). ``strata``: one ``[N_i]`` array per stratum."""
    strata = tuple(np.asarray(s, dtype=float).reshape(-1) for s in strata)
    if not strata or any(s.size == 0 for s in strata):
        raise ValueError("stratified_mean: every stratum needs at least one value")
    estimate = float(np.mean([s.mean() for s in strata]))
    if all(s.size < 2 for s in strata):
        return Interval(estimate, -math.inf, math.inf)

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean([x.mean(axis) for x in samples], axis=0)

    return _interval(strata, statistic, estimate, seed, confidence, num_resamples, True, "percentile")


def mean_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """The mean of per-task ``values [N]`` with its Student-t interval (``scipy.stats.t``): for
    many simultaneous tests at Bonferroni-corrected levels, whose tail quantiles a bootstrap of a
    few thousand resamples cannot resolve."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if values.size < 2:
        return Interval(mean, -math.inf, math.inf)
    sem = float(stats.sem(values))
    if sem == 0:
        return Interval(mean, mean, mean)
    low, high = stats.t.interval(confidence, values.size - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high))


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


def _mean_difference(x: np.ndarray) -> np.ndarray:
    return (x[..., 0] - x[..., 1]).mean(-1)


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
    interval = task_bootstrap(
        data,
        _mean_difference,
        seed=stable_seed(first.cell_id, second.cell_id, metric),
        confidence=confidence,
        num_resamples=num_resamples,
        vectorized=True,
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
    a = np.asarray(first.per_task[metric], dtype=float)
    b = np.asarray(second.per_task[metric], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (a, b),
            lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
            n_resamples=num_resamples,
            confidence_level=confidence,
            method="BCa",
            vectorized=True,
            random_state=np.random.default_rng(
                stable_seed(first.cell_id, second.cell_id, metric, "unpaired")
            ),
        )
    ci = result.confidence_interval
    return Interval(float(a.mean() - b.mean()), float(ci.low), float(ci.high))


def _wins(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 where ``a < b``, 1/2 where equal, 0 where ``a > b`` (elementwise)."""
    return (a < b) + 0.5 * (a == b)


def _improvement(x: np.ndarray) -> np.ndarray:
    return _wins(x[..., 0], x[..., 1]).mean(-1)


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
        seed=stable_seed(first.cell_id, second.cell_id, metric, "improvement"),
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
        per_stratum.append(_wins(data[:, :1], data[:, 1:]).mean(-1))
    seed = stable_seed(metric, *(r.cell_id for row, ops in strata for r in (row, *ops)))
    return stratified_mean(per_stratum, seed=seed, confidence=confidence, num_resamples=num_resamples)
