"""Sampled meta-gradient RL on tabular MDPs, scored against :func:`metagrad.exact.mgrl_meta_gradient`.

The algorithm (Xu et al., NeurIPS 2018, arXiv 1805.09801; the Atari algorithm of Liu et al.,
NeurIPS 2022): an actor-critic follows the lambda-return of meta-parameters ``eta = (gamma,
lambda)`` bootstrapped on a fixed critic ``v``; K inner steps ``theta_{k+1} = theta_k + alpha
g_hat(theta_k, eta)``, each from ``n`` sampled episodes; the meta-gradient is
``(d theta_K / d eta)^T g(theta_K, eta')`` with the outer ``eta'`` fixed and the outer direction
held constant. :mod:`metagrad.exact.mgrl` states the target exactly.

How a registered estimator gives the A2C direction
--------------------------------------------------
The estimators (:mod:`metagrad.estimators`) are surrogates of a discounted return
``J_c = E[sum_t c_t r_t]`` with step weights ``c_t = prod_{k<t} discounts_k``. The A2C direction
``E[sum_t grad log pi_t (G_t - v(s_t))]`` has no ``gamma^t`` weight and uses lambda-returns, and it
is *not* the gradient of any return: its Jacobian in ``theta`` is not symmetric, while the Hessian
of a scalar surrogate is. So no estimator plugged in as a scalar A2C loss has an unbiased Jacobian
(on a small MDP, enumerating every trajectory, Loaded DiCE used that way misses a large part of
it; ``tests/test_mgrl.py`` keeps the check). The mapping used here keeps every estimator a pure
function with the shared signature, unchanged:

1. **Inputs.** The lambda-return is a plain discounted return: with discount ``gamma lambda`` and
   the rewards ``rho_t = r_t + gamma (1 - lambda) v(s_{t+1})`` (``rho_{T-1} = r_{T-1} + gamma
   v(s_T)``), ``G_t = sum_{l>=t} (gamma lambda)^(l-t) rho_l`` (:func:`lambda_return_rewards`). The
   estimator gets ``rewards = rho``, ``discounts = gamma lambda`` and the critic ``values = v(s_t)``
   in its usual role (no bootstrap value: it is inside ``rho_{T-1}``). Its return is then
   ``J_c(theta) = E[sum_l (gamma lambda)^l rho_l]`` and its advantage ``G_t - v(s_t)``, the
   lambda-return (GAE) advantage; everything that depends on ``eta`` keeps its graph.
2. **Per-step scores.** Give step ``t`` its own copy ``phi_t`` of the parameters. Since ``rho_l``
   is fixed before ``a_t`` is drawn when ``l < t``, ``grad_{phi_t} J_c = c_t E[grad log pi_t
   G_t] = c_t E[grad log pi_t (G_t - v(s_t))]``: the A2C direction is ``g = sum_t c_t^-1
   grad_{phi_t} J_c`` at ``phi_t = theta``. An estimator's estimate of ``grad_{phi_t} J_c`` is its
   score on the log-probability of step ``t``, ``(dF / d log pi_t) grad log pi_t``, so the sampled
   direction is ``g_hat = sum_t c_t^-1 (dF / d log pi_t) grad log pi_t``: one derivative with
   respect to the log-probability tensor, reweighted, then pulled back to ``theta``
   (:func:`a2c_direction`). No estimator's numbers change: this is how they are called.

Differentiating ``g_hat`` again gives ``sum_{t,k} c_t^-1 d^2 F / (d phi_k d phi_t)``: the Jacobian
is unbiased exactly when the estimator's second derivatives are unbiased *per pair of steps*,
which DiCE, DiCE with a baseline and Loaded DiCE (``lambda_ = 1``, the critic independent of
``theta``) are (their magic boxes do not care how each log-prob depends on parameters), and plain
``pg`` (no score-function products) and ``lvc`` (no products across steps) are not. Their
expectations are computable: :func:`metagrad.exact.mgrl_meta_gradient` with ``jacobian="pg"`` or
``"lvc"``. The first
derivative is right for every estimator whose per-step scores are unbiased (every registered
score-function estimator), so at ``K = 1`` (the samples of step 0 do not depend on ``eta``) each
is unbiased for ``d theta_1 / d eta``; from ``K = 2`` on, ``d theta_2 / d eta`` needs the Jacobian
at ``theta_1``. The value of ``g_hat`` is the same for pg, LVC and Loaded DiCE on the same
episodes (their per-step scores are all ``c_t (G_t - v(s_t))``), so their inner iterates pair
exactly; DiCE's (no baseline) differ by the zero-mean baseline terms.

Stages (Liu et al. 2022, as in :mod:`metagrad.decomposed`): ``inner`` (the value of each inner
update), ``hessian`` (its Jacobian in ``theta`` and ``eta``, through ``g_hat`` created with a graph)
and ``outer`` (the direction at ``theta_K`` with ``eta'``), each exact or estimated from its own
episodes, combined straight-through; every stage role draws from its own random stream, so the
same generator gives every estimator the same episodes (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from metagrad.envs.tabular import TabularTask, check_logits, expand_to_tasks, rollout, tabular_gather
from metagrad.estimators import (
    Estimator,
    check_trajectory_inputs,
    cumulative_discounts,
    get_estimator,
    stop_gradient,
)
from metagrad.exact.mgrl import (
    check_meta_parameter,
    critic_table,
    expected_direction,
    mgrl_meta_gradient,
)
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
    "MGRLSpec",
    "a2c_direction",
    "exact_mgrl_meta_gradient",
    "lambda_return_rewards",
    "sample_mgrl_meta_gradients",
]


def lambda_return_rewards(
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    gamma: float | torch.Tensor,
    lam: float | torch.Tensor,
) -> torch.Tensor:
    """Rewards whose ``gamma lam``-discounted return is the lambda-return bootstrapped on ``v``.

    ``rho_t = r_t + gamma (1 - lam) v(s_{t+1})`` for ``t < T - 1`` and ``rho_{T-1} = r_{T-1} +
    gamma v(s_T)``, so that ``G_t = sum_{l>=t} (gamma lam)^(l-t) rho_l`` satisfies ``G_t = r_t +
    gamma ((1 - lam) v(s_{t+1}) + lam G_{t+1})`` and ``G_{T-1} = r_{T-1} + gamma v(s_T)``. The
    critic is cut from the graph; ``rewards``, ``gamma`` and ``lam`` keep theirs.

    Args: rewards, values ``[T, B, ...]`` (``values``: the critic at ``s_t``); bootstrap_value
    ``[B, ...]`` (at ``s_T``); gamma, lam floats or tensors broadcasting against ``[B, ...]``.
    Returns: ``[T, B, ...]``.
    """
    values = stop_gradient(values).to(rewards.dtype)
    boot = stop_gradient(bootstrap_value).to(rewards.dtype)
    next_values = torch.cat([values[1:], boot.unsqueeze(0)])
    keep = torch.ones_like(next_values)
    keep[-1] = 0.0  # the last step bootstraps fully: lam plays no part
    return rewards + gamma * next_values * (1.0 - lam * keep)


def a2c_direction(
    estimator: str | Estimator,
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    *,
    gamma: float | torch.Tensor,
    lam: float | torch.Tensor,
    wrt: torch.Tensor,
    params: dict[str, float] | None = None,
    episode_weights: torch.Tensor | None = None,
    create_graph: bool = True,
) -> torch.Tensor:
    """The A2C direction ``sum_t grad log pi_t (G_t - v(s_t))`` estimated through ``estimator``.

    See the module docstring: the estimator gets ``rewards = rho`` (:func:`lambda_return_rewards`),
    ``discounts = gamma * lam`` and the critic ``values``; its scores on the log-probabilities of
    each step are divided by that step's weight ``c_t = (gamma lam)^t`` and pulled back to ``wrt``.

    Args:
        estimator: a registered name or a function with the shared signature.
        log_probs: ``[T, B, ...]`` ``log pi(a_t|s_t)``, carrying the graph of ``wrt``.
        rewards: ``[T, B, ...]``; values: ``[T, B, ...]`` the critic at ``s_t``;
            bootstrap_value: ``[B, ...]`` the critic at ``s_T``.
        gamma, lam: the return's discount and bootstrapping (floats, or tensors broadcasting
            against ``[B, ...]`` whose graph is kept).
        wrt: the parameters (e.g. logits ``[*G, S, A]``).
        params: the estimator's keyword parameters.
        episode_weights: ``[B, ...]`` weights of the episodes summed instead of their mean (e.g.
            trajectory probabilities, to take an exact expectation by enumeration).
        create_graph: keep the graph of the result (for its Jacobian) or not (a value only).
    Returns:
        A tensor shaped like ``wrt``: the sum over the policy batch of each policy's episode mean
        (so, for independent policies, each policy's own estimate).
    """
    fn = get_estimator(estimator).fn if isinstance(estimator, str) else estimator
    if not isinstance(log_probs, torch.Tensor) or not log_probs.requires_grad:
        raise ValueError("log_probs: expected a tensor carrying the graph of wrt")
    # the discounts are built here from gamma and lam: only the given tensors are checked
    check_trajectory_inputs(
        log_probs, rewards, stop_gradient(log_probs), values=values, bootstrap_value=bootstrap_value
    )
    returns_rewards = lambda_return_rewards(rewards, values, bootstrap_value, gamma, lam)
    discounts = (gamma * lam) * torch.ones_like(returns_rewards)
    weights = cumulative_discounts(discounts)
    if not bool((stop_gradient(weights) > 0).all()):
        raise ValueError("gamma, lam: (gamma lam)^t underflows to 0 within the horizon")
    surrogate = fn(
        log_probs,
        returns_rewards,
        discounts,
        values=stop_gradient(values).to(log_probs.dtype),
        **(params or {}),
    )
    total = surrogate.mean(0).sum() if episode_weights is None else (episode_weights * surrogate).sum()
    scores = None
    if total.requires_grad:
        (scores,) = torch.autograd.grad(
            total, log_probs, create_graph=create_graph, retain_graph=True, allow_unused=True
        )
    if scores is None:
        raise ValueError("estimator: its surrogate does not depend on log_probs (no per-step scores)")
    (direction,) = torch.autograd.grad(
        log_probs, wrt, grad_outputs=scores / weights, create_graph=create_graph, retain_graph=create_graph
    )
    return direction


@dataclass(frozen=True)
class MGRLSpec(Staged):
    """One MGRL meta-gradient estimate: three stages and the inner loop.

    Attributes:
        inner, hessian, outer: the stages (:class:`~metagrad.decomposed.StageSpec`: ``"exact"`` or a
            registered estimator with ``n`` episodes; no replay, no MLMC).
        inner_steps: K >= 0; inner_lr: alpha.
        gamma, lam: the meta-parameters ``eta`` (the inner return's discount and bootstrapping).
        outer_gamma, outer_lam: the outer direction's fixed ``eta'``.
    Defaults: the Atari settings of Xu et al. 2018 (gamma and lambda start at 0.99 and 0.95, the
    outer return uses 0.99 and 0.95).
    """

    inner: StageSpec = field(default_factory=StageSpec)
    hessian: StageSpec = field(default_factory=StageSpec)
    outer: StageSpec = field(default_factory=StageSpec)
    inner_steps: int = 1
    inner_lr: float = 1.0
    gamma: float = 0.99
    lam: float = 0.95
    outer_gamma: float = 0.99
    outer_lam: float = 0.95

    MLMC_ROLES: ClassVar[tuple[StageRole, ...]] = ()

    def __post_init__(self) -> None:
        self.check_stages()
        for role in STAGE_ROLES:
            if self.stage(role).replay:
                raise ValueError(f"{role}.replay: MGRL stages sample fresh episodes only")
        check_int("inner_steps", self.inner_steps, 0)
        check_real("inner_lr", self.inner_lr)
        for name in ("gamma", "lam", "outer_gamma", "outer_lam"):
            check_real(name, getattr(self, name), minimum=0.0, maximum=1.0, open_min=True, open_max=True)


class _Sampler:
    """One batched MGRL computation: the task, the critic table and one random stream per role."""

    def __init__(
        self, task: TabularTask, spec: MGRLSpec, critic: torch.Tensor, generator: torch.Generator | None
    ) -> None:
        self.task, self.spec, self.critic = task, spec, critic
        self.streams = RandomStreams.by_role(generator)

    def direction(
        self,
        stage: StageSpec,
        theta: torch.Tensor,
        gamma: float | torch.Tensor,
        lam: float | torch.Tensor,
        role: StageRole,
        create_graph: bool,
    ) -> torch.Tensor:
        """The stage's direction at ``theta [R, *N, S, A]`` (exact, or from ``stage.n`` episodes)."""
        if stage.is_exact:
            with torch.set_grad_enabled(create_graph):
                return expected_direction(self.task, theta, self.critic, gamma, lam)
        traj = rollout(self.task, theta, stage.n, generator=self.streams[role].trajectories)
        table = self.critic.unsqueeze(-1)  # [R, *N, S, 1]: read v(s) as an [S, A] table with A = 1
        values = tabular_gather(table, traj.states, torch.zeros_like(traj.states))
        finals = traj.final_states.unsqueeze(0)
        bootstrap = tabular_gather(table, finals, torch.zeros_like(finals))[0]
        return a2c_direction(
            stage.estimator,
            traj.log_probs,
            traj.rewards,
            values,
            bootstrap,
            gamma=gamma,
            lam=lam,
            wrt=theta,
            params=dict(stage.params),
            create_graph=create_graph,
        )


def _check_inputs(task: TabularTask, logits: torch.Tensor, values: torch.Tensor, spec: MGRLSpec) -> None:
    if not isinstance(spec, MGRLSpec):
        raise ValueError(f"spec: expected an MGRLSpec, got {type(spec).__name__}")
    check_logits(task, logits)
    if logits.ndim > 2 + len(task.batch_shape):
        raise ValueError(
            f"logits: expected [S, A] or one per task [N, S, A], got {list(logits.shape)} "
            "(repeats are the batch axis)"
        )
    for name, x in (("gamma", spec.gamma), ("lam", spec.lam)):
        check_meta_parameter(name, x)


def sample_mgrl_meta_gradients(
    task: TabularTask,
    logits: torch.Tensor,
    values: torch.Tensor,
    spec: MGRLSpec,
    repeats: int,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``repeats`` independent MGRL meta-gradient estimates under ``spec``, sampled as one batch.

    Args:
        task: the MDP, or a batch of N tasks (each repeat adapts in every task).
        logits: ``[S, A]`` initial logits ``theta_0`` (or ``[N, S, A]``, one per task).
        values: the fixed critic ``[S]`` (or ``[N, S]``, one per task).
        spec: the stages, inner loop and meta-parameters.
        repeats: ``R >= 1``.
        generator: randomness for the episodes (split per stage role: common random numbers).
    Returns:
        ``[R, 2]`` float64 estimates of ``d / d (gamma, lambda)`` (``[R, N, 2]`` for a task batch),
        to score against :func:`exact_mgrl_meta_gradient`.
    """
    check_int("repeats", repeats, 1)
    _check_inputs(task, logits, values, spec)
    theta0 = expand_to_tasks(task, stop_gradient(logits).to(torch.float64))
    batch = (repeats, *theta0.shape[:-2])
    critic = critic_table(task, values, batch).to(theta0.device)
    alpha = spec.inner_lr
    with torch.enable_grad():
        gamma, lam = (
            torch.full(batch, x, dtype=torch.float64, device=theta0.device, requires_grad=True)
            for x in (spec.gamma, spec.lam)
        )
        theta = theta0.expand(*batch, *theta0.shape[-2:]).clone().requires_grad_(True)
        sampler = _Sampler(task, spec, critic, generator)
        for _ in range(spec.inner_steps):
            leaf = detached_leaf(theta)
            g_inner = sampler.direction(
                spec.inner, leaf, stop_gradient(gamma), stop_gradient(lam), "inner", False
            )
            g_hess = sampler.direction(spec.hessian, theta, gamma, lam, "hessian", True)
            theta = straight_through(theta + alpha * g_inner, theta + alpha * g_hess)
        leaf = detached_leaf(theta)
        outer = stop_gradient(
            sampler.direction(spec.outer, leaf, spec.outer_gamma, spec.outer_lam, "outer", False)
        )
        grads = torch.autograd.grad((theta * outer).sum(), [gamma, lam], allow_unused=True)
    zero = torch.zeros(batch, dtype=torch.float64, device=theta0.device)
    return torch.stack([zero if g is None else g for g in grads], -1)


def exact_mgrl_meta_gradient(
    task: TabularTask, logits: torch.Tensor, values: torch.Tensor, spec: MGRLSpec
) -> torch.Tensor:
    """The exact float64 meta-gradient that ``spec`` estimates, ``[2]`` (``[N, 2]`` for a task batch)."""
    _check_inputs(task, logits, values, spec)
    return mgrl_meta_gradient(
        task,
        logits,
        values,
        gamma=spec.gamma,
        lam=spec.lam,
        inner_lr=spec.inner_lr,
        inner_steps=spec.inner_steps,
        outer_gamma=spec.outer_gamma,
        outer_lam=spec.outer_lam,
    )
