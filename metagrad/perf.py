"""Throughput benchmarks (run by ``metagrad perf``; never a timed test)."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the Gymnasium ids)
from envs.tabular import TabularTask, random_task, rollout

__all__ = ["python_loop_throughput", "rollout_throughput"]


def rollout_throughput(
    task: TabularTask | None = None,
    num_episodes: int = 4096,
    *,
    repeats: int = 20,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, float]:
    """Env-steps/s of :func:`envs.tabular.rollout` with differentiable log-probs recorded."""
    task = random_task() if task is None else task
    logits = torch.zeros(task.num_states, task.num_actions, dtype=dtype, device=device, requires_grad=True)
    gen = torch.Generator(device=device).manual_seed(seed)
    for _ in range(3):
        rollout(task, logits, num_episodes, generator=gen)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        traj = rollout(task, logits, num_episodes, generator=gen)
    traj.log_probs.sum().item()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    steps = num_episodes * task.horizon
    return {
        "steps_per_s": steps / seconds,
        "seconds_per_rollout": seconds,
        "episodes": num_episodes,
        "horizon": task.horizon,
    }


def python_loop_throughput(
    task: TabularTask | None = None, num_episodes: int = 200, seed: int = 0
) -> dict[str, float]:
    """Env-steps/s of a plain Python loop over the Gymnasium env, sampling a softmax policy with numpy."""
    task = random_task() if task is None else task
    env = gym.make("MetaGrad/TabularMDP-v0", task=task)
    pi = np.full((task.num_states, task.num_actions), 1.0 / task.num_actions)
    log_pi = np.log(pi)
    rng = np.random.default_rng(seed)
    steps = 0
    start = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    for _ in range(num_episodes):
        done = False
        log_probs = []
        while not done:
            a = int(rng.choice(task.num_actions, p=pi[obs]))
            log_probs.append(log_pi[obs, a])
            obs, _, term, trunc, _ = env.step(a)
            done = term or trunc
            steps += 1
        obs, _ = env.reset()
    seconds = time.perf_counter() - start
    return {"steps_per_s": steps / seconds, "episodes": num_episodes}
