"""``metagrad check --against FILE``: recompute the stored cells with the current code and exit 1
when a metric moved beyond its stored interval (:mod:`metagrad.app.judging.check`); ``--store
FILE`` also stores the fresh rows."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from metagrad.app.cli.common import add_backend_args, check_args, check_device
from metagrad.app.judging.check import Movement, check_against
from metagrad.app.running.backends import CellFailure
from metagrad.app.running.runner import CellsFailed
from metagrad.validation import check_real

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    check_args(lambda: check_real("--z", args.z, minimum=0.0, open_min=True))
    movements: list[Movement] = []
    failures: list[CellFailure] = []
    try:
        movements, fresh, problems = check_against(
            args.against,
            backend=args.backend,
            workers=args.workers,
            address=args.address,
            device=device,
            plugins=tuple(args.imports),
            z=args.z,
            progress=not args.no_progress,
            fresh_out=args.store,
        )
    except CellsFailed as exc:
        (movements, fresh, problems), failures = exc.results, exc.failures
    except ValueError as exc:
        raise SystemExit(f"metagrad: {exc}") from exc
    for problem in problems:
        print(f"metagrad: {problem}", file=sys.stderr)
    for movement in movements:
        print(f"MOVED {movement}")
    for failure in failures:
        print(f"FAILED {failure}")
    status = "FAIL" if movements or failures else "OK"
    print(
        f"{status}: {len(fresh)} cells recomputed, {len(movements)} metric(s) moved beyond their interval"
        + (f", {len(failures)} cell(s) could not be recomputed" if failures else "")
    )
    return 1 if movements or failures else 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("check", help="recompute stored cells; exit 1 if a metric moved beyond its CI")
    parser.add_argument(
        "--against", required=True, metavar="FILE", help="a result store written by metagrad bench"
    )
    parser.add_argument("--z", type=float, default=1.96, help="half-width in standard errors (default 1.96)")
    parser.add_argument(
        "--store", default=None, metavar="FILE", help="also store the fresh rows in this store"
    )
    add_backend_args(parser)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
