"""Estimators: statistical unbiasedness, known biases, reductions and input validation."""

from __future__ import annotations

import pytest
import torch

from metagrad import estimators as E
from metagrad.envs import policy_log_probs, rollout
from metagrad.testing import assert_unbiased, check_unbiased


@pytest.mark.parametrize("name", ["dice", "dice_baseline", "loaded_dice", "lvc", "pg", "off_policy_dice"])
def test_first_derivative_unbiased(name):
    assert_unbiased(E.get_estimator(name).fn, order=1)


@pytest.mark.parametrize("noise", [None, 0.0, 3.0])
def test_loaded_dice_unbiased_for_any_critic(noise):
    assert_unbiased(E.loaded_dice, order=1, critic_noise=noise, seed=1)
    assert_unbiased(E.loaded_dice, order=2, critic_noise=noise, seed=1)


@pytest.mark.parametrize("name", ["dice", "dice_baseline", "loaded_dice", "off_policy_dice"])
def test_second_derivative_unbiased(name):
    assert_unbiased(E.get_estimator(name).fn, order=2)


@pytest.mark.parametrize("name", ["pg", "lvc"])
def test_biased_hessians_are_detected(name):
    report = check_unbiased(E.get_estimator(name).fn, order=2)
    assert not report.unbiased, report.summary()
    assert report.max_abs_z > 10 * report.threshold


def test_off_policy_dice_unbiased_under_another_behaviour_policy(small_task):
    mu = torch.zeros(4, 3, dtype=torch.float64)
    for order in (1, 2):
        assert_unbiased(E.off_policy_dice, order=order, task=small_task, behaviour_logits=mu)
    # Plain DiCE ignores the behaviour policy, so it is biased on off-policy data.
    report = check_unbiased(E.dice, 1, task=small_task, behaviour_logits=mu)
    assert not report.unbiased


def test_checker_detects_a_planted_bias():
    def shifted(log_probs, rewards, discounts, **kw):
        # A constant reward shift would not change the gradient at a fixed horizon; a scale does.
        return E.dice(log_probs, 1.2 * rewards, discounts, **kw)

    with pytest.raises(AssertionError, match="looks biased"):
        assert_unbiased(shifted, order=1)


def _samples(small_task, small_logits, n=64):
    theta = small_logits.clone().requires_grad_(True)
    traj = rollout(small_task, theta, n, generator=torch.Generator().manual_seed(0))
    values = torch.rand(traj.rewards.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    boot = torch.rand(
        traj.final_states.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    return theta, traj, values, boot


def _derivs(fn, theta, traj, order=2, **kw):
    obj = fn(
        traj.log_probs, traj.rewards, traj.discounts, behaviour_log_probs=traj.behaviour_log_probs, **kw
    ).mean()
    (g,) = torch.autograd.grad(obj, theta, create_graph=True, retain_graph=True)
    if order == 1:
        return g.detach()
    v = torch.arange(theta.numel(), dtype=theta.dtype).reshape(theta.shape) / theta.numel()
    (hv,) = torch.autograd.grad((g * v).sum(), theta, retain_graph=True)
    return g.detach(), hv


def test_first_order_estimates_identical_on_same_samples(small_task, small_logits):
    theta, traj, values, boot = _samples(small_task, small_logits)
    grads = [
        _derivs(E.get_estimator(n).fn, theta, traj, 1, values=values, bootstrap_value=boot)
        for n in ("loaded_dice", "lvc", "pg")
    ]
    assert torch.allclose(grads[0], grads[1]) and torch.allclose(grads[0], grads[2])


def test_dice_first_order_is_reinforce(small_task, small_logits):
    theta, traj, _, _ = _samples(small_task, small_logits)
    disc = small_task.gamma ** torch.arange(small_task.horizon, dtype=torch.float64).reshape(-1, 1)
    reward_to_go = torch.flip(torch.cumsum(torch.flip(disc * traj.rewards, [0]), 0), [0])
    (reinforce,) = torch.autograd.grad(
        (traj.log_probs * reward_to_go).sum(0).mean(), theta, retain_graph=True
    )
    assert torch.allclose(_derivs(E.dice, theta, traj, 1), reinforce)


def test_loaded_dice_lambda_one_no_critic_equals_dice(small_task, small_logits):
    theta, traj, _, _ = _samples(small_task, small_logits)
    g1, h1 = _derivs(E.dice, theta, traj)
    g2, h2 = _derivs(E.loaded_dice, theta, traj, lambda_=1.0)
    assert torch.allclose(g1, g2) and torch.allclose(h1, h2)


def test_off_policy_dice_on_policy_equals_dice(small_task, small_logits):
    theta, traj, _, _ = _samples(small_task, small_logits)
    g1, h1 = _derivs(E.dice, theta, traj)
    g2, h2 = _derivs(E.off_policy_dice, theta, traj)
    assert torch.allclose(g1, g2) and torch.allclose(h1, h2)


def test_loaded_dice_lambda_zero_hessian_matches_lvc(small_task, small_logits):
    """lambda = 0 keeps only same-step dependencies, which is exactly LVC's curvature."""
    theta, traj, values, boot = _samples(small_task, small_logits)
    kw = dict(values=values, bootstrap_value=boot)
    g1, h1 = _derivs(E.loaded_dice, theta, traj, lambda_=0.0, **kw)
    g2, h2 = _derivs(E.lvc, theta, traj, **kw)
    assert torch.allclose(g1, g2) and torch.allclose(h1, h2)


def test_dice_value_is_discounted_return(small_task, small_logits):
    _, traj, _, _ = _samples(small_task, small_logits)
    disc = small_task.gamma ** torch.arange(small_task.horizon, dtype=torch.float64).reshape(-1, 1)
    assert torch.allclose(E.dice(traj.log_probs, traj.rewards, traj.discounts), (disc * traj.rewards).sum(0))


def test_discounts_respect_termination():
    rewards = torch.ones(4, 1, dtype=torch.float64)
    discounts = torch.tensor([[0.5], [0.0], [0.5], [0.5]], dtype=torch.float64)
    weights = E.cumulative_discounts(discounts)
    assert weights.flatten().tolist() == [1.0, 0.5, 0.0, 0.0]
    assert E.discounted_returns(rewards, discounts).flatten().tolist() == [1.5, 1.0, 1.5, 1.0]


def test_gradient_flows_through_rewards_for_intrinsic_rewards(small_task, small_logits):
    """LIRPG differentiates through rewards: no estimator may cut their graph."""
    theta, traj, values, boot = _samples(small_task, small_logits)
    eta = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    rewards = traj.rewards + eta[traj.states, traj.actions]
    for name in ("dice", "loaded_dice", "lvc", "pg", "off_policy_dice", "dice_baseline"):
        obj = (
            E.get_estimator(name)
            .fn(traj.log_probs, rewards, traj.discounts, values=values, bootstrap_value=boot)
            .mean()
        )
        (g,) = torch.autograd.grad(obj, theta, create_graph=True)
        (mixed,) = torch.autograd.grad(g.sum(), eta, retain_graph=True)
        assert mixed.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(rewards=torch.zeros(5, 3)), "rewards: shape"),
        (dict(discounts=torch.zeros(6)), "discounts: expected a time-major"),
        (dict(values=torch.zeros(6, 2)), "values: shape"),
        (dict(bootstrap_value=torch.zeros(6)), "bootstrap_value: expected shape"),
        (dict(rewards=torch.full((6, 3), float("nan"))), "rewards: contains NaN"),
        (dict(log_probs=[0.0]), "log_probs: expected a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("name", ["dice", "loaded_dice", "lvc", "pg", "off_policy_dice", "dice_baseline"])
def test_estimators_reject_bad_input(name, kwargs, match):
    args = dict(log_probs=torch.zeros(6, 3), rewards=torch.zeros(6, 3), discounts=torch.ones(6, 3))
    args.update(kwargs)
    fn = E.get_estimator(name).fn
    with pytest.raises(ValueError, match=match):
        fn(args.pop("log_probs"), args.pop("rewards"), args.pop("discounts"), **args)


def test_registry():
    assert {"dice", "dice_baseline", "loaded_dice", "lvc", "pg", "off_policy_dice"} <= set(E.ESTIMATORS)
    with pytest.raises(ValueError, match="unknown name 'nope'"):
        E.get_estimator("nope")
    with pytest.raises(ValueError, match="already registered"):
        E.register_estimator("dice", E.dice, reference="", summary="")
    with pytest.raises(ValueError, match="lambda_"):
        E.loaded_dice(torch.zeros(2, 1), torch.zeros(2, 1), torch.ones(2, 1), lambda_=1.5)


def test_policy_log_probs_matches_log_softmax(small_logits):
    states = torch.tensor([[0, 3], [2, 1]])
    actions = torch.tensor([[2, 0], [1, 1]])
    lp = policy_log_probs(small_logits, states, actions)
    ref = torch.log_softmax(small_logits, -1)[states, actions]
    assert torch.allclose(lp, ref)
