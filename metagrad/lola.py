"""LOLA-DiCE and its decomposition: opponent-shaping gradients in memory-one games, sampled.

A LOLA learner (Foerster et al., AAMAS 2018) differentiates its value through its opponent's
learning step. For agent 1 with ``n`` lookahead steps of size ``lr``::

    theta2_{k+1} = theta2_k + lr grad_{theta2} V2(theta1, theta2_k),   g = d V1(theta1, theta2_n) / d theta1

LOLA-DiCE (Foerster et al., ICML 2018) estimates every piece from trajectories whose magic box
holds *both* agents' log-probs, so the sampled opponent step still depends on ``theta1``. Here
that computation is decomposed like the tabular benchmark (Liu et al., NeurIPS 2022, arXiv
2112.15400), each stage exact or sampled with its own batch:

* ``inner``: the forward value of each lookahead step (``grad_{theta2} V2`` estimate);
* ``hessian``: its Jacobian w.r.t. both agents' logits (the shaping term), through ``g_hess``;
* ``outer``: the gradient of ``V1`` at the looked-ahead pair.

Stages combine by the staged step the tabular sampler uses too
(:func:`~metagrad.staged.staged_inner_loop`), and :class:`GameSampler` is a
:class:`~metagrad.staged.StagedSampler`; the estimators are the registered ones of
:mod:`metagrad.estimators`, fed the *joint* log-probs ``log pi_1 + log pi_2``: ``dice_baseline`` is
LOLA-DiCE, ``off_policy_dice`` with ``replay`` is off-policy LOLA-DiCE (earlier trajectories
reweighted by importance ratios, the paper's fix for compositional bias), ``lvc`` is the low-bias
Hessian variant (same-time cross terms only), ``pg`` drops the cross terms entirely (no shaping
survives). No estimator math is rewritten here.

Off-policy LOLA-DiCE changes two things at once. Replay raises the lookahead's sample size; and,
given a critic, ``off_policy_dice`` baselines with the cumulative term
``(rho_{0:t-1} - rho_{0:t}) b(s_t)`` where ``dice_baseline`` uses ``(1 - box(log pi_t)) b(s_t)``:
a much stronger variance reduction that works without any replay. The IPD bench's ``off_policy``
experiment scores both apart on the same episodes, along the official protocol (FIFO buffer of
1024 episodes, :func:`replay_buffer` with ``behaviour`` of shape ``[J, 5]``); the official code
itself baselines with value tables regressed on immediate rewards, close to none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from metagrad.critics import CriticSpec, critic_values, monte_carlo_critic
from metagrad.envs.ipd import (
    STATE_SWAP,
    IPDTrajectory,
    check_gamma,
    check_memory_one_logits,
    get_game,
    ipd_rollout,
)
from metagrad.estimators import stop_gradient
from metagrad.exact import ipd_state_values, ipd_values, lola_gradient
from metagrad.registry import Registry
from metagrad.staged import (
    STAGE_ROLES,
    EstimatorInputs,
    Staged,
    StagedSampler,
    StageRole,
    StageSpec,
    mean_surrogate,
    repeated_leaf,
    stage_cost,
    staged_inner_loop,
)
from metagrad.validation import check_int, check_real

__all__ = [
    "LOLA_VARIANTS",
    "GameSampler",
    "LolaSpec",
    "LolaVariant",
    "episodes_per_lola_estimate",
    "exact_lola_target",
    "game_surrogate",
    "get_lola_variant",
    "lola_variant",
    "lookahead",
    "replay_buffer",
    "sample_lola_gradients",
    "seat_order",
    "tabular_game_critic",
    "with_replay",
]


@dataclass(frozen=True)
class LolaSpec(Staged):
    """How to compute one LOLA gradient estimate (see the module docstring).

    Attributes:
        inner, hessian, outer: the three stages (:class:`~metagrad.staged.StageSpec`).
        lookahead_steps: ``n >= 0`` opponent steps; lookahead_lr: their size.
        gamma: discount in ``[0, 1)``; horizon: episode length ``H`` of the samples *and* of the
            exact target (finite-horizon values: the same objective the samples estimate).
        game: ``"ipd"`` or ``"imp"``.
        critic: baseline of the critic-based estimators (``noisy_exact``: exact state values plus
            ``noise * N(0, 1) * ||V_t|| / 5``; ``zero``; ``learned``: tabular Monte Carlo fit from
            ``learned_episodes`` independent episodes).
        shared_lookahead: the practical LOLA-DiCE: one batch of trajectories gives both the value
            and the Jacobian of each lookahead step (needs ``inner == hessian``).
        agent: whose gradient (1 or 2); the other agent is the one looked ahead.
    """

    inner: StageSpec = field(default_factory=StageSpec)
    hessian: StageSpec = field(default_factory=StageSpec)
    outer: StageSpec = field(default_factory=StageSpec)
    lookahead_steps: int = 1
    lookahead_lr: float = 0.3
    gamma: float = 0.96
    horizon: int = 100
    game: str = "ipd"
    critic: CriticSpec = field(default_factory=CriticSpec)
    shared_lookahead: bool = False
    agent: int = 1

    def __post_init__(self) -> None:
        self.check_stages()
        check_int("lookahead_steps", self.lookahead_steps, 0)
        check_int("horizon", self.horizon, 1)
        check_real("lookahead_lr", self.lookahead_lr)
        check_gamma(self.gamma)
        get_game(self.game)
        if not isinstance(self.critic, CriticSpec):
            raise ValueError(f"critic: expected a CriticSpec, got {type(self.critic).__name__}")
        if self.agent not in (1, 2) or isinstance(self.agent, bool):
            raise ValueError(f"agent: expected 1 or 2, got {self.agent!r}")
        if self.shared_lookahead and self.inner != self.hessian:
            raise ValueError(
                "shared_lookahead: needs the same inner and hessian stage (one batch serves both)"
            )


def episodes_per_lola_estimate(spec: LolaSpec) -> int:
    """Episodes one estimate under ``spec`` samples: each sampled lookahead stage's ``n`` per step
    (one batch when the lookahead is shared), the outer ``n``, replayed episodes once per role,
    and the episodes a learned critic fits on per sampled objective."""

    look = stage_cost(spec.inner, spec.critic)
    if not spec.shared_lookahead:
        look += stage_cost(spec.hessian, spec.critic)
    total = spec.lookahead_steps * look + stage_cost(spec.outer, spec.critic)
    return total + sum(spec.stage(role).replay for role in _replay_roles(spec))


def _replay_roles(spec: LolaSpec) -> tuple[StageRole, ...]:
    """Stages that draw their own replay (a shared lookahead draws one for both)."""
    roles: tuple[StageRole, ...] = ("inner", "outer") if spec.shared_lookahead else STAGE_ROLES
    return tuple(role for role in roles if spec.stage(role).replay)


def lola_variant(
    name: str, n_inner: int = 128, n_outer: int = 128, *, replay: int = 0, **kwargs: Any
) -> LolaSpec:
    """The named, fully sampled LOLA estimators of :data:`LOLA_VARIANTS` as a :class:`LolaSpec`.

    ``n_inner`` episodes serve the lookahead (value and Jacobian, one shared batch, as in
    LOLA-DiCE), ``n_outer`` the outer gradient; ``replay`` earlier episodes join the lookahead of
    the off-policy variant.
    """
    variant = get_lola_variant(name)
    if variant.replays and replay < 1:
        raise ValueError("replay: the off-policy variant needs replay >= 1 earlier episodes")
    look = StageSpec(variant.lookahead, n_inner, replay if variant.replays else 0)
    return LolaSpec(
        inner=look,
        hessian=look,
        outer=StageSpec(variant.outer, n_outer),
        shared_lookahead=True,
        **kwargs,
    )


@dataclass(frozen=True)
class LolaVariant:
    """A fully sampled LOLA estimator: the estimator of the opponent's lookahead (value and
    Jacobian from one batch) and of the outer gradient; ``replays``: the lookahead reuses earlier
    episodes by importance weighting."""

    lookahead: str
    outer: str
    label: str
    replays: bool = False


# The one table of named LOLA estimators, used by the benchmark and by the learners.
LOLA_VARIANTS: Registry[LolaVariant] = Registry("LOLA variant")
LOLA_VARIANTS.register("lola_dice", LolaVariant("dice_baseline", "dice_baseline", "LOLA-DiCE"))
LOLA_VARIANTS.register(
    "off_policy_lola_dice",
    LolaVariant("off_policy_dice", "dice_baseline", "OffPolicy-LOLA-DiCE", replays=True),
)
LOLA_VARIANTS.register("lola_lvc", LolaVariant("lvc", "dice_baseline", "LOLA-LVC"))


def get_lola_variant(name: str) -> LolaVariant:
    """The entry of :data:`LOLA_VARIANTS`; an unknown name raises the registry's ``ValueError``
    listing them."""
    return LOLA_VARIANTS[name]


def game_surrogate(
    estimator: str,
    traj: IPDTrajectory,
    who: int,
    *,
    log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    params: dict[str, float] | None = None,
) -> torch.Tensor:
    """Mean surrogate of agent ``who``'s value from two-player trajectories (joint magic box).

    Args:
        estimator: a registered estimator name.
        traj: trajectories ``[T, B, *G]``.
        who: 1 or 2, whose rewards.
        log_probs: joint log-probs ``[T, B, *G]`` under the parameters being differentiated
            (default ``traj.joint_log_probs``; pass recomputed ones for replayed data).
        values, bootstrap_value: critic ``[T, B, *G]`` and ``[B, *G]`` for critic-based estimators.
    Returns:
        ``[*G]``: the estimator's surrogate averaged over episodes; its derivatives w.r.t. both
        agents' logits estimate those of ``V_who``.
    """
    return mean_surrogate(
        estimator,
        traj.joint_log_probs if log_probs is None else log_probs,
        traj.rewards(who),
        traj.discounts,
        behaviour_log_probs=traj.joint_behaviour_log_probs,
        values=values,
        bootstrap_value=bootstrap_value,
        params=params,
    )


def with_replay(
    traj: IPDTrajectory, replay: IPDTrajectory, theta1: torch.Tensor, theta2: torch.Tensor
) -> tuple[IPDTrajectory, torch.Tensor]:
    """Fresh episodes of ``(theta1, theta2)`` joined by replayed ones of earlier policies, with the
    joint log-probs of all of them under ``(theta1, theta2)`` (the replayed ones recomputed;
    their behaviour log-probs stay the stored ones, for the importance ratios)."""
    log_probs = torch.cat([traj.joint_log_probs, replay.joint_log_probs_under(theta1, theta2)], dim=1)
    return IPDTrajectory.concat([traj, replay]), log_probs


def tabular_game_critic(traj: IPDTrajectory, who: int) -> torch.Tensor:
    """Tabular Monte Carlo fit ``[*G, H + 1, 5]`` of agent ``who``'s time-dependent state values.

    The mean discounted return-to-go from each (step, joint state) over the episodes of ``traj``
    (0 where unvisited). Fit it on episodes independent of the ones it will baseline.
    """
    return monte_carlo_critic(traj.rewards(who), traj.discounts, traj.states, len(STATE_SWAP))


class GameSampler(StagedSampler[LolaSpec]):
    """Stage objectives of one batched LOLA computation (spec, randomness, replay buffers).

    Parameters are batches ``[R, 5]`` of independent pairs; every objective of agent ``who``'s
    value (:meth:`objective` with the point ``theta1, theta2, who``) returns a scalar whose
    gradient w.r.t. the logits is the per-pair estimate.
    """

    def rollout(
        self,
        theta1: torch.Tensor,
        theta2: torch.Tensor,
        n: int,
        role: StageRole = "inner",
        stream: str = "trajectories",
    ) -> IPDTrajectory:
        """``n`` episodes of the pair from one of the role's
        :class:`~metagrad.staged.RandomStreams`."""
        s = self.spec
        return ipd_rollout(
            theta1,
            theta2,
            n,
            s.horizon,
            game=s.game,
            gamma=s.gamma,
            generator=getattr(self.streams[role], stream),
        )

    def exact_objective(
        self, role: StageRole, theta1: torch.Tensor, theta2: torch.Tensor, who: int
    ) -> torch.Tensor:
        s = self.spec
        return ipd_values(theta1, theta2, s.gamma, s.horizon, s.game)[who - 1].sum()

    def estimator_inputs(
        self, stage: StageSpec, role: StageRole, theta1: torch.Tensor, theta2: torch.Tensor, who: int
    ) -> EstimatorInputs:
        """``n`` fresh episodes of the pair, joined by the role's replayed ones (joint log-probs
        recomputed under the pair), with agent ``who``'s rewards."""
        traj = self.rollout(theta1, theta2, stage.n, role)
        log_probs = traj.joint_log_probs
        if stage.replay:
            traj, log_probs = with_replay(traj, self.replays[role], theta1, theta2)
        return EstimatorInputs(
            log_probs,
            traj.rewards(who),
            traj.discounts,
            traj.joint_behaviour_log_probs,
            traj.states,
            traj.final_states,
        )

    def stage_critic(
        self, role: StageRole, inputs: EstimatorInputs, theta1: torch.Tensor, theta2: torch.Tensor, who: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Critic values ``[T, B, R]`` and bootstrap ``[B, R]`` of ``V_who`` along the stage's
        episodes: exact finite-horizon state values plus ``noise * N(0, 1) * ||V_t|| / 5`` per
        table (``noisy_exact``), or a Monte Carlo fit on independent episodes (``learned``)."""
        c = self.spec.critic
        t1, t2 = stop_gradient(theta1), stop_gradient(theta2)
        if c.kind == "learned":
            table = tabular_game_critic(self.rollout(t1, t2, c.learned_episodes, role, "critic"), who)
        else:
            table = ipd_state_values(t1, t2, self.spec.gamma, self.spec.horizon, self.spec.game)[who - 1]
            if c.noise > 0:
                eps = torch.randn(
                    table.shape, generator=self.streams[role].critic, dtype=table.dtype, device=table.device
                )
                table = table + c.noise * eps * table.norm(dim=-1, keepdim=True) / table.shape[-1]
        return critic_values(table, inputs.states, inputs.final_states, "finite")


def replay_buffer(
    sampler: GameSampler,
    mu1: torch.Tensor,
    mu2: torch.Tensor,
    episodes: int,
    repeats: int,
    role: StageRole = "inner",
) -> IPDTrajectory:
    """``episodes`` replayed episodes per repeat, ``[T, episodes, R]``, from the role's replay stream:
    split evenly over the J behaviour pairs ``mu1, mu2 [J, 5]`` (or ``[5]``, J = 1), batch j
    played by pair j, each episode keeping its own behaviour log-probs for the importance ratios.
    """
    mu1, mu2 = mu1.reshape(-1, 5), mu2.reshape(-1, 5)
    batches = mu1.shape[0]
    if episodes % batches:
        raise ValueError(f"replay: {episodes} episodes do not split evenly over {batches} behaviour pairs")
    shape = (repeats, batches, 5)
    traj = sampler.rollout(
        stop_gradient(mu1).to(torch.float64).expand(shape),
        stop_gradient(mu2).to(torch.float64).expand(shape),
        episodes // batches,
        role,
        "replay",
    )  # [T, b, R, J]

    def merge(x: torch.Tensor, final: bool) -> torch.Tensor:
        if final:  # [b, R, J] -> [J * b, R]
            return x.permute(2, 0, 1).reshape(episodes, repeats)
        return x.permute(0, 3, 1, 2).reshape(x.shape[0], episodes, repeats)

    return IPDTrajectory(
        **{
            f.name: merge(getattr(traj, f.name), f.name == "final_states")
            for f in dataclasses.fields(IPDTrajectory)
        }
    )


def sample_lola_gradients(
    theta1: torch.Tensor,
    theta2: torch.Tensor,
    spec: LolaSpec,
    repeats: int,
    *,
    generator: torch.Generator | None = None,
    behaviour: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``repeats`` independent LOLA gradient estimates under ``spec``, sampled as one batch.

    Args:
        theta1, theta2: ``[5]`` logits of the two agents.
        spec: the per-stage recipe (``spec.agent`` says whose gradient).
        repeats: ``R >= 1``.
        generator: randomness for rollouts and critic noise.
        behaviour: ``(mu1, mu2)`` logits of the earlier policies whose episodes fill the replay of
            off-policy stages (default: the current pair): ``[5]`` each for one earlier pair, or
            ``[J, 5]`` for a buffer of J batches, one per earlier pair (a pair may repeat), the
            replay of ``M`` episodes split into J batches of ``M / J`` (e.g. the FIFO buffer of
            the official off-policy LOLA-DiCE, :func:`replay_buffer`). Replayed episodes come from
            their own random stream, so the fresh episodes are the same with and without replay.
    Returns:
        ``[R, 5]`` float64 estimates of :func:`metagrad.exact.lola_gradient` for ``spec.agent``.
    """
    check_int("repeats", repeats, 1)
    for name, x in (("theta1", theta1), ("theta2", theta2)):
        check_memory_one_logits(x, name)
        if x.ndim != 1:
            raise ValueError(f"{name}: expected one policy of shape [5], got {list(x.shape)}")
    mu1, mu2 = (theta1, theta2) if behaviour is None else behaviour
    check_memory_one_logits(mu1, "behaviour[0]")
    check_memory_one_logits(mu2, "behaviour[1]")
    if mu1.shape != mu2.shape or mu1.ndim > 2:
        raise ValueError(
            f"behaviour: expected two [5] or two [J, 5] logits, got {list(mu1.shape)} and {list(mu2.shape)}"
        )
    sampler = GameSampler(spec, generator)
    for role in _replay_roles(spec):
        stage = spec.stage(role)
        if stage.replay:
            sampler.replays[role] = replay_buffer(sampler, mu1, mu2, stage.replay, repeats, role)
    agent, opponent = spec.agent, 3 - spec.agent

    with torch.enable_grad():
        own = repeated_leaf(theta1 if agent == 1 else theta2, repeats)
        other = repeated_leaf(theta2 if agent == 1 else theta1, repeats)

        def value_objective(_step: int, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
            return sampler.objective(spec.inner, "inner", t1, t2, opponent)

        def jacobian_objective(_step: int, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
            return sampler.objective(spec.hessian, "hessian", t1, t2, opponent)

        other = lookahead(
            own,
            other,
            agent=agent,
            steps=spec.lookahead_steps,
            lr=spec.lookahead_lr,
            value_objective=value_objective,
            jacobian_objective=None if spec.shared_lookahead else jacobian_objective,
        )
        outer = sampler.objective(spec.outer, "outer", *seat_order(agent, own, other), agent)
        (grad,) = torch.autograd.grad(outer, own, allow_unused=True)
    return torch.zeros_like(own).detach() if grad is None else grad.detach()


def seat_order(agent: int, own: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(theta1, theta2)`` from agent ``agent``'s own logits and its opponent's."""
    return (own, other) if agent == 1 else (other, own)


LookaheadObjective = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def lookahead(
    own: torch.Tensor,
    other: torch.Tensor,
    *,
    agent: int,
    steps: int,
    lr: float,
    value_objective: LookaheadObjective,
    jacobian_objective: LookaheadObjective | None = None,
) -> torch.Tensor:
    """The opponent's logits after ``steps`` (estimated) naive ascent steps of size ``lr``,
    a differentiable function of both agents' logits: the LOLA lookahead.

    The one lookahead loop (a :func:`~metagrad.staged.staged_inner_loop` over the opponent's
    logits): the benchmark scores it and the learners of :mod:`metagrad.agents.lola` train with it.

    Args:
        own, other: the looking-ahead agent's and the opponent's logits ``[..., 5]`` (``own`` is
            agent ``agent``'s, in the graph).
        value_objective: ``(step, theta1, theta2) -> scalar`` whose gradient w.r.t. the opponent's
            logits estimates ``grad V_opponent`` at step ``step`` (called with the pair in seat
            order). With ``jacobian_objective=None`` one call gives both the value and the
            Jacobian of the step (the practical LOLA-DiCE: ``other + lr g``, ``g`` with a graph).
        jacobian_objective: a separate estimate for the Jacobian of each step; the step is then
            combined straight-through (Liu et al. 2022):
            ``stop(other + lr g_value(stop(own), stop(other))) + (other + lr g_jac) - stop(...)``.
    Returns:
        The looked-ahead opponent logits (same shape as ``other``).
    """

    if jacobian_objective is None:

        def shared(step: int, x: torch.Tensor) -> torch.Tensor:
            return value_objective(step, *seat_order(agent, own, x))

        return staged_inner_loop(other, steps, lr, shared)

    def value(step: int, leaf: torch.Tensor) -> torch.Tensor:
        return value_objective(step, *seat_order(agent, stop_gradient(own), leaf))

    def jacobian(step: int, x: torch.Tensor) -> torch.Tensor:
        return jacobian_objective(step, *seat_order(agent, own, x))

    return staged_inner_loop(other, steps, lr, value, jacobian)


def exact_lola_target(theta1: torch.Tensor, theta2: torch.Tensor, spec: LolaSpec) -> torch.Tensor:
    """The exact float64 LOLA gradient ``[5]`` that ``spec`` estimates (same horizon and gamma)."""
    return lola_gradient(
        theta1,
        theta2,
        spec.gamma,
        spec.lookahead_lr,
        spec.lookahead_steps,
        spec.horizon,
        game=spec.game,
        agent=spec.agent,
    )
