"""Scoring one Atari cell: the paired view (the block means of the paired differences against
0) or the reference view (the estimator's own estimates against a high-budget reference)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from typing import Any

import torch

from metagrad.agents.mgrl import META_NAMES
from metagrad.app.judging.statistics import block_means, lag1_autocorrelation
from metagrad.app.running.rows import ResultRow
from metagrad.app.suite import Cell, make_row
from metagrad.app.suites.atari.claims import first_resolved, paired_statistics
from metagrad.app.suites.atari.config import AtariBenchConfig, AtariMetaSpec
from metagrad.app.suites.atari.samples import (
    estimates,
    paired_estimates,
    reference_meta_gradient,
    stream_seed,
)
from metagrad.scoring import Score, centred_cosine, score

__all__ = ["run_cell"]


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
        generator=torch.Generator().manual_seed(cell.seed),
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
    first = first_resolved(blocks)
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
        "lag1_autocorr": lag1_autocorrelation(d),
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
    spec = cell.spec
    assert isinstance(spec, AtariMetaSpec)
    reference, reference_se = reference_meta_gradient(config, game, device)
    # common random numbers: every estimator sees the same games and action draws (while its
    # inner iterates agree with the others'); the reference uses its own stream
    samples = estimates(
        config, game, spec.estimator, config.view_repeats, 1, stream_seed(config, game, 1), device
    )
    metrics = score(
        samples.unsqueeze(0),
        reference.unsqueeze(0),
        generator=torch.Generator().manual_seed(cell.seed),
    )
    ref_var = float((reference_se**2).sum())
    setting = {
        "game": game,
        "inner": spec.estimator,
        "n_inner": spec.n,
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


def _row(
    config: AtariBenchConfig,
    cell: Cell,
    metrics: Score,
    setting: dict[str, Any],
    per_estimate: int,
    started: float,
    device: str,
) -> ResultRow:
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


def run_cell(config: AtariBenchConfig, cell: Cell, device: str = "cpu") -> ResultRow:
    """Score one cell (paired or reference view); returns its result row."""
    started, cpu = time.perf_counter(), time.process_time()
    if cell.experiment == "paired":
        return _paired_row(config, cell, device, started, cpu)
    return _reference_row(config, cell, device, started, cpu)
