"""Exact tabular meta-gradient RL: the return's discount and bootstrapping as meta-parameters.

Xu, van Hasselt and Silver (NeurIPS 2018, arXiv 1805.09801) meta-learn ``eta = (gamma, lambda)``
of the lambda-return that an actor-critic follows; Liu et al. (NeurIPS 2022, arXiv 2112.15400)
measure its estimators on Atari, where no exact meta-gradient exists. On a finite-horizon tabular
MDP ``(P, R, init, T)`` with a softmax policy (logits ``theta [S, A]``) and a fixed critic
``v [S]`` (given, never updated or differentiated) the algorithm has one:

* lambda-return bootstrapped on ``v``: ``G_t = r_t + gamma ((1 - lambda) v(s_{t+1}) + lambda G_{t+1})``
  for ``t < T - 1`` and ``G_{T-1} = r_{T-1} + gamma v(s_T)``;
* the A2C direction, with no ``gamma^t`` weight on the state distribution (as A2C code does):
  ``g(theta, eta) = E[sum_{t<T} grad log pi(a_t|s_t) (G_t - v(s_t))]``;
* inner loop ``theta_{k+1} = theta_k + alpha g(theta_k, eta)``, ``k < K``;
* meta-gradient ``(d theta_K / d eta)^T g(theta_K, eta')`` with the outer ``eta' = (gamma', lambda')``
  fixed and the outer direction held constant: two numbers, the derivatives with respect to
  gamma and lambda themselves.

Closed form of the direction (:func:`mgrl_direction`): with ``d_0 = init``,
``d_{t+1} = d_t P_pi``, ``U_T = v``,
``Q_t(s, a) = R(s, a) + gamma sum_s' P(s'|s, a) ((1 - lambda) v(s') + lambda U_{t+1}(s'))`` and
``U_t(s) = sum_a pi(a|s) Q_t(s, a)`` (so that ``E[G_t | s_t, a_t] = Q_t(s_t, a_t)``), the row ``s``
of ``g`` is ``sum_t d_t(s) pi(.|s) (Q_t(s, .) - U_t(s))`` (the critic's baseline ``v(s_t)`` has
zero mean). ``g`` depends on ``theta`` through ``pi``, ``d_t`` and ``Q_t``; the meta-gradient
differentiates all of them by autograd through the K closed-form steps (no second-order autograd
is needed: the direction itself is an explicit function).

:func:`mgrl_meta_gradient` with ``jacobian="pg"`` or ``"lvc"`` gives, with the same machinery,
the *expected* meta-gradient of an estimator whose Jacobian of the sampled direction keeps only
part of the terms (every stage exact but the Jacobian's): the plain policy-gradient surrogate
(``"pg"``: the sampling distribution, the action weights and ``Q`` all frozen at the current
parameters, only ``grad log pi`` differentiated) and LVC (``"lvc"``: ``d_t`` and ``Q`` frozen,
``pi`` live).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from metagrad.envs.tabular import TabularTask, check_logits, expand_to_tasks
from metagrad.exact.common import broadcast_shape, check_steps
from metagrad.validation import check_finite_tensor, check_real

__all__ = [
    "MGRL_JACOBIANS",
    "MGRLJacobian",
    "check_meta_parameter",
    "critic_table",
    "expected_direction",
    "mgrl_direction",
    "mgrl_meta_gradient",
]

MGRLJacobian = Literal["exact", "pg", "lvc"]
MGRL_JACOBIANS: tuple[MGRLJacobian, ...] = get_args(MGRLJacobian)


def check_meta_parameter(name: str, value: float | torch.Tensor) -> float | torch.Tensor:
    """``value`` if it is a real in the open interval (0, 1), or a float tensor of them (kept with
    its graph); else ``ValueError`` naming ``name``."""
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        check_finite_tensor(name, value)
        if not value.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got {value.dtype}")
        if not bool(((value > 0) & (value < 1)).all()):
            raise ValueError(f"{name}: every entry must lie in the open interval (0, 1)")
        return value
    if isinstance(value, torch.Tensor):  # 0-d: keep the tensor (and its graph)
        check_real(name, value, minimum=0.0, maximum=1.0, open_min=True, open_max=True)
        if not value.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got {value.dtype}")
        return value
    return check_real(name, value, minimum=0.0, maximum=1.0, open_min=True, open_max=True)


def _check_broadcasts(name: str, shape: tuple[int, ...], batch: tuple[int, ...]) -> None:
    try:
        fits = broadcast_shape(tuple(shape), tuple(batch)) == tuple(batch)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name}: batch shape {list(shape)} does not broadcast to the policies' {list(batch)}"
        )


def critic_table(task: TabularTask, values: torch.Tensor, batch: tuple[int, ...]) -> torch.Tensor:
    """The fixed critic ``values`` ``[*G', S]`` as a float64 table ``[*batch, S]`` cut from the graph
    (``ValueError`` naming ``values`` unless it is finite, floating and broadcasts to ``batch``)."""
    check_finite_tensor("values", values)
    S = task.num_states
    if not values.is_floating_point() or values.ndim < 1 or values.shape[-1] != S:
        raise ValueError(
            f"values: expected a floating-point critic [S] = [{S}] (or [..., S] per policy / task), "
            f"got {list(values.shape)} {values.dtype}"
        )
    _check_broadcasts("values", tuple(values.shape[:-1]), batch)
    return values.detach().to(torch.float64).expand(*batch, S)


def _column(x: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A meta-parameter as a float64 tensor that broadcasts against ``[*b, S]`` (one trailing axis)."""
    if not isinstance(x, torch.Tensor):
        return torch.tensor(x, dtype=torch.float64, device=like.device)
    x = x.to(device=like.device, dtype=torch.float64)
    return x.unsqueeze(-1) if x.ndim else x


def expected_direction(
    task: TabularTask,
    theta: torch.Tensor,
    critic: torch.Tensor,
    gamma: float | torch.Tensor,
    lam: float | torch.Tensor,
    jacobian: MGRLJacobian = "exact",
) -> torch.Tensor:
    """The A2C direction ``[*b, S, A]`` of ``softmax(theta)`` (no input checks; see
    :func:`mgrl_direction`), differentiable in ``theta``, ``gamma`` and ``lam``.

    ``jacobian`` chooses which dependence on ``theta`` is kept (the value is the same for all):
    ``"exact"`` all of it; ``"pg"`` only ``grad log pi`` (the state distribution, the action
    weights and ``Q`` use ``stop(theta)``): the expectation of the plain policy-gradient surrogate's
    sampled direction as a function of the parameters; ``"lvc"`` ``pi`` live, ``d_t`` and ``Q``
    frozen: the expectation of LVC's.

    Args:
        theta: ``[*b, S, A]`` float64 logits (the last batch axis is the task axis of a batch).
        critic: ``[*b, S]`` float64 (:func:`critic_table`).
        gamma, lam: floats, or tensors broadcasting against ``[*b]``.
    """
    live = theta
    sampling = theta if jacobian == "exact" else theta.detach()
    pi_live = torch.softmax(live, -1)
    pi = torch.softmax(sampling, -1)
    tables = task.tensors(theta.device, torch.float64)
    P, R, init = tables["P"], tables["R"], tables["init"]
    batch = tuple(theta.shape[:-2])
    g, lam_ = _column(gamma, theta), _column(lam, theta)  # broadcast against [*b, S]
    # backward: Q_t for t = T-1..0 (U_T = v)
    q_tables: list[torch.Tensor] = []
    U = critic
    for _ in range(task.horizon):
        target = (1.0 - lam_) * critic + lam_ * U  # [*b, S]
        Q = R + g.unsqueeze(-1) * torch.einsum("...sat,...t->...sa", P, target)
        q_tables.append(Q)
        U = (pi * Q).sum(-1)
    q_tables.reverse()
    # forward: d_t, and the direction sum_t d_t(s) [w (Q_t - v) - pi_live <w, Q_t - v>]
    weight = pi_live if jacobian in ("exact", "lvc") else pi
    d = init.expand(*batch, task.num_states) if batch else init
    out = torch.zeros_like(pi_live)
    for t, Q in enumerate(q_tables):
        adv = Q - critic.unsqueeze(-1)
        weighted = weight * adv
        out = out + d.unsqueeze(-1) * (weighted - pi_live * weighted.sum(-1, keepdim=True))
        if t + 1 < task.horizon:
            d = torch.einsum("...s,...sa,...sat->...t", d, pi, P)
    return out


def _policies(task: TabularTask, logits: torch.Tensor) -> torch.Tensor:
    check_logits(task, logits)
    return expand_to_tasks(task, logits.to(torch.float64))


def mgrl_direction(
    task: TabularTask,
    logits: torch.Tensor,
    values: torch.Tensor,
    *,
    gamma: float | torch.Tensor,
    lam: float | torch.Tensor,
) -> torch.Tensor:
    """The expected A2C direction ``E[sum_{t<T} grad log pi(a_t|s_t) (G_t - v(s_t))]`` (float64).

    ``G_t`` is the lambda-return bootstrapped on the fixed critic ``values`` (see the module
    docstring); the task's horizon is ``T`` and its own ``gamma`` is not used.

    Args:
        task: the MDP, or a batch of N tasks.
        logits: ``[*G, S, A]`` policy logits (a shared ``[S, A]`` is copied into every task of a batch).
        values: the critic ``[S]`` (or ``[..., S]`` broadcasting against the policies, e.g. ``[N, S]``
            one per task); cut from the graph.
        gamma, lam: the return's discount and bootstrapping, in the open interval (0, 1); a tensor
            keeps its graph.
    Returns:
        ``[*G, S, A]`` (``[*G, N, S, A]`` for a task batch), differentiable w.r.t. ``logits`` and
        tensor ``gamma`` / ``lam``.
    """
    gamma = check_meta_parameter("gamma", gamma)
    lam = check_meta_parameter("lam", lam)
    theta = _policies(task, logits)
    batch = tuple(theta.shape[:-2])
    critic = critic_table(task, values, batch).to(theta.device)
    for name, x in (("gamma", gamma), ("lam", lam)):
        if isinstance(x, torch.Tensor):
            _check_broadcasts(name, tuple(x.shape), batch)
    return expected_direction(task, theta, critic, gamma, lam)


def mgrl_meta_gradient(
    task: TabularTask,
    logits: torch.Tensor,
    values: torch.Tensor,
    *,
    gamma: float,
    lam: float,
    inner_lr: float,
    inner_steps: int,
    outer_gamma: float,
    outer_lam: float,
    jacobian: MGRLJacobian = "exact",
) -> torch.Tensor:
    """Exact MGRL meta-gradient ``(d theta_K / d eta)^T g(theta_K, eta')`` in float64.

    ``theta_0 = logits``; ``theta_{k+1} = theta_k + inner_lr * g(theta_k, eta)`` for ``k < K``
    with ``eta = (gamma, lam)`` and ``g`` the A2C direction of :func:`mgrl_direction`; the outer
    direction ``g(theta_K, (outer_gamma, outer_lam))`` is held constant.

    ``jacobian`` other than ``"exact"`` gives instead the *expected* estimate when only each
    inner step's Jacobian is sampled (every inner value and the outer direction exact; the
    ``ele`` staging of :mod:`metagrad.mgrl`): the steps' factors are independent and linear in
    their samples, so the expectation is the chain rule through the expected sampled direction
    as a function of the parameters (:func:`expected_direction`). ``"pg"`` and ``"lvc"`` are what
    those surrogates converge to; their distance to the exact one is the Hessian-estimation
    bias. Estimators whose per-step second derivatives are unbiased (DiCE, Loaded DiCE) converge
    to ``"exact"``. At ``K = 1`` all agree (the first step's parameters do not depend on eta).

    Args:
        task: the MDP, or a batch of N tasks (one meta-gradient per task).
        logits: ``[*G, S, A]`` initial logits (a batch gives one meta-gradient each).
        values: the fixed critic ``[S]`` (or one per policy / task, ``[..., S]``).
        gamma, lam: the meta-parameters, in (0, 1).
        inner_lr: ``alpha``; inner_steps: ``K >= 0`` (``K = 0`` gives zeros).
        outer_gamma, outer_lam: the outer direction's fixed ``(gamma', lambda')``, in (0, 1).
        jacobian: one of :data:`MGRL_JACOBIANS` (default ``"exact"``: the meta-gradient).
    Returns:
        ``[*G, 2]`` (``[*G, N, 2]`` for a task batch): derivatives w.r.t. gamma and lambda.
    """
    for name, x in (("gamma", gamma), ("lam", lam), ("outer_gamma", outer_gamma), ("outer_lam", outer_lam)):
        check_real(name, x, minimum=0.0, maximum=1.0, open_min=True, open_max=True)
    check_steps(inner_steps, inner_lr)
    if jacobian not in MGRL_JACOBIANS:
        raise ValueError(f"jacobian: expected one of {MGRL_JACOBIANS}, got {jacobian!r}")
    theta0 = _policies(task, logits).detach()
    batch = tuple(theta0.shape[:-2])
    critic = critic_table(task, values, batch).to(theta0.device)
    with torch.enable_grad():
        eta = [
            torch.full(batch, float(x), dtype=torch.float64, device=theta0.device, requires_grad=True)
            for x in (gamma, lam)
        ]
        theta = theta0
        for _ in range(inner_steps):
            theta = theta + inner_lr * expected_direction(task, theta, critic, *eta, jacobian)
        outer = expected_direction(task, theta.detach(), critic, float(outer_gamma), float(outer_lam))
        if not theta.requires_grad:  # K = 0: theta_K does not depend on eta
            return torch.zeros(*batch, 2, dtype=torch.float64, device=theta0.device)
        grads = torch.autograd.grad((theta * outer).sum(), eta, allow_unused=True)
    return torch.stack(
        [torch.zeros_like(eta[0]).detach() if x is None else x.detach() for x in grads], dim=-1
    )
