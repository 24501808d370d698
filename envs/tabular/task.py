"""Tabular MDP task parameters: one frozen :class:`TabularTask` (or a batch of them), the random
MDPs of the papers (:func:`random_task`) and seeded task families for meta-learning
(:class:`TaskDistribution`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from metagrad.envs.tabular.sampling import RowSampler
from metagrad.seeding import SEED_BITS, heldout_task_rng, train_task_rng
from metagrad.validation import as_float64, check_choice, check_int, check_real

__all__ = [
    "DISTRIBUTION_KINDS",
    "TabularTask",
    "TaskDistribution",
    "random_task",
    "stack_tasks",
]


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
        P = as_float64("P", self.P)
        R = as_float64("R", self.R)
        init = as_float64("init", self.init)
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
        check_choice("kind", self.kind, DISTRIBUTION_KINDS)
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
            seeds = rng.integers(0, 2**SEED_BITS, size=num_tasks)
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
        return self.sample(num_tasks, heldout_task_rng(self.seed))

    def train_rng(self, seed: int) -> np.random.Generator:
        """The generator of training draws for run ``seed`` (never the held-out stream)."""
        return train_task_rng(self.seed, seed)


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
