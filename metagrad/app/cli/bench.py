"""``metagrad bench [SUITE]``: score estimators into a result store (``--store FILE``, default
``results/rows.jsonl``; resumable), then rebuild the store's outputs beside it (leaderboard,
report, figures). Its choices, presets and options come from the suite registry."""

from __future__ import annotations

import argparse
from typing import Any

from metagrad.app.cli.common import (
    DEFAULT_STORE,
    add_backend_args,
    add_plugin_options,
    check_device,
    check_outputs,
    given_options,
    option_owners,
    parse_seeds,
    print_written,
    store_path,
    store_results,
)
from metagrad.app.options import collect_overrides
from metagrad.app.presenting.report import output_prefix, write_outputs
from metagrad.app.running.runner import CellsFailed, run_bench
from metagrad.app.suites import SUITES, default_runs, get_suite
from metagrad.validation import check_choice

__all__ = ["add_parser", "bench_runs", "run"]


def bench_runs(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The validated ``(suite, config)`` runs of a ``bench`` call (nothing runs before this);
    with ``--seeds``, every run once per seed."""
    plan = [(args.suite, args.preset)] if args.suite else [(s, args.preset or p) for s, p in default_runs()]
    every = {o.dest: o for s in SUITES.values() for o in s.options}
    given = given_options(args, every.values())
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if seeds is not None and "seed" in given:
        raise SystemExit("metagrad: give either --seed or --seeds, not both")
    experiments = tuple(x.strip() for x in (args.experiments or "").split(",") if x.strip())
    suites = [get_suite(name) for name, _ in plan]
    if experiments:
        allowed = dict.fromkeys(e for s in suites for e in s.experiments)
        try:
            check_choice("experiments", experiments, allowed)
        except ValueError as exc:
            raise SystemExit(f"metagrad: bad bench configuration: {exc}") from exc
    for dest in given:
        if not any(s.option(dest) for s in suites):
            names = ", ".join(s.name for s in suites)
            raise SystemExit(f"metagrad: --{dest.replace('_', '-')} is not an option of suite(s) {names}")
    runs: list[tuple[str, Any]] = []
    for suite, (_, preset) in zip(suites, plan, strict=True):
        try:
            if preset is not None:
                check_choice("preset", preset, suite.presets, what="preset", where=suite.name)
        except ValueError as exc:
            raise SystemExit(f"metagrad: bad bench configuration: {exc}") from exc
        try:
            overrides = collect_overrides(suite.options, given)
        except ValueError as exc:
            raise SystemExit(f"metagrad: {exc}") from exc
        if experiments:
            mine = tuple(e for e in experiments if e in suite.experiments)
            if not mine:
                continue
            overrides["experiments"] = mine
        run_seeds: list[int | None] = [*seeds] if seeds else [None]
        for seed in run_seeds:
            if seed is not None:
                overrides["seed"] = seed
            try:
                runs.append((suite.name, suite.config(preset, **overrides)))
            except (ValueError, TypeError) as exc:
                raise SystemExit(f"metagrad: bad bench configuration: {exc}") from exc
    return runs


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    runs = bench_runs(args)
    store = store_path(args)
    check_outputs(store)
    failed: CellsFailed | None = None
    try:
        results = run_bench(
            runs,
            store,
            backend=args.backend,
            workers=args.workers,
            address=args.address,
            device=device,
            progress=not args.no_progress,
            plugins=tuple(args.imports),
            fresh=args.fresh,
        )
    except CellsFailed as exc:
        failed, results = exc, exc.results
    except ValueError as exc:
        raise SystemExit(f"metagrad: {exc}") from exc
    # the outputs reflect the whole store, never only this run's rows
    everything = store_results(store) or results
    written = write_outputs(everything, store.parent, prefix=output_prefix(store))
    ran = sum(len(rows) for rows in results.values())
    total = sum(len(rows) for rows in everything.values())
    if total != ran:
        print(
            f"metagrad: this run scored or reused {ran} cells; the outputs cover all {total} rows of {store}"
        )
    if args.suite:  # a suite asked for by name: print its run's summary table too
        for suite, preset in results:
            summary = store.parent / f"{output_prefix(store)}{suite}_{preset}_summary.md"
            if summary.exists():
                print(summary.read_text())
    print_written(written, total, store)
    if failed is not None:
        raise SystemExit(
            f"metagrad: {len(failed.failures)} cell(s) failed and were not stored (listed above); "
            "they are retried when the same command runs again"
        )
    return 0


def add_parser(sub: Any) -> None:
    default = " + ".join(f"{s} {p}" for s, p in default_runs())
    parser = sub.add_parser("bench", help=f"the leaderboard: score estimators (default suite: {default})")
    parser.add_argument("suite", nargs="?", default=None, choices=list(SUITES))
    presets = "; ".join(f"{s.name}: {'|'.join(s.presets)}" for s in SUITES.values())
    parser.add_argument(
        "--preset",
        default=None,
        help=f"a preset of the suite (without a suite: of every default suite); {presets}",
    )
    parser.add_argument(
        "--store", default=None, metavar="FILE", help=f"result store (default {DEFAULT_STORE})"
    )
    parser.add_argument("--fresh", action="store_true", help="delete the store first instead of resuming")
    add_backend_args(parser)
    add_plugin_options(parser, option_owners(SUITES.values()))
    experiments = "; ".join(f"{s.name}: {','.join(s.experiments)}" for s in SUITES.values())
    parser.add_argument("--experiments", default=None, help=f"comma-separated; {experiments}")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--seeds",
        default=None,
        help="run every suite once per run seed (e.g. 0-4 or 0,1,2) into one store; also writes "
        "seed_table.md, the verdicts and fitted numbers of every claim per seed",
    )
    parser.set_defaults(func=run)
