"""The cells of an Atari run: per game, a paired cell per paired estimator, then a
reference-view cell per estimator, bound to the run config."""

from __future__ import annotations

from metagrad.app.suite import Cell, bind_cells
from metagrad.app.suites.atari.config import AtariBenchConfig

__all__ = ["make_cells"]


def make_cells(config: AtariBenchConfig) -> list[Cell]:
    """Per game: a paired cell per paired estimator, then a reference-view cell per estimator."""
    cells: list[Cell] = []
    for game in config.games:
        tags = {"game": game}
        if "paired" in config.experiments:
            cells += [
                Cell("paired", est, config.spec(est, paired=True), config.num_envs, tags=tags)
                for est in config.paired_estimators
            ]
        if "reference" in config.experiments:
            cells += [
                Cell("reference", est, config.spec(est), config.num_envs, tags=tags)
                for est in config.estimators
            ]
    return bind_cells(config, cells)
