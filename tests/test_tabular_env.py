"""The tabular task, the batched engine and the Gymnasium faces."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from metagrad import envs
from metagrad.envs import TabularTask, random_task, rollout
from metagrad.envs.tabular import alias_table, sample_alias
from metagrad.exact import tabular_return


def test_random_task_matches_protocol():
    task = random_task()
    assert (task.num_states, task.num_actions, task.gamma, task.horizon) == (20, 5, 0.8, 20)
    assert torch.allclose(task.P.sum(-1), torch.ones(20, 5, dtype=torch.float64))
    assert task.init[0] == 1 and task.init.sum() == 1
    assert ((task.R >= 0) & (task.R < 1)).all()
    # Dirichlet(0.001): almost every row puts nearly all mass on one next state.
    assert (task.P.max(-1).values > 0.99).float().mean() > 0.9
    assert torch.equal(random_task(seed=5).P, random_task(seed=5).P)
    assert not torch.equal(random_task(seed=5).P, random_task(seed=6).P)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("P", torch.ones(3, 2, 3), "P: every row"),
        ("P", torch.ones(3, 2), "P: expected shape"),
        ("R", torch.zeros(3, 3), "R: expected shape"),
        ("init", torch.tensor([0.5, 0.6, 0.0]), "init: must be a probability"),
        ("init", torch.ones(2) / 2, "init: expected shape"),
        ("gamma", 1.5, "gamma: expected a finite number >= 0 and <= 1"),
        ("gamma", float("nan"), "gamma"),
        ("horizon", 0, "horizon: must be >= 1"),
        ("horizon", 2.5, "horizon: expected an integer"),
        ("R", torch.tensor([[0.0, float("nan")]] * 3), "R: contains NaN"),
    ],
)
def test_task_validation_names_the_field(field, value, match):
    fields = dict(
        P=torch.full((3, 2, 3), 1 / 3), R=torch.zeros(3, 2), init=torch.ones(3) / 3, gamma=0.9, horizon=4
    )
    fields[field] = value
    with pytest.raises(ValueError, match=match):
        TabularTask(**fields)


def test_task_is_frozen():
    task = random_task()
    with pytest.raises(AttributeError):
        task.gamma = 0.5


def test_rollout_shapes_and_grad():
    task = random_task(seed=2)
    logits = torch.zeros(20, 5, requires_grad=True)
    traj = rollout(task, logits, 7, generator=torch.Generator().manual_seed(0))
    for name in (
        "states",
        "actions",
        "rewards",
        "log_probs",
        "behaviour_log_probs",
        "discounts",
        "terminated",
        "truncated",
    ):
        assert getattr(traj, name).shape == (20, 7), name
    assert traj.final_states.shape == (7,)
    assert traj.log_probs.requires_grad and not traj.behaviour_log_probs.requires_grad
    assert torch.allclose(traj.log_probs.detach(), torch.full((20, 7), -np.log(5.0)))
    assert traj.truncated[-1].all() and not traj.truncated[:-1].any() and not traj.terminated.any()
    assert (traj.states[0] == 0).all()
    assert torch.equal(traj.rewards, task.R.float()[traj.states, traj.actions])
    traj.log_probs.sum().backward()
    assert logits.grad is not None


def test_rollout_batched_policies_are_independent():
    task = random_task(seed=2)
    logits = torch.zeros(3, 2, 20, 5)
    logits[1, 0, :, 2] = 50.0  # policy (1, 0) always takes action 2
    traj = rollout(task, logits, 11, generator=torch.Generator().manual_seed(0))
    assert traj.states.shape == (20, 11, 3, 2) and traj.final_states.shape == (11, 3, 2)
    assert (traj.actions[:, :, 1, 0] == 2).all()
    assert not (traj.actions[:, :, 0, 0] == 2).all()


def test_rollout_seeded_reproducible():
    task = random_task(seed=4)
    logits = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
    a = rollout(task, logits, 64, generator=torch.Generator().manual_seed(9))
    b = rollout(task, logits, 64, generator=torch.Generator().manual_seed(9))
    c = rollout(task, logits, 64, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a.states, b.states) and torch.equal(a.actions, b.actions)
    assert not torch.equal(a.actions, c.actions)


@pytest.mark.parametrize(
    ("logits", "n", "match"),
    [
        (torch.zeros(20, 4), 4, "logits: expected shape"),
        (torch.zeros(5), 4, "logits: expected shape"),
        (torch.full((20, 5), float("nan")), 4, "logits: contains NaN"),
        (torch.zeros(20, 5), 0, "num_episodes"),
        (torch.zeros(20, 5), -3, "num_episodes"),
    ],
)
def test_rollout_rejects_bad_input(logits, n, match):
    with pytest.raises(ValueError, match=match):
        rollout(random_task(), logits, n)


def test_alias_sampler_matches_distribution():
    gen = torch.Generator().manual_seed(0)
    probs = torch.from_numpy(np.random.default_rng(0).dirichlet(np.full(6, 0.4), size=30))
    probs[0] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    threshold, alias = alias_table(probs)
    n = 100_000
    u = torch.rand(30, n, generator=gen, dtype=torch.float64)
    draws = sample_alias(threshold, alias, torch.arange(30).unsqueeze(1).expand(30, n), u)
    freq = torch.nn.functional.one_hot(draws, 6).double().mean(1)
    se = (probs * (1 - probs) / n).sqrt().clamp_min(1e-12)
    assert (draws[0] == 2).all()
    # Bonferroni over 180 cells at family-wise level 1e-3: |z| < 4.4.
    assert ((freq - probs).abs() / se).max() < 4.4


def test_rollout_mean_return_matches_exact(small_task, small_logits):
    """Monte Carlo return from the batched engine within 4 standard errors of the finite oracle."""
    traj = rollout(small_task, small_logits, 40_000, generator=torch.Generator().manual_seed(1))
    disc = small_task.gamma ** torch.arange(small_task.horizon, dtype=torch.float64).unsqueeze(1)
    returns = (traj.rewards * disc).sum(0)
    exact = tabular_return(small_task, small_logits, "finite")
    se = returns.std() / len(returns) ** 0.5
    assert abs(returns.mean() - exact) < 4 * se


def test_gym_env_mean_return_matches_exact(small_task, small_logits):
    env = gym.make("MetaGrad/TabularMDP-v0", task=small_task)
    pi = torch.softmax(small_logits, -1).numpy()
    rng = np.random.default_rng(0)
    returns = []
    obs, _ = env.reset(seed=0)
    for _ in range(4000):
        ret, disc, done = 0.0, 1.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(int(rng.choice(3, p=pi[obs])))
            ret += disc * r
            disc *= small_task.gamma
            done = term or trunc
        returns.append(ret)
        obs, _ = env.reset()
    returns = np.asarray(returns)
    exact = float(tabular_return(small_task, small_logits, "finite"))
    assert abs(returns.mean() - exact) < 4 * returns.std() / np.sqrt(len(returns))


def test_env_checker_and_truncation():
    env = gym.make("MetaGrad/TabularMDP-v0", task_seed=1, horizon=5)
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=3)
    steps = 0
    while True:
        _obs, _r, term, trunc, _info = env.step(env.action_space.sample())
        steps += 1
        assert not term
        if trunc:
            break
    assert steps == 5


def test_env_seeding_is_deterministic():
    def play(seed):
        env = gym.make("MetaGrad/TabularMDP-v0", task_seed=0)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for a in [0, 1, 2, 3, 4] * 4:
            obs, *_ = env.step(a)
            out.append(obs)
        return out

    assert play(7) == play(7)


def test_env_rejects_bad_arguments():
    with pytest.raises(ValueError, match="task given"):
        envs.TabularMDPEnv(task=random_task(), num_states=3)
    env = envs.TabularMDPEnv(task_seed=0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(7)


def test_vector_env_via_make_vec():
    vec = gym.make_vec("MetaGrad/TabularMDP-v0", num_envs=8, task_seed=2, horizon=3)
    assert isinstance(vec, envs.TabularMDPVectorEnv)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (8,) and (obs == 0).all()
    task = vec.unwrapped.task
    trunc_seen = []
    for _ in range(8):
        actions = vec.action_space.sample()
        prev = obs
        obs, rew, term, trunc, _ = vec.step(actions)
        assert obs.shape == rew.shape == term.shape == trunc.shape == (8,)
        if trunc_seen and trunc_seen[-1]:  # the step after a truncation resets: no reward, start state
            assert (rew == 0).all() and (obs == 0).all()
        else:
            assert np.allclose(rew, task.R.numpy()[prev, actions])
        trunc_seen.append(bool(trunc.all()))
    # horizon 3, NEXT_STEP autoreset: truncation at steps 3 and 7, reset steps 4 and 8.
    assert trunc_seen == [False, False, True, False, False, False, True, False]


def test_vector_env_seeded_reproducible():
    def run(seed):
        vec = gym.make_vec("MetaGrad/TabularMDP-v0", num_envs=16, task_seed=2)
        obs, _ = vec.reset(seed=seed)
        traj = [obs]
        for t in range(10):
            obs, *_ = vec.step(np.full(16, t % 5))
            traj.append(obs)
        return np.stack(traj)

    assert np.array_equal(run(1), run(1))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=12).filter(lambda w: sum(w) > 1e-6)
)
def test_alias_table_reconstructs_any_distribution(weights):
    """Bucket j keeps threshold_j of its 1/K and receives 1 - threshold_i from every i aliased to it."""
    probs = torch.tensor(weights, dtype=torch.float64)
    probs = probs / probs.sum()
    k = probs.numel()
    threshold, alias = alias_table(probs.unsqueeze(0))
    threshold, alias = threshold[0], alias[0]
    assert ((threshold >= 0) & (threshold <= 1)).all()
    mass = threshold.clone()
    mass.index_add_(0, alias, 1.0 - threshold)
    assert torch.allclose(mass / k, probs, atol=1e-12)
