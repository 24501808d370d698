"""Exact oracles against float64 finite differences and hand-solvable cases."""

from __future__ import annotations

import pytest
import torch

from metagrad.envs import TabularTask, random_task
from metagrad.exact import (
    lirpg_meta_gradient,
    maml_meta_gradient,
    tabular_return,
    tabular_values,
)
from metagrad.testing import central_difference
from metagrad.testing import relative_error as rel_err


def exact_theta_k(task, theta, steps, lr, objective, reward=None):
    """theta_K by exact ascent, without graphs (the composed function for finite differences)."""
    for _ in range(steps):
        t = theta.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(tabular_return(task, t, objective, reward=reward), t)
        theta = theta + lr * g
    return theta


def test_hand_solvable_two_state_chain():
    """Deterministic 2-state chain: from s0, action 1 moves to s1 (reward 1), s1 absorbs with reward 0.5."""
    P = torch.zeros(2, 2, 2, dtype=torch.float64)
    P[0, 0, 0] = P[0, 1, 1] = P[1, :, 1] = 1.0
    R = torch.tensor([[0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    task = TabularTask(P=P, R=R, init=torch.tensor([1.0, 0.0]), gamma=0.5, horizon=3)
    greedy = torch.tensor([[-50.0, 50.0], [0.0, 0.0]], dtype=torch.float64)
    # r = 1, then 0.5 twice: 1 + 0.5 * 0.5 + 0.25 * 0.5
    assert torch.isclose(tabular_return(task, greedy), torch.tensor(1.375, dtype=torch.float64))
    # infinite: 1 + 0.5 * 0.5 / (1 - 0.5) = 1.5
    assert torch.isclose(tabular_return(task, greedy, "infinite"), torch.tensor(1.5, dtype=torch.float64))
    stay = torch.tensor([[50.0, -50.0], [0.0, 0.0]], dtype=torch.float64)
    assert torch.isclose(tabular_return(task, stay), torch.tensor(0.0, dtype=torch.float64), atol=1e-12)
    # uniform policy, horizon 1: E[r_0] = 0.5
    one = TabularTask(P=P, R=R, init=torch.tensor([1.0, 0.0]), gamma=0.5, horizon=1)
    assert torch.isclose(
        tabular_return(one, torch.zeros(2, 2, dtype=torch.float64)), torch.tensor(0.5, dtype=torch.float64)
    )


def test_values_consistent(small_task, small_logits):
    v = tabular_values(small_task, small_logits, "finite")
    assert v.shape == (small_task.horizon + 1, small_task.num_states)
    assert (v[-1] == 0).all()
    assert torch.isclose((v[0] * small_task.init).sum(), tabular_return(small_task, small_logits))


def test_batched_logits_match_single(small_task):
    logits = torch.randn(3, 2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    batched = tabular_return(small_task, logits)
    assert batched.shape == (3, 2)
    assert torch.isclose(batched[1, 1], tabular_return(small_task, logits[1, 1]))
    mg = maml_meta_gradient(small_task, logits, 2, 0.5)
    assert torch.allclose(mg[2, 0], maml_meta_gradient(small_task, logits[2, 0], 2, 0.5))


def test_infinite_approaches_finite_as_horizon_grows(small_logits):
    gaps = []
    for H in (5, 20, 80, 200):
        task = random_task(4, 3, gamma=0.9, horizon=H, dirichlet_alpha=1.0, seed=3)
        gaps.append(
            float((tabular_return(task, small_logits) - tabular_return(task, small_logits, "infinite")).abs())
        )
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3] and gaps[3] < 1e-8
    # The gap is at most gamma^H * max|r| / (1 - gamma).
    assert gaps[1] <= 0.9**20 / 0.1


@pytest.mark.parametrize("objective", ["finite", "infinite"])
def test_gradient_and_hessian_match_finite_differences(small_task, small_logits, objective):
    theta = small_logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(tabular_return(small_task, theta, objective), theta, create_graph=True)
    fd_g = central_difference(lambda x: tabular_return(small_task, x, objective), small_logits)
    assert rel_err(g.detach(), fd_g) < 1e-5
    hess = torch.stack([torch.autograd.grad(gi, theta, retain_graph=True)[0] for gi in g.reshape(-1)])
    hess = hess.reshape(*small_logits.shape, *small_logits.shape)

    def grad_fn(x):
        x = x.clone().requires_grad_(True)
        return torch.autograd.grad(tabular_return(small_task, x, objective), x)[0]

    fd_h = central_difference(grad_fn, small_logits)
    assert rel_err(hess, fd_h) < 1e-5


@pytest.mark.parametrize("objective", ["finite", "infinite"])
@pytest.mark.parametrize("steps", [0, 1, 2, 3])
def test_maml_meta_gradient_matches_finite_differences(small_task, small_logits, steps, objective):
    lr = 0.7
    mg = maml_meta_gradient(small_task, small_logits, steps, lr, objective)
    fd = central_difference(
        lambda x: tabular_return(small_task, exact_theta_k(small_task, x, steps, lr, objective), objective),
        small_logits,
    )
    assert mg.dtype == torch.float64 and mg.shape == small_logits.shape
    assert rel_err(mg, fd) < 1e-5


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
def test_lirpg_meta_gradient_matches_finite_differences(small_task, small_logits, steps):
    lr = 0.7
    eta = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 0.3
    mg = lirpg_meta_gradient(small_task, small_logits, eta, steps, lr)

    def outer(e):
        theta_k = exact_theta_k(small_task, small_logits, steps, lr, "finite", reward=small_task.R + e)
        return tabular_return(small_task, theta_k)

    fd = central_difference(outer, eta)
    if steps == 0:
        assert (mg == 0).all()
    else:
        assert rel_err(mg, fd) < 1e-5


def test_meta_gradient_K0_is_policy_gradient(small_task, small_logits):
    theta = small_logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(tabular_return(small_task, theta), theta)
    assert torch.allclose(maml_meta_gradient(small_task, small_logits, 0, 10.0), g)


def test_meta_gradient_is_product_formula(small_task, small_logits):
    """K = 1: (I + alpha H(theta_0)) grad J(theta_1), the closed form of BACKGROUND.md section 1."""
    lr = 0.4
    theta = small_logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(tabular_return(small_task, theta), theta, create_graph=True)
    hess = torch.stack(
        [torch.autograd.grad(gi, theta, retain_graph=True)[0].reshape(-1) for gi in g.reshape(-1)]
    )
    theta1 = (small_logits + lr * g).detach().requires_grad_(True)
    (g1,) = torch.autograd.grad(tabular_return(small_task, theta1), theta1)
    expected = (torch.eye(12, dtype=torch.float64) + lr * hess) @ g1.reshape(-1)
    assert torch.allclose(maml_meta_gradient(small_task, small_logits, 1, lr).reshape(-1), expected)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t, l: tabular_return(t, l, "average"), "objective"),
        (lambda t, l: tabular_return(t, torch.zeros(4, 4)), "logits: expected shape"),
        (lambda t, l: maml_meta_gradient(t, l, -1, 1.0), "inner_steps"),
        (lambda t, l: maml_meta_gradient(t, l, 1.5, 1.0), "inner_steps"),
        (lambda t, l: maml_meta_gradient(t, torch.full((4, 3), float("nan")), 1, 1.0), "NaN"),
        (lambda t, l: lirpg_meta_gradient(t, l, torch.zeros(3, 3), 1, 1.0), "eta: expected shape"),
    ],
)
def test_exact_rejects_bad_input(small_task, small_logits, call, match):
    with pytest.raises(ValueError, match=match):
        call(small_task, small_logits)


def test_infinite_needs_gamma_below_one(small_logits):
    task = random_task(4, 3, gamma=1.0, horizon=5, dirichlet_alpha=1.0, seed=3)
    assert torch.isfinite(tabular_return(task, small_logits))
    with pytest.raises(ValueError, match="gamma"):
        tabular_return(task, small_logits, "infinite")
