"""Exact values and gradients of iterated two-player games with memory-one policies (IPD, IMP).

Memory-one policies have 5 logits each (first move, then the previous joint outcome CC, CD, DC,
DD from the agent's own side; ``sigmoid`` = probability to cooperate; see
:mod:`metagrad.envs.ipd`). The joint outcome is a 4-state Markov chain with start distribution
``q0`` and transitions ``M``; agent i's value is ``q0 (I - gamma M)^-1 r_i`` (infinite horizon) or
``sum_{t<H} gamma^t q0 M^t r_i`` (Foerster et al., AAMAS 2018).
"""

from __future__ import annotations

import torch

from metagrad.envs.ipd import (
    MatrixGame,
    check_gamma,
    check_memory_one_logits,
    get_game,
    joint_outcome_probs,
)
from metagrad.exact.common import check_steps, float64_leaf

__all__ = ["ipd_model", "ipd_state_values", "ipd_values", "lola_gradient", "naive_gradient"]


def _check_horizon(horizon: int | None) -> None:
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1):
        raise ValueError(f"horizon: expected None (infinite) or an integer >= 1, got {horizon!r}")


def ipd_model(
    theta1: torch.Tensor, theta2: torch.Tensor, game: str | MatrixGame = "ipd"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The joint-outcome Markov chain of two memory-one policies.

    Args:
        theta1, theta2: ``[*G, 5]`` logits (broadcast), each from its own side.
        game: ``"ipd"``, ``"imp"`` or a :class:`~metagrad.envs.ipd.MatrixGame`.
    Returns:
        ``(Q [*G, 5, 4], payoffs [2, 4])``: ``Q[s, o]`` is the probability of joint outcome ``o``
        (CC, CD, DC, DD, agent 1's action first) from joint state ``s`` (0 = start, ``1 + o'``
        after outcome ``o'``, agent 1's side); ``q0 = Q[0]``, ``M = Q[1:]``. Row ``i`` of
        ``payoffs`` is agent ``i + 1``'s payoff per outcome.
    """
    check_memory_one_logits(theta1, "theta1")
    check_memory_one_logits(theta2, "theta2")
    Q = joint_outcome_probs(theta1, theta2)
    return Q, get_game(game).payoffs(Q.dtype, theta1.device)


def ipd_values(
    theta1: torch.Tensor,
    theta2: torch.Tensor,
    gamma: float,
    horizon: int | None = None,
    game: str | MatrixGame = "ipd",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact discounted values ``(V1, V2)`` of two memory-one policies (Foerster et al. 2018).

    ``V_i = q0 (I - gamma M)^-1 r_i`` for ``horizon=None``; for a finite horizon
    ``V_i = sum_{t<H} gamma^t q0 M^t r_i = q0 (I - A)^-1 (I - A^H) r_i`` with ``A = gamma M``
    (exactly what a length-H rollout of :func:`metagrad.envs.ipd.ipd_rollout` estimates). Differentiable
    to any order in both logits.

    Args:
        theta1, theta2: ``[*G, 5]`` logits (broadcast).
        gamma: discount in ``[0, 1)``.
        horizon: ``None`` (infinite) or ``H >= 1``.
        game: ``"ipd"``, ``"imp"`` or a :class:`~metagrad.envs.ipd.MatrixGame`.
    Returns:
        ``(V1 [*G], V2 [*G])`` unnormalised discounted sums (see
        :func:`metagrad.envs.ipd.per_step_average`).
    """
    gamma = check_gamma(gamma)
    _check_horizon(horizon)
    Q, payoffs = ipd_model(theta1, theta2, game)
    q0, M = Q[..., 0, :], Q[..., 1:, :]
    eye = torch.eye(4, dtype=Q.dtype, device=Q.device)
    A = gamma * M
    rhs = payoffs.T.expand(*M.shape[:-2], 4, 2)  # [*G, 4, 2]
    if horizon is not None:
        rhs = (eye - torch.linalg.matrix_power(A, horizon)) @ rhs
    values = (q0.unsqueeze(-2) @ torch.linalg.solve(eye - A, rhs)).squeeze(-2)  # [*G, 2]
    return values[..., 0], values[..., 1]


def ipd_state_values(
    theta1: torch.Tensor,
    theta2: torch.Tensor,
    gamma: float,
    horizon: int | None = None,
    game: str | MatrixGame = "ipd",
) -> torch.Tensor:
    """Exact state values of both agents, indexed by the joint state from agent 1's side.

    Returns:
        ``[2, *G, H + 1, 5]`` for a finite horizon (``[i, ..., t, s]``: agent ``i + 1``'s expected
        discounted payoff from step ``t`` to ``H - 1`` given state ``s`` at step ``t``; row ``H``
        is 0), or ``[2, *G, 5]`` for ``horizon=None``. ``[i, ..., 0, 0]`` equals
        :func:`ipd_values`. Used as critics (never differentiated by the estimators).
    """
    gamma = check_gamma(gamma)
    _check_horizon(horizon)
    Q, payoffs = ipd_model(theta1, theta2, game)
    expected = Q @ payoffs.T  # [*G, 5, 2]: expected immediate payoff per state
    if horizon is None:
        M = Q[..., 1:, :]
        eye = torch.eye(4, dtype=Q.dtype, device=Q.device)
        cont = torch.linalg.solve(eye - gamma * M, expected[..., 1:, :])  # V(1..4), [*G, 4, 2]
        values = expected + gamma * Q @ cont  # [*G, 5, 2]
        return values.movedim(-1, 0)
    out = [torch.zeros_like(expected)]
    for _ in range(horizon):
        out.append(expected + gamma * Q @ out[-1][..., 1:, :])
    return torch.stack(out[::-1], dim=-3).movedim(-1, 0)  # [2, *G, H + 1, 5]


def _check_agent(agent: int) -> int:
    if agent not in (1, 2) or isinstance(agent, bool):
        raise ValueError(f"agent: expected 1 or 2, got {agent!r}")
    return agent


def naive_gradient(
    theta1: torch.Tensor,
    theta2: torch.Tensor,
    gamma: float,
    horizon: int | None = None,
    *,
    game: str | MatrixGame = "ipd",
    agent: int = 1,
) -> torch.Tensor:
    """``grad_{theta_i} V_i(theta1, theta2)`` holding the other agent fixed (a naive learner).

    Returns: ``[*G, 5]`` float64 (``agent`` selects i).
    """
    return lola_gradient(theta1, theta2, gamma, 0.0, 0, horizon, game=game, agent=agent)


def lola_gradient(
    theta1: torch.Tensor,
    theta2: torch.Tensor,
    gamma: float,
    lookahead_lr: float,
    lookahead_steps: int = 1,
    horizon: int | None = None,
    *,
    game: str | MatrixGame = "ipd",
    agent: int = 1,
) -> torch.Tensor:
    """Exact LOLA gradient: the total derivative of ``V1(theta1, theta2_n)`` w.r.t. ``theta1``.

    ``theta2_0 = theta2``, ``theta2_{k+1} = theta2_k + lookahead_lr grad_{theta2} V2(theta1, theta2_k)``
    for ``k < lookahead_steps`` (exact naive ascent of the opponent on its own value); ``theta2_n``
    depends on ``theta1`` through those steps and the derivative follows that dependence
    (Foerster et al., AAMAS 2018, LOLA; the target LOLA-DiCE estimates). With ``agent=2`` the roles
    swap: ``d/d theta2 V2(theta1_n, theta2)`` with agent 1 looking ahead. ``lookahead_steps=0``
    (or ``lookahead_lr=0``) gives the naive gradient.

    Args:
        theta1, theta2: ``[*G, 5]`` logits (broadcast; each pair independent).
        gamma: discount in ``[0, 1)``.
        lookahead_lr: the opponent's step size.
        lookahead_steps: ``n >= 0``.
        horizon: ``None`` (infinite) or the finite horizon of the values.
        game: ``"ipd"``, ``"imp"`` or a :class:`~metagrad.envs.ipd.MatrixGame`.
        agent: whose gradient, 1 or 2.
    Returns:
        ``[*G, 5]`` float64 gradient of the shaping agent's value w.r.t. its own logits.
    """
    check_memory_one_logits(theta1, "theta1")
    check_memory_one_logits(theta2, "theta2")
    _check_agent(agent)
    check_steps(lookahead_steps, lookahead_lr, ("lookahead_steps", "lookahead_lr"))
    batch_shape = torch.broadcast_shapes(theta1.shape[:-1], theta2.shape[:-1])
    own_in, other_in = (theta1, theta2) if agent == 1 else (theta2, theta1)

    def value(own: torch.Tensor, other: torch.Tensor, who: int) -> torch.Tensor:
        pair = (own, other) if agent == 1 else (other, own)
        return ipd_values(*pair, gamma, horizon, game)[who - 1].sum()

    with torch.enable_grad():
        own = float64_leaf(own_in.expand(*batch_shape, 5))
        other = float64_leaf(other_in.expand(*batch_shape, 5))
        opponent = 3 - agent
        for _ in range(lookahead_steps):
            (g,) = torch.autograd.grad(value(own, other, opponent), other, create_graph=True)
            other = other + lookahead_lr * g
        (grad,) = torch.autograd.grad(value(own, other, agent), own)
    return grad.detach()
