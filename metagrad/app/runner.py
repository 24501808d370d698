"""The resumable runner behind ``metagrad bench`` and ``metagrad check``.

:func:`run_bench` lists the cells of one or more runs, skips those already in the result store,
executes the rest on a backend (:mod:`metagrad.app.backends`) and appends each row to the store
as soon as it arrives. :func:`score_tasks` recomputes given cells without storing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from metagrad.app.backends import BACKENDS, Task, execute, import_plugins
from metagrad.app.provenance import git_commit
from metagrad.app.rows import ResultRow
from metagrad.app.store import ResultStore
from metagrad.app.suite import Cell
from metagrad.app.suites import get_suite
from metagrad.validation import check_int

__all__ = ["RunResults", "cell_from_row", "run_bench", "score_tasks"]

RunResults = dict[tuple[str, str], list[ResultRow]]  # (suite, preset) -> rows in cell order (all seeds)


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
    log: Callable[[str], None] = print,
) -> RunResults:
    """Score every cell of ``runs`` (``[(suite, config), ...]``) into the result store.

    Cells already stored (same ``cell_id``) are skipped; new rows are appended one by one as
    they finish, so a killed run loses at most the cells in flight. Returns the rows of each run
    in cell order, keyed by ``(suite, preset)``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    check_int("workers", workers, 1)
    import_plugins(plugins)
    listed: list[tuple[str, Any, list[Cell], list[str]]] = []
    for suite, config in runs:
        cells = get_suite(suite).make_cells(config)
        listed.append((suite, config, cells, [cell.key(config) for cell in cells]))

    result_store = ResultStore(store)
    for message in result_store.repair():
        log(f"metagrad: {message}")
    loaded = result_store.load(warn=False)
    for problem in loaded.problems:
        log(f"metagrad: {problem}")
    stored = loaded.rows

    todo: list[Task] = []
    seen: set[str] = set()
    for suite, config, cells, keys in listed:
        for cell, key in zip(cells, keys, strict=True):
            if key not in seen:
                seen.add(key)
                if key not in stored:
                    todo.append((suite, config, cell))
    total = len(seen)
    done_before = total - len(todo)
    if done_before:
        log(f"metagrad: {done_before} of {total} cells already in {result_store.path}; running {len(todo)}")
        now = git_commit()
        older = sorted({stored[k].provenance.git_commit for k in seen if k in stored} - {now})
        if older:
            log(
                f"metagrad: reused cells were computed at commit(s) {', '.join(older)} (now {now}); "
                "pass --fresh to recompute them with this code"
            )

    start = time.perf_counter()
    with tqdm(total=total, initial=done_before, disable=not progress, unit="cell", desc="bench") as bar:
        for row in execute(
            todo, backend=backend, workers=workers, address=address, device=device, plugins=plugins
        ):
            result_store.append(row)
            stored[row.cell_id] = row
            bar.set_postfix_str(f"{row.bench} {row.experiment} {row.estimator}")
            bar.update(1)
    elapsed = time.perf_counter() - start
    if todo:
        log(f"metagrad: scored {len(todo)} cells in {elapsed:.1f} s ({backend}, {workers} worker(s))")
    out: RunResults = {}
    for suite, config, _, keys in listed:  # runs of several seeds of one preset share a key
        out.setdefault((suite, config.preset), []).extend(stored[key] for key in keys)
    return out


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
    """Fresh rows for ``(suite, config, cell)`` tasks, in the order given (nothing is stored)."""
    by_key: dict[str, ResultRow] = {}
    with tqdm(total=len(tasks), disable=not progress, unit="cell", desc="check") as bar:
        for row in execute(
            tasks, backend=backend, workers=workers, address=address, device=device, plugins=plugins
        ):
            by_key[row.cell_id] = row
            bar.update(1)
    return [by_key[cell.key(config)] for _, config, cell in tasks]
