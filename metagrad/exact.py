"""Exact, autograd-differentiable objectives and meta-gradients (closed forms, float64).

These are the oracles every estimate in the suite is scored against. Every function is a
composition of differentiable torch operations, so derivatives of any order follow by autograd.

Conventions (Liu et al., NeurIPS 2022, arXiv 2112.15400; BACKGROUND.md section 1):

* ``objective="finite"``: ``J = E[sum_{t<H} gamma^t r_t]`` from ``init``, exactly what a length-H
  rollout estimates (the suite's default).
* ``objective="infinite"``: ``J = init . (I - gamma P_pi)^-1 r_pi``, the convention of the papers'
  code (which compares it with length-H samples: a ``gamma^H`` mismatch kept only in the
  paper-parity preset).
* Inner updates are gradient *ascent*: ``theta_{k+1} = theta_k + alpha grad J_in(theta_k)``.

Iterated games (:func:`ipd_values`, :func:`lola_gradient`): memory-one policies with 5 logits
each (first move, then the previous joint outcome CC, CD, DC, DD from the agent's own side;
``sigmoid`` = probability to cooperate; see :mod:`metagrad.envs.ipd`). The joint outcome is a 4-state
Markov chain with start distribution ``q0`` and transitions ``M``; agent i's value is
``q0 (I - gamma M)^-1 r_i`` (infinite horizon) or ``sum_{t<H} gamma^t q0 M^t r_i``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch

from metagrad.envs.ipd import STATE_SWAP, MatrixGame, check_gamma, check_memory_one_logits, get_game
from metagrad.envs.tabular import TabularTask, check_logits, expand_to_tasks
from metagrad.validation import check_finite_tensor, check_int, check_real

__all__ = [
    "OBJECTIVES",
    "Objective",
    "exact_inner_loop",
    "ipd_model",
    "ipd_state_values",
    "ipd_values",
    "lirpg_meta_gradient",
    "lola_gradient",
    "maml_meta_gradient",
    "naive_gradient",
    "policy_model",
    "post_adaptation_return",
    "tabular_return",
    "tabular_values",
]

Objective = Literal["finite", "infinite"]
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")


def _check_steps(
    inner_steps: int, inner_lr: float, names: tuple[str, str] = ("inner_steps", "inner_lr")
) -> None:
    check_int(names[0], inner_steps, 0)
    check_real(names[1], inner_lr)


def policy_model(
    task: TabularTask, logits: torch.Tensor, reward: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """State-to-state transitions and expected rewards of softmax(``logits``).

    Args:
        task: the MDP, or a batch of N tasks (the last policy-batch axis broadcasts against N).
        logits: ``[*G, S, A]``.
        reward: optional ``[*G', S, A]`` reward table replacing ``task.R`` (e.g. ``R + eta``).
    Returns:
        ``(P_pi [*G, S, S], r_pi [*G, S])`` in the dtype of ``logits``.
    """
    check_logits(task, logits)
    if reward is not None:
        check_finite_tensor("reward", reward)
    pi = torch.softmax(logits, -1)
    P = task.P.to(device=logits.device, dtype=logits.dtype)
    R = task.R.to(device=logits.device, dtype=logits.dtype) if reward is None else reward
    return torch.einsum("...sa,...sat->...st", pi, P), (pi * R).sum(-1)


def tabular_values(
    task: TabularTask,
    logits: torch.Tensor,
    objective: Objective = "finite",
    *,
    reward: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact state values of softmax(``logits``).

    ``"finite"``: the time-dependent values ``V_t(s) = E[sum_{t<=k<H} gamma^(k-t) r_k | s_t = s]``
    for ``t = 0..H`` (``V_H = 0``), shape ``[*G, H + 1, S]``, by backward recursion
    ``V_t = r_pi + gamma P_pi V_{t+1}``. ``"infinite"``: ``V = (I - gamma P_pi)^-1 r_pi``, shape
    ``[*G, S]`` (requires ``gamma < 1``).

    Args:
        task: the MDP; logits ``[*G, S, A]``; ``reward`` optionally replaces ``task.R``.
    """
    _check_objective(objective)
    P_pi, r_pi = policy_model(task, logits, reward)
    if objective == "infinite":
        if task.gamma >= 1.0:
            raise ValueError("gamma: the infinite-horizon objective needs gamma < 1")
        eye = torch.eye(task.num_states, dtype=logits.dtype, device=logits.device)
        return torch.linalg.solve(eye - task.gamma * P_pi, r_pi.unsqueeze(-1)).squeeze(-1)
    values = [torch.zeros_like(r_pi)]
    for _ in range(task.horizon):
        values.append(r_pi + task.gamma * (P_pi @ values[-1].unsqueeze(-1)).squeeze(-1))
    return torch.stack(values[::-1], dim=-2)


def tabular_return(
    task: TabularTask,
    logits: torch.Tensor,
    objective: Objective = "finite",
    *,
    reward: torch.Tensor | None = None,
) -> torch.Tensor:
    """Expected discounted return ``J(theta)`` of softmax(``logits``) from ``task.init``.

    ``"finite"``: ``E[sum_{t<H} gamma^t r_t]``; ``"infinite"``: ``init . (I - gamma P_pi)^-1 r_pi``.

    Args:
        task: the MDP.
        logits: ``[*G, S, A]`` (float64 for oracle use).
        objective: ``"finite"`` or ``"infinite"``.
        reward: optional ``[S, A]`` table replacing ``task.R`` (differentiable, e.g. ``R + eta``).
    Returns:
        ``[*G]`` returns, differentiable to any order w.r.t. ``logits`` and ``reward``.
    """
    values = tabular_values(task, logits, objective, reward=reward)
    v0 = values[..., 0, :] if objective == "finite" else values
    return (v0 * task.init.to(device=v0.device, dtype=v0.dtype)).sum(-1)


def exact_inner_loop(
    objective_fn: Callable[[torch.Tensor], torch.Tensor],
    theta0: torch.Tensor,
    inner_steps: int,
    inner_lr: float,
) -> torch.Tensor:
    """``theta_K`` after K exact ascent steps, keeping the graph (so d theta_K / d theta_0 exists).

    ``theta_{k+1} = theta_k + inner_lr * grad objective_fn(theta_k)``, each gradient taken with
    ``create_graph=True``. ``objective_fn`` maps ``[*G, S, A]`` to ``[*G]``; batch entries are
    independent, so the gradient of the sum is the per-entry gradient.
    """
    theta = theta0
    for _ in range(inner_steps):
        (grad,) = torch.autograd.grad(objective_fn(theta).sum(), theta, create_graph=True)
        theta = theta + inner_lr * grad
    return theta


def _float64_leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float64).clone().requires_grad_(True)


def post_adaptation_return(
    task: TabularTask,
    logits: torch.Tensor,
    inner_steps: int,
    inner_lr: float,
    objective: Objective = "finite",
    *,
    eta: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact return ``J_R(theta_K)`` after K exact inner ascent steps from ``logits``, per task.

    ``theta_0 = logits`` (a shared ``[S, A]`` meta-policy is copied into every task of a batch);
    the inner loop ascends the return under ``R + eta`` (``R`` when ``eta`` is None); the outer
    return is under ``R``. The graph to ``logits`` and ``eta`` is kept when they require grad, so
    ``d mean(post_adaptation_return) / d logits`` is the exact MAML meta-gradient of the task
    batch (and ``d / d eta`` the LIRPG one).

    Args:
        task: one MDP or a batch of N.
        logits: ``[*G, S, A]`` initial logits.
        inner_steps: ``K >= 0``; inner_lr: ``alpha``; objective: ``"finite"`` or ``"infinite"``.
        eta: optional ``[*G', S, A]`` intrinsic reward added in the inner loop.
    Returns:
        ``[*G, N]`` for a batch of tasks (``[*G]`` for one task).
    """
    check_logits(task, logits)
    if eta is not None:
        check_logits(task, eta, "eta")
    _check_steps(inner_steps, inner_lr)
    _check_objective(objective)
    with torch.enable_grad():
        theta0 = expand_to_tasks(task, logits)
        if not theta0.requires_grad:  # a constant start: in the graph only for the inner gradients
            theta0 = theta0.detach().requires_grad_(True)
        inner_reward = None if eta is None else task.R.to(eta) + eta

        def inner_fn(theta: torch.Tensor) -> torch.Tensor:
            return tabular_return(task, theta, objective, reward=inner_reward)

        theta_k = exact_inner_loop(inner_fn, theta0, inner_steps, inner_lr)
        return tabular_return(task, theta_k, objective)


def maml_meta_gradient(
    task: TabularTask,
    logits: torch.Tensor,
    inner_steps: int,
    inner_lr: float,
    objective: Objective = "finite",
) -> torch.Tensor:
    """Exact MAML meta-gradient ``d J(theta_K) / d theta_0`` in float64.

    ``theta_0 = logits``; ``theta_{k+1} = theta_k + alpha grad J(theta_k)`` exactly, so the result
    equals ``prod_{k=K-1..0} (I + alpha H(theta_k)) grad J(theta_K)`` (BACKGROUND.md section 1).

    Args:
        task: the MDP, or a batch of N tasks (one meta-gradient per task).
        logits: ``[*G, S, A]`` initial logits ``theta_0`` (a batch gives one meta-gradient each).
        inner_steps: ``K >= 0`` (``K = 0`` gives ``grad J(theta_0)``).
        inner_lr: ``alpha``.
        objective: ``"finite"`` or ``"infinite"``.
    Returns:
        ``[*G, S, A]`` float64 meta-gradient (detached); ``[*G, N, S, A]`` for a task batch.
    """
    check_logits(task, logits)
    with torch.enable_grad():
        theta0 = _float64_leaf(expand_to_tasks(task, logits))
        outer = post_adaptation_return(task, theta0, inner_steps, inner_lr, objective).sum()
        (meta_grad,) = torch.autograd.grad(outer, theta0)
    return meta_grad.detach()


def lirpg_meta_gradient(
    task: TabularTask,
    logits: torch.Tensor,
    eta: torch.Tensor,
    inner_steps: int,
    inner_lr: float,
    objective: Objective = "finite",
) -> torch.Tensor:
    """Exact LIRPG meta-gradient w.r.t. an intrinsic-reward table ``eta`` (float64).

    Inner loop ascends the return under ``R + eta``; the outer objective is the return under
    ``R`` at ``theta_K``: returns ``d J_R(theta_K(eta)) / d eta`` (Zheng et al. 2018, as a GMRL
    instance in Liu et al. 2022).

    Args:
        task: the MDP (or a batch of N: one meta-gradient per task).
        logits: ``[S, A]`` initial policy logits (fixed, not meta-learned).
        eta: ``[S, A]`` intrinsic reward (the meta-parameter).
        inner_steps: ``K >= 0``; inner_lr: ``alpha``; objective: ``"finite"`` or ``"infinite"``.
    Returns:
        ``[S, A]`` float64 meta-gradient w.r.t. ``eta`` (zero when ``K = 0``); ``[N, S, A]`` for
        a task batch.
    """
    check_logits(task, logits)
    check_logits(task, eta, "eta")
    with torch.enable_grad():
        eta64 = _float64_leaf(expand_to_tasks(task, eta))
        theta0 = logits.detach().to(torch.float64)
        outer = post_adaptation_return(task, theta0, inner_steps, inner_lr, objective, eta=eta64).sum()
        (meta_grad,) = torch.autograd.grad(outer, eta64, allow_unused=True)
    if meta_grad is None:
        return torch.zeros_like(eta64).detach()
    return meta_grad.detach()


# --------------------------------------------------------------------------------------------
# Iterated two-player games with memory-one policies (IPD, IMP)
# --------------------------------------------------------------------------------------------


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
    spec = get_game(game)
    dtype = torch.promote_types(theta1.dtype, theta2.dtype)
    p1 = torch.sigmoid(theta1.to(dtype))
    p2 = torch.sigmoid(theta2.to(dtype)[..., list(STATE_SWAP)])  # agent 2 in agent 1's state order
    p1, p2 = torch.broadcast_tensors(p1, p2)
    Q = torch.stack([p1 * p2, p1 * (1 - p2), (1 - p1) * p2, (1 - p1) * (1 - p2)], dim=-1)
    return Q, spec.payoffs(dtype, theta1.device)


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
    _check_steps(lookahead_steps, lookahead_lr, ("lookahead_steps", "lookahead_lr"))
    batch_shape = torch.broadcast_shapes(theta1.shape[:-1], theta2.shape[:-1])
    own_in, other_in = (theta1, theta2) if agent == 1 else (theta2, theta1)

    def value(own: torch.Tensor, other: torch.Tensor, who: int) -> torch.Tensor:
        pair = (own, other) if agent == 1 else (other, own)
        return ipd_values(*pair, gamma, horizon, game)[who - 1].sum()

    with torch.enable_grad():
        own = _float64_leaf(own_in.expand(*batch_shape, 5))
        other = _float64_leaf(other_in.expand(*batch_shape, 5))
        opponent = 3 - agent
        for _ in range(lookahead_steps):
            (g,) = torch.autograd.grad(value(own, other, opponent), other, create_graph=True)
            other = other + lookahead_lr * g
        (grad,) = torch.autograd.grad(value(own, other, agent), own)
    return grad.detach()
