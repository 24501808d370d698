"""Naive and LOLA learners for iterated memory-one games, with simultaneous updates.

A learner owns its 5 logits and an optimiser; each iteration both learners compute their
gradients at the current pair and then both step (simultaneous updates, Foerster et al. 2018).

Gradient sources (``LearnerConfig.gradient``):

* ``"exact"``: closed-form :func:`metagrad.exact.naive_gradient` / :func:`metagrad.exact.lola_gradient`
  on the same finite horizon the sampled learners play;
* a named LOLA estimator of :data:`metagrad.lola.LOLA_VARIANTS` (the table the IPD benchmark
  scores), computed by :func:`metagrad.lola.lookahead`, the same lookahead loop the benchmark
  scores:

  * ``"lola_dice"``: LOLA-DiCE (Foerster et al., ICML 2018): the opponent's lookahead from one
    batch of ``n_inner`` episodes whose magic box holds both agents' log-probs, the outer
    gradient from ``n_outer`` fresh episodes at the looked-ahead pair, both with the DiCE
    baseline (``dice_baseline``) and a tabular Monte Carlo critic fitted on earlier iterations;
  * ``"off_policy_lola_dice"``: the lookahead uses ``off_policy_dice`` on the inner episodes
    plus those of the last ``replay_batches`` iterations, reweighted by importance ratios (Liu
    et al., NeurIPS 2022). Its critic baseline is ``off_policy_dice``'s cumulative one,
    ``(rho_{0:t-1} - rho_{0:t}) b(s_t)``, not ``dice_baseline``'s ``(1 - box(log pi_t)) b(s_t)``,
    so its gain over ``lola_dice`` mixes the two; the IPD bench's ``off_policy`` experiment
    separates them on the official protocol, where almost all of the lookahead's MSE reduction
    comes from the cumulative baseline, which needs no replay, and replay adds a further factor
    of a few (README, "Off-policy LOLA-DiCE, disentangled");
  * ``"lola_lvc"``: the LVC lookahead (same-step cross terms only; biased, low variance).

A naive learner ignores the opponent's learning (``lookahead_steps`` is not used); a naive
learner with a sampled source uses the variant's outer estimator.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from metagrad.agents.optim import check_optimizer, make_optimizer
from metagrad.critics import critic_values
from metagrad.envs.ipd import IPDTrajectory, check_gamma, get_game, ipd_rollout, per_step_average
from metagrad.estimators import stop_gradient
from metagrad.exact import ipd_values, lola_gradient
from metagrad.lola import (
    LOLA_VARIANTS,
    game_surrogate,
    get_lola_variant,
    lookahead,
    seat_order,
    tabular_game_critic,
    with_replay,
)
from metagrad.seeding import torch_generator
from metagrad.validation import check_choice, check_int, check_real

__all__ = [
    "GRADIENTS",
    "KINDS",
    "GameConfig",
    "LearnerConfig",
    "MemoryOneLearner",
    "iteration_gradients",
    "play",
]

KINDS = ("naive", "lola")
GRADIENTS = ("exact", *LOLA_VARIANTS)


@dataclass(frozen=True)
class LearnerConfig:
    """One learner: ``kind`` naive or lola, its gradient source, optimiser and sample budget."""

    kind: str = "lola"
    gradient: str = "exact"
    lookahead_lr: float = 0.3
    lookahead_steps: int = 1
    optimizer: str = "adam"
    lr: float = 0.1
    n_inner: int = 128
    n_outer: int = 128
    replay_batches: int = 3
    critic_rate: float = 0.5

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_choice("gradient", self.gradient, GRADIENTS)
        check_optimizer(self.optimizer)
        check_real("lr", self.lr, minimum=0.0, open_min=True)
        check_real("lookahead_lr", self.lookahead_lr)
        check_int("lookahead_steps", self.lookahead_steps, 0)
        check_int("n_inner", self.n_inner, 1)
        check_int("n_outer", self.n_outer, 1)
        check_int("replay_batches", self.replay_batches, 1)
        check_real("critic_rate", self.critic_rate, minimum=0.0, maximum=1.0, open_min=True)

    @property
    def label(self) -> str:
        if self.kind == "naive":
            return "NL" if self.gradient == "exact" else f"NL-{self.gradient}"
        return "LOLA" if self.gradient == "exact" else get_lola_variant(self.gradient).label


@dataclass(frozen=True)
class GameConfig:
    """The game both learners play: payoffs, discount and the episode length of the samples
    (also the horizon of the exact values, so exact and sampled learners optimise the same thing)."""

    game: str = "ipd"
    gamma: float = 0.96
    horizon: int = 100

    def __post_init__(self) -> None:
        get_game(self.game)
        check_gamma(self.gamma)
        check_int("horizon", self.horizon, 1)


class MemoryOneLearner:
    """A memory-one policy ``theta [5]`` and its optimiser; ``agent`` is 1 or 2 (its seat)."""

    def __init__(self, config: LearnerConfig, theta: torch.Tensor, agent: int) -> None:
        if agent not in (1, 2):
            raise ValueError(f"agent: expected 1 or 2, got {agent!r}")
        self.config, self.agent = config, agent
        self.theta = stop_gradient(theta).to(torch.float64).clone().requires_grad_(True)
        self.optimizer = make_optimizer(config.optimizer, [self.theta], config.lr)
        self.critics: dict[int, torch.Tensor] = {}  # who -> [H + 1, 5] running Monte Carlo fit

    @property
    def sampled(self) -> bool:
        return self.config.gradient != "exact"

    def step(self, gradient: torch.Tensor) -> None:
        """Gradient *ascent* on the learner's value with its optimiser."""
        self.optimizer.zero_grad(set_to_none=True)
        self.theta.grad = -stop_gradient(gradient).to(self.theta)
        self.optimizer.step()

    def update_critic(self, fit: torch.Tensor, who: int) -> None:
        """Blend a Monte Carlo fit ``[H + 1, 5]`` of ``V_who`` into the running critic."""
        old = self.critics.get(who)
        rate = self.config.critic_rate
        self.critics[who] = fit if old is None else (1 - rate) * old + rate * fit

    def critic(self, traj: IPDTrajectory, who: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Critic values along ``traj [T, B, *G]`` from the running table (None before any fit)."""
        table = self.critics.get(who)
        if table is None:
            return None, None
        T, B = traj.states.shape[:2]
        g = traj.states[0, 0].numel()
        values, boot = critic_values(
            table.expand(g, *table.shape),
            traj.states.reshape(T, B, g),
            traj.final_states.reshape(B, g),
            "finite",
        )
        return values.reshape(traj.states.shape), boot.reshape(traj.final_states.shape)


def _lookahead(
    learner: MemoryOneLearner,
    own: torch.Tensor,
    other: torch.Tensor,
    inner: IPDTrajectory,
    replay: list[IPDTrajectory],
    rollout: Callable[[torch.Tensor, torch.Tensor, int], IPDTrajectory],
) -> tuple[torch.Tensor, int]:
    """The opponent's looked-ahead logits (a differentiable function of both agents' logits) and
    the number of extra episodes sampled. ``inner`` was played by ``(own, other)`` with their
    graphs; each further lookahead step plays fresh episodes at the moved pair."""
    cfg, agent = learner.config, learner.agent
    opponent = 3 - agent
    if cfg.kind == "naive" or cfg.lookahead_steps == 0:
        return stop_gradient(other), 0
    variant = get_lola_variant(cfg.gradient)
    used = 0

    def value_objective(step: int, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        nonlocal used
        traj = inner
        if step > 0:
            traj = rollout(t1, t2, cfg.n_inner)
            used += cfg.n_inner
        log_probs = traj.joint_log_probs
        if variant.replays and replay:
            traj, log_probs = with_replay(traj, IPDTrajectory.concat(replay), t1, t2)
        values, boot = learner.critic(traj, opponent)
        return game_surrogate(
            variant.lookahead, traj, opponent, log_probs=log_probs, values=values, bootstrap_value=boot
        )

    other = lookahead(
        own,
        other,
        agent=agent,
        steps=cfg.lookahead_steps,
        lr=cfg.lookahead_lr,
        value_objective=value_objective,
    )
    return other, used


def _exact_gradient(learner: MemoryOneLearner, theta1: torch.Tensor, theta2: torch.Tensor, game: GameConfig):
    cfg = learner.config
    steps = cfg.lookahead_steps if cfg.kind == "lola" else 0
    return lola_gradient(
        theta1, theta2, game.gamma, cfg.lookahead_lr, steps, game.horizon, game=game.game, agent=learner.agent
    )


def play(
    config1: LearnerConfig,
    config2: LearnerConfig,
    iterations: int,
    *,
    game: GameConfig | None = None,
    seed: int = 0,
    init_scale: float = 1.0,
    theta1: torch.Tensor | None = None,
    theta2: torch.Tensor | None = None,
    device: str = "cpu",
    progress: bool = False,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train two learners against each other with simultaneous updates.

    Args:
        config1, config2: the learners (agent 1 and agent 2).
        iterations: number of simultaneous updates (>= 0).
        game: payoffs, discount and horizon (default IPD, gamma 0.96, H 100).
        seed: seeds the initial logits (``init_scale * N(0, 1)`` unless given) and all sampling.
        device: where rollouts run (logits stay float64).
    Returns:
        ``{"reward1", "reward2"}``: exact per-step average rewards (the discount-weighted average of
        the finite-horizon value) at every iteration and after the last one (length
        ``iterations + 1``); ``"path1"``, ``"path2"`` the logits at those points; ``"theta1"``,
        ``"theta2"`` the final logits; ``"episodes"`` the
        episodes sampled so far at each point; ``"wall_s"``.
    """
    game = GameConfig() if game is None else game
    check_int("iterations", iterations, 0)
    gen = torch_generator(seed, device=device)
    init = torch_generator(seed)
    starts = []
    for given in (theta1, theta2):
        start = init_scale * torch.randn(5, generator=init, dtype=torch.float64)
        starts.append(start if given is None else given)
    learners = [
        MemoryOneLearner(config1, starts[0].to(device), 1),
        MemoryOneLearner(config2, starts[1].to(device), 2),
    ]
    history: dict[str, Any] = {"reward1": [], "reward2": [], "episodes": [], "path1": [], "path2": []}
    buffer: deque = deque(maxlen=max(c.replay_batches for c in (config1, config2)))
    episodes = 0
    start_time = time.perf_counter()

    def record() -> None:
        with torch.no_grad():
            v1, v2 = ipd_values(learners[0].theta, learners[1].theta, game.gamma, game.horizon, game.game)
        history["reward1"].append(float(per_step_average(v1, game.gamma, game.horizon)))
        history["reward2"].append(float(per_step_average(v2, game.gamma, game.horizon)))
        history["episodes"].append(episodes)
        history["path1"].append(stop_gradient(learners[0].theta).cpu().clone())
        history["path2"].append(stop_gradient(learners[1].theta).cpu().clone())

    iterator = range(iterations)
    if progress and sys.stderr.isatty():  # per-run bars only on a terminal
        iterator = tqdm(iterator, desc=f"{config1.label} vs {config2.label}", unit="it", leave=False)
    for it in iterator:
        record()
        if callback is not None:
            callback(it, history)
        grads, used = iteration_gradients(learners, game, gen, buffer)
        episodes += used
        for learner in learners:
            learner.step(grads[learner.agent])
    record()
    history["theta1"] = stop_gradient(learners[0].theta).cpu().clone()
    history["theta2"] = stop_gradient(learners[1].theta).cpu().clone()
    history["wall_s"] = time.perf_counter() - start_time
    return history


def iteration_gradients(
    learners: list[MemoryOneLearner], game: GameConfig, gen: torch.Generator, buffer: deque
) -> tuple[dict[int, torch.Tensor], int]:
    """Both learners' gradients at the current pair, and the number of episodes sampled.

    Exact learners use the closed form. Sampled learners share one inner batch (the largest
    ``n_inner`` among the LOLA learners) and one outer rollout with a column per learner (the
    largest ``n_outer``); ``buffer`` holds earlier inner batches for off-policy lookaheads and
    receives this one.
    """
    t1, t2 = learners[0].theta, learners[1].theta
    grads: dict[int, torch.Tensor] = {}
    sampled = [lrn for lrn in learners if lrn.sampled]
    for lrn in learners:
        if not lrn.sampled:
            grads[lrn.agent] = _exact_gradient(lrn, t1, t2, game)
    if not sampled:
        return grads, 0

    def rollout(a: torch.Tensor, b: torch.Tensor, n: int) -> IPDTrajectory:
        return ipd_rollout(a, b, n, game.horizon, game=game.game, gamma=game.gamma, generator=gen)

    used = 0
    lookers = [lrn for lrn in sampled if lrn.config.kind == "lola" and lrn.config.lookahead_steps > 0]
    inner = None
    if lookers:  # one shared batch; its log-probs keep both agents' graphs
        n_inner = max(lrn.config.n_inner for lrn in lookers)
        inner = rollout(t1, t2, n_inner)
        used += n_inner
    replay = list(buffer)
    # looked-ahead pairs, one column per sampled learner: (theta1, theta2) it is evaluated at
    cols1, cols2 = [], []
    for lrn in sampled:
        own, other = seat_order(lrn.agent, t1, t2)
        looked, extra = (
            _lookahead(lrn, own, other, inner, replay, rollout)
            if inner is not None
            else (stop_gradient(other), 0)
        )
        used += extra
        a, b = seat_order(lrn.agent, own, looked)
        cols1.append(a)
        cols2.append(b)
    n_outer = max(lrn.config.n_outer for lrn in sampled)
    outer = rollout(torch.stack(cols1), torch.stack(cols2), n_outer)  # [T, B, len(sampled)]
    used += n_outer * len(sampled)
    columns = []
    for j, lrn in enumerate(sampled):
        column = _column(outer, j)  # the episodes of this learner's looked-ahead pair, [T, B, 1]
        values, boot = lrn.critic(column, lrn.agent)
        obj = game_surrogate(
            get_lola_variant(lrn.config.gradient).outer,
            column,
            lrn.agent,
            values=values,
            bootstrap_value=boot,
        ).sum()
        (g,) = torch.autograd.grad(obj, lrn.theta, retain_graph=j + 1 < len(sampled))
        grads[lrn.agent] = g
        columns.append(column)
    # critics fitted after use, on this iteration's episodes (independent of the next estimates)
    inner_fits = {who: tabular_game_critic(inner, who) for who in (1, 2)} if inner is not None else {}
    for lrn, column in zip(sampled, columns, strict=True):
        lrn.update_critic(tabular_game_critic(column, lrn.agent)[0], lrn.agent)
        if inner is not None:
            lrn.update_critic(inner_fits[3 - lrn.agent], 3 - lrn.agent)
    if inner is not None:
        buffer.append(_detached(inner))
    return grads, used


def _column(traj: IPDTrajectory, j: int) -> IPDTrajectory:
    """Policy-pair column ``j`` of a batched trajectory, keeping a pair axis of size 1."""
    return IPDTrajectory(**{f.name: getattr(traj, f.name)[..., j : j + 1] for f in dataclasses.fields(traj)})


def _detached(traj: IPDTrajectory) -> IPDTrajectory:
    return dataclasses.replace(
        traj, log_probs1=stop_gradient(traj.log_probs1), log_probs2=stop_gradient(traj.log_probs2)
    )
