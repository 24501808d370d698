"""Exact oracles of linear-quadratic-Gaussian tasks: return, value and MAML meta-gradient.

For the model of :mod:`metagrad.envs.lqr` and a linear-Gaussian policy
``u = K x + k + exp(log_std) eps`` the state stays Gaussian, with mean ``m_t`` and covariance
``S_t`` following the moment recursion (``F = A + B K``, ``V_u = diag(exp(2 log_std))``)::

    m_0 = mu0,  S_0 = S0,  m_{t+1} = F m_t + B k,  S_{t+1} = F S_t F^T + B V_u B^T + W,

and the expected discounted return is::

    J = -sum_{t<T} gamma^t ( tr(Q S_t) + (m_t - goal)^T Q (m_t - goal)
                             + tr(R (K S_t K^T + V_u)) + (K m_t + k)^T R (K m_t + k) ).

Every function is a composition of differentiable torch operations in float64, so the gradient,
the Hessian and the MAML meta-gradient (autograd through K exact inner steps
``theta_{i+1} = theta_i + alpha grad J(theta_i)`` with ``theta = (K, k, log_std)``) are exact.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from metagrad.envs.lqr import LinearGaussian, LQRTask, as_policy
from metagrad.exact.common import check_steps, differentiable_inner_loop

__all__ = [
    "LQRValue",
    "lqr_maml_meta_gradient",
    "lqr_moments",
    "lqr_return",
    "lqr_state_values",
    "lqr_value",
]


def _float64_policy(task: LQRTask, K: Any, k: Any, log_std: Any) -> tuple[LinearGaussian, dict]:
    policy = as_policy(task, K, k, log_std)
    policy = LinearGaussian(*(x.to(torch.float64) for x in policy))
    return policy, task.tensors(policy.K.device, torch.float64)


def lqr_moments(task: LQRTask, K: Any, k: Any, log_std: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The state moments ``(m [*G, T, n], S [*G, T, n, n])`` of ``x_0 .. x_{T-1}`` (float64, with
    the graph of the parameters). Shapes and broadcasting as in :func:`lqr_return`."""
    policy, tab = _float64_policy(task, K, k, log_std)
    F = tab["A"] + tab["B"] @ policy.K
    Bk = (tab["B"] @ policy.k.unsqueeze(-1)).squeeze(-1)
    V_u = torch.diag_embed(torch.exp(2.0 * policy.log_std))
    noise = tab["B"] @ V_u @ tab["B"].mT + tab["W"]
    batch = F.shape[:-2]
    m, S = tab["mu0"].expand(*batch, -1), tab["S0"].expand(*batch, -1, -1)
    means, covs = [], []
    for _ in range(task.horizon):
        means.append(m)
        covs.append(S)
        m = (F @ m.unsqueeze(-1)).squeeze(-1) + Bk
        S = F @ S @ F.mT + noise
    return torch.stack(means, dim=-2), torch.stack(covs, dim=-3)


def lqr_return(task: LQRTask, K: Any, k: Any, log_std: Any) -> torch.Tensor:
    """Exact ``J = E[sum_{t<T} gamma^t r_t]`` of the policy ``u = K x + k + exp(log_std) eps``.

    Args:
        task: one task, or a batch of N tasks.
        K: ``[*G, m, n]``; k: ``[*G, m]``; log_std: ``[*G, m]`` (their batch shapes broadcast;
            for a batch of tasks the last axis of ``G`` is the task axis, and ``G = ()`` plays one
            policy in every task). Tensors keep their graph; array-likes are taken as float64.
    Returns:
        ``[*G]`` float64 (``[N]`` for one policy in a batch of N tasks), differentiable to any
        order w.r.t. ``K``, ``k`` and ``log_std``.
    """
    policy, tab = _float64_policy(task, K, k, log_std)
    m, S = lqr_moments(task, *policy)  # [*G, T, n], [*G, T, n, n]
    Q, R, goal = (x.unsqueeze(-3) for x in (tab["Q"], tab["R"], tab["goal"].unsqueeze(-1)))
    Kt, kt = policy.K.unsqueeze(-3), policy.k.unsqueeze(-2)
    offset = m.unsqueeze(-1) - goal  # [*G, T, n, 1]
    mean_u = (Kt @ m.unsqueeze(-1)).squeeze(-1) + kt  # [*G, T, m]
    cost = (
        (Q * S.mT).sum((-2, -1))
        + (offset.mT @ Q @ offset)[..., 0, 0]
        + (R * (Kt @ S @ Kt.mT).mT).sum((-2, -1))
        + (torch.diagonal(R, dim1=-2, dim2=-1) * torch.exp(2.0 * policy.log_std).unsqueeze(-2)).sum(-1)
        + ((mean_u.unsqueeze(-2) @ R) * mean_u.unsqueeze(-2)).sum((-2, -1))
    )  # [*G, T]
    discount = task.gamma ** torch.arange(task.horizon, dtype=torch.float64, device=cost.device)
    return -(cost * discount).sum(-1)


class LQRValue(NamedTuple):
    """The exact time-dependent value of a linear-Gaussian policy,
    ``V_t(x) = -(x^T P_t x + 2 p_t^T x + c_t)`` for ``t = 0..T`` (``V_T = 0``):
    ``P [*G, T + 1, n, n]``, ``p [*G, T + 1, n]``, ``c [*G, T + 1]``."""

    P: torch.Tensor
    p: torch.Tensor
    c: torch.Tensor


def lqr_value(task: LQRTask, K: Any, k: Any, log_std: Any) -> LQRValue:
    """The exact value ``V_t(x) = E[sum_{s=t}^{T-1} gamma^(s-t) r_s | x_t = x]`` of the policy,
    by the backward (policy-evaluation Riccati) recursion, ``P_T = 0``, ``p_T = 0``, ``c_T = 0``::

        P_t = Q + K^T R K + gamma F^T P_{t+1} F
        p_t = K^T R k - Q goal + gamma F^T (P_{t+1} B k + p_{t+1})
        c_t = goal^T Q goal + k^T R k + tr(R V_u)
              + gamma ((B k)^T P_{t+1} B k + 2 p_{t+1}^T B k + tr(P_{t+1} (B V_u B^T + W)) + c_{t+1})

    ``E[V_0(x_0)] = J`` (:func:`lqr_return`). Float64, with the graph of the parameters.
    Shapes and broadcasting as in :func:`lqr_return`.
    """
    policy, tab = _float64_policy(task, K, k, log_std)
    K_, k_ = policy.K, policy.k.unsqueeze(-1)
    A, B, Q, R, goal = tab["A"], tab["B"], tab["Q"], tab["R"], tab["goal"].unsqueeze(-1)
    F = A + B @ K_
    Bk = B @ k_
    V_u = torch.diag_embed(torch.exp(2.0 * policy.log_std))
    noise = B @ V_u @ B.mT + tab["W"]
    stage_P = Q + K_.mT @ R @ K_
    stage_p = K_.mT @ R @ k_ - Q @ goal
    stage_c = (goal.mT @ Q @ goal + k_.mT @ R @ k_)[..., 0, 0] + (R * V_u).sum((-2, -1))
    batch = F.shape[:-2]
    n = task.state_dim
    P = torch.zeros(*batch, n, n, dtype=torch.float64, device=F.device)
    p = torch.zeros(*batch, n, 1, dtype=torch.float64, device=F.device)
    c = torch.zeros(batch, dtype=torch.float64, device=F.device)
    Ps, ps, cs = [P], [p], [c]
    gamma = task.gamma
    for _ in range(task.horizon):
        future_c = (Bk.mT @ P @ Bk + 2.0 * p.mT @ Bk)[..., 0, 0] + (P * noise.mT).sum((-2, -1)) + c
        p = stage_p + gamma * F.mT @ (P @ Bk + p)
        P = stage_P + gamma * F.mT @ P @ F
        c = stage_c + gamma * future_c
        Ps.append(P)
        ps.append(p)
        cs.append(c)
    return LQRValue(
        torch.stack(Ps[::-1], dim=-3),
        torch.stack(ps[::-1], dim=-3).squeeze(-1),
        torch.stack(cs[::-1], dim=-1),
    )


def lqr_state_values(value: LQRValue, states: torch.Tensor) -> torch.Tensor:
    """``V_t(x_t)`` along trajectories: ``states [T, B, *G, n]`` (with ``T`` at most the value's
    horizon; step ``t`` reads ``V_t``) -> ``[T, B, *G]``."""
    T = states.shape[0]
    G = value.P.shape[:-3]
    P = value.P[..., :T, :, :].movedim(-3, 0).unsqueeze(1)  # [T, 1, *G, n, n]
    p = value.p[..., :T, :].movedim(-2, 0).unsqueeze(1)  # [T, 1, *G, n]
    c = value.c[..., :T].movedim(-1, 0).reshape(T, 1, *G)
    x = states.to(P.dtype)
    quadratic = ((x.unsqueeze(-2) @ P).squeeze(-2) * x).sum(-1)
    return -(quadratic + 2.0 * (p * x).sum(-1) + c)


def lqr_maml_meta_gradient(
    task: LQRTask, K: Any, k: Any, log_std: Any, *, inner_lr: float, inner_steps: int
) -> LinearGaussian:
    """Exact MAML meta-gradient ``d J(theta_K) / d theta_0`` in float64, ``theta = (K, k, log_std)``.

    ``theta_0 = (K, k, log_std)``; ``theta_{i+1} = theta_i + inner_lr * grad J(theta_i)`` (the same
    step size for every parameter), exactly, ``inner_steps`` times, with autograd through every
    step; so the result equals ``prod_{i=K-1..0} (I + alpha H(theta_i)) grad J(theta_K)``.

    Args:
        task: one task, or a batch of N tasks (one meta-gradient per task and policy).
        K, k, log_std: ``[*G, m, n]``, ``[*G, m]``, ``[*G, m]`` (as in :func:`lqr_return`).
        inner_lr: ``alpha``; inner_steps: ``K >= 0`` (``0`` gives ``grad J(theta_0)``).
    Returns:
        A :class:`~metagrad.envs.lqr.LinearGaussian` of gradients w.r.t. ``(K, k, log_std)``,
        each broadcast to the batch shape ``G`` (``[*G, m, n]``, ``[*G, m]``, ``[*G, m]``), float64,
        detached.
    """
    check_steps(inner_steps, inner_lr)
    policy = as_policy(task, K, k, log_std)
    n, m = task.state_dim, task.action_dim
    theta0 = policy.flatten().detach().to(torch.float64).clone().requires_grad_(True)

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return lqr_return(task, *LinearGaussian.unflatten(theta, n, m))

    with torch.enable_grad():
        theta = differentiable_inner_loop(objective, theta0, inner_steps, inner_lr)
        (grad,) = torch.autograd.grad(objective(theta).sum(), theta0)
    return LinearGaussian(*(x.detach() for x in LinearGaussian.unflatten(grad, n, m)))
