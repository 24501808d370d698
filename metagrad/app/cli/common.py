"""What the commands of ``metagrad`` share: the meaning of the common flags and the checks made
before any work starts.

Flags mean the same thing in every command: ``--store FILE`` is a result store (JSONL rows),
``--out FOLDER`` a folder that outputs are written into, ``--seeds`` run seeds with ranges
(``0-4``, ``0,1,2``), ``--n`` episodes per estimated stage, ``--device`` ``cpu`` or ``cuda[:N]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from metagrad.app.options import Option
from metagrad.app.options import parse_seeds as _parse_seeds
from metagrad.app.presenting.report import Outputs, output_paths
from metagrad.app.running.runner import RunResults
from metagrad.app.running.store import ResultStore, check_output_path

__all__ = [
    "DEFAULT_STORE",
    "add_backend_args",
    "add_plugin_options",
    "check_args",
    "check_device",
    "check_outputs",
    "given_options",
    "option_owners",
    "parse_seeds",
    "print_written",
    "set_threads",
    "store_path",
    "store_results",
]

DEFAULT_STORE = "results/rows.jsonl"


def set_threads(n: int) -> None:
    # 2-core machines: torch's default intra-op threads can be 10-400x slower under contention.
    if n < 1:
        raise SystemExit(f"metagrad: --threads must be >= 1, got {n}")
    torch.set_num_threads(n)


def check_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"metagrad: --device {device} requested but CUDA is not available")
    if not (device == "cpu" or device.startswith("cuda")):
        raise SystemExit(f"metagrad: --device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return device


def check_args(check: Callable[[], object]) -> None:
    """Run ``check``; its ``ValueError`` ends the command with one line."""
    try:
        check()
    except ValueError as exc:
        raise SystemExit(f"metagrad: {exc}") from exc


def parse_seeds(text: str) -> list[int]:
    """Run seeds from ``"0-4"``, ``"0,2,5"`` or ``"0-2,7"`` (in order, without repeats); bad text
    ends the command (:func:`metagrad.app.options.parse_seeds`)."""
    try:
        return list(_parse_seeds(text))
    except ValueError as exc:
        raise SystemExit(f"metagrad: {exc}") from exc


def given_options(args: argparse.Namespace, options: Iterable[Option]) -> dict[str, str]:
    """The option values given on the command line, by destination."""
    return {o.dest: getattr(args, o.dest) for o in options if getattr(args, o.dest, None) is not None}


def add_backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="local", choices=["local", "serial", "ray"])
    parser.add_argument("--workers", type=int, default=2, help="processes (local) or CPUs of a local Ray")
    parser.add_argument("--address", default=None, help="ray: address of a running cluster")
    parser.add_argument("--device", default="cpu")


def add_plugin_options(parser: argparse.ArgumentParser, owners: dict[str, tuple[Option, ...]]) -> None:
    """One ``--flag`` per distinct option of the plugins, its help naming the plugins that take it."""
    by_flag: dict[str, list[tuple[str, Option]]] = {}
    for owner, options in owners.items():
        for option in options:
            by_flag.setdefault(option.flag, []).append((owner, option))
    for flag, uses in by_flag.items():
        helps = dict.fromkeys(option.help for _, option in uses)
        text = "; ".join(helps) + f" [{', '.join(owner for owner, _ in uses)}]"
        parser.add_argument(flag, dest=uses[0][1].dest, default=None, metavar="VALUE", help=text)


def store_path(args: argparse.Namespace) -> Path:
    return Path(args.store or DEFAULT_STORE)


def check_outputs(store: Path) -> None:
    """The store and the fixed outputs beside it can be used (checked before any work)."""
    for path in (store, *output_paths(store).values()):
        check_output_path(path)


def store_results(store: Path) -> RunResults:
    """Every valid row of ``store`` by ``(suite, preset)`` (problems printed to stderr)."""
    loaded = ResultStore(store).load(warn=False)
    for problem in loaded.problems:
        print(f"metagrad: {problem}", file=sys.stderr)
    results: RunResults = {}
    for row in loaded.rows.values():
        results.setdefault((row.bench, row.preset), []).append(row)
    return results


def print_written(written: Outputs, total: int, store: Path) -> None:
    table = f"; seed table {written['seed_table']}" if "seed_table" in written.paths else ""
    print(
        f"{total} cells in {store}; leaderboard {written['leaderboard']}; report {written['report']}"
        f"{table}; per-run summaries and plots in {store.parent}/"
    )


def option_owners(plugins: Iterable[Any]) -> dict[str, tuple[Option, ...]]:
    """Plugin name -> its options (suites or comparisons)."""
    return {p.name: p.options for p in plugins}
