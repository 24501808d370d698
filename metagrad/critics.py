"""Critics of the advantage-based estimators: the spec, tabular Monte Carlo fits, and reading
per-policy value tables along trajectories.

A critic is never differentiated: it only reduces variance (a baseline) or bootstraps truncated
episodes. The samplers of :mod:`metagrad.decomposed`, :mod:`metagrad.lola` and
:mod:`metagrad.derivatives` build their critics from these pieces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from metagrad.estimators import discounted_returns, stop_gradient
from metagrad.exact import Objective
from metagrad.validation import check_choice, check_int, check_real

__all__ = [
    "CRITIC_KINDS",
    "CriticKind",
    "CriticSpec",
    "critic_index",
    "critic_values",
    "monte_carlo_critic",
    "monte_carlo_values",
]

CriticKind = Literal["noisy_exact", "zero", "learned"]
CRITIC_KINDS: tuple[CriticKind, ...] = get_args(CriticKind)


@dataclass(frozen=True)
class CriticSpec:
    """The critic of the advantage-based estimators (never differentiated).

    ``kind``:
      * ``"noisy_exact"``: ``V_exact + noise * N(0, 1) * ||V_exact|| / |S|``, fresh per estimate
        (the papers' protocol; for the finite objective ``V_t`` is time-dependent and the norm is
        taken per time step, so the bootstrap ``V_H = 0`` stays exact);
      * ``"zero"``: no baseline (advantages are rewards-to-go);
      * ``"learned"``: a tabular Monte Carlo fit from ``learned_episodes`` independent episodes.
    """

    kind: CriticKind = "noisy_exact"
    noise: float = 0.0
    learned_episodes: int = 64

    def __post_init__(self) -> None:
        check_choice("critic.kind", self.kind, CRITIC_KINDS)
        check_real("critic.noise", self.noise, minimum=0.0)
        check_int("critic.learned_episodes", self.learned_episodes, 1)


def monte_carlo_values(
    returns: torch.Tensor, states: torch.Tensor, num_states: int, *, time_dependent: bool = True
) -> torch.Tensor:
    """Tabular Monte Carlo value fit: the mean of ``returns`` per (step,) state, 0 where unvisited.

    Args:
        returns: ``[T, B, *G]`` returns-to-go (no graph); states: long ``[T, B, *G]``.
    Returns:
        ``[*G, T + 1, S]`` per step (row ``T``, the bootstrap, stays 0) with ``time_dependent``,
        else ``[*G, S]`` (the inverse of :func:`critic_values`).
    """
    T, B = states.shape[:2]
    batch_shape = states.shape[2:]
    g = int(math.prod(batch_shape))
    flat_states = states.reshape(T, B, g)
    base = torch.arange(g, device=states.device)
    if time_dependent:
        time = torch.arange(T, device=states.device).reshape(T, 1, 1)
        index = (base * ((T + 1) * num_states) + time * num_states + flat_states).reshape(-1)
        shape = (*batch_shape, T + 1, num_states)
    else:
        index = (base * num_states + flat_states).reshape(-1)
        shape = (*batch_shape, num_states)
    flat = returns.reshape(-1)
    size = int(math.prod(shape))
    total = torch.zeros(size, dtype=flat.dtype, device=flat.device).index_add_(0, index, flat)
    count = torch.zeros(size, dtype=flat.dtype, device=flat.device).index_add_(
        0, index, torch.ones_like(flat)
    )
    return (total / count.clamp(min=1)).reshape(shape)


def monte_carlo_critic(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    states: torch.Tensor,
    num_states: int,
    *,
    time_dependent: bool = True,
) -> torch.Tensor:
    """A learned tabular critic: :func:`monte_carlo_values` of the discounted returns-to-go of
    episodes ``rewards, discounts, states [T, B, *G]`` (no graph). Fit it on episodes independent
    of the ones it will baseline."""
    returns = discounted_returns(stop_gradient(rewards), discounts)  # [T, B, *G]
    return monte_carlo_values(returns, states, num_states, time_dependent=time_dependent)


def critic_values(
    table: torch.Tensor, states: torch.Tensor, final_states: torch.Tensor, objective: Objective
) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic values along trajectories from per-policy value tables.

    Args:
        table: ``[*G, H + 1, S]`` (finite, time-dependent) or ``[*G, S]`` (infinite), one table per
            policy of the batch ``G``.
        states: long ``[T, B, *G]``; final_states: long ``[B, *G]`` (``s_T``).
    Returns:
        ``(values [T, B, *G], bootstrap_value [B, *G])``.
    """
    index, boot_index = critic_index(table.shape, states, final_states, objective)
    flat = table.reshape(-1)
    return flat[index], flat[boot_index]


def critic_index(
    table_shape: tuple[int, ...], states: torch.Tensor, final_states: torch.Tensor, objective: Objective
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions in a flattened :func:`critic_values` table of the entries read along trajectories:
    ``(index [T, B, *G], bootstrap_index [B, *G])`` (row ``index // S`` of the table viewed as
    ``[-1, S]`` is the policy and, for the finite objective, the time step)."""
    T, B = states.shape[:2]
    batch_shape = states.shape[2:]
    flat_states = states.reshape(T, B, -1)
    flat_finals = final_states.reshape(B, -1)
    S = table_shape[-1]
    steps = table_shape[-2] if objective == "finite" else 1
    base = torch.arange(flat_states.shape[-1], device=states.device) * (steps * S)
    if objective == "finite":
        time = torch.arange(T, device=states.device).reshape(T, 1, 1) * S
        index, boot = base + time + flat_states, base + T * S + flat_finals
    else:
        index, boot = base + flat_states, base + flat_finals
    return index.reshape(T, B, *batch_shape), boot.reshape(B, *batch_shape)
