"""Exact, autograd-differentiable objectives and meta-gradients (closed forms, float64).

These are the oracles every estimate in the suite is scored against. Every function is a
composition of differentiable torch operations, so derivatives of any order follow by autograd.

Conventions (Liu et al., NeurIPS 2022, arXiv 2112.15400; BACKGROUND.md section 1):

* ``objective="finite"``: ``J = E[sum_{t<H} gamma^t r_t]`` from ``init``, exactly what a length-H
  rollout estimates (the suite's default).
* ``objective="infinite"``: ``J = init . (I - gamma P_pi)^-1 r_pi``, the convention of the papers'
  code (which compares it with length-H samples: a ``gamma^H`` mismatch kept only in the
  paper-parity preset).
* Inner updates are gradient *ascent*: ``theta_{k+1} = theta_k + alpha grad J_in(theta_k)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from envs.tabular import TabularTask, check_logits

__all__ = [
    "OBJECTIVES",
    "exact_inner_loop",
    "lirpg_meta_gradient",
    "maml_meta_gradient",
    "policy_model",
    "tabular_return",
    "tabular_values",
]

OBJECTIVES = ("finite", "infinite")


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")


def _check_steps(inner_steps: int, inner_lr: float) -> None:
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 0:
        raise ValueError(f"inner_steps: expected an integer >= 0, got {inner_steps!r}")
    if not isinstance(inner_lr, (int, float)) or inner_lr != inner_lr:
        raise ValueError(f"inner_lr: expected a finite number, got {inner_lr!r}")


def policy_model(
    task: TabularTask, logits: torch.Tensor, reward: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """State-to-state transitions and expected rewards of softmax(``logits``).

    Args:
        task: the MDP.
        logits: ``[*G, S, A]``.
        reward: optional ``[*G', S, A]`` reward table replacing ``task.R`` (e.g. ``R + eta``).
    Returns:
        ``(P_pi [*G, S, S], r_pi [*G, S])`` in the dtype of ``logits``.
    """
    check_logits(task, logits)
    pi = torch.softmax(logits, -1)
    P = task.P.to(device=logits.device, dtype=logits.dtype)
    R = task.R.to(device=logits.device, dtype=logits.dtype) if reward is None else reward
    return torch.einsum("...sa,sat->...st", pi, P), (pi * R).sum(-1)


def tabular_values(
    task: TabularTask,
    logits: torch.Tensor,
    objective: str = "finite",
    *,
    reward: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact state values of softmax(``logits``).

    ``"finite"``: the time-dependent values ``V_t(s) = E[sum_{t<=k<H} gamma^(k-t) r_k | s_t = s]``
    for ``t = 0..H`` (``V_H = 0``), shape ``[*G, H + 1, S]``, by backward recursion
    ``V_t = r_pi + gamma P_pi V_{t+1}``. ``"infinite"``: ``V = (I - gamma P_pi)^-1 r_pi``, shape
    ``[*G, S]`` (requires ``gamma < 1``).

    Args:
        task: the MDP; logits ``[*G, S, A]``; ``reward`` optionally replaces ``task.R``.
    """
    _check_objective(objective)
    P_pi, r_pi = policy_model(task, logits, reward)
    if objective == "infinite":
        if task.gamma >= 1.0:
            raise ValueError("gamma: the infinite-horizon objective needs gamma < 1")
        eye = torch.eye(task.num_states, dtype=logits.dtype, device=logits.device)
        return torch.linalg.solve(eye - task.gamma * P_pi, r_pi.unsqueeze(-1)).squeeze(-1)
    values = [torch.zeros_like(r_pi)]
    for _ in range(task.horizon):
        values.append(r_pi + task.gamma * (P_pi @ values[-1].unsqueeze(-1)).squeeze(-1))
    return torch.stack(values[::-1], dim=-2)


def tabular_return(
    task: TabularTask,
    logits: torch.Tensor,
    objective: str = "finite",
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


def exact_inner_loop(
    objective_fn: Callable[[torch.Tensor], torch.Tensor],
    theta0: torch.Tensor,
    inner_steps: int,
    inner_lr: float,
) -> torch.Tensor:
    """``theta_K`` after K exact ascent steps, keeping the graph (so d theta_K / d theta_0 exists).

    ``theta_{k+1} = theta_k + inner_lr * grad objective_fn(theta_k)``, each gradient taken with
    ``create_graph=True``. ``objective_fn`` maps ``[*G, S, A]`` to ``[*G]``; batch entries are
    independent, so the gradient of the sum is the per-entry gradient.
    """
    theta = theta0
    for _ in range(inner_steps):
        (grad,) = torch.autograd.grad(objective_fn(theta).sum(), theta, create_graph=True)
        theta = theta + inner_lr * grad
    return theta


def _float64_leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float64).clone().requires_grad_(True)


def maml_meta_gradient(
    task: TabularTask,
    logits: torch.Tensor,
    inner_steps: int,
    inner_lr: float,
    objective: str = "finite",
) -> torch.Tensor:
    """Exact MAML meta-gradient ``d J(theta_K) / d theta_0`` in float64.

    ``theta_0 = logits``; ``theta_{k+1} = theta_k + alpha grad J(theta_k)`` exactly, so the result
    equals ``prod_{k=K-1..0} (I + alpha H(theta_k)) grad J(theta_K)`` (BACKGROUND.md section 1).

    Args:
        task: the MDP.
        logits: ``[*G, S, A]`` initial logits ``theta_0`` (a batch gives one meta-gradient each).
        inner_steps: ``K >= 0`` (``K = 0`` gives ``grad J(theta_0)``).
        inner_lr: ``alpha``.
        objective: ``"finite"`` or ``"infinite"``.
    Returns:
        ``[*G, S, A]`` float64 meta-gradient (detached).
    """
    check_logits(task, logits)
    _check_steps(inner_steps, inner_lr)
    _check_objective(objective)
    with torch.enable_grad():
        theta0 = _float64_leaf(logits)

        def objective_fn(theta: torch.Tensor) -> torch.Tensor:
            return tabular_return(task, theta, objective)

        theta_k = exact_inner_loop(objective_fn, theta0, inner_steps, inner_lr)
        (meta_grad,) = torch.autograd.grad(objective_fn(theta_k).sum(), theta0)
    return meta_grad.detach()


def lirpg_meta_gradient(
    task: TabularTask,
    logits: torch.Tensor,
    eta: torch.Tensor,
    inner_steps: int,
    inner_lr: float,
    objective: str = "finite",
) -> torch.Tensor:
    """Exact LIRPG meta-gradient w.r.t. an intrinsic-reward table ``eta`` (float64).

    Inner loop ascends the return under ``R + eta``; the outer objective is the return under
    ``R`` at ``theta_K``: returns ``d J_R(theta_K(eta)) / d eta`` (Zheng et al. 2018, as a GMRL
    instance in Liu et al. 2022).

    Args:
        task: the MDP.
        logits: ``[S, A]`` initial policy logits (fixed, not meta-learned).
        eta: ``[S, A]`` intrinsic reward (the meta-parameter).
        inner_steps: ``K >= 0``; inner_lr: ``alpha``; objective: ``"finite"`` or ``"infinite"``.
    Returns:
        ``[S, A]`` float64 meta-gradient w.r.t. ``eta`` (zero when ``K = 0``).
    """
    check_logits(task, logits)
    check_logits(task, eta, "eta")
    _check_steps(inner_steps, inner_lr)
    _check_objective(objective)
    with torch.enable_grad():
        eta64 = _float64_leaf(eta)
        theta0 = logits.detach().to(torch.float64)
        inner_reward = task.R.to(torch.float64) + eta64

        def inner_fn(theta: torch.Tensor) -> torch.Tensor:
            return tabular_return(task, theta, objective, reward=inner_reward)

        # theta_0 is a constant: make it part of the graph only through the inner gradients.
        theta0 = theta0.requires_grad_(True)
        theta_k = exact_inner_loop(inner_fn, theta0, inner_steps, inner_lr)
        outer = tabular_return(task, theta_k, objective).sum()
        (meta_grad,) = torch.autograd.grad(outer, eta64, allow_unused=True)
    if meta_grad is None:
        return torch.zeros_like(eta64).detach()
    return meta_grad.detach()
