"""The ``metagrad`` command line: one module per command (``list``, ``perf``, ``bench``,
``report``, ``check``, ``compare``), each with its ``add_parser`` and ``run``; the common flags
and checks in :mod:`metagrad.app.cli.common`.

``bench`` and ``compare`` are built from the plugin registries (:data:`metagrad.app.suites.SUITES`,
:data:`metagrad.app.compare.COMPARISONS`): their choices, presets and options come from the
plugins, so adding a suite or a comparison needs no change here.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading

from metagrad.app.cli import bench, check, compare, listing, perf, report
from metagrad.app.cli.common import parse_seeds, set_threads
from metagrad.app.running.backends import BackendError, PluginError, configure_allocator, load_plugin
from metagrad.app.running.memory import InsufficientMemory
from metagrad.app.running.runner import BenchInterrupted, CellsFailed
from metagrad.app.running.store import StoreError

__all__ = ["build_parser", "main", "parse_seeds"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metagrad",
        description="Benchmark suite for gradient bias in meta-reinforcement learning: meta-gradient "
        "estimators scored against exact meta-gradients.",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (e.g. one that registers your estimator); repeatable",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (listing, perf, bench, report, check, compare):
        command.add_parser(sub)
    return parser


def _resume_line(argv: list[str], exc: KeyboardInterrupt, signum: int) -> str:
    """The one line printed on Ctrl-C / SIGTERM: what was kept and the command that goes on."""
    name = signal.Signals(signum).name
    again = shlex.join(["metagrad", *(a for a in argv if a != "--fresh")])
    if isinstance(exc, BenchInterrupted):
        return f"metagrad: interrupted ({name}); {exc}; resume with: {again}"
    if "bench" in argv:
        return f"metagrad: interrupted ({name}); the cells already stored are kept; resume with: {again}"
    return f"metagrad: interrupted ({name}); nothing was stored; run again with: {again}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        # the first SIGINT / SIGTERM ends the run cleanly; later ones wait for that to finish
        received.append(signum)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        signum = received[0] if received else signal.SIGINT
        print(_resume_line(argv, exc, signum), file=sys.stderr)
        return 128 + signum
    except (StoreError, InsufficientMemory, BackendError, PluginError, CellsFailed) as exc:
        raise SystemExit(f"metagrad: {exc}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str]) -> int:
    # --import first: the modules may register estimators, suites or comparisons the parser lists
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--import", dest="imports", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    plugins = [load_plugin(module) for module in known.imports]
    args = build_parser().parse_args(argv)
    args.imports = plugins  # the resolved forms, which every worker process imports too
    set_threads(args.threads)
    configure_allocator()
    return int(args.func(args))
