"""``metagrad report``: rebuild the reproduction report, the leaderboard, the figures and the seed
table from the stored rows (``--store FILE``); ``--strict`` exits 1 when a claim FAILs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from metagrad.app.cli.common import (
    DEFAULT_STORE,
    check_outputs,
    parse_seeds,
    print_written,
    store_path,
    store_results,
)
from metagrad.app.presenting.report import failed, output_prefix, seed_table, write_outputs

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    store = store_path(args)
    check_outputs(store)
    results = store_results(store)
    if not results:
        raise SystemExit(f"metagrad: no result rows in {store}; run `metagrad bench` first")
    present = sorted({r.seed for rows in results.values() for r in rows})
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if seeds is not None:
        missing = sorted(set(seeds) - set(present))
        if missing:
            raise SystemExit(f"metagrad: --seeds: no rows of seed(s) {missing} in {store} (it has {present})")
    written = write_outputs(results, store.parent, seeds, prefix=output_prefix(store))
    for seed, claims in written.claims.items():
        for claim in claims:
            print(f"seed {seed} {claim.verdict:<12} {claim.name}: {claim.evidence}")
    if len(written.claims) > 1:
        print(seed_table(written.claims))
    print_written(written, sum(len(v) for v in results.values()), store)
    failures = failed(written.claims)
    if args.strict and failures:
        print(
            "metagrad: --strict: FAIL in " + ", ".join(f"{name} (seed {seed})" for seed, name in failures),
            file=sys.stderr,
        )
        return 1
    return 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("report", help="reproduction report and leaderboard from the stored rows")
    parser.add_argument(
        "--store", default=None, metavar="FILE", help=f"result store (default {DEFAULT_STORE})"
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help="judge the claims on these run seeds of the store (e.g. 0-4; default: every seed) and "
        "print / write the seed table (seed_table.md) when there are several",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when any claim FAILs")
    parser.set_defaults(func=run)
