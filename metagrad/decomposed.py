"""Decomposed meta-gradients: each stage of a K-step inner loop exact or estimated.

Liu et al. (NeurIPS 2022, arXiv 2112.15400) split a GMRL meta-gradient into three stages, each
computed exactly or from its own samples:

* ``inner``: the forward value of each inner update ``theta + alpha g_inner(theta)``;
* ``hessian``: the Jacobian of each inner update, through ``g_hess`` (created with a graph);
* ``outer``: the gradient of the outer objective at ``theta_K``.

They are combined straight-through::

    theta_{k+1} = stop(theta_k + alpha g_inner) + (theta_k + alpha g_hess) - stop(theta_k + alpha g_hess)

so the value follows the inner estimate and the derivative follows the Hessian estimate.
Combinations are named by three letters (inner, hessian, outer), ``e`` exact, ``l`` estimated:
``eel, ele, lee, ell, lel, lle, lll`` (and ``eee``, which equals the exact meta-gradient).

All R repetitions of a cell are one batch of ``R`` independent parameter copies ``[R, S, A]``
sampled together by the batched engine (no Python loop over repetitions or trajectories).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, get_args, runtime_checkable

import torch

from metagrad.envs.tabular import (
    TabularTask,
    Trajectory,
    expand_to_tasks,
    policy_log_probs,
    rollout,
    tabular_gather,
)
from metagrad.estimators import discounted_returns, get_estimator, stop_gradient
from metagrad.exact import (
    OBJECTIVES,
    Objective,
    lirpg_meta_gradient,
    maml_meta_gradient,
    tabular_return,
    tabular_values,
)
from metagrad.validation import check_int, check_real

__all__ = [
    "COMBINATIONS",
    "CRITIC_KINDS",
    "META_PARAMETERS",
    "MLMC",
    "STAGE_ROLES",
    "CriticKind",
    "CriticSpec",
    "ExactInnerLoop",
    "MetaGradientSpec",
    "MetaParameter",
    "RandomStreams",
    "StageRole",
    "StageSpec",
    "Staged",
    "StagedSpec",
    "concat_episodes",
    "critic_index",
    "critic_values",
    "detached_leaf",
    "episodes_per_estimate",
    "exact_inner_loop",
    "exact_meta_gradient",
    "expected_injected_meta_gradient",
    "monte_carlo_values",
    "sample_meta_gradients",
    "sample_meta_gradients_wrt",
    "stage_cost",
    "straight_through",
]

StageRole = Literal["inner", "hessian", "outer"]
CriticKind = Literal["noisy_exact", "zero", "learned"]
MetaParameter = Literal["logits", "intrinsic_reward"]

COMBINATIONS = ("eel", "ele", "lee", "ell", "lel", "lle", "lll")
STAGE_ROLES: tuple[StageRole, ...] = get_args(StageRole)
CRITIC_KINDS: tuple[CriticKind, ...] = get_args(CriticKind)
META_PARAMETERS: tuple[MetaParameter, ...] = get_args(MetaParameter)


def straight_through(value: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    """``stop(value) + path - stop(path)``: the value of ``value``, the derivatives of ``path``."""
    return stop_gradient(value) + path - stop_gradient(path)


def detached_leaf(x: torch.Tensor) -> torch.Tensor:
    """A fresh leaf with ``x``'s value and no history (for a forward-only gradient evaluation)."""
    return stop_gradient(x).clone().requires_grad_(True)


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
        if self.kind not in CRITIC_KINDS:
            raise ValueError(f"critic.kind: expected one of {CRITIC_KINDS}, got {self.kind!r}")
        check_real("critic.noise", self.noise, minimum=0.0)
        check_int("critic.learned_episodes", self.learned_episodes, 1)


@dataclass(frozen=True)
class MLMC:
    """Randomized multilevel Monte Carlo for the inner stage: an inner loop without compositional
    bias (Blanchet & Glynn, WSC 2015; for nested expectations Hu, Chen & He, NeurIPS 2021; Asi et
    al. 2021; BACKGROUND.md section 8).

    Let ``F_n`` be the meta-gradient whose K inner updates each use ``n`` sampled episodes (the
    stage's estimator), so that ``E F_n -> F_inf`` (the inner loop made exact) as ``n`` grows. With
    ``n0`` the stage's ``n``, one estimate is::

        Y = F_{n0} + Delta_L / p_L,   L ~ p  (L >= 1),
        Delta_L = F_{n0 2^L} - (F^A_{n0 2^(L-1)} + F^B_{n0 2^(L-1)}) / 2

    with ``F^A``, ``F^B`` computed from the two halves of the ``n0 2^L`` episodes of every inner
    step (antithetic; the level-0 term is independent). Since ``F^A``, ``F^B`` are distributed as
    ``F_{n0 2^(L-1)}``, ``E Delta_L = E F_{n0 2^L} - E F_{n0 2^(L-1)}`` and the sum telescopes:
    ``E Y = lim_n E F_n``, no compositional bias.

    Choice of ``p``: ``p_L`` proportional to ``2^(-rate L)``. For a smooth inner map the first-order
    terms of the two halves cancel in ``Delta_L`` (the full mean is the mean of the half means), so
    ``Delta_L = O(1 / n_L)`` and ``Var Delta_L = O(2^(-2L))``, while a level costs ``O(2^L)``
    episodes. Then ``Var Y <= sum_L E[Delta_L^2] / p_L ~ sum_L 2^((rate - 2) L)`` is finite for
    ``rate < 2`` and the expected cost ``sum_L p_L 2^L ~ sum_L 2^((1 - rate) L)`` for ``rate > 1``:
    ``rate = 1.5`` balances the two (both series converge like ``2^(-L/2)``). Untruncated,
    ``p_L = (1 - q) q^(L-1)`` with ``q = 2^-rate``, and ``E 2^L = 2 (1 - q) / (1 - 2q)``.

    ``max_level``: truncation ``L_max`` (``p`` renormalised over ``1..L_max``). ``E Y`` is then
    ``E F_{n0 2^L_max}``: the compositional bias of ``n0 2^L_max`` episodes per inner step is
    left (``O(1 / (n0 2^L_max))`` for a smooth map, by the delta method), in exchange for a
    bounded cost per estimate. Any ``rate > 0`` is allowed when truncated.

    Coupling: the paths of a level share their random numbers (:class:`_CoupledSampler`). At
    inner step 0 all paths sit at ``theta_0``, so the halves are literally halves of the fine
    episodes; with K >= 2 the later steps replay the same uniforms at nearby policies, which a
    simulator allows (a real environment would only couple K = 1 exactly).
    """

    max_level: int | None = None
    rate: float = 1.5

    def __post_init__(self) -> None:
        if self.max_level is not None:
            check_int("mlmc.max_level", self.max_level, 1)
            check_real("mlmc.rate", self.rate, minimum=0.0, open_min=True)
        else:
            check_real("mlmc.rate", self.rate, minimum=1.0, maximum=2.0, open_min=True, open_max=True)

    @property
    def _ratio(self) -> float:
        return 2.0 ** (-self.rate)

    def probability(self, level: int) -> float:
        """``p_L`` of a level ``L >= 1`` (0 above the truncation)."""
        if level < 1 or (self.max_level is not None and level > self.max_level):
            return 0.0
        q = self._ratio
        if self.max_level is None:
            return (1.0 - q) * q ** (level - 1)
        return q ** (level - 1) * (1.0 - q) / (1.0 - q**self.max_level)

    def sample_levels(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` independent levels ``L ~ p`` (long ``[count]``, on the CPU)."""
        device = generator.device if generator is not None else "cpu"
        u = torch.rand(count, generator=generator, dtype=torch.float64, device=device).cpu()
        q = self._ratio
        if self.max_level is not None:
            u = u * (1.0 - q**self.max_level)  # inverse CDF of the renormalised geometric law
        levels = 1 + torch.floor(torch.log1p(-u) / math.log(q)).long()
        return levels if self.max_level is None else levels.clamp(max=self.max_level)

    def expected_scale(self) -> float:
        """``E[2^L]``: the expected fine-path size in units of ``n0``."""
        q = self._ratio
        if self.max_level is None:
            return 2.0 * (1.0 - q) / (1.0 - 2.0 * q)
        return sum(self.probability(level) * 2.0**level for level in range(1, self.max_level + 1))


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``estimator`` (a registered name or ``"exact"``), ``n`` fresh episodes per
    estimate, ``replay`` extra episodes from the behaviour policy at ``theta_0`` reweighted by
    importance ratios (needs an off-policy estimator), estimator keyword ``params``, and
    ``mlmc`` (an :class:`MLMC`, inner stage only): randomized multilevel Monte Carlo over the
    stage's sample size, ``n`` being the level-0 size ``n0``."""

    estimator: str = "exact"
    n: int = 0
    replay: int = 0
    params: tuple[tuple[str, float], ...] = ()
    mlmc: MLMC | None = None

    def __post_init__(self) -> None:
        if isinstance(self.mlmc, dict):  # rebuilt from a stored row
            object.__setattr__(self, "mlmc", MLMC(**self.mlmc))
        if self.mlmc is not None:
            if not isinstance(self.mlmc, MLMC):
                raise ValueError(f"mlmc: expected an MLMC or None, got {type(self.mlmc).__name__}")
            if self.estimator == "exact" or self.replay:
                raise ValueError("mlmc: needs an estimated stage without replay")
        if self.estimator != "exact":
            info = get_estimator(self.estimator)
            check_int("n", self.n, 1)
            check_int("replay", self.replay, 0)
            if self.replay and not info.off_policy:
                raise ValueError(
                    f"replay: estimator {self.estimator!r} cannot use replayed trajectories; "
                    "use an off-policy estimator such as 'off_policy_dice'"
                )
        elif self.replay:
            raise ValueError("replay: an exact stage uses no trajectories")
        object.__setattr__(self, "params", tuple(sorted(dict(self.params).items())))
        for key, value in self.params:
            check_real(f"params.{key}", value)

    @property
    def is_exact(self) -> bool:
        return self.estimator == "exact"


def stage_cost(stage: StageSpec, critic: CriticSpec) -> int:
    """Episodes one evaluation of ``stage`` samples: its ``n`` plus, for a critic-based estimator
    with a learned critic, the episodes the critic fits on (exact stages sample none; replayed
    episodes are counted once per estimate by the caller)."""
    if stage.is_exact:
        return 0
    learned = get_estimator(stage.estimator).uses_critic and critic.kind == "learned"
    return stage.n + (critic.learned_episodes if learned else 0)


@runtime_checkable
class StagedSpec(Protocol):
    """What every three-stage recipe offers (:class:`MetaGradientSpec`, ``LolaSpec``): one
    :class:`StageSpec` per role, its three-letter code and a plain-dict form for result rows."""

    inner: StageSpec
    hessian: StageSpec
    outer: StageSpec

    @property
    def combination(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class Staged:
    """Shared behaviour of the three-stage specs: the stage code, construction from a code,
    validation and a plain-dict form (satisfies :class:`StagedSpec`)."""

    inner: StageSpec
    hessian: StageSpec
    outer: StageSpec

    MLMC_ROLES: ClassVar[tuple[StageRole, ...]] = ()  # the stages whose sampler supports MLMC

    def check_stages(self) -> None:
        for name in STAGE_ROLES:
            if not isinstance(getattr(self, name), StageSpec):
                raise ValueError(f"{name}: expected a StageSpec, got {type(getattr(self, name)).__name__}")
            if getattr(self, name).mlmc is not None and name not in self.MLMC_ROLES:
                raise ValueError(
                    f"{name}.mlmc: {type(self).__name__} supports MLMC on {list(self.MLMC_ROLES)} only"
                )

    def stage(self, role: StageRole) -> StageSpec:
        """The stage of ``role``."""
        return getattr(self, role)

    @property
    def combination(self) -> str:
        """The three-letter stage code (inner, hessian, outer), ``e`` exact, ``l`` estimated."""
        return "".join("e" if s.is_exact else "l" for s in (self.inner, self.hessian, self.outer))

    @classmethod
    def from_combination(cls, combination: str, estimator: str, n: int, **kwargs: Any):
        """Spec with ``estimator`` and ``n`` episodes at every ``l`` stage of ``combination``."""
        if len(combination) != 3 or set(combination) - {"e", "l"}:
            raise ValueError(
                f"combination: expected three letters from 'e'/'l' such as 'lel', got {combination!r}"
            )
        stages = [StageSpec() if c == "e" else StageSpec(estimator, n) for c in combination]
        return cls(inner=stages[0], hessian=stages[1], outer=stages[2], **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for role in STAGE_ROLES:  # a stage without MLMC keeps the form (and cell key) it always had
            if out[role].get("mlmc", 0) is None:
                del out[role]["mlmc"]
        return out


@dataclass(frozen=True)
class MetaGradientSpec(Staged):
    """How to compute one meta-gradient estimate (see the module docstring).

    Attributes:
        inner, hessian, outer: the three stages.
        inner_steps: K >= 0; inner_lr: alpha.
        objective: ``"finite"`` (what the samples estimate) or ``"infinite"`` (paper parity).
        critic: the critic of advantage-based estimators.
        first_order: drop the Jacobian (FOMAML): ``d theta_{k+1} / d theta_k = I``.
        meta_parameter: ``"logits"`` (MAML, phi = theta_0) or ``"intrinsic_reward"`` (LIRPG, phi = eta).
        hessian_bias: ``c`` of the injected Hessian bias: ``mean(theta^2 (c + hessian_bias_noise eps))``
            added to the Jacobian path only, eps ~ N(0, 1) fresh per step; ``None``: none.
    """

    inner: StageSpec = field(default_factory=StageSpec)
    hessian: StageSpec = field(default_factory=StageSpec)
    outer: StageSpec = field(default_factory=StageSpec)
    inner_steps: int = 1
    inner_lr: float = 10.0
    objective: Objective = "finite"
    critic: CriticSpec = field(default_factory=CriticSpec)
    first_order: bool = False
    meta_parameter: MetaParameter = "logits"
    hessian_bias: float | None = None
    hessian_bias_noise: float = 0.3

    MLMC_ROLES: ClassVar[tuple[StageRole, ...]] = ("inner",)

    def __post_init__(self) -> None:
        self.check_stages()
        if self.inner.mlmc is not None and any(stage.replay for stage in (self.hessian, self.outer)):
            raise ValueError("mlmc: replayed episodes are not supported with an MLMC inner stage")
        check_int("inner_steps", self.inner_steps, 0)
        check_real("inner_lr", self.inner_lr)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {OBJECTIVES}, got {self.objective!r}")
        if self.meta_parameter not in META_PARAMETERS:
            raise ValueError(
                f"meta_parameter: expected one of {META_PARAMETERS}, got {self.meta_parameter!r}"
            )
        if self.hessian_bias is not None:
            check_real("hessian_bias", self.hessian_bias, minimum=0.0)
        check_real("hessian_bias_noise", self.hessian_bias_noise, minimum=0.0)


def episodes_per_estimate(spec: MetaGradientSpec) -> float:
    """Episodes one estimate under ``spec`` samples (expected, for an MLMC inner stage): each
    estimated stage's ``n`` per inner step (inner and Jacobian stages) or once (outer), replayed
    episodes once per role, and the episodes a learned critic fits on. The noisy-exact critic
    samples nothing. An int unless the inner stage uses MLMC (see :func:`_mlmc_level_cost`)."""

    total = spec.inner_steps * stage_cost(spec.inner, spec.critic) + stage_cost(spec.outer, spec.critic)
    if not spec.first_order:
        total += spec.inner_steps * stage_cost(spec.hessian, spec.critic)
    total += sum(stage.replay for stage in (spec.inner, spec.hessian, spec.outer))
    if spec.inner.mlmc is None:
        return total
    return total + _mlmc_level_cost(spec, spec.inner.mlmc.expected_scale())


def _mlmc_level_cost(spec: MetaGradientSpec, scale: float) -> float:
    """Episodes of the three paths of an MLMC level with ``2^L = scale`` (affine in ``scale``, so
    the expected cost is this at ``E[2^L]``). The fine path samples every stage (inner:
    ``n0 2^L`` per step); each half path samples, where its parameters differ from the fine
    path's (inner steps >= 1 and the outer stage), its own ``n0 2^(L-1)`` inner episodes and full
    Jacobian and outer stages. Step 0 is shared (all paths start at ``theta_0``)."""
    K, critic = spec.inner_steps, spec.critic
    learned = critic.learned_episodes if critic.kind == "learned" else 0

    def inner(n: float) -> float:
        uses_critic = get_estimator(spec.inner.estimator).uses_critic
        return n + (learned if uses_critic else 0)

    hessian = 0 if spec.first_order else stage_cost(spec.hessian, critic)
    fine = K * inner(spec.inner.n * scale) + K * hessian + stage_cost(spec.outer, critic)
    half = max(K - 1, 0) * (inner(spec.inner.n * scale / 2) + hessian) + (
        stage_cost(spec.outer, critic) if K else 0
    )
    return fine + 2 * half


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


@dataclass(frozen=True)
class RandomStreams:
    """Independent random streams of one batched estimate, one per kind of randomness.

    Common random numbers: every estimator scored on the same setting must see the same tasks,
    trajectories and critic noise, so that differences between estimators are paired. Drawing
    everything from one generator breaks this as soon as one estimator draws something another
    does not (a critic's noise, a learned critic's episodes, replayed episodes): every later
    trajectory shifts. Each kind therefore has its own generator, split from the caller's, and
    each stage role its own set (:meth:`by_role`), so what one stage draws never shifts another:

    * ``trajectories``: the fresh episodes of the stage, step after step (the engines draw a block
      of uniforms whose size depends only on the batch, never on the policy or the estimator, so
      the same stages consume the same numbers for every estimator);
    * ``replay``: the replayed episodes of off-policy stages;
    * ``critic``: critic noise and the episodes a learned critic fits on;
    * ``injected``: the noise of an injected Hessian bias.
    """

    trajectories: torch.Generator | None = None
    replay: torch.Generator | None = None
    critic: torch.Generator | None = None
    injected: torch.Generator | None = None

    @classmethod
    def split(cls, generator: torch.Generator | None) -> RandomStreams:
        """One child generator per stream, seeded from ``generator`` in a fixed order (on its
        device); ``None`` (torch's global generator) for every stream when ``generator`` is None."""
        if generator is None:
            return cls()
        names = [f.name for f in dataclasses.fields(cls)]
        seeds = torch.randint(0, 2**62, (len(names),), generator=generator, device=generator.device)
        children = {
            name: torch.Generator(device=generator.device).manual_seed(int(seed))
            for name, seed in zip(names, seeds.tolist(), strict=True)
        }
        return cls(**children)

    @classmethod
    def by_role(cls, generator: torch.Generator | None) -> dict[StageRole, RandomStreams]:
        """One :class:`RandomStreams` per stage role (inner, hessian, outer), split in that order."""
        return {role: cls.split(generator) for role in STAGE_ROLES}


class _Sampler:
    """State of one batched meta-gradient computation (task, spec, randomness, meta-parameters)."""

    def __init__(
        self,
        task: TabularTask,
        spec: MetaGradientSpec,
        repeats: int,
        generator: torch.Generator | None,
        eta: torch.Tensor | None,
    ) -> None:
        self.task, self.spec, self.repeats, self.eta = task, spec, repeats, eta
        self.streams = RandomStreams.by_role(generator)
        self.replays: dict[str, Trajectory] = {}
        self._values: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None

    def reward_table(self, role: StageRole) -> torch.Tensor | None:
        """``R + eta`` for the inner loop of LIRPG, else ``None`` (the task's own ``R``)."""
        if self.eta is None or role == "outer":
            return None
        return self.task.R.to(self.eta) + self.eta

    def critic(
        self, theta: torch.Tensor, role: StageRole, states: torch.Tensor, final_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Critic values ``[T, B, R, ...]`` along trajectories and their bootstrap ``[B, R, ...]``.

        ``noisy_exact``: ``V_exact + noise * N(0, 1) * ||V_exact|| / |S|`` with one fresh normal
        per table entry ``(repeat, step, state)`` that the trajectories read, shared by the
        visits to that entry: the same law as noising the whole table, without drawing the
        entries no episode visits.
        """
        spec = self.spec.critic
        theta = stop_gradient(theta)
        if spec.kind == "learned":
            return critic_values(self._learned_critic(theta, role), states, final_states, self.spec.objective)
        reward = self.reward_table(role)
        exact = self.exact_values(theta, None if reward is None else stop_gradient(reward))
        if spec.kind == "zero":
            exact = torch.zeros_like(exact)
        index, boot_index = critic_index(exact.shape, states, final_states, self.spec.objective)
        flat = exact.reshape(-1)
        read = torch.cat([index.reshape(-1), boot_index.reshape(-1)])
        values = flat[read]
        if spec.kind == "noisy_exact" and spec.noise > 0:
            S = self.task.num_states
            scale = exact.norm(dim=-1).reshape(-1) / S  # per table row (policy, step)
            entries, which = torch.unique(read, return_inverse=True)
            normal = torch.randn(
                entries.shape, generator=self.streams[role].critic, device=flat.device, dtype=flat.dtype
            )
            values = values + spec.noise * normal[which] * scale[read // S]
        return values[: index.numel()].view(index.shape), values[index.numel() :].view(boot_index.shape)

    def exact_values(self, theta: torch.Tensor, reward: torch.Tensor | None) -> torch.Tensor:
        """Exact value tables of the policies ``theta [R, *N, S, A]`` (no graph), computed once
        per distinct input: repeats that share their parameters (every repeat before its first
        sampled update) share one solve, and consecutive stages at the same parameters (the inner
        and Hessian stages of a step) reuse the last tables."""
        if self._values is not None:
            last_theta, last_reward, last = self._values
            if torch.equal(last_theta, theta) and (
                (reward is None and last_reward is None)
                or (reward is not None and last_reward is not None and torch.equal(last_reward, reward))
            ):
                return last
        first, first_reward = theta[:1], None if reward is None else reward[:1]
        shared = torch.equal(theta, first.expand_as(theta)) and (
            reward is None or torch.equal(reward, first_reward.expand_as(reward))
        )
        if shared:
            one = tabular_values(self.task, first, self.spec.objective, reward=first_reward)
            values = one.expand(theta.shape[0], *one.shape[1:])
        else:
            values = tabular_values(self.task, theta, self.spec.objective, reward=reward)
        self._values = (theta, reward, values)
        return values

    def _learned_critic(self, theta: torch.Tensor, role: StageRole) -> torch.Tensor:
        """Tabular Monte Carlo fit of the value from independent episodes (0 where unvisited)."""
        traj = rollout(
            self.task, theta, self.spec.critic.learned_episodes, generator=self.streams[role].critic
        )
        rewards = self._rewards(traj, role)
        returns = discounted_returns(stop_gradient(rewards), traj.discounts)  # [T, B, *G]
        return monte_carlo_values(
            returns, traj.states, self.task.num_states, time_dependent=self.spec.objective == "finite"
        )

    def _rewards(self, traj: Trajectory, role: StageRole) -> torch.Tensor:
        if self.eta is None or role == "outer":
            return traj.rewards
        return traj.rewards + tabular_gather(self.eta, traj.states, traj.actions)

    def objective(self, stage: StageSpec, theta: torch.Tensor, role: StageRole) -> torch.Tensor:
        """Scalar whose gradient w.r.t. ``theta [R, S, A]`` is the stage's per-repeat estimate."""
        if stage.is_exact:
            return tabular_return(self.task, theta, self.spec.objective, reward=self.reward_table(role)).sum()
        info = get_estimator(stage.estimator)
        traj = self.episodes(theta, stage.n, role)
        log_probs, behaviour = traj.log_probs, traj.behaviour_log_probs
        rewards, discounts = self._rewards(traj, role), traj.discounts
        states, finals = traj.states, traj.final_states
        if stage.replay:
            replay = self.replays[role]
            log_probs = torch.cat([log_probs, policy_log_probs(theta, replay.states, replay.actions)], dim=1)
            behaviour = torch.cat([behaviour, replay.behaviour_log_probs], dim=1)
            rewards = torch.cat([rewards, self._rewards(replay, role)], dim=1)
            discounts = torch.cat([discounts, replay.discounts], dim=1)
            states = torch.cat([states, replay.states], dim=1)
            finals = torch.cat([finals, replay.final_states], dim=0)
        values = bootstrap = None
        if info.uses_critic and self.spec.critic.kind != "zero":
            values, bootstrap = self.critic(theta, role, states, finals)
        surrogate = info.fn(
            log_probs,
            rewards,
            discounts,
            behaviour_log_probs=behaviour,
            values=values,
            bootstrap_value=bootstrap,
            **dict(stage.params),
        )
        return surrogate.mean(0).sum()

    def episodes(self, theta: torch.Tensor, n: int, role: StageRole) -> Trajectory:
        """``n`` fresh episodes of every policy in ``theta`` for a stage of ``role`` (from the
        role's own trajectory stream: common random numbers, see :class:`RandomStreams`)."""
        return rollout(self.task, theta, n, generator=self.streams[role].trajectories)

    def injected_bias(self, theta: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(
            theta.shape, generator=self.streams["hessian"].injected, device=theta.device, dtype=theta.dtype
        )
        c = self.spec.hessian_bias
        return (theta**2 * (c + self.spec.hessian_bias_noise * eps)).mean((-2, -1)).sum()


def _batched(task: TabularTask, x: torch.Tensor, repeats: int) -> torch.Tensor:
    """``R`` independent float64 leaf copies ``[R, *N, S, A]`` of ``x`` (per task of a batch)."""
    x = expand_to_tasks(task, stop_gradient(x).to(torch.float64))
    return x.expand(repeats, *task.batch_shape, *x.shape[-2:]).clone().requires_grad_(True)


def _check_table(task: TabularTask, x: torch.Tensor | None, name: str) -> None:
    shapes = [(task.num_states, task.num_actions)]
    if task.batch_shape:
        shapes.append((task.num_tasks, task.num_states, task.num_actions))
    if not isinstance(x, torch.Tensor) or tuple(x.shape) not in shapes:
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        expected = " or ".join(str(list(sh)) for sh in shapes)
        raise ValueError(f"{name}: expected shape {expected} ([S, A] or one per task), got {got}")


def sample_meta_gradients_wrt(
    task: TabularTask,
    logits: torch.Tensor,
    spec: MetaGradientSpec,
    repeats: int,
    *,
    wrt: tuple[str, ...] = ("logits",),
    generator: torch.Generator | None = None,
    eta: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Meta-gradient estimates w.r.t. several meta-parameters from the same samples.

    Like :func:`sample_meta_gradients`, but returns ``{name: [R, *N, S, A]}`` for every name in
    ``wrt`` (``"logits"``: ``theta_0``; ``"intrinsic_reward"``: ``eta``, which then enters the inner
    loop's rewards). ``spec.meta_parameter`` is ignored here. With a batch of N tasks the
    estimates are per task (``[R, N, S, A]``); a shared ``[S, A]`` start is copied to each task.
    """
    check_int("repeats", repeats, 1)
    _check_table(task, logits, "logits")
    unknown = set(wrt) - set(META_PARAMETERS)
    if unknown or not wrt:
        raise ValueError(f"wrt: expected names from {META_PARAMETERS}, got {wrt!r}")
    if "intrinsic_reward" in wrt:
        _check_table(task, eta, "eta")
    with torch.enable_grad():
        theta0 = _batched(task, logits, repeats)
        eta_r = _batched(task, eta.to(logits.device), repeats) if eta is not None else None
        if spec.inner.mlmc is not None:
            return _mlmc_meta_gradients(task, spec, theta0, eta_r, wrt, generator)
        sampler = _Sampler(task, spec, repeats, generator, eta_r)
        for role in STAGE_ROLES:
            stage = spec.stage(role)
            if stage.replay:
                sampler.replays[role] = rollout(
                    task, stop_gradient(theta0), stage.replay, generator=sampler.streams[role].replay
                )
        return _meta_gradients(sampler, theta0, eta_r, wrt)


def _meta_gradients(
    sampler: _Sampler, theta0: torch.Tensor, eta_r: torch.Tensor | None, wrt: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """The K-step inner loop from the leaves ``theta0`` (and ``eta_r``), the outer objective and
    its gradients w.r.t. ``wrt`` (detached)."""
    spec = sampler.spec
    theta = theta0
    for _ in range(spec.inner_steps):
        leaf = detached_leaf(theta)
        (g_inner,) = torch.autograd.grad(sampler.objective(spec.inner, leaf, "inner"), leaf)
        if spec.first_order:
            path = theta
        else:
            hess_obj = sampler.objective(spec.hessian, theta, "hessian")
            if spec.hessian_bias is not None:
                hess_obj = hess_obj + sampler.injected_bias(theta)
            (g_hess,) = torch.autograd.grad(hess_obj, theta, create_graph=True)
            path = theta + spec.inner_lr * g_hess
        theta = straight_through(theta + spec.inner_lr * g_inner, path)

    outer = sampler.objective(spec.outer, theta, "outer")
    params = {"logits": theta0, "intrinsic_reward": eta_r}
    inputs = [params[name] for name in wrt]
    grads = torch.autograd.grad(outer, inputs, allow_unused=True)
    return {
        name: (torch.zeros_like(x) if g is None else g).detach()
        for name, x, g in zip(wrt, inputs, grads, strict=True)
    }


class _CoupledSampler(_Sampler):
    """One path of an MLMC level (fine, or one antithetic half) with common random numbers.

    Every stage evaluation of step k draws from generators seeded by ``seeds[role, k]``, the
    same for the three paths of a level: the inner stage's episodes come in two blocks (``A``,
    ``B``) of ``n0 2^(L-1)`` episodes each (the fine path plays both, a half path one), the other
    stages' episodes from one shared stream, critic noise and injected bias from another. So
    the halves are exactly the half-size estimator in distribution, and each is coupled to the
    fine path (equal episodes at step 0; at later steps the same uniforms at nearby policies).
    """

    def __init__(
        self,
        task: TabularTask,
        spec: MetaGradientSpec,
        repeats: int,
        eta: torch.Tensor | None,
        seeds: list[list[list[int]]],
        blocks: tuple[int, ...],
        device: torch.device,
    ) -> None:
        super().__init__(task, spec, repeats, None, eta)
        self.seeds, self.blocks, self.device = seeds, blocks, device
        self.calls = dict.fromkeys(STAGE_ROLES, 0)
        self.block_streams: list[torch.Generator] = []

    def _stream(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def objective(self, stage: StageSpec, theta: torch.Tensor, role: StageRole) -> torch.Tensor:
        a, b, other = self.seeds[STAGE_ROLES.index(role)][self.calls[role]]
        self.calls[role] += 1
        # critic noise and learned critics from one shared stream, the injected bias from another
        self.streams[role] = RandomStreams(
            critic=self._stream(other), injected=self._stream((other + 1) % 2**62)
        )
        self.block_streams = (
            [self._stream((a, b)[i]) for i in self.blocks] if role == "inner" else [self._stream(a)]
        )
        return super().objective(stage, theta, role)

    def episodes(self, theta: torch.Tensor, n: int, role: StageRole) -> Trajectory:
        size = n // len(self.block_streams)
        return concat_episodes([rollout(self.task, theta, size, generator=g) for g in self.block_streams])


def concat_episodes(trajectories: list[Trajectory]) -> Trajectory:
    """One :class:`Trajectory` holding the episodes of several (same horizon and policies)."""
    if len(trajectories) == 1:
        return trajectories[0]
    return Trajectory(
        **{
            f.name: torch.cat(
                [getattr(t, f.name) for t in trajectories], dim=0 if f.name == "final_states" else 1
            )
            for f in dataclasses.fields(Trajectory)
        }
    )


def _mlmc_meta_gradients(
    task: TabularTask,
    spec: MetaGradientSpec,
    theta0: torch.Tensor,
    eta_r: torch.Tensor | None,
    wrt: tuple[str, ...],
    generator: torch.Generator | None,
) -> dict[str, torch.Tensor]:
    """Randomized MLMC (see :class:`MLMC`): per repeat, the level-0 estimate with ``n0`` inner
    episodes per step plus ``Delta_L / p_L`` for a level ``L`` drawn from ``p``; the repeats that
    drew the same level are one batch."""
    mlmc, n0, repeats = spec.inner.mlmc, spec.inner.n, theta0.shape[0]
    plain = dataclasses.replace(spec, inner=dataclasses.replace(spec.inner, mlmc=None))
    out = _meta_gradients(_Sampler(task, plain, repeats, generator, eta_r), theta0, eta_r, wrt)
    levels = mlmc.sample_levels(repeats, generator)
    device = theta0.device
    for level in sorted(set(levels.tolist())):
        idx = (levels == level).nonzero().flatten().to(device)
        half = n0 * 2 ** (level - 1)
        seeds = torch.randint(
            2**62,
            (len(STAGE_ROLES), spec.inner_steps + 1, 3),
            generator=generator,
            device=generator.device if generator is not None else "cpu",
        ).tolist()
        paths = []
        for blocks in ((0, 1), (0,), (1,)):  # fine, half A, half B
            path_spec = dataclasses.replace(
                plain, inner=dataclasses.replace(plain.inner, n=half * len(blocks))
            )
            leaf = detached_leaf(theta0[idx])
            eta_leaf = None if eta_r is None else detached_leaf(eta_r[idx])
            sampler = _CoupledSampler(task, path_spec, len(idx), eta_leaf, seeds, blocks, device)
            paths.append(_meta_gradients(sampler, leaf, eta_leaf, wrt))
        weight = 1.0 / mlmc.probability(level)
        for name in wrt:
            fine, half_a, half_b = (p[name] for p in paths)
            out[name][idx] += weight * (fine - 0.5 * (half_a + half_b))
    return out


def sample_meta_gradients(
    task: TabularTask,
    logits: torch.Tensor,
    spec: MetaGradientSpec,
    repeats: int,
    *,
    generator: torch.Generator | None = None,
    eta: torch.Tensor | None = None,
) -> torch.Tensor:
    """``repeats`` independent meta-gradient estimates under ``spec``, sampled as one batch.

    Args:
        task: the MDP, or a batch of N tasks (all adapted and scored in one batched call).
        logits: ``[S, A]`` initial policy logits ``theta_0`` (or ``[N, S, A]``, one per task).
        spec: the per-stage recipe.
        repeats: ``R >= 1`` independent estimates.
        generator: randomness for rollouts, critic noise and injected bias (split into
            :class:`RandomStreams`, so every estimator of a recipe sees the same episodes).
        eta: ``[S, A]`` intrinsic reward, required for ``meta_parameter="intrinsic_reward"``.
    Returns:
        ``[R, S, A]`` float64 estimates of ``d J_out(theta_K) / d phi`` (phi = theta_0 or eta);
        ``[R, N, S, A]`` (one per task) for a task batch.
    """
    lirpg = spec.meta_parameter == "intrinsic_reward"
    if lirpg and eta is None:
        raise ValueError("eta: meta_parameter='intrinsic_reward' needs an intrinsic reward table [S, A]")
    out = sample_meta_gradients_wrt(
        task,
        logits,
        spec,
        repeats,
        wrt=(spec.meta_parameter,),
        generator=generator,
        eta=eta if lirpg else None,
    )
    return out[spec.meta_parameter]


def exact_meta_gradient(
    task: TabularTask, logits: torch.Tensor, spec: MetaGradientSpec, *, eta: torch.Tensor | None = None
) -> torch.Tensor:
    """The exact float64 meta-gradient that ``spec`` estimates (no injected bias, exact Jacobian).

    ``first_order`` specs are still scored against the true meta-gradient: the first-order
    approximation is a bias source like any other.
    """
    if spec.meta_parameter == "intrinsic_reward":
        if eta is None:
            raise ValueError("eta: meta_parameter='intrinsic_reward' needs an intrinsic reward table [S, A]")
        return lirpg_meta_gradient(task, logits, eta, spec.inner_steps, spec.inner_lr, spec.objective)
    return maml_meta_gradient(task, logits, spec.inner_steps, spec.inner_lr, spec.objective)


@dataclass(frozen=True, eq=False)
class ExactInnerLoop:
    """The exact inner loop of a recipe at one start: the Hessians ``[K, D, D]`` of the inner
    objective at the exact iterates ``theta_0..theta_{K-1}`` and ``grad J(theta_K)`` ``[D]``
    (float64, ``D = |S||A|``), from which every injected-bias prediction of that loop follows."""

    hessians: torch.Tensor
    outer_gradient: torch.Tensor


def exact_inner_loop(task: TabularTask, logits: torch.Tensor, spec: MetaGradientSpec) -> ExactInnerLoop:
    """:class:`ExactInnerLoop` of ``spec``'s K exact steps of size alpha from ``logits [S, A]``."""
    if task.batch_shape:
        raise ValueError("task: exact_inner_loop takes one task, not a batch")
    _check_table(task, logits, "logits")
    shape = (task.num_states, task.num_actions)

    def objective(flat: torch.Tensor) -> torch.Tensor:
        return tabular_return(task, flat.reshape(shape), spec.objective)

    theta = stop_gradient(logits).to(torch.float64).reshape(-1)
    hessians = []
    with torch.enable_grad():
        for _ in range(spec.inner_steps):
            hessians.append(torch.autograd.functional.hessian(objective, theta, vectorize=True))
            leaf = detached_leaf(theta)
            (grad,) = torch.autograd.grad(objective(leaf), leaf)
            theta = theta + spec.inner_lr * grad
        leaf = detached_leaf(theta)
        (outer,) = torch.autograd.grad(objective(leaf), leaf)
    dim = shape[0] * shape[1]
    stacked = torch.stack(hessians) if hessians else torch.zeros(0, dim, dim, dtype=torch.float64)
    return ExactInnerLoop(stacked.detach(), outer.detach())


def expected_injected_meta_gradient(
    task: TabularTask,
    logits: torch.Tensor,
    spec: MetaGradientSpec,
    *,
    loop: ExactInnerLoop | None = None,
) -> torch.Tensor:
    """The exact expected meta-gradient under an injected Hessian bias, every stage exact.

    With ``spec.hessian_bias = c``, each inner step adds ``mean(theta^2 (c + s eps))`` (mean over
    the ``D = |S||A|`` entries, ``eps ~ N(0, 1)`` fresh per step and entry) to the Jacobian path
    only (Liu et al. 2022, ``decompose_hess_theory.py``). Its curvature is ``diag(2 (c + s eps) / D)``,
    so with the values exact the Jacobian of step k is ``I + alpha (H_k + diag(2 (c + s eps_k) / D))``
    with ``H_k`` the exact Hessian at the exact iterate ``theta_k``; the factors are independent
    across steps, so the expectation of their product is the product of their expectations and::

        E[estimate] = (I + alpha (H_0 + 2 c' I)) ... (I + alpha (H_{K-1} + 2 c' I)) grad J(theta_K)

    with ``c' = c / D`` (BACKGROUND.md section 4; the matrices are symmetric). Computed from the
    explicit float64 Hessians (:func:`exact_inner_loop`; pass ``loop`` to reuse them across values
    of ``c``), independently of the sampler; its distance to :func:`exact_meta_gradient` is the predicted
    bias, a polynomial in ``c`` of degree K.

    Args:
        task: one MDP (not a batch); logits: ``[S, A]``; spec: all stages exact, ``hessian_bias`` set.
    Returns:
        ``[S, A]`` float64.
    """
    if spec.hessian_bias is None or any(not spec.stage(r).is_exact for r in STAGE_ROLES):
        raise ValueError("spec: needs hessian_bias set and every stage exact")
    if spec.meta_parameter != "logits" or spec.first_order:
        raise ValueError(
            "spec: the injected-bias prediction is for the MAML meta-gradient (logits, not first order)"
        )
    loop = exact_inner_loop(task, logits, spec) if loop is None else loop
    dim = loop.outer_gradient.numel()
    shift = 1.0 + spec.inner_lr * 2.0 * spec.hessian_bias / dim
    vector = loop.outer_gradient
    for hessian in reversed(loop.hessians):
        vector = shift * vector + spec.inner_lr * (hessian.T @ vector)
    return vector.reshape(task.num_states, task.num_actions)
