"""The one statistics module of the application: intervals, Student-t intervals, bootstraps,
paired differences and the statistics of curves.

Everything that turns numbers into an estimate with an interval lives here; the leaderboard,
the claims, the suites' summaries, the comparisons and the figures call these functions and
compute no interval of their own.

* :class:`Interval`: a point estimate with its confidence interval.
* Standard errors and Student-t intervals: :func:`mean_se`, :func:`standard_error`,
  :func:`t_quantile` (two-sided, Bonferroni over ``comparisons``), :func:`mean_interval` (the
  mean of per-task values), :func:`t_intervals` (per-component intervals of ``[n, D]``
  samples), :func:`mean_t_half_width` (a mean over seeds and its half-width).
* Bootstraps: :func:`task_bootstrap` (any statistic of per-task data, rows resampled jointly,
  ``scipy.stats.bootstrap``: bias-corrected and accelerated (BCa), percentile where BCa is
  undefined), :func:`stratified_mean` (strata resampled separately, as rliable's stratified
  bootstrap, Agarwal et al., NeurIPS 2021), :func:`independent_difference` (two samples resampled
  independently), :func:`block_bootstrap` (resampled rows of torch tensors, bias-corrected
  percentile interval).
* Blocks of consecutive estimates: :func:`block_means`, :func:`lag1_autocorrelation`.
* Paired differences: :func:`paired_mean_difference` (the mean over tasks of ``first - second``
  with the same tasks resampled for both), :func:`wins` (the probability-of-improvement kernel).
* Curves (the points of a sweep on the same tasks): :func:`power_law_exponent` (weighted least
  squares in linear space), :func:`exponent_interval`, :func:`task_spearman_interval` (the
  typical task's rank correlation), :func:`decline_at_the_end` (one-sided Wilcoxon tests).

Every bootstrap is seeded by its caller (the same inputs give the same interval).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import stats

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "NUM_RESAMPLES",
    "Interval",
    "block_bootstrap",
    "block_means",
    "bootstrap_interval",
    "decline_at_the_end",
    "exponent_interval",
    "independent_difference",
    "lag1_autocorrelation",
    "mean_interval",
    "mean_se",
    "mean_t_half_width",
    "paired_mean_difference",
    "point_weights",
    "power_law_exponent",
    "standard_error",
    "stratified_mean",
    "t_intervals",
    "t_quantile",
    "task_bootstrap",
    "task_spearman_interval",
    "wins",
]

CONFIDENCE = 0.95
ALPHA = 0.05  # 1 - CONFIDENCE, written out (``1 - 0.95`` is not exactly 0.05 in floating point)
NUM_RESAMPLES = 2000

# the exponents searched by the power-law fit (squared biases vary by at most ~10 decades here)
_EXPONENTS = np.linspace(-8.0, 8.0, 1601)


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


# --------------------------------------------------------------------------------------------
# Standard errors and Student-t intervals
# --------------------------------------------------------------------------------------------


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (nan s.e. for fewer than two values)."""
    v = np.asarray(list(values), dtype=float)
    if v.size < 2:
        return float(v.mean()) if v.size else float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))


def standard_error(x: Any, axis: int = 0) -> Any:
    """The standard error of the mean along ``axis`` (sample standard deviation / sqrt(n)) of a
    numpy array or a torch tensor, in the same type."""
    if isinstance(x, torch.Tensor):
        return x.std(axis) / math.sqrt(x.shape[axis])
    x = np.asarray(x, dtype=float)
    return x.std(axis, ddof=1) / math.sqrt(x.shape[axis])


def t_quantile(df: int, *, alpha: float = ALPHA, comparisons: int = 1) -> float:
    """The two-sided Student-t quantile with ``df`` degrees of freedom at the family-wise level
    ``1 - alpha`` over ``comparisons`` simultaneous intervals (Bonferroni)."""
    return float(stats.t.ppf(1 - alpha / (2 * comparisons), df))


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


def t_intervals(
    samples: torch.Tensor, *, alpha: float = ALPHA
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Per-component Student-t intervals of ``samples [n, D]`` (e.g. block means), family-wise
    at level ``1 - alpha`` over the D components (Bonferroni): ``(mean [D], low [D], high [D],
    t quantile)``."""
    n, D = samples.shape
    mean = samples.mean(0)
    se = standard_error(samples)
    t = t_quantile(n - 1, alpha=alpha, comparisons=D)
    return mean, mean - t * se, mean + t * se, t


def mean_t_half_width(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """The mean of ``values`` (nan values ignored, e.g. runs that finished no game) and the
    half-width of its Student-t ``confidence`` interval (nan for fewer than two values); returns
    ``(mean, half_width, n)``."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    if v.size < 2:
        return float(v.mean()), float("nan"), 1
    half = t_quantile(v.size - 1, alpha=1 - confidence) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(half), int(v.size)


# --------------------------------------------------------------------------------------------
# Bootstraps
# --------------------------------------------------------------------------------------------


def bootstrap_interval(
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


def task_bootstrap(
    data: np.ndarray,
    statistic: Callable[[np.ndarray], Any],
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
    on_indices: Callable[..., Any]
    if vectorized:

        def on_indices(idx: np.ndarray, axis: int = -1) -> np.ndarray:
            idx = np.asarray(idx, dtype=int)
            flat = idx.reshape(-1, idx.shape[-1])
            return np.asarray(statistic(data[flat])).reshape(idx.shape[:-1])

    else:

        def on_indices(idx: np.ndarray) -> float:
            return float(statistic(data[np.asarray(idx, dtype=int)]))

    indices = (np.arange(n),)
    return bootstrap_interval(
        indices, on_indices, estimate, seed, confidence, num_resamples, vectorized, method
    )


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

    return bootstrap_interval(
        strata, statistic, estimate, seed, confidence, num_resamples, True, "percentile"
    )


def independent_difference(
    first: np.ndarray,
    second: np.ndarray,
    *,
    seed: int,
    confidence: float = CONFIDENCE,
    num_resamples: int = NUM_RESAMPLES,
) -> Interval:
    """``mean(first) - mean(second)`` with a BCa bootstrap interval that resamples the two
    samples independently (what a comparison that ignores a pairing reports)."""
    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (a, b),
            lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
            n_resamples=num_resamples,
            confidence_level=confidence,
            method="BCa",
            vectorized=True,
            random_state=np.random.default_rng(seed),
        )
    ci = result.confidence_interval
    return Interval(float(a.mean() - b.mean()), float(ci.low), float(ci.high))


def block_bootstrap(
    statistic: Callable[..., torch.Tensor],
    *samples: torch.Tensor,
    seed: int,
    num_resamples: int = NUM_RESAMPLES,
    alpha: float = ALPHA,
) -> Interval:
    """``statistic(*samples)`` (``[n, ...] -> []``, also ``[B, n, ...] -> [B]``) with a
    bias-corrected percentile bootstrap interval at level ``1 - alpha``: the rows (e.g. block
    means of consecutive estimates) resampled jointly across ``samples``, the bootstrap
    distribution shifted so that its mean is the estimate."""
    n = samples[0].shape[0]
    value = statistic(*samples)
    idx = torch.randint(0, n, (num_resamples, n), generator=torch.Generator().manual_seed(seed))
    boot = statistic(*(s[idx] for s in samples))
    boot = boot - (boot.mean() - value)
    quantiles = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=boot.dtype)
    low, high = torch.quantile(boot, quantiles).tolist()
    return Interval(float(value), low, high)


def block_means(samples: torch.Tensor, block: int) -> torch.Tensor:
    """Means of consecutive blocks of ``block`` rows: ``[R, D] -> [R // block, D]`` (a last
    incomplete block is dropped): the resampling unit of estimates that share continuing games."""
    R, D = samples.shape
    return samples[: R - R % block].reshape(R // block, block, D).mean(1)


def lag1_autocorrelation(samples: torch.Tensor) -> list[float]:
    """The lag-1 autocorrelation of each column of ``samples [R, D]`` (consecutive estimates)."""
    x = samples - samples.mean(0)
    denom = (x**2).sum(0).clamp_min(1e-300)
    return ((x[1:] * x[:-1]).sum(0) / denom).tolist()


# --------------------------------------------------------------------------------------------
# Paired differences
# --------------------------------------------------------------------------------------------


def _mean_difference(x: np.ndarray) -> np.ndarray:
    return (x[..., 0] - x[..., 1]).mean(-1)


def paired_mean_difference(
    data: np.ndarray,
    *,
    seed: int,
    confidence: float = CONFIDENCE,
    num_resamples: int = NUM_RESAMPLES,
) -> Interval:
    """The mean over tasks of ``data[:, 0] - data[:, 1]`` (``data [N, 2]``: two estimators'
    per-task values on the same tasks) with a bootstrap interval that resamples the *same* tasks
    for both, so that what they share cancels."""
    return task_bootstrap(
        data,
        _mean_difference,
        seed=seed,
        confidence=confidence,
        num_resamples=num_resamples,
        vectorized=True,
    )


def wins(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 where ``a < b``, 1/2 where equal, 0 where ``a > b`` (elementwise): the kernel of the
    probability of improvement."""
    return (a < b) + 0.5 * (a == b)


# --------------------------------------------------------------------------------------------
# Statistics of curves (the points of a sweep, on the same tasks)
# --------------------------------------------------------------------------------------------


def point_weights(matrix: np.ndarray) -> np.ndarray:
    """Inverse squared standard errors of the task means ``[P]`` of ``matrix [N, P]`` (floored
    at 1e-3 of the largest standard error, so an exact point does not take all the weight)."""
    n = matrix.shape[0]
    se = standard_error(matrix) if n > 1 else np.ones(matrix.shape[1])
    floor = max(float(se.max()) * 1e-3, 1e-300)
    return 1.0 / np.maximum(se, floor) ** 2


def power_law_exponent(x: ArrayLike, y: ArrayLike, weights: ArrayLike | None = None) -> Any:
    """The exponent ``s`` of ``y ~ A x^s`` (``A >= 0``) by weighted least squares in linear space.

    Args:
        x: ``[P]`` positive abscissae.
        y: ``[P]`` or ``[B, P]`` (B curves at once); zero and negative values are kept (they pull
            the fit towards 0 rather than being dropped).
        weights: ``[P]`` (default 1).
    Returns:
        ``[]`` or ``[B]`` exponents; NaN where no ``A > 0`` fits better than ``A = 0`` (no
        positive signal at all). For each exponent on a fine grid the best ``A`` is closed-form;
        the grid minimum is refined by a parabola through its neighbours.
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    w = np.ones_like(xs) if weights is None else np.asarray(weights, dtype=float)
    squeeze = ys.ndim == 1
    ys = np.atleast_2d(ys)
    f = xs[None, :] ** _EXPONENTS[:, None]  # [G, P]
    cross = (ys * w) @ f.T  # [B, G]: sum_p w y f
    norm = (w * f**2).sum(1)  # [G]
    gain = np.maximum(cross, 0.0) ** 2 / norm  # the drop of the weighted SSR at the best A >= 0
    best = gain.argmax(1)
    out = _EXPONENTS[best].copy()
    inner = (best > 0) & (best < len(_EXPONENTS) - 1)
    rows = np.nonzero(inner)[0]
    g0, g1, g2 = (gain[rows, best[rows] + d] for d in (-1, 0, 1))
    curvature = g0 - 2 * g1 + g2
    step = _EXPONENTS[1] - _EXPONENTS[0]
    shift = np.where(curvature < 0, 0.5 * (g0 - g2) / np.where(curvature < 0, curvature, 1.0), 0.0)
    out[rows] += step * np.clip(shift, -0.5, 0.5)
    out[gain.max(1) <= 0] = np.nan
    return out[0] if squeeze else out


def exponent_interval(
    x: ArrayLike, matrix: np.ndarray, *, seed: int, confidence: float = CONFIDENCE
) -> Interval:
    """:func:`power_law_exponent` of the curve of task means with its task-bootstrap interval
    (resamples without a positive signal count as an exponent of -inf, no decay resolvable)."""
    weights = point_weights(matrix)

    def statistic(m: np.ndarray) -> np.ndarray:
        s = power_law_exponent(x, m.mean(-2), weights)
        return np.where(np.isnan(s), -np.inf, s)

    return task_bootstrap(matrix, statistic, seed=seed, confidence=confidence, vectorized=True)


def task_spearman_interval(
    x: ArrayLike, matrix: np.ndarray, *, seed: int, confidence: float = CONFIDENCE
) -> Interval:
    """The mean over tasks of each task's Spearman correlation (tie-averaged ranks,
    ``scipy.stats.rankdata``) between ``x`` and its own values, with its task-bootstrap interval:
    the trend of the typical task, bounded in [-1, 1], so a few tasks with huge values (the heavy
    tail of meta-gradient biases) cannot swing it."""
    rx = stats.rankdata(np.asarray(x, dtype=float))
    if np.ptp(rx) == 0:  # one value of x: no trend to test
        return Interval(math.nan, -math.inf, math.inf)
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
    ry = stats.rankdata(matrix, axis=-1)
    ry = ry - ry.mean(-1, keepdims=True)
    norm = np.linalg.norm(ry, axis=-1)
    per_task = np.where(norm > 0, (ry @ rx) / np.where(norm > 0, norm, 1.0), 0.0)
    return task_bootstrap(per_task, lambda r: r.mean(-1), seed=seed, confidence=confidence, vectorized=True)


def decline_at_the_end(matrix: np.ndarray) -> tuple[int, float]:
    """Whether the last point of per-task curves ``[N, P]`` lies below an earlier one: for each
    earlier point j, the one-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) of the
    per-task values at the last point being lower than at j; returns the j with the smallest
    p-value and that p-value Bonferroni-adjusted over the P - 1 comparisons."""
    k = matrix.shape[1] - 1
    if k < 1 or matrix.shape[0] < 2:
        return 0, 1.0
    pvalues = []
    for j in range(k):
        diff = matrix[:, k] - matrix[:, j]
        pvalues.append(1.0 if np.all(diff == 0) else float(stats.wilcoxon(diff, alternative="less").pvalue))
    j = int(np.argmin(pvalues))
    return j, min(1.0, pvalues[j] * k)
