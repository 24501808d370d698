"""Environments of the metagrad suite (``metagrad.envs``): tabular MDPs and iterated matrix
games (IPD, IMP); Atari lives in :mod:`metagrad.envs.atari`.

``import metagrad`` (or this package) registers the Gymnasium ids below. In a fresh interpreter,
``gymnasium.make("metagrad:MetaGrad/TabularMDP-v0")`` imports ``metagrad`` on demand (Gymnasium's
``module:EnvId`` form).
"""

from __future__ import annotations

import gymnasium

import metagrad.envs.minatar  # noqa: F401  (registers the MinAtar Gymnasium ids)
from metagrad.envs.ipd import (
    ALWAYS_COOPERATE,
    ALWAYS_DEFECT,
    GAMES,
    TIT_FOR_TAT,
    IPDEnv,
    IPDParallelEnv,
    IPDTrajectory,
    MatrixGame,
    get_game,
    ipd_rollout,
    memory_one_log_probs,
    memory_one_logits,
    per_step_average,
)
from metagrad.envs.tabular import (
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
    "ALWAYS_COOPERATE",
    "ALWAYS_DEFECT",
    "ENV_IDS",
    "GAMES",
    "TIT_FOR_TAT",
    "IPDEnv",
    "IPDParallelEnv",
    "IPDTrajectory",
    "MatrixGame",
    "TabularMDPEnv",
    "TabularMDPVectorEnv",
    "TabularTask",
    "Trajectory",
    "get_game",
    "ipd_rollout",
    "memory_one_log_probs",
    "memory_one_logits",
    "per_step_average",
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
    "MetaGrad/IPD-v0": "Iterated Prisoner's Dilemma vs a fixed memory-one opponent (default tit-for-tat)",
    "MetaGrad/IMP-v0": "Iterated Matching Pennies (the agent matches) against a fixed memory-one opponent",
    "MetaGrad/MinAtar-<Game>-v1": "the five MinAtar games, one Gymnasium env each (v0: all 6 actions)",
    "MetaGrad/LQR-v0": "linear-quadratic-Gaussian task (default: point-mass navigation), truncated",
}


def _register() -> None:
    if "MetaGrad/TabularMDP-v0" not in gymnasium.registry:
        gymnasium.register(
            id="MetaGrad/TabularMDP-v0",
            entry_point="metagrad.envs.tabular:TabularMDPEnv",
            vector_entry_point="metagrad.envs.tabular:TabularMDPVectorEnv",
        )
    for env_id, game in (("MetaGrad/IPD-v0", "ipd"), ("MetaGrad/IMP-v0", "imp")):
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="metagrad.envs.ipd:IPDEnv", kwargs={"game": game})
    if "MetaGrad/LQR-v0" not in gymnasium.registry:
        lqr = "metagrad.envs.lqr"
        gymnasium.register("MetaGrad/LQR-v0", f"{lqr}:LQREnv", vector_entry_point=f"{lqr}:LQRVectorEnv")


_register()
