"""The ipd suite's cost and memory models (``Suite.cost``, ``Suite.memory_estimate``)."""

from __future__ import annotations

from metagrad.app.running.memory import MemoryEstimate, staged_estimate
from metagrad.app.suite import Cell
from metagrad.app.suites.ipd.config import IPDBenchConfig
from metagrad.lola import LolaSpec, episodes_per_lola_estimate

__all__ = ["cell_cost", "memory_estimate"]


# An exact LOLA target and its estimate's closed-form stages cost about as much as this many
# sampled episodes per lookahead step; seconds per sampled joint step (fitted on the default
# suite's cells on the 2-core machine, one thread: only ratios matter)
_EXACT_STAGE_EPISODES = 8
_SECONDS_PER_STEP = 4.5e-7


def cell_cost(config: IPDBenchConfig, cell: Cell) -> float:
    """The cell's expected compute in seconds, roughly (``Suite.cost``: longest cells first)."""
    spec = cell.spec
    assert isinstance(spec, LolaSpec)
    exact = (spec.lookahead_steps + 1) * sum(
        stage.is_exact for stage in (spec.inner, spec.hessian, spec.outer)
    )
    episodes = episodes_per_lola_estimate(spec) + _EXACT_STAGE_EPISODES * (exact + 1)
    return _SECONDS_PER_STEP * config.num_pairs * config.repeats * spec.horizon * episodes


def memory_estimate(config: IPDBenchConfig, cell: Cell) -> MemoryEstimate:
    """A cell's peak memory (:mod:`metagrad.app.running.memory`): its largest sampled stage and the
    Jacobian graphs kept for the outer gradient (the policy pairs are a few numbers each)."""
    uses_n = cell.experiment in ("decomposition", "sweep_lr", "sweep_steps")
    spec = cell.spec
    assert isinstance(spec, LolaSpec)
    return staged_estimate(
        spec,
        episodes=episodes_per_lola_estimate(spec),
        horizon=config.horizon,
        repeats=config.repeats,
        peak_per_step=220,
        kept_per_step=65,
        fixed=config.num_pairs * 10_000,
        flags=("--n", "--repeats") if uses_n else ("--repeats",),
    )
