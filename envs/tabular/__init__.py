"""Random tabular MDPs: task parameters, a batched torch rollout engine and Gymnasium faces.

* :mod:`~metagrad.envs.tabular.task`: :class:`TabularTask` (frozen parameters, separate from
  rollout state), :func:`random_task`, :func:`stack_tasks`, :class:`TaskDistribution`;
* :mod:`~metagrad.envs.tabular.sampling`: exact categorical draws (alias tables, :class:`RowSampler`);
* :mod:`~metagrad.envs.tabular.engine`: :func:`rollout`, the batched engine, and its time-major
  :class:`Trajectory`;
* :mod:`~metagrad.envs.tabular.gym`: :class:`TabularMDPEnv` and :class:`TabularMDPVectorEnv`.

Every public name is importable from ``metagrad.envs.tabular`` itself.
"""

from __future__ import annotations

from metagrad.envs.tabular.engine import (
    TimeMajorBatch,
    Trajectory,
    check_logits,
    expand_to_tasks,
    policy_log_probs,
    rollout,
    tabular_gather,
)
from metagrad.envs.tabular.gym import RENDER_FPS, TabularMDPEnv, TabularMDPVectorEnv, cell_strip
from metagrad.envs.tabular.sampling import (
    ALIAS_MAX_CATEGORIES,
    RowSampler,
    alias_table,
    sample_alias,
    sample_categorical,
)
from metagrad.envs.tabular.task import (
    DISTRIBUTION_KINDS,
    TabularTask,
    TaskDistribution,
    random_task,
    stack_tasks,
)

__all__ = [
    "ALIAS_MAX_CATEGORIES",
    "DISTRIBUTION_KINDS",
    "RENDER_FPS",
    "RowSampler",
    "TabularMDPEnv",
    "TabularMDPVectorEnv",
    "TabularTask",
    "TaskDistribution",
    "TimeMajorBatch",
    "Trajectory",
    "alias_table",
    "cell_strip",
    "check_logits",
    "expand_to_tasks",
    "policy_log_probs",
    "random_task",
    "rollout",
    "sample_alias",
    "sample_categorical",
    "stack_tasks",
    "tabular_gather",
]
