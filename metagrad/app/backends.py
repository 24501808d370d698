"""Execution backends: where the cells of a run are scored.

* ``serial``: in this process;
* ``local`` (the default): one process pool of ``workers`` processes for the whole run, one torch
  thread each;
* ``ray``: Ray tasks on a running cluster (``address``) or on a local Ray started with
  ``workers`` CPUs (``pip install metagrad[ray]``).

Every cell seeds its own randomness from its key, so the rows do not depend on the backend, the
worker count or the completion order.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch

from metagrad.app.rows import ResultRow
from metagrad.app.suite import Cell, install_run_state
from metagrad.app.suites import get_suite

__all__ = [
    "BACKENDS",
    "Task",
    "configure_allocator",
    "execute",
    "import_plugins",
    "prepare_states",
    "run_task",
]

BACKENDS = ("local", "serial", "ray")

Task = tuple[str, Any, Cell]  # (suite name, config, cell)


def import_plugins(plugins: tuple[str, ...]) -> None:
    """Import the user's modules (e.g. ones that register estimators) in this process."""
    for module in plugins:
        importlib.import_module(module)


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def configure_allocator(mmap_threshold: int = 64 * 2**20, trim_threshold: int = 128 * 2**20) -> bool:
    """Serve allocations below ``mmap_threshold`` bytes from the heap and keep up to
    ``trim_threshold`` bytes of freed heap for reuse (glibc ``mallopt``; a no-op elsewhere).

    By default glibc maps every allocation above 128 KiB afresh and unmaps it when freed, so each
    temporary tensor of a rollout (a [100, 4096] float64 output is 3.2 MiB) costs page faults on
    first touch: on this project's machines that made the IPD engine 3x and the tabular engine
    1.5x slower than the same operations on reused memory. The CLI and every worker call this.
    Returns whether the setting applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # pragma: no cover - not glibc
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


def _init_worker(threads: int, plugins: tuple[str, ...]) -> None:
    torch.set_num_threads(threads)
    configure_allocator()
    import_plugins(plugins)


def _ready() -> None:
    """A no-op task: the first one a worker runs, so that it starts (and imports) at once."""


def run_task(
    suite: str,
    config: Any,
    cell: Cell,
    device: str,
    plugins: tuple[str, ...] = (),
    state: Mapping[Any, Any] | None = None,
) -> ResultRow:
    """Score one cell (the unit of work every backend runs), with its run's prepared ``state``."""
    import_plugins(plugins)
    if state:
        install_run_state(state)
    return get_suite(suite).score_cell(config, cell, device)


def prepare_states(tasks: list[Task]) -> dict[tuple[str, Any], dict[Any, Any]]:
    """The prepared per-run state of every ``(suite, config)`` of ``tasks`` (``Suite.prepare``)."""
    states: dict[tuple[str, Any], dict[Any, Any]] = {}
    for suite, config, _ in tasks:
        if (suite, config) not in states:
            prepare = get_suite(suite).prepare
            states[(suite, config)] = prepare(config) if prepare is not None else {}
    return states


def execute(
    tasks: list[Task],
    *,
    backend: str,
    workers: int,
    address: str | None,
    device: str,
    plugins: tuple[str, ...],
) -> Iterator[ResultRow]:
    """Rows of ``tasks`` in completion order (tasks are started in the order given)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if not tasks:
        return
    if backend == "serial" or (backend == "local" and workers == 1):
        states = prepare_states(tasks)
        for suite, config, cell in tasks:
            yield run_task(suite, config, cell, device, plugins, states[(suite, config)])
        return
    if backend == "local":
        yield from _execute_local(tasks, workers=workers, device=device, plugins=plugins)
        return
    yield from _execute_ray(tasks, workers=workers, address=address, device=device, plugins=plugins)


def _execute_local(
    tasks: list[Task], *, workers: int, device: str, plugins: tuple[str, ...]
) -> Iterator[ResultRow]:
    """One process pool for all the tasks: the workers start (and import) while this process
    prepares the runs' shared state; then every task is queued, in the order given."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(1, plugins)
    ) as pool:
        warm = [pool.submit(_ready) for _ in range(workers)]
        states = prepare_states(tasks)
        futures = [
            pool.submit(run_task, suite, config, cell, device, plugins, states[(suite, config)])
            for suite, config, cell in tasks
        ]
        try:
            for future in warm:
                future.result()
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def _execute_ray(
    tasks: list[Task], *, workers: int, address: str | None, device: str, plugins: tuple[str, ...]
) -> Iterator[ResultRow]:
    try:
        ray = importlib.import_module("ray")
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise RuntimeError("backend 'ray' needs Ray: pip install 'metagrad[ray]'") from exc

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(_ray_task)
        states = prepare_states(tasks)
        pending = [
            remote.remote(suite, config, cell, device, plugins, states[(suite, config)])
            for suite, config, cell in tasks
        ]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started:
            ray.shutdown()


def _ray_task(
    suite: str, config: Any, cell: Cell, device: str, plugins: tuple[str, ...], state: dict[Any, Any]
) -> ResultRow:
    torch.set_num_threads(1)
    configure_allocator()
    return run_task(suite, config, cell, device, plugins, state)
