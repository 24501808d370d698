"""Scoring one tabular cell: its samples against the exact meta-gradient (or, for
``hessian_scoring``, the exact gradient or Hessian of J) on the run's tasks."""

from __future__ import annotations

import functools
import time
from typing import Any

import torch

from metagrad.app.running.rows import ResultRow, stage_setting
from metagrad.app.suite import Cell, scored_row
from metagrad.app.suites.tabular.cells import derivative_stream_seed, task_config
from metagrad.app.suites.tabular.config import TabularBenchConfig
from metagrad.decomposed import (
    MetaGradientSpec,
    episodes_per_estimate,
    exact_meta_gradient,
    sample_meta_gradients,
)
from metagrad.derivatives import DerivativeSpec, exact_derivatives, mixture_logits, sample_derivatives
from metagrad.envs.tabular import TabularTask
from metagrad.injected import expected_injected_meta_gradient, inner_loop_curvature
from metagrad.seeding import target_policy_seed

__all__ = ["cached_tasks", "hessian_cell_samples", "run_cell", "target_logits"]


@functools.lru_cache(maxsize=8)
def cached_tasks(config: TabularBenchConfig) -> tuple[list[TabularTask], dict[Any, Any]]:
    """The tasks of a run and a cache of their exact meta-gradients (per process)."""
    return config.tasks(), {}


def run_cell(config: TabularBenchConfig, cell: Cell, device: str = "cpu") -> ResultRow:
    """Score one cell over all tasks; returns its result row (config, metrics, provenance).

    Injected-Hessian-bias cells also carry, per task, the squared bias predicted exactly by
    :func:`~metagrad.injected.expected_injected_meta_gradient` (``per_task["predicted_bias_sq"]``).
    """
    if cell.experiment == "hessian_scoring":
        return _run_hessian_cell(config, cell, device)
    tasks_config = task_config(config, cell)
    tasks, exact_cache = cached_tasks(tasks_config)
    tasks = tasks[: cell.num_tasks(config)]
    spec = cell.spec
    assert isinstance(spec, MetaGradientSpec)
    repeats = cell.estimates(config)
    start = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(cell.seed)
    logits = torch.zeros(tasks_config.num_states, config.num_actions, dtype=torch.float64, device=device)
    lirpg = spec.meta_parameter == "intrinsic_reward"
    eta = torch.zeros_like(logits) if lirpg else None
    samples: list[torch.Tensor] = []
    exact: list[torch.Tensor] = []
    predicted: list[torch.Tensor] = []
    for i, task in enumerate(tasks):
        ekey = (i, spec.inner_steps, spec.inner_lr, spec.objective, spec.meta_parameter)
        if ekey not in exact_cache:
            exact_cache[ekey] = exact_meta_gradient(task, logits.cpu(), spec, eta=eta).reshape(-1)
        exact.append(exact_cache[ekey])
        if spec.hessian_bias is not None:
            lkey = ("loop", *ekey)
            if lkey not in exact_cache:
                exact_cache[lkey] = inner_loop_curvature(task, logits.cpu(), spec)
            expected = expected_injected_meta_gradient(task, logits.cpu(), spec, curvature=exact_cache[lkey])
            predicted.append(((expected.reshape(-1) - exact[-1]) ** 2).sum())
        samples.append(
            sample_meta_gradients(task, logits, spec, repeats, generator=gen, eta=eta)
            .reshape(repeats, -1)
            .cpu()
        )
    setting = {
        **stage_setting(spec),
        "inner_steps": spec.inner_steps,
        "inner_lr": spec.inner_lr,
        "objective": spec.objective,
        "critic_noise": spec.critic.noise,
        "hessian_bias_c": spec.hessian_bias,
        "meta_parameter": spec.meta_parameter,
        **dict(spec.hessian.params),
    }
    return scored_row(
        "tabular",
        config,
        cell,
        torch.stack(samples),
        torch.stack(exact),
        setting,
        episodes_per_estimate=episodes_per_estimate(spec),
        started=start,
        device=device,
        per_task={"predicted_bias_sq": torch.stack(predicted)} if predicted else None,
    )


def target_logits(config: TabularBenchConfig, task_index: int, eps: float) -> torch.Tensor:
    """Tang et al.'s target of task ``task_index``: its deterministic part is drawn once per task
    (from the run seed), the same for every eps, estimator and cell."""
    gen = torch.Generator().manual_seed(target_policy_seed(config.seed, task_index))
    actions = torch.randint(config.num_actions, (config.num_states,), generator=gen)
    return mixture_logits(config.num_states, config.num_actions, eps, actions=actions)


def hessian_cell_samples(
    config: TabularBenchConfig, cell: Cell, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(samples [N, R, D], exact [N, D])`` of a ``hessian_scoring`` cell: ``repeats`` estimates
    of the gradient or Hessian of J per task, and the exact one. Every estimator and both
    derivatives of a setting (eps, behaviour, n, critic, objective) see the same episodes and
    critic noise (paired)."""
    tasks, cache = cached_tasks(config)
    tasks = tasks[: cell.num_tasks(config)]
    repeats = cell.estimates(config)
    spec = cell.spec
    assert isinstance(spec, DerivativeSpec)
    eps = float(cell.tags["eps"])
    seed = derivative_stream_seed(config, cell)
    samples, exact = [], []
    for i, task in enumerate(tasks):
        logits = target_logits(config, i, eps)
        key = ("derivative", i, eps, spec.derivative, spec.objective)
        if key not in cache:
            cache[key] = exact_derivatives(task, logits, spec.derivative, spec.objective).reshape(-1)
        exact.append(cache[key])
        gen = torch.Generator(device=device).manual_seed(seed + i)
        x = sample_derivatives(task, logits.to(device), spec, repeats, generator=gen)
        samples.append(x.reshape(repeats, -1).cpu())
    return torch.stack(samples), torch.stack(exact)


def _run_hessian_cell(config: TabularBenchConfig, cell: Cell, device: str) -> ResultRow:
    """Score a ``hessian_scoring`` cell (:func:`hessian_cell_samples`)."""
    spec = cell.spec
    assert isinstance(spec, DerivativeSpec)
    start = time.perf_counter()
    samples, exact = hessian_cell_samples(config, cell, device)
    setting = {
        "derivative": spec.derivative,
        "behaviour": spec.behaviour,
        "n_episodes": spec.n,
        "objective": spec.objective,
        "critic_noise": spec.critic.noise,
        **dict(spec.params),
    }
    return scored_row(
        "tabular",
        config,
        cell,
        samples,
        exact,
        setting,
        episodes_per_estimate=spec.n,
        started=start,
        device=device,
    )
