"""Iterated games: the PettingZoo and Gymnasium faces, the batched engine and the exact oracles."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test

import metagrad.envs  # noqa: F401  (registers the Gymnasium ids)
from metagrad.envs.ipd import (
    ALWAYS_COOPERATE,
    ALWAYS_DEFECT,
    TIT_FOR_TAT,
    IPDParallelEnv,
    ipd_rollout,
    memory_one_logits,
    per_step_average,
)
from metagrad.estimators import discounted_returns
from metagrad.exact import ipd_state_values, ipd_values, lola_gradient, naive_gradient
from metagrad.testing import central_difference, relative_error


def _pair(seed: int = 0, shape: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(*shape, 5, generator=gen, dtype=torch.float64),
        torch.randn(*shape, 5, generator=gen, dtype=torch.float64),
    )


# ---------------------------------------------------------------------------------------------
# Environment faces
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("game", ["ipd", "imp"])
def test_parallel_env_passes_pettingzoo_api_test(game):
    parallel_api_test(IPDParallelEnv(horizon=12, game=game), num_cycles=40)


@pytest.mark.parametrize("env_id", ["MetaGrad/IPD-v0", "MetaGrad/IMP-v0"])
def test_gymnasium_env_passes_checker(env_id):
    env = gym.make(env_id, horizon=15)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs == 0 and env.observation_space.n == 5 and env.action_space.n == 2


def test_always_defect_against_tit_for_tat_is_deterministic():
    env = gym.make("MetaGrad/IPD-v0", horizon=4)  # default opponent: tit-for-tat
    env.reset(seed=1)
    rewards, observations = [], []
    for _ in range(4):
        obs, reward, terminated, truncated, _ = env.step(1)
        rewards.append(reward)
        observations.append(obs)
    assert rewards == [0.0, -2.0, -2.0, -2.0]  # DC first (TFT opens with C), then DD
    assert observations == [3, 4, 4, 4]
    assert truncated and not terminated


def test_parallel_env_payoffs_and_views():
    env = IPDParallelEnv(horizon=2)
    obs, _ = env.reset(seed=0)
    assert obs == {"player_0": 0, "player_1": 0}
    obs, rew, term, trunc, _ = env.step({"player_0": 0, "player_1": 1})  # C vs D
    assert not any(term.values()) and not any(trunc.values())
    assert rew == {"player_0": -3.0, "player_1": 0.0}
    assert obs == {"player_0": 2, "player_1": 3}  # CD from agent 1's side is DC from agent 2's
    obs, rew, _, trunc, _ = env.step({"player_0": 1, "player_1": 1})
    assert rew == {"player_0": -2.0, "player_1": -2.0} and all(trunc.values()) and env.agents == []


# ---------------------------------------------------------------------------------------------
# Batched engine
# ---------------------------------------------------------------------------------------------


def test_rollout_shapes_dtypes_and_graph():
    t1, t2 = _pair(0, (3,))
    t1.requires_grad_(True)
    traj = ipd_rollout(t1, t2[0], 7, 11, generator=torch.Generator().manual_seed(0))
    for name in ("states", "actions1", "actions2", "log_probs1", "rewards2", "discounts", "truncated"):
        assert tuple(getattr(traj, name).shape) == (11, 7, 3), name
    assert traj.final_states.shape == (7, 3)
    assert traj.states.dtype == torch.long and traj.log_probs1.dtype == torch.float64
    assert traj.truncated[-1].all() and not traj.truncated[:-1].any() and not traj.terminated.any()
    (g,) = torch.autograd.grad(traj.joint_log_probs.sum(), t1)
    assert g.abs().sum() > 0
    # states follow the actions: s_{t+1} = 1 + 2 a1_t + a2_t
    assert torch.equal(traj.states[1:], 1 + 2 * traj.actions1[:-1] + traj.actions2[:-1])
    assert (traj.states[0] == 0).all()


def test_rollout_is_seeded():
    t1, t2 = _pair(1)
    a = ipd_rollout(t1, t2, 50, 20, generator=torch.Generator().manual_seed(5))
    b = ipd_rollout(t1, t2, 50, 20, generator=torch.Generator().manual_seed(5))
    c = ipd_rollout(t1, t2, 50, 20, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.states, b.states) and torch.equal(a.actions2, b.actions2)
    assert not torch.equal(a.states, c.states)


def test_rollout_log_probs_match_the_policies():
    t1, t2 = _pair(2)
    traj = ipd_rollout(t1, t2, 4, 6, generator=torch.Generator().manual_seed(0))
    p1 = torch.sigmoid(t1)[traj.states]
    expect1 = torch.where(traj.actions1 == 0, p1, 1 - p1).log()
    own_states2 = traj.states_of(2)
    p2 = torch.sigmoid(t2)[own_states2]
    expect2 = torch.where(traj.actions2 == 0, p2, 1 - p2).log()
    torch.testing.assert_close(traj.log_probs1, expect1)
    torch.testing.assert_close(traj.log_probs2, expect2)


@pytest.mark.parametrize("game", ["ipd", "imp"])
def test_exact_values_match_monte_carlo(game):
    t1, t2 = _pair(3)
    gamma, H, B = 0.9, 25, 20000
    traj = ipd_rollout(t1, t2, B, H, game=game, gamma=gamma, generator=torch.Generator().manual_seed(1))
    v1, v2 = ipd_values(t1, t2, gamma, H, game)
    for rewards, exact in ((traj.rewards1, v1), (traj.rewards2, v2)):
        returns = discounted_returns(rewards, traj.discounts)[0]
        se = returns.std() / math.sqrt(B)
        assert abs(returns.mean() - exact) < 4 * se, (game, float(returns.mean()), float(exact), float(se))


# ---------------------------------------------------------------------------------------------
# Exact values: hand-solvable cases and internal consistency
# ---------------------------------------------------------------------------------------------


def test_hand_solvable_values():
    g = 0.9
    v1, v2 = ipd_values(ALWAYS_COOPERATE, ALWAYS_DEFECT, g)
    assert float(v1) == pytest.approx(-3 / (1 - g)) and float(v2) == pytest.approx(0.0, abs=1e-12)
    v1, v2 = ipd_values(TIT_FOR_TAT, ALWAYS_DEFECT, g)
    assert float(v1) == pytest.approx(-3 - 2 * g / (1 - g)) and float(v2) == pytest.approx(-2 * g / (1 - g))
    v1, v2 = ipd_values(ALWAYS_COOPERATE, ALWAYS_COOPERATE, g, horizon=7)
    assert float(v1) == pytest.approx(-(1 - g**7) / (1 - g)) == float(v2)
    # matching pennies, always heads vs always heads: agent 1 matches every step
    v1, v2 = ipd_values(ALWAYS_COOPERATE, ALWAYS_COOPERATE, g, horizon=3, game="imp")
    assert float(v1) == pytest.approx(1 + g + g**2) and float(v2) == pytest.approx(-(1 + g + g**2))
    # per-step averages: mutual cooperation -1, mutual defection -2
    assert float(
        per_step_average(ipd_values(ALWAYS_DEFECT, ALWAYS_DEFECT, g, 10)[0], g, 10)
    ) == pytest.approx(-2)
    assert float(per_step_average(ipd_values(ALWAYS_COOPERATE, ALWAYS_COOPERATE, g)[0], g)) == pytest.approx(
        -1
    )


def test_deterministic_policies_give_exact_sampled_returns():
    traj = ipd_rollout(
        TIT_FOR_TAT, ALWAYS_DEFECT, 5, 30, gamma=0.8, generator=torch.Generator().manual_seed(0)
    )
    returns = discounted_returns(traj.rewards1, traj.discounts)[0]
    exact = ipd_values(TIT_FOR_TAT, ALWAYS_DEFECT, 0.8, 30)[0]
    torch.testing.assert_close(returns, exact.expand(5))


def test_finite_values_by_propagation_and_state_values_agree():
    t1, t2 = _pair(4, (2,))
    gamma, H = 0.96, 40
    v1, v2 = ipd_values(t1, t2, gamma, H)
    table = ipd_state_values(t1, t2, gamma, H)
    torch.testing.assert_close(table[0, :, 0, 0], v1)
    torch.testing.assert_close(table[1, :, 0, 0], v2)
    assert table.shape == (2, 2, H + 1, 5) and (table[:, :, H] == 0).all()
    inf = ipd_state_values(t1, t2, gamma)
    torch.testing.assert_close(inf[0, :, 0], ipd_values(t1, t2, gamma)[0])
    # a long finite horizon converges to the infinite one
    torch.testing.assert_close(ipd_values(t1, t2, gamma, 2000)[0], ipd_values(t1, t2, gamma)[0])


def test_symmetric_game_swaps_roles():
    t1, t2 = _pair(5)
    v1, v2 = ipd_values(t1, t2, 0.9)
    w1, w2 = ipd_values(t2, t1, 0.9)
    torch.testing.assert_close(v1, w2)
    torch.testing.assert_close(v2, w1)
    torch.testing.assert_close(lola_gradient(t1, t2, 0.9, 0.5, agent=2), lola_gradient(t2, t1, 0.9, 0.5))


# ---------------------------------------------------------------------------------------------
# Exact gradients against float64 finite differences
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("horizon", [None, 20])
@pytest.mark.parametrize("agent", [1, 2])
def test_naive_gradient_matches_finite_differences(horizon, agent):
    t1, t2 = _pair(6)
    g = naive_gradient(t1, t2, 0.9, horizon, agent=agent)
    if agent == 1:
        fd = central_difference(lambda x: ipd_values(x, t2, 0.9, horizon)[0], t1)
    else:
        fd = central_difference(lambda x: ipd_values(t1, x, 0.9, horizon)[1], t2)
    assert relative_error(g, fd) < 1e-6


def _looked_ahead(own, other, agent, gamma, lr, steps, horizon, game):
    """The opponent after ``steps`` exact naive steps, computed without a graph to ``own``."""
    other = other.detach()
    for _ in range(steps):
        o = other.clone().requires_grad_(True)
        pair = (own, o) if agent == 1 else (o, own)
        (g,) = torch.autograd.grad(ipd_values(*pair, gamma, horizon, game)[2 - agent], o)
        other = other + lr * g
    return other


@pytest.mark.parametrize(
    ("steps", "horizon", "agent", "game"),
    [(1, None, 1, "ipd"), (2, 30, 1, "ipd"), (1, 30, 2, "ipd"), (3, None, 2, "imp"), (1, None, 1, "imp")],
)
def test_lola_gradient_matches_finite_differences_of_the_composition(steps, horizon, agent, game):
    t1, t2 = _pair(7)
    gamma, lr = 0.9, 0.7
    got = lola_gradient(t1, t2, gamma, lr, steps, horizon, game=game, agent=agent)

    def composed(own):
        other = t2 if agent == 1 else t1
        looked = _looked_ahead(own, other, agent, gamma, lr, steps, horizon, game)
        pair = (own, looked) if agent == 1 else (looked, own)
        return ipd_values(*pair, gamma, horizon, game)[agent - 1]

    fd = central_difference(composed, t1 if agent == 1 else t2)
    assert relative_error(got, fd) < 1e-6
    # the shaping term is really there: LOLA differs from the naive gradient at the looked-ahead pair
    assert relative_error(got, naive_gradient(t1, t2, gamma, horizon, game=game, agent=agent)) > 1e-3


def test_lola_gradient_batches_pairs_independently():
    t1, t2 = _pair(8, (4,))
    batched = lola_gradient(t1, t2, 0.96, 0.3, 2, 50)
    single = torch.stack([lola_gradient(t1[i], t2[i], 0.96, 0.3, 2, 50) for i in range(4)])
    torch.testing.assert_close(batched, single)


def test_zero_lookahead_is_naive():
    t1, t2 = _pair(9)
    torch.testing.assert_close(lola_gradient(t1, t2, 0.9, 0.0), naive_gradient(t1, t2, 0.9))
    torch.testing.assert_close(lola_gradient(t1, t2, 0.9, 1.0, 0), naive_gradient(t1, t2, 0.9))


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"theta1": torch.zeros(4, dtype=torch.float64)}, "theta1: expected shape"),
        ({"theta2": torch.zeros(2, 6, dtype=torch.float64)}, "theta2: expected shape"),
        ({"theta1": torch.tensor([0.0, float("nan"), 0, 0, 0], dtype=torch.float64)}, "theta1: contains NaN"),
        ({"gamma": 1.0}, "gamma"),
        ({"gamma": -0.1}, "gamma"),
        ({"game": "chess"}, "game: unknown"),
        ({"horizon": 0}, "horizon"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(kwargs, message):
    args = {"theta1": torch.zeros(5, dtype=torch.float64), "theta2": torch.zeros(5, dtype=torch.float64)}
    args.update({k: v for k, v in kwargs.items() if k.startswith("theta")})
    rest = {k: v for k, v in kwargs.items() if not k.startswith("theta")}
    with pytest.raises(ValueError, match=message):
        ipd_values(
            args["theta1"],
            args["theta2"],
            rest.get("gamma", 0.9),
            rest.get("horizon"),
            rest.get("game", "ipd"),
        )
    with pytest.raises(ValueError, match=message):
        ipd_rollout(
            args["theta1"],
            args["theta2"],
            4,
            rest.get("horizon", 5),
            gamma=rest.get("gamma", 0.9),
            game=rest.get("game", "ipd"),
        )


def test_bad_lola_arguments():
    t1, t2 = _pair(10)
    with pytest.raises(ValueError, match="lookahead_steps"):
        lola_gradient(t1, t2, 0.9, 0.3, -1)
    with pytest.raises(ValueError, match="lookahead_lr"):
        lola_gradient(t1, t2, 0.9, float("nan"))
    with pytest.raises(ValueError, match="agent"):
        lola_gradient(t1, t2, 0.9, 0.3, agent=3)
    with pytest.raises(ValueError, match="num_episodes"):
        ipd_rollout(t1, t2, 0)
    with pytest.raises(ValueError, match="probabilities"):
        memory_one_logits(1.2, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="opponent"):
        gym.make("MetaGrad/IPD-v0", opponent=[0.0, 1.0])
