"""The cells of an IPD run: one :class:`~metagrad.app.suite.Cell` per LOLA recipe and kind of
policy pair, in a fixed order, bound to the run config."""

from __future__ import annotations

from metagrad.app.suite import Cell, bind_cells
from metagrad.app.suites.ipd.config import IPDBenchConfig
from metagrad.critics import CriticSpec
from metagrad.lola import LolaSpec, lola_variant
from metagrad.staged import StageSpec

__all__ = ["make_cells"]


def make_cells(config: IPDBenchConfig) -> list[Cell]:
    """The cells of a run, in a fixed order."""
    cells: list[Cell] = []
    for kind in config.pair_kinds:
        tag = {"pair_kind": kind}
        if "decomposition" in config.experiments:
            for est in config.estimators:
                for combo in config.combinations:
                    spec = LolaSpec.from_combination(combo, est, config.n, **config.base_spec())
                    cells.append(Cell("decomposition", est, spec, config.n, tags=tag))
        if "sweep_n" in config.experiments:
            for variant in config.sweep_variants:
                for n in config.sweep_n:
                    spec = lola_variant(variant, n, n, replay=n, **config.base_spec())
                    cells.append(Cell("sweep_n", variant, spec, n, tags=tag))
        for experiment, values, name in (
            ("sweep_lr", config.sweep_lr, "lookahead_lr"),
            ("sweep_steps", config.sweep_steps, "lookahead_steps"),
        ):
            if experiment not in config.experiments:
                continue
            for value in values:
                spec = LolaSpec.from_combination(
                    "lee", "dice_baseline", config.n, **config.base_spec(**{name: value})
                )
                cells.append(Cell(experiment, "dice_baseline", spec, config.n, tags=tag))
    if "off_policy" in config.experiments:
        cells += _off_policy_cells(config)
    return bind_cells(config, cells)


def _off_policy_cells(config: IPDBenchConfig) -> list[Cell]:
    """The ``off_policy`` cells: five lookahead variants x outer exact / sampled x pair kinds."""
    n, replay = config.off_policy_n, config.off_policy_replay
    learned = CriticSpec(config.critic, config.critic_noise)
    variants = (  # label, lookahead estimator, replay, critic, baseline
        ("dice_baseline", "dice_baseline", 0, learned, "per_step"),
        ("off_policy_dice", "off_policy_dice", 0, learned, "cumulative"),
        ("off_policy_dice", "off_policy_dice", replay, learned, "cumulative"),
        ("dice", "dice", 0, CriticSpec("zero"), "none"),
        ("off_policy_dice", "off_policy_dice", replay, CriticSpec("zero"), "none"),
    )
    cells = []
    for kind in config.off_policy_pair_kinds:
        for outer in (StageSpec(), StageSpec("dice_baseline", n)):
            for label, estimator, m, critic, baseline in variants:
                look = StageSpec(estimator, n, m)
                spec = LolaSpec(
                    inner=look,
                    hessian=look,
                    outer=outer,
                    shared_lookahead=True,
                    **{**config.base_spec(lookahead_lr=config.off_policy_lookahead_lr), "critic": critic},
                )
                extra = {"replay": m, "baseline": baseline}
                cells.append(Cell("off_policy", label, spec, n, extra, {"pair_kind": kind}))
    return cells
