"""The ``atari`` suite (``metagrad bench atari``): MGRL meta-gradient estimators on ALE and MinAtar
games, where no closed form exists.

At a fixed agent state (a seeded actor-critic, optionally after ``warmup_frames`` of A2C; gamma
0.99, lambda 0.95 and the two loss coefficients as meta-parameters), a meta-gradient estimate is
d L_out / d eta through K = 2 inner updates on fresh rollouts (16 games x 5 steps each) and the
outer loss on a further rollout. Two views:

* ``paired`` (the verdicts). Every estimate of an estimator X is paired with an estimate of the
  reference, Loaded DiCE with lambda = 1, on the *same* batches (the same games, the same action
  draws, the same critic values): the reference plays, X replays its batches
  (:func:`metagrad.agents.mgrl.paired_meta_gradients`). The inner policy term uses advantages
  ``G_t - V(s_t)`` (``policy_lambda = 1``) with the critic cut from the graph, so Loaded DiCE's
  Hessian estimate of the policy term is unbiased (Farquhar et al. 2019) and X's first-order
  update is the reference's: the inner iterates coincide, the value and entropy terms of the
  inner loss are the same on both sides and cancel, and ``E[g_X - g_ref]`` is the part of X's
  meta-gradient bias that its policy-Hessian estimator adds (the compositional bias of the
  sampled inner updates is on both sides). It is
  estimated from the paired differences ``d_r = g_X,r - g_ref,r``; the noise of a separate
  reference never enters. Consecutive estimates share the continuing games, so the resampling unit
  is a block of ``ci_block`` consecutive estimates: each component's 95% CI (Bonferroni over the D
  meta-parameters) is a Student-t interval on the block means. Criterion, fixed before any run:
  X's Hessian bias is RESOLVED on a game when at least one component's CI excludes 0, otherwise
  INCONCLUSIVE. The row's metrics score the block means of ``d`` against 0 (``bias_debiased`` =
  ``||E d||``, its bootstrap CI over blocks), with ``corr``/``cosine_of_mean`` between X's and
  the reference's block means and ``relative_bias`` relative to ``||mean g_ref||``. Estimators
  with another first-order update (``dice``: no critic) cannot be paired this way and appear in
  the reference view only. The summary also compares LVC with pg on the same blocks:
  ``||E d_pg||^2 - ||E d_lvc||^2`` with a block-bootstrap CI (LVC smaller / larger / INCONCLUSIVE).
* ``reference`` (the second view, as before): each estimator's own estimates (common random
  numbers across estimators) against the mean of ``reference_repeats`` Loaded DiCE estimates with
  ``reference_scale`` times the games; every row states the reference's standard error and a
  squared bias with both noises removed.

Games: ALE ids (``ALE/Breakout-v5``) and MinAtar ids (``MinAtar/Breakout-v1``; preset ``minatar``).
Every row records its budget (games x steps x estimates, frames, CPU seconds).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import stats

from metagrad.agents.a2c import A2CAgent, A2CConfig, build_model, collect_rollout
from metagrad.agents.mgrl import (
    META_NAMES,
    MGRLConfig,
    initial_meta_parameters,
    meta_gradient,
    paired_meta_gradients,
)
from metagrad.app.options import Option
from metagrad.app.outputs import write_text_atomic
from metagrad.app.plotting import PALETTE, human, new_figure, save_figure
from metagrad.app.rows import ResultRow
from metagrad.app.suite import Cell, Suite, cell_seed, make_row
from metagrad.envs.atari import BACKENDS
from metagrad.envs.minatar import game_config
from metagrad.estimators import get_estimator
from metagrad.scoring import centred_cosine, score
from metagrad.validation import check_int, check_int_fields, check_real, check_seed

__all__ = [
    "EXPERIMENTS",
    "PRESETS",
    "SUITE",
    "AtariBenchConfig",
    "AtariMetaSpec",
    "PairedSamples",
    "lvc_vs_pg",
    "make_atari_cells",
    "paired_estimates",
    "paired_statistics",
    "reference_meta_gradient",
    "run_atari_cell",
    "write_atari_plots",
    "write_atari_summary",
]

EXPERIMENTS = ("paired", "reference")
ALPHA = 0.05  # family-wise level of the paired CIs (Bonferroni over the meta-parameters)
_CELL_FIELDS = (
    "num_envs",
    "n_steps",
    "inner_steps",
    "warmup_frames",
    "repeats",
    "ci_block",
    "reference_estimator",
    "policy_lambda",
    "view_repeats",
    "reference_scale",
    "reference_repeats",
    "seed",
    "backend",
)


@dataclass(frozen=True)
class AtariMetaSpec:
    """The recipe of one MGRL estimate: ``estimator``, the inner surrogate (one rollout of ``n``
    parallel games gives both the value and the Jacobian of each of the K inner updates); the
    outer loss is the fixed policy-gradient loss on a fresh rollout; ``scale`` consecutive
    rollouts side by side per batch; ``policy_lambda`` the GAE lambda of the inner policy term;
    ``paired_with``: the reference estimator of a paired cell (empty in the reference view)."""

    estimator: str = "pg"
    n: int = 16
    inner_steps: int = 2
    learn_coefs: bool = True
    scale: int = 1
    policy_lambda: float = 1.0
    paired_with: str = ""

    def __post_init__(self) -> None:
        get_estimator(self.estimator)
        if self.paired_with:
            get_estimator(self.paired_with)
        check_int_fields(self, ("n", "inner_steps", "scale"), 1)
        check_real("policy_lambda", self.policy_lambda, minimum=0.0, maximum=1.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AtariBenchConfig:
    """Everything that defines an Atari bias run (recorded in every row).

    ``games``: ALE or MinAtar ids; ``repeats``: paired estimates per cell (a multiple of
    ``ci_block``, at least two blocks); ``estimators``: those with a critic (other than the
    reference) are paired, all are scored in the reference view (``view_repeats`` estimates
    each, against ``reference_repeats`` estimates of ``reference_estimator`` with
    ``reference_scale`` times the games).
    """

    CELL_FIELDS: ClassVar[tuple[str, ...]] = _CELL_FIELDS

    preset: str = "custom"
    games: tuple[str, ...] = ("ALE/Breakout-v5", "ALE/Pong-v5", "ALE/SpaceInvaders-v5")
    num_envs: int = 16
    n_steps: int = 5
    inner_steps: int = 2
    warmup_frames: int = 0
    estimators: tuple[str, ...] = ("pg", "lvc", "dice", "loaded_dice")
    repeats: int = 96
    ci_block: int = 4
    reference_estimator: str = "loaded_dice"
    policy_lambda: float = 1.0
    view_repeats: int = 16
    reference_scale: int = 4
    reference_repeats: int = 16
    seed: int = 0
    backend: str = "ale"
    experiments: tuple[str, ...] = EXPERIMENTS

    def __post_init__(self) -> None:
        if not self.games:
            raise ValueError("games: give at least one game")
        for game in self.games:
            try:
                game_config(game, num_envs=1)
            except ValueError as exc:
                raise ValueError(f"games: unknown game {game!r} ({exc})") from exc
        check_int_fields(self, ("num_envs", "n_steps", "inner_steps", "reference_scale", "ci_block"), 1)
        check_int_fields(self, ("view_repeats", "reference_repeats"), 2)
        check_int("repeats", self.repeats, 2 * self.ci_block)
        if self.repeats % self.ci_block:
            raise ValueError(
                f"repeats: expected a multiple of ci_block = {self.ci_block}, got {self.repeats}"
            )
        check_int("warmup_frames", self.warmup_frames, 0)
        check_seed("seed", self.seed)
        check_real("policy_lambda", self.policy_lambda, minimum=0.0, maximum=1.0)
        if not self.estimators:
            raise ValueError("estimators: give at least one estimator")
        for est in (*self.estimators, self.reference_estimator):
            get_estimator(est)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")
        unknown = set(self.experiments) - set(EXPERIMENTS)
        if unknown or not self.experiments:
            raise ValueError(f"experiments: unknown {sorted(unknown)}; known: {EXPERIMENTS}")

    @property
    def env(self) -> str:
        """The games, comma-separated (each row's ``env`` is its own game)."""
        return ",".join(self.games)

    @property
    def paired_estimators(self) -> tuple[str, ...]:
        """The estimators of the paired view: those that use the critic, other than the reference."""
        return tuple(
            e for e in self.estimators if e != self.reference_estimator and get_estimator(e).uses_critic
        )

    def spec(self, estimator: str, scale: int = 1, paired: bool = False) -> AtariMetaSpec:
        return AtariMetaSpec(
            estimator,
            self.num_envs * scale,
            self.inner_steps,
            True,
            scale,
            self.policy_lambda,
            self.reference_estimator if paired else "",
        )

    def frames_per_estimate(self, game: str, scale: int = 1) -> int:
        """Environment frames of one meta-gradient estimate (K inner batches and the outer one)."""
        skip = game_config(game, num_envs=1).frame_skip
        return (self.inner_steps + 1) * self.num_envs * scale * self.n_steps * skip


PRESETS: dict[str, AtariBenchConfig] = {
    # Three ALE games at the A2C defaults (16 games x 5 steps per batch), K = 2, the agent state
    # after 200k frames of A2C; 96 paired estimates per estimator and game (blocks of 4): about
    # 10 minutes of one CPU core per game with the reference view.
    "xu2018": AtariBenchConfig(preset="xu2018", warmup_frames=200_000, repeats=96),
    # The same on three MinAtar games (10x10 grids, the MinAtar network; a frame is a step):
    # 2400 paired estimates per estimator and game in about the same CPU time.
    "minatar": AtariBenchConfig(
        preset="minatar",
        games=("MinAtar/Breakout-v1", "MinAtar/SpaceInvaders-v1", "MinAtar/Asterix-v1"),
        warmup_frames=200_000,
        repeats=2400,
    ),
    "quick": AtariBenchConfig(
        preset="quick",
        games=("ALE/Breakout-v5",),
        num_envs=4,
        repeats=8,
        ci_block=2,
        view_repeats=4,
        reference_repeats=4,
        reference_scale=2,
    ),
}


def make_atari_cells(config: AtariBenchConfig) -> list[Cell]:
    """Per game: a paired cell per paired estimator, then a reference-view cell per estimator."""
    cells = []
    for game in config.games:
        tags = {"game": game}
        if "paired" in config.experiments:
            cells += [
                Cell("paired", est, config.spec(est, paired=True), config.num_envs, tags=tags)
                for est in config.paired_estimators
            ]
        if "reference" in config.experiments:
            cells += [
                Cell("reference", est, config.spec(est), config.num_envs, tags=tags)
                for est in config.estimators
            ]
    return cells


def _stream_seed(config: AtariBenchConfig, game: str, salt: int) -> int:
    """The seed of a game's env and action stream: every cell of a game (every estimator) uses
    the same one, so their samples are common."""
    return (config.seed * 1_000_003 + zlib.crc32(game.encode()) + salt) % (2**31)


def _env_config(config: AtariBenchConfig, game: str):
    return game_config(game, num_envs=config.num_envs, backend=config.backend)


@functools.lru_cache(maxsize=8)
def _agent_state(config: AtariBenchConfig, game: str, device: str) -> dict[str, Any]:
    """The fixed agent state of a game: parameters and RMSprop statistics (zero without warm-up),
    after the optional A2C warm-up."""
    agent = A2CAgent(
        A2CConfig(num_envs=config.num_envs, n_steps=config.n_steps),
        _env_config(config, game),
        seed=config.seed,
        device=device,
    )
    try:
        if config.warmup_frames:
            agent.train(config.warmup_frames)
        params, rms = {}, {}
        for n, p in agent.model.named_parameters():
            params[n] = p.detach().clone()
            state = agent.optimizer.state.get(p, {})
            rms[n] = state["square_avg"].detach().clone() if "square_avg" in state else torch.zeros_like(p)
        num_actions, obs_shape = agent.env.num_actions, agent.env.obs_shape
    finally:
        agent.close()
    return {"params": params, "rms": rms, "num_actions": num_actions, "obs_shape": obs_shape}


class _Stream:
    """A game's seeded env and action stream with the fixed agent's model: rollouts of a given
    parameter dict, ``scale`` consecutive ones side by side."""

    def __init__(self, config: AtariBenchConfig, game: str, seed: int, device: str) -> None:
        self.state = _agent_state(config, game, device)
        self.env = _env_config(config, game).make()
        self.model = build_model(
            self.state["num_actions"], seed=config.seed, device=device, obs_shape=self.state["obs_shape"]
        )
        self.config, self.device = config, device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.obs = self.env.reset(seed=seed)

    def batch(self, theta: dict[str, torch.Tensor], scale: int = 1):
        out = None
        for _ in range(scale):
            part, self.obs = collect_rollout(
                self.env, self.model, theta, self.obs, self.config.n_steps, gamma=0.99,
                generator=self.generator, device=self.device,
            )  # fmt: skip
            out = part if out is None else out.cat(part)
        return out

    def mgrl(self, estimator: str, scale: int = 1) -> MGRLConfig:
        c = self.config
        return MGRLConfig(
            A2CConfig(num_envs=c.num_envs * scale, n_steps=c.n_steps),
            inner_steps=c.inner_steps,
            estimator=estimator,
            learn_coefs=True,
            policy_lambda=c.policy_lambda,
        )

    def fresh_rms(self) -> dict[str, torch.Tensor]:
        return {n: v.clone() for n, v in self.state["rms"].items()}

    def close(self) -> None:
        self.env.close()


def _stack(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([grads[n] for n in META_NAMES]).double().cpu()


@dataclass(frozen=True)
class PairedSamples:
    """Paired estimates on common batches: ``reference [R, D]``, ``estimates[X] [R, D]`` and the
    largest relative gap between X's inner iterates and the reference's (``iterate_gap[X]``)."""

    reference: torch.Tensor
    estimates: dict[str, torch.Tensor]
    iterate_gap: dict[str, float]


def paired_estimates(
    config: AtariBenchConfig, game: str, estimators: tuple[str, ...], device: str = "cpu"
) -> PairedSamples:
    """``config.repeats`` paired estimates of ``estimators`` and the reference on one game's stream.

    Raises ``ValueError`` when an estimator's inner iterates leave the reference's (another
    first-order update: the replayed batches would be off-policy for it).
    """
    stream = _Stream(config, game, _stream_seed(config, game, 1), device)
    mgrl = stream.mgrl(config.reference_estimator)
    refs, out = [], {e: [] for e in estimators}
    gaps = dict.fromkeys(estimators, 0.0)
    try:
        for _ in range(config.repeats):
            grads, gap = paired_meta_gradients(
                stream.model,
                stream.state["params"],
                lambda _k, theta: stream.batch(theta),
                stream.fresh_rms(),
                mgrl,
                estimators,
                device,
            )
            refs.append(_stack(grads[config.reference_estimator]))
            for e in estimators:
                out[e].append(_stack(grads[e]))
                gaps[e] = max(gaps[e], gap[e])
                if gaps[e] > 1e-2:  # checked at the first estimate, before the rest of the work
                    raise ValueError(
                        f"estimators: {e}'s inner iterates leave the reference's (relative gap "
                        f"{gaps[e]:.2g}); the paired view needs the reference's first-order update "
                        "(score it in the reference view)"
                    )
    finally:
        stream.close()
    return PairedSamples(torch.stack(refs), {e: torch.stack(v) for e, v in out.items()}, gaps)


def _estimates(
    config: AtariBenchConfig, game: str, estimator: str, repeats: int, scale: int, seed: int, device: str
):
    """``[repeats, D]`` meta-gradient estimates of one estimator on its own stream (``seed``)."""
    stream = _Stream(config, game, seed, device)
    mgrl = stream.mgrl(estimator, scale)
    out = []
    try:
        for _ in range(repeats):
            eta = initial_meta_parameters(mgrl, device)
            grads, *_ = meta_gradient(
                stream.model,
                stream.state["params"],
                eta,
                lambda _k, theta: stream.batch(theta, scale),
                stream.fresh_rms(),
                mgrl,
            )
            out.append(_stack(grads))
    finally:
        stream.close()
    return torch.stack(out)


@functools.lru_cache(maxsize=8)
def reference_meta_gradient(
    config: AtariBenchConfig, game: str, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference view's reference ``(mean [D], its standard errors [D])`` on one game."""
    samples = _estimates(
        config,
        game,
        config.reference_estimator,
        config.reference_repeats,
        config.reference_scale,
        _stream_seed(config, game, 17),
        device,
    )
    return samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])


def block_means(samples: torch.Tensor, block: int) -> torch.Tensor:
    """Means of consecutive blocks of ``block`` rows: ``[R, D] -> [R // block, D]``."""
    R, D = samples.shape
    return samples[: R - R % block].reshape(R // block, block, D).mean(1)


def paired_statistics(blocks: torch.Tensor, alpha: float = ALPHA) -> dict[str, Any]:
    """Per-component mean, Student-t CI (Bonferroni over the D components, family level
    ``1 - alpha``) and verdict from block means of paired differences ``[nb, D]``."""
    nb, D = blocks.shape
    mean = blocks.mean(0)
    se = blocks.std(0) / math.sqrt(nb)
    t = float(stats.t.ppf(1 - alpha / (2 * D), nb - 1))
    low, high = mean - t * se, mean + t * se
    excludes = (low > 0) | (high < 0)
    return {
        "mean": mean.tolist(),
        "ci_low": low.tolist(),
        "ci_high": high.tolist(),
        "t_quantile": t,
        "resolved": bool(excludes.any()),
        "resolved_components": [META_NAMES[i] for i in range(D) if excludes[i]],
    }


def _first_resolved(blocks: torch.Tensor) -> int | None:
    """Descriptive only: the smallest prefix (in blocks) from which every longer prefix is resolved."""
    first = None
    for n in range(2, blocks.shape[0] + 1):
        if paired_statistics(blocks[:n])["resolved"]:
            first = n if first is None else first
        else:
            first = None
    return first


def _lag1(samples: torch.Tensor) -> list[float]:
    x = samples - samples.mean(0)
    denom = (x**2).sum(0).clamp_min(1e-300)
    return ((x[1:] * x[:-1]).sum(0) / denom).tolist()


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16]


def _paired_row(config: AtariBenchConfig, cell: Cell, device: str, started: float, cpu: float) -> ResultRow:
    game, est = cell.tags["game"], cell.estimator
    samples = paired_estimates(config, game, (est,), device)
    d = samples.estimates[est] - samples.reference
    blocks = block_means(d, config.ci_block)
    x_blocks = block_means(samples.estimates[est], config.ci_block)
    ref_blocks = block_means(samples.reference, config.ci_block)
    metrics = score(
        blocks, torch.zeros(d.shape[1], dtype=torch.float64),
        generator=torch.Generator().manual_seed(cell_seed(config, cell)),
    )  # fmt: skip
    ref_norm = float(samples.reference.mean(0).norm())
    corr = centred_cosine(x_blocks, ref_blocks)
    metrics = dataclasses.replace(
        metrics,
        corr=float(corr.mean()),
        corr_std=float(corr.std()),
        corr_se=float(corr.std() / math.sqrt(corr.numel())),
        cosine_of_mean=float(
            torch.nn.functional.cosine_similarity(x_blocks.mean(0), ref_blocks.mean(0), dim=0)
        ),
        cosine_of_mean_se=0.0,
        relative_bias=metrics.bias_debiased / max(ref_norm, 1e-300),
        exact_norm=ref_norm,
    )
    paired = paired_statistics(blocks)
    first = _first_resolved(blocks)
    frames = config.repeats * config.frames_per_estimate(game)
    setting = {
        "game": game,
        "inner": est,
        "reference_estimator": config.reference_estimator,
        "n_inner": config.num_envs,
        "n_steps": config.n_steps,
        "inner_steps": config.inner_steps,
        "policy_lambda": config.policy_lambda,
        "estimates": config.repeats,
        "ci_block": config.ci_block,
        "meta_names": list(META_NAMES),
        "paired_mean": paired["mean"],
        "paired_ci_low": paired["ci_low"],
        "paired_ci_high": paired["ci_high"],
        "paired_t_quantile": paired["t_quantile"],
        "resolved": paired["resolved"],
        "resolved_components": paired["resolved_components"],
        "resolved_from_estimates": None if first is None else first * config.ci_block,
        "lag1_autocorr": _lag1(d),
        "reference_mean": samples.reference.mean(0).tolist(),
        "reference_digest": _digest(samples.reference),
        "paired_blocks": blocks.tolist(),
        "max_iterate_gap": samples.iterate_gap[est],
        "frames_per_estimate": config.frames_per_estimate(game),
        "frames": frames,
        "warmup_frames": config.warmup_frames,
        "cpu_s": time.process_time() - cpu,
    }
    return _row(config, cell, metrics, setting, config.ci_block, started, device)


def _reference_row(
    config: AtariBenchConfig, cell: Cell, device: str, started: float, cpu: float
) -> ResultRow:
    game = cell.tags["game"]
    reference, reference_se = reference_meta_gradient(config, game, device)
    # common random numbers: every estimator sees the same games and action draws (while its
    # inner iterates agree with the others'); the reference uses its own stream
    samples = _estimates(
        config, game, cell.spec.estimator, config.view_repeats, 1, _stream_seed(config, game, 1), device
    )
    metrics = score(
        samples.unsqueeze(0),
        reference.unsqueeze(0),
        generator=torch.Generator().manual_seed(cell_seed(config, cell)),
    )
    ref_var = float((reference_se**2).sum())
    setting = {
        "game": game,
        "inner": cell.spec.estimator,
        "n_inner": cell.spec.n,
        "n_steps": config.n_steps,
        "inner_steps": config.inner_steps,
        "policy_lambda": config.policy_lambda,
        "estimates": config.view_repeats,
        "frames_per_estimate": config.frames_per_estimate(game),
        "frames": config.view_repeats * config.frames_per_estimate(game),
        "reference_estimator": config.reference_estimator,
        "reference_scale": config.reference_scale,
        "reference_repeats": config.reference_repeats,
        "reference_frames": config.reference_repeats
        * config.frames_per_estimate(game, config.reference_scale),
        "reference": reference.tolist(),
        "reference_se": math.sqrt(ref_var),
        "bias_sq_debiased_vs_reference": metrics.bias_sq_debiased - ref_var,
        "cpu_s": time.process_time() - cpu,
    }
    return _row(config, cell, metrics, setting, 1, started, device)


def _row(config, cell, metrics, setting, per_estimate, started, device) -> ResultRow:
    row = make_row(
        "atari",
        config,
        cell,
        metrics,
        setting,
        episodes_per_estimate=per_estimate * (config.inner_steps + 1) * config.num_envs,
        wall_s=time.perf_counter() - started,
        device=device,
    )
    return dataclasses.replace(row, env=cell.tags["game"])


def run_atari_cell(config: AtariBenchConfig, cell: Cell, device: str = "cpu") -> ResultRow:
    """Score one cell (paired or reference view); returns its result row."""
    started, cpu = time.perf_counter(), time.process_time()
    if cell.experiment == "paired":
        return _paired_row(config, cell, device, started, cpu)
    return _reference_row(config, cell, device, started, cpu)


def lvc_vs_pg(
    pg_blocks: torch.Tensor, lvc_blocks: torch.Tensor, *, seed: int = 0, num_bootstrap: int = 2000
) -> dict[str, Any]:
    """``||E d_pg||^2 - ||E d_lvc||^2`` from block means of the paired differences on the same
    blocks (``[nb, D]`` each): the unbiased estimate ``m_e . m_s - tr Cov(e, s) / nb`` with
    ``e = d_pg - d_lvc``, ``s = d_pg + d_lvc``, and a bias-corrected block-bootstrap 95% interval.
    Verdict: ``LVC smaller`` (interval above 0), ``LVC larger`` (below 0) or ``INCONCLUSIVE``."""
    if pg_blocks.shape != lvc_blocks.shape:
        raise ValueError(f"blocks: shapes differ, {list(pg_blocks.shape)} vs {list(lvc_blocks.shape)}")
    nb = pg_blocks.shape[0]

    def estimate(pg: torch.Tensor, lvc: torch.Tensor) -> torch.Tensor:  # [..., nb, D]
        e, s = pg - lvc, pg + lvc
        me, ms = e.mean(-2), s.mean(-2)
        cov = ((e - me.unsqueeze(-2)) * (s - ms.unsqueeze(-2))).sum((-2, -1)) / (nb - 1)
        return (me * ms).sum(-1) - cov / nb

    value = estimate(pg_blocks, lvc_blocks)
    idx = torch.randint(0, nb, (num_bootstrap, nb), generator=torch.Generator().manual_seed(seed))
    boot = estimate(pg_blocks[idx], lvc_blocks[idx])
    boot = boot - (boot.mean() - value)
    low, high = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=boot.dtype)).tolist()
    verdict = "LVC smaller" if low > 0 else ("LVC larger" if high < 0 else "INCONCLUSIVE")
    return {"difference": float(value), "ci_low": low, "ci_high": high, "verdict": verdict}


def _paired_pairs(rows: list[ResultRow]) -> list[tuple[str, ResultRow, ResultRow]]:
    """``(game, pg row, lvc row)`` for games whose paired pg and lvc rows share their samples."""
    out = []
    for game in dict.fromkeys(r.get("game") for r in rows):
        mine = {r.estimator: r for r in rows if r.experiment == "paired" and r.get("game") == game}
        pg, lvc = mine.get("pg"), mine.get("lvc")
        if pg and lvc and pg.get("reference_digest") == lvc.get("reference_digest"):
            out.append((game, pg, lvc))
    return out


def write_atari_plots(rows: list[ResultRow], folder: Path, stem: str = "atari") -> list[Path]:
    """One figure per view, every estimator in its :data:`~metagrad.app.plotting.PALETTE` colour:
    the paired bias per component relative to the norm of the reference's mean meta-gradient,
    with its family-wise CI, per game; the reference view's MSE and debiased bias per game."""
    paths = []
    paired = [r for r in rows if r.experiment == "paired"]
    if paired:
        games = list(dict.fromkeys(r.get("game") for r in paired))
        fig, axes = new_figure((4.2 * len(games), 3.6), ncols=len(games))
        axes = np.atleast_1d(axes)
        for ax, game in zip(axes, games, strict=True):
            mine = sorted((r for r in paired if r.get("game") == game), key=lambda r: r.estimator)
            width = 0.8 / len(mine)
            for i, r in enumerate(mine):
                scale = float(np.linalg.norm(r.get("reference_mean"))) or 1.0
                x = np.arange(len(META_NAMES)) + (i - (len(mine) - 1) / 2) * width
                m = np.array(r.get("paired_mean")) / scale
                low, high = (
                    np.array(r.get("paired_ci_low")) / scale,
                    np.array(r.get("paired_ci_high")) / scale,
                )
                style = PALETTE[r.estimator]
                ax.bar(
                    x,
                    m,
                    width,
                    yerr=[m - low, high - m],
                    capsize=3,
                    color=style.color,
                    label=human(r.estimator),
                )
            ax.axhline(0.0, color="k", lw=0.8)
            ax.set_xticks(np.arange(len(META_NAMES)), [human(n) for n in META_NAMES], fontsize=8)
            ax.set_ylabel("E[g_X - g_ref] / ||E g_ref||", fontsize=8)
            ax.set_title(f"{game}: paired bias against Loaded DiCE", fontsize=9)
            ax.legend(fontsize=8)
        r0 = paired[0]
        caption = (
            f"Paired bias of each inner estimator's MGRL meta-gradient against Loaded DiCE (lambda = 1, "
            f"critic cut) on the same batches, per meta-parameter, divided by the norm of the reference's "
            f"mean meta-gradient; K = {r0.get('inner_steps')}, {r0.metrics.repeats} paired estimates per "
            f"game, run seed {r0.seed}, preset {r0.get('preset')}. Bars: means; error bars: 95% "
            f"Student-t CIs on blocks of {r0.get('ci_block')} estimates, family-wise over the "
            f"{len(META_NAMES)} components (Bonferroni). Theory line: 0 (an unbiased Hessian)."
        )
        paths.append(save_figure(fig, Path(folder) / f"{stem}_paired.png", caption=caption))
    view = [r for r in rows if r.experiment == "reference"]
    if view:
        games = list(dict.fromkeys(r.get("game") for r in view))
        fig, axes = new_figure((9, 3.6), ncols=2)
        estimators = sorted({r.estimator for r in view})
        width = 0.8 / len(estimators)
        for i, est in enumerate(estimators):
            mine = {r.get("game"): r.metrics for r in view if r.estimator == est}
            x = np.array([g for g, game in enumerate(games) if game in mine], dtype=float)
            x += (i - (len(estimators) - 1) / 2) * width
            m = [mine[game] for game in games if game in mine]
            style = PALETTE[est]
            axes[0].bar(x, [v.mse for v in m], width, yerr=[v.mse_se for v in m], capsize=2,
                        color=style.color, label=human(est))  # fmt: skip
            err = [
                [v.bias_debiased - v.bias_ci_low for v in m],
                [v.bias_ci_high - v.bias_debiased for v in m],
            ]
            axes[1].bar(x, [v.bias_debiased for v in m], width, yerr=err, capsize=2, color=style.color)
        for ax, label in zip(
            axes, ("MSE against the reference", "debiased bias against the reference"), strict=True
        ):
            ax.set_yscale("log")
            ax.set_xticks(np.arange(len(games)), [g.split("/")[-1] for g in games], fontsize=8)
            ax.set_ylabel(label, fontsize=8)
        axes[0].legend(fontsize=7)
        fig.suptitle("MGRL meta-gradient estimators against a high-budget Loaded DiCE reference", fontsize=9)
        r0 = view[0]
        caption = (
            f"Reference view: each estimator's {r0.metrics.repeats} estimates per game against the mean of "
            f"{r0.get('reference_repeats')} Loaded DiCE estimates with more games, run seed {r0.seed}, "
            f"preset {r0.get('preset')}; log axes, one axis per metric because the games differ by orders "
            "of magnitude. Error bars: ± one standard error (MSE), 95% bootstrap CI (debiased bias); a "
            "debiased bias of 0 has no bar on the log axis (its CI is in the summary table)."
        )
        paths.append(save_figure(fig, Path(folder) / f"{stem}_estimators.png", caption=caption))
    return paths


def _fmt_ci(mean: float, low: float, high: float) -> str:
    return f"{mean:.3g} [{low:.3g}, {high:.3g}]"


def write_atari_summary(rows: list[ResultRow], path: Path, total_seconds: float | None = None) -> Path:
    """Markdown: the paired biases with their CIs and verdicts, LVC vs pg, then the reference view."""
    path = Path(path)
    lines = ["# MGRL meta-gradient estimators on Atari / MinAtar (no closed form)", ""]
    paired = [r for r in rows if r.experiment == "paired"]
    if paired:
        r0 = paired[0]
        lines += [
            "## Paired view: E[g_X - g_ref] on the same samples",
            "",
            f"Reference {r0.get('reference_estimator')} (lambda = 1, critic cut from the graph, policy "
            f"advantages G_t - V(s_t)); K = {r0.get('inner_steps')}; each estimate: "
            f"{r0.get('n_inner')} games x {r0.get('n_steps')} steps x {r0.get('inner_steps') + 1} batches. "
            f"CIs: Student-t on means of {r0.get('ci_block')} consecutive estimates, 95% family-wise "
            f"(Bonferroni over {', '.join(META_NAMES)}). RESOLVED: some component's CI excludes 0. "
            f"Commit `{r0.provenance.git_commit}`."
            + (f" Cell compute {total_seconds:.0f} s." if total_seconds else ""),
            "",
            "| game | X | " + " | ".join(META_NAMES) + " | norm [95% CI] | rel. to norm of g_ref "
            "| verdict | budget: estimates (frames, CPU s) | lag-1 autocorr. |",
            "|---|---|" + "---|" * len(META_NAMES) + "---|---|---|---|---|",
        ]
        for r in paired:
            m = r.metrics
            comps = [
                _fmt_ci(a, b, c)
                for a, b, c in zip(
                    r.get("paired_mean"), r.get("paired_ci_low"), r.get("paired_ci_high"), strict=True
                )
            ]
            first = r.get("resolved_from_estimates")
            verdict = (
                f"RESOLVED ({', '.join(r.get('resolved_components'))})"
                if r.get("resolved")
                else "INCONCLUSIVE"
            )
            if first:
                verdict += f"; resolved from {first} estimates on (descriptive)"
            lag = ", ".join(f"{x:.2f}" for x in r.get("lag1_autocorr"))
            lines.append(
                f"| {r.get('game')} | {r.estimator} | " + " | ".join(comps)
                + f" | {m.bias_debiased:.3g} [{m.bias_ci_low:.3g}, {m.bias_ci_high:.3g}] "
                f"| {m.relative_bias:.3g} | {verdict} | {r.get('estimates')} ({r.get('frames')}, "
                f"{r.get('cpu_s'):.0f}) | {lag} |"
            )  # fmt: skip
        pairs = _paired_pairs(paired)
        if pairs:
            lines += [
                "",
                "LVC against pg on the same blocks: ||E d_pg||^2 - ||E d_lvc||^2 (> 0: LVC's Hessian "
                "bias is smaller), bias-corrected block-bootstrap 95% CI.",
                "",
                "| game | difference [95% CI] | verdict |",
                "|---|---|---|",
            ]
            for game, pg, lvc in pairs:
                out = lvc_vs_pg(
                    torch.tensor(pg.get("paired_blocks"), dtype=torch.float64),
                    torch.tensor(lvc.get("paired_blocks"), dtype=torch.float64),
                    seed=pg.seed,
                )
                lines.append(
                    f"| {game} | {_fmt_ci(out['difference'], out['ci_low'], out['ci_high'])} "
                    f"| {out['verdict']} |"
                )
        lines.append("")
    view = [r for r in rows if r.experiment == "reference"]
    if view:
        r0 = view[0]
        lines += [
            "## Reference view: against a high-budget reference",
            "",
            f"Reference: {r0.get('reference_estimator')} with {r0.get('reference_scale')}x the games, mean "
            f"of {r0.get('reference_repeats')} estimates on its own stream; {r0.metrics.repeats} estimates "
            "per estimator (common random numbers).",
            "",
            "| game | inner estimator | corr | cosine of mean | debiased bias [CI] "
            "| bias^2 minus both noises "
            "| variance | MSE | reference s.e. |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in view:
            m = r.metrics
            lines.append(
                f"| {r.get('game')} | {r.estimator} | {m.corr:.3f} ± {m.corr_se:.3f} "
                f"| {m.cosine_of_mean:.3f} "
                f"| {m.bias_debiased:.4g} [{m.bias_ci_low:.3g}, {m.bias_ci_high:.3g}] "
                f"| {r.get('bias_sq_debiased_vs_reference'):.4g} | {m.variance:.4g} "
                f"| {m.mse:.4g} ± {m.mse_se:.2g} | {r.get('reference_se'):.3g} |"
            )
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def describe_preset(config: AtariBenchConfig) -> str:
    """One line for ``metagrad list presets``."""
    games = ", ".join(g.split("/")[-1] for g in config.games)
    return (
        f"{games}; {config.num_envs} games x {config.n_steps} steps, K = {config.inner_steps}; paired: "
        f"{config.repeats} estimates of {','.join(config.paired_estimators)} "
        f"vs {config.reference_estimator}; "
        f"reference view: {config.view_repeats} estimates vs {config.reference_estimator} "
        f"x{config.reference_scale} from {config.reference_repeats}"
    )


SUITE = Suite(
    name="atari",
    summary="MGRL meta-gradient estimators on ALE and MinAtar games: paired against Loaded DiCE on the "
    "same samples, and against a high-budget reference (Xu et al. 2018)",
    config_class=AtariBenchConfig,
    spec_class=AtariMetaSpec,
    presets=PRESETS,
    default_preset="xu2018",
    experiments=EXPERIMENTS,
    make_cells=make_atari_cells,
    score_cell=run_atari_cell,
    write_plots=write_atari_plots,
    write_summary=write_atari_summary,
    options=(
        Option("--seed", ("seed",), "int", "run seed (every cell seeds itself from it and its key)"),
        Option("--repeats", ("repeats",), "int", "paired estimates per estimator and game (atari)"),
        Option("--env", ("games",), "names", "atari: comma-separated ALE or MinAtar ids"),
        Option("--estimators", ("estimators",), "names", "comma-separated estimator names"),
        Option("--n", ("num_envs",), "int", "parallel games per rollout (atari)"),
        Option("--inner-steps", ("inner_steps",), "int", "inner steps K"),
        Option(
            "--warmup-frames", ("warmup_frames",), "int", "atari: A2C frames before the agent state is fixed"
        ),
    ),
    setting_fields=("game", "n_inner", "inner_steps", "reference_estimator", "policy_lambda"),
    describe_preset=describe_preset,
)
