"""The claim framework: pre-registered tests of a paper's statements on result rows.

Each claim is a statement of a paper (or of the theory it rests on), a criterion fixed in code
with the reason it is what it is (``source``), and a verdict:

* ``PASS``: the data support the statement at the stated confidence and nothing contradicts it;
* ``FAIL``: the data contradict it (a resolved effect in the wrong direction);
* ``INCONCLUSIVE``: the data cannot tell; the evidence says what is unresolved and what budget
  would resolve it;
* ``n/a``: the rows the claim needs are not in the store.

A suite states its own claims in its package (``metagrad/app/suites/<name>/claims.py``, the
suite's ``claims`` hook); this module holds what they share: :class:`Claim`, the verdicts and
:func:`combine`, row selection (:func:`select`, :func:`by_estimator`), :func:`curve` (the points
of a sweep as per-task values) and the seeds of the claims' bootstraps (:func:`claim_seed`).
The statistics themselves (power-law exponents, rank trends, task bootstraps, Student-t
intervals) are in :mod:`metagrad.app.judging.statistics`; every interval there is over tasks
(``row.per_task``), so it includes the task-to-task variation:

* the debiased squared bias of a setting is the mean over tasks of the per-task unbiased
  estimates; it can be zero or negative when the bias is below the noise, and every fit uses
  those values as they are (no point is dropped);
* :func:`~metagrad.app.judging.statistics.power_law_exponent` fits ``y = A x^s`` by weighted
  least squares in linear space (weights the inverse squared standard errors of the points),
  ``A >= 0``; non-positive points pull the fit down instead of being dropped. Its interval: the
  fit repeated on task-bootstrap resamples;
* trends: Spearman's rank correlation with tie-averaged ranks (``scipy.stats.rankdata``) between
  x and each task's curve, its interval from the same task bootstrap;
* comparisons between estimators: paired differences on the same tasks and samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from metagrad.app.judging.paired import task_matrix
from metagrad.app.judging.statistics import Interval
from metagrad.app.running.rows import ResultRow
from metagrad.seeding import stable_hash
from metagrad.validation import check_choice

__all__ = [
    "FAIL",
    "INCONCLUSIVE",
    "NOT_APPLICABLE",
    "PASS",
    "VERDICTS",
    "Claim",
    "by_estimator",
    "claim_seed",
    "combine",
    "curve",
    "format_value",
    "select",
    "tasks_factor",
]

PASS, FAIL, INCONCLUSIVE, NOT_APPLICABLE = "PASS", "FAIL", "INCONCLUSIVE", "n/a"
VERDICTS = (PASS, FAIL, INCONCLUSIVE, NOT_APPLICABLE)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, its pre-registered criterion, the evidence and the verdict.

    ``figures`` are the fitted numbers behind the verdict; ``summary`` (default: the figures) is
    what the seed table shows of them.
    """

    name: str
    statement: str
    criterion: str
    source: str
    evidence: str
    verdict: str
    figures: dict[str, float] = field(default_factory=dict)
    summary: str = ""

    def __post_init__(self) -> None:
        check_choice("verdict", self.verdict, VERDICTS)

    @property
    def passed(self) -> bool | None:
        """True for PASS, False for FAIL, None otherwise."""
        return {PASS: True, FAIL: False}.get(self.verdict)


def select(rows: list[ResultRow], **where: object) -> list[ResultRow]:
    """The rows whose fields (identity or setting) equal every value of ``where``."""
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def combine(statuses: Iterable[str]) -> str:
    """One verdict from per-part ones: FAIL if any part fails, PASS if all pass, else
    INCONCLUSIVE (n/a if there are no parts)."""
    statuses = list(statuses)
    if not statuses:
        return NOT_APPLICABLE
    if FAIL in statuses:
        return FAIL
    return PASS if all(s == PASS for s in statuses) else INCONCLUSIVE


# --------------------------------------------------------------------------------------------
# Curves and helpers of the claims
# --------------------------------------------------------------------------------------------


def curve(
    rows: Sequence[ResultRow], xkey: str, metric: str = "bias_sq_debiased"
) -> tuple[np.ndarray, np.ndarray]:
    """``(x [P], per-task values [N, P])`` of rows sorted by ``xkey`` (one row per x)."""
    rows = sorted(rows, key=lambda r: r.get(xkey))
    xs = [r.get(xkey) for r in rows]
    if len(set(xs)) != len(xs):
        raise ValueError(f"curve: several rows at the same {xkey} ({xs})")
    return np.asarray(xs, dtype=float), task_matrix(rows, metric)


def claim_seed(*parts: object) -> int:
    """The seed of a claim's bootstrap, from its name and parts (stable across processes)."""
    return stable_hash("claims", *parts)


def tasks_factor(ci: Interval, target: float) -> float:
    """About how many times the tasks an interval needs for its upper end to fall below
    ``target`` (half-widths shrink like 1/sqrt(tasks)); inf when the estimate is above it."""
    if ci.estimate >= target:
        return math.inf
    return max(1.0, ((ci.high - ci.estimate) / (target - ci.estimate)) ** 2)


def format_value(value: float) -> str:
    """A figure in evidence text (three significant digits)."""
    return f"{value:.3g}"


def by_estimator(rows: list[ResultRow]) -> dict[str, list[ResultRow]]:
    """Rows grouped by estimator, in order of first appearance."""
    out: dict[str, list[ResultRow]] = {}
    for r in rows:
        out.setdefault(r.estimator, []).append(r)
    return out
