"""Execution backends: where the cells of a run are scored.

* ``serial``: in this process;
* ``local`` (the default): one process pool of ``workers`` processes for the whole run, one torch
  thread each;
* ``ray``: Ray tasks on a running cluster (``address``) or on a local Ray started with
  ``workers`` CPUs (``pip install metagrad[ray]``).

Every cell seeds its own randomness from its key, so the rows do not depend on the backend, the
worker count or the completion order. A cell that raises (a user estimator returning NaN, metrics
that are not finite) comes back as a :class:`CellFailure` naming the cell, never as a row.

Pool workers ignore Ctrl-C (the main process handles it and stops them) and exit on their own
within a second when the main process dies, however it dies. When the consumer of
:func:`execute` stops early (an interrupt, a store error), pending cells are cancelled and the
workers are terminated instead of finishing their cells.

Plugins (``metagrad --import``) are given as a module name, a module in the working directory
or a path to a ``.py`` file; :func:`load_plugin` imports one in this process and returns the form
that imports the same module in any worker process.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.machinery
import importlib.util
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metagrad.app.running.provenance import git_commit
from metagrad.app.running.rows import ResultRow
from metagrad.app.suite import Cell, install_run_state
from metagrad.app.suites import get_suite
from metagrad.validation import check_choice

__all__ = [
    "BACKENDS",
    "BackendError",
    "CellFailure",
    "PluginError",
    "Task",
    "cell_label",
    "configure_allocator",
    "execute",
    "import_plugins",
    "load_plugin",
    "prepare_states",
    "run_task",
]

BACKENDS = ("local", "serial", "ray")

Task = tuple[str, Any, Cell]  # (suite name, config, cell)


class BackendError(RuntimeError):
    """A backend that cannot run (an unreachable Ray cluster, a worker that died)."""


class PluginError(ImportError):
    """A ``--import`` argument that cannot be imported."""


@dataclass(frozen=True)
class CellFailure:
    """A cell that raised instead of returning a row: its label and the error, one line."""

    cell_id: str
    label: str
    error: str

    def __str__(self) -> str:
        return f"{self.label}: {self.error}"


def cell_label(suite: str, cell: Cell) -> str:
    """``suite/experiment/estimator/combination tags``, as :attr:`ResultRow.label` names a row."""
    combo = getattr(cell.spec, "combination", "")
    tags = " ".join(str(v) for v in cell.tags.values())
    return f"{suite}/{cell.experiment}/{cell.estimator}/{combo} {tags}".strip()


# ---------------------------------------------------------------------------------------------
# Plugins
# ---------------------------------------------------------------------------------------------

_LOADED: dict[str, str] = {}  # argument or resolved form -> resolved form, in this process


def _is_path(text: str) -> bool:
    return text.endswith(".py") or "/" in text or os.sep in text or text.startswith(".")


def _import_file(path: Path) -> None:
    """Import the module file ``path`` (a package's ``__init__.py`` imports the package) under its
    own name, as every process does."""
    package = path.name == "__init__.py"
    name = path.parent.name if package else path.stem
    if not name.isidentifier():
        raise PluginError(f"--import {path}: {name!r} is not a valid module name")
    existing = sys.modules.get(name)
    if existing is not None:
        if Path(getattr(existing, "__file__", "") or "").resolve() == path:
            return
        raise PluginError(
            f"--import {path}: a different module named {name!r} is already imported; rename the file"
        )
    locations = [str(path.parent)] if package else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=locations)
    if spec is None or spec.loader is None:
        raise PluginError(f"--import {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def load_plugin(text: str) -> str:
    """Import a ``--import`` argument in this process; return the form workers import.

    ``text`` is a module name (found on ``sys.path`` or, as ``python -m`` would find it, in the
    working directory, which the ``metagrad`` console script does not put on ``sys.path``) or a
    path to a ``.py`` file or package folder. Returned: the module name; ``name@folder`` for a
    module found in the working directory; the absolute path of a file. Errors raise
    :class:`PluginError` with one line.
    """
    if text in _LOADED:
        return _LOADED[text]
    name, at, folder = text.partition("@")
    try:
        if at and all(part.isidentifier() for part in name.split(".")) and os.path.isabs(folder):
            if folder not in sys.path:  # name@folder, as returned for a module of the working directory
                sys.path.append(folder)
            importlib.import_module(name)
            resolved = text
        elif _is_path(text):
            path = Path(text).expanduser().resolve()
            if path.is_dir():
                path = path / "__init__.py"
            if not path.is_file():
                raise PluginError(f"--import {text}: no such file {path}")
            _import_file(path)
            resolved = str(path)
        else:
            resolved = _import_module(text)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"--import {text}: {type(exc).__name__}: {exc}") from exc
    _LOADED[text] = _LOADED[resolved] = resolved
    return resolved


def _import_module(name: str) -> str:
    try:
        importlib.import_module(name)
        return name
    except ModuleNotFoundError as exc:
        if exc.name != name.split(".")[0]:
            raise
    cwd = os.getcwd()
    if importlib.machinery.PathFinder.find_spec(name.split(".")[0], [cwd]) is None:
        raise PluginError(f"--import {name}: no module named {name!r} on sys.path or in {cwd}")
    if cwd not in sys.path:
        sys.path.append(cwd)  # after everything else: the working directory shadows nothing
    importlib.import_module(name)
    return f"{name}@{cwd}"


def import_plugins(plugins: tuple[str, ...]) -> tuple[str, ...]:
    """Import the user's modules (e.g. ones that register estimators) in this process; returns
    their resolved forms (see :func:`load_plugin`)."""
    return tuple(load_plugin(p) for p in plugins)


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------


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


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:  # re-parented: the main process is gone
            os._exit(1)
        time.sleep(0.5)


def _init_worker(threads: int, plugins: tuple[str, ...], parent: int) -> None:
    # Ctrl-C reaches the whole process group: the main process handles it and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), name="metagrad-parent-watch", daemon=True).start()
    torch.set_num_threads(threads)
    configure_allocator()
    git_commit()  # recorded in every row: the commit when the pool starts, not at a worker's first row
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
) -> ResultRow | CellFailure:
    """Score one cell (the unit of work every backend runs), with its run's prepared ``state``;
    an error comes back as a :class:`CellFailure` naming the cell and where it was raised."""
    import_plugins(plugins)
    if state:
        install_run_state(state)
    try:
        return get_suite(suite).run_cell(config, cell, device)
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        return CellFailure(cell.key, cell_label(suite, cell), f"{type(exc).__name__}: {exc} (at {where})")


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
) -> Iterator[ResultRow | CellFailure]:
    """Rows (or failures) of ``tasks`` in completion order (tasks are started in the order given)."""
    check_choice("backend", backend, BACKENDS)
    if not tasks:
        return
    plugins = import_plugins(plugins)
    if backend == "serial" or (backend == "local" and workers == 1):
        states = prepare_states(tasks)
        for suite, config, cell in tasks:
            yield run_task(suite, config, cell, device, plugins, states[(suite, config)])
        return
    if backend == "local":
        yield from _execute_local(tasks, workers=workers, device=device, plugins=plugins)
        return
    yield from _execute_ray(tasks, workers=workers, address=address, device=device, plugins=plugins)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the workers (instead of waiting for them).

    The pool's manager thread is joined before returning: left running, it can close its wakeup
    pipe while the interpreter's exit hook writes to it (an ``OSError`` traceback at exit).
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
    if manager is not None:
        manager.join(timeout=10)


def _execute_local(
    tasks: list[Task], *, workers: int, device: str, plugins: tuple[str, ...]
) -> Iterator[ResultRow | CellFailure]:
    """One process pool for all the tasks: the workers start (and import) while this process
    prepares the runs' shared state; then every task is queued, in the order given."""
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(1, plugins, os.getpid())
    )
    try:
        warm = [pool.submit(_ready) for _ in range(workers)]
        states = prepare_states(tasks)
        futures = [
            pool.submit(run_task, suite, config, cell, device, plugins, states[(suite, config)])
            for suite, config, cell in tasks
        ]
        for ready in warm:
            ready.result()
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:  # BrokenProcessPool: a worker was killed (out of memory?)
                raise BackendError(
                    f"a worker process died ({type(exc).__name__}); the system may have run out of memory"
                ) from exc
            yield result
    except BaseException:
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------------


def _enable_ray_token_auth() -> None:
    """Ray >= 2.5x: ``ray start`` enables token authentication by default and saves the token
    (``~/.ray/auth_token``), but ``ray.init(address=...)`` uses it only when ``RAY_AUTH_MODE=token``
    is set. Enable it, as Ray itself does for ``address="auto"``, when the variable is unset and
    a token is available (a driver in token mode also connects to clusters without it)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available as enable,
        )
    except ImportError:  # a Ray without token authentication (before 2.5x)
        return
    try:
        enable(warn_if_disabled=False)
    except TypeError:  # pragma: no cover - an older signature
        enable()


def _check_reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise BackendError(f"--address {address}: expected HOST:PORT (what `ray start --head` prints)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise BackendError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head` and pass the address it prints"
        ) from None


def _connect_ray(ray: Any, address: str | None, workers: int) -> None:
    if not address:
        # "local": always a new local instance (never a cluster found on this machine)
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
        return
    if address != "auto" and "://" not in address:
        _check_reachable(address)
    _enable_ray_token_auth()
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as exc:
        with contextlib.suppress(Exception):
            ray.shutdown()
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = (
            ""
            if "RAY_AUTH_MODE" in os.environ
            else " (a cluster with token authentication: set RAY_AUTH_MODE=token)"
        )
        raise BackendError(f"cannot connect to the Ray cluster at {address}: {first}{hint}") from None


def _execute_ray(
    tasks: list[Task], *, workers: int, address: str | None, device: str, plugins: tuple[str, ...]
) -> Iterator[ResultRow | CellFailure]:
    try:
        ray = importlib.import_module("ray")
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise BackendError("backend 'ray' needs Ray: pip install 'metagrad[ray]'") from exc

    started = False
    if not ray.is_initialized():
        _connect_ray(ray, address, workers)
        started = True
    pending: list[Any] = []
    try:
        remote = ray.remote(num_cpus=1)(_ray_task)
        states = prepare_states(tasks)
        pending = [
            remote.remote(suite, config, cell, device, plugins, states[(suite, config)])
            for suite, config, cell in tasks
        ]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise BackendError(f"a Ray task failed: {first}") from exc
            yield result
    except BaseException:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def _ray_task(
    suite: str, config: Any, cell: Cell, device: str, plugins: tuple[str, ...], state: dict[Any, Any]
) -> ResultRow | CellFailure:
    torch.set_num_threads(1)
    configure_allocator()
    return run_task(suite, config, cell, device, plugins, state)
