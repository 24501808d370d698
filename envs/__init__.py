"""Environments of the metagrad suite: tabular MDPs (more games join in later modules).

Importing this package registers the Gymnasium ids below (``gymnasium.make`` also accepts
``"envs:MetaGrad/TabularMDP-v0"``, which imports it on demand).
"""

from __future__ import annotations

import gymnasium

from envs.tabular import (
    TabularMDPEnv,
    TabularMDPVectorEnv,
    TabularTask,
    Trajectory,
    policy_log_probs,
    random_task,
    rollout,
    sample_categorical,
    tabular_gather,
)

__all__ = [
    "ENV_IDS",
    "TabularMDPEnv",
    "TabularMDPVectorEnv",
    "TabularTask",
    "Trajectory",
    "policy_log_probs",
    "random_task",
    "rollout",
    "sample_categorical",
    "tabular_gather",
]

ENV_IDS: dict[str, str] = {
    "MetaGrad/TabularMDP-v0": (
        "random tabular MDP (Tang et al. 2021; Liu et al. 2022), truncated at the horizon"
    ),
}


def _register() -> None:
    if "MetaGrad/TabularMDP-v0" not in gymnasium.registry:
        gymnasium.register(
            id="MetaGrad/TabularMDP-v0",
            entry_point="envs.tabular:TabularMDPEnv",
            vector_entry_point="envs.tabular:TabularMDPVectorEnv",
        )


_register()
