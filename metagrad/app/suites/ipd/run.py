"""Scoring one IPD cell: its policy pairs (random, trained by exact LOLA, or along the official
off-policy training run), prepared once per run, and the LOLA gradient estimates against the
exact LOLA target."""

from __future__ import annotations

import functools
import time
from typing import Any

import torch

from metagrad.agents.lola import GameConfig, LearnerConfig, play
from metagrad.app.running.rows import ResultRow, stage_setting
from metagrad.app.suite import Cell, run_state, scored_row
from metagrad.app.suites.ipd.config import PAIR_KINDS, IPDBenchConfig
from metagrad.lola import LolaSpec, episodes_per_lola_estimate, exact_lola_target, sample_lola_gradients
from metagrad.seeding import pair_seed
from metagrad.validation import check_choice

__all__ = ["fifo_buffer_updates", "pairs_of", "policy_pairs", "prepare", "run_cell", "training_run"]


def policy_pairs(config: IPDBenchConfig, kind: str) -> list[dict[str, torch.Tensor]]:
    """The ``num_pairs`` evaluation pairs of one kind, each with its behaviour (earlier) pair.

    Returns dicts with ``theta1, theta2`` (float64 ``[5]``) and ``mu1, mu2`` (``[5]``, or
    ``[J, 5]`` for the ``run`` kind: the pairs whose batches fill its FIFO buffer), deterministic
    in the seed.
    """
    check_choice("pair_kind", kind, PAIR_KINDS)
    if kind == "run":
        return _run_pairs(config)
    pairs = []
    for i in range(config.num_pairs):
        gen = torch.Generator().manual_seed(pair_seed(config.seed, i))
        t1 = torch.randn(5, generator=gen, dtype=torch.float64)
        t2 = torch.randn(5, generator=gen, dtype=torch.float64)
        if kind == "random":
            shift = config.behaviour_shift
            mu1 = t1 + shift * torch.randn(5, generator=gen, dtype=torch.float64)
            mu2 = t2 + shift * torch.randn(5, generator=gen, dtype=torch.float64)
            pairs.append({"theta1": t1, "theta2": t2, "mu1": mu1, "mu2": mu2})
            continue
        learner = LearnerConfig(
            "lola", "exact", lookahead_lr=config.train_lookahead_lr, optimizer="adam", lr=0.1
        )
        game = GameConfig(config.game, config.gamma, config.horizon)
        hist = play(learner, learner, config.train_iterations, game=game, theta1=t1, theta2=t2, seed=i)
        lag = -1 - config.behaviour_lag
        pairs.append(
            {
                "theta1": hist["path1"][-1],
                "theta2": hist["path2"][-1],
                "mu1": hist["path1"][lag],
                "mu2": hist["path2"][lag],
            }
        )
    return pairs


def training_run(config: IPDBenchConfig) -> dict[str, Any]:
    """The official protocol's training run: both agents off-policy LOLA-DiCE from zero logits
    (lookahead ``off_policy_lookahead_lr``, ``off_policy_n`` inner and outer episodes, Adam 0.1,
    the earlier inner batches of the buffer replayed), ``run_iterations`` simultaneous updates,
    seeded from the run seed; :func:`metagrad.agents.lola.play`'s history."""
    learner = LearnerConfig(
        "lola",
        "off_policy_lola_dice",
        lookahead_lr=config.off_policy_lookahead_lr,
        optimizer="adam",
        lr=0.1,
        n_inner=config.off_policy_n,
        n_outer=config.off_policy_n,
        replay_batches=config.off_policy_replay // config.off_policy_n,
    )
    game = GameConfig(config.game, config.gamma, config.horizon)
    zeros = torch.zeros(5, dtype=torch.float64)
    return play(
        learner, learner, config.run_iterations, game=game, theta1=zeros, theta2=zeros, seed=config.seed
    )


def fifo_buffer_updates(update: int, batches: int) -> list[int]:
    """The updates whose pairs played the ``batches`` replayed batches of the official FIFO
    buffer when agent 1's lookahead is computed at ``update``: each update adds one batch per
    agent (agent 2's lookahead, the one that shapes agent 1, adds its fresh batch first), so the
    buffer holds, newest first, two batches of ``update - 1``, two of ``update - 2``, ... ;
    updates before 0 are the initial fill at the zero logits (update 0)."""
    return [max(update - 1 - j // 2, 0) for j in range(batches)]


def _run_pairs(config: IPDBenchConfig) -> list[dict[str, torch.Tensor]]:
    history = _training_run(config)
    path1, path2 = torch.stack(history["path1"]), torch.stack(history["path2"])
    batches = config.off_policy_replay // config.off_policy_n
    pairs = []
    for i in range(config.num_pairs):
        update = (i + 1) * config.run_iterations // config.num_pairs
        earlier = fifo_buffer_updates(update, batches)
        pairs.append(
            {
                "theta1": path1[update],
                "theta2": path2[update],
                "mu1": path1[earlier],
                "mu2": path2[earlier],
            }
        )
    return pairs


@functools.lru_cache(maxsize=4)
def _training_run(config: IPDBenchConfig) -> dict[str, Any]:
    return training_run(config)


def pairs_of(config: IPDBenchConfig, kind: str) -> list[dict[str, torch.Tensor]]:
    """The run's policy pairs of one kind: as :func:`prepare` handed them over, else computed once
    per process."""
    return run_state(("ipd_pairs", config, kind), functools.partial(policy_pairs, config, kind))


def prepare(config: IPDBenchConfig) -> dict[Any, Any]:
    """The run's policy pairs of every kind its cells use (``Suite.prepare``: trained once, by
    the runner, and handed to the workers)."""
    kinds = set(config.pair_kinds)
    if "off_policy" in config.experiments:
        kinds |= set(config.off_policy_pair_kinds)
    return {("ipd_pairs", config, kind): pairs_of(config, kind) for kind in sorted(kinds)}


def run_cell(config: IPDBenchConfig, cell: Cell, device: str = "cpu") -> ResultRow:
    """Score one cell over its policy pairs; returns its result row (config, metrics, provenance)."""
    pairs = pairs_of(config, cell.tags["pair_kind"])
    spec = cell.spec
    assert isinstance(spec, LolaSpec)
    start = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(cell.seed)
    samples: list[torch.Tensor] = []
    exact: list[torch.Tensor] = []
    for p in pairs:
        t1, t2 = p["theta1"].to(device), p["theta2"].to(device)
        exact.append(exact_lola_target(p["theta1"], p["theta2"], spec).cpu())
        samples.append(
            sample_lola_gradients(
                t1,
                t2,
                spec,
                config.repeats,
                generator=gen,
                behaviour=(p["mu1"].to(device), p["mu2"].to(device)),
            ).cpu()
        )
    setting = {
        **stage_setting(spec),
        "game": config.game,
        "replay": spec.inner.replay,
        "shared_lookahead": spec.shared_lookahead,
        "lookahead_steps": spec.lookahead_steps,
        "lookahead_lr": spec.lookahead_lr,
        "gamma": spec.gamma,
        "horizon": spec.horizon,
        "critic": spec.critic.kind,
    }
    return scored_row(
        "ipd",
        config,
        cell,
        torch.stack(samples),
        torch.stack(exact),
        setting,
        episodes_per_estimate=episodes_per_lola_estimate(spec),
        started=start,
        device=device,
    )
