"""The exact LQR oracles: against an independent numpy implementation (1e-8 relative), float64
central differences, Monte Carlo returns and a hand-solved case.

The independent implementation below shares no code or formulation with
:mod:`metagrad.exact.lqr`: the return comes from the second moments of the augmented state
``z = [x; 1]``, the gradient from the adjoint (policy-evaluation Riccati) recursion written out
by hand, and the meta-gradient by complex-step differentiation through K analytic inner steps
(exact to rounding, no step-size error).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lqr_checks import ALPHA, random_policy, random_task

from metagrad.envs.lqr import LinearGaussian, LQRTask, PointMassNavigation, rollout
from metagrad.exact import (
    lqr_maml_meta_gradient,
    lqr_moments,
    lqr_return,
    lqr_state_values,
    lqr_value,
)
from metagrad.testing import central_difference

# ------------------------------------------------------------------------------------------------
# An independent numpy implementation (complex-safe: transposes never conjugate)
# ------------------------------------------------------------------------------------------------


def _fields(task: LQRTask) -> dict:
    return {name: getattr(task, name).numpy() for name in LQRTask.MATRICES} | {
        "gamma": task.gamma,
        "T": task.horizon,
    }


def np_return(f: dict, K, k, log_std):
    """``J`` from the augmented second moments ``M_t = E[z z^T]``, ``z = [x; 1]``."""
    A, B, Q, R, W, g = f["A"], f["B"], f["Q"], f["R"], f["W"], f["goal"]
    n = A.shape[0]
    V = np.diag(np.exp(2 * log_std))
    Gm = np.zeros((n + 1, n + 1), dtype=np.result_type(K, log_std, float))
    Gm[:n, :n], Gm[:n, n], Gm[n, n] = A + B @ K, B @ k, 1.0
    noise = np.zeros_like(Gm)
    noise[:n, :n] = B @ V @ B.T + W
    C = np.zeros_like(Gm)
    C[:n, :n] = Q + K.T @ R @ K
    C[:n, n] = K.T @ R @ k - Q @ g
    C[n, :n] = C[:n, n]
    C[n, n] = g @ Q @ g + k @ R @ k
    M = np.zeros_like(Gm)
    M[:n, :n] = f["S0"] + np.outer(f["mu0"], f["mu0"])
    M[:n, n] = M[n, :n] = f["mu0"]
    M[n, n] = 1.0
    total = 0.0
    for t in range(f["T"]):
        total = total + f["gamma"] ** t * (np.trace(C @ M) + np.trace(R @ V))
        M = Gm @ M @ Gm.T + noise
    return -total


def np_gradient(f: dict, K, k, log_std):
    """``grad J`` by the adjoint: with the cost-to-go ``x^T P_t x + 2 p_t^T x + c_t`` and the
    forward moments, ``dC/dK = 2 sum_t gamma^t (E_t E[x x^T] + e_t m_t^T)``,
    ``dC/dk = 2 sum_t gamma^t (E_t m_t + e_t)``, ``dC/dlog_std_j = 2 sum_t gamma^t
    (R + gamma B^T P_{t+1} B)_jj sigma_j^2`` with ``E_t = R K + gamma B^T P_{t+1} (A + B K)``
    and ``e_t = R k + gamma B^T (P_{t+1} B k + p_{t+1})``; ``J = -C``."""
    A, B, Q, R, W, g, gamma, T = (f[x] for x in ("A", "B", "Q", "R", "W", "goal", "gamma", "T"))
    sigma2 = np.exp(2 * log_std)
    F = A + B @ K
    # backward: P_t, p_t for t = T .. 0
    P = [None] * (T + 1)
    p = [None] * (T + 1)
    P[T] = np.zeros_like(F)
    p[T] = np.zeros(F.shape[0], dtype=F.dtype)
    for t in range(T - 1, -1, -1):
        P[t] = Q + K.T @ R @ K + gamma * F.T @ P[t + 1] @ F
        p[t] = K.T @ R @ k - Q @ g + gamma * F.T @ (P[t + 1] @ (B @ k) + p[t + 1])
    m, S = f["mu0"].astype(F.dtype), f["S0"].astype(F.dtype)
    gK, gk, gs = np.zeros_like(K), np.zeros_like(k), np.zeros_like(log_std)
    for t in range(T):
        E = R @ K + gamma * B.T @ P[t + 1] @ F
        e = R @ k + gamma * B.T @ (P[t + 1] @ (B @ k) + p[t + 1])
        w = 2 * gamma**t
        gK = gK + w * (E @ (S + np.outer(m, m)) + np.outer(e, m))
        gk = gk + w * (E @ m + e)
        gs = gs + w * np.diag(R + gamma * B.T @ P[t + 1] @ B) * sigma2
        m, S = F @ m + B @ k, F @ S @ F.T + B @ np.diag(sigma2) @ B.T + W
    return -gK, -gk, -gs


def np_meta_gradient(f: dict, K, k, log_std, alpha: float, steps: int, h: float = 1e-30):
    """``d J(theta_K) / d theta_0`` by complex steps through ``steps`` analytic inner updates."""
    m, n = K.shape
    theta0 = np.concatenate([K.reshape(-1), k, log_std]).astype(complex)

    def meta_objective(theta):
        for _ in range(steps):
            gK, gk, gs = np_gradient(
                f, theta[: m * n].reshape(m, n), theta[m * n : m * n + m], theta[m * n + m :]
            )
            theta = theta + alpha * np.concatenate([gK.reshape(-1), gk, gs])
        return np_return(f, theta[: m * n].reshape(m, n), theta[m * n : m * n + m], theta[m * n + m :])

    grad = np.empty(theta0.shape[0])
    for i in range(theta0.shape[0]):
        step = np.zeros_like(theta0)
        step[i] = 1j * h
        grad[i] = meta_objective(theta0 + step).imag / h
    return grad[: m * n].reshape(m, n), grad[m * n : m * n + m], grad[m * n + m :]


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# ------------------------------------------------------------------------------------------------
# Against the independent implementation
# ------------------------------------------------------------------------------------------------

# (seed, n, m, horizon, gamma, inner_steps, inner_lr); inner_lr keeps each inner step moderate
# (alpha |grad J| below about 0.5 on these tasks), so the inner loop does not diverge
CASES = [
    (0, 3, 2, 6, 0.9, 1, 0.01),
    (1, 2, 1, 10, 1.0, 2, 0.005),
    (2, 4, 3, 5, 0.7, 3, 2e-4),
    (3, 1, 1, 1, 0.95, 2, 0.05),
]


@pytest.mark.parametrize(("seed", "n", "m", "horizon", "gamma", "steps", "alpha"), CASES)
def test_return_gradient_and_meta_gradient_match_an_independent_implementation(
    seed, n, m, horizon, gamma, steps, alpha
):
    tasks = random_task(seed, n, m, num_tasks=3, horizon=horizon, gamma=gamma)
    K, k, log_std = random_policy(seed + 100, n, m, batch=(3,))
    J = lqr_return(tasks, K, k, log_std)
    grad0 = lqr_maml_meta_gradient(tasks, K, k, log_std, inner_lr=alpha, inner_steps=0)
    meta = lqr_maml_meta_gradient(tasks, K, k, log_std, inner_lr=alpha, inner_steps=steps)
    assert J.dtype == torch.float64 and J.shape == (3,)
    for i, task in enumerate(tasks.unbind()):
        f = _fields(task)
        args = (K[i].numpy(), k[i].numpy(), log_std[i].numpy())
        assert _rel(J[i], np_return(f, *args)) < 1e-8
        ref_grad = np_gradient(f, *args)
        assert (
            _rel(
                LinearGaussian(*(x[i] for x in grad0)).flatten(),
                np.concatenate([x.reshape(-1) for x in ref_grad]),
            )
            < 1e-8
        )
        ref_meta = np_meta_gradient(f, *args, alpha, steps)
        ours = LinearGaussian(*(x[i] for x in meta)).flatten()
        assert _rel(ours, np.concatenate([x.reshape(-1) for x in ref_meta])) < 1e-8


def agreement(seed: int) -> tuple[float, float, float]:
    """Relative errors (return, gradient, meta-gradient) against the independent implementation
    on one random setting drawn from ``seed`` (sizes, horizon, discount, K, alpha, policy)."""
    rng = np.random.default_rng([seed, 26])
    n, m = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    horizon, gamma, steps = int(rng.integers(1, 13)), float(rng.uniform(0.5, 1.0)), int(rng.integers(0, 4))
    task = random_task(seed, n, m, horizon=horizon, gamma=gamma)
    K, k, log_std = random_policy(seed, n, m)
    grad = lqr_maml_meta_gradient(task, K, k, log_std, inner_lr=0.0, inner_steps=0)
    alpha = 0.2 / max(float(grad.flatten().norm()), 1e-12)  # an inner step of size 0.2
    f, args = _fields(task), (K.numpy(), k.numpy(), log_std.numpy())
    meta = lqr_maml_meta_gradient(task, K, k, log_std, inner_lr=alpha, inner_steps=steps).flatten()
    return (
        _rel(lqr_return(task, K, k, log_std), np_return(f, *args)),
        _rel(grad.flatten(), np.concatenate([x.reshape(-1) for x in np_gradient(f, *args)])),
        _rel(meta, np.concatenate([x.reshape(-1) for x in np_meta_gradient(f, *args, alpha, steps)])),
    )


@pytest.mark.slow
def test_agreement_on_many_random_settings():
    worst = np.max([agreement(seed) for seed in range(200)], axis=0)
    assert (worst < 1e-8).all(), worst


def test_value_recursion_agrees_with_the_return_and_the_batch_with_single_tasks():
    tasks = random_task(5, 3, 2, num_tasks=4, horizon=7)
    K, k, log_std = random_policy(6, 3, 2)  # one policy for every task
    J = lqr_return(tasks, K, k, log_std)
    value = lqr_value(tasks, K, k, log_std)
    assert value.P.shape == (4, 8, 3, 3) and value.p.shape == (4, 8, 3) and value.c.shape == (4, 8)
    assert torch.all(value.P[:, -1] == 0) and torch.all(value.c[:, -1] == 0)
    m0, S0 = tasks.mu0, tasks.S0
    expected_v0 = -(
        (value.P[:, 0] * (S0 + m0.unsqueeze(-1) * m0.unsqueeze(-2))).sum((-2, -1))
        + 2 * (value.p[:, 0] * m0).sum(-1)
        + value.c[:, 0]
    )
    assert torch.allclose(expected_v0, J, rtol=1e-12, atol=0)
    single = torch.stack([lqr_return(t, K, k, log_std) for t in tasks.unbind()])
    assert torch.allclose(single, J, rtol=1e-13, atol=0)
    means, covs = lqr_moments(tasks, K, k, log_std)
    assert means.shape == (4, 7, 3) and covs.shape == (4, 7, 3, 3)


def test_hand_solved_scalar_integrator():
    """n = m = 1, A = B = 1, K = 0, no process or initial noise: m_t = mu0 + t k, S_t = t sigma^2."""
    mu0, goal, k, log_std, q, r, gamma, T = 0.3, 1.0, 0.2, -0.4, 2.0, 0.5, 0.9, 5
    task = LQRTask(
        A=[[1.0]],
        B=[[1.0]],
        Q=[[q]],
        R=[[r]],
        W=[[0.0]],
        mu0=[mu0],
        S0=[[0.0]],
        goal=[goal],
        gamma=gamma,
        horizon=T,
    )
    s2 = math.exp(2 * log_std)
    expected = -sum(gamma**t * (q * (t * s2 + (mu0 + t * k - goal) ** 2) + r * (s2 + k**2)) for t in range(T))
    J = lqr_return(
        task,
        torch.zeros(1, 1, dtype=torch.float64),
        torch.tensor([k], dtype=torch.float64),
        torch.tensor([log_std], dtype=torch.float64),
    )
    assert abs(float(J) - expected) <= 1e-12 * abs(expected)


# ------------------------------------------------------------------------------------------------
# Finite differences and Monte Carlo
# ------------------------------------------------------------------------------------------------


def _richardson(fn, x, eps=1e-5):
    """Central differences extrapolated over two step sizes (``eps``, ``eps / 2``): the
    ``O(eps^2)`` truncation error cancels, leaving ``O(eps^4)`` plus rounding."""
    coarse, fine = central_difference(fn, x, eps), central_difference(fn, x, eps / 2)
    return (4 * fine - coarse) / 3


def test_gradient_and_meta_gradient_match_central_differences():
    task = random_task(7, 2, 2, horizon=6)
    K, k, log_std = random_policy(8, 2, 2)
    theta0 = LinearGaussian(K, k, log_std).flatten()
    alpha, steps = 0.02, 2

    def objective(theta):
        return lqr_return(task, *LinearGaussian.unflatten(theta, 2, 2))

    def meta_objective(theta):
        theta = theta.clone()
        for _ in range(steps):
            leaf = theta.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(leaf), leaf)
            theta = theta + alpha * grad
        return objective(theta).detach()

    grad = LinearGaussian(
        *lqr_maml_meta_gradient(task, K, k, log_std, inner_lr=alpha, inner_steps=0)
    ).flatten()
    meta = LinearGaussian(
        *lqr_maml_meta_gradient(task, K, k, log_std, inner_lr=alpha, inner_steps=steps)
    ).flatten()
    with torch.no_grad():
        fd_grad = _richardson(objective, theta0)
    fd_meta = _richardson(meta_objective, theta0)
    assert _rel(grad, fd_grad) < 1e-8
    assert _rel(meta, fd_meta) < 1e-8
    assert _rel(meta, grad) > 1e-3  # the inner steps matter here (a test that can fail)


@pytest.mark.parametrize("family", ["general", "navigation"])
def test_returns_and_values_match_monte_carlo(family):
    if family == "general":
        tasks = random_task(9, 3, 2, num_tasks=3, horizon=8)
        K, k, log_std = random_policy(10, 3, 2)
    else:
        dist = PointMassNavigation(horizon=12, noise_std=0.2, init_std=0.3)
        tasks = dist.sample(3, dist.train_rng(0))
        K, k, log_std = random_policy(10, 2, 2)
    B = 20_000
    traj = rollout(tasks, K, k, log_std, B, generator=torch.Generator().manual_seed(11))
    weights = tasks.gamma ** torch.arange(tasks.horizon, dtype=torch.float64).reshape(-1, 1, 1)
    returns = (weights * traj.rewards).sum(0)  # [B, N]
    J = lqr_return(tasks, K, k, log_std)
    z = (returns.mean(0) - J) / (returns.std(0) / B**0.5)
    threshold = float(torch.special.ndtri(torch.tensor(1 - ALPHA / (2 * 3), dtype=torch.float64)))
    assert float(z.abs().max()) <= threshold, z
    # V_t(x_t) is the conditional mean of the return-to-go from x_t: residuals have mean zero
    to_go = (weights * traj.rewards).flip(0).cumsum(0).flip(0) / weights
    residual = to_go - lqr_state_values(lqr_value(tasks, K, k, log_std), traj.states)
    z_v = residual.mean(1) / (residual.std(1) / B**0.5)  # [T, N]
    threshold_v = float(torch.special.ndtri(torch.tensor(1 - ALPHA / (2 * z_v.numel()), dtype=torch.float64)))
    assert float(z_v.abs().max()) <= threshold_v


def test_exact_oracles_take_array_likes_and_reject_bad_parameters():
    task = random_task(12, 2, 1)
    J = lqr_return(task, np.zeros((1, 2)), [0.5], np.array([-1.0]))
    assert J.dtype == torch.float64 and J.shape == ()
    with pytest.raises(ValueError, match="K: expected shape"):
        lqr_return(task, torch.zeros(2, 2), torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="log_std: contains NaN"):
        lqr_return(task, torch.zeros(1, 2), torch.zeros(1), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="inner_steps"):
        lqr_maml_meta_gradient(
            task, torch.zeros(1, 2), torch.zeros(1), torch.zeros(1), inner_lr=0.1, inner_steps=-1
        )
    batch = random_task(12, 2, 1, num_tasks=3)
    with pytest.raises(ValueError, match="do not broadcast"):
        lqr_return(batch, torch.zeros(4, 1, 2), torch.zeros(1), torch.zeros(1))


def test_meta_gradient_of_a_policy_batch_per_task_and_repeat():
    tasks = random_task(13, 2, 2, num_tasks=3)
    K, k, log_std = random_policy(14, 2, 2, batch=(5, 3))
    meta = lqr_maml_meta_gradient(tasks, K, k, log_std, inner_lr=0.01, inner_steps=1)
    assert meta.K.shape == (5, 3, 2, 2) and meta.k.shape == (5, 3, 2) and meta.log_std.shape == (5, 3, 2)
    one = lqr_maml_meta_gradient(
        tasks.unbind()[2], K[4, 2], k[4, 2], log_std[4, 2], inner_lr=0.01, inner_steps=1
    )
    assert torch.allclose(
        LinearGaussian(*(x[4, 2] for x in meta)).flatten(), one.flatten(), rtol=1e-12, atol=1e-14
    )
