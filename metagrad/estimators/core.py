"""The building blocks every estimator shares: graph cuts, discounting, advantages, input checks.

Shapes are time-major: ``[T, B, ...]`` for per-step tensors, ``[B, ...]`` for per-episode ones.
Every cut of the graph in estimator code goes through :func:`stop_gradient` (or
:func:`magic_box`, which is built on it).
"""

from __future__ import annotations

import torch

from metagrad.validation import check_finite_tensor

__all__ = [
    "advantages",
    "check_trajectory_inputs",
    "cumulative_discounts",
    "discounted_returns",
    "importance_weighted_value",
    "log_ratios",
    "magic_box",
    "stop_gradient",
]


def stop_gradient(x: torch.Tensor) -> torch.Tensor:
    """``stop(x)``: same value, no derivative (the only sanctioned graph cut in estimator code)."""
    return x.detach()


def magic_box(x: torch.Tensor) -> torch.Tensor:
    """DiCE magic box ``exp(x - stop(x))`` (Foerster et al. 2018).

    Value 1; derivative ``magic_box(x) * dx``.
    """
    return torch.exp(x - stop_gradient(x))


def cumulative_discounts(discounts: torch.Tensor) -> torch.Tensor:
    """``c_t = prod_{k<t} discounts_k`` (``gamma^t`` for constant gamma), shape ``[T, B, ...]``."""
    ones = torch.ones_like(discounts[:1])
    return torch.cat([ones, torch.cumprod(discounts[:-1], dim=0)], dim=0)


def discounted_returns(
    rewards: torch.Tensor, discounts: torch.Tensor, bootstrap_value: torch.Tensor | None = None
) -> torch.Tensor:
    """Rewards-to-go ``G_t = r_t + discounts_t G_{t+1}``, ``G_T = bootstrap_value`` (0 if None).

    Args: rewards, discounts ``[T, B, ...]``; bootstrap_value ``[B, ...]``. Returns ``[T, B, ...]``.
    """
    g = torch.zeros_like(rewards[0]) if bootstrap_value is None else bootstrap_value.to(rewards.dtype)
    weights = cumulative_discounts(discounts.to(rewards.dtype))
    tail = weights[-1] * discounts[-1]  # c_T
    floor = 1e-100 if rewards.dtype == torch.float64 else 1e-20
    if rewards.shape[0] > 1 and bool((tail.detach().abs() > floor).all()):
        # No termination and no underflow: G_t = (sum_{k>=t} c_k r_k + c_T G_T) / c_t with
        # suffix sums (one vectorised pass instead of a Python loop over t).
        weighted = (weights * rewards).flip(0).cumsum(0).flip(0)
        return (weighted + tail * g) / weights
    out = []
    for t in range(rewards.shape[0] - 1, -1, -1):
        g = rewards[t] + discounts[t] * g
        out.append(g)
    return torch.stack(out[::-1], dim=0)


def advantages(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """GAE advantages ``A_t = delta_t + discounts_t * gae_lambda * A_{t+1}`` (Schulman et al. 2016).

    ``delta_t = r_t + discounts_t V(s_{t+1}) - V(s_t)`` with ``V(s_T) = bootstrap_value``. With
    ``gae_lambda = 1`` this is ``G_t - V(s_t)`` (unbiased for any critic); with no critic it is
    ``G_t``. Critic inputs are cut from the graph; rewards keep theirs.

    Args: rewards, discounts, values ``[T, B, ...]``; bootstrap_value ``[B, ...]``.
    Returns: ``[T, B, ...]``.
    """
    if values is None:
        return discounted_returns(rewards, discounts, bootstrap_value)
    values = stop_gradient(values).to(rewards.dtype)
    boot = torch.zeros_like(values[0]) if bootstrap_value is None else stop_gradient(bootstrap_value)
    next_values = torch.cat([values[1:], boot.to(values.dtype).unsqueeze(0)], dim=0)
    deltas = rewards + discounts * next_values - values
    if gae_lambda == 1.0:
        return discounted_returns(deltas, discounts)
    return discounted_returns(deltas, discounts * gae_lambda)


def check_trajectory_inputs(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> None:
    """Raise ``ValueError`` naming the argument when shapes disagree or entries are NaN/inf."""
    named = {"log_probs": log_probs, "rewards": rewards, "discounts": discounts}
    if behaviour_log_probs is not None:
        named["behaviour_log_probs"] = behaviour_log_probs
    if values is not None:
        named["values"] = values
    for name, x in named.items():
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor [T, B, ...], got {type(x).__name__}")
        if x.ndim < 2:
            raise ValueError(f"{name}: expected a time-major tensor [T, B, ...], got shape {list(x.shape)}")
        if x.shape != log_probs.shape:
            raise ValueError(f"{name}: shape {list(x.shape)} differs from log_probs {list(log_probs.shape)}")
        check_finite_tensor(name, x)
    if bootstrap_value is not None:
        if not isinstance(bootstrap_value, torch.Tensor) or bootstrap_value.shape != log_probs.shape[1:]:
            got = (
                list(bootstrap_value.shape) if isinstance(bootstrap_value, torch.Tensor) else bootstrap_value
            )
            raise ValueError(
                f"bootstrap_value: expected shape [B, ...] = {list(log_probs.shape[1:])}, got {got}"
            )
        check_finite_tensor("bootstrap_value", bootstrap_value)


# --------------------------------------------------------------------------------------------


def log_ratios(log_probs: torch.Tensor, behaviour_log_probs: torch.Tensor | None) -> torch.Tensor:
    """Per-step ``log rho_t = log pi_t - stop(log mu_t)``, ``[T, B, ...]`` (``mu = stop(pi)`` if None)."""
    behaviour = log_probs if behaviour_log_probs is None else behaviour_log_probs
    return log_probs - stop_gradient(behaviour)


def importance_weighted_value(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """The doubly robust value ``v_0`` of per-step ratios against ``behaviour_log_probs``, ``[B, ...]``.

    ``sum_t c_t rho_{0:t} r_t + sum_t c_t (rho_{0:t-1} - rho_{0:t}) V_t + c_T rho_{0:T-1} V_T``
    with ``V_t = stop(values)`` and ``V_T = stop(bootstrap_value)`` (each term dropped when None);
    ``rho_{0:t} = exp(sum_{k<=t} log pi_k - log mu_k)`` (``mu = stop(pi)`` when no behaviour
    log-probs are given). Inputs ``[T, B, ...]``, unchecked (callers check them).
    """
    log_rho = log_ratios(log_probs, behaviour_log_probs)
    log_ratio = torch.cumsum(log_rho, dim=0)
    rho = torch.exp(log_ratio)
    weights = cumulative_discounts(discounts)
    surrogate = (weights * rho * rewards).sum(0)
    if values is not None:
        rho_prev = torch.exp(log_ratio - log_rho)
        surrogate = surrogate + (weights * (rho_prev - rho) * stop_gradient(values).to(rho.dtype)).sum(0)
    if bootstrap_value is not None:
        tail = weights[-1] * discounts[-1]  # c_T
        surrogate = surrogate + tail * rho[-1] * stop_gradient(bootstrap_value).to(rho.dtype)
    return surrogate
