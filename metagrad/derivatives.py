"""The gradient and the Hessian of the return ``J(theta)`` itself, estimated from on- or off-policy
episodes and scored against the exact float64 ones.

Tang, Kozuno, Rowland, Munos & Valko (NeurIPS 2021, arXiv 2106.13125): any differentiable
off-policy evaluation ``V_hat(pi; episodes of mu)`` of ``J(pi)`` is a gradient and Hessian
estimator, by autodiff at ``pi`` (the OPE family of :mod:`metagrad.estimators`: ``stepwise_is``,
``doubly_robust``, ``vtrace``, ``taylor1``, ``taylor2``; any registered estimator works). Their toy
experiment (the tabular study of their experiments section): behaviour ``mu`` uniform, target
``pi = eps * (a deterministic policy) + (1 - eps) * uniform`` (:func:`mixture_logits`), critic
``V^mu + noise * N(0, 1) * ||V^mu|| / |S|`` fresh per estimate, episodes of ``T`` steps
bootstrapped with the critic at ``s_T``.

:func:`sample_derivatives` draws ``R`` independent estimates (each from ``n`` episodes), batched
over the repeats; :func:`exact_derivatives` gives the exact gradient ``[S * A]`` or Hessian
``[S * A, S * A]`` of the objective the samples estimate (``"finite"``) or of the papers'
infinite-horizon value (``"infinite"``, paper parity: a ``gamma^T`` mismatch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch

from metagrad.critics import CriticSpec, critic_values
from metagrad.envs.tabular import TabularTask, policy_log_probs, rollout
from metagrad.estimators import get_estimator, stop_gradient
from metagrad.exact import OBJECTIVES, Objective, tabular_return, tabular_values
from metagrad.staged import mean_surrogate
from metagrad.validation import check_choice, check_int, check_real

__all__ = [
    "BEHAVIOURS",
    "DERIVATIVES",
    "Behaviour",
    "Derivative",
    "DerivativeSpec",
    "behaviour_logits",
    "exact_derivatives",
    "mixture_logits",
    "sample_derivatives",
]

Behaviour = Literal["target", "uniform"]
Derivative = Literal["gradient", "hessian"]
BEHAVIOURS: tuple[Behaviour, ...] = get_args(Behaviour)
DERIVATIVES: tuple[Derivative, ...] = get_args(Derivative)


def mixture_logits(
    num_states: int,
    num_actions: int,
    eps: float,
    *,
    generator: torch.Generator | None = None,
    actions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits ``log(eps * onehot(a*(s)) + (1 - eps) / A)`` of Tang et al.'s target policy, ``[S, A]`` float64.

    ``a*(s)`` is ``actions`` (long ``[S]``) or drawn uniformly from ``generator``; ``eps = 0`` is
    the uniform policy (the behaviour of their protocol), ``eps -> 1`` deterministic (``eps < 1``
    keeps every log-probability finite).
    """
    check_int("num_states", num_states)
    check_int("num_actions", num_actions)
    check_real("eps", eps, minimum=0.0, maximum=1.0, open_max=True)
    if actions is None:
        actions = torch.randint(num_actions, (num_states,), generator=generator)
    if not isinstance(actions, torch.Tensor) or actions.shape != (num_states,):
        raise ValueError(f"actions: expected a long tensor [S] = [{num_states}], got {actions!r}")
    probs = torch.full((num_states, num_actions), (1.0 - eps) / num_actions, dtype=torch.float64)
    probs[torch.arange(num_states), actions] += eps
    return probs.log()


@dataclass(frozen=True)
class DerivativeSpec:
    """One derivative estimate of ``J``: ``n`` episodes of the behaviour policy per estimate.

    Attributes:
        estimator: a registered estimator (its surrogate is differentiated at the target).
        n: episodes per estimate.
        derivative: ``"gradient"`` or ``"hessian"``.
        behaviour: ``"uniform"`` (off-policy, Tang et al.'s ``mu``) or ``"target"`` (on-policy).
        critic: ``noisy_exact`` (``V^mu`` plus relative noise, fresh per estimate) or ``zero``;
            estimators without a critic ignore it.
        objective: ``"finite"`` (what the episodes estimate) or ``"infinite"`` (paper parity).
        params: the estimator's keyword parameters, e.g. ``(("rho_bar", 1.0), ("c_bar", 1.0))``.
    """

    estimator: str
    n: int
    derivative: Derivative = "gradient"
    behaviour: Behaviour = "uniform"
    critic: CriticSpec = field(default_factory=lambda: CriticSpec(noise=1.0))
    objective: Objective = "finite"
    params: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        info = get_estimator(self.estimator)
        check_int("n", self.n)
        check_choice("derivative", self.derivative, DERIVATIVES)
        check_choice("behaviour", self.behaviour, BEHAVIOURS)
        if not isinstance(self.critic, CriticSpec) or self.critic.kind == "learned":
            raise ValueError("critic: expected a CriticSpec of kind 'noisy_exact' or 'zero'")
        check_choice("objective", self.objective, OBJECTIVES)
        params = tuple(sorted(dict(self.params).items()))
        unknown = sorted({name for name, _ in params} - set(info.params))
        if unknown:
            raise ValueError(f"params: {self.estimator!r} takes {list(info.params)}, got {unknown}")
        object.__setattr__(self, "params", params)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def behaviour_logits(spec: DerivativeSpec, logits: torch.Tensor) -> torch.Tensor:
    """The logits that generate the episodes: the target's, or uniform (zeros)."""
    return logits if spec.behaviour == "target" else torch.zeros_like(logits)


def _critic_table(
    task: TabularTask, mu: torch.Tensor, spec: DerivativeSpec, repeats: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``[R, (T + 1,) S]`` behaviour values plus fresh relative noise per estimate (drawn always,
    so that every estimator of a setting sees the same episodes after it)."""
    exact = tabular_values(task, mu, spec.objective)
    exact = exact.expand(repeats, *exact.shape)
    noise = torch.randn(exact.shape, generator=generator, dtype=exact.dtype, device=exact.device)
    if spec.critic.kind == "zero":
        return torch.zeros_like(exact)
    scale = exact.norm(dim=-1, keepdim=True) / task.num_states
    return exact + spec.critic.noise * noise * scale


def sample_derivatives(
    task: TabularTask,
    logits: torch.Tensor,
    spec: DerivativeSpec,
    repeats: int,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``repeats`` independent estimates of the gradient or the Hessian of ``J`` at ``logits``.

    Args:
        task: one MDP.
        logits: ``[S, A]`` target policy.
        spec: estimator, episodes per estimate, derivative, behaviour, critic.
        repeats: ``R >= 1``, batched as ``R`` parameter copies.
        generator: randomness of the critic noise (drawn first) and of the episodes.
    Returns:
        float64 ``[R, S * A]`` (gradient) or ``[R, S * A, S * A]`` (Hessian).
    """
    check_int("repeats", repeats)
    if not isinstance(logits, torch.Tensor) or logits.shape != (task.num_states, task.num_actions):
        raise ValueError(f"logits: expected shape [S, A] = [{task.num_states}, {task.num_actions}]")
    info = get_estimator(spec.estimator)
    logits = stop_gradient(logits).to(torch.float64)
    mu = behaviour_logits(spec, logits)
    S, A, D = task.num_states, task.num_actions, task.num_states * task.num_actions
    table = _critic_table(task, mu, spec, repeats, generator)
    traj = rollout(task, mu.expand(repeats, S, A), spec.n, generator=generator)
    with torch.enable_grad():
        theta = logits.expand(repeats, S, A).clone().requires_grad_(True)
        values = bootstrap = None
        if info.uses_critic:
            values, bootstrap = critic_values(table, traj.states, traj.final_states, spec.objective)
        surrogate = mean_surrogate(
            spec.estimator,
            policy_log_probs(theta, traj.states, traj.actions),
            traj.rewards,
            traj.discounts,
            behaviour_log_probs=traj.behaviour_log_probs,
            values=values,
            bootstrap_value=bootstrap,
            params=dict(spec.params),
        )
        hessian = spec.derivative == "hessian"
        (grad,) = torch.autograd.grad(surrogate.sum(), theta, create_graph=hessian)
        if not hessian:
            return grad.detach().reshape(repeats, D)
        rows = _hessian_rows(grad.reshape(repeats, D), theta)  # [D, R, S, A]
    return rows.reshape(D, repeats, D).transpose(0, 1).contiguous()


def _hessian_rows(grad: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Row i of every repeat's Hessian at once: ``d grad[:, i] / d theta`` (repeats independent),
    one backward pass per parameter, ``[D, *theta.shape]``, detached. (A plain loop: on CPU it
    takes a fifth of the time of a vmapped ``is_grads_batched`` pass, which allocates ``D``
    copies of the whole graph's intermediates.)"""
    rows = [
        torch.autograd.grad(grad[:, i].sum(), theta, retain_graph=i + 1 < grad.shape[1])[0]
        for i in range(grad.shape[1])
    ]
    return torch.stack(rows).detach()


def exact_derivatives(
    task: TabularTask, logits: torch.Tensor, derivative: Derivative, objective: Objective = "finite"
) -> torch.Tensor:
    """The exact float64 gradient ``[S * A]`` or Hessian ``[S * A, S * A]`` of ``J`` at ``logits``."""
    check_choice("derivative", derivative, DERIVATIVES)
    D = task.num_states * task.num_actions
    with torch.enable_grad():
        theta = stop_gradient(logits).to(torch.float64).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(tabular_return(task, theta, objective), theta, create_graph=True)
        if derivative == "gradient":
            return grad.detach().reshape(D)
        rows = _hessian_rows(grad.reshape(1, D), theta)
    return rows.reshape(D, D)
