"""Decomposed meta-gradients on tabular MDPs: each stage of a K-step inner loop exact or estimated.

MAML (Finn et al., ICML 2017; meta-parameter ``phi = theta_0``) and LIRPG (Zheng, Oh & Singh,
NeurIPS 2018; ``phi = eta``, an intrinsic reward added to the inner loop's rewards) meta-gradients
``d J_out(theta_K) / d phi`` with the inner updates ``theta_{k+1} = theta_k + alpha g(theta_k)``,
decomposed into three stages as Liu et al. (NeurIPS 2022, arXiv 2112.15400) do: ``inner`` (the
value of each update), ``hessian`` (its Jacobian) and ``outer`` (the gradient at ``theta_K``),
each exact or estimated from its own samples, combined by the staged step of
:mod:`metagrad.staged`. Combinations are named by three letters (inner, hessian, outer), ``e``
exact, ``l`` estimated: ``eel, ele, lee, ell, lel, lle, lll`` (``eee`` is the exact meta-gradient).

All R repetitions of a cell are one batch of ``R`` independent parameter copies ``[R, S, A]``
sampled together by the batched engine (no Python loop over repetitions or trajectories). The
inner stage may be randomized multilevel Monte Carlo (:mod:`metagrad.mlmc`); the exact expected
effect of an injected Hessian bias is :mod:`metagrad.injected`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

import torch

from metagrad.critics import CriticSpec, critic_index, critic_values, monte_carlo_critic
from metagrad.envs.tabular import (
    TabularTask,
    Trajectory,
    expand_to_tasks,
    policy_log_probs,
    rollout,
    tabular_gather,
)
from metagrad.estimators import get_estimator, stop_gradient
from metagrad.exact import (
    OBJECTIVES,
    Objective,
    lirpg_meta_gradient,
    maml_meta_gradient,
    tabular_return,
    tabular_values,
)
from metagrad.mlmc import randomized_mlmc
from metagrad.seeding import SEED_BITS, neighbour_seed, torch_generator
from metagrad.staged import (
    STAGE_ROLES,
    EstimatorInputs,
    RandomStreams,
    Staged,
    StagedSampler,
    StageRole,
    StageSpec,
    detached_leaf,
    repeated_leaf,
    stage_cost,
    staged_inner_loop,
)
from metagrad.validation import check_choice, check_int, check_real

__all__ = [
    "META_PARAMETERS",
    "CoupledSampler",
    "MetaGradientSpec",
    "MetaParameter",
    "TabularSampler",
    "check_table",
    "episodes_per_estimate",
    "exact_meta_gradient",
    "sample_meta_gradients",
    "sample_meta_gradients_wrt",
]

MetaParameter = Literal["logits", "intrinsic_reward"]
META_PARAMETERS: tuple[MetaParameter, ...] = get_args(MetaParameter)


@dataclass(frozen=True)
class MetaGradientSpec(Staged):
    """How to compute one tabular meta-gradient estimate (see the module docstring).

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
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("meta_parameter", self.meta_parameter, META_PARAMETERS)
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


class TabularSampler(StagedSampler[MetaGradientSpec]):
    """The stage objectives of one batched meta-gradient computation on a tabular task (or a batch
    of tasks): parameters ``theta [R, *N, S, A]``, the intrinsic reward ``eta`` of LIRPG (added to
    the rewards of the inner and Hessian stages), exact value tables solved once per distinct
    input, and the injected Hessian bias."""

    def __init__(
        self,
        task: TabularTask,
        spec: MetaGradientSpec,
        repeats: int,
        generator: torch.Generator | None,
        eta: torch.Tensor | None,
    ) -> None:
        super().__init__(spec, generator)
        self.task, self.repeats, self.eta = task, repeats, eta
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
        return monte_carlo_critic(
            self._rewards(traj, role),
            traj.discounts,
            traj.states,
            self.task.num_states,
            time_dependent=self.spec.objective == "finite",
        )

    def _rewards(self, traj: Trajectory, role: StageRole) -> torch.Tensor:
        if self.eta is None or role == "outer":
            return traj.rewards
        return traj.rewards + tabular_gather(self.eta, traj.states, traj.actions)

    def exact_objective(self, role: StageRole, theta: torch.Tensor) -> torch.Tensor:
        return tabular_return(self.task, theta, self.spec.objective, reward=self.reward_table(role)).sum()

    def estimator_inputs(self, stage: StageSpec, role: StageRole, theta: torch.Tensor) -> EstimatorInputs:
        """``n`` fresh episodes at ``theta [R, *N, S, A]``, joined by the role's replayed ones
        (their log-probabilities recomputed under ``theta``)."""
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
        return EstimatorInputs(log_probs, rewards, discounts, behaviour, states, finals)

    def stage_critic(
        self, role: StageRole, inputs: EstimatorInputs, theta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.critic(theta, role, inputs.states, inputs.final_states)

    def episodes(self, theta: torch.Tensor, n: int, role: StageRole) -> Trajectory:
        """``n`` fresh episodes of every policy in ``theta`` for a stage of ``role`` (from the
        role's own trajectory stream: common random numbers, see :class:`RandomStreams`)."""
        return rollout(self.task, theta, n, generator=self.streams[role].trajectories)

    def injected_bias(self, theta: torch.Tensor) -> torch.Tensor:
        """``mean(theta^2 (c + s eps))`` per repeat, summed: the injected Hessian bias of
        ``spec.hessian_bias = c`` (``s = spec.hessian_bias_noise``, ``eps ~ N(0, 1)`` fresh)."""
        eps = torch.randn(
            theta.shape, generator=self.streams["hessian"].injected, device=theta.device, dtype=theta.dtype
        )
        c = self.spec.hessian_bias
        return (theta**2 * (c + self.spec.hessian_bias_noise * eps)).mean((-2, -1)).sum()


def check_table(task: TabularTask, x: torch.Tensor | None, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``x`` is an ``[S, A]`` table of ``task`` (or
    ``[N, S, A]``, one per task of a batch)."""
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
    check_table(task, logits, "logits")
    unknown = set(wrt) - set(META_PARAMETERS)
    if unknown or not wrt:
        raise ValueError(f"wrt: expected names from {META_PARAMETERS}, got {wrt!r}")
    if "intrinsic_reward" in wrt:
        check_table(task, eta, "eta")
    with torch.enable_grad():
        theta0 = repeated_leaf(expand_to_tasks(task, logits), repeats)
        eta_r = None
        if eta is not None:
            eta_r = repeated_leaf(expand_to_tasks(task, eta.to(logits.device)), repeats)
        if spec.inner.mlmc is not None:
            return _mlmc_meta_gradients(task, spec, theta0, eta_r, wrt, generator)
        sampler = TabularSampler(task, spec, repeats, generator, eta_r)
        for role in STAGE_ROLES:
            stage = spec.stage(role)
            if stage.replay:
                sampler.replays[role] = rollout(
                    task, stop_gradient(theta0), stage.replay, generator=sampler.streams[role].replay
                )
        return _meta_gradients(sampler, theta0, eta_r, wrt)


def _meta_gradients(
    sampler: TabularSampler, theta0: torch.Tensor, eta_r: torch.Tensor | None, wrt: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """The K-step staged inner loop from the leaves ``theta0`` (and ``eta_r``), the outer
    objective and its gradients w.r.t. ``wrt`` (detached)."""
    spec = sampler.spec

    def value(_step: int, theta: torch.Tensor) -> torch.Tensor:
        return sampler.objective(spec.inner, "inner", theta)

    def jacobian(_step: int, theta: torch.Tensor) -> torch.Tensor:
        objective = sampler.objective(spec.hessian, "hessian", theta)
        if spec.hessian_bias is not None:
            objective = objective + sampler.injected_bias(theta)
        return objective

    theta = staged_inner_loop(
        theta0, spec.inner_steps, spec.inner_lr, value, jacobian, first_order=spec.first_order
    )
    outer = sampler.objective(spec.outer, "outer", theta)
    params = {"logits": theta0, "intrinsic_reward": eta_r}
    inputs = [params[name] for name in wrt]
    grads = torch.autograd.grad(outer, inputs, allow_unused=True)
    return {
        name: (torch.zeros_like(x) if g is None else g).detach()
        for name, x, g in zip(wrt, inputs, grads, strict=True)
    }


class CoupledSampler(TabularSampler):
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
        return torch_generator(seed, device=self.device)

    def objective(self, stage: StageSpec, role: StageRole, *point: Any) -> torch.Tensor:
        a, b, other = self.seeds[STAGE_ROLES.index(role)][self.calls[role]]
        self.calls[role] += 1
        # critic noise and learned critics from one shared stream, the injected bias from another
        self.streams[role] = RandomStreams(
            critic=self._stream(other), injected=self._stream(neighbour_seed(other))
        )
        self.block_streams = (
            [self._stream((a, b)[i]) for i in self.blocks] if role == "inner" else [self._stream(a)]
        )
        return super().objective(stage, role, *point)

    def episodes(self, theta: torch.Tensor, n: int, role: StageRole) -> Trajectory:
        size = n // len(self.block_streams)
        return Trajectory.concat([rollout(self.task, theta, size, generator=g) for g in self.block_streams])


def _mlmc_meta_gradients(
    task: TabularTask,
    spec: MetaGradientSpec,
    theta0: torch.Tensor,
    eta_r: torch.Tensor | None,
    wrt: tuple[str, ...],
    generator: torch.Generator | None,
) -> dict[str, torch.Tensor]:
    """Randomized MLMC (see :class:`~metagrad.mlmc.MLMC`): per repeat, the level-0 estimate with
    ``n0`` inner episodes per step plus ``Delta_L / p_L`` for a level ``L`` drawn from ``p``; the
    repeats that drew the same level are one batch of three coupled paths."""
    mlmc, n0, repeats = spec.inner.mlmc, spec.inner.n, theta0.shape[0]
    plain = dataclasses.replace(spec, inner=dataclasses.replace(spec.inner, mlmc=None))
    out = _meta_gradients(TabularSampler(task, plain, repeats, generator, eta_r), theta0, eta_r, wrt)

    Estimates = dict[str, torch.Tensor]

    def level_paths(level: int, idx: torch.Tensor) -> tuple[Estimates, Estimates, Estimates]:
        half = n0 * 2 ** (level - 1)
        seeds = torch.randint(
            2**SEED_BITS,
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
            sampler = CoupledSampler(task, path_spec, len(idx), eta_leaf, seeds, blocks, theta0.device)
            paths.append(_meta_gradients(sampler, leaf, eta_leaf, wrt))
        fine, half_a, half_b = paths
        return fine, half_a, half_b

    assert mlmc is not None
    return randomized_mlmc(mlmc, out, level_paths, generator)


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
