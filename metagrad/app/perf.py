"""Throughput benchmarks (run by ``metagrad perf``; never a timed test)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import metagrad.envs  # noqa: F401  (registers the Gymnasium ids)
from metagrad.agents.a2c import A2CAgent, A2CConfig
from metagrad.agents.lola import GameConfig, LearnerConfig, MemoryOneLearner, iteration_gradients
from metagrad.agents.maml import MAMLConfig, MAMLLearner
from metagrad.agents.mgrl import MGRLAgent, MGRLConfig
from metagrad.app.compare.atari import make_sb3_agent, sb3_vec_env
from metagrad.decomposed import MetaGradientSpec
from metagrad.envs.ipd import ipd_rollout
from metagrad.envs.minatar import game_config
from metagrad.envs.tabular import TabularTask, TaskDistribution, random_task, rollout

__all__ = [
    "TRAINING_AGENTS",
    "atari_env_throughput",
    "ipd_rollout_throughput",
    "lola_dice_update_rate",
    "maml_meta_iteration_time",
    "python_loop_throughput",
    "rollout_throughput",
    "sb3_env_throughput",
    "training_throughput",
]


def rollout_throughput(
    task: TabularTask | None = None,
    num_episodes: int = 4096,
    *,
    repeats: int = 20,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, float]:
    """Env-steps/s of :func:`metagrad.envs.tabular.rollout` with differentiable log-probs recorded."""
    task = random_task() if task is None else task
    logits = torch.zeros(task.num_states, task.num_actions, dtype=dtype, device=device, requires_grad=True)
    gen = torch.Generator(device=device).manual_seed(seed)
    seconds = _seconds_per_call(
        lambda: rollout(task, logits, num_episodes, generator=gen), repeats, warmup=3, device=device
    )
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


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _seconds_per_call(fn: Callable[[], object], calls: int, *, warmup: int, device: str) -> float:
    """Mean wall seconds of ``fn()`` over ``calls`` calls after ``warmup`` untimed ones (CUDA
    work is synchronised before the clock starts and before it stops)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / calls


def ipd_rollout_throughput(
    num_episodes: int = 4096, horizon: int = 100, *, repeats: int = 10, device: str = "cpu", seed: int = 0
) -> dict[str, float]:
    """Joint steps/s of :func:`metagrad.envs.ipd.ipd_rollout` for one policy pair, no gradient (float64)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    init = torch.Generator().manual_seed(seed)
    theta1 = torch.randn(5, generator=init, dtype=torch.float64).to(device)
    theta2 = torch.randn(5, generator=init, dtype=torch.float64).to(device)
    with torch.no_grad():
        seconds = _seconds_per_call(
            lambda: ipd_rollout(theta1, theta2, num_episodes, horizon, generator=gen),
            repeats,
            warmup=3,
            device=device,
        )
    return {
        "steps_per_s": num_episodes * horizon / seconds,
        "seconds_per_rollout": seconds,
        "episodes": num_episodes,
        "horizon": horizon,
    }


def lola_dice_update_rate(
    n_inner: int = 128,
    n_outer: int = 128,
    horizon: int = 100,
    *,
    updates: int = 50,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, float]:
    """Simultaneous LOLA-DiCE updates/s of two agents (inner + outer batches of ``horizon`` steps)."""

    config = LearnerConfig("lola", "lola_dice", n_inner=n_inner, n_outer=n_outer)
    game = GameConfig(horizon=horizon)
    init = torch.Generator().manual_seed(seed)
    learners = [
        MemoryOneLearner(config, torch.randn(5, generator=init, dtype=torch.float64).to(device), agent)
        for agent in (1, 2)
    ]
    gen = torch.Generator(device=device).manual_seed(seed)
    buffer: deque = deque(maxlen=config.replay_batches)

    def update() -> None:
        grads, _ = iteration_gradients(learners, game, gen, buffer)
        for learner in learners:
            learner.step(grads[learner.agent])

    seconds = _seconds_per_call(update, updates, warmup=5, device=device)
    return {
        "updates_per_s": 1.0 / seconds,
        "seconds_per_update": seconds,
        "n_inner": n_inner,
        "n_outer": n_outer,
    }


def maml_meta_iteration_time(
    meta_batch: int = 20,
    n: int = 32,
    inner_steps: int = 1,
    *,
    estimator: str = "dice",
    iterations: int = 20,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, float]:
    """Seconds per MAML meta-iteration (all stages sampled, ``n`` episodes each) on 20 x 5 MDPs,
    the whole meta-batch in one batched call, task sampling and optimiser step included."""
    dist = TaskDistribution()
    spec = MetaGradientSpec.from_combination("lll", estimator, n, inner_steps=inner_steps, inner_lr=10.0)
    learner = MAMLLearner(MAMLConfig(spec=spec, meta_batch=meta_batch), 20, 5, device=device)
    rng, gen = dist.train_rng(seed), torch.Generator(device=device).manual_seed(seed)

    def iteration() -> None:
        learner.step(learner.meta_gradient(dist.sample(meta_batch, rng), gen))

    seconds = _seconds_per_call(iteration, iterations, warmup=3, device=device)
    return {"seconds_per_iteration": seconds, "meta_batch": meta_batch, "n": n, "inner_steps": inner_steps}


def atari_env_throughput(
    game: str = "breakout", num_envs: int = 16, steps: int = 300, *, backend: str = "ale", seed: int = 0
) -> dict[str, float]:
    """Environment frames/s of the suite's vector env of ``game`` under random actions: ALE games
    through :class:`metagrad.envs.atari.AtariVector` (4 frames per step), MinAtar ids through
    :class:`metagrad.envs.minatar.MinAtarVector` (1 frame per step)."""
    env = game_config(game, num_envs=num_envs, backend=backend).make()
    rng = np.random.default_rng(seed)
    try:
        env.reset(seed=seed)
        seconds = steps * _seconds_per_call(
            lambda: env.step(rng.integers(0, env.num_actions, num_envs)), steps, warmup=10, device="cpu"
        )
    finally:
        env.close()
    frames = steps * num_envs * env.config.frame_skip
    return {
        "frames_per_s": frames / seconds,
        "num_envs": num_envs,
        "env": type(env).__name__,
        "backend": backend,
    }


def sb3_env_throughput(
    game: str = "breakout", num_envs: int = 16, steps: int = 300, *, seed: int = 0
) -> dict[str, float]:
    """Environment frames/s of stable-baselines3's vector env of the same game (its Atari wrappers and
    frame stack, or the MinAtar Gymnasium env) under random actions."""
    env = sb3_vec_env(game, num_envs, seed)
    rng = np.random.default_rng(seed)
    n = int(env.action_space.n)
    try:
        env.reset()
        seconds = steps * _seconds_per_call(
            lambda: env.step(rng.integers(0, n, num_envs)), steps, warmup=10, device="cpu"
        )
    finally:
        env.close()
    frames = steps * num_envs * game_config(game, num_envs=1).frame_skip
    return {"frames_per_s": frames / seconds, "num_envs": num_envs}


TRAINING_AGENTS = ("a2c", "mgrl_pg", "mgrl_lvc", "sb3_a2c", "sb3_ppo")


def training_throughput(
    game: str = "breakout",
    agents: tuple[str, ...] = TRAINING_AGENTS,
    *,
    num_envs: int = 16,
    chunk_steps: int = 2048,
    rounds: int = 2,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Training frames/s of each agent on ``game``, measured side by side in one process: every
    agent is built and warmed up, then the agents train ``chunk_steps`` agent steps (x the frame
    skip) in turn for ``rounds`` rounds, so that load from elsewhere hits all of them alike.
    ``mgrl_*``: MGRL with K = 2 and the named inner estimator; ``sb3_*``: stable-baselines3 with
    the comparison's settings (:func:`metagrad.app.compare.atari.make_sb3_agent`). Each entry also
    gives the ratio to ``sb3_a2c`` when it was measured."""
    frames = chunk_steps * game_config(game, num_envs=1).frame_skip
    env_config = game_config(game, num_envs=num_envs)
    a2c = A2CConfig(num_envs=num_envs)
    trainers: dict[str, Callable[[], None]] = {}
    closers: list[Callable[[], None]] = []
    try:
        for agent in agents:
            if agent.startswith("sb3_"):
                model = make_sb3_agent(agent, game, num_envs, seed, device)
                closers.append(model.get_env().close)
                steps = chunk_steps

                def train(model=model, steps=steps) -> None:
                    model.learn(total_timesteps=steps, reset_num_timesteps=False)

            else:
                runner = (
                    A2CAgent(a2c, env_config, seed=seed, device=device)
                    if agent == "a2c"
                    else MGRLAgent(
                        MGRLConfig(a2c, estimator=agent.split("_", 1)[1]),
                        env_config,
                        seed=seed,
                        device=device,
                    )
                )
                closers.append(runner.close)

                def train(runner=runner) -> None:
                    runner.train(frames)

            trainers[agent] = train
        for train in trainers.values():  # warm-up
            train()
        seconds = dict.fromkeys(trainers, 0.0)
        for _ in range(rounds):
            for agent, train in trainers.items():
                seconds[agent] += _seconds_per_call(train, 1, warmup=0, device=device)
    finally:
        for close in closers:
            close()
    out = {agent: {"frames_per_s": frames / (s / rounds)} for agent, s in seconds.items()}
    if "sb3_a2c" in out:
        for entry in out.values():
            entry["ratio_to_sb3_a2c"] = entry["frames_per_s"] / out["sb3_a2c"]["frames_per_s"]
    return out
