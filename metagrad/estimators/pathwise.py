"""Pathwise (reparameterised) estimators: differentiate the sampled return itself.

Where the simulator is known and differentiable, an episode is a deterministic function of the
policy parameters and of noise whose law does not depend on them (for a linear-Gaussian policy
``u_t = K x_t + k + exp(log_std) eps_t`` in linear dynamics ``x_{t+1} = A x_t + B u_t + w_t``,
the noise is ``(x_0, eps_t, w_t)``). Then ``J(theta) = E_noise[G(theta; noise)]`` and, where
derivatives and expectation may be exchanged, ``d^n J = E[d^n G]``: the derivatives of the
sampled return are the estimates. The trajectory engines supply rewards that carry this graph
(:func:`metagrad.envs.lqr.rollout` with ``reparameterize=True``).

Shared signature and shapes: see :mod:`metagrad.estimators`.
"""

from __future__ import annotations

import torch

from metagrad.estimators.core import check_trajectory_inputs, cumulative_discounts
from metagrad.estimators.facts import register_estimator

__all__ = ["pathwise"]


@register_estimator(
    reference=(
        "Williams 1988 / Kingma & Welling 2014 (reparameterisation); backpropagation through known "
        "dynamics as in PILCO (Deisenroth & Rasmussen 2011) and SVG(infinity) (Heess et al. 2015)"
    ),
    label="pathwise",
    summary="differentiates the sampled return through reparameterised actions and known dynamics",
    formula="sum_t c_t r_t(theta; noise)",
    family="pathwise",
    color="#332288",
    marker="8",
    unbiased_orders="all",
    unbiased_when=(
        "rewards differentiable through the reparameterised actions and known smooth dynamics, "
        "noise law free of theta, derivatives integrable (e.g. linear-quadratic-Gaussian)"
    ),
)
def pathwise(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pathwise surrogate ``sum_t c_t r_t``, the sampled discounted return itself.

    ``rewards`` must carry the graph of the policy parameters through the reparameterised
    actions and the dynamics; ``log_probs`` are only checked (the estimator never uses the
    score function), and ``values`` / ``bootstrap_value`` are ignored: a critic cut from the
    graph has no derivative, so in the shared signature (where critics are never differentiated)
    it could change no estimate. Bootstrapping with a critic's state-gradient (SVG(1)-style)
    would need a differentiable critic, and would be biased unless the critic were exact.

    Unbiased at every order for the linear-quadratic-Gaussian tasks of
    :mod:`metagrad.envs.lqr`: the return is a polynomial in the parameters ``K``, ``k``,
    ``exp(log_std)`` and the Gaussian noise, so every derivative has finite moments and
    commutes with the expectation.

    Raises ``ValueError`` when ``log_probs`` carry a graph but ``rewards`` do not (the derivative
    would silently be zero: the episodes were not sampled with the reparameterised graph).

    Returns: ``[B, ...]`` per-episode surrogate (value: the discounted return).
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    if log_probs.requires_grad and not rewards.requires_grad:
        raise ValueError(
            "rewards: carry no graph, so the pathwise derivatives would be zero; sample the episodes "
            "with the reparameterised graph (e.g. metagrad.envs.lqr.rollout(..., reparameterize=True))"
        )
    weights = cumulative_discounts(discounts.to(rewards.dtype))
    return (weights * rewards).sum(0)
