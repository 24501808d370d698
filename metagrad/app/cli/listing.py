"""``metagrad list [all|estimators|envs|presets|suites]``: what the suite offers (the module is
``listing``: a module named ``list`` would shadow the builtin in this package)."""

from __future__ import annotations

import argparse
from typing import Any

from metagrad.app.suites import SUITES
from metagrad.envs import ENV_IDS
from metagrad.estimators import ESTIMATORS

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    what = args.what
    if what in ("all", "estimators"):
        print("estimators:")
        for info in ESTIMATORS.values():
            print(f"  {info.name:<16} {info.summary}")
            print(
                f"  {'':<16} unbiased orders: {info.unbiasedness}; critic: {info.uses_critic}; "
                f"off-policy: {info.off_policy}; ref: {info.reference}"
                + (f"; params: {', '.join(info.params)}" if info.params else "")
            )
    if what in ("all", "envs"):
        print("environments:")
        for env_id, desc in ENV_IDS.items():
            print(f"  {env_id:<28} {desc}")
        print(
            f"  {'ALE/<Game>-v5':<28} any ALE game through metagrad.envs.atari.AtariVector "
            "(DeepMind preprocessing, ale-py vector env or Gymnasium AsyncVectorEnv)"
        )
        print(
            f"  {'MinAtar/<Game>-v1':<28} the five MinAtar games through metagrad.envs.minatar.MinAtarVector "
            "(10x10xC grids; extra metagrad[minatar])"
        )
    if what in ("all", "presets", "suites"):
        for suite in SUITES.values():
            when = "in the default run" if suite.in_default_run else "only when asked"
            print(f"suite {suite.name} ({when}): {suite.summary}")
            print(f"  presets (metagrad bench {suite.name} --preset NAME; default {suite.default_preset}):")
            for name, config in suite.presets.items():
                print(f"    {name:<13} {suite.describe_preset(config)}")
            print(f"  experiments: {', '.join(suite.experiments)}")
    return 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("list", help="list estimators, environments, suites and their presets")
    parser.add_argument(
        "what", nargs="?", default="all", choices=["all", "estimators", "envs", "presets", "suites"]
    )
    parser.set_defaults(func=run)
