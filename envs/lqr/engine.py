"""The batched rollout engine for linear-Gaussian policies on LQR tasks.

Policies ``u = K x + k + exp(log_std) eps`` (:class:`LinearGaussian`); :func:`rollout` samples
every episode of every policy of a batch as one tensor recursion, time-major ``[T, B, *G, ...]``,
on the CPU or a GPU, optionally keeping the reparameterised graph for pathwise estimators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from metagrad.envs.lqr.task import LQRTask
from metagrad.envs.tabular import TimeMajorBatch
from metagrad.validation import as_float64, check_int

__all__ = ["LQRTrajectory", "LinearGaussian", "as_policy", "gaussian_log_probs", "rollout"]


class LinearGaussian(NamedTuple):
    """The parameters of a linear-Gaussian policy ``u = K x + k + exp(log_std) * eps``, or the
    gradients with respect to them: ``K [*G, m, n]``, ``k [*G, m]``, ``log_std [*G, m]``."""

    K: torch.Tensor
    k: torch.Tensor
    log_std: torch.Tensor

    def flatten(self) -> torch.Tensor:
        """One vector per policy, ``[*G, m n + 2 m]`` (``K`` row-major, then ``k``, ``log_std``)."""
        K, k, log_std = torch.broadcast_tensors(self.K, self.k.unsqueeze(-1), self.log_std.unsqueeze(-1))
        batch = K.shape[:-2]
        return torch.cat([K.reshape(*batch, -1), k[..., 0], log_std[..., 0]], dim=-1)

    @classmethod
    def unflatten(cls, theta: torch.Tensor, state_dim: int, action_dim: int) -> LinearGaussian:
        """The inverse of :meth:`flatten` (views of ``theta [*G, m n + 2 m]``, graph kept)."""
        n, m = state_dim, action_dim
        if theta.shape[-1] != m * n + 2 * m:
            raise ValueError(
                f"theta: expected a last axis of m n + 2 m = {m * n + 2 * m}, got {theta.shape[-1]}"
            )
        batch = theta.shape[:-1]
        return cls(
            theta[..., : m * n].reshape(*batch, m, n), theta[..., m * n : m * n + m], theta[..., m * n + m :]
        )


def as_policy(task: LQRTask, K: Any, k: Any, log_std: Any) -> LinearGaussian:
    """Checked policy parameters broadcast to one batch shape ``G`` that fits ``task``.

    ``K [*G, m, n]``, ``k [*G, m]``, ``log_std [*G, m]`` (tensors keep their dtype, device and
    graph; other array-likes become float64 tensors). Their batch shapes broadcast; for a batch
    of N tasks the last axis of ``G`` is the task axis (``G = ()`` plays one policy in every task).
    """
    n, m = task.state_dim, task.action_dim
    named = {"K": K, "k": k, "log_std": log_std}
    out = {}
    for name, value in named.items():
        x = value if isinstance(value, torch.Tensor) else as_float64(name, value)
        if not x.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got {x.dtype}")
        core = (m, n) if name == "K" else (m,)
        if x.ndim < len(core) or tuple(x.shape[x.ndim - len(core) :]) != core:
            raise ValueError(f"{name}: expected shape [*G, {', '.join(map(str, core))}], got {list(x.shape)}")
        if not torch.isfinite(x.detach()).all():
            raise ValueError(f"{name}: contains NaN or infinite entries")
        out[name] = x
    batches = [tuple(out["K"].shape[:-2]), tuple(out["k"].shape[:-1]), tuple(out["log_std"].shape[:-1])]
    try:
        batch = tuple(np.broadcast_shapes(*batches, task.batch_shape))
    except ValueError:
        raise ValueError(
            f"K, k, log_std: batch shapes {batches} do not broadcast together and against the "
            f"task batch {list(task.batch_shape)} (the last policy axis is the task axis)"
        ) from None
    return LinearGaussian(
        out["K"].expand(*batch, m, n), out["k"].expand(*batch, m), out["log_std"].expand(*batch, m)
    )


def gaussian_log_probs(policy: LinearGaussian, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``log N(u; K x + k, diag(exp(2 log_std)))`` of ``actions [T, B, *G, m]`` in ``states
    [T, B, *G, n]`` (both held fixed), ``[T, B, *G]``, with the graph of the policy parameters
    ``[*G, ...]`` only (the score-function form)."""
    mean = (policy.K @ states.detach().unsqueeze(-1)).squeeze(-1) + policy.k
    z = (actions.detach() - mean) * torch.exp(-policy.log_std)
    m = actions.shape[-1]
    return -0.5 * (z * z).sum(-1) - policy.log_std.sum(-1) - 0.5 * m * math.log(2 * math.pi)


@dataclass(frozen=True, eq=False)
class LQRTrajectory(TimeMajorBatch):
    """A time-major batch of LQR episodes from :func:`rollout`.

    Shapes: ``T`` the horizon, ``B`` episodes per policy, ``G`` the policy batch shape.

    Attributes:
        states: ``[T, B, *G, n]`` (``x_t``); actions: ``[T, B, *G, m]`` (``u_t``).
        rewards: ``[T, B, *G]``; with ``reparameterize=True`` they (and the states and actions)
            carry the graph of the policy parameters through the actions and the dynamics.
        log_probs: ``[T, B, *G]``; ``log pi(u_t | x_t)`` with states and actions held fixed,
            differentiable w.r.t. the policy parameters (the score-function form).
        behaviour_log_probs: the same values cut from the graph.
        discounts: ``[T, B, *G]``; ``gamma`` between ``t`` and ``t + 1``.
        terminated, truncated: bool ``[T, B, *G]``; never terminated, truncated at the last step.
        final_states: ``[B, *G, n]``; ``x_T``.
    """

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    log_probs: torch.Tensor
    behaviour_log_probs: torch.Tensor
    discounts: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_states: torch.Tensor


def rollout(
    task: LQRTask,
    K: torch.Tensor,
    k: torch.Tensor,
    log_std: torch.Tensor,
    num_episodes: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    reparameterize: bool = False,
) -> LQRTrajectory:
    """Sample ``num_episodes`` episodes of the policy ``u = K x + k + exp(log_std) eps``, batched.

    Every episode of every policy advances in one batched matrix product per time step: with
    ``F = A + B K`` and the noise of all steps drawn up front, ``x_{t+1} = F x_t + B (k +
    sigma eps_t) + w_t``; actions, rewards and log-densities then follow for all steps at once.

    Args:
        task: one task, or a batch of N (the last policy-batch axis is then the task axis).
        K, k, log_std: ``[*G, m, n]``, ``[*G, m]``, ``[*G, m]`` (see :func:`as_policy`); the
            computation runs in their dtype.
        num_episodes: ``B >= 1`` episodes per policy.
        generator: source of randomness (on ``device``). One block of standard normals
            ``[T + 1, B, *G, n + m]`` is drawn per call whatever the policy, so the same seed gives
            the same noise to every policy and estimator (common random numbers).
        device: where to simulate (default: the parameters' device).
        reparameterize: keep the graph of ``K, k, log_std`` through the actions and the dynamics
            in ``states``, ``actions`` and ``rewards`` (for pathwise estimators); otherwise they
            are sampled without a graph.
    Returns:
        An :class:`LQRTrajectory`, tensors ``[T, B, *G, ...]``.
    """
    policy = as_policy(task, K, k, log_std)
    B = check_int("num_episodes", num_episodes, 1, numpy_ok=True)
    device = torch.device(device) if device is not None else policy.K.device
    policy = LinearGaussian(*(x.to(device) for x in policy))
    dtype = policy.K.dtype
    n, m, T = task.state_dim, task.action_dim, task.horizon
    batch = tuple(policy.K.shape[:-2])
    g = int(math.prod(batch))
    tables = task.tensors(device, dtype)

    def per_policy(name: str, core: tuple[int, ...]) -> torch.Tensor:  # [g, *core]
        return tables[name].expand(*batch, *core).reshape(g, *core)

    A, Bm, goal = per_policy("A", (n, n)), per_policy("B", (n, m)), per_policy("goal", (n,))
    Q, R = per_policy("Q", (n, n)), per_policy("R", (m, m))
    noise = torch.randn((T + 1, B, *batch, n + m), generator=generator, device=device, dtype=dtype)
    noise = noise.reshape(T + 1, B, g, n + m).transpose(1, 2)  # [T + 1, g, B, n + m]
    with torch.set_grad_enabled(reparameterize and torch.is_grad_enabled()):
        params = policy if reparameterize else LinearGaussian(*(x.detach() for x in policy))
        Kg, kg = params.K.reshape(g, m, n), params.k.reshape(g, 1, m)
        std = torch.exp(params.log_std).reshape(g, 1, m)
        # x_0 = mu0 + S0^(1/2) z; w_t = W^(1/2) z_t; the open-loop action part k + sigma eps_t
        x = per_policy("mu0", (n,)).unsqueeze(1) + noise[T, ..., :n] @ per_policy("S0_root", (n, n)).mT
        process = noise[:T, ..., :n] @ per_policy("W_root", (n, n)).mT.unsqueeze(0)  # [T, g, B, n]
        open_loop = kg + std * noise[:T, ..., n:]  # [T, g, B, m]
        drive = process + open_loop @ Bm.mT.unsqueeze(0)
        F_T = (A + Bm @ Kg).mT
        xs = [x]
        for t in range(T):
            xs.append(torch.baddbmm(drive[t], xs[-1], F_T))
        states = torch.stack(xs[:T])  # [T, g, B, n]
        actions = states @ Kg.mT.unsqueeze(0) + open_loop
        offset = states - goal.unsqueeze(1)
        cost = ((offset @ Q) * offset).sum(-1) + ((actions @ R) * actions).sum(-1)
        rewards = -cost

    def time_major(x: torch.Tensor, *core: int) -> torch.Tensor:  # [T, g, B, *core] -> [T, B, *G, *core]
        return x.transpose(1, 2).reshape(x.shape[0], B, *batch, *core)

    states, actions = time_major(states, n), time_major(actions, m)
    log_probs = gaussian_log_probs(policy, states, actions)
    shape = (T, B, *batch)
    terminated, truncated = LQRTrajectory.horizon_flags(shape, device)
    return LQRTrajectory(
        states=states,
        actions=actions,
        rewards=time_major(rewards),
        log_probs=log_probs,
        behaviour_log_probs=log_probs.detach(),
        discounts=torch.full(shape, task.gamma, dtype=dtype, device=device),
        terminated=terminated,
        truncated=truncated,
        final_states=xs[T].transpose(0, 1).reshape(B, *batch, n),
    )
