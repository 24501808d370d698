"""The resumable runner behind ``metagrad bench`` and ``metagrad check``.

:func:`run_bench` lists the cells of one or more runs, checks the store path and the memory the
cells need, takes the store's lock, skips the cells already stored, executes the rest on a
backend (:mod:`metagrad.app.running.backends`) and appends each row to the store as soon as it arrives.
:func:`score_tasks` recomputes given cells without storing them.

A cell that fails (it raised, or its metrics are not finite) is reported by name and never
stored; the run goes on with the other cells and ends with :class:`CellsFailed`. An interrupt
(Ctrl-C, SIGTERM) stops the workers and raises :class:`BenchInterrupted` with what was stored.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from metagrad.app.running.backends import BACKENDS, CellFailure, Task, cell_label, execute, import_plugins
from metagrad.app.running.memory import MemoryEstimate, check_memory
from metagrad.app.running.progress import progress_bar
from metagrad.app.running.provenance import code_version, git_commit
from metagrad.app.running.rows import ResultRow
from metagrad.app.running.store import ResultStore, check_store_path
from metagrad.app.suite import Cell
from metagrad.app.suites import get_suite
from metagrad.validation import check_choice, check_int

__all__ = [
    "BenchInterrupted",
    "CellsFailed",
    "RunResults",
    "cell_from_row",
    "check_task_memory",
    "longest_first",
    "peak_memory_mib",
    "run_bench",
    "score_tasks",
]

RunResults = dict[tuple[str, str], list[ResultRow]]  # (suite, preset) -> rows in cell order (all seeds)


class CellsFailed(RuntimeError):
    """Some cells raised instead of giving a row; ``results`` holds the rows that were scored."""

    def __init__(self, failures: list[CellFailure], results: Any) -> None:
        self.failures = failures
        self.results = results
        super().__init__(
            f"{len(failures)} cell(s) failed and were not stored: " + "; ".join(map(str, failures))
        )


class BenchInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM: ``done`` of ``total`` cells are in ``store``."""

    def __init__(self, done: int, total: int, store: Path) -> None:
        self.done, self.total, self.store = done, total, store
        super().__init__(f"{done} of {total} cells are stored in {store}")


def check_task_memory(
    tasks: Iterable[Task], *, backend: str, workers: int, address: str | None, device: str
) -> None:
    """Refuse (:class:`~metagrad.app.running.memory.InsufficientMemory`) tasks that cannot fit in this
    machine's memory (not checked for a remote Ray cluster)."""
    if backend == "ray" and address:
        return
    estimates: list[tuple[str, MemoryEstimate]] = []
    for suite, config, cell in tasks:
        estimate = get_suite(suite).memory_estimate
        if estimate is not None:
            estimates.append((cell_label(suite, cell), estimate(config, cell)))
    check_memory(estimates, workers=1 if backend == "serial" else workers, device=device)


def run_bench(
    runs: list[tuple[str, Any]],
    store: str | Path,
    *,
    backend: str = "local",
    workers: int = 2,
    address: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    plugins: tuple[str, ...] = (),
    fresh: bool = False,
    log: Callable[[str], None] = print,
) -> RunResults:
    """Score every cell of ``runs`` (``[(suite, config), ...]``) into the result store.

    Cells already stored (same ``cell_id``) are skipped, unless ``fresh``: then the stored rows of
    these cells (and only those; other rows stay) are dropped first. New rows are appended one by
    one as they finish, so a killed run loses at most the cells in flight. The store is locked for
    the whole run (a second run on it is refused). Returns the rows of each run in cell order,
    keyed by ``(suite, preset)``; raises :class:`CellsFailed` (with those results) when cells
    failed and :class:`BenchInterrupted` on Ctrl-C / SIGTERM.
    """
    check_choice("backend", backend, BACKENDS)
    check_int("workers", workers, 1)
    git_commit()  # the commit of the code this run loaded, not of a later commit made during the run
    plugins = import_plugins(plugins)
    listed: list[tuple[str, Any, list[Cell]]] = [
        (suite, config, get_suite(suite).make_cells(config)) for suite, config in runs
    ]
    every: dict[str, Task] = {}
    for suite, config, cells in listed:
        for cell in cells:
            if not cell.bound:
                raise ValueError(f"suite {suite}: make_cells returned a cell not bound to its config")
            every.setdefault(cell.key, (suite, config, cell))

    result_store = ResultStore(store)
    check_store_path(result_store.path, cells=len(every))
    with result_store.lock():
        for message in result_store.repair():
            log(f"metagrad: {message}")
        if fresh:
            dropped = result_store.drop(every)
            if dropped:
                log(f"metagrad: --fresh: dropped the {dropped} stored row(s) of this run's cells")
        loaded = result_store.load(warn=False)
        for problem in loaded.problems:
            log(f"metagrad: {problem}")
        stored = loaded.rows
        todo = longest_first([task for key, task in every.items() if key not in stored])
        check_task_memory(todo, backend=backend, workers=workers, address=address, device=device)
        total = len(every)
        done_before = total - len(todo)
        if done_before:
            log(
                f"metagrad: {done_before} of {total} cells already in {result_store.path}; "
                f"running {len(todo)}"
            )
            now = code_version()
            older = sorted({code_version(stored[k].provenance) for k in every if k in stored} - {now})
            if older:
                log(
                    f"metagrad: reused cells were computed by {', '.join(older)} (now {now}); "
                    "pass --fresh to recompute them with this code"
                )

        failures: list[CellFailure] = []
        compute = 0.0
        start = time.perf_counter()
        try:
            with progress_bar(total, "bench", "cell", disable=not progress, initial=done_before) as bar:
                for result in execute(
                    todo, backend=backend, workers=workers, address=address, device=device, plugins=plugins
                ):
                    if isinstance(result, CellFailure):
                        failures.append(result)
                        log(f"metagrad: cell failed, not stored: {result}")
                    else:
                        result_store.append(result)
                        stored[result.cell_id] = result
                        compute += result.wall_s
                        bar.set_postfix_str(f"{result.bench} {result.experiment} {result.estimator}")
                    bar.update(1)
        except KeyboardInterrupt:
            # count what the store holds now (the interrupt may fall between a write and its
            # bookkeeping): exactly what the resumed run will find
            done = sum(key in every for key in result_store.load(warn=False).rows)
            raise BenchInterrupted(done, total, result_store.path) from None
    elapsed = time.perf_counter() - start
    log(
        f"metagrad: scored {len(todo) - len(failures)} cells in {elapsed:.1f} s wall; cell compute "
        f"{compute:.1f} s (sum over the cells) on {backend} with {workers} worker(s)"
    )
    own, workers_peak = peak_memory_mib()
    log(
        f"metagrad: peak resident memory {own:.0f} MiB in this process, "
        f"{workers_peak:.0f} MiB in the largest child process (the pool's workers)"
    )
    results: RunResults = {}
    for suite, config, cells in listed:  # runs of several seeds of one preset share a key
        results.setdefault((suite, config.preset), []).extend(
            stored[cell.key] for cell in cells if cell.key in stored
        )
    if failures:
        raise CellsFailed(failures, results)
    return results


def peak_memory_mib() -> tuple[float, float]:
    """Peak resident set size of this process and of its largest finished child process (the
    pool's workers once the pool has shut down), in MiB (``getrusage``; Linux reports KiB)."""
    scale = 1.0 / 1024 if sys.platform != "darwin" else 1.0 / 2**20
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale
    return own, children


def longest_first(tasks: list[Task]) -> list[Task]:
    """``tasks`` sorted by their suite's cost estimate, longest first (unknown costs first), so
    that the last cells to finish are short ones and the workers end together."""

    def key(task: Task) -> float:
        suite, config, cell = task
        cost = get_suite(suite).cost
        return -math.inf if cost is None else -cost(config, cell)

    return sorted(tasks, key=key)


def cell_from_row(row: ResultRow) -> Task:
    """``(suite, config, cell)`` that reproduce a stored row (checked against its ``cell_id``)."""
    try:
        suite = get_suite(row.bench)
    except ValueError as exc:
        raise ValueError(f"row {row.cell_id}: {exc}") from exc
    config, cell = suite.rebuild(row)
    return suite.name, config, cell


def score_tasks(
    tasks: list[Task],
    *,
    backend: str = "local",
    workers: int = 2,
    address: str | None = None,
    device: str = "cpu",
    plugins: tuple[str, ...] = (),
    progress: bool = True,
) -> list[ResultRow]:
    """Fresh rows for ``(suite, config, cell)`` tasks, in the order given (nothing is stored);
    raises :class:`CellsFailed` (with the rows that were scored) when cells failed."""
    check_task_memory(tasks, backend=backend, workers=workers, address=address, device=device)
    by_key: dict[str, ResultRow] = {}
    failures: list[CellFailure] = []
    with progress_bar(len(tasks), "check", "cell", disable=not progress) as bar:
        for result in execute(
            longest_first(tasks),
            backend=backend,
            workers=workers,
            address=address,
            device=device,
            plugins=plugins,
        ):
            if isinstance(result, CellFailure):
                failures.append(result)
            else:
                by_key[result.cell_id] = result
            bar.update(1)
    rows = [by_key[cell.key] for _, _, cell in tasks if cell.key in by_key]
    if failures:
        raise CellsFailed(failures, rows)
    return rows
