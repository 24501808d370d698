"""Gymnasium faces of LQR tasks: ``MetaGrad/LQR-v0`` (:class:`LQREnv`) and its vector env."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from metagrad.envs.lqr.task import LQR_DISTRIBUTIONS, LQRTask
from metagrad.seeding import numpy_generator
from metagrad.validation import check_int, check_real

__all__ = ["LQREnv", "LQRVectorEnv"]


def _single_task(task: LQRTask | None, task_seed: int | None, distribution: str, kwargs: dict) -> LQRTask:
    if task is not None:
        if not isinstance(task, LQRTask):
            raise ValueError(f"task: expected an LQRTask, got {type(task).__name__}")
        if kwargs:
            raise ValueError(f"task given: do not also pass distribution arguments {sorted(kwargs)}")
        return task
    family = LQR_DISTRIBUTIONS[distribution](**kwargs)
    seed = 0 if task_seed is None else check_int("task_seed", task_seed, 0)
    return family.sample(1, numpy_generator(seed, "lqr", "env_task")).unbind()[0]


def _box(shape: tuple[int, ...], bound: float | None = None) -> spaces.Box:
    high = np.inf if bound is None else bound
    return spaces.Box(-high, high, shape=shape, dtype=np.float64)


def _check_bound(action_bound: float | None) -> float | None:
    if action_bound is None:
        return None
    return check_real("action_bound", action_bound, minimum=0.0, open_min=True)


class LQREnv(gym.Env):
    """Gymnasium face of one :class:`LQRTask` (id ``MetaGrad/LQR-v0``).

    Observations are the state ``x_t`` (an unbounded float64 ``Box``) and actions the control
    ``u_t``, clipped to ``[-action_bound, action_bound]`` (a ``Box`` with those bounds; Stable
    Baselines3 needs finite ones). Within the bounds the env is the linear model exactly;
    ``action_bound=None`` never clips (an unbounded action ``Box``). The reward is ``r_t`` and
    episodes are truncated at the horizon. Pass ``task=`` or let ``task_seed`` draw one from the
    ``distribution`` (a name in :data:`LQR_DISTRIBUTIONS`, default point-mass navigation) with
    its keyword arguments. ``reset(options={"task": other})`` switches to another task of the same
    sizes (meta-RL: one task per episode). Render modes: ``"ansi"`` and ``"rgb_array"`` (the first
    two state coordinates: the agent white, the goal green).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: LQRTask | None = None,
        task_seed: int | None = None,
        render_mode: str | None = None,
        action_bound: float | None = 10.0,
        distribution: str = "navigation",
        **distribution_kwargs: Any,
    ) -> None:
        self.action_bound = _check_bound(action_bound)
        self.task = _single_task(task, task_seed, distribution, distribution_kwargs)
        if task is not None and task.batch_shape:
            raise ValueError(f"task: the Gymnasium env plays one task, got a batch of {task.num_tasks}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode: expected one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.observation_space = _box((self.task.state_dim,))
        self.action_space = _box((self.task.action_dim,), self.action_bound)
        self._set_task(self.task)
        self._x = self._m["mu0"].copy()
        self._t = 0

    def _set_task(self, task: LQRTask) -> None:
        self.task = task
        self._m = {name: x.numpy() for name, x in task.tensors("cpu", torch.float64).items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            other = options["task"]
            if not isinstance(other, LQRTask) or other.batch_shape:
                raise ValueError("options['task']: expected a single LQRTask")
            if (other.state_dim, other.action_dim) != (self.task.state_dim, self.task.action_dim):
                raise ValueError("options['task']: must have the sizes (n, m) of the env's task")
            self._set_task(other)
        noise = self.np_random.standard_normal(self.task.state_dim)
        self._x = self._m["mu0"] + self._m["S0_root"] @ noise
        self._t = 0
        return self._x.copy(), {"step": 0}

    def step(self, action):
        u = np.asarray(action, dtype=np.float64)
        if u.shape != (self.task.action_dim,) or not np.isfinite(u).all():
            raise ValueError(f"action: expected {self.task.action_dim} finite numbers, got {action!r}")
        if self.action_bound is not None:
            u = np.clip(u, -self.action_bound, self.action_bound)
        m, x = self._m, self._x
        offset = x - m["goal"]
        reward = -float(offset @ m["Q"] @ offset + u @ m["R"] @ u)
        noise = self.np_random.standard_normal(self.task.state_dim)
        self._x = m["A"] @ x + m["B"] @ u + m["W_root"] @ noise
        self._t += 1
        truncated = self._t >= self.task.horizon
        return self._x.copy(), reward, False, truncated, {"step": self._t}

    def render(self):
        if self.render_mode == "ansi":
            return f"t={self._t} x={np.array2string(self._x, precision=3)}"
        if self.render_mode == "rgb_array":
            return _frame(self._x, self._m["goal"], self._t / self.task.horizon)
        return None


def _frame(x: np.ndarray, goal: np.ndarray, progress: float, size: int = 64) -> np.ndarray:
    """``uint8 [size + 4, size, 3]``: the first two coordinates of the state (white) and goal
    (green) in a square around the origin, and a bar filled to ``progress``."""
    frame = np.zeros((size + 4, size, 3), dtype=np.uint8)
    extent = 1.5 * max(1.0, float(np.abs(goal[:2]).max()), float(np.abs(x[:2]).max()))

    def pixel(p: np.ndarray) -> tuple[int, int]:
        xy = np.append(p[:2], 0.0)[:2]
        col, row = ((xy / extent + 1.0) / 2.0 * (size - 1)).round().astype(int)
        return int(np.clip(size - 1 - row, 1, size - 2)), int(np.clip(col, 1, size - 2))

    for point, colour in ((goal, (0, 200, 0)), (x, (255, 255, 255))):
        r, c = pixel(point)
        frame[r - 1 : r + 2, c - 1 : c + 2] = colour
    frame[size + 1 : size + 3, : round(min(max(progress, 0.0), 1.0) * size)] = 255
    return frame


class LQRVectorEnv(VectorEnv):
    """``num_envs`` LQR episodes stepped together by torch (``gymnasium.make_vec("MetaGrad/LQR-v0")``).

    Every sub-environment plays the same task, or, given a batch of N tasks, sub-environment ``i``
    plays task ``i`` (``num_envs`` must then be N). Observations, rewards and flags are numpy
    arrays; actions are clipped to ``[-action_bound, action_bound]`` as in :class:`LQREnv`;
    autoreset follows Gymnasium's default ``NEXT_STEP`` mode (the step after a truncation resets
    that sub-environment, ignores its action and pays 0).
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        task: LQRTask | None = None,
        task_seed: int | None = None,
        device: str | torch.device = "cpu",
        action_bound: float | None = 10.0,
        distribution: str = "navigation",
        **distribution_kwargs: Any,
    ) -> None:
        self.num_envs = check_int("num_envs", num_envs, 1, numpy_ok=True)
        self.action_bound = _check_bound(action_bound)
        self.task = _single_task(task, task_seed, distribution, distribution_kwargs)
        if self.task.batch_shape and self.task.num_tasks != self.num_envs:
            raise ValueError(
                f"num_envs: a batch of {self.task.num_tasks} tasks needs num_envs = {self.task.num_tasks}"
            )
        self.device = torch.device(device)
        n, m = self.task.state_dim, self.task.action_dim
        self.single_observation_space, self.single_action_space = _box((n,)), _box((m,), self.action_bound)
        self.observation_space = _box((self.num_envs, n))
        self.action_space = _box((self.num_envs, m), self.action_bound)
        tables = self.task.tensors(self.device, torch.float64)
        self._m = {
            name: (x if self.task.batch_shape else x.expand(self.num_envs, *x.shape))
            for name, x in tables.items()
        }
        self._generator = torch.Generator(device=self.device)
        self._generator.seed()
        self._x = torch.zeros(self.num_envs, n, dtype=torch.float64, device=self.device)
        self._t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._needs_reset = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def _normal(self) -> torch.Tensor:
        shape = (self.num_envs, self.task.state_dim)
        return torch.randn(shape, generator=self._generator, device=self.device, dtype=torch.float64)

    def _initial(self) -> torch.Tensor:
        return self._m["mu0"] + (self._m["S0_root"] @ self._normal().unsqueeze(-1)).squeeze(-1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._generator.manual_seed(int(seed))
        self._x = self._initial()
        self._t.zero_()
        self._needs_reset.zero_()
        return self._x.cpu().numpy(), {}

    def step(self, actions):
        u = torch.as_tensor(np.asarray(actions, dtype=np.float64), device=self.device)
        if u.shape != (self.num_envs, self.task.action_dim) or not torch.isfinite(u).all():
            raise ValueError(
                f"actions: expected finite numbers of shape {[self.num_envs, self.task.action_dim]}"
            )
        if self.action_bound is not None:
            u = u.clamp(-self.action_bound, self.action_bound)
        m, x = self._m, self._x
        offset = x - m["goal"]
        quad = (offset.unsqueeze(-2) @ m["Q"] @ offset.unsqueeze(-1)).reshape(-1)
        rewards = -(quad + (u.unsqueeze(-2) @ m["R"] @ u.unsqueeze(-1)).reshape(-1))
        next_x = (m["A"] @ x.unsqueeze(-1) + m["B"] @ u.unsqueeze(-1)).squeeze(-1)
        next_x = next_x + (m["W_root"] @ self._normal().unsqueeze(-1)).squeeze(-1)
        self._t += 1
        reset_mask = self._needs_reset  # NEXT_STEP autoreset: truncated last step, restart now
        if reset_mask.any():
            next_x = torch.where(reset_mask.unsqueeze(-1), self._initial(), next_x)
            rewards = torch.where(reset_mask, torch.zeros_like(rewards), rewards)
            self._t = torch.where(reset_mask, torch.zeros_like(self._t), self._t)
        truncated = (self._t >= self.task.horizon) & ~reset_mask
        self._x = next_x
        self._needs_reset = truncated.clone()
        return (
            self._x.cpu().numpy(),
            rewards.cpu().numpy(),
            torch.zeros_like(truncated).cpu().numpy(),
            truncated.cpu().numpy(),
            {},
        )
