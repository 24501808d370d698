"""The registered estimators on Gaussian policies, judged against the exact derivatives of the
LQR return: the score-function family on Gaussian log-densities and the pathwise estimator.

Every check compares the mean of per-group estimates with the exact gradient or Hessian,
component by component, with a Bonferroni-corrected z-test at family-wise level ALPHA
(``lqr_checks``). Which estimator is expected to be unbiased at which order comes from the
theory, not from these runs: DiCE, DiCE with a baseline and Loaded DiCE (lambda = 1, any critic
that does not depend on theta) at every order; the pathwise estimator at every order here (the
return is a polynomial in the parameters, ``exp(log_std)`` and Gaussian noise); LVC and the
plain policy-gradient surrogate at first order only (their Hessians drop score-function terms).
"""

from __future__ import annotations

import pytest
import torch
from lqr_checks import assert_biased, assert_unbiased, random_policy, random_task

from metagrad.envs.lqr import LinearGaussian, rollout
from metagrad.estimators import ESTIMATORS, get_estimator, pathwise
from metagrad.exact import lqr_return, lqr_state_values, lqr_value

N_STATE, N_ACTION = 2, 2
GROUPS, EPISODES = 500, 40


def _problem(seed: int = 0):
    task = random_task(seed, N_STATE, N_ACTION, horizon=5, gamma=0.9)
    K, k, log_std = random_policy(seed + 1, N_STATE, N_ACTION)
    return task, LinearGaussian(K, k, log_std).flatten()


def _exact(task, theta: torch.Tensor, order: int) -> torch.Tensor:
    def objective(flat):
        return lqr_return(task, *LinearGaussian.unflatten(flat, N_STATE, N_ACTION))

    if order == 1:
        leaf = theta.clone().requires_grad_(True)
        return torch.autograd.grad(objective(leaf), leaf)[0]
    return torch.autograd.functional.hessian(objective, theta)


def _estimates(
    name: str, order: int, *, critic_noise: float | None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group estimates ``[GROUPS, D]`` (order 1) or ``[GROUPS, D, D]`` (order 2) and the exact value."""
    task, theta = _problem()
    info = get_estimator(name)
    gen = torch.Generator().manual_seed(seed)
    leaves = theta.expand(GROUPS, -1).clone().requires_grad_(True)
    policy = LinearGaussian.unflatten(leaves, N_STATE, N_ACTION)
    traj = rollout(task, *policy, EPISODES, generator=gen, reparameterize=info.family == "pathwise")
    values = bootstrap = None
    if critic_noise is not None:
        exact_values = lqr_state_values(lqr_value(task, *(p.detach() for p in policy)), traj.states)
        noise = torch.randn(exact_values.shape, generator=gen, dtype=torch.float64)
        values = exact_values + critic_noise * noise * exact_values.abs()
        bootstrap = torch.zeros_like(values[0])
    surrogate = info.fn(
        traj.log_probs,
        traj.rewards,
        traj.discounts,
        behaviour_log_probs=traj.behaviour_log_probs,
        values=values,
        bootstrap_value=bootstrap,
    )
    (grad,) = torch.autograd.grad(surrogate.mean(0).sum(), leaves, create_graph=order == 2)
    if order == 1:
        return grad.detach(), _exact(task, theta, 1)
    rows = [torch.autograd.grad(grad[:, j].sum(), leaves, retain_graph=True)[0] for j in range(grad.shape[1])]
    return torch.stack(rows, dim=1).detach(), _exact(task, theta, 2)


UNBIASED = [  # (estimator, order, critic noise or None for no critic)
    ("dice", 1, None),
    ("dice", 2, None),
    ("dice_baseline", 1, 0.0),
    ("dice_baseline", 2, 0.0),
    ("loaded_dice", 1, 0.0),
    ("loaded_dice", 2, 0.0),
    ("loaded_dice", 2, 0.5),
    ("loaded_dice", 2, None),
    ("lvc", 1, 0.0),
    ("pg", 1, 0.0),
    ("pg", 1, 0.5),
    ("pathwise", 1, None),
    ("pathwise", 2, None),
]


@pytest.mark.parametrize(("name", "order", "critic_noise"), UNBIASED)
def test_estimators_unbiased_on_gaussian_policies(name, order, critic_noise):
    estimates, exact = _estimates(name, order, critic_noise=critic_noise)
    assert_unbiased(estimates.reshape(GROUPS, -1), exact.reshape(-1), f"{name} order {order}")


@pytest.mark.parametrize("name", ["pg", "lvc"])
def test_biased_hessians_are_detected_on_gaussian_policies(name):
    estimates, exact = _estimates(name, 2, critic_noise=0.0)
    assert_biased(estimates.reshape(GROUPS, -1), exact.reshape(-1), f"{name} Hessian")


def test_registered_facts_match_what_the_tests_check():
    """The orders claimed in the registry are the ones checked above (no claim without a test)."""
    claimed = {
        name: ESTIMATORS[name].unbiased_at(2) for name in ("dice", "dice_baseline", "loaded_dice", "pathwise")
    }
    assert claimed == dict.fromkeys(claimed, True)
    assert ESTIMATORS["pg"].unbiased_at(2) is False and ESTIMATORS["lvc"].unbiased_at(2) is False
    info = ESTIMATORS["pathwise"]
    assert info.family == "pathwise" and info.unbiased_orders == "all" and not info.uses_critic
    assert info.unbiased_when and "Registered as ``pathwise``" in (pathwise.__doc__ or "")


def test_pathwise_value_is_the_discounted_return_and_needs_the_graph():
    task, theta = _problem()
    leaf = theta.clone().requires_grad_(True)
    policy = LinearGaussian.unflatten(leaf, N_STATE, N_ACTION)
    traj = rollout(task, *policy, 8, generator=torch.Generator().manual_seed(3), reparameterize=True)
    weights = task.gamma ** torch.arange(task.horizon, dtype=torch.float64).reshape(-1, 1)
    value = pathwise(traj.log_probs, traj.rewards, traj.discounts)
    assert value.shape == (8,) and torch.allclose(value, (weights * traj.rewards).sum(0), rtol=1e-14, atol=0)
    # a critic cut from the graph changes nothing, so pathwise ignores it
    critic = torch.randn(traj.rewards.shape, dtype=torch.float64)
    assert torch.equal(pathwise(traj.log_probs, traj.rewards, traj.discounts, values=critic), value)
    plain = rollout(task, *policy, 8, generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="rewards: carry no graph"):
        pathwise(plain.log_probs, plain.rewards, plain.discounts)
    with pytest.raises(ValueError, match="discounts"):
        pathwise(traj.log_probs, traj.rewards, traj.discounts[:-1])


def test_pathwise_has_lower_variance_than_dice_here():
    """Not a claim of the registry: the reason pathwise is worth scoring (measured, not assumed)."""
    path, _ = _estimates("pathwise", 1, critic_noise=None)
    dice, _ = _estimates("dice", 1, critic_noise=None)
    assert float(path.var(0).sum()) < float(dice.var(0).sum())
