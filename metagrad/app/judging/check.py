"""``metagrad check --against FILE``: a regression test for estimator code.

Every stored row carries everything needed to recompute its cell (config, recipe, cell
description, seed). :func:`check_against` recomputes the cells of a stored result file with the
current code and compares each metric with the stored one: a metric *moved* when the fresh value
leaves the stored row's confidence interval (the bootstrap CI for the debiased bias, the stored
value ± ``z`` standard errors for MSE, variance and corr). With unchanged code the numbers are
identical (every cell seeds itself from its key); a change to an estimator shows up as moved
metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metagrad.app.running.rows import ResultRow
from metagrad.app.running.runner import CellsFailed, cell_from_row, score_tasks
from metagrad.app.running.store import ResultStore, check_store_path
from metagrad.validation import check_real

__all__ = ["CHECKED_METRICS", "Movement", "check_against"]

# metric -> its standard-error field (None: use the stored bootstrap CI)
CHECKED_METRICS: dict[str, str | None] = {
    "bias_debiased": None,
    "mse": "mse_se",
    "variance": "variance_se",
    "corr": "corr_se",
}


@dataclass(frozen=True)
class Movement:
    """One metric of one cell outside the stored row's interval."""

    cell_id: str
    label: str
    metric: str
    stored: float
    fresh: float
    low: float
    high: float

    def __str__(self) -> str:
        return (
            f"{self.label}: {self.metric} moved from {self.stored:.6g} to {self.fresh:.6g} "
            f"(stored interval [{self.low:.6g}, {self.high:.6g}])"
        )


def _interval(row: ResultRow, metric: str, z: float) -> tuple[float, float]:
    se_field = CHECKED_METRICS[metric]
    if se_field is None:
        return row.metrics.bias_ci_low, row.metrics.bias_ci_high
    value, half = row.value(metric), z * row.value(se_field)
    return value - half, value + half


def check_against(
    path: str | Path,
    *,
    backend: str = "local",
    workers: int = 2,
    address: str | None = None,
    device: str = "cpu",
    plugins: tuple[str, ...] = (),
    z: float = 1.96,
    progress: bool = True,
    fresh_out: str | Path | None = None,
) -> tuple[list[Movement], list[ResultRow], list[str]]:
    """Recompute the cells stored in ``path`` and compare.

    Returns ``(movements, fresh_rows, problems)``; an empty ``movements`` means no metric moved
    beyond its interval. ``problems`` lists stored lines that were ignored (corrupt or truncated).
    ``fresh_out`` optionally stores the fresh rows. Cells that now fail (they raise, or their
    metrics are not finite) raise :class:`~metagrad.app.running.runner.CellsFailed` once the other cells
    are compared; its ``results`` hold that ``(movements, fresh_rows, problems)``.
    """
    check_real("z", z, minimum=0.0, open_min=True)
    store = ResultStore(path)
    if not store.path.exists():
        raise ValueError(f"against: no such result file {store.path}")
    loaded = store.load(warn=False)
    if not loaded.rows:
        raise ValueError(f"against: {store.path} holds no result rows")
    stored = list(loaded.rows.values())
    if fresh_out is not None:  # before the recompute, not after it
        check_store_path(fresh_out, cells=len(stored))
    tasks = [cell_from_row(row) for row in stored]
    failures = []
    try:
        fresh = score_tasks(
            tasks,
            backend=backend,
            workers=workers,
            address=address,
            device=device,
            plugins=plugins,
            progress=progress,
        )
    except CellsFailed as exc:
        fresh, failures = exc.results, exc.failures
    if fresh_out is not None:
        out = ResultStore(fresh_out)
        with out.lock():
            for row in fresh:
                out.append(row)
    movements = []
    by_id = {row.cell_id: row for row in fresh}
    for old, new in ((old, by_id[old.cell_id]) for old in stored if old.cell_id in by_id):
        for metric in CHECKED_METRICS:
            low, high = _interval(old, metric, z)
            value, before = new.value(metric), old.value(metric)
            if not (low <= value <= high) and value != before:
                movements.append(Movement(old.cell_id, old.label, metric, before, value, low, high))
    if failures:
        raise CellsFailed(failures, (movements, fresh, loaded.problems))
    return movements, fresh, loaded.problems
