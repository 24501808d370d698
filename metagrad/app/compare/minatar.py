"""``metagrad compare minatar``: the Atari comparison's agents on MinAtar (Young & Tian 2019).

The same runs, tables, curves and meta-parameter plots as :mod:`metagrad.app.compare.atari` (one
copy of that code), on the ``minatar`` package's games (the optional extra
``metagrad[minatar]``) with the MinAtar network (one 3x3 convolution, 128 units) for every agent,
stable-baselines3's A2C and PPO included. A frame is one MinAtar step. The default budget is the
one the README's findings use: one game, 3 seeds, 5 agents, at a frame budget where MGRL's
meta-parameters move and MGRL-pg and MGRL-LVC part ways on this 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from metagrad.app.compare.atari import AGENTS, AtariCompareConfig, compare_options, run_atari_compare
from metagrad.app.compare.comparison import Comparison

__all__ = ["MinAtarCompareConfig"]


@dataclass(frozen=True)
class MinAtarCompareConfig(AtariCompareConfig):
    """:class:`~metagrad.app.compare.atari.AtariCompareConfig` with MinAtar defaults."""

    NAME: ClassVar[str] = "minatar"

    games: tuple[str, ...] = ("MinAtar/Breakout-v1",)
    agents: tuple[str, ...] = AGENTS
    seeds: tuple[int, ...] = (0, 1, 2)
    frames: int = 500_000
    workers: int = 2


COMPARISON = Comparison(
    name="minatar",
    summary="SB3 A2C and PPO, the suite's A2C, MGRL-pg and MGRL-LVC on MinAtar games",
    config_class=MinAtarCompareConfig,
    run=run_atari_compare,
    table="minatar_compare.md",
    options=compare_options(),
)
