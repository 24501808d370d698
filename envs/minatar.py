"""MinAtar (Young & Tian 2019): five miniature Atari games on a 10x10 grid, vectorised like
:class:`metagrad.envs.atari.AtariVector`.

Each game (Asterix, Breakout, Freeway, Seaquest, Space Invaders) shows a ``10 x 10 x C`` binary
state (one channel per kind of object, ``C`` from 4 to 10); rewards are the game's points (small
non-negative integers); one step is one frame (there is no frame skip). The settings of the
MinAtar paper are the defaults: sticky actions with probability 0.1 and difficulty ramping. Games
run whole (no lives to mark; ``life_lost`` is always false); ``max_episode_steps`` truncates
runaway games.

:class:`MinAtarVector` plays ``num_envs`` games of the ``minatar`` package (the optional extra
``metagrad[minatar]``) with a same-step reset and returns :class:`metagrad.envs.atari.AtariStep`
records: observations ``float32 [N, C, 10, 10]`` (channels first, values 0 or 1), the reward (the
game's, which is already small), the raw reward, the flags and the score and length of every game
that ended. Ids: ``MinAtar/Breakout-v1`` (the minimal action set, as the ``minatar`` Gymnasium
registration), ``minatar:breakout`` or ``MinAtar/Breakout-v0`` (all 6 actions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit, TransformObservation

from metagrad.envs.atari import AtariConfig, AtariStep
from metagrad.validation import check_int, check_int_fields, check_real

try:  # the optional extra metagrad[minatar]
    import minatar
    import minatar.gym
except ImportError:  # pragma: no cover - exercised only without the extra
    minatar = None

__all__ = [
    "GAMES",
    "MinAtarConfig",
    "MinAtarVector",
    "game_config",
    "is_minatar",
    "minatar_game",
    "minatar_gym_env",
]

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
_PREFIXES = ("minatar/", "minatar:")


def is_minatar(game: str) -> bool:
    """Whether ``game`` names a MinAtar game (``MinAtar/<Game>-v0|1`` or ``minatar:<game>``)."""
    return game.lower().startswith(_PREFIXES)


def minatar_game(game: str) -> tuple[str, bool]:
    """``(game, minimal_action_set)`` from an id: ``MinAtar/SpaceInvaders-v1`` -> ``("space_invaders",
    True)``; ``-v0`` means all 6 actions; ``minatar:<game>`` the minimal set."""
    name = game.split("/", 1)[-1].split(":", 1)[-1]
    version = re.search(r"-v(\d+)$", name)
    name = re.sub(r"-v\d+$", "", name)
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() if not name.islower() else name
    if not is_minatar(game) or snake not in GAMES:
        raise ValueError(f"game: unknown MinAtar game {game!r}; known: MinAtar/<Game>-v1 for {GAMES}")
    return snake, version is None or version.group(1) != "0"


def _require_minatar() -> None:
    if minatar is None:
        raise ValueError(
            "game: MinAtar needs the `minatar` package: pip install -c constraints.txt -e '.[minatar]'"
        )


@dataclass(frozen=True)
class MinAtarConfig:
    """The environment side of a MinAtar run.

    Attributes:
        game: a MinAtar id (:func:`minatar_game`).
        num_envs: parallel games.
        training: kept for symmetry with :class:`~metagrad.envs.atari.AtariConfig` (MinAtar has
            no lives and no reward clipping, so training and evaluation play alike).
        sticky_action_prob: probability of repeating the previous action (0.1 in the paper).
        difficulty_ramping: the games speed up over time (the paper's setting).
        max_episode_steps: truncation of a game.
    """

    game: str = "MinAtar/Breakout-v1"
    num_envs: int = 16
    training: bool = True
    sticky_action_prob: float = 0.1
    difficulty_ramping: bool = True
    max_episode_steps: int = 100_000

    def __post_init__(self) -> None:
        minatar_game(self.game)
        check_int_fields(self, ("num_envs", "max_episode_steps"), 1)
        check_real("sticky_action_prob", self.sticky_action_prob, minimum=0.0, maximum=1.0)

    @property
    def frame_skip(self) -> int:
        """Frames per agent step: 1 (MinAtar has no frame skip)."""
        return 1

    def make(self) -> MinAtarVector:
        """The vector of games this config describes."""
        return MinAtarVector(self)


class MinAtarVector:
    """A vector of MinAtar games (see the module docstring); the interface of
    :class:`~metagrad.envs.atari.AtariVector`."""

    def __init__(self, config: MinAtarConfig) -> None:
        _require_minatar()
        self.config = config
        self.game, minimal = minatar_game(config.game)
        self.num_envs = config.num_envs
        self._games = [
            minatar.Environment(
                self.game,
                sticky_action_prob=config.sticky_action_prob,
                difficulty_ramping=config.difficulty_ramping,
            )
            for _ in range(config.num_envs)
        ]
        first = self._games[0]
        self._action_set = np.asarray(
            first.minimal_action_set() if minimal else list(range(first.num_actions())), dtype=np.int64
        )
        self.num_actions = len(self._action_set)
        self.obs_shape = (first.state_shape()[2], *first.state_shape()[:2])
        self._score = np.zeros(self.num_envs, dtype=np.float64)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)

    def _obs(self) -> np.ndarray:
        states = np.stack([g.state() for g in self._games])  # [N, 10, 10, C] bool
        return np.ascontiguousarray(states.transpose(0, 3, 1, 2), dtype=np.float32)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start every game; ``seed`` seeds game ``i`` with ``seed + i`` (its dynamics and sticky actions)."""
        if seed is not None:
            check_int("seed", seed, 0, numpy_ok=True)
        for i, g in enumerate(self._games):
            if seed is not None:
                g.seed(int(seed) + i)
            g.reset()
        self._score[:] = 0.0
        self._steps[:] = 0
        return self._obs()

    def step(self, actions: Any) -> AtariStep:
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        if ((actions < 0) | (actions >= self.num_actions)).any():
            raise ValueError(f"actions: every action must lie in [0, {self.num_actions})")
        raw = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        for i, (g, a) in enumerate(zip(self._games, self._action_set[actions], strict=True)):
            reward, done = g.act(int(a))
            raw[i], terminated[i] = reward, done
        self._steps += 1
        truncated = ~terminated & (self._steps >= self.config.max_episode_steps)
        self._score += raw
        done = terminated | truncated
        scores = [float(s) for s in self._score[done]]
        lengths = [int(n) for n in self._steps[done]]
        for i in np.flatnonzero(done):  # same-step reset: the next observation starts a new game
            self._games[i].reset()
        self._score[done] = 0.0
        self._steps[done] = 0
        return AtariStep(
            obs=self._obs(),
            reward=raw.astype(np.float32),
            raw_reward=raw,
            terminated=terminated,
            truncated=truncated,
            life_lost=np.zeros(self.num_envs, dtype=bool),
            episode_scores=scores,
            episode_frames=lengths,
        )

    def close(self) -> None:
        """Nothing to release (the games are plain Python objects)."""


def game_config(game: str, **kwargs: Any) -> AtariConfig | MinAtarConfig:
    """The environment config of ``game``: a :class:`MinAtarConfig` for MinAtar ids, otherwise an
    :class:`~metagrad.envs.atari.AtariConfig` (keyword arguments go to the config; ``backend``
    applies to ALE games only)."""
    if is_minatar(game):
        kwargs.pop("backend", None)
        return MinAtarConfig(game, **kwargs)
    return AtariConfig(game, **kwargs)


def minatar_gym_env(config: MinAtarConfig) -> gym.Env:
    """One game of ``config`` as a Gymnasium env (for libraries that take single envs, e.g.
    stable-baselines3): the ``minatar`` package's env with the same settings as
    :class:`MinAtarVector`, channels-first ``float32 [C, 10, 10]`` observations and truncation at
    ``max_episode_steps``."""
    _require_minatar()
    game, minimal = minatar_game(config.game)
    env = minatar.gym.BaseEnv(
        game,
        use_minimal_action_set=minimal,
        sticky_action_prob=config.sticky_action_prob,
        difficulty_ramping=config.difficulty_ramping,
    )
    h, w, c = env.game.state_shape()
    space = gym.spaces.Box(0.0, 1.0, (c, h, w), np.float32)
    env = TransformObservation(env, lambda o: np.ascontiguousarray(o.transpose(2, 0, 1), np.float32), space)
    return TimeLimit(env, config.max_episode_steps)
