"""The tabular suite's cost and memory models (``Suite.cost``, ``Suite.memory_estimate``)."""

from __future__ import annotations

import math

from metagrad.app.running.memory import MemoryEstimate, staged_estimate
from metagrad.app.suite import Cell
from metagrad.app.suites.tabular.cells import task_config
from metagrad.app.suites.tabular.config import TabularBenchConfig
from metagrad.decomposed import MetaGradientSpec, episodes_per_estimate
from metagrad.derivatives import DerivativeSpec
from metagrad.staged import StageSpec

__all__ = ["cell_cost", "memory_estimate"]


# The exact stages' work in env-step equivalents: one stage at one inner step costs about as much as
# sampling this many episodes on the 20-state tasks, plus one env step per this many multiply-adds
# of the dense value recursions on larger state spaces; and the seconds per env-step equivalent
# (fitted on the default suite's cells on the 2-core machine, one thread: only ratios matter).
_EXACT_STAGE_EPISODES = 8
_MULTIPLY_ADDS_PER_STEP = 3000
_SECONDS_PER_STEP = 1.0e-6


def cell_cost(config: TabularBenchConfig, cell: Cell) -> float:
    """The cell's expected compute in seconds, roughly (``Suite.cost``: longest cells first)."""
    spec = cell.spec
    S, A, H = task_config(config, cell).num_states, config.num_actions, config.horizon
    repeats = cell.estimates(config)
    if isinstance(spec, DerivativeSpec):  # hessian_scoring: n episodes, one backward pass per row
        rows = S * A if spec.derivative == "hessian" else 1
        return _SECONDS_PER_STEP * cell.num_tasks(config) * repeats * H * spec.n * (1 + rows / 10)
    assert isinstance(spec, MetaGradientSpec)
    stages = (spec.inner_steps + 1) * (
        1 + sum(stage.is_exact for stage in (spec.inner, spec.hessian, spec.outer))
    )
    values = stages * repeats * S * S * A * H / _MULTIPLY_ADDS_PER_STEP  # critics and exact stages
    episodes = episodes_per_estimate(spec) + _EXACT_STAGE_EPISODES * stages
    return _SECONDS_PER_STEP * cell.num_tasks(config) * (repeats * H * episodes + values)


def memory_estimate(config: TabularBenchConfig, cell: Cell) -> MemoryEstimate:
    """A cell's peak memory (:mod:`metagrad.app.running.memory`): its largest sampled stage, the Jacobian
    graphs kept for the outer gradient, and the tasks (transition tables and alias tables)."""
    S, A = task_config(config, cell).num_states, config.num_actions
    repeats = cell.estimates(config)
    fixed = cell.num_tasks(config) * (40 * S * S * A + 16 * repeats * S * A + 10_000)
    if isinstance(cell.spec, DerivativeSpec):  # hessian_scoring: one batch of n episodes per estimate
        stage = StageSpec(cell.spec.estimator, cell.spec.n)
        return staged_estimate(
            MetaGradientSpec(inner=stage),
            episodes=cell.spec.n,
            horizon=config.horizon,
            repeats=repeats,
            peak_per_step=200,
            kept_per_step=25,
            fixed=fixed + cell.num_tasks(config) * repeats * (S * A) ** 2 * 8,
            flags=("--ope-n", "--repeats"),
            fixed_flags=("--num-tasks", "--repeats"),
        )
    uses_n = cell.experiment in ("decomposition", "sweep_k", "sweep_alpha")
    spec = cell.spec
    assert isinstance(spec, MetaGradientSpec)
    # an MLMC inner stage: its expected episodes (a rare high level costs more; see MLMC)
    return staged_estimate(
        spec,
        episodes=math.ceil(episodes_per_estimate(spec)),
        horizon=config.horizon,
        repeats=repeats,
        peak_per_step=200,
        kept_per_step=25,
        fixed=fixed,
        flags=("--n", "--repeats") if uses_n else ("--repeats",),
        fixed_flags=("--num-tasks",),
    )
