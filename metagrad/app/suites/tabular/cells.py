"""The cells of a tabular run: one :class:`~metagrad.app.suite.Cell` per recipe, in a fixed
order (the official families first, then the extensions), bound to the run config."""

from __future__ import annotations

import dataclasses
from typing import Any

from metagrad.app.suite import Cell, bind_cells
from metagrad.app.suites.tabular.config import TabularBenchConfig
from metagrad.critics import CriticSpec
from metagrad.decomposed import MetaGradientSpec
from metagrad.derivatives import DerivativeSpec
from metagrad.estimators import get_estimator
from metagrad.mlmc import MLMC
from metagrad.seeding import digest, setting_seed
from metagrad.staged import StageSpec

__all__ = ["derivative_stream_seed", "make_cells", "task_config"]


def _lee(config: TabularBenchConfig, est: str, n: int, k: int, alpha: float) -> MetaGradientSpec:
    critic = CriticSpec(kind="noisy_exact", noise=config.critic_noise)
    return MetaGradientSpec.from_combination(
        "lee", est, n, inner_steps=k, inner_lr=float(alpha), objective=config.objective, critic=critic
    )


def make_cells(config: TabularBenchConfig) -> list[Cell]:
    """The cells of a run, in a fixed order (official families first, then extensions)."""
    critic = CriticSpec(kind="noisy_exact", noise=config.critic_noise)
    common: dict[str, Any] = dict(objective=config.objective, critic=critic)
    wanted = set(config.experiments)
    cells: list[Cell] = []

    def staged(experiment: str, est: str, combos: tuple[str, ...], n: int, k: int, alpha: float) -> None:
        for combo in combos:
            spec = MetaGradientSpec.from_combination(combo, est, n, inner_steps=k, inner_lr=alpha, **common)
            cells.append(Cell(experiment, est, spec, n))

    if "decomposition" in wanted:
        cells.append(
            Cell(
                "decomposition",
                "exact",
                MetaGradientSpec(inner_steps=config.inner_steps, inner_lr=config.inner_lr, **common),
            )
        )
        for n in config.decomposition_n:
            for est in config.estimators:
                staged("decomposition", est, config.combinations, n, config.inner_steps, config.inner_lr)
    for est in config.ablation_estimators:
        if "k_ablation" in wanted:
            for k in config.ablation_k:
                staged("k_ablation", est, config.combinations, config.ablation_n, k, config.inner_lr)
        if "alpha_ablation" in wanted:
            for alpha in config.ablation_alpha:
                staged(
                    "alpha_ablation",
                    est,
                    config.combinations,
                    config.ablation_n,
                    config.ablation_alpha_k,
                    alpha,
                )
    families = (
        (
            "sweep_n",
            config.sweep_n_estimators,
            [(n, config.sweep_n_k, config.sweep_n_alpha) for n in config.sweep_n],
        ),
        (
            "sweep_k",
            config.sweep_k_estimators,
            [(config.comp_n, k, config.sweep_k_alpha) for k in config.sweep_k],
        ),
        (
            "sweep_alpha",
            config.sweep_alpha_estimators,
            [(config.comp_n, config.sweep_alpha_k, a) for a in config.sweep_alpha],
        ),
    )
    for experiment, estimators, points in families:
        if experiment in wanted:
            for est in estimators:
                for n, k, alpha in points:
                    spec = _lee(config, est, n, k, alpha)
                    cells.append(Cell(experiment, est, spec, n, **config.budget(experiment)))
    if "hessian_ranking" in wanted:
        for n in config.ranking_n:
            for est in config.estimators:
                spec = MetaGradientSpec.from_combination(
                    "ele", est, n, inner_steps=config.inner_steps, inner_lr=config.inner_lr, **common
                )
                cells.append(Cell("hessian_ranking", est, spec, n, **config.budget("hessian_ranking")))
    injections = []
    if "hessian_bias" in wanted:
        injections += [
            ("hessian_bias", k, alpha) for k in config.hessian_bias_k for alpha in config.hessian_bias_alpha
        ]
    if "hessian_bias_k" in wanted:
        injections += [
            ("hessian_bias_k", k, config.hessian_bias_ext_alpha) for k in config.hessian_bias_ext_k
        ]
    for experiment, k, alpha in injections:
        for c in config.hessian_bias_c:
            spec = MetaGradientSpec(inner_steps=k, inner_lr=float(alpha), hessian_bias=float(c), **common)
            cells.append(Cell(experiment, "exact", spec, 0, {"hessian_bias_c": float(c)}))
    if "lirpg" in wanted:
        for est in config.lirpg_estimators:
            takes = "gae_lambda" in get_estimator(est).params  # the advantage-based estimators
            gae = (("gae_lambda", config.lirpg_gae_lambda),) if takes else ()
            for k in config.lirpg_k:
                for n in config.lirpg_n:
                    spec = MetaGradientSpec(
                        hessian=StageSpec(est, n, params=gae),
                        inner_steps=k,
                        inner_lr=config.inner_lr,
                        meta_parameter="intrinsic_reward",
                        **common,
                    )
                    cells.append(Cell("lirpg", est, spec, n))
    if "hessian_scoring" in wanted:
        cells += _hessian_scoring_cells(config, critic)
    if "mlmc_bias" in wanted:
        cells += _mlmc_cells(config, common)
    if "sweep_states" in wanted:
        for est in config.sweep_states_estimators:
            for combo in config.sweep_states_combinations:
                spec = MetaGradientSpec.from_combination(
                    combo,
                    est,
                    config.sweep_states_n,
                    inner_steps=config.inner_steps,
                    inner_lr=config.inner_lr,
                    **common,
                )
                for states in config.sweep_states:
                    tags = {"num_states": int(states)}
                    cells.append(Cell("sweep_states", est, spec, config.sweep_states_n, tags=tags))
    return bind_cells(config, cells)


def _hessian_scoring_cells(config: TabularBenchConfig, critic: CriticSpec) -> list[Cell]:
    """One cell per estimator, derivative, eps, behaviour and n (eps is a tag: part of the key)."""
    cells: list[Cell] = []
    for eps in config.ope_eps:
        for behaviour in config.ope_behaviours:
            for n in config.ope_n:
                for derivative in config.ope_derivatives:
                    for est in config.ope_estimators:
                        spec = DerivativeSpec(est, n, derivative, behaviour, critic, config.objective)
                        cells.append(Cell("hessian_scoring", est, spec, n, tags={"eps": float(eps)}))
    return cells


def _mlmc_cells(config: TabularBenchConfig, common: dict[str, Any]) -> list[Cell]:
    """The plain inner estimators and the MLMC inner stage on one compositional-bias setting,
    each with ``mlmc_repeats`` estimates per task (the MLMC stage pairs with the plain ones: its
    level-0 term sees the plain estimators' episodes)."""
    kw: dict[str, Any] = dict(inner_steps=config.inner_steps, inner_lr=config.inner_lr, **common)
    repeats = config.mlmc_repeats
    cells: list[Cell] = []
    for n in config.mlmc_n:
        for est in config.mlmc_plain_estimators:
            spec = MetaGradientSpec.from_combination("lee", est, n, **kw)
            cells.append(Cell("mlmc_bias", est, spec, n, repeats=repeats))
        mlmc = MLMC(max_level=config.mlmc_max_level)
        spec = MetaGradientSpec(inner=StageSpec(config.mlmc_estimator, n, mlmc=mlmc), **kw)
        extra: dict[str, Any] = {"mlmc_base": config.mlmc_estimator, "mlmc_rate": mlmc.rate}
        if mlmc.max_level is not None:
            extra["mlmc_max_level"] = mlmc.max_level
        cells.append(Cell("mlmc_bias", "mlmc", spec, n, extra, repeats=repeats))
    for n in config.mlmc_budget_n:  # the plain estimator's bias-cost frontier, for equal budgets
        if n not in config.mlmc_n or config.mlmc_estimator not in config.mlmc_plain_estimators:
            spec = MetaGradientSpec.from_combination("lee", config.mlmc_estimator, n, **kw)
            cells.append(Cell("mlmc_bias", config.mlmc_estimator, spec, n, repeats=repeats))
    return cells


def task_config(config: TabularBenchConfig, cell: Cell) -> TabularBenchConfig:
    """The config that defines the cell's tasks: the run's, with the cell's own state count."""
    states = cell.tags.get("num_states")
    return config if states is None else dataclasses.replace(config, num_states=int(states))


def derivative_stream_seed(config: TabularBenchConfig, cell: Cell) -> int:
    """The seed of a ``hessian_scoring`` cell's episodes and critic noise (task ``i`` draws from
    ``seed + i``): the setting's digest with the estimator, the derivative and the estimator's
    parameters blanked (:func:`metagrad.seeding.setting_seed`), so that every estimator and both
    derivatives of a setting (eps, behaviour, n, critic, objective) see the same episodes."""
    spec = cell.spec
    assert isinstance(spec, DerivativeSpec)
    shared = dataclasses.replace(spec, estimator="dice", derivative="gradient", params=())
    payload = {
        "config": {name: getattr(config, name) for name in config.CELL_FIELDS},
        "experiment": cell.experiment,
        "spec": shared.to_dict(),
        "eps": float(cell.tags["eps"]),
    }
    return setting_seed(digest(payload))
