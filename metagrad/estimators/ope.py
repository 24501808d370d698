"""Derivatives of off-policy evaluation as gradient and Hessian estimators.

An estimate ``V_hat(pi; data from mu)`` of the return of pi, differentiated at pi, is a gradient /
Hessian estimator (Tang, Kozuno, Rowland, Munos & Valko, NeurIPS 2021, arXiv 2106.13125).
Ratios ``rho_t = pi(a_t|s_t) / mu(a_t|s_t)``; on-policy data (``behaviour_log_probs`` None) use
``mu = stop(pi)``, so ``rho_t = box(log pi_t)`` (value 1). Shared signature and shapes: see
:mod:`metagrad.estimators`.
"""

from __future__ import annotations

import math

import torch

from metagrad.estimators.core import (
    advantages,
    check_trajectory_inputs,
    cumulative_discounts,
    importance_weighted_value,
    log_ratios,
    stop_gradient,
)
from metagrad.estimators.facts import register_estimator
from metagrad.validation import check_real

__all__ = ["doubly_robust", "stepwise_is", "taylor1", "taylor2", "vtrace"]


def _check_bar(name: str, value: float) -> float:
    """A truncation level: a positive finite number or ``math.inf`` (no truncation)."""
    if isinstance(value, float) and value == math.inf:
        return value
    return check_real(name, value, minimum=0.0, open_min=True)


@register_estimator(
    reference=(
        "Precup, Sutton & Singh 2000 (per-decision IS); as an OPE gradient estimator Tang et "
        "al., NeurIPS 2021 (arXiv 2106.13125)"
    ),
    label="step-wise IS",
    summary="step-wise importance sampling, no critic (= dice on-policy)",
    formula="sum_t c_t rho_{0:t} r_t",
    family="off-policy evaluation",
    color="#882255",
    marker="h",
    off_policy=True,
    unbiased_orders="all",
    unbiased_when="where mu covers pi",
)
def stepwise_is(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Step-wise importance sampling: ``V_hat = sum_t c_t rho_{0:t} r_t``, ``rho_{0:t} = prod_{k<=t} rho_k``.

    No critic (``values`` and ``bootstrap_value`` are ignored). On-policy its
    surrogate is :func:`dice` (every derivative equal); off-policy it is :func:`off_policy_dice`
    without a baseline. Since ``E_mu[V_hat](theta) = J(theta)`` for every theta, derivatives of
    every order are unbiased for the finite-horizon objective wherever mu covers pi.

    Args: see the module docstring (shapes ``[T, B, ...]``).
    Returns: ``[B, ...]`` per-episode estimate of the return of pi.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    return doubly_robust(log_probs, rewards, discounts, behaviour_log_probs=behaviour_log_probs)


@register_estimator(
    reference=(
        "Jiang & Li, ICML 2016 (arXiv 1511.03722); as an OPE gradient estimator Tang et al., "
        "NeurIPS 2021 (arXiv 2106.13125)"
    ),
    label="doubly robust",
    summary="IS + critic (= loaded_dice on-policy)",
    formula="v_t = V_t + rho_t (r_t + gamma v_{t+1} - V_t), estimate v_0",
    family="off-policy evaluation",
    color="#117733",
    marker="p",
    uses_critic=True,
    off_policy=True,
    unbiased_orders="all",
    unbiased_when="where mu covers pi; critic independent of theta",
)
def doubly_robust(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Doubly robust OPE: ``v_t = V_t + rho_t (r_t + gamma_t v_{t+1} - V_t)``, ``v_T = V_T``; returns ``v_0``.

    Unrolled: ``sum_t c_t rho_{0:t} r_t + sum_t c_t (rho_{0:t-1} - rho_{0:t}) V_t + c_T rho_{0:T-1} V_T``
    with ``V_t = stop(values)`` (0 if None) and ``V_T = stop(bootstrap_value)`` (0 if None). The
    middle sum has zero mean at every derivative order for any critic that does not depend on
    theta, so every order is unbiased for ``E_pi[sum_{t<T} gamma^t r_t + gamma^T V_T]`` wherever
    mu covers pi (with the finite-horizon objective ``V_T = 0``). On-policy its derivatives of
    every order equal :func:`loaded_dice`'s (``lambda_ = 1``, ``gae_lambda = 1``: the surrogates
    differ by a theta-free constant); without a critic it is :func:`stepwise_is`.

    Returns: ``[B, ...]`` per-episode estimate of the return of pi.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    return importance_weighted_value(
        log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value
    )


@register_estimator(
    reference=(
        "Espeholt et al., ICML 2018 (IMPALA, arXiv 1802.01561); as an OPE gradient estimator "
        "Tang et al., NeurIPS 2021"
    ),
    label="V-trace",
    summary="truncated importance ratios: biased where the bars bind, lower variance",
    formula="v_t = V_t + min(rho_t, rho_bar) delta_t + gamma min(rho_t, c_bar) (v_{t+1} - V_{t+1})",
    family="off-policy evaluation",
    color="#999933",
    marker="<",
    uses_critic=True,
    off_policy=True,
    unbiased_orders="all",
    unbiased_when=(
        "while no ratio exceeds rho_bar, c_bar (then it equals doubly_robust); biased where they bind"
    ),
)
def vtrace(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
) -> torch.Tensor:
    """V-trace: ``v_t = V_t + rho'_t delta_t + gamma_t c'_t (v_{t+1} - V_{t+1})``, ``v_T = V_T``.

    Returns the estimate ``v_0``. ``delta_t = r_t + gamma_t V_{t+1} - V_t``,
    ``rho'_t = min(rho_t, rho_bar)``, ``c'_t = min(rho_t, c_bar)``; unrolled
    ``v_0 = V_0 + sum_t c_t (prod_{k<t} c'_k) rho'_t delta_t``.
    ``V_t = stop(values)``, ``V_T = stop(bootstrap_value)`` (0 if None). A truncated ratio is a
    constant (no derivative); at a tie (``rho_t = rho_bar``, e.g. on-policy data with
    ``rho_bar = 1``) the untruncated branch's derivative is taken. While no ratio exceeds the
    bars (always with ``rho_bar = c_bar = math.inf``) this is :func:`doubly_robust`, unbiased at
    every order; where truncation binds the estimate targets a policy between mu and pi: biased,
    lower variance.

    Returns: ``[B, ...]`` per-episode estimate of the return of pi.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    rho_bar, c_bar = _check_bar("rho_bar", rho_bar), _check_bar("c_bar", c_bar)
    rho = torch.exp(log_ratios(log_probs, behaviour_log_probs))
    # clamp passes the derivative where rho <= bar (ties included) and cuts it above
    rho_t, c_t = torch.clamp(rho, max=rho_bar), torch.clamp(rho, max=c_bar)
    v = torch.zeros_like(rewards) if values is None else stop_gradient(values).to(rewards.dtype)
    boot = (
        torch.zeros_like(rewards[0])
        if bootstrap_value is None
        else stop_gradient(bootstrap_value).to(rewards.dtype)
    )
    next_v = torch.cat([v[1:], boot.unsqueeze(0)], dim=0)
    deltas = rewards + discounts * next_v - v
    traces = torch.cat([torch.ones_like(c_t[:1]), torch.cumprod(c_t[:-1], dim=0)], dim=0)
    return v[0] + (cumulative_discounts(discounts) * traces * rho_t * deltas).sum(0)


@register_estimator(
    reference=(
        "Kakade & Langford, ICML 2002; Tang et al., ICML 2020 (TayPO, arXiv 2003.06259); as an "
        "OPE gradient estimator Tang et al., NeurIPS 2021"
    ),
    label="TayPO-1",
    summary="first-order expansion around mu (= lvc on-policy)",
    formula="sum_t c_t (rho_t - 1) A_t",
    family="off-policy evaluation",
    color="#AA4499",
    marker=">",
    uses_critic=True,
    off_policy=True,
    unbiased_orders=1,
    unbiased_when="at pi = mu only (on-policy); biased off-policy",
)
def taylor1(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """First-order expansion: ``V_hat - V^mu = sum_t c_t (rho_t - 1) A_t`` (returns the sum).

    ``A_t`` are the advantages
    of the behaviour data (``G_t - V_t`` with ``gae_lambda = 1``; critic cut from the graph). The
    expansion is exact to first order in ``pi - mu``: at ``pi = mu`` (on-policy) the gradient is
    unbiased, and every derivative equals :func:`lvc`'s (the Hessian drops the cross-time terms:
    biased). Off-policy (``pi != mu``) it is biased at every order.

    Returns: ``[B, ...]`` per-episode surrogate (value: the estimated ``V^pi - V^mu``, 0 on-policy).
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    excess = torch.exp(log_ratios(log_probs, behaviour_log_probs)) - 1.0
    adv = advantages(rewards, discounts, values, bootstrap_value, gae_lambda)
    return (cumulative_discounts(discounts) * adv * excess).sum(0)


@register_estimator(
    reference=(
        "Tang, Valko & Munos, ICML 2020 (TayPO-2, arXiv 2003.06259); as an OPE gradient "
        "estimator Tang et al., NeurIPS 2021"
    ),
    label="TayPO-2",
    summary="second-order expansion around mu (= loaded_dice to order 2 on-policy)",
    formula="taylor1 + sum_{k<t} c_t (rho_k - 1)(rho_t - 1) A_t",
    family="off-policy evaluation",
    color="#44AA99",
    marker="d",
    uses_critic=True,
    off_policy=True,
    unbiased_orders=2,
    unbiased_when="at pi = mu only (on-policy); biased off-policy",
)
def taylor2(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """Second-order expansion (TayPO-2): :func:`taylor1` ``+ sum_{k<t} c_t (rho_k - 1)(rho_t - 1) A_t``.

    The exact expansion ``V^pi - V^mu = sum_t c_t E_mu[rho_{0:t-1} (rho_t - 1)
    Q^mu_t]`` with ``rho_{0:t-1} = prod_{k<t} (1 + (rho_k - 1))`` keeps the terms of order <= 2
    in ``rho - 1``; a term of order j has zero n-th derivative at ``pi = mu`` for n < j, so
    on-policy the gradient and the Hessian are unbiased (both equal :func:`loaded_dice`'s with
    ``lambda_ = 1``; third derivatives differ). Off-policy it is biased at every order
    (the terms of order >= 3 are missing), less so than :func:`taylor1`.

    Returns: ``[B, ...]`` per-episode surrogate (value: the estimated ``V^pi - V^mu``, 0 on-policy).
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    excess = torch.exp(log_ratios(log_probs, behaviour_log_probs)) - 1.0
    earlier = torch.cumsum(excess, dim=0) - excess  # sum_{k<t} (rho_k - 1)
    adv = advantages(rewards, discounts, values, bootstrap_value, gae_lambda)
    return (cumulative_discounts(discounts) * adv * excess * (1.0 + earlier)).sum(0)
