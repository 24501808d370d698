"""Throughput benchmarks (run by ``metagrad perf``, :mod:`metagrad.app.cli.perf`; never a timed
test)."""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import metagrad.envs  # noqa: F401  (registers the Gymnasium ids)
from metagrad.agents.a2c import A2CAgent, A2CConfig
from metagrad.agents.lola import GameConfig, LearnerConfig, MemoryOneLearner, iteration_gradients
from metagrad.agents.maml import MAMLConfig, MAMLLearner
from metagrad.agents.mgrl import MGRLAgent, MGRLConfig
from metagrad.app.compare.atari import close_env, make_sb3_agent, sb3_vec_env
from metagrad.app.running.runner import peak_memory_mib
from metagrad.app.suite import Cell
from metagrad.app.suites.tabular import TabularBenchConfig, cached_tasks, run_cell
from metagrad.critics import CriticSpec
from metagrad.decomposed import MetaGradientSpec
from metagrad.envs.ipd import STATE_SWAP, IPDTrajectory, get_game, ipd_rollout
from metagrad.envs.minatar import game_config
from metagrad.envs.tabular import (
    TabularTask,
    TaskDistribution,
    Trajectory,
    alias_table,
    random_task,
    rollout,
)
from metagrad.validation import check_choice, check_int

__all__ = [
    "TRAINING_AGENTS",
    "atari_env_throughput",
    "ceiling_ratios",
    "fitted_exponent",
    "ipd_rollout_throughput",
    "large_s_cell_time",
    "large_s_timings",
    "lola_dice_update_rate",
    "maml_meta_iteration_time",
    "python_loop_throughput",
    "reference_ipd_rollout",
    "reference_tabular_rollout",
    "reference_tabular_tables",
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
    n = int(getattr(env.action_space, "n"))  # noqa: B009 (a Discrete space)
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
    trainers: dict[str, Callable[[], object]] = {}
    closers: list[Callable[[], None]] = []
    try:
        for agent in agents:
            if agent.startswith("sb3_"):
                model = make_sb3_agent(agent, game, num_envs, seed, device)
                closers.append(functools.partial(close_env, model))
                train: Callable[[], object] = functools.partial(
                    model.learn, total_timesteps=chunk_steps, reset_num_timesteps=False
                )

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
                train = functools.partial(runner.train, frames)

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


# --------------------------------------------------------------------------------------------
# The ceiling: the fastest pure-torch rollouts we could write for the benchmark jobs, with none
# of the engines' generality (one policy or pair, one task, no validation). `metagrad perf`
# times them alternately with the engines in one process; the engines should reach >= 0.9x.
# --------------------------------------------------------------------------------------------


def reference_tabular_tables(
    task: TabularTask, dtype: torch.dtype, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(P [S, A, S] float64, R [S * A] in dtype, the start CDF [S] float64)`` on ``device`` for
    :func:`reference_tabular_rollout` (prepared once per task, as the engine caches its own)."""
    return (
        task.P.to(device=device, dtype=torch.float64),
        task.R.to(device=device, dtype=dtype).reshape(-1),
        task.init.to(device=device, dtype=torch.float64).cumsum(0),
    )


def reference_tabular_rollout(
    task: TabularTask,
    logits: torch.Tensor,
    num_episodes: int,
    tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    generator: torch.Generator | None = None,
) -> Trajectory:
    """The ceiling for :func:`metagrad.envs.tabular.rollout`: one policy ``[S, A]`` in one task.

    One draw per step: the pair ``(a_t, s_{t+1})`` from its joint law ``pi(a|s) P(s'|s, a)``
    (alias tables over the ``A S`` pairs of each state, float64); all uniforms drawn once and
    split into bucket and fraction once; per step one ``index_select`` per table on flat tables
    and the next row read from a table, results written into preallocated outputs; actions,
    states, rewards and differentiable log-probs decoded and gathered once at the end.
    """
    S, A, H, B = task.num_states, task.num_actions, task.horizon, num_episodes
    device, dtype = logits.device, logits.dtype
    K = A * S
    P, R, init_cdf = tables
    with torch.no_grad():
        joint = torch.softmax(logits.detach().double(), -1).unsqueeze(-1) * P  # [S, A, S]
        threshold, alias = (t.reshape(-1) for t in alias_table(joint.reshape(S, K)))
        u = torch.rand((H + 1, B), generator=generator, device=device, dtype=torch.float64)
        x = u[:H] * K
        bucket = x.floor().clamp_(max=K - 1)
        frac = (x - bucket).unbind(0)
        bucket = bucket.long().unbind(0)
        codes = torch.empty((H, B), dtype=torch.long, device=device)  # a_t S + s_{t+1}
        states = torch.empty((H + 1, B), dtype=torch.long, device=device)
        states[0] = (u[H].unsqueeze(-1) >= init_cdf).sum(-1).clamp_(max=S - 1)
        pair = torch.arange(K, device=device)
        next_state, action = pair % S, pair // S  # decoded by lookup
        for t, (j, f) in enumerate(zip(bucket, frac, strict=True)):
            flat = torch.add(j, states[t], alpha=K)
            code = torch.where(
                f < threshold.index_select(0, flat), j, alias.index_select(0, flat), out=codes[t]
            )
            torch.index_select(next_state, 0, code, out=states[t + 1])
        actions = action.index_select(0, codes.view(-1)).view(H, B)
        state_action = (states[:H] * A + actions).reshape(-1)
        rewards = R.index_select(0, state_action)
    log_probs = torch.log_softmax(logits, -1).reshape(-1).index_select(0, state_action).view(H, B)
    terminated, truncated = Trajectory.horizon_flags((H, B), device)
    return Trajectory(
        states=states[:H],
        actions=actions,
        rewards=rewards.view(H, B),
        log_probs=log_probs,
        behaviour_log_probs=log_probs.detach(),
        discounts=torch.full((H, B), task.gamma, dtype=dtype, device=device),
        terminated=terminated,
        truncated=truncated,
        final_states=states[H],
    )


def reference_ipd_rollout(
    theta1: torch.Tensor,
    theta2: torch.Tensor,
    num_episodes: int,
    horizon: int = 100,
    *,
    game: str = "ipd",
    gamma: float = 0.96,
    steps: int = 3,
    generator: torch.Generator | None = None,
) -> IPDTrajectory:
    """The ceiling for :func:`metagrad.envs.ipd.ipd_rollout`: one pair of memory-one policies ``[5]``.

    One uniform per ``steps`` steps draws the next ``steps`` joint outcomes from their exact
    joint law (alias tables over the ``4^steps`` outcome sequences from each of the 5 states),
    16-bit arithmetic to decode, one ``index_select`` per output table.
    """
    H, B, device = horizon, num_episodes, theta1.device
    dtype = torch.promote_types(theta1.dtype, theta2.dtype)
    blocks = -(-H // steps)
    with torch.no_grad():
        p1 = torch.sigmoid(theta1.detach().double())
        p2 = torch.sigmoid(theta2.detach().double()[list(STATE_SWAP)])
        Q = torch.stack([p1 * p2, p1 * (1 - p2), (1 - p1) * p2, (1 - p1) * (1 - p2)], dim=-1)  # [5, 4]
        seq = Q
        for _ in range(steps - 1):  # extend each outcome sequence by one outcome
            last = torch.arange(seq.shape[-1], device=device) % 4
            seq = (seq.unsqueeze(-1) * Q[1 + last].unsqueeze(0)).flatten(-2)
        K = seq.shape[-1]
        threshold, alias = (t.reshape(-1) for t in alias_table(seq))
        u = torch.rand((blocks, B), generator=generator, device=device, dtype=torch.float64) * K
        bucket = u.floor().clamp_(max=K - 1)
        frac = u - bucket
        bucket = bucket.long()
        codes = torch.empty((blocks, B), dtype=torch.long, device=device)
        s = torch.zeros(B, dtype=torch.long, device=device)
        for j, f, out in zip(bucket.unbind(0), frac.unbind(0), codes.unbind(0), strict=True):
            row = torch.add(j, s, alpha=K)
            code = torch.where(f < threshold.index_select(0, row), j, alias.index_select(0, row), out=out)
            s = torch.bitwise_and(code, 3).add_(1)
        small = torch.int16
        shifts = torch.arange(2 * (steps - 1), -1, -2, device=device, dtype=small).reshape(1, steps, 1)
        outcome = torch.bitwise_and(codes.to(small).unsqueeze(1) >> shifts, 3).reshape(blocks * steps, B)[:H]
        states = torch.zeros((H + 1, B), dtype=small, device=device)
        torch.add(outcome, 1, out=states[1:])
        index = outcome.reshape(-1).to(torch.int32)
        payoffs = get_game(game).payoffs(dtype, device)
        rewards1, rewards2 = payoffs[0].index_select(0, index), payoffs[1].index_select(0, index)
        a1, a2 = outcome >> 1, torch.bitwise_and(outcome, 1)
        pick1 = (2 * states[:-1] + a1).reshape(-1).to(torch.int32)
        pick2 = (2 * states[:-1] + a2).reshape(-1).to(torch.int32)
    table1 = torch.nn.functional.logsigmoid(torch.stack([theta1, -theta1], -1)).reshape(-1)
    theta2s = theta2[list(STATE_SWAP)]
    table2 = torch.nn.functional.logsigmoid(torch.stack([theta2s, -theta2s], -1)).reshape(-1)
    lp1 = table1.index_select(0, pick1).view(H, B)
    lp2 = table2.index_select(0, pick2).view(H, B)
    terminated, truncated = IPDTrajectory.horizon_flags((H, B), device)
    return IPDTrajectory(
        states=states[:-1].long(),
        actions1=a1.long(),
        actions2=a2.long(),
        log_probs1=lp1,
        log_probs2=lp2,
        behaviour_log_probs1=lp1.detach(),
        behaviour_log_probs2=lp2.detach(),
        rewards1=rewards1.view(H, B),
        rewards2=rewards2.view(H, B),
        discounts=torch.full((H, B), gamma, dtype=dtype, device=device),
        terminated=terminated,
        truncated=truncated,
        final_states=states[-1].long(),
    )


def _cpu_seconds_per_call(fn: Callable[[], object], calls: int) -> float:
    """Mean CPU seconds of this process (all its threads) per call of ``fn()``."""
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


def _alternate(
    engine: Callable[[], object],
    reference: Callable[[], object],
    *,
    rounds: int,
    calls: int,
    device: str,
) -> tuple[list[float], list[float]]:
    """Seconds per call of ``engine`` and ``reference`` per round, each round timing blocks of
    ``calls`` calls in the order engine, reference, reference, engine (neither gains from
    running first or second). On CPU the clock is this process's CPU time, which other jobs on
    the machine distort far less than wall time; on CUDA, synchronised wall time."""

    def timed(fn: Callable[[], object]) -> float:
        if device.startswith("cuda"):
            return _seconds_per_call(fn, calls, warmup=0, device=device)
        return _cpu_seconds_per_call(fn, calls)

    for fn in (engine, reference):
        fn()
    engine_s, reference_s = [], []
    for _ in range(rounds):
        e1, r1, r2, e2 = timed(engine), timed(reference), timed(reference), timed(engine)
        engine_s.append((e1 + e2) / 2)
        reference_s.append((r1 + r2) / 2)
    return engine_s, reference_s


def _ceiling_job(
    job: str, num_episodes: int, device: str, seed: int
) -> tuple[Callable[[], object], Callable[[], object], int]:
    """``(engine call, reference call, env steps per call)`` of one ceiling job."""
    check_choice("jobs", job, ("tabular_float32", "tabular_float64", "ipd"), what="job")
    gen = torch.Generator(device=device).manual_seed(seed)
    if job in ("tabular_float32", "tabular_float64"):
        task = random_task()
        dtype = torch.float32 if job == "tabular_float32" else torch.float64
        logits = torch.zeros(
            task.num_states, task.num_actions, dtype=dtype, device=device, requires_grad=True
        )
        tables = reference_tabular_tables(task, dtype, device)
        return (
            functools.partial(rollout, task, logits, num_episodes, generator=gen),
            functools.partial(reference_tabular_rollout, task, logits, num_episodes, tables, generator=gen),
            num_episodes * task.horizon,
        )
    init = torch.Generator().manual_seed(seed)  # the ipd job
    theta1 = torch.randn(5, generator=init, dtype=torch.float64).to(device)
    theta2 = torch.randn(5, generator=init, dtype=torch.float64).to(device)
    return (
        torch.no_grad()(functools.partial(ipd_rollout, theta1, theta2, num_episodes, 100, generator=gen)),
        torch.no_grad()(
            functools.partial(reference_ipd_rollout, theta1, theta2, num_episodes, 100, generator=gen)
        ),
        num_episodes * 100,
    )


def ceiling_ratios(
    num_episodes: int = 4096,
    *,
    rounds: int = 11,
    calls: int = 5,
    device: str = "cpu",
    seed: int = 0,
    jobs: tuple[str, ...] = ("tabular_float32", "tabular_float64", "ipd"),
) -> dict[str, dict[str, float]]:
    """Engine throughput as a fraction of the reference (ceiling) rollouts, measured alternately.

    Jobs: ``tabular_float32`` / ``tabular_float64`` (S = 20, A = 5, H = 20, ``num_episodes``
    episodes, log-probs recorded with a graph) and ``ipd`` (``num_episodes`` episodes of 100
    steps, no grad, float64). For each: the median over ``rounds`` of the per-round ratio
    ``reference seconds / engine seconds`` (``ratio``; 1 = at the ceiling), its range, the ratio
    of the fastest rounds (``ratio_of_fastest``, the least disturbed by other jobs), and both
    medians as env steps per second (per CPU second on CPU; see :func:`_alternate`).
    """
    check_int("num_episodes", num_episodes)
    check_int("rounds", rounds)
    check_int("calls", calls)
    out: dict[str, dict[str, float]] = {}
    for job in jobs:
        engine, reference, steps = _ceiling_job(job, num_episodes, device, seed)
        engine_s, reference_s = _alternate(engine, reference, rounds=rounds, calls=calls, device=device)
        ratios = [r / e for e, r in zip(engine_s, reference_s, strict=True)]
        out[job] = {
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "ratio_of_fastest": min(reference_s) / min(engine_s),  # least disturbed by other jobs
            "engine_steps_per_s": steps / statistics.median(engine_s),
            "reference_steps_per_s": steps / statistics.median(reference_s),
            "episodes": num_episodes,
            "rounds": rounds,
        }
    return out


# --------------------------------------------------------------------------------------------
# Large state spaces: one decomposition cell of the tabular bench as S grows
# --------------------------------------------------------------------------------------------


def large_s_cell_time(
    num_states: int,
    *,
    combination: str = "lll",
    estimator: str = "loaded_dice",
    n: int = 32,
    num_tasks: int = 10,
    repeats: int = 20,
    device: str = "cpu",
) -> dict[str, float]:
    """Seconds of one tabular bench cell (``combination`` of ``estimator``, ``n`` episodes per
    stage, ``num_tasks`` random ``num_states x 5`` MDPs x ``repeats`` estimates, K = 1, finite
    horizon, critic noise 1) computed from scratch in this process (call once per S):
    ``cell_s`` (sampler tables, critics, exact meta-gradients, scoring: the row's ``wall_s``),
    ``cell_cpu_s`` (the CPU seconds of this process for the same work: the wall time of a quiet
    machine) and ``tasks_s`` (drawing the random MDPs, once per run and process), with the peak
    resident memory of this process so far."""
    config = TabularBenchConfig(
        preset="perf", num_states=num_states, objective="finite", num_tasks=num_tasks, repeats=repeats
    )
    critic = CriticSpec(kind="noisy_exact", noise=config.critic_noise)
    spec = MetaGradientSpec.from_combination(
        combination, estimator, n, inner_steps=1, inner_lr=config.inner_lr, objective="finite", critic=critic
    )
    cell = Cell("decomposition", estimator, spec, n).bind(config)
    start = time.perf_counter()
    cached_tasks(config)  # the run's tasks, drawn once per process (cached for run_cell)
    tasks_s = time.perf_counter() - start
    cpu = time.process_time()
    row = run_cell(config, cell, device)
    cpu = time.process_time() - cpu
    own, _ = peak_memory_mib()
    return {
        "num_states": num_states,
        "cell_s": row.wall_s,
        "cell_cpu_s": cpu,
        "tasks_s": tasks_s,
        "peak_rss_mib": own,
        "corr": row.metrics.corr,
    }


def fitted_exponent(sizes: list[float], seconds: list[float]) -> float:
    """Least-squares slope of ``log seconds`` against ``log sizes`` (the growth exponent)."""
    if len(sizes) != len(seconds) or len(set(sizes)) < 2 or min(*sizes, *seconds) <= 0:
        raise ValueError(
            f"sizes/seconds: need matching positive values at two sizes or more, got {sizes} and {seconds}"
        )
    x = torch.tensor(sizes, dtype=torch.float64).log()
    y = torch.tensor(seconds, dtype=torch.float64).log()
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def large_s_timings(
    states: tuple[int, ...] = (100, 200, 500, 1000, 2000), *, device: str = "cpu", **kwargs: object
) -> dict[str, Any]:
    """:func:`large_s_cell_time` at every S in ``states`` and the fitted growth exponents of the
    cell's CPU time (``exponent``; on CUDA its wall time) and wall time (``exponent_wall``) in S,
    over the sizes >= 100."""
    rows = [large_s_cell_time(S, device=device, **kwargs) for S in states]  # type: ignore[arg-type]
    fit = [r for r in rows if r["num_states"] >= 100]
    sizes = [r["num_states"] for r in fit]

    def exponent(key: str) -> float:
        return fitted_exponent(sizes, [r[key] for r in fit]) if len(fit) >= 2 else math.nan

    cpu_key = "cell_s" if str(device).startswith("cuda") else "cell_cpu_s"
    return {"cells": rows, "exponent": exponent(cpu_key), "exponent_wall": exponent("cell_s")}
