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

:class:`MinAtarEnv` is one game as a Gymnasium env that passes ``gymnasium.utils.env_checker.check_env``
(the ``minatar`` package's own env does not: its ``reset(seed=...)`` never seeds Gymnasium's
generator). ``import metagrad`` registers it in the suite's namespace, one id per game and action
set: ``gymnasium.make("MetaGrad/MinAtar-Breakout-v1")`` (minimal action set; ``-v0``: all 6
actions), or ``gymnasium.make("metagrad:MetaGrad/MinAtar-Breakout-v1")`` from a fresh interpreter.
The ids stay clear of the package's ``MinAtar/...`` ids, which its ``register_envs()`` would
register with its own env. This module imports ``minatar`` (and the Atari module) only when a game
is built, so registering costs nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit

from metagrad.validation import check_int, check_int_fields, check_real

if TYPE_CHECKING:
    from metagrad.envs.atari import AtariConfig, AtariStep

__all__ = [
    "GAMES",
    "GYM_IDS",
    "MinAtarConfig",
    "MinAtarEnv",
    "MinAtarVector",
    "game_config",
    "is_minatar",
    "minatar_game",
    "minatar_gym_env",
    "register_minatar_envs",
]

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
_PREFIXES = ("minatar/", "minatar:")


def _title(game: str) -> str:
    return "".join(part.title() for part in game.split("_"))


# Gymnasium id -> the suite's game id (v1: minimal action set, v0: all 6 actions)
GYM_IDS: dict[str, str] = {
    f"MetaGrad/MinAtar-{_title(game)}-v{version}": f"MinAtar/{_title(game)}-v{version}"
    for game in GAMES
    for version in (1, 0)
}


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


def _require_minatar() -> ModuleType:
    """The ``minatar`` package (the optional extra ``metagrad[minatar]``), imported on first use."""
    try:
        import minatar
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ValueError(
            "game: MinAtar needs the `minatar` package: pip install -c constraints.txt -e '.[minatar]'"
        ) from None
    return minatar


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
        minatar = _require_minatar()
        from metagrad.envs.atari import AtariStep

        self._record = AtariStep
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
        return self._record(
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
    from metagrad.envs.atari import AtariConfig

    if is_minatar(game):
        kwargs.pop("backend", None)
        return MinAtarConfig(game, **kwargs)
    return AtariConfig(game, **kwargs)


class MinAtarEnv(gym.Env):
    """One MinAtar game as a Gymnasium env: channels-first ``float32 [C, 10, 10]`` observations
    (values 0 or 1, as :class:`MinAtarVector`), the game's points as rewards, ``terminated`` when
    the game ends (never truncated: wrap it in ``TimeLimit``, or pass ``max_episode_steps`` to
    ``gymnasium.make``).

    ``reset(seed=s)`` seeds Gymnasium's generator and the game's own (dynamics and sticky actions)
    with ``s``, as the ``minatar`` package seeds it, so a seeded game matches game ``i`` of a
    :class:`MinAtarVector` reset with ``seed = s - i``; ``reset()`` continues the game's stream.

    Args:
        game: a MinAtar id (:func:`minatar_game`), e.g. ``"MinAtar/Breakout-v1"``.
        sticky_action_prob, difficulty_ramping: as :class:`MinAtarConfig`.
        render_mode: ``None`` or ``"rgb_array"`` (``uint8 [10 scale, 10 scale, 3]``, one colour per
            channel, the last active channel on top).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 30}
    # Okabe-Ito colours (and two greys) for up to 10 channels
    PALETTE: ClassVar[np.ndarray] = np.array(
        [
            [0, 0, 0],
            [230, 159, 0],
            [86, 180, 233],
            [0, 158, 115],
            [240, 228, 66],
            [0, 114, 178],
            [213, 94, 0],
            [204, 121, 167],
            [255, 255, 255],
            [153, 153, 153],
            [90, 90, 90],
        ],
        dtype=np.uint8,
    )

    def __init__(
        self,
        game: str = "MinAtar/Breakout-v1",
        *,
        sticky_action_prob: float = 0.1,
        difficulty_ramping: bool = True,
        render_mode: str | None = None,
        scale: int = 16,
    ) -> None:
        name, minimal = minatar_game(game)
        check_real("sticky_action_prob", sticky_action_prob, minimum=0.0, maximum=1.0)
        check_int("scale", scale, 1)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode: expected None or one of {self.metadata['render_modes']}")
        minatar = _require_minatar()
        self.game_id, self.render_mode, self.scale = game, render_mode, scale
        self._game = minatar.Environment(
            name, sticky_action_prob=sticky_action_prob, difficulty_ramping=difficulty_ramping
        )
        actions = self._game.minimal_action_set() if minimal else list(range(self._game.num_actions()))
        self._action_set = [int(a) for a in actions]
        h, w, c = self._game.state_shape()
        self.action_space = gym.spaces.Discrete(len(self._action_set))
        self.observation_space = gym.spaces.Box(0.0, 1.0, (c, h, w), np.float32)

    def _obs(self) -> np.ndarray:
        return np.ascontiguousarray(self._game.state().transpose(2, 0, 1), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._game.seed(int(seed))
        self._game.reset()
        return self._obs(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action: expected an integer in [0, {self.action_space.n}), got {action!r}")
        reward, done = self._game.act(self._action_set[int(action)])
        return self._obs(), float(reward), bool(done), False, {}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        state = self._game.state()  # [10, 10, C] bool
        top = np.amax(state * np.arange(1, state.shape[-1] + 1), axis=-1)  # 0: empty
        image = self.PALETTE[np.minimum(top, len(self.PALETTE) - 1)]
        return np.repeat(np.repeat(image, self.scale, axis=0), self.scale, axis=1)


def register_minatar_envs() -> None:
    """Register :data:`GYM_IDS` with Gymnasium (idempotent; ``import metagrad`` calls it)."""
    for env_id, game in GYM_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="metagrad.envs.minatar:MinAtarEnv", kwargs={"game": game})


def minatar_gym_env(config: MinAtarConfig) -> gym.Env:
    """One game of ``config`` as a Gymnasium env (for libraries that take single envs, e.g.
    stable-baselines3): :class:`MinAtarEnv` with the same settings as :class:`MinAtarVector`,
    truncated at ``max_episode_steps``."""
    env = MinAtarEnv(
        config.game,
        sticky_action_prob=config.sticky_action_prob,
        difficulty_ramping=config.difficulty_ramping,
    )
    return TimeLimit(env, config.max_episode_steps)


register_minatar_envs()
