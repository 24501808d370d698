"""LQR tasks, task distributions, the batched rollout engine and the Gymnasium faces."""

from __future__ import annotations

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from lqr_checks import random_policy, random_task

from metagrad.envs.lqr import (
    LQR_DISTRIBUTIONS,
    LinearGaussian,
    LQREnv,
    LQRTask,
    LQRVectorEnv,
    PointMassNavigation,
    RandomStableSystem,
    gaussian_log_probs,
    rollout,
)
from metagrad.exact import lqr_moments, lqr_return

# ------------------------------------------------------------------------------------------------
# Tasks and distributions
# ------------------------------------------------------------------------------------------------


def _fields(n=2, m=1):
    return {
        "A": np.eye(n),
        "B": np.ones((n, m)),
        "Q": np.eye(n),
        "R": np.eye(m),
        "W": np.zeros((n, n)),
        "mu0": np.zeros(n),
        "S0": np.zeros((n, n)),
        "goal": np.zeros(n),
        "gamma": 0.9,
        "horizon": 3,
    }


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"A": np.ones((2, 3))}, "A: expected shape"),
        ({"B": np.ones((3, 1))}, "B: expected shape"),
        ({"Q": np.ones((3, 3))}, "Q: expected shape"),
        ({"Q": np.array([[1.0, 0.5], [0.0, 1.0]])}, "Q: must be symmetric"),
        ({"Q": -np.eye(2)}, "Q: must be positive semi-definite"),
        ({"R": np.zeros((1, 1))}, "R: must be positive definite"),
        ({"W": np.diag([1.0, -0.1])}, "W: must be positive semi-definite"),
        ({"S0": np.array([[1.0, 2.0], [2.0, 1.0]])}, "S0: must be positive semi-definite"),
        ({"mu0": [0.0, np.nan]}, "mu0: contains NaN"),
        ({"goal": np.zeros(3)}, "goal: expected shape"),
        ({"goal": np.zeros((3, 2)), "mu0": np.zeros((4, 2))}, "goal: has 3 tasks where mu0 has 4"),
        ({"gamma": 1.5}, "gamma"),
        ({"horizon": 0}, "horizon"),
        ({"A": "not a matrix"}, "A: cannot be converted"),
    ],
)
def test_task_validation_names_the_problem(change, match):
    with pytest.raises(ValueError, match=match):
        LQRTask(**(_fields() | change))


def test_task_batches_share_unbatched_fields_and_round_trip():
    fields = _fields() | {"goal": np.arange(6.0).reshape(3, 2)}
    task = LQRTask(**fields)
    assert task.batch_shape == (3,) and len(task) == 3 and task.A.shape == (3, 2, 2)
    assert (task.state_dim, task.action_dim) == (2, 1)
    singles = task.unbind()
    assert [t.batch_shape for t in singles] == [()] * 3
    again = LQRTask.stack(singles)
    for name in LQRTask.MATRICES:
        assert torch.equal(getattr(again, name), getattr(task, name))
    with pytest.raises(ValueError, match="n, m, gamma and horizon"):
        LQRTask.stack([singles[0], LQRTask(**(_fields() | {"horizon": 4}))])


def test_distributions_are_seeded_and_keep_their_promises():
    nav = PointMassNavigation(goals="circle", goal_scale=1.5, dt=0.2)
    a, b = nav.sample(8, nav.train_rng(3)), nav.sample(8, nav.train_rng(3))
    assert torch.equal(a.goal, b.goal)
    assert not torch.equal(a.goal, nav.sample(8, nav.train_rng(4)).goal)
    assert torch.allclose(a.goal.norm(dim=-1), torch.full((8,), 1.5, dtype=torch.float64))
    assert torch.equal(a.A[0], torch.eye(2, dtype=torch.float64)) and torch.allclose(
        a.B[0], 0.2 * torch.eye(2).double()
    )
    assert not torch.equal(nav.held_out(8).goal, a.goal)
    assert torch.equal(nav.held_out(8).goal, nav.held_out(8).goal)
    box = PointMassNavigation(goals="box", goal_scale=0.5, dim=3)
    goals = box.sample(500, box.train_rng(0)).goal
    assert goals.shape == (500, 3) and float(goals.abs().max()) <= 0.5
    stable = RandomStableSystem(state_dim=3, action_dim=2, spectral_radius=0.8, goal_scale=1.0)
    tasks = stable.sample(20, stable.train_rng(0))
    radius = torch.linalg.eigvals(tasks.A).abs().max(-1).values
    assert torch.allclose(radius, torch.full((20,), 0.8, dtype=torch.float64))
    assert tasks.B.shape == (20, 3, 2) and tasks.batch_shape == (20,)
    assert set(LQR_DISTRIBUTIONS) == {"navigation", "stable"}
    with pytest.raises(ValueError, match="goals"):
        PointMassNavigation(goals="ring")
    with pytest.raises(ValueError, match="control_cost"):
        RandomStableSystem(control_cost=0.0)


# ------------------------------------------------------------------------------------------------
# The engine
# ------------------------------------------------------------------------------------------------


def test_rollout_shapes_common_random_numbers_and_the_reparameterised_graph():
    tasks = random_task(0, 3, 2, num_tasks=4, horizon=5)
    K, k, log_std = (x.requires_grad_(True) for x in random_policy(1, 3, 2, batch=(6, 4)))
    plain = rollout(tasks, K, k, log_std, 7, generator=torch.Generator().manual_seed(2))
    assert plain.states.shape == (5, 7, 6, 4, 3) and plain.actions.shape == (5, 7, 6, 4, 2)
    assert plain.rewards.shape == plain.log_probs.shape == plain.discounts.shape == (5, 7, 6, 4)
    assert plain.final_states.shape == (7, 6, 4, 3) and plain.horizon == 5 and plain.num_episodes == 7
    assert not plain.rewards.requires_grad and plain.log_probs.requires_grad
    assert (
        bool(plain.truncated[-1].all())
        and not bool(plain.truncated[:-1].any())
        and not plain.terminated.any()
    )
    graph = rollout(tasks, K, k, log_std, 7, generator=torch.Generator().manual_seed(2), reparameterize=True)
    assert graph.rewards.requires_grad and graph.states.requires_grad
    for name in ("states", "actions", "rewards", "log_probs", "final_states"):
        assert torch.equal(getattr(plain, name), getattr(graph, name).detach()), name
    # the log-densities are those of the actions taken, with states and actions held fixed
    eps = (
        plain.actions - (K.detach() @ plain.states.unsqueeze(-1)).squeeze(-1) - k.detach()
    ) / log_std.detach().exp()
    expected = -0.5 * (eps**2).sum(-1) - log_std.detach().sum(-1) - np.log(2 * np.pi)
    assert torch.allclose(plain.log_probs.detach(), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(
        gaussian_log_probs(LinearGaussian(K, k, log_std), graph.states, graph.actions), graph.log_probs
    )
    # another policy on the same generator seed sees the same noise: same initial states
    other = rollout(tasks, K * 2, k, log_std, 7, generator=torch.Generator().manual_seed(2))
    assert torch.equal(other.states[0], plain.states[0])


def test_rollout_dynamics_and_rewards_follow_the_model():
    task = random_task(3, 2, 2, horizon=4)
    K, k, log_std = random_policy(4, 2, 2)
    traj = rollout(task, K, k, log_std, 5, generator=torch.Generator().manual_seed(0))
    x, u = traj.states, traj.actions
    d = x - task.goal
    cost = ((d @ task.Q) * d).sum(-1) + ((u @ task.R) * u).sum(-1)
    assert torch.allclose(traj.rewards, -cost, rtol=1e-12, atol=1e-12)
    nxt = torch.cat([x[1:], traj.final_states.unsqueeze(0)])
    w = nxt - x @ task.A.mT - u @ task.B.mT  # the process noise: no noise direction outside W's range
    residual = w - w @ (task.W @ torch.linalg.pinv(task.W)).mT
    assert float(residual.abs().max()) < 1e-10


def test_rollout_state_moments_match_the_exact_recursion():
    tasks = random_task(5, 3, 2, num_tasks=2, horizon=6)
    K, k, log_std = random_policy(6, 3, 2)
    B = 40_000
    traj = rollout(tasks, K, k, log_std, B, generator=torch.Generator().manual_seed(7))
    m, S = lqr_moments(tasks, K, k, log_std)  # [N, T, n], [N, T, n, n]
    x = traj.states.movedim(2, 0)  # [N, T, B, n]
    mean, se = x.mean(2), x.std(2) / B**0.5
    z = ((mean - m) / se).abs().max()
    threshold = float(torch.special.ndtri(torch.tensor(1 - 1e-3 / (2 * m.numel()), dtype=torch.float64)))
    assert float(z) <= threshold
    cov = torch.einsum("ntbi,ntbj->ntij", x - mean.unsqueeze(2), x - mean.unsqueeze(2)) / (B - 1)
    assert torch.allclose(cov, S, rtol=0.05, atol=0.05 * float(S.abs().max()))


def test_rollout_rejects_bad_input():
    task = random_task(8, 2, 1)
    K, k, log_std = random_policy(9, 2, 1)
    with pytest.raises(ValueError, match="num_episodes"):
        rollout(task, K, k, log_std, 0)
    with pytest.raises(ValueError, match="k: expected shape"):
        rollout(task, K, torch.zeros(2, dtype=torch.float64), log_std, 3)
    with pytest.raises(ValueError, match="K: contains NaN"):
        rollout(task, K * float("nan"), k, log_std, 3)


def test_flatten_round_trip():
    K, k, log_std = random_policy(10, 3, 2, batch=(4,))
    theta = LinearGaussian(K, k, log_std).flatten()
    assert theta.shape == (4, 3 * 2 + 4)
    again = LinearGaussian.unflatten(theta, 3, 2)
    assert all(torch.equal(a, b) for a, b in zip(again, (K, k, log_std), strict=True))
    with pytest.raises(ValueError, match="last axis"):
        LinearGaussian.unflatten(theta, 2, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rollout_and_oracle_on_cuda():
    task = random_task(11, 2, 2, num_tasks=3)
    K, k, log_std = (x.cuda() for x in random_policy(12, 2, 2))
    traj = rollout(task, K, k, log_std, 64, generator=torch.Generator(device="cuda").manual_seed(0))
    assert traj.rewards.is_cuda and traj.rewards.shape == (task.horizon, 64, 3)
    J = lqr_return(task, K, k, log_std)
    assert J.is_cuda and torch.allclose(
        J.cpu(), lqr_return(task, K.cpu(), k.cpu(), log_std.cpu()), rtol=1e-12
    )


# ------------------------------------------------------------------------------------------------
# Gymnasium faces
# ------------------------------------------------------------------------------------------------


def test_gymnasium_make_in_a_fresh_interpreter_and_check_env():
    code = (
        "import gymnasium\n"
        "from gymnasium.utils.env_checker import check_env\n"
        "env = gymnasium.make('metagrad:MetaGrad/LQR-v0')\n"
        "check_env(env.unwrapped, skip_render_check=False)\n"
        "print(env.observation_space.shape, env.action_space.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2,) (2,)"


def test_env_checks_renders_and_switches_tasks():
    tasks = RandomStableSystem(state_dim=3, action_dim=1).sample(2, np.random.default_rng(0)).unbind()
    env = LQREnv(task=tasks[0], render_mode="rgb_array")
    check_env(env)
    obs, info = env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (68, 64, 3)
    assert obs.shape == (3,) and info == {"step": 0}
    env.reset(options={"task": tasks[1]})
    assert env.task is tasks[1]
    with pytest.raises(ValueError, match="action"):
        env.step(np.zeros(2))
    with pytest.raises(ValueError, match="options"):
        env.reset(options={"task": random_task(0, 2, 2)})
    with pytest.raises(ValueError, match="render_mode"):
        LQREnv(render_mode="human")
    assert "t=0" in LQREnv(render_mode="ansi").render()
    # actions are clipped to the declared bounds; action_bound=None leaves them (and the space) unbounded
    clipped, free = LQREnv(task=tasks[0], action_bound=0.5), LQREnv(task=tasks[0], action_bound=None)
    assert np.isinf(free.action_space.high).all() and np.all(clipped.action_space.high == 0.5)
    steps = []
    for env_, action in ((clipped, [100.0]), (free, [0.5]), (free, [100.0])):
        env_.reset(seed=1)
        env_.step(np.array(action))
        steps.append(env_.step(np.zeros(1))[1])
    assert steps[0] == steps[1] != steps[2]


def _deterministic_task(num_tasks=None):
    """No process or initial noise, so a deterministic policy's return is the exact one."""
    task = random_task(13, 2, 2, num_tasks=num_tasks, horizon=7)
    zero = torch.zeros_like(task.W)
    return LQRTask(
        **{name: getattr(task, name) for name in LQRTask.MATRICES} | {"W": zero, "S0": zero},
        gamma=task.gamma,
        horizon=task.horizon,
    )


def test_env_episode_return_equals_the_exact_return_of_a_deterministic_policy():
    task = _deterministic_task()
    K, k, _ = random_policy(14, 2, 2)
    log_std = torch.full((2,), -40.0, dtype=torch.float64)  # exp(-80): the Gaussian is a point
    env = LQREnv(task=task)
    obs, _ = env.reset(seed=0)
    total, t, done = 0.0, 0, False
    while not done:
        action = K.numpy() @ obs + k.numpy()
        obs, reward, terminated, truncated, _ = env.step(action)
        total += task.gamma**t * reward
        t += 1
        done = terminated or truncated
    assert t == task.horizon
    expected = float(lqr_return(task, K, k, log_std))
    assert abs(total - expected) <= 1e-10 * abs(expected)


def test_vector_env_plays_a_task_per_sub_env_and_autoresets():
    tasks = _deterministic_task(num_tasks=3)
    K, k, _ = random_policy(15, 2, 2)
    env = gymnasium.make_vec("MetaGrad/LQR-v0", num_envs=3, task=tasks)
    assert isinstance(env.unwrapped, LQRVectorEnv)
    obs, _ = env.reset(seed=0)
    totals = np.zeros(3)
    for t in range(tasks.horizon):
        obs, reward, terminated, truncated, _ = env.step(obs @ K.numpy().T + k.numpy())
        totals += tasks.gamma**t * reward
        assert truncated.all() == (t == tasks.horizon - 1) and not terminated.any()
    expected = lqr_return(tasks, K, k, torch.full((2,), -40.0, dtype=torch.float64)).numpy()
    assert np.allclose(totals, expected, rtol=1e-10, atol=0)
    obs, reward, _, truncated, _ = env.step(np.zeros((3, 2)))  # NEXT_STEP autoreset
    assert np.allclose(obs, tasks.mu0.numpy()) and np.all(reward == 0) and not truncated.any()
    with pytest.raises(ValueError, match="num_envs"):
        LQRVectorEnv(num_envs=2, task=tasks)
    with pytest.raises(ValueError, match="actions"):
        env.step(np.zeros((3, 3)))


def test_sb3_ppo_trains_a_few_thousand_steps():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("MetaGrad/LQR-v0", n_envs=2, seed=0)
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=128, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=2048)
    assert model.num_timesteps >= 2048
    action, _ = model.predict(env.reset(), deterministic=True)
    assert action.shape == (2, 2) and np.isfinite(action).all()
    env.close()
