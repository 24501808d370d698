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

import math
from collections.abc import Callable
from typing import Any, Literal, get_args

import torch

from metagrad.envs.ipd import (
    MatrixGame,
    check_gamma,
    check_memory_one_logits,
    get_game,
    joint_outcome_probs,
)
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
    tables = task.tensors(logits.device, logits.dtype)
    R = tables["R"] if reward is None else reward
    return torch.einsum("...sa,...sat->...st", pi, tables["P"]), (pi * R).sum(-1)


def _broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of ``shapes`` (plain Python: torch.broadcast_shapes takes a slow path, with a
    first-call import, when one of them is empty)."""
    out: list[int] = []
    for shape in shapes:
        shape = tuple(shape)
        pad = len(shape) - len(out)
        out = [1] * pad + out if pad > 0 else out
        for i, n in enumerate(shape, start=len(out) - len(shape)):
            if out[i] == 1:
                out[i] = n
            elif n not in (1, out[i]):
                raise ValueError(f"shapes {shapes} do not broadcast")
    return tuple(out)


class _LinearRecursion(torch.autograd.Function):
    """``x_0 = b_0``, ``x_k = b_k + gamma M x_{k-1}`` (``M [*G, S, S]``, ``b [*G, T, S]``), with its
    adjoint written out and differentiable to any order.

    The adjoint is the same recursion run backwards with ``M^T``: ``mu_{T-1} = g_{T-1}``,
    ``mu_k = g_k + gamma M^T mu_{k+1}``; then ``dL/db = mu`` and
    ``dL/dM = gamma sum_k mu_k x_{k-1}^T``, one ``[S, T] x [T, S]`` product. Plain autograd of the
    loop would accumulate ``dL/dM`` as T rank-one ``[S, S]`` updates (2T passes over an
    ``S x S`` matrix), and again at every higher order; here every order costs T
    matrix-vector products and one matrix product.
    """

    @staticmethod
    def forward(ctx: Any, M: torch.Tensor, b: torch.Tensor, gamma: float) -> torch.Tensor:
        xs = [b[..., 0, :]]
        for k in range(1, b.shape[-2]):
            xs.append(b[..., k, :] + gamma * (M @ xs[-1].unsqueeze(-1)).squeeze(-1))
        x = torch.stack(xs, dim=-2)
        ctx.save_for_backward(M, x)
        ctx.gamma = gamma
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        M, x = ctx.saved_tensors
        mu = _LinearRecursion.apply(M.transpose(-1, -2), grad.flip(-2), ctx.gamma).flip(-2)
        grad_M = ctx.gamma * mu[..., 1:, :].transpose(-1, -2) @ x[..., :-1, :]
        return grad_M, mu, None


def _values_from_model(P_pi: torch.Tensor, r_pi: torch.Tensor, gamma: float, horizon: int) -> torch.Tensor:
    """Finite-horizon values ``[*G, H + 1, S]`` of a Markov reward process: ``V_H = 0``,
    ``V_t = r_pi + gamma P_pi V_{t+1}`` (:class:`_LinearRecursion` over ``k = H - 1 - t``)."""
    P_pi, r_pi = torch.broadcast_tensors(P_pi, r_pi.unsqueeze(-1))
    r_pi = r_pi[..., 0]
    x = _LinearRecursion.apply(
        P_pi, r_pi.unsqueeze(-2).expand(*r_pi.shape[:-1], horizon, r_pi.shape[-1]), gamma
    )
    return torch.cat([x.flip(-2), torch.zeros_like(r_pi).unsqueeze(-2)], dim=-2)


def _finite_values_by_actions(
    task: TabularTask, pi: torch.Tensor, r_pi: torch.Tensor, batch: tuple[int, ...]
) -> torch.Tensor:
    """Finite-horizon values ``[*batch, H + 1, S]`` by
    ``V_t(s) = r_pi(s) + gamma sum_a pi(a|s) P[s, a] . V_{t+1}``.

    The policies that share a task are stacked into one matrix product per step with the
    task's ``[S, S A]`` transition table (no ``[S, S]`` matrix per policy is formed): the cheaper
    order for many policies per task on large S (the critic of a cell's R repeats).
    """
    S, A, H, N = task.num_states, task.num_actions, task.horizon, task.num_tasks
    pi = pi.expand(*batch, S, A).reshape(-1, N, S, A).transpose(0, 1)  # [N, M, S, A]
    r_pi = r_pi.expand(*batch, S).reshape(-1, N, S).transpose(0, 1)  # [N, M, S]
    P_t = task.tensors(pi.device, pi.dtype)["P"].reshape(N, S * A, S).transpose(-1, -2)  # [N, S, S A]
    values = [torch.zeros_like(r_pi), r_pi]  # V_H = 0, V_{H-1} = r_pi
    for _ in range(H - 1):
        expected_next = (values[-1] @ P_t).view(*r_pi.shape, A)  # [N, M, S, A]: P[s, a] . V_{t+1}
        values.append(r_pi + task.gamma * (pi * expected_next).sum(-1))
    stacked = torch.stack(values[::-1], dim=-2)  # [N, M, H + 1, S]
    return stacked.transpose(0, 1).reshape(*batch, H + 1, S)


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
    ``[*G, S]`` (requires ``gamma < 1``), one batched LU solve.

    Cost per task: for the finite objective ``O((A + H) S^2)`` per policy through ``P_pi``, or, with
    at least A policies per task, one ``[M, S] x [S, S A]`` product per step for all M of them
    (no ``[S, S]`` matrix per policy: less memory traffic on large S). The infinite objective
    costs ``O(S^3)`` per policy.

    Args:
        task: the MDP; logits ``[*G, S, A]``; ``reward`` optionally replaces ``task.R``.
    """
    _check_objective(objective)
    check_logits(task, logits)
    if reward is not None:
        check_finite_tensor("reward", reward)
    if objective == "infinite":
        P_pi, r_pi = policy_model(task, logits, reward)
        if task.gamma >= 1.0:
            raise ValueError("gamma: the infinite-horizon objective needs gamma < 1")
        eye = torch.eye(task.num_states, dtype=logits.dtype, device=logits.device)
        return torch.linalg.solve(eye - task.gamma * P_pi, r_pi.unsqueeze(-1)).squeeze(-1)
    pi = torch.softmax(logits, -1)
    tables = task.tensors(logits.device, logits.dtype)
    r_pi = (pi * (tables["R"] if reward is None else reward)).sum(-1)
    batch = _broadcast_shape(pi.shape[:-2], r_pi.shape[:-1], task.batch_shape[-1:])
    if math.prod(batch) >= task.num_actions * task.num_tasks:  # at least A policies per task
        return _finite_values_by_actions(task, pi, r_pi, batch)
    P_pi = torch.einsum("...sa,...sat->...st", pi, tables["P"])
    return _values_from_model(P_pi, r_pi, task.gamma, task.horizon)


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
