"""Gymnasium faces of a tabular MDP: :class:`TabularMDPEnv` (``MetaGrad/TabularMDP-v0``) and the
vector env stepped by the batched engine's samplers (``gymnasium.make_vec``)."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from metagrad.envs.tabular.sampling import sample_categorical
from metagrad.envs.tabular.task import TabularTask, random_task
from metagrad.validation import check_choice, check_int

__all__ = ["RENDER_FPS", "TabularMDPEnv", "TabularMDPVectorEnv", "cell_strip"]


def _task_from_kwargs(task: TabularTask | None, seed: int | None, task_kwargs: dict) -> TabularTask:
    if task is not None:
        if not isinstance(task, TabularTask):
            raise ValueError(f"task: expected a TabularTask, got {type(task).__name__}")
        if task_kwargs:
            raise ValueError(f"task given: do not also pass generator arguments {sorted(task_kwargs)}")
        if task.batch_shape:
            raise ValueError(f"task: the Gymnasium env plays one task, got a batch of {task.num_tasks}")
        return task
    return random_task(seed=0 if seed is None else seed, **task_kwargs)


RENDER_FPS = 4


def cell_strip(colours: Any, progress: float, cell: int = 16) -> np.ndarray:
    """An RGB frame (``uint8 [cell + 4, n * cell, 3]``): one square per row of ``colours [n, 3]``
    and, below, a bar filled to ``progress`` (the share of the episode played)."""
    colours = np.asarray(colours, dtype=np.uint8)
    width = len(colours) * cell
    frame = np.zeros((cell + 4, width, 3), dtype=np.uint8)
    frame[:cell] = np.repeat(colours, cell, axis=0)[None]
    frame[cell + 1 : cell + 3, : round(min(max(progress, 0.0), 1.0) * width)] = 255
    return frame


class TabularMDPEnv(gym.Env):
    """Gymnasium face of a :class:`TabularTask` (id ``MetaGrad/TabularMDP-v0``).

    Observations (``numpy.int64``, as ``Discrete`` samples are) and actions are ``Discrete``;
    episodes are truncated at the horizon (never terminated). Pass ``task=`` or let ``task_seed``
    and the :func:`random_task` keyword arguments draw one. ``info["step"]`` counts steps within
    the episode. Render modes: ``"ansi"`` (a line of text) and ``"rgb_array"`` (one square per
    state, the current one lit, over the episode's progress; what SB3's ``make_vec_env`` asks for).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": RENDER_FPS}

    def __init__(
        self,
        task: TabularTask | None = None,
        task_seed: int | None = None,
        render_mode: str | None = None,
        **task_kwargs: Any,
    ) -> None:
        self.task = _task_from_kwargs(task, task_seed, task_kwargs)
        if render_mode is not None:
            check_choice("render_mode", render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode
        self.observation_space = spaces.Discrete(self.task.num_states)
        self.action_space = spaces.Discrete(self.task.num_actions)
        self._P = self.task.P.numpy()
        self._R = self.task.R.numpy()
        self._init = self.task.init.numpy()
        self._state = 0
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = int(self.np_random.choice(self.task.num_states, p=self._init))
        self._t = 0
        return np.int64(self._state), {"step": 0}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action: expected an integer in [0, {self.task.num_actions}), got {action!r}")
        a = int(action)
        reward = float(self._R[self._state, a])
        self._state = int(self.np_random.choice(self.task.num_states, p=self._P[self._state, a]))
        self._t += 1
        truncated = self._t >= self.task.horizon
        return np.int64(self._state), reward, False, truncated, {"step": self._t}

    def render(self):
        if self.render_mode == "ansi":
            return f"t={self._t} state={self._state}"
        if self.render_mode == "rgb_array":
            colours = np.full((self.task.num_states, 3), 60, dtype=np.uint8)
            colours[self._state] = 255
            return cell_strip(colours, self._t / self.task.horizon)
        return None


class TabularMDPVectorEnv(VectorEnv):
    """``num_envs`` copies of one tabular MDP stepped by the batched torch engine.

    Reached through ``gymnasium.make_vec("MetaGrad/TabularMDP-v0", num_envs=N)``. Observations
    and rewards are numpy arrays; autoreset follows Gymnasium's default ``NEXT_STEP`` mode (the
    step after a truncation resets that sub-environment and ignores its action).
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        task: TabularTask | None = None,
        task_seed: int | None = None,
        device: str | torch.device = "cpu",
        **task_kwargs: Any,
    ) -> None:
        check_int("num_envs", num_envs, numpy_ok=True)
        self.task = _task_from_kwargs(task, task_seed, task_kwargs)
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.single_observation_space = spaces.Discrete(self.task.num_states)
        self.single_action_space = spaces.Discrete(self.task.num_actions)
        self.observation_space = spaces.MultiDiscrete(np.full(self.num_envs, self.task.num_states))
        self.action_space = spaces.MultiDiscrete(np.full(self.num_envs, self.task.num_actions))
        self._tables = self.task.tensors(self.device, torch.float64)
        self._sampler, self._init_cdf = self.task.samplers(self.device, torch.float64)
        self._generator = torch.Generator(device=self.device)
        self._generator.seed()
        self._states = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._needs_reset = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def _sample_init(self, n: int) -> torch.Tensor:
        u = torch.rand(n, generator=self._generator, device=self.device, dtype=torch.float64)
        return sample_categorical(self._init_cdf, u)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._generator.manual_seed(int(seed))
        self._states = self._sample_init(self.num_envs)
        self._t.zero_()
        self._needs_reset.zero_()
        return self._states.cpu().numpy(), {}

    def step(self, actions):
        a = torch.as_tensor(np.asarray(actions), dtype=torch.long, device=self.device).reshape(-1)
        if a.shape[0] != self.num_envs:
            raise ValueError(f"actions: expected {self.num_envs} actions, got {a.shape[0]}")
        if ((a < 0) | (a >= self.task.num_actions)).any():
            raise ValueError(f"actions: every action must lie in [0, {self.task.num_actions})")
        A = self.task.num_actions
        u = torch.rand(self.num_envs, generator=self._generator, device=self.device, dtype=torch.float64)
        rewards = self._tables["R"][self._states, a]
        next_states = self._sampler.sample(self._states * A + a, u)
        self._t += 1
        # NEXT_STEP autoreset: sub-environments that truncated last step restart now.
        reset_mask = self._needs_reset
        if reset_mask.any():
            next_states = torch.where(reset_mask, self._sample_init(self.num_envs), next_states)
            rewards = torch.where(reset_mask, torch.zeros_like(rewards), rewards)
            self._t = torch.where(reset_mask, torch.zeros_like(self._t), self._t)
        truncated = (self._t >= self.task.horizon) & ~reset_mask
        self._states = next_states
        self._needs_reset = truncated.clone()
        terminated = torch.zeros_like(truncated)
        return (
            self._states.cpu().numpy(),
            rewards.cpu().numpy(),
            terminated.cpu().numpy(),
            truncated.cpu().numpy(),
            {},
        )
