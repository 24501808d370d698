"""The staged step: one inner update whose value, Jacobian and outer gradient come from separate
estimates, and the pieces every staged sampler shares.

Liu et al. (NeurIPS 2022, arXiv 2112.15400) split a gradient-based meta-RL meta-gradient into
three stages, each computed exactly or from its own samples:

* ``inner``: the forward value of each inner update ``x + lr g_inner(x)``;
* ``hessian``: the Jacobian of each inner update, through ``g_hess`` (created with a graph);
* ``outer``: the gradient of the outer objective at the last iterate.

They combine straight-through (:func:`staged_step`)::

    x_{k+1} = stop(x_k + lr g_inner) + (x_k + lr g_hess) - stop(x_k + lr g_hess)

so the value follows the inner estimate and the derivatives follow the Hessian estimate. Stage
combinations are named by three letters (inner, hessian, outer), ``e`` exact, ``l`` estimated.

The same step serves every sampler: MAML and LIRPG meta-gradients on tabular MDPs
(:mod:`metagrad.decomposed`, where ``x`` is the policy logits and the meta-parameters enter the
objectives), and the LOLA lookahead (:mod:`metagrad.lola`, where ``x`` is the opponent's logits).
A sampler subclasses :class:`StagedSampler` (spec, per-role random streams, replay buffers, one
way of turning a sampled stage into a surrogate) and runs :func:`staged_inner_loop`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, get_args, runtime_checkable

import torch

from metagrad.critics import CriticSpec
from metagrad.estimators import get_estimator, stop_gradient
from metagrad.mlmc import MLMC
from metagrad.seeding import SEED_BITS, torch_generator
from metagrad.validation import check_int, check_real

__all__ = [
    "COMBINATIONS",
    "STAGE_ROLES",
    "EstimatorInputs",
    "RandomStreams",
    "StageObjective",
    "StageRole",
    "StageSpec",
    "Staged",
    "StagedSampler",
    "StagedSpec",
    "detached_leaf",
    "mean_surrogate",
    "repeated_leaf",
    "stage_cost",
    "staged_inner_loop",
    "staged_step",
    "straight_through",
]

StageRole = Literal["inner", "hessian", "outer"]
STAGE_ROLES: tuple[StageRole, ...] = get_args(StageRole)
COMBINATIONS = ("eel", "ele", "lee", "ell", "lel", "lle", "lll")


# ------------------------------------------------------------------------------------------------
# Graph cuts
# ------------------------------------------------------------------------------------------------


def straight_through(value: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    """``stop(value) + path - stop(path)``: the value of ``value``, the derivatives of ``path``."""
    return stop_gradient(value) + path - stop_gradient(path)


def detached_leaf(x: torch.Tensor) -> torch.Tensor:
    """A fresh leaf with ``x``'s value and no history (for a forward-only gradient evaluation)."""
    return stop_gradient(x).clone().requires_grad_(True)


def repeated_leaf(x: torch.Tensor, repeats: int) -> torch.Tensor:
    """``repeats`` independent float64 leaf copies ``[R, *x.shape]`` of ``x`` (no history): the
    parameters of ``R`` estimates computed as one batch."""
    x = stop_gradient(x).to(torch.float64)
    return x.expand(repeats, *x.shape).clone().requires_grad_(True)


# ------------------------------------------------------------------------------------------------
# Stages and staged specs
# ------------------------------------------------------------------------------------------------


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
    """What every three-stage recipe offers (``MetaGradientSpec``, ``LolaSpec``): one
    :class:`StageSpec` per role, the critic of its advantage-based stages, its three-letter code
    and a plain-dict form for result rows."""

    inner: StageSpec
    hessian: StageSpec
    outer: StageSpec
    critic: CriticSpec

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
        seeds = torch.randint(0, 2**SEED_BITS, (len(names),), generator=generator, device=generator.device)
        children = {
            name: torch_generator(int(seed), device=generator.device)
            for name, seed in zip(names, seeds.tolist(), strict=True)
        }
        return cls(**children)

    @classmethod
    def by_role(cls, generator: torch.Generator | None) -> dict[StageRole, RandomStreams]:
        """One :class:`RandomStreams` per stage role (inner, hessian, outer), split in that order."""
        return {role: cls.split(generator) for role in STAGE_ROLES}


# ------------------------------------------------------------------------------------------------
# The staged step
# ------------------------------------------------------------------------------------------------

# ``(step, x) -> scalar`` whose gradient w.r.t. ``x`` estimates that of the inner objective at
# inner step ``step`` (the sum over a batch of independent parameter copies).
StageObjective = Callable[[int, torch.Tensor], torch.Tensor]


def staged_step(
    x: torch.Tensor,
    lr: float,
    value: Callable[[torch.Tensor], torch.Tensor],
    jacobian: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    first_order: bool = False,
) -> torch.Tensor:
    """One ascent step ``x + lr g`` whose value and derivatives come from separate objectives.

    Args:
        x: the parameters ``[...]``, in the graph of whatever they depend on.
        lr: the step size.
        value: objective whose gradient, taken at a detached copy of ``x``, is the step's value.
        jacobian: objective whose gradient, taken at ``x`` with a graph, carries the step's
            derivatives (w.r.t. ``x`` and whatever the objective closes over, such as
            meta-parameters); the step is straight-through. ``None``: ``value`` serves both
            (one batch of samples, ``x + lr grad value(x)`` with a graph).
        first_order: the step's Jacobian is the identity (``jacobian`` is not evaluated).
    Returns:
        ``x_{k+1}``, same shape as ``x``.
    """
    if jacobian is None and not first_order:
        (g,) = torch.autograd.grad(value(x), x, create_graph=True)
        return x + lr * g
    leaf = detached_leaf(x)
    (g_value,) = torch.autograd.grad(value(leaf), leaf)
    if first_order:
        path = x
    else:
        (g_jac,) = torch.autograd.grad(jacobian(x), x, create_graph=True)  # type: ignore[misc]
        path = x + lr * g_jac
    return straight_through(x + lr * g_value, path)


def staged_inner_loop(
    x: torch.Tensor,
    steps: int,
    lr: float,
    value: StageObjective,
    jacobian: StageObjective | None = None,
    *,
    first_order: bool = False,
) -> torch.Tensor:
    """``steps`` :func:`staged_step` s from ``x``; the objectives take the step index first."""
    for step in range(steps):
        x = staged_step(
            x,
            lr,
            partial(value, step),
            None if jacobian is None else partial(jacobian, step),
            first_order=first_order,
        )
    return x


# ------------------------------------------------------------------------------------------------
# Samplers
# ------------------------------------------------------------------------------------------------


def mean_surrogate(
    estimator: str,
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    params: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """The registered ``estimator``'s surrogate averaged over episodes, ``[*G]`` from ``[T, B, *G]``
    inputs (the critic is passed only to estimators that use one)."""
    info = get_estimator(estimator)
    surrogate = info.fn(
        log_probs,
        rewards,
        discounts,
        behaviour_log_probs=behaviour_log_probs,
        values=values if info.uses_critic else None,
        bootstrap_value=bootstrap_value if info.uses_critic else None,
        **dict(params or {}),
    )
    return surrogate.mean(0)


@dataclass(frozen=True, eq=False)
class EstimatorInputs:
    """What a sampled stage feeds its estimator: time-major ``[T, B, *G]`` log-probabilities under
    the parameters being differentiated, rewards, discounts and behaviour log-probabilities, and
    the states ``[T, B, *G]`` and final states ``[B, *G]`` a critic reads its values at."""

    log_probs: torch.Tensor
    rewards: torch.Tensor
    discounts: torch.Tensor
    behaviour_log_probs: torch.Tensor
    states: torch.Tensor
    final_states: torch.Tensor


SpecT = TypeVar("SpecT", bound=StagedSpec)


class StagedSampler(Generic[SpecT]):
    """The stage objectives of one batched staged computation.

    Holds the spec, one set of :class:`RandomStreams` per stage role (split from the caller's
    generator: common random numbers across estimators) and the replayed episodes of off-policy
    stages (``replays[role]``, filled by the caller). :meth:`objective` turns a stage into a
    scalar whose gradient w.r.t. the parameters is the per-repeat estimate. A sampler supplies:

    * :meth:`exact_objective`: the exact objective of a role at the parameters;
    * :meth:`estimator_inputs`: the stage's episodes (fresh, joined by any replay);
    * :meth:`stage_critic`: critic values and bootstrap along them (asked for only when the
      stage's estimator uses a critic and the spec's critic is not ``"zero"``).

    The parameters (``*point``) are whatever the sampler differentiates: the logits ``theta``
    of a tabular policy, or both agents' logits and the agent whose value it is in a game.
    """

    def __init__(self, spec: SpecT, generator: torch.Generator | None = None) -> None:
        self.spec = spec
        self.streams = RandomStreams.by_role(generator)
        self.replays: dict[StageRole, Any] = {}

    def objective(self, stage: StageSpec, role: StageRole, *point: Any) -> torch.Tensor:
        """Scalar whose gradient w.r.t. the parameters is the stage's per-repeat estimate."""
        if stage.is_exact:
            return self.exact_objective(role, *point)
        inputs = self.estimator_inputs(stage, role, *point)
        values = bootstrap = None
        if get_estimator(stage.estimator).uses_critic and self.spec.critic.kind != "zero":
            values, bootstrap = self.stage_critic(role, inputs, *point)
        return mean_surrogate(
            stage.estimator,
            inputs.log_probs,
            inputs.rewards,
            inputs.discounts,
            behaviour_log_probs=inputs.behaviour_log_probs,
            values=values,
            bootstrap_value=bootstrap,
            params=dict(stage.params),
        ).sum()

    def exact_objective(self, role: StageRole, *point: Any) -> torch.Tensor:
        raise NotImplementedError

    def estimator_inputs(self, stage: StageSpec, role: StageRole, *point: Any) -> EstimatorInputs:
        raise NotImplementedError

    def stage_critic(
        self, role: StageRole, inputs: EstimatorInputs, *point: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError
