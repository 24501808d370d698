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

Stages combine straight-through (:func:`metagrad.decomposed.straight_through`); the estimators
are the registered ones of :mod:`metagrad.estimators`, fed the *joint* log-probs
``log pi_1 + log pi_2``: ``dice_baseline`` is LOLA-DiCE, ``off_policy_dice`` with ``replay`` is
off-policy LOLA-DiCE (earlier trajectories reweighted by importance ratios, the paper's fix for
compositional bias), ``lvc`` is the low-bias Hessian variant (same-time cross terms only), ``pg``
drops the cross terms entirely (no shaping survives). No estimator math is rewritten here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from envs.ipd import (
    STATE_SWAP,
    IPDTrajectory,
    check_gamma,
    check_memory_one_logits,
    get_game,
    ipd_rollout,
)
from envs.validation import check_int
from metagrad.decomposed import (
    CriticSpec,
    StagedSpec,
    StageSpec,
    critic_values,
    detached_leaf,
    monte_carlo_values,
    straight_through,
)
from metagrad.estimators import discounted_returns, get_estimator, stop_gradient
from metagrad.exact import ipd_state_values, ipd_values, lola_gradient

__all__ = [
    "LOLA_VARIANTS",
    "GameSampler",
    "LolaSpec",
    "episodes_per_lola_estimate",
    "exact_lola_target",
    "game_surrogate",
    "lola_variant",
    "sample_lola_gradients",
    "tabular_game_critic",
    "with_replay",
]


@dataclass(frozen=True)
class LolaSpec(StagedSpec):
    """How to compute one LOLA gradient estimate (see the module docstring).

    Attributes:
        inner, hessian, outer: the three stages (:class:`~metagrad.decomposed.StageSpec`).
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
        lr = self.lookahead_lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not abs(lr) < float("inf"):
            raise ValueError(f"lookahead_lr: expected a finite number, got {lr!r}")
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

    def cost(stage: StageSpec) -> int:
        if stage.is_exact:
            return 0
        learned = get_estimator(stage.estimator).uses_critic and spec.critic.kind == "learned"
        return stage.n + (spec.critic.learned_episodes if learned else 0)

    look = cost(spec.inner) if spec.shared_lookahead else cost(spec.inner) + cost(spec.hessian)
    total = spec.lookahead_steps * look + cost(spec.outer)
    return total + sum(getattr(spec, role).replay for role in _replay_roles(spec))


def _replay_roles(spec: LolaSpec) -> tuple[str, ...]:
    """Stages that draw their own replay (a shared lookahead draws one for both)."""
    roles = ("inner", "outer") if spec.shared_lookahead else ("inner", "hessian", "outer")
    return tuple(role for role in roles if getattr(spec, role).replay)


def lola_variant(
    name: str, n_inner: int = 128, n_outer: int = 128, *, replay: int = 0, **kwargs: Any
) -> LolaSpec:
    """The named, fully sampled LOLA estimators of :data:`LOLA_VARIANTS` as a :class:`LolaSpec`.

    ``n_inner`` episodes serve the lookahead (value and Jacobian, one shared batch, as in
    LOLA-DiCE), ``n_outer`` the outer gradient; ``replay`` earlier episodes join the lookahead of
    the off-policy variant.
    """
    if name not in LOLA_VARIANTS:
        raise ValueError(f"variant: unknown name {name!r}; known: {sorted(LOLA_VARIANTS)}")
    look_est, outer_est = LOLA_VARIANTS[name]
    if look_est == "off_policy_dice" and replay < 1:
        raise ValueError("replay: the off-policy variant needs replay >= 1 earlier episodes")
    look = StageSpec(look_est, n_inner, replay if look_est == "off_policy_dice" else 0)
    return LolaSpec(
        inner=look, hessian=look, outer=StageSpec(outer_est, n_outer), shared_lookahead=True, **kwargs
    )


# variant -> (lookahead estimator, outer estimator)
LOLA_VARIANTS: dict[str, tuple[str, str]] = {
    "lola_dice": ("dice_baseline", "dice_baseline"),
    "off_policy_lola_dice": ("off_policy_dice", "dice_baseline"),
    "lola_lvc": ("lvc", "dice_baseline"),
}


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
    info = get_estimator(estimator)
    surrogate = info.fn(
        traj.joint_log_probs if log_probs is None else log_probs,
        traj.rewards(who),
        traj.discounts,
        behaviour_log_probs=traj.joint_behaviour_log_probs,
        values=values if info.uses_critic else None,
        bootstrap_value=bootstrap_value if info.uses_critic else None,
        **(params or {}),
    )
    return surrogate.mean(0)


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
    returns = discounted_returns(stop_gradient(traj.rewards(who)), traj.discounts)  # [T, B, *G]
    return monte_carlo_values(returns, traj.states, len(STATE_SWAP))


class GameSampler:
    """Stage objectives of one batched LOLA computation (spec, randomness, replay buffers).

    Parameters are batches ``[R, 5]`` of independent pairs; every objective returns a scalar
    whose gradient w.r.t. the logits is the per-pair estimate.
    """

    def __init__(
        self,
        spec: LolaSpec,
        generator: torch.Generator | None = None,
        replays: dict[str, IPDTrajectory] | None = None,
    ) -> None:
        self.spec, self.generator = spec, generator
        self.replays = replays or {}

    def rollout(self, theta1: torch.Tensor, theta2: torch.Tensor, n: int) -> IPDTrajectory:
        s = self.spec
        return ipd_rollout(theta1, theta2, n, s.horizon, game=s.game, gamma=s.gamma, generator=self.generator)

    def critic(
        self, theta1: torch.Tensor, theta2: torch.Tensor, who: int, traj: IPDTrajectory
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """Critic values ``[T, B, R]`` and bootstrap ``[B, R]`` of ``V_who`` along ``traj``."""
        c = self.spec.critic
        if c.kind == "zero":
            return None, None
        t1, t2 = stop_gradient(theta1), stop_gradient(theta2)
        if c.kind == "learned":
            table = tabular_game_critic(self.rollout(t1, t2, c.learned_episodes), who)
        else:
            table = ipd_state_values(t1, t2, self.spec.gamma, self.spec.horizon, self.spec.game)[who - 1]
            if c.noise > 0:
                eps = torch.randn(
                    table.shape, generator=self.generator, dtype=table.dtype, device=table.device
                )
                table = table + c.noise * eps * table.norm(dim=-1, keepdim=True) / table.shape[-1]
        return critic_values(table, traj.states, traj.final_states, "finite")

    def objective(
        self, stage: StageSpec, theta1: torch.Tensor, theta2: torch.Tensor, who: int, role: str
    ) -> torch.Tensor:
        """Scalar whose gradient w.r.t. ``theta1, theta2 [R, 5]`` estimates that of ``V_who``."""
        s = self.spec
        if stage.is_exact:
            return ipd_values(theta1, theta2, s.gamma, s.horizon, s.game)[who - 1].sum()
        traj = self.rollout(theta1, theta2, stage.n)
        log_probs = traj.joint_log_probs
        if stage.replay:
            traj, log_probs = with_replay(traj, self.replays[role], theta1, theta2)
        values, bootstrap = self.critic(theta1, theta2, who, traj)
        return game_surrogate(
            stage.estimator,
            traj,
            who,
            log_probs=log_probs,
            values=values,
            bootstrap_value=bootstrap,
            params=dict(stage.params),
        ).sum()


def _batched(x: torch.Tensor, repeats: int) -> torch.Tensor:
    return stop_gradient(x).to(torch.float64).expand(repeats, 5).clone().requires_grad_(True)


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
        behaviour: ``(mu1, mu2)`` logits ``[5]`` of the earlier policies whose episodes fill the
            replay of off-policy stages (default: the current pair).
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
    sampler = GameSampler(spec, generator)
    for role in _replay_roles(spec):
        stage = getattr(spec, role)
        if stage.replay:
            sampler.replays[role] = sampler.rollout(
                _batched(mu1, repeats).detach(), _batched(mu2, repeats).detach(), stage.replay
            )
    agent, opponent = spec.agent, 3 - spec.agent

    def pair(own: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (own, other) if agent == 1 else (other, own)

    with torch.enable_grad():
        own = _batched(theta1 if agent == 1 else theta2, repeats)
        other = _batched(theta2 if agent == 1 else theta1, repeats)
        lr = spec.lookahead_lr
        for _ in range(spec.lookahead_steps):
            if spec.shared_lookahead:
                obj = sampler.objective(spec.inner, *pair(own, other), opponent, "inner")
                (g,) = torch.autograd.grad(obj, other, create_graph=True)
                other = other + lr * g
                continue
            leaf = detached_leaf(other)
            obj = sampler.objective(spec.inner, *pair(stop_gradient(own), leaf), opponent, "inner")
            (g_inner,) = torch.autograd.grad(obj, leaf)
            obj = sampler.objective(spec.hessian, *pair(own, other), opponent, "hessian")
            (g_hess,) = torch.autograd.grad(obj, other, create_graph=True)
            other = straight_through(other + lr * g_inner, other + lr * g_hess)
        outer = sampler.objective(spec.outer, *pair(own, other), agent, "outer")
        (grad,) = torch.autograd.grad(outer, own, allow_unused=True)
    return torch.zeros_like(own).detach() if grad is None else grad.detach()


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
