"""Bench suites and the resumable, parallel runner behind ``metagrad bench``.

A *suite* (``tabular``, ``ipd``) knows its presets, how to list a run's cells and how to score
one cell from nothing but ``(config, cell)``, so any process (a local worker, a Ray task) can
compute any cell with the same numbers: every cell seeds its own randomness from its key.

:func:`run_bench` lists the cells of one or more runs, skips those already in the result store,
executes the rest on a backend and appends each row to the store as soon as it arrives:

* ``serial``: in this process;
* ``local`` (the default): a process pool of ``workers`` processes, one torch thread each;
* ``ray``: Ray tasks on a running cluster (``address``) or on a local Ray started with
  ``workers`` CPUs (``pip install metagrad[ray]``).
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from envs.validation import check_int
from metagrad import bench_atari, bench_ipd, bench_tabular
from metagrad.decomposed import CriticSpec, MetaGradientSpec, StageSpec
from metagrad.lola import LolaSpec
from metagrad.provenance import git_commit
from metagrad.results import Cell, dataclass_from_dict
from metagrad.store import ResultStore

__all__ = [
    "BACKENDS",
    "DEFAULT_RUNS",
    "SUITES",
    "Suite",
    "cell_from_row",
    "make_config",
    "run_bench",
    "run_suite",
    "score_tasks",
    "write_run_outputs",
    "write_suite_outputs",
]

BACKENDS = ("local", "serial", "ray")


@dataclass(frozen=True)
class Suite:
    """One benchmark family: presets, the cells of a run, and how to score and summarise them."""

    name: str
    presets: dict[str, Any]
    default_preset: str
    make_cells: Callable[[Any], list[Cell]]
    run_cell: Callable[[Any, Cell, str], dict[str, Any]]
    write_plots: Callable[..., list[Path]]
    write_summary: Callable[..., Path]
    config_class: type
    spec_class: type


@functools.lru_cache(maxsize=8)
def _tabular_context(config: bench_tabular.TabularBenchConfig) -> tuple[list, dict]:
    return config.tasks(), {}


def _run_tabular_cell(config: bench_tabular.TabularBenchConfig, cell: Cell, device: str) -> dict[str, Any]:
    tasks, exact_cache = _tabular_context(config)
    return bench_tabular.run_cell(config, cell, tasks, device=device, exact_cache=exact_cache)


@functools.lru_cache(maxsize=16)
def _ipd_pairs(config: bench_ipd.IPDBenchConfig, kind: str) -> list[dict[str, torch.Tensor]]:
    return bench_ipd.policy_pairs(config, kind)


def _run_ipd_cell(config: bench_ipd.IPDBenchConfig, cell: Cell, device: str) -> dict[str, Any]:
    return bench_ipd.run_ipd_cell(config, cell, _ipd_pairs(config, cell.tags["pair_kind"]), device=device)


SUITES: dict[str, Suite] = {
    "tabular": Suite(
        "tabular",
        bench_tabular.PRESETS,
        "liu2022",
        bench_tabular.make_cells,
        _run_tabular_cell,
        bench_tabular.write_plots,
        bench_tabular.write_summary,
        bench_tabular.TabularBenchConfig,
        MetaGradientSpec,
    ),
    "ipd": Suite(
        "ipd",
        bench_ipd.PRESETS,
        "foerster2018",
        bench_ipd.make_ipd_cells,
        _run_ipd_cell,
        bench_ipd.write_ipd_plots,
        bench_ipd.write_ipd_summary,
        bench_ipd.IPDBenchConfig,
        LolaSpec,
    ),
    "atari": Suite(
        "atari",
        bench_atari.PRESETS,
        "xu2018",
        bench_atari.make_atari_cells,
        bench_atari.run_atari_cell,
        bench_atari.write_atari_plots,
        bench_atari.write_atari_summary,
        bench_atari.AtariBenchConfig,
        bench_atari.AtariMetaSpec,
    ),
}

# The default suite of ``metagrad bench`` (Atari joins only when asked for).
DEFAULT_RUNS: tuple[tuple[str, str], ...] = (("tabular", "liu2022"), ("ipd", "foerster2018"))


def make_config(suite: str, preset: str | None = None, **overrides: Any) -> Any:
    """The config of a run: a suite's preset with ``overrides`` (validated: bad values raise)."""
    import dataclasses

    if suite not in SUITES:
        raise ValueError(f"suite: unknown {suite!r}; known: {sorted(SUITES)}")
    s = SUITES[suite]
    preset = preset or s.default_preset
    if preset not in s.presets:
        raise ValueError(f"preset: unknown preset {preset!r} for {suite}; known: {sorted(s.presets)}")
    return dataclasses.replace(s.presets[preset], **overrides)


# --------------------------------------------------------------------------------------------
# Execution backends
# --------------------------------------------------------------------------------------------


def _import_plugins(plugins: tuple[str, ...]) -> None:
    for module in plugins:
        importlib.import_module(module)


def _init_worker(threads: int, plugins: tuple[str, ...]) -> None:
    torch.set_num_threads(threads)
    _import_plugins(plugins)


def run_task(
    suite: str, config: Any, cell: Cell, device: str, plugins: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Score one cell (the unit of work every backend runs)."""
    _import_plugins(plugins)
    return SUITES[suite].run_cell(config, cell, device)


Task = tuple[str, Any, Cell]


def _execute(
    tasks: list[Task],
    *,
    backend: str,
    workers: int,
    address: str | None,
    device: str,
    plugins: tuple[str, ...],
) -> Iterator[dict[str, Any]]:
    """Rows of ``tasks`` in completion order."""
    if not tasks:
        return
    if backend == "serial" or (backend == "local" and workers == 1):
        for suite, config, cell in tasks:
            yield run_task(suite, config, cell, device, plugins)
        return
    if backend == "local":
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(1, plugins)
        ) as pool:
            futures = [
                pool.submit(run_task, suite, config, cell, device, plugins) for suite, config, cell in tasks
            ]
            try:
                for future in as_completed(futures):
                    yield future.result()
            finally:
                for future in futures:
                    future.cancel()
        return
    yield from _execute_ray(tasks, workers=workers, address=address, device=device, plugins=plugins)


def _execute_ray(
    tasks: list[Task], *, workers: int, address: str | None, device: str, plugins: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    try:
        import ray
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
        pending = [remote.remote(suite, config, cell, device, plugins) for suite, config, cell in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started:
            ray.shutdown()


def _ray_task(suite: str, config: Any, cell: Cell, device: str, plugins: tuple[str, ...]) -> dict[str, Any]:
    torch.set_num_threads(1)
    return run_task(suite, config, cell, device, plugins)


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


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
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Score every cell of ``runs`` (``[(suite, config), ...]``) into the result store.

    Cells already stored (same ``cell_id``) are skipped; new rows are appended one by one as
    they finish, so a killed run loses at most the cells in flight. Returns the rows of each run
    in cell order, keyed by ``(suite, preset)``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    check_int("workers", workers, 1)
    _import_plugins(plugins)
    listed: list[tuple[str, Any, list[Cell], list[str]]] = []
    for suite, config in runs:
        if suite not in SUITES:
            raise ValueError(f"suite: unknown {suite!r}; known: {sorted(SUITES)}")
        cells = SUITES[suite].make_cells(config)
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
        older = sorted({stored[k].get("git_commit", "?") for k in seen if k in stored} - {now})
        if older:
            log(
                f"metagrad: reused cells were computed at commit(s) {', '.join(older)} (now {now}); "
                "pass --fresh to recompute them with this code"
            )

    from tqdm.auto import tqdm

    start = time.perf_counter()
    with tqdm(total=total, initial=done_before, disable=not progress, unit="cell", desc="bench") as bar:
        for row in _execute(
            tasks=todo, backend=backend, workers=workers, address=address, device=device, plugins=plugins
        ):
            result_store.append(row)
            stored[row["cell_id"]] = row
            bar.set_postfix_str(f"{row['bench']} {row['experiment']} {row['estimator']}")
            bar.update(1)
    elapsed = time.perf_counter() - start
    if todo:
        log(f"metagrad: scored {len(todo)} cells in {elapsed:.1f} s ({backend}, {workers} worker(s))")
    return {(suite, config.preset): [stored[key] for key in keys] for suite, config, _, keys in listed}


def run_suite(
    suite: str,
    config: Any,
    out: str | Path,
    *,
    device: str = "cpu",
    progress: bool = True,
    plots: bool = True,
    backend: str = "serial",
    workers: int = 1,
) -> list[dict[str, Any]]:
    """One run of one suite into the result store ``out`` (resuming: stored cells are skipped),
    then its plots and ``<stem>_summary.md`` next to it. Returns the rows in cell order."""
    out = Path(out)
    rows = run_bench(
        [(suite, config)], out, backend=backend, workers=workers, device=device, progress=progress
    )
    rows = rows[(suite, config.preset)]
    if plots:
        write_suite_outputs(suite, rows, out.parent, out.stem)
    return rows


def write_suite_outputs(suite: str, rows: list[dict[str, Any]], folder: str | Path, stem: str) -> list[Path]:
    """Plots and the markdown summary of one run's rows (``folder/stem_*``)."""
    s = SUITES[suite]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wall = sum(r.get("wall_s", 0.0) for r in rows)
    plots = s.write_plots(rows, folder, stem=stem)
    summary = s.write_summary(rows, folder / f"{stem}_summary.md", total_seconds=wall)
    return [*plots, summary]


def cell_from_row(row: dict[str, Any]) -> tuple[str, Any, Cell]:
    """``(suite, config, cell)`` that reproduce a stored row (checked against its ``cell_id``)."""
    suite = row.get("bench")
    if suite not in SUITES:
        raise ValueError(f"row {row.get('cell_id')}: unknown bench {suite!r}")
    if "cell" not in row:
        raise ValueError(f"row {row.get('cell_id')}: no cell description (written by an older metagrad)")
    s = SUITES[suite]
    config = dataclass_from_dict(s.config_class, row["config"])
    stages = {"inner": StageSpec, "hessian": StageSpec, "outer": StageSpec, "critic": CriticSpec}
    spec = dataclass_from_dict(s.spec_class, row["spec"], stages)
    desc = row["cell"]
    cell = Cell(
        desc["experiment"], desc["estimator"], spec, desc["n"], dict(desc["extra"]), dict(desc["tags"])
    )
    if cell.key(config) != row["cell_id"]:
        raise ValueError(f"row {row['cell_id']}: the rebuilt cell hashes to {cell.key(config)}")
    return suite, config, cell


def score_tasks(
    tasks: list[Task],
    *,
    backend: str = "local",
    workers: int = 2,
    address: str | None = None,
    device: str = "cpu",
    plugins: tuple[str, ...] = (),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Fresh rows for ``(suite, config, cell)`` tasks, in the order given (nothing is stored)."""
    from tqdm.auto import tqdm

    by_key: dict[str, dict[str, Any]] = {}
    with tqdm(total=len(tasks), disable=not progress, unit="cell", desc="check") as bar:
        for row in _execute(
            tasks, backend=backend, workers=workers, address=address, device=device, plugins=plugins
        ):
            by_key[row["cell_id"]] = row
            bar.update(1)
    return [by_key[cell.key(config)] for _, config, cell in tasks]


def write_run_outputs(
    results: dict[tuple[str, str], list[dict[str, Any]]], folder: str | Path
) -> dict[str, Path]:
    """Per-run plots and summaries (``SUITE_PRESET_*``), then ``leaderboard.md`` and ``report.md``
    over all the rows; returns the paths of the leaderboard and the report."""
    from metagrad.leaderboard import write_leaderboard, write_report

    folder = Path(folder)
    plots: list[Path] = []
    summaries: list[Path] = []
    all_rows: list[dict[str, Any]] = []
    for (suite, preset), rows in results.items():
        written = write_suite_outputs(suite, rows, folder, f"{suite}_{preset}")
        plots += [p for p in written if p.suffix == ".png"]
        summaries += [p for p in written if p.suffix == ".md"]
        all_rows += rows
    return {
        "leaderboard": write_leaderboard(all_rows, folder / "leaderboard.md"),
        "report": write_report(all_rows, folder / "report.md", plots=plots, summaries=summaries),
    }
