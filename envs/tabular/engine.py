"""The batched torch rollout engine of tabular MDPs.

:func:`rollout` samples every episode of a batch, and every policy of a batch of policies, as one
tensor operation per time step; that is where the suite's speed comes from. All tensors it returns
are time-major: ``[T, B]`` for one policy, ``[T, B, *G]`` for a batch of policies with batch shape
``G`` (:class:`Trajectory`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TypeVar

import torch

from metagrad.envs.tabular.sampling import ALIAS_MAX_CATEGORIES, RowSampler, sample_categorical
from metagrad.envs.tabular.task import TabularTask
from metagrad.validation import check_int

__all__ = [
    "TimeMajorBatch",
    "Trajectory",
    "check_logits",
    "expand_to_tasks",
    "policy_log_probs",
    "rollout",
    "tabular_gather",
]

BatchT = TypeVar("BatchT", bound="TimeMajorBatch")


class TimeMajorBatch:
    """Sizes of a time-major batch of episodes whose ``states`` are ``[T, B, ...]``."""

    states: torch.Tensor

    @property
    def horizon(self) -> int:
        return int(self.states.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.states.shape[1])

    @classmethod
    def concat(cls: type[BatchT], batches: list[BatchT]) -> BatchT:
        """The episodes of several batches side by side (episode axis 1; ``final_states`` axis 0);
        same horizon and policy batch. A single batch is returned as it is."""
        if len(batches) == 1:
            return batches[0]
        return cls(
            **{
                f.name: torch.cat(
                    [getattr(b, f.name) for b in batches], dim=0 if f.name == "final_states" else 1
                )
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            }
        )

    @staticmethod
    def horizon_flags(
        shape: tuple[int, ...], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(terminated, truncated)`` of episodes cut at the horizon: never terminated,
        truncated at the last step (bool ``shape = [T, B, ...]``)."""
        terminated = torch.zeros(shape, dtype=torch.bool, device=device)
        truncated = torch.zeros(shape, dtype=torch.bool, device=device)
        truncated[-1] = True
        return terminated, truncated


@dataclass(frozen=True, eq=False)
class Trajectory(TimeMajorBatch):
    """A time-major batch of episodes produced by :func:`rollout`.

    Shapes: ``[T, B, *G]`` with ``T`` the horizon, ``B`` episodes per policy and ``G`` the batch
    shape of the policies (empty for one policy).

    Attributes:
        states, actions: long tensors ``[T, B, *G]``; ``s_t`` and ``a_t``.
        rewards: ``[T, B, *G]``; ``R[s_t, a_t]``.
        log_probs: ``[T, B, *G]``; ``log pi(a_t | s_t)``, differentiable w.r.t. the logits.
        behaviour_log_probs: ``[T, B, *G]``; the same values, cut from the graph (the policy
            that generated the data, for importance weights).
        discounts: ``[T, B, *G]``; per-step discount ``gamma * (1 - terminated_t)`` applied
            between step ``t`` and ``t + 1``.
        terminated, truncated: bool ``[T, B, *G]``; kept separate. Tabular episodes never
            terminate; ``truncated`` is true at the last step.
        final_states: long ``[B, *G]``; ``s_T``, for bootstrapping.
    """

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    log_probs: torch.Tensor
    behaviour_log_probs: torch.Tensor
    discounts: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_states: torch.Tensor


def tabular_gather(table: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``table[g, s_t, a_t]`` for a batch of ``[S, A]`` tables, keeping the graph of ``table``.

    Args:
        table: ``[*G, S, A]`` (e.g. log-probabilities or an intrinsic reward).
        states, actions: long ``[T, B, *G]``.
    Returns:
        ``[T, B, *G]``.
    """
    return _gather_entries(table, states * table.shape[-1] + actions)


def _gather_entries(table: torch.Tensor, state_action: torch.Tensor) -> torch.Tensor:
    """``table[g].flatten()[state_action]`` for a batch of tables ``[*G, S, A]`` and entries
    ``s A + a`` ``[T, B, *G]`` (one ``index_select``; keeps the graph of ``table``)."""
    batch_shape = table.shape[:-2]
    S, A = table.shape[-2:]
    g = int(math.prod(batch_shape))
    index = state_action
    if g > 1:
        index = index + (torch.arange(g, device=table.device) * (S * A)).reshape(batch_shape)
    return table.reshape(-1).index_select(0, index.reshape(-1)).view(index.shape)


def policy_log_probs(logits: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[s_t, a_t]`` for a batch of tabular policies, differentiable.

    Args:
        logits: ``[*G, S, A]`` policy logits.
        states, actions: long ``[T, B, *G]``.
    Returns:
        ``[T, B, *G]`` log-probabilities.
    """
    return tabular_gather(torch.log_softmax(logits, -1), states, actions)


def check_logits(task: TabularTask, logits: torch.Tensor, name: str = "logits") -> None:
    """Raise ``ValueError`` naming ``name`` unless it is a finite float tensor ``[..., S, A]``."""
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim < 2 or tuple(logits.shape[-2:]) != (task.num_states, task.num_actions):
        raise ValueError(
            f"{name}: expected shape [..., S, A] = [..., {task.num_states}, {task.num_actions}], "
            f"got {list(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {logits.dtype}")
    if not torch.isfinite(logits.detach()).all():
        raise ValueError(f"{name}: contains NaN or infinite entries")
    if task.batch_shape and logits.ndim > 2 and logits.shape[-3] not in (1, task.num_tasks):
        raise ValueError(
            f"{name}: the last batch axis ({logits.shape[-3]}) must match the {task.num_tasks} tasks "
            "of the task batch (or be absent / 1 to share one policy)"
        )


def expand_to_tasks(task: TabularTask, logits: torch.Tensor) -> torch.Tensor:
    """``logits [*G, S, A]`` expanded so that the last batch axis is the task axis of a batch.

    For one task, ``logits`` unchanged; for N tasks, ``[*G, N, S, A]`` (a shared policy ``[S, A]``
    becomes ``[N, S, A]``: one copy per task, each free to adapt on its own).
    """
    if not task.batch_shape:
        return logits
    lead = logits.shape[:-3] if logits.ndim > 2 else ()
    return logits.expand(*lead, task.num_tasks, *logits.shape[-2:])


def rollout(
    task: TabularTask,
    logits: torch.Tensor,
    num_episodes: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Trajectory:
    """Sample ``num_episodes`` length-``H`` episodes of softmax(``logits``) in ``task``, batched.

    A few tensor operations per time step sample every episode of every policy: no Python loop
    over episodes or policies. With many episodes per policy (``A S^2 <= B H``) one uniform draws
    the pair ``(a_t, s_{t+1})`` from its joint law (alias tables over the ``A S`` pairs of each
    state, built per call); otherwise the action, then the next state from the task's cached
    transition sampler (:meth:`TabularTask.samplers`). Both draw exactly the policy's law.
    Log-probabilities are gathered once at the end, so they carry the autograd graph of
    ``logits`` (to any order).

    Args:
        task: the MDP, or a batch of N tasks (then the last policy-batch axis is the task axis:
            ``[S, A]`` plays one shared policy in every task, ``[*G, N, S, A]`` one per task).
        logits: ``[S, A]`` for one policy, or ``[*G, S, A]`` for a batch of policies; each
            policy gets its own ``num_episodes`` episodes.
        num_episodes: episodes per policy, ``B >= 1``.
        generator: source of randomness (on ``device``); the same seed gives the same episodes.
        device: where to simulate; defaults to ``logits.device``.
    Returns:
        A :class:`Trajectory` with tensors ``[T, B, *G]`` (``[T, B]`` for one policy).
    """
    check_logits(task, logits)
    check_int("num_episodes", num_episodes, numpy_ok=True)
    device = torch.device(device) if device is not None else logits.device
    logits = expand_to_tasks(task, logits.to(device))
    dtype = logits.dtype
    S, A, H = task.num_states, task.num_actions, task.horizon
    batch_shape = tuple(logits.shape[:-2])
    g = int(math.prod(batch_shape))
    B = int(num_episodes)

    with torch.no_grad():
        column = torch.arange(g, device=device)
        task_of = column % task.num_tasks  # task of each policy column (the last batch axis)
        # one row per step of every episode of every policy, flattened: entry b * g + column
        states = torch.empty((H + 1, B * g), dtype=torch.long, device=device)  # row H: s_H
        play = _play_joint if A * S * S <= B * H else _play_separate  # joint: table <= draws
        actions = play(task, logits.detach().reshape(g, S, A), task_of, states, generator).view(H, B, g)
        states = states.view(H + 1, B, g)
        state_action = states[:H] * A + actions  # s_t A + a_t
        entry = state_action + task_of * (S * A) if task.num_tasks > 1 else state_action
        rewards = task.tensors(device, dtype)["R"].reshape(-1).index_select(0, entry.reshape(-1))
        final_states = states[H].reshape(B, *batch_shape)

    shape = (H, B, *batch_shape)
    log_probs = _gather_entries(torch.log_softmax(logits, -1), state_action.view(shape))
    terminated, truncated = Trajectory.horizon_flags(shape, device)
    return Trajectory(
        states=states[:H].reshape(shape),
        actions=actions.reshape(shape),
        rewards=rewards.reshape(shape),
        log_probs=log_probs,
        behaviour_log_probs=log_probs.detach(),
        discounts=torch.full(shape, task.gamma, dtype=dtype, device=device),
        terminated=terminated,
        truncated=truncated,
        final_states=final_states,
    )


def _play_joint(
    task: TabularTask, logits: torch.Tensor, task_of: torch.Tensor, states: torch.Tensor, generator
) -> torch.Tensor:
    """Fill ``states [H + 1, B g]`` drawing ``(a_t, s_{t+1})`` at once from their joint law
    ``pi(a | s_t) P(s' | s_t, a)`` (alias tables over the ``A S`` pairs of every policy and state,
    float64 tables and uniforms); returns the actions ``[H, B g]``."""
    S, A, H = task.num_states, task.num_actions, task.horizon
    g = logits.shape[0]
    D = states.shape[1]
    device = logits.device
    tables = task.tensors(device, torch.float64)
    P = tables["P"].reshape(-1, S, A, S)
    if task.num_tasks > 1:
        P = P.index_select(0, task_of)
    pi = torch.softmax(logits.double(), -1)  # [g, S, A]
    sampler = RowSampler.build((pi.unsqueeze(-1) * P).reshape(g * S, A * S), kind="alias")
    u = torch.rand((H + 1, D), generator=generator, device=device, dtype=torch.float64)
    init_cdf = tables["init_cdf"].reshape(-1, S).index_select(0, task_of)  # [g, S]
    states[0] = sample_categorical(init_cdf, u[H].view(-1, g)).view(-1)
    codes = torch.empty((H, D), dtype=torch.long, device=device)  # a_t S + s_{t+1}
    pair = torch.arange(A * S, device=device)
    next_state, action = pair % S, pair // S  # decoded by lookup (no integer division per step)
    base = (torch.arange(g, device=device) * S).repeat(D // g) if g > 1 else None
    prepared = sampler.prepare(u[:H], base)
    for t, prepared_t in enumerate(zip(*prepared, strict=True)):
        code = sampler.draw(prepared_t, ((states[t], 1),), out=codes[t])
        torch.index_select(next_state, 0, code, out=states[t + 1])
    return action.index_select(0, codes.view(-1)).view(H, D)


def _play_separate(
    task: TabularTask, logits: torch.Tensor, task_of: torch.Tensor, states: torch.Tensor, generator
) -> torch.Tensor:
    """Fill ``states [H + 1, B g]`` drawing the action, then the next state (the task's cached
    transition sampler); returns the actions ``[H, B g]``."""
    S, A, H = task.num_states, task.num_actions, task.horizon
    g = logits.shape[0]
    D = states.shape[1]
    device, dtype = logits.device, logits.dtype
    transitions, init_cdf = task.samplers(device, dtype)
    # alias tables pay off when the episodes draw more often than the table has entries
    kind = "alias" if A <= ALIAS_MAX_CATEGORIES and S * A <= (D // g) * H else "search"
    policy = RowSampler.build(torch.softmax(logits.reshape(g * S, A), -1), kind=kind)
    # every uniform at once: [H + 1, 2, B g] (the initial state uses index H)
    u = torch.rand((H + 1, 2, D), generator=generator, device=device, dtype=dtype)
    actions = torch.empty((H, D), dtype=torch.long, device=device)
    states[0] = sample_categorical(
        init_cdf.reshape(-1, S).index_select(0, task_of), u[H, 0].view(-1, g)
    ).view(-1)
    # draw constants for all steps; the rows are policy (column * S + s) and transition
    # ((task * S + s) * A + a), so each step adds only the state and action terms
    column = torch.arange(g, device=device).repeat(D // g)
    pick = policy.prepare(u[:H, 0], column * S if g > 1 else None)
    move = transitions.prepare(u[:H, 1], (column % task.num_tasks) * (S * A) if task.num_tasks > 1 else None)
    for t, (pick_t, move_t) in enumerate(zip(zip(*pick, strict=True), zip(*move, strict=True), strict=True)):
        s = states[t]
        a = policy.draw(pick_t, ((s, 1),), out=actions[t])
        transitions.draw(move_t, ((s, A), (a, 1)), out=states[t + 1])
    return actions
