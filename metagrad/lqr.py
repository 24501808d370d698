"""Staged MAML meta-gradients on linear-quadratic-Gaussian tasks, scored against an exact oracle.

The three-stage decomposition of Liu et al. (NeurIPS 2022, arXiv 2112.15400) on the continuous
tasks of :mod:`metagrad.envs.lqr`, with ``theta = (K, k, log_std)`` flattened to one vector
(:meth:`~metagrad.envs.lqr.LinearGaussian.flatten`):

* ``inner``: the forward value of each inner update ``theta + alpha g_inner(theta)``;
* ``hessian``: the Jacobian of each inner update, through ``g_hess`` (created with a graph);
* ``outer``: the gradient of ``J`` at ``theta_K``;

each exact (:func:`~metagrad.exact.lqr.lqr_return` differentiated by autograd) or estimated by a
registered estimator from its own ``n`` fresh episodes, combined straight-through::

    theta_{i+1} = stop(theta_i + alpha g_inner) + (theta_i + alpha g_hess) - stop(theta_i + alpha g_hess)

Score-function estimators get episodes sampled without a graph and log-densities of the
Gaussian policy; estimators of the ``"pathwise"`` family get rewards that carry the graph of
``theta`` through the reparameterised actions and the known dynamics. Critic-based estimators
read the exact value ``V_t(x_t)`` of the current policy (:func:`~metagrad.exact.lqr.lqr_value`),
optionally with noise; the horizon is complete, so the bootstrap is 0.

Every stage role draws from its own random streams (:class:`~metagrad.decomposed.RandomStreams`),
so all estimators scored on one setting see the same noise (common random numbers). The ``R``
repetitions are one batch of parameter copies ``[R, *G, D]`` (no Python loop over repetitions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from metagrad.critics import CriticSpec
from metagrad.envs.lqr import LinearGaussian, LQRTask, as_policy, rollout
from metagrad.estimators import get_estimator, stop_gradient
from metagrad.exact.lqr import lqr_maml_meta_gradient, lqr_moments, lqr_return, lqr_state_values, lqr_value
from metagrad.staged import (
    STAGE_ROLES,
    RandomStreams,
    Staged,
    StageRole,
    StageSpec,
    detached_leaf,
    straight_through,
)
from metagrad.validation import check_int, check_real

__all__ = [
    "LQRMetaGradientSpec",
    "exact_lqr_meta_gradient",
    "lqr_episodes_per_estimate",
    "sample_lqr_meta_gradients",
]


@dataclass(frozen=True)
class LQRMetaGradientSpec(Staged):
    """How to compute one MAML meta-gradient estimate on an LQR task.

    Attributes:
        inner, hessian, outer: the three stages (:class:`~metagrad.decomposed.StageSpec`; no
            replay and no MLMC here).
        inner_steps: K >= 0; inner_lr: alpha (one step size for ``K``, ``k`` and ``log_std``).
        critic: the critic of advantage-based estimators: ``kind="noisy_exact"`` reads the exact
            value ``V_t(x_t)`` plus ``noise * N(0, 1) * |E V_t(x_t)|`` (fresh per episode and step,
            never differentiated; ``noise=0``, the default, is the exact value); ``"zero"``: no
            baseline. ``"learned"`` is not offered.
        first_order: drop the Jacobian (FOMAML): ``d theta_{i+1} / d theta_i = I``.
    """

    inner: StageSpec = field(default_factory=StageSpec)
    hessian: StageSpec = field(default_factory=StageSpec)
    outer: StageSpec = field(default_factory=StageSpec)
    inner_steps: int = 1
    inner_lr: float = 0.01
    critic: CriticSpec = field(default_factory=CriticSpec)
    first_order: bool = False

    MLMC_ROLES: ClassVar[tuple[StageRole, ...]] = ()

    def __post_init__(self) -> None:
        self.check_stages()
        for role in STAGE_ROLES:
            if self.stage(role).replay:
                raise ValueError(f"{role}.replay: the LQR sampler takes fresh episodes only")
        check_int("inner_steps", self.inner_steps, 0)
        check_real("inner_lr", self.inner_lr)
        if not isinstance(self.critic, CriticSpec):
            raise ValueError(f"critic: expected a CriticSpec, got {type(self.critic).__name__}")
        if self.critic.kind == "learned":
            raise ValueError(
                "critic.kind: 'learned' is not offered on LQR tasks; use 'noisy_exact' or 'zero'"
            )


def lqr_episodes_per_estimate(spec: LQRMetaGradientSpec) -> int:
    """Episodes one estimate samples: ``n`` of the inner and Jacobian stages per inner step (the
    Jacobian stage not at all when first order) and the outer stage's ``n`` once."""
    hessian = 0 if spec.first_order else spec.hessian.n
    return spec.inner_steps * (spec.inner.n + hessian) + spec.outer.n


class _Sampler:
    """The task, recipe and random streams of one batched meta-gradient computation."""

    def __init__(self, task: LQRTask, spec: LQRMetaGradientSpec, generator: torch.Generator | None) -> None:
        self.task, self.spec = task, spec
        self.streams = RandomStreams.by_role(generator)

    def policy(self, theta: torch.Tensor) -> LinearGaussian:
        return LinearGaussian.unflatten(theta, self.task.state_dim, self.task.action_dim)

    def critic(self, theta: torch.Tensor, role: StageRole, states: torch.Tensor) -> torch.Tensor | None:
        """Critic values ``[T, B, *G]`` of the policies ``theta`` (no graph) along ``states``."""
        kind, noise = self.spec.critic.kind, self.spec.critic.noise
        if kind == "zero":
            return None
        policy = self.policy(stop_gradient(theta))
        value = lqr_value(self.task, *policy)
        values = lqr_state_values(value, states)
        if noise > 0:
            m, S = lqr_moments(self.task, *policy)  # E V_t(x_t) = -(tr(P_t E[x x^T]) + 2 p_t^T m_t + c_t)
            second = S + m.unsqueeze(-1) * m.unsqueeze(-2)
            T = self.task.horizon
            quadratic = (value.P[..., :T, :, :] * second).sum((-2, -1))
            mean_value = -(quadratic + 2.0 * (value.p[..., :T, :] * m).sum(-1) + value.c[..., :T])
            scale = mean_value.abs().movedim(-1, 0).unsqueeze(1)  # [T, 1, *G]
            normal = torch.randn(
                values.shape, generator=self.streams[role].critic, device=values.device, dtype=values.dtype
            )
            values = values + noise * normal * scale
        return values

    def objective(self, stage: StageSpec, theta: torch.Tensor, role: StageRole) -> torch.Tensor:
        """Scalar whose gradient w.r.t. ``theta [R, *G, D]`` is the stage's per-repeat estimate."""
        if stage.is_exact:
            return lqr_return(self.task, *self.policy(theta)).sum()
        info = get_estimator(stage.estimator)
        traj = rollout(
            self.task,
            *self.policy(theta),
            stage.n,
            generator=self.streams[role].trajectories,
            reparameterize=info.family == "pathwise",
        )
        values = self.critic(theta, role, traj.states) if info.uses_critic else None
        surrogate = info.fn(
            traj.log_probs,
            traj.rewards,
            traj.discounts,
            behaviour_log_probs=traj.behaviour_log_probs,
            values=values,
            bootstrap_value=None if values is None else torch.zeros_like(values[0]),
            **dict(stage.params),
        )
        return surrogate.mean(0).sum()


def _staged_meta_gradient(sampler: _Sampler, theta0: torch.Tensor) -> torch.Tensor:
    """K straight-through inner steps from the leaves ``theta0`` and the gradient of the outer
    stage at ``theta_K`` w.r.t. ``theta0`` (detached)."""
    spec = sampler.spec
    theta = theta0
    for _ in range(spec.inner_steps):
        leaf = detached_leaf(theta)
        (g_inner,) = torch.autograd.grad(sampler.objective(spec.inner, leaf, "inner"), leaf)
        if spec.first_order:
            path = theta
        else:
            hess_obj = sampler.objective(spec.hessian, theta, "hessian")
            (g_hess,) = torch.autograd.grad(hess_obj, theta, create_graph=True)
            path = theta + spec.inner_lr * g_hess
        theta = straight_through(theta + spec.inner_lr * g_inner, path)
    (grad,) = torch.autograd.grad(sampler.objective(spec.outer, theta, "outer"), theta0)
    return grad.detach()


def sample_lqr_meta_gradients(
    task: LQRTask,
    K: Any,
    k: Any,
    log_std: Any,
    spec: LQRMetaGradientSpec,
    repeats: int,
    *,
    generator: torch.Generator | None = None,
) -> LinearGaussian:
    """``repeats`` independent MAML meta-gradient estimates under ``spec``, sampled as one batch.

    Args:
        task: one task, or a batch of N tasks (each adapted and scored separately).
        K, k, log_std: the initial policy ``theta_0``, ``[*G, m, n]``, ``[*G, m]``, ``[*G, m]``
            (:func:`~metagrad.envs.lqr.as_policy`: for a task batch, ``G = ()`` starts every task
            from the same policy, ``G = (N,)`` from one policy each).
        spec: the per-stage recipe.
        repeats: ``R >= 1`` independent estimates.
        generator: randomness for episodes and critic noise, split per stage role and kind
            (common random numbers across estimators); on the parameters' device.
    Returns:
        A :class:`~metagrad.envs.lqr.LinearGaussian` of float64 estimates of
        ``d J(theta_K) / d theta_0``: ``K [R, *G, m, n]``, ``k [R, *G, m]``, ``log_std [R, *G, m]``
        (score them against :func:`exact_lqr_meta_gradient`).
    """
    if not isinstance(task, LQRTask):
        raise ValueError(f"task: expected an LQRTask, got {type(task).__name__}")
    if not isinstance(spec, LQRMetaGradientSpec):
        raise ValueError(f"spec: expected an LQRMetaGradientSpec, got {type(spec).__name__}")
    R = check_int("repeats", repeats, 1)
    flat = stop_gradient(as_policy(task, K, k, log_std).flatten()).to(torch.float64)
    with torch.enable_grad():
        theta0 = flat.expand(R, *flat.shape).clone().requires_grad_(True)
        grad = _staged_meta_gradient(_Sampler(task, spec, generator), theta0)
    return LinearGaussian.unflatten(grad, task.state_dim, task.action_dim)


def exact_lqr_meta_gradient(
    task: LQRTask, K: Any, k: Any, log_std: Any, spec: LQRMetaGradientSpec
) -> LinearGaussian:
    """The exact float64 meta-gradient that ``spec`` estimates (``[*G, ...]`` per field):
    :func:`~metagrad.exact.lqr.lqr_maml_meta_gradient` with the spec's K and alpha. First-order
    specs are scored against it too (the first-order approximation is a bias like any other)."""
    return lqr_maml_meta_gradient(task, K, k, log_std, inner_lr=spec.inner_lr, inner_steps=spec.inner_steps)
