"""``metagrad compare NAME``: learners trained against each other (the comparison registry
:data:`metagrad.app.compare.COMPARISONS`); outputs go into the folder ``--out`` (default
``results``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from metagrad.app.cli.common import add_plugin_options, check_device, given_options, option_owners
from metagrad.app.compare import COMPARISONS, Comparison, get_comparison
from metagrad.app.options import collect_overrides
from metagrad.app.running.store import check_output_path

__all__ = ["add_parser", "compare_config", "run"]


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    comparison, config = compare_config(args)
    check_output_path(Path(args.out) / comparison.table_path(args.out).name)
    rows = comparison.run(config, args.out, device=device, progress=not args.no_progress)
    print(comparison.table_path(args.out).read_text())
    print(f"wrote {len(rows)} runs to {args.out}/ (JSONL rows, curves CSV, table, plots)")
    return 0


def compare_config(args: argparse.Namespace) -> tuple[Comparison, Any]:
    """The comparison and its validated config of a ``compare`` call (nothing runs before this)."""
    comparison = get_comparison(args.suite)
    every = {o.dest: o for c in COMPARISONS.values() for o in c.options}
    given = given_options(args, every.values())
    for dest in given:
        if not any(o.dest == dest for o in comparison.options):
            raise SystemExit(
                f"metagrad: --{dest.replace('_', '-')} is not an option of compare {comparison.name}"
            )
    try:
        config = comparison.config_class(**collect_overrides(comparison.options, given))
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"metagrad: bad compare configuration: {exc}") from exc
    return comparison, config


def add_parser(sub: Any) -> None:
    summaries = "; ".join(f"{c.name}: {c.summary}" for c in COMPARISONS.values())
    parser = sub.add_parser("compare", help=f"train learners against each other ({summaries})")
    parser.add_argument("suite", choices=list(COMPARISONS))
    add_plugin_options(parser, option_owners(COMPARISONS.values()))
    parser.add_argument("--out", default="results", metavar="FOLDER", help="output folder (default results)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
