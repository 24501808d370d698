"""Random tabular MDPs: task parameters, a batched torch rollout engine and Gymnasium faces.

Task parameters (:class:`TabularTask`) are frozen and separate from rollout state. The batched
engine (:func:`rollout`) samples every episode of a batch, and every policy of a batch of
policies, as one tensor operation per time step; that is where the suite's speed comes from.
All tensors it returns are time-major: ``[T, B]`` for one policy, ``[T, B, *G]`` for a batch of
policies with batch shape ``G``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from metagrad.validation import check_int, check_real

__all__ = [
    "ALIAS_MAX_CATEGORIES",
    "DISTRIBUTION_KINDS",
    "RowSampler",
    "TabularMDPEnv",
    "TabularMDPVectorEnv",
    "TabularTask",
    "TaskDistribution",
    "TimeMajorBatch",
    "Trajectory",
    "alias_table",
    "cell_strip",
    "check_logits",
    "expand_to_tasks",
    "policy_log_probs",
    "random_task",
    "rollout",
    "sample_alias",
    "sample_categorical",
    "stack_tasks",
    "tabular_gather",
]


def _as_float64(name: str, value: Any) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot be converted to a float tensor ({exc})") from exc
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name}: contains NaN or infinite entries")
    return tensor.detach().cpu()


@dataclass(frozen=True, eq=False)
class TabularTask:
    """Parameters of a finite-horizon tabular MDP, or of a batch of N of them (immutable;
    rollout state lives elsewhere).

    Attributes:
        P: transition probabilities ``[S, A, S]`` (or ``[N, S, A, S]`` for a batch of tasks);
            ``P[..., s, a]`` is a distribution over next states.
        R: deterministic rewards ``[S, A]`` (``[N, S, A]``).
        init: initial-state distribution ``[S]`` (``[N, S]``).
        gamma: discount in ``[0, 1]``, shared by the batch.
        horizon: episode length ``H >= 1``, shared; episodes are truncated (never terminated).

    A batch of tasks (:func:`stack_tasks`, :class:`TaskDistribution`) goes wherever one task goes:
    policies ``[*G, S, A]`` broadcast against the task axis (the last policy-batch axis is the
    task), so ``rollout`` and the exact oracles handle a whole meta-batch in one call.
    Tensors are stored as float64 on the CPU; a bad field raises ``ValueError`` naming it.
    """

    P: torch.Tensor
    R: torch.Tensor
    init: torch.Tensor
    gamma: float
    horizon: int
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        P = _as_float64("P", self.P)
        R = _as_float64("R", self.R)
        init = _as_float64("init", self.init)
        if P.ndim not in (3, 4) or P.shape[-3] != P.shape[-1] or P.shape[-1] < 1 or P.shape[-2] < 1:
            raise ValueError(
                "P: expected shape [S, A, S] (or [N, S, A, S] for a batch) with S, A >= 1, "
                f"got {tuple(P.shape)}"
            )
        batch, S, A = tuple(P.shape[:-3]), P.shape[-1], P.shape[-2]
        if batch and batch[0] < 1:
            raise ValueError("P: a task batch needs at least one task")
        if (P < 0).any() or not torch.allclose(
            P.sum(-1), torch.ones(P.shape[:-1], dtype=torch.float64), atol=1e-6
        ):
            raise ValueError("P: every row P[s, a, :] must be a probability distribution (>= 0, sums to 1)")
        if tuple(R.shape) != (*batch, S, A):
            raise ValueError(f"R: expected shape {[*batch, S, A]}, got {list(R.shape)}")
        if tuple(init.shape) != (*batch, S):
            raise ValueError(f"init: expected shape {[*batch, S]}, got {list(init.shape)}")
        if (init < 0).any() or (init.sum(-1) - 1.0).abs().max() > 1e-6:
            raise ValueError("init: must be a probability distribution (>= 0, sums to 1)")
        check_real("gamma", self.gamma, minimum=0.0, maximum=1.0)
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, (int, np.integer)):
            raise ValueError(f"horizon: expected an integer >= 1, got {self.horizon!r}")
        if int(self.horizon) < 1:
            raise ValueError(f"horizon: must be >= 1, got {self.horizon}")
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "init", init)
        object.__setattr__(self, "gamma", float(self.gamma))
        object.__setattr__(self, "horizon", int(self.horizon))

    @property
    def num_states(self) -> int:
        return int(self.P.shape[-1])

    @property
    def num_actions(self) -> int:
        return int(self.P.shape[-2])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """``()`` for one task, ``(N,)`` for a batch of N tasks."""
        return tuple(self.P.shape[:-3])

    @property
    def num_tasks(self) -> int:
        """1 for one task, N for a batch."""
        return int(math.prod(self.batch_shape))

    def __len__(self) -> int:
        return self.num_tasks

    def unbind(self) -> list[TabularTask]:
        """The tasks of a batch as single tasks (``[self]`` for one task)."""
        if not self.batch_shape:
            return [self]
        return [
            TabularTask(P=self.P[i], R=self.R[i], init=self.init[i], gamma=self.gamma, horizon=self.horizon)
            for i in range(self.num_tasks)
        ]

    def tensors(self, device: torch.device | str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """``P``, ``R``, ``init`` and its CDF ``init_cdf`` on ``device`` in ``dtype`` (cached; no copy
        for float64 on CPU)."""
        key = ("tensors", str(torch.device(device)), dtype)
        if key not in self._cache:
            init = self.init.to(device=device, dtype=dtype)
            self._cache[key] = {
                "P": self.P.to(device=device, dtype=dtype),
                "R": self.R.to(device=device, dtype=dtype),
                "init": init,
                "init_cdf": init.cumsum(-1),
            }
        return self._cache[key]

    def samplers(self, device: torch.device | str, dtype: torch.dtype) -> tuple[RowSampler, torch.Tensor]:
        """The engine's tables (cached): a :class:`RowSampler` over the rows ``(task * S + s) * A + a``
        of ``P`` and the start distribution's CDF ``[*N, S]``.

        The sampler is built from the float64 ``P`` in one vectorised pass, O(S^2 A) per task up to
        a log factor (alias tables for small S, cumulative sums for large S).
        """
        key = ("samplers", str(torch.device(device)), dtype)
        if key not in self._cache:
            self._cache[key] = (
                RowSampler.build(self.P.to(device=device).reshape(-1, self.num_states), dtype=dtype),
                self.tensors(device, dtype)["init_cdf"],
            )
        return self._cache[key]


def random_task(
    num_states: int = 20,
    num_actions: int = 5,
    *,
    gamma: float = 0.8,
    horizon: int = 20,
    dirichlet_alpha: float = 0.001,
    seed: int = 0,
    start_state: int | None = 0,
) -> TabularTask:
    """Draw a random MDP as in Tang et al. (NeurIPS 2021) and Liu et al. (NeurIPS 2022).

    ``P[s, a, :] ~ Dirichlet(dirichlet_alpha * 1)`` (near-deterministic for the default 0.001),
    ``R[s, a] ~ U[0, 1)`` deterministic, start in ``start_state`` (``None``: uniform start).
    The same ``seed`` always gives the same task.
    """
    check_int("num_states", num_states, numpy_ok=True)
    check_int("num_actions", num_actions, numpy_ok=True)
    check_real("dirichlet_alpha", dirichlet_alpha, minimum=0.0, open_min=True)
    rng = np.random.default_rng(seed)
    P = _dirichlet(rng, dirichlet_alpha, (num_states, num_actions), num_states)
    R = rng.random((num_states, num_actions))
    if start_state is None:
        init = np.full(num_states, 1.0 / num_states)
    else:
        if not 0 <= start_state < num_states:
            raise ValueError(f"start_state: must lie in [0, {num_states}), got {start_state}")
        init = np.zeros(num_states)
        init[start_state] = 1.0
    return TabularTask(
        P=torch.from_numpy(P),
        R=torch.from_numpy(R),
        init=torch.from_numpy(init),
        gamma=gamma,
        horizon=horizon,
    )


def stack_tasks(tasks: list[TabularTask]) -> TabularTask:
    """A batch ``[N, ...]`` of single tasks with the same S, A, gamma and horizon."""
    if not tasks:
        raise ValueError("tasks: need at least one task")
    for i, t in enumerate(tasks):
        if not isinstance(t, TabularTask) or t.batch_shape:
            raise ValueError(f"tasks[{i}]: expected a single TabularTask")
        if (t.num_states, t.num_actions, t.gamma, t.horizon) != (
            tasks[0].num_states,
            tasks[0].num_actions,
            tasks[0].gamma,
            tasks[0].horizon,
        ):
            raise ValueError(f"tasks[{i}]: S, A, gamma and horizon must match tasks[0]")
    return TabularTask(
        P=torch.stack([t.P for t in tasks]),
        R=torch.stack([t.R for t in tasks]),
        init=torch.stack([t.init for t in tasks]),
        gamma=tasks[0].gamma,
        horizon=tasks[0].horizon,
    )


DISTRIBUTION_KINDS = ("shared_transitions", "random")


@dataclass(frozen=True)
class TaskDistribution:
    """A seeded family of related tabular MDPs for meta-learning.

    ``kind``:
      * ``"shared_transitions"``: one MDP ``(P, R_base)`` drawn from ``seed`` as in
        :func:`random_task`; every task keeps ``P`` and mixes its own rewards
        ``R_i = (1 - reward_spread) R_base + reward_spread U_i``, ``U_i ~ U[0, 1)^(S x A)``: the
        tasks share how the world moves and part of what pays, and differ in the rest
        (``reward_spread = 1``: independent rewards);
      * ``"random"``: every task is a fresh :func:`random_task` (own ``P`` and ``R``).

    Sampling is deterministic given the ``np.random.Generator`` passed in; :meth:`held_out` is a
    fixed evaluation set drawn from a stream the training draws never use.
    """

    kind: str = "shared_transitions"
    num_states: int = 20
    num_actions: int = 5
    gamma: float = 0.8
    horizon: int = 20
    dirichlet_alpha: float = 0.001
    start_state: int | None = 0
    seed: int = 0
    reward_spread: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in DISTRIBUTION_KINDS:
            raise ValueError(f"kind: expected one of {DISTRIBUTION_KINDS}, got {self.kind!r}")
        check_real("reward_spread", self.reward_spread, minimum=0.0, maximum=1.0)
        self.base_task()  # validates sizes, gamma, horizon, alpha and start state

    def base_task(self) -> TabularTask:
        """The task whose ``P`` and ``init`` the ``shared_transitions`` family shares."""
        return random_task(
            self.num_states,
            self.num_actions,
            gamma=self.gamma,
            horizon=self.horizon,
            dirichlet_alpha=self.dirichlet_alpha,
            seed=self.seed,
            start_state=self.start_state,
        )

    def sample(self, num_tasks: int, rng: np.random.Generator) -> TabularTask:
        """A batch of ``num_tasks`` tasks (``[N, ...]``) drawn with ``rng``."""
        check_int("num_tasks", num_tasks, numpy_ok=True)
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: expected a numpy Generator, got {type(rng).__name__}")
        if self.kind == "random":
            seeds = rng.integers(0, 2**62, size=num_tasks)
            return stack_tasks(
                [dataclasses.replace(self, kind="shared_transitions", seed=int(s)).base_task() for s in seeds]
            )
        base = self.base_task()
        own = torch.from_numpy(rng.random((num_tasks, self.num_states, self.num_actions)))
        R = (1.0 - self.reward_spread) * base.R + self.reward_spread * own
        return TabularTask(
            P=base.P.expand(num_tasks, *base.P.shape),
            R=R,
            init=base.init.expand(num_tasks, self.num_states),
            gamma=self.gamma,
            horizon=self.horizon,
        )

    def held_out(self, num_tasks: int) -> TabularTask:
        """A fixed evaluation batch (same for every caller; disjoint stream from training draws)."""
        return self.sample(num_tasks, np.random.default_rng([self.seed, 7_919]))

    def train_rng(self, seed: int) -> np.random.Generator:
        """The generator of training draws for run ``seed`` (never the held-out stream)."""
        return np.random.default_rng([self.seed, 1, seed])


def _dirichlet(rng: np.random.Generator, alpha: float, batch: tuple[int, ...], k: int) -> np.ndarray:
    """Dirichlet samples that stay valid for tiny ``alpha`` (Gamma draws in log space).

    For alpha << 1, Gamma(alpha) draws underflow to 0 in float64; with U ~ U(0, 1),
    Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha), so log-draws are computed exactly and then
    normalised with a log-sum-exp.
    """
    log_g = np.log(rng.gamma(alpha + 1.0, size=(*batch, k))) + np.log(rng.random((*batch, k))) / alpha
    log_g -= log_g.max(-1, keepdims=True)
    p = np.exp(log_g)
    return p / p.sum(-1, keepdims=True)


class TimeMajorBatch:
    """Sizes of a time-major batch of episodes whose ``states`` are ``[T, B, ...]``."""

    states: torch.Tensor

    @property
    def horizon(self) -> int:
        return int(self.states.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.states.shape[1])

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


def sample_categorical(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: index of the first entry of ``cdf[..., k]`` above ``u[...]``.

    Args:
        cdf: ``[..., K]`` cumulative probabilities (non-decreasing, last entry ~1).
        u: ``[...]`` uniforms in ``[0, 1)``.
    Returns:
        long ``[...]`` in ``[0, K)`` (clamped against round-off in the last cdf entry).
    """
    k = cdf.shape[-1]
    return (u.unsqueeze(-1) >= cdf).sum(-1).clamp_(max=k - 1)


def _shift_right(x: torch.Tensor, fill: float | int) -> torch.Tensor:
    """``x[..., :-1]`` moved one place right along the last axis, ``fill`` in front."""
    return torch.cat([torch.full_like(x[..., :1], fill), x[..., :-1]], dim=-1)


def _shift_left(x: torch.Tensor, fill: float | int) -> torch.Tensor:
    """``x[..., 1:]`` moved one place left along the last axis, ``fill`` at the end."""
    return torch.cat([x[..., 1:], torch.full_like(x[..., :1], fill)], dim=-1)


def alias_table(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Walker alias tables for a batch of categorical distributions, built in one vectorised pass.

    With scaled probabilities ``q_i = K p_i``, items with ``q < 1`` are *light* (bucket ``i``
    keeps ``q_i`` and needs ``1 - q_i`` from an alias) and the others *heavy* (``q_j - 1`` to
    give away). Lay the lights' deficits end to end on a line (light ``i`` covers
    ``[D_{i-1}, D_i)``, ``D`` their running sum in index order) and the heavies' excesses likewise
    (heavy ``j`` covers ``[E_{j-1}, E_j)``). Light ``i`` takes its whole deficit from the heavy
    whose excess covers ``D_{i-1}``; a heavy whose last light runs past ``E_j`` pays the rest
    ``D_i - E_j < 1`` out of its own bucket, which the next heavy fills (the sequential sweep of
    Vose's method, with the pairing read off prefix sums: two ``searchsorted`` merges and no loop
    over K). Every bucket then holds at most two items, so a draw costs O(1)
    (:func:`sample_alias`, :class:`RowSampler`); building costs O(K log K) per row.

    Args:
        probs: ``[..., K]`` probabilities (rows sum to 1).
    Returns:
        ``(threshold [..., K], alias long [..., K])``: bucket ``j`` returns ``j`` with probability
        ``threshold_j``, else ``alias_j``.
    """
    k = probs.shape[-1]
    q = (probs * k).reshape(-1, k)
    index = torch.arange(k, device=q.device).expand_as(q)
    heavy = q >= 1.0
    heavy.scatter_(1, q.argmax(1, keepdim=True), True)  # round-off can leave a row without a heavy
    end = (1.0 - q).masked_fill_(heavy, 0.0).cumsum(1)  # D: end of each light's deficit (flat at heavies)
    start = _shift_right(end, 0.0)  # D_{i-1}: the same floats as the previous end
    filled = (q - 1.0).clamp_min_(0.0).masked_fill_(~heavy, 0.0).cumsum(1)  # E: end of each heavy's excess
    last_heavy = index.masked_fill(~heavy, -1).amax(1, keepdim=True)
    donor = torch.minimum(torch.searchsorted(filled, start, right=True), last_heavy)
    cut = torch.searchsorted(end, filled, right=True).clamp_(max=k - 1)  # first light ending past E_j
    cut_end = end.gather(1, cut)
    straddles = (start.gather(1, cut) < filled) & (cut_end > filled)
    overdraft = (cut_end - filled).masked_fill_(~straddles, 0.0)
    next_heavy = _shift_left(index.masked_fill(~heavy, k).flip(1).cummin(1).values.flip(1), k)
    threshold = torch.where(heavy, 1.0 - overdraft, q).clamp_(0.0, 1.0)
    alias = torch.where(heavy, torch.where(next_heavy < k, next_heavy, index), donor)
    alias = torch.where(threshold >= 1.0, index, alias)
    return threshold.reshape(probs.shape), alias.reshape(probs.shape)


def sample_alias(
    threshold: torch.Tensor, alias: torch.Tensor, row: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """Draw from rows of alias tables with one uniform per draw.

    Args:
        threshold, alias: ``[N, K]`` tables from :func:`alias_table`.
        row: long ``[...]`` row index per draw.
        u: ``[...]`` uniforms in ``[0, 1)``.
    Returns:
        long ``[...]`` category per draw: ``j = floor(K u)`` is kept when the fractional part
        of ``K u`` is below ``threshold[row, j]``, else ``alias[row, j]`` is returned.
    """
    return RowSampler.from_alias(threshold, alias).sample(row, u)


# Rows of up to this many categories are sampled with alias tables (O(1) draws, O(K log K) build
# per row); longer rows by binary search on their cumulative sums (O(log K) draws, O(K) build):
# large state spaces are dominated by preparing the tables, small ones by drawing.
ALIAS_MAX_CATEGORIES = 64


@dataclass(frozen=True, eq=False)
class RowSampler:
    """Exact draws from the rows of a table of categorical distributions ``probs [N, K]``.

    Two samplers of the same distribution, chosen by ``K`` (:data:`ALIAS_MAX_CATEGORIES`):

    * ``"alias"``: Walker alias tables (:func:`alias_table`); a draw is ``j = floor(K u)`` and one
      comparison of the fractional part of ``K u`` with ``threshold[row, j]``;
    * ``"search"``: binary search for the first entry of the row's normalised cumulative sum above
      ``u`` (``1 + floor(log2 K)`` gathers per draw, the first step uneven so that every probe
      stays inside the row); building it is one cumulative sum.

    Tables are stored flat (``[N * K]``) so every draw gathers with ``index_select``. Build with
    :meth:`build`; draw with :meth:`sample`, or in a loop with :meth:`prepare` once for all the
    uniforms and :meth:`draw` per step (what the batched engines do).
    """

    kind: str
    num_categories: int
    table: torch.Tensor  # alias thresholds, or the cumulative distribution (flat [N * K])
    alias: torch.Tensor | None = None  # long [N * K] (alias kind)

    @classmethod
    def build(
        cls, probs: torch.Tensor, dtype: torch.dtype | None = None, kind: str | None = None
    ) -> RowSampler:
        """Tables for the rows of ``probs [N, K]``, stored in ``dtype`` (default ``probs.dtype``;
        build from float64 probabilities for float64-exact tables)."""
        k = int(probs.shape[-1])
        kind = kind or ("alias" if k <= ALIAS_MAX_CATEGORIES else "search")
        dtype = dtype or probs.dtype
        if kind == "alias":
            return cls.from_alias(*alias_table(probs.reshape(-1, k)), dtype=dtype)
        if kind != "search":
            raise ValueError(f"kind: expected 'alias' or 'search', got {kind!r}")
        cdf = probs.reshape(-1, k).cumsum(1)
        cdf = cdf.div_(cdf[:, -1:].clone()).clamp_(max=1.0)  # trailing zero-probability entries read 1
        return cls("search", k, cdf.to(dtype).reshape(-1))

    @classmethod
    def from_alias(
        cls, threshold: torch.Tensor, alias: torch.Tensor, dtype: torch.dtype | None = None
    ) -> RowSampler:
        """Wrap alias tables ``[N, K]`` from :func:`alias_table`."""
        k = int(threshold.shape[-1])
        return cls("alias", k, threshold.to(dtype or threshold.dtype).reshape(-1), alias.reshape(-1))

    def prepare(
        self, u: torch.Tensor, base: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The per-draw constants of uniforms ``u [..., D]`` for rows ``base + ...`` (``base``, long
        ``[D]``, default 0): computed once for a whole rollout; ``D`` draws per step."""
        k = self.num_categories
        if self.kind == "alias":
            x = u * k
            j = x.floor().clamp_(max=k - 1)
            frac = x.sub_(j)
            j = j.long()
            return j, j if base is None else j + base * k, frac
        offset = torch.full_like(u, -1, dtype=torch.long) if base is None else (base * k - 1).expand_as(u)
        return u, offset, u

    def draw(
        self,
        prepared: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        terms: tuple[tuple[torch.Tensor, int], ...],
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One step's draws (long ``[D]``) for rows ``base + sum(x * stride for x, stride in
        terms)`` (``prepared``: one step of :meth:`prepare`'s constants), written to ``out``."""
        k = self.num_categories
        first, flat, last = prepared
        for x, stride in terms:
            flat = torch.add(flat, x, alpha=stride * k)
        if self.kind == "alias":
            keep = last < self.table.index_select(0, flat)
            other = self.alias.index_select(0, flat)  # type: ignore[union-attr]
            return (
                torch.where(keep, first, other, out=out)
                if out is not None
                else torch.where(keep, first, other)
            )
        # "search": ``position`` walks to the last entry <= u of the row (``flat`` is the entry
        # before the row's first; the last entry, 1, exceeds every u), the draw is the entry after
        # it. With p the largest power of two <= K, the first probe (entry p - 1) leaves p - 1
        # or K - p entries, then steps p / 2, ..., 1: every probe stays in the row.
        if k == 1:
            return torch.zeros_like(flat) if out is None else out.zero_()
        step = 1 << (k.bit_length() - 1)
        below = self.table.index_select(0, flat + step) <= first
        position = torch.where(below, flat + (k - step), flat)
        while step > 1:
            step //= 2
            candidate = position + step
            below = self.table.index_select(0, candidate) <= first
            position = torch.where(below, candidate, position)
        return torch.sub(position, flat, out=out) if out is not None else position - flat

    def sample(self, row: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One draw per entry of ``row`` (long ``[...]``) with uniforms ``u`` (same shape)."""
        return self.draw(self.prepare(u.reshape(-1)), ((row.reshape(-1), 1),)).view(row.shape)


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


def _task_from_kwargs(task: TabularTask | None, seed: int | None, task_kwargs: dict) -> TabularTask:
    if task is not None:
        if not isinstance(task, TabularTask):
            raise ValueError(f"task: expected a TabularTask, got {type(task).__name__}")
        if task_kwargs:
            raise ValueError(f"task given: do not also pass generator arguments {sorted(task_kwargs)}")
        if task.batch_shape:
            raise ValueError(f"task: the Gymnasium env plays one task, got a batch of {task.num_tasks}")
        return task
    return random_task(seed=0 if seed is None else seed, **task_kwargs)


RENDER_FPS = 4


def cell_strip(colours: Any, progress: float, cell: int = 16) -> np.ndarray:
    """An RGB frame (``uint8 [cell + 4, n * cell, 3]``): one square per row of ``colours [n, 3]``
    and, below, a bar filled to ``progress`` (the share of the episode played)."""
    colours = np.asarray(colours, dtype=np.uint8)
    width = len(colours) * cell
    frame = np.zeros((cell + 4, width, 3), dtype=np.uint8)
    frame[:cell] = np.repeat(colours, cell, axis=0)[None]
    frame[cell + 1 : cell + 3, : round(min(max(progress, 0.0), 1.0) * width)] = 255
    return frame


class TabularMDPEnv(gym.Env):
    """Gymnasium face of a :class:`TabularTask` (id ``MetaGrad/TabularMDP-v0``).

    Observations (``numpy.int64``, as ``Discrete`` samples are) and actions are ``Discrete``;
    episodes are truncated at the horizon (never terminated). Pass ``task=`` or let ``task_seed``
    and the :func:`random_task` keyword arguments draw one. ``info["step"]`` counts steps within
    the episode. Render modes: ``"ansi"`` (a line of text) and ``"rgb_array"`` (one square per
    state, the current one lit, over the episode's progress; what SB3's ``make_vec_env`` asks for).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": RENDER_FPS}

    def __init__(
        self,
        task: TabularTask | None = None,
        task_seed: int | None = None,
        render_mode: str | None = None,
        **task_kwargs: Any,
    ) -> None:
        self.task = _task_from_kwargs(task, task_seed, task_kwargs)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode: expected one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.observation_space = spaces.Discrete(self.task.num_states)
        self.action_space = spaces.Discrete(self.task.num_actions)
        self._P = self.task.P.numpy()
        self._R = self.task.R.numpy()
        self._init = self.task.init.numpy()
        self._state = 0
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = int(self.np_random.choice(self.task.num_states, p=self._init))
        self._t = 0
        return np.int64(self._state), {"step": 0}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action: expected an integer in [0, {self.task.num_actions}), got {action!r}")
        a = int(action)
        reward = float(self._R[self._state, a])
        self._state = int(self.np_random.choice(self.task.num_states, p=self._P[self._state, a]))
        self._t += 1
        truncated = self._t >= self.task.horizon
        return np.int64(self._state), reward, False, truncated, {"step": self._t}

    def render(self):
        if self.render_mode == "ansi":
            return f"t={self._t} state={self._state}"
        if self.render_mode == "rgb_array":
            colours = np.full((self.task.num_states, 3), 60, dtype=np.uint8)
            colours[self._state] = 255
            return cell_strip(colours, self._t / self.task.horizon)
        return None


class TabularMDPVectorEnv(VectorEnv):
    """``num_envs`` copies of one tabular MDP stepped by the batched torch engine.

    Reached through ``gymnasium.make_vec("MetaGrad/TabularMDP-v0", num_envs=N)``. Observations
    and rewards are numpy arrays; autoreset follows Gymnasium's default ``NEXT_STEP`` mode (the
    step after a truncation resets that sub-environment and ignores its action).
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        task: TabularTask | None = None,
        task_seed: int | None = None,
        device: str | torch.device = "cpu",
        **task_kwargs: Any,
    ) -> None:
        check_int("num_envs", num_envs, numpy_ok=True)
        self.task = _task_from_kwargs(task, task_seed, task_kwargs)
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.single_observation_space = spaces.Discrete(self.task.num_states)
        self.single_action_space = spaces.Discrete(self.task.num_actions)
        self.observation_space = spaces.MultiDiscrete(np.full(self.num_envs, self.task.num_states))
        self.action_space = spaces.MultiDiscrete(np.full(self.num_envs, self.task.num_actions))
        self._tables = self.task.tensors(self.device, torch.float64)
        self._sampler, self._init_cdf = self.task.samplers(self.device, torch.float64)
        self._generator = torch.Generator(device=self.device)
        self._generator.seed()
        self._states = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._needs_reset = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def _sample_init(self, n: int) -> torch.Tensor:
        u = torch.rand(n, generator=self._generator, device=self.device, dtype=torch.float64)
        return sample_categorical(self._init_cdf, u)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._generator.manual_seed(int(seed))
        self._states = self._sample_init(self.num_envs)
        self._t.zero_()
        self._needs_reset.zero_()
        return self._states.cpu().numpy(), {}

    def step(self, actions):
        a = torch.as_tensor(np.asarray(actions), dtype=torch.long, device=self.device).reshape(-1)
        if a.shape[0] != self.num_envs:
            raise ValueError(f"actions: expected {self.num_envs} actions, got {a.shape[0]}")
        if ((a < 0) | (a >= self.task.num_actions)).any():
            raise ValueError(f"actions: every action must lie in [0, {self.task.num_actions})")
        A = self.task.num_actions
        u = torch.rand(self.num_envs, generator=self._generator, device=self.device, dtype=torch.float64)
        rewards = self._tables["R"][self._states, a]
        next_states = self._sampler.sample(self._states * A + a, u)
        self._t += 1
        # NEXT_STEP autoreset: sub-environments that truncated last step restart now.
        reset_mask = self._needs_reset
        if reset_mask.any():
            next_states = torch.where(reset_mask, self._sample_init(self.num_envs), next_states)
            rewards = torch.where(reset_mask, torch.zeros_like(rewards), rewards)
            self._t = torch.where(reset_mask, torch.zeros_like(self._t), self._t)
        truncated = (self._t >= self.task.horizon) & ~reset_mask
        self._states = next_states
        self._needs_reset = truncated.clone()
        terminated = torch.zeros_like(truncated)
        return (
            self._states.cpu().numpy(),
            rewards.cpu().numpy(),
            terminated.cpu().numpy(),
            truncated.cpu().numpy(),
            {},
        )
