"""Atari (ALE) with the standard DeepMind preprocessing, vectorised, raw scores kept apart.

Preprocessing (Mnih et al. 2015; Machado et al. 2018 for the evaluation protocol): up to 30
no-op actions at reset, frame skip 4 with a max-pool over the last two frames, 84x84 grey
frames, a stack of the last 4, FIRE at reset; for training also episodic life (a lost life is a
terminal for learning) with FIRE after each lost life, and rewards clipped to their sign. All of
it comes from what ale-py, Gymnasium and stable-baselines3 already provide:

* ``backend="ale"`` (default): ale-py's native ``AtariVectorEnv`` (C++ threads, preprocessing
  built in);
* ``backend="gymnasium"``: Gymnasium's ``AsyncVectorEnv`` over ``AtariPreprocessing`` +
  ``FrameStackObservation`` (+ stable-baselines3's ``FireResetEnv``), the fallback.

Both run whole games (terminated = game over, truncated = the frame limit): :class:`AtariVector`
marks life losses itself (``life_lost``), presses FIRE after them, and returns the clipped
training reward and the raw game reward separately, with the raw score of every finished game.
Observations are ``uint8 [N, 4, 84, 84]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import ale_py
import ale_py.roms
import gymnasium as gym
import numpy as np
from ale_py.vector_env import AtariVectorEnv
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation
from stable_baselines3.common.atari_wrappers import FireResetEnv

from metagrad.validation import check_choice, check_int, check_int_fields

__all__ = ["BACKENDS", "AtariConfig", "AtariStep", "AtariVector", "rom_id"]

BACKENDS = ("ale", "gymnasium")


def rom_id(game: str) -> str:
    """ALE rom id (``"space_invaders"``) from a game name in any common spelling
    (``"SpaceInvaders"``, ``"ALE/SpaceInvaders-v5"``, ``"SpaceInvadersNoFrameskip-v4"``)."""
    name = game.split("/")[-1]
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name)
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() if not name.islower() else name
    known = set(ale_py.roms.get_all_rom_ids())
    if snake not in known:
        raise ValueError(f"game: unknown Atari game {game!r} (rom id {snake!r}); e.g. pong, breakout")
    return snake


def _gym_id(rom: str) -> str:
    return "ALE/" + "".join(part.capitalize() for part in rom.split("_")) + "-v5"


@dataclass(frozen=True)
class AtariConfig:
    """The environment side of an Atari run.

    Attributes:
        game: any spelling accepted by :func:`rom_id`.
        num_envs: parallel games.
        training: episodic life (life loss is terminal for learning, FIRE after it) and clipped
            rewards in ``reward``; ``False`` for evaluation (raw rewards are always reported).
        noop_max, frame_skip, frame_stack, screen_size: the DeepMind settings.
        repeat_action_probability: sticky actions (0: the DeepMind setting).
        max_episode_frames: truncation (108 000 frames = 30 minutes of play).
        backend: ``"ale"`` or ``"gymnasium"``.
    """

    game: str = "pong"
    num_envs: int = 16
    training: bool = True
    noop_max: int = 30
    frame_skip: int = 4
    frame_stack: int = 4
    screen_size: int = 84
    repeat_action_probability: float = 0.0
    max_episode_frames: int = 108_000
    backend: str = "ale"

    def __post_init__(self) -> None:
        rom_id(self.game)
        check_int_fields(
            self, ("num_envs", "frame_skip", "frame_stack", "screen_size", "max_episode_frames"), 1
        )
        check_int("noop_max", self.noop_max, 0)
        check_choice("backend", self.backend, BACKENDS)

    def make(self) -> AtariVector:
        """The vector of games this config describes."""
        return AtariVector(self)


@dataclass(frozen=True)
class AtariStep:
    """One vector step. Arrays are ``[N]`` (``obs``: ``uint8 [N, stack, H, W]``).

    ``reward``: the training reward (sign-clipped when training); ``raw_reward``: the game's;
    ``terminated``: game over; ``truncated``: frame limit; ``life_lost``: a life was lost (and the
    game goes on) - a terminal for learning when training; ``episode_scores`` /
    ``episode_frames``: raw score and length of every game that ended at this step.
    """

    obs: np.ndarray
    reward: np.ndarray
    raw_reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    life_lost: np.ndarray
    episode_scores: list[float]
    episode_frames: list[int]


def _fire_action(rom: str) -> int | None:
    env = gym.make(_gym_id(rom))
    try:
        meanings = env.unwrapped.get_action_meanings()
    finally:
        env.close()
    return meanings.index("FIRE") if "FIRE" in meanings else None


def _make_gym_single(rom: str, config: AtariConfig):
    def thunk() -> gym.Env:
        env = gym.make(
            _gym_id(rom),
            frameskip=1,
            repeat_action_probability=config.repeat_action_probability,
            max_num_frames_per_episode=config.max_episode_frames,
        )
        env = AtariPreprocessing(
            env,
            noop_max=config.noop_max,
            frame_skip=config.frame_skip,
            screen_size=config.screen_size,
            terminal_on_life_loss=False,
            grayscale_obs=True,
        )
        if "FIRE" in env.unwrapped.get_action_meanings():
            env = FireResetEnv(env)
        return FrameStackObservation(env, config.frame_stack)

    return thunk


class AtariVector:
    """A vector of Atari games with DeepMind preprocessing (see the module docstring)."""

    def __init__(self, config: AtariConfig) -> None:
        gym.register_envs(ale_py)
        self.config = config
        self.rom = rom_id(config.game)
        self.num_envs = config.num_envs
        self._fire = _fire_action(self.rom)
        if config.backend == "ale":
            self._env = AtariVectorEnv(
                self.rom,
                config.num_envs,
                max_num_frames_per_episode=config.max_episode_frames,
                repeat_action_probability=config.repeat_action_probability,
                autoreset_mode="SameStep",
                img_height=config.screen_size,
                img_width=config.screen_size,
                grayscale=True,
                stack_num=config.frame_stack,
                frameskip=config.frame_skip,
                maxpool=True,
                noop_max=config.noop_max,
                episodic_life=False,
                reward_clipping=False,
                use_fire_reset=True,
            )
        else:
            self._env = gym.vector.AsyncVectorEnv(
                [_make_gym_single(self.rom, config) for _ in range(config.num_envs)],
                autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
            )
        self.single_action_space = self._env.single_action_space
        self.num_actions = int(self.single_action_space.n)
        self.obs_shape = (config.frame_stack, config.screen_size, config.screen_size)
        self._lives = np.zeros(self.num_envs, dtype=np.int64)
        self._score = np.zeros(self.num_envs, dtype=np.float64)
        self._frames = np.zeros(self.num_envs, dtype=np.int64)
        self._pending_fire = np.zeros(self.num_envs, dtype=bool)

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, info = self._env.reset(seed=seed)
        self._lives = np.asarray(info.get("lives", np.zeros(self.num_envs)), dtype=np.int64).copy()
        self._score[:] = 0.0
        self._frames[:] = 0
        self._pending_fire[:] = False
        return np.asarray(obs, dtype=np.uint8)

    def step(self, actions: Any) -> AtariStep:
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        if ((actions < 0) | (actions >= self.num_actions)).any():
            raise ValueError(f"actions: every action must lie in [0, {self.num_actions})")
        if self.config.training and self._fire is not None and self._pending_fire.any():
            actions = np.where(self._pending_fire, self._fire, actions)
        obs, raw, terminated, truncated, info = self._env.step(actions)
        raw = np.asarray(raw, dtype=np.float64)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        lives = np.asarray(info.get("lives", np.zeros(self.num_envs)), dtype=np.int64)
        done = terminated | truncated
        life_lost = (lives < self._lives) & ~done
        self._score += raw
        self._frames += self.config.frame_skip
        scores = [float(s) for s in self._score[done]]
        frames = [int(f) for f in self._frames[done]]
        self._score[done] = 0.0
        self._frames[done] = 0
        self._lives = lives.copy()  # after a game over: the new game's lives (same-step reset)
        self._pending_fire = life_lost.copy()
        reward = np.sign(raw) if self.config.training else raw
        return AtariStep(
            obs=np.asarray(obs, dtype=np.uint8),
            reward=reward.astype(np.float32),
            raw_reward=raw,
            terminated=terminated,
            truncated=truncated,
            life_lost=life_lost if self.config.training else np.zeros_like(life_lost),
            episode_scores=scores,
            episode_frames=frames,
        )

    def close(self) -> None:
        self._env.close()
