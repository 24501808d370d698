"""Score-function estimators: surrogates whose derivatives estimate the derivatives of the return.

DiCE and its variants (every order unbiased), LVC and the plain policy-gradient surrogate (right
gradient, biased Hessian), and their importance-weighted forms. Shared signature and shapes: see
:mod:`metagrad.estimators`.
"""

from __future__ import annotations

import torch

from metagrad.estimators.core import (
    advantages,
    check_trajectory_inputs,
    cumulative_discounts,
    importance_weighted_value,
    log_ratios,
    magic_box,
    stop_gradient,
)
from metagrad.estimators.facts import register_estimator
from metagrad.validation import check_real

__all__ = ["dice", "dice_baseline", "loaded_dice", "lvc", "off_policy_dice", "per_step_is", "pg"]


@register_estimator(
    reference="Foerster et al., ICML 2018 (arXiv 1802.05098)",
    label="DiCE",
    summary="magic box over cumulative log-probs, no baseline",
    formula="sum_t c_t box(W_t) r_t, W_t = sum_{k<=t} log pi_k",
    color="#0072B2",
    marker="o",
    unbiased_orders="all",
)
def dice(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """DiCE: ``sum_t c_t box(W_t) r_t`` with ``W_t = sum_{k<=t} log pi_k``.

    Unbiased for every derivative order of the finite-horizon objective; high variance. Uses no
    critic (``values`` and ``bootstrap_value`` are ignored, as in the papers' protocol).

    Args: see the module docstring (shapes ``[T, B, ...]``).
    Returns: ``[B, ...]``; its mean over episodes has the n-th derivative
    ``E[d^n sum_t gamma^t r_t]`` in expectation, for every n.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    weights = cumulative_discounts(discounts)
    return (weights * magic_box(torch.cumsum(log_probs, dim=0)) * rewards).sum(0)


@register_estimator(
    reference="Mao et al., ICML 2019 (baseline for any-order estimators); LOLA-DiCE",
    label="DiCE + baseline",
    summary="DiCE + (1 - box(log pi_t)) b(s_t) baseline term",
    formula="dice + sum_t c_t (1 - box(log pi_t)) b(s_t)",
    color="#E69F00",
    marker="P",
    uses_critic=True,
    unbiased_orders="all",
)
def dice_baseline(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """DiCE with a baseline: ``dice + sum_t c_t (1 - box(log pi_t)) b(s_t)``.

    The baseline term has zero mean at every derivative order (given the history, the expected
    derivatives of ``box(log pi_t)`` vanish), so all orders stay unbiased; it reduces
    first-order variance. ``values`` supply ``b``; without them this is :func:`dice`.

    Returns: ``[B, ...]`` per-episode surrogate.
    """
    surrogate = dice(
        log_probs,
        rewards,
        discounts,
        behaviour_log_probs=behaviour_log_probs,
        values=values,
        bootstrap_value=bootstrap_value,
    )
    if values is None:
        return surrogate
    weights = cumulative_discounts(discounts)
    baseline = stop_gradient(values).to(log_probs.dtype)
    return surrogate + (weights * (1.0 - magic_box(log_probs)) * baseline).sum(0)


@register_estimator(
    reference="Farquhar et al., NeurIPS 2019 (Loaded DiCE)",
    label="Loaded DiCE",
    summary="critic-weighted DiCE with lambda-discounted dependencies",
    formula="sum_t c_t (box(w_t) - box(w_t - log pi_t)) A_t",
    color="#D55E00",
    marker="s",
    uses_critic=True,
    unbiased_orders="all",
    unbiased_when="lambda_ = 1, gae_lambda = 1, critic independent of theta",
)
def loaded_dice(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    lambda_: float = 1.0,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """Loaded DiCE: ``sum_t c_t (box(w_t) - box(w_t - log pi_t)) A_t``.

    ``w_t = sum_{k<=t} lambda^(t-k) log pi_k`` discounts how far back higher-order dependencies
    reach (``lambda_ = 1``: all of them, unbiased at every order for any critic that does not
    depend on theta, with ``gae_lambda = 1``); ``A_t`` are GAE advantages of the critic
    (``G_t`` with no critic, which makes the derivatives equal :func:`dice`'s).

    Returns: ``[B, ...]`` per-episode surrogate (value 0; its derivatives are the estimates).
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    check_real("lambda_", lambda_, minimum=0.0, maximum=1.0)
    if lambda_ == 1.0:
        deps = torch.cumsum(log_probs, dim=0)
    else:
        acc, steps = torch.zeros_like(log_probs[0]), []
        for t in range(log_probs.shape[0]):
            acc = lambda_ * acc + log_probs[t]
            steps.append(acc)
        deps = torch.stack(steps, dim=0)
    adv = advantages(rewards, discounts, values, bootstrap_value, gae_lambda)
    weights = cumulative_discounts(discounts)
    return (weights * (magic_box(deps) - magic_box(deps - log_probs)) * adv).sum(0)


@register_estimator(
    reference="Rothfuss et al., ICLR 2019, ProMP (arXiv 1810.06784)",
    label="LVC",
    summary="A_t (pi/stop(pi) - 1): low-variance curvature, drops cross-time Hessian terms",
    formula="sum_t c_t A_t (pi_t / stop(pi_t) - 1)",
    color="#009E73",
    marker="D",
    uses_critic=True,
    unbiased_orders=1,
)
def lvc(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """LVC: ``sum_t c_t A_t (pi_t / stop(pi_t) - 1)``.

    Right first derivative; its Hessian keeps ``A_t (grad log pi_t grad log pi_t^T + hess log pi_t)``
    but drops the cross-time terms: biased, low variance (the paper's low-bias Hessian fix).

    Returns: ``[B, ...]`` per-episode surrogate.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    adv = advantages(rewards, discounts, values, bootstrap_value, gae_lambda)
    weights = cumulative_discounts(discounts)
    return (weights * adv * (magic_box(log_probs) - 1.0)).sum(0)


@register_estimator(
    reference="Williams 1992; the surrogate of common MAML-RL code (Finn et al. 2017)",
    label="policy gradient",
    summary="A_t log pi_t differentiated twice: right gradient, biased Hessian",
    formula="sum_t c_t A_t log pi_t",
    color="#CC79A7",
    marker="^",
    uses_critic=True,
    unbiased_orders=1,
)
def pg(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """Plain policy-gradient surrogate ``sum_t c_t A_t log pi_t``.

    Right first derivative; differentiated twice its Hessian is ``sum_t c_t A_t hess log pi_t``,
    missing the score-function outer products: the biased Hessian of Liu et al. 2022.

    Returns: ``[B, ...]`` per-episode surrogate.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    adv = advantages(rewards, discounts, values, bootstrap_value, gae_lambda)
    weights = cumulative_discounts(discounts)
    return (weights * adv * log_probs).sum(0)


@register_estimator(
    reference="Liu et al., NeurIPS 2022 (arXiv 2112.15400)",
    label="off-policy DiCE",
    summary="importance-weighted DiCE against stored behaviour log-probs",
    formula="sum_t c_t rho_{0:t} r_t, rho_{0:t} = exp(W_t - W^mu_t)",
    color="#56B4E9",
    marker="X",
    uses_critic=True,
    off_policy=True,
    unbiased_orders="all",
    unbiased_when="where mu covers pi",
)
def off_policy_dice(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Off-policy DiCE: ``sum_t c_t rho_{0:t} r_t``, ``rho_{0:t} = exp(W_t - W^mu_t)``.

    ``W^mu_t`` sums the behaviour log-probs. Since ``E_mu[rho(theta) f] = E_pi_theta[f]`` as a
    function of theta, every derivative order is unbiased wherever mu covers pi; variance grows
    with the trajectory-level ratio. With ``values``, adds the baseline
    ``sum_t c_t (rho_{0:t-1} - rho_{0:t}) b(s_t)``, zero-mean at every order. When
    ``behaviour_log_probs`` is None the data are on-policy (``mu = stop(pi)``), i.e. DiCE.
    ``bootstrap_value`` is ignored (:func:`doubly_robust` is the same estimator with it).

    Returns: ``[B, ...]`` per-episode surrogate (value: the importance-weighted return).
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    return importance_weighted_value(log_probs, rewards, discounts, behaviour_log_probs, values)


@register_estimator(
    reference="per-decision importance sampling (Precup et al. 2000), as in off-policy actor-critics",
    label="per-step IS",
    summary="rho_t A_t with per-step ratios against stored behaviour log-probs (first order)",
    formula="sum_t c_t rho_t A_t",
    color="#000000",
    marker="*",
    uses_critic=True,
    off_policy=True,
    unbiased_orders=1,
    unbiased_when="at mu = pi",
)
def per_step_is(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """Per-decision importance-weighted policy gradient ``sum_t c_t rho_t A_t``.

    ``rho_t = exp(log pi_t - log mu_t)`` per step (Precup et al. 2000), not cumulative.

    The surrogate of off-policy actor-critics that reuse a slightly stale batch (the advantages
    come from the behaviour data; the state-distribution shift is ignored, so it is biased away
    from ``mu = pi``). At ``mu = pi`` its value is the mean advantage and its gradient is
    :func:`pg`'s. ``behaviour_log_probs`` default to ``stop(log_probs)`` (on-policy).

    Returns: ``[B, ...]`` per-episode surrogate.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    adv = advantages(rewards, discounts, values, bootstrap_value, gae_lambda)
    weights = cumulative_discounts(discounts)
    return (weights * torch.exp(log_ratios(log_probs, behaviour_log_probs)) * adv).sum(0)
