"""Exact tabular oracles: values, returns and meta-gradients of softmax policies on finite MDPs.

Every function is a composition of differentiable torch operations in float64, so derivatives of
any order follow by autograd (Liu et al., NeurIPS 2022, arXiv 2112.15400, section 3). The
objective conventions are in :mod:`metagrad.exact.common`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from metagrad.envs.tabular import TabularTask, check_logits, expand_to_tasks
from metagrad.exact.common import (
    Objective,
    broadcast_shape,
    check_objective,
    check_steps,
    differentiable_inner_loop,
    float64_leaf,
)
from metagrad.validation import check_finite_tensor

__all__ = [
    "lirpg_meta_gradient",
    "maml_meta_gradient",
    "policy_model",
    "post_adaptation_return",
    "tabular_return",
    "tabular_values",
]


def policy_model(
    task: TabularTask, logits: torch.Tensor, reward: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """State-to-state transitions and expected rewards of softmax(``logits``).

    Args:
        task: the MDP, or a batch of N tasks (the last policy-batch axis broadcasts against N).
        logits: ``[*G, S, A]``.
        reward: optional ``[*G', S, A]`` reward table replacing ``task.R`` (e.g. ``R + eta``).
    Returns:
        ``(P_pi [*G, S, S], r_pi [*G, S])`` in the dtype of ``logits``.
    """
    check_logits(task, logits)
    if reward is not None:
        check_finite_tensor("reward", reward)
    pi = torch.softmax(logits, -1)
    tables = task.tensors(logits.device, logits.dtype)
    R = tables["R"] if reward is None else reward
    return torch.einsum("...sa,...sat->...st", pi, tables["P"]), (pi * R).sum(-1)


class _LinearRecursion(torch.autograd.Function):
    """``x_0 = b_0``, ``x_k = b_k + gamma M x_{k-1}`` (``M [*G, S, S]``, ``b [*G, T, S]``), with its
    adjoint written out and differentiable to any order.

    The adjoint is the same recursion run backwards with ``M^T``: ``mu_{T-1} = g_{T-1}``,
    ``mu_k = g_k + gamma M^T mu_{k+1}``; then ``dL/db = mu`` and
    ``dL/dM = gamma sum_k mu_k x_{k-1}^T``, one ``[S, T] x [T, S]`` product. Plain autograd of the
    loop would accumulate ``dL/dM`` as T rank-one ``[S, S]`` updates (2T passes over an
    ``S x S`` matrix), and again at every higher order; here every order costs T
    matrix-vector products and one matrix product.
    """

    @staticmethod
    def forward(ctx: Any, M: torch.Tensor, b: torch.Tensor, gamma: float) -> torch.Tensor:
        xs = [b[..., 0, :]]
        for k in range(1, b.shape[-2]):
            xs.append(b[..., k, :] + gamma * (M @ xs[-1].unsqueeze(-1)).squeeze(-1))
        x = torch.stack(xs, dim=-2)
        ctx.save_for_backward(M, x)
        ctx.gamma = gamma
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        M, x = ctx.saved_tensors
        mu = _LinearRecursion.apply(M.transpose(-1, -2), grad.flip(-2), ctx.gamma).flip(-2)
        grad_M = ctx.gamma * mu[..., 1:, :].transpose(-1, -2) @ x[..., :-1, :]
        return grad_M, mu, None


def _values_from_model(P_pi: torch.Tensor, r_pi: torch.Tensor, gamma: float, horizon: int) -> torch.Tensor:
    """Finite-horizon values ``[*G, H + 1, S]`` of a Markov reward process: ``V_H = 0``,
    ``V_t = r_pi + gamma P_pi V_{t+1}`` (:class:`_LinearRecursion` over ``k = H - 1 - t``)."""
    P_pi, r_pi = torch.broadcast_tensors(P_pi, r_pi.unsqueeze(-1))
    r_pi = r_pi[..., 0]
    x = _LinearRecursion.apply(
        P_pi, r_pi.unsqueeze(-2).expand(*r_pi.shape[:-1], horizon, r_pi.shape[-1]), gamma
    )
    return torch.cat([x.flip(-2), torch.zeros_like(r_pi).unsqueeze(-2)], dim=-2)


def _finite_values_by_actions(
    task: TabularTask, pi: torch.Tensor, r_pi: torch.Tensor, batch: tuple[int, ...]
) -> torch.Tensor:
    """Finite-horizon values ``[*batch, H + 1, S]`` by
    ``V_t(s) = r_pi(s) + gamma sum_a pi(a|s) P[s, a] . V_{t+1}``.

    The policies that share a task are stacked into one matrix product per step with the
    task's ``[S, S A]`` transition table (no ``[S, S]`` matrix per policy is formed): the cheaper
    order for many policies per task on large S (the critic of a cell's R repeats).
    """
    S, A, H, N = task.num_states, task.num_actions, task.horizon, task.num_tasks
    pi = pi.expand(*batch, S, A).reshape(-1, N, S, A).transpose(0, 1)  # [N, M, S, A]
    r_pi = r_pi.expand(*batch, S).reshape(-1, N, S).transpose(0, 1)  # [N, M, S]
    P_t = task.tensors(pi.device, pi.dtype)["P"].reshape(N, S * A, S).transpose(-1, -2)  # [N, S, S A]
    values = [torch.zeros_like(r_pi), r_pi]  # V_H = 0, V_{H-1} = r_pi
    for _ in range(H - 1):
        expected_next = (values[-1] @ P_t).view(*r_pi.shape, A)  # [N, M, S, A]: P[s, a] . V_{t+1}
        values.append(r_pi + task.gamma * (pi * expected_next).sum(-1))
    stacked = torch.stack(values[::-1], dim=-2)  # [N, M, H + 1, S]
    return stacked.transpose(0, 1).reshape(*batch, H + 1, S)


def tabular_values(
    task: TabularTask,
    logits: torch.Tensor,
    objective: Objective = "finite",
    *,
    reward: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact state values of softmax(``logits``).

    ``"finite"``: the time-dependent values ``V_t(s) = E[sum_{t<=k<H} gamma^(k-t) r_k | s_t = s]``
    for ``t = 0..H`` (``V_H = 0``), shape ``[*G, H + 1, S]``, by backward recursion
    ``V_t = r_pi + gamma P_pi V_{t+1}``. ``"infinite"``: ``V = (I - gamma P_pi)^-1 r_pi``, shape
    ``[*G, S]`` (requires ``gamma < 1``), one batched LU solve.

    Cost per task: for the finite objective ``O((A + H) S^2)`` per policy through ``P_pi``, or, with
    at least A policies per task, one ``[M, S] x [S, S A]`` product per step for all M of them
    (no ``[S, S]`` matrix per policy: less memory traffic on large S). The infinite objective
    costs ``O(S^3)`` per policy.

    Args:
        task: the MDP; logits ``[*G, S, A]``; ``reward`` optionally replaces ``task.R``.
    """
    check_objective(objective)
    check_logits(task, logits)
    if reward is not None:
        check_finite_tensor("reward", reward)
    if objective == "infinite":
        P_pi, r_pi = policy_model(task, logits, reward)
        if task.gamma >= 1.0:
            raise ValueError("gamma: the infinite-horizon objective needs gamma < 1")
        eye = torch.eye(task.num_states, dtype=logits.dtype, device=logits.device)
        return torch.linalg.solve(eye - task.gamma * P_pi, r_pi.unsqueeze(-1)).squeeze(-1)
    pi = torch.softmax(logits, -1)
    tables = task.tensors(logits.device, logits.dtype)
    r_pi = (pi * (tables["R"] if reward is None else reward)).sum(-1)
    batch = broadcast_shape(pi.shape[:-2], r_pi.shape[:-1], task.batch_shape[-1:])
    if math.prod(batch) >= task.num_actions * task.num_tasks:  # at least A policies per task
        return _finite_values_by_actions(task, pi, r_pi, batch)
    P_pi = torch.einsum("...sa,...sat->...st", pi, tables["P"])
    return _values_from_model(P_pi, r_pi, task.gamma, task.horizon)


def tabular_return(
    task: TabularTask,
    logits: torch.Tensor,
    objective: Objective = "finite",
    *,
    reward: torch.Tensor | None = None,
) -> torch.Tensor:
    """Expected discounted return ``J(theta)`` of softmax(``logits``) from ``task.init``.

    ``"finite"``: ``E[sum_{t<H} gamma^t r_t]``; ``"infinite"``: ``init . (I - gamma P_pi)^-1 r_pi``.

    Args:
        task: the MDP.
        logits: ``[*G, S, A]`` (float64 for oracle use).
        objective: ``"finite"`` or ``"infinite"``.
        reward: optional ``[S, A]`` table replacing ``task.R`` (differentiable, e.g. ``R + eta``).
    Returns:
        ``[*G]`` returns, differentiable to any order w.r.t. ``logits`` and ``reward``.
    """
    values = tabular_values(task, logits, objective, reward=reward)
    v0 = values[..., 0, :] if objective == "finite" else values
    return (v0 * task.init.to(device=v0.device, dtype=v0.dtype)).sum(-1)


def post_adaptation_return(
    task: TabularTask,
    logits: torch.Tensor,
    inner_steps: int,
    inner_lr: float,
    objective: Objective = "finite",
    *,
    eta: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact return ``J_R(theta_K)`` after K exact inner ascent steps from ``logits``, per task.

    ``theta_0 = logits`` (a shared ``[S, A]`` meta-policy is copied into every task of a batch);
    the inner loop ascends the return under ``R + eta`` (``R`` when ``eta`` is None); the outer
    return is under ``R``. The graph to ``logits`` and ``eta`` is kept when they require grad, so
    ``d mean(post_adaptation_return) / d logits`` is the exact MAML meta-gradient of the task
    batch (and ``d / d eta`` the LIRPG one).

    Args:
        task: one MDP or a batch of N.
        logits: ``[*G, S, A]`` initial logits.
        inner_steps: ``K >= 0``; inner_lr: ``alpha``; objective: ``"finite"`` or ``"infinite"``.
        eta: optional ``[*G', S, A]`` intrinsic reward added in the inner loop.
    Returns:
        ``[*G, N]`` for a batch of tasks (``[*G]`` for one task).
    """
    check_logits(task, logits)
    if eta is not None:
        check_logits(task, eta, "eta")
    check_steps(inner_steps, inner_lr)
    check_objective(objective)
    with torch.enable_grad():
        theta0 = expand_to_tasks(task, logits)
        if not theta0.requires_grad:  # a constant start: in the graph only for the inner gradients
            theta0 = theta0.detach().requires_grad_(True)
        inner_reward = None if eta is None else task.R.to(eta) + eta

        def inner_fn(theta: torch.Tensor) -> torch.Tensor:
            return tabular_return(task, theta, objective, reward=inner_reward)

        theta_k = differentiable_inner_loop(inner_fn, theta0, inner_steps, inner_lr)
        return tabular_return(task, theta_k, objective)


def maml_meta_gradient(
    task: TabularTask,
    logits: torch.Tensor,
    inner_steps: int,
    inner_lr: float,
    objective: Objective = "finite",
) -> torch.Tensor:
    """Exact MAML meta-gradient ``d J(theta_K) / d theta_0`` in float64.

    ``theta_0 = logits``; ``theta_{k+1} = theta_k + alpha grad J(theta_k)`` exactly, so the result
    equals ``prod_{k=K-1..0} (I + alpha H(theta_k)) grad J(theta_K)`` (the chain rule through the
    K ascent steps of MAML, Finn, Abbeel & Levine, ICML 2017; ``H`` is symmetric).

    Args:
        task: the MDP, or a batch of N tasks (one meta-gradient per task).
        logits: ``[*G, S, A]`` initial logits ``theta_0`` (a batch gives one meta-gradient each).
        inner_steps: ``K >= 0`` (``K = 0`` gives ``grad J(theta_0)``).
        inner_lr: ``alpha``.
        objective: ``"finite"`` or ``"infinite"``.
    Returns:
        ``[*G, S, A]`` float64 meta-gradient (detached); ``[*G, N, S, A]`` for a task batch.
    """
    check_logits(task, logits)
    with torch.enable_grad():
        theta0 = float64_leaf(expand_to_tasks(task, logits))
        outer = post_adaptation_return(task, theta0, inner_steps, inner_lr, objective).sum()
        (meta_grad,) = torch.autograd.grad(outer, theta0)
    return meta_grad.detach()


def lirpg_meta_gradient(
    task: TabularTask,
    logits: torch.Tensor,
    eta: torch.Tensor,
    inner_steps: int,
    inner_lr: float,
    objective: Objective = "finite",
) -> torch.Tensor:
    """Exact LIRPG meta-gradient w.r.t. an intrinsic-reward table ``eta`` (float64).

    Inner loop ascends the return under ``R + eta``; the outer objective is the return under
    ``R`` at ``theta_K``: returns ``d J_R(theta_K(eta)) / d eta`` (Zheng et al. 2018, as a GMRL
    instance in Liu et al. 2022).

    Args:
        task: the MDP (or a batch of N: one meta-gradient per task).
        logits: ``[S, A]`` initial policy logits (fixed, not meta-learned).
        eta: ``[S, A]`` intrinsic reward (the meta-parameter).
        inner_steps: ``K >= 0``; inner_lr: ``alpha``; objective: ``"finite"`` or ``"infinite"``.
    Returns:
        ``[S, A]`` float64 meta-gradient w.r.t. ``eta`` (zero when ``K = 0``); ``[N, S, A]`` for
        a task batch.
    """
    check_logits(task, logits)
    check_logits(task, eta, "eta")
    with torch.enable_grad():
        eta64 = float64_leaf(expand_to_tasks(task, eta))
        theta0 = logits.detach().to(torch.float64)
        outer = post_adaptation_return(task, theta0, inner_steps, inner_lr, objective, eta=eta64).sum()
        (meta_grad,) = torch.autograd.grad(outer, eta64, allow_unused=True)
    if meta_grad is None:
        return torch.zeros_like(eta64).detach()
    return meta_grad.detach()
