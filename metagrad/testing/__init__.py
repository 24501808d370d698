"""Regression-test helpers for estimators: is *your* estimator unbiased, is its surrogate well formed?

* :func:`check_unbiased` / :func:`assert_unbiased` (:mod:`metagrad.testing.unbiased`): a seeded
  statistical test of the mean derivative against the exact tabular oracle, with a stated power;
* :func:`lint_surrogate` (:mod:`metagrad.testing.lint`): zero-sample structural checks of a
  surrogate (value, derivative orders, critic leaks, dtype, shapes);
* :func:`central_difference`, :func:`relative_error` (:mod:`metagrad.testing.numerics`).

``python -m metagrad.testing.power`` measures the power and false-alarm rate of the check.
"""

from __future__ import annotations

from metagrad.testing.lint import Finding, lint_surrogate
from metagrad.testing.numerics import central_difference, relative_error
from metagrad.testing.plugins import ResolvedEstimator, resolve_estimator
from metagrad.testing.unbiased import UnbiasednessReport, assert_unbiased, check_unbiased

__all__ = [
    "Finding",
    "ResolvedEstimator",
    "UnbiasednessReport",
    "assert_unbiased",
    "central_difference",
    "check_unbiased",
    "lint_surrogate",
    "relative_error",
    "resolve_estimator",
]
