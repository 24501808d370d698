"""One route for a user's estimator into the checks: a registered name, its facts, or a function."""

from __future__ import annotations

from dataclasses import dataclass

from metagrad.estimators import ESTIMATORS, Estimator, EstimatorInfo

__all__ = ["ResolvedEstimator", "resolve_estimator"]


@dataclass(frozen=True)
class ResolvedEstimator:
    """An estimator to check: its name, the function, and its registered facts (None if unregistered)."""

    name: str
    fn: Estimator
    info: EstimatorInfo | None


def resolve_estimator(estimator: str | EstimatorInfo | Estimator) -> ResolvedEstimator:
    """Accept a registered name (``"dice"``), an :class:`EstimatorInfo`, or a function.

    A function that is registered (the same object as a registry entry's ``fn``) gets that
    entry's facts; an unregistered one is checked on its own, named by its ``__name__``.
    An unknown name raises ``ValueError`` listing the registered ones.
    """
    if isinstance(estimator, str):
        info = ESTIMATORS[estimator]
        return ResolvedEstimator(info.name, info.fn, info)
    if isinstance(estimator, EstimatorInfo):
        return ResolvedEstimator(estimator.name, estimator.fn, estimator)
    if not callable(estimator):
        raise ValueError(
            f"estimator: expected a registered name, an EstimatorInfo or a function, got "
            f"{type(estimator).__name__}"
        )
    for info in ESTIMATORS.values():
        if info.fn is estimator:
            return ResolvedEstimator(info.name, info.fn, info)
    return ResolvedEstimator(getattr(estimator, "__name__", type(estimator).__name__), estimator, None)
