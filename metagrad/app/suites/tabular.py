"""The ``tabular`` suite (``metagrad bench tabular``): decomposed meta-gradient bias on random
tabular MDPs.

A run is a list of *cells*; a cell is one meta-gradient recipe (:class:`MetaGradientSpec`) scored
over ``num_tasks`` random MDPs x ``repeats`` estimates against the exact float64 meta-gradient.
The preset ``liu2022`` is the official protocol of Liu et al., NeurIPS 2022 (arXiv 2112.15400;
Theoretical-GMRL ``tabular/maml/run_*.sh`` and ``tabular/lirpg/run_step.sh``, BACKGROUND.md
section 4), each family at its own settings:

* ``decomposition``: dice / loaded_dice / lvc / pg on the 7 exact/estimated stage combinations
  (and ``eee``), K = 1, alpha = 10, n in {2, ..., 256} per sampled stage;
* ``k_ablation``, ``alpha_ablation``: pg on the 7 combinations, n = 32, K = 1..6 at alpha = 10,
  and alpha in {1, 3, ..., 13} at K = 5;
* ``sweep_n``, ``sweep_k``, ``sweep_alpha``: compositional bias (inner stage estimated, Hessian
  and outer exact, 10 estimates per task): against n at K = 2, alpha = 3 (pg, dice); against
  K = 1..6 at alpha = 3, n = 32 (pg, lvc, loaded_dice, dice); against alpha at K = 6 (pg, dice);
* ``hessian_bias``: all stages exact plus the injected term ``mean(theta^2 (c + 0.3 eps))`` on
  the Jacobian path, K = 2, alpha in {3, 3.5, 4, 4.5}, c in {0.5, ..., 4}; each row also carries
  the squared bias predicted exactly (:func:`~metagrad.decomposed.expected_injected_meta_gradient`);
* ``lirpg``: the intrinsic-reward meta-gradient with the Hessian stage by pg or lvc (GAE lambda
  0.9), 'ele', K = 1..5, n in {16, ..., 256}.

Budgets: ``num_tasks`` MDPs x ``repeats`` estimates per cell (10 x 20, the official scripts'),
scaled for the experiments listed in ``budget_scales`` (``(experiment, task factor, repeat
factor)``): the compositional-bias sweeps, whose verdicts need more than the official 10 x 10,
and the Hessian-bias ranking (see the README). ``--num-tasks`` / ``--repeats`` scale them all.

Extensions, separately named: ``hessian_ranking`` (the decomposition's 'ele' cells, n >= 32, with
the budget the Hessian-bias ranking needs), ``hessian_bias_k`` (the
injection at K = 1..6, alpha = 10), and the preset ``liu2022_finite`` (every family against the
finite-horizon objective the T = 20 samples estimate, instead of the official infinite-horizon
oracle). The official vs-n and vs-alpha scripts leave lvc and loaded_dice out; with the inner stage
alone sampled ('lee') they would add nothing: pg, lvc and loaded_dice share their first derivative
``sum_t gamma^t A_t grad log pi_t``, so on common random numbers their 'lee' estimates coincide
exactly (the ``sweep_k`` rows show it).

Further extensions, each in its own preset and never in ``liu2022``:

* ``hessian_scoring`` (presets ``tang2021``, ``ope``): the gradient and the Hessian of ``J`` itself
  from on- or off-policy episodes (behaviour uniform, target ``eps * deterministic + (1 - eps) *
  uniform``), per estimator (the OPE family of Tang et al., NeurIPS 2021), against the exact ones,
  vs the number of episodes;
* ``mlmc_bias`` (preset ``mlmc``): the compositional-bias setting (inner stage estimated, Hessian
  and outer exact, finite objective) scored for the plain inner estimators and for the MLMC inner
  stage (estimator label ``mlmc``) with many estimates per task, so that a bias of the plain
  estimators is resolved; rows carry the expected episodes per estimate;
* ``sweep_states`` (preset ``large_s``): how the bias of the stage combinations
  ``sweep_states_combinations`` behaves as the number of states S grows.

Each cell's randomness is seeded from the run seed and its setting (never its estimator or its
position), so any cell can be recomputed alone with the same numbers and every estimator of a
setting sees the same tasks, trajectories and critic noise (common random numbers).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from metagrad.app.claims import tabular_claims
from metagrad.app.memory import MemoryEstimate, staged_estimate
from metagrad.app.options import Option
from metagrad.app.outputs import write_text_atomic
from metagrad.app.plotting import human, sequence_styles, series_grid, series_panel
from metagrad.app.provenance import config_hash
from metagrad.app.rows import ResultRow, stage_setting
from metagrad.app.suite import STAGED_SPEC_FIELDS, Cell, Suite, cell_seed, common_options, scored_row
from metagrad.critics import CriticSpec
from metagrad.decomposed import (
    MetaGradientSpec,
    episodes_per_estimate,
    exact_meta_gradient,
    sample_meta_gradients,
)
from metagrad.derivatives import (
    BEHAVIOURS,
    DERIVATIVES,
    DerivativeSpec,
    exact_derivatives,
    mixture_logits,
    sample_derivatives,
)
from metagrad.envs.tabular import TabularTask, random_task
from metagrad.estimators import get_estimator
from metagrad.exact import Objective
from metagrad.injected import expected_injected_meta_gradient, inner_loop_curvature
from metagrad.mlmc import MLMC
from metagrad.staged import COMBINATIONS, StageSpec
from metagrad.validation import check_int, check_int_fields, check_real, check_seed

__all__ = [
    "EXPERIMENTS",
    "EXTENSION_EXPERIMENTS",
    "EXTRA_EXPERIMENTS",
    "OFFICIAL_EXPERIMENTS",
    "PRESETS",
    "SUITE",
    "TabularBenchConfig",
    "cell_cost",
    "hessian_cell_samples",
    "make_cells",
    "memory_estimate",
    "run_cell",
    "target_logits",
    "write_plots",
    "write_summary",
]


# The official protocol's families (Theoretical-GMRL ``tabular/maml/run_*.sh`` and
# ``tabular/lirpg/run_step.sh``), then this suite's own extensions (separately named).
OFFICIAL_EXPERIMENTS = (
    "decomposition",
    "k_ablation",
    "alpha_ablation",
    "sweep_n",
    "sweep_k",
    "sweep_alpha",
    "hessian_bias",
    "lirpg",
)
EXTENSION_EXPERIMENTS = ("hessian_ranking", "hessian_bias_k")
# Extensions beyond the paper that run only in their own presets (never by default)
EXTRA_EXPERIMENTS = ("hessian_scoring", "mlmc_bias", "sweep_states")
EXPERIMENTS = OFFICIAL_EXPERIMENTS + EXTENSION_EXPERIMENTS + EXTRA_EXPERIMENTS
OPE_ESTIMATORS = ("stepwise_is", "doubly_robust", "vtrace", "taylor1", "taylor2")

# The config fields that define a cell's tasks, budget and randomness (with the cell's own spec):
# what lists the other cells of a run (estimators, sweep values, presets) stays out of its key.
_CELL_FIELDS = (
    "env",
    "num_states",
    "num_actions",
    "gamma",
    "horizon",
    "dirichlet_alpha",
    "num_tasks",
    "repeats",
    "seed",
)

_ESTIMATOR_FIELDS = (
    "estimators",
    "ablation_estimators",
    "sweep_n_estimators",
    "sweep_k_estimators",
    "sweep_alpha_estimators",
    "lirpg_estimators",
    "ope_estimators",
    "mlmc_plain_estimators",
    "sweep_states_estimators",
)
_SIZE_FIELDS = ("decomposition_n", "sweep_n", "lirpg_n", "ranking_n")
_STEP_FIELDS = ("ablation_k", "sweep_k", "hessian_bias_k", "hessian_bias_ext_k", "lirpg_k")
_RATE_FIELDS = ("ablation_alpha", "sweep_alpha", "hessian_bias_alpha")


@dataclass(frozen=True)
class TabularBenchConfig:
    """Everything that defines a tabular bench run (recorded in every row).

    The defaults are the official protocol of Liu et al. 2022 (BACKGROUND.md section 4), one
    group of fields per family: 20x5 MDPs, Dirichlet 0.001, gamma 0.8, T = 20, critic noise 1.0,
    ``num_tasks`` MDPs x ``repeats`` estimates, scaled for the experiments listed in
    ``budget_scales`` (``(experiment, task factor, repeat factor)``; the official
    compositional-bias scripts use 10 x 10, ``--same_trials 10``).
    """

    CELL_FIELDS: ClassVar[tuple[str, ...]] = _CELL_FIELDS

    preset: str = "custom"
    env: str = "MetaGrad/TabularMDP-v0"
    num_states: int = 20
    num_actions: int = 5
    gamma: float = 0.8
    horizon: int = 20
    dirichlet_alpha: float = 0.001
    objective: Objective = "infinite"
    critic_noise: float = 1.0
    num_tasks: int = 10
    repeats: int = 20
    seed: int = 0
    budget_scales: tuple[tuple[str, float, float], ...] = (
        ("sweep_n", 1.0, 5.0),
        ("sweep_k", 1.0, 5.0),
        ("sweep_alpha", 4.0, 1.0),
        ("hessian_ranking", 4.0, 1.0),
    )
    # decomposition (run_decompose.sh): 7 combinations + eee, K = 1, alpha = 10, n = 2..256
    estimators: tuple[str, ...] = ("dice", "loaded_dice", "lvc", "pg")
    combinations: tuple[str, ...] = COMBINATIONS
    decomposition_n: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256)
    inner_steps: int = 1
    inner_lr: float = 10.0
    # K and alpha ablations (run_step_ablation.sh, run_lr.sh): 7 combinations, n = 32
    ablation_estimators: tuple[str, ...] = ("pg",)
    ablation_n: int = 32
    ablation_k: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    ablation_alpha: tuple[float, ...] = (1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0)
    ablation_alpha_k: int = 5
    # compositional bias, inner stage only ('lee') (run_comp_sample.sh, run_comp_step_num.sh,
    # run_comp_lr.sh)
    comp_n: int = 32
    sweep_n: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256)
    sweep_n_k: int = 2
    sweep_n_alpha: float = 3.0
    sweep_n_estimators: tuple[str, ...] = ("pg", "dice")
    sweep_k: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    sweep_k_alpha: float = 3.0
    sweep_k_estimators: tuple[str, ...] = ("pg", "lvc", "loaded_dice", "dice")
    sweep_alpha: tuple[float, ...] = (1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0)
    sweep_alpha_k: int = 6
    sweep_alpha_estimators: tuple[str, ...] = ("pg", "dice")
    # extension: the decomposition's 'ele' rows (the Hessian-bias ranking) with more tasks
    ranking_n: tuple[int, ...] = (32, 64, 128, 256)
    # injected Hessian bias (run_hessian_bias.sh): eee + mean(theta^2 (c + 0.3 eps)), K = 2
    hessian_bias_c: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
    hessian_bias_k: tuple[int, ...] = (2,)
    hessian_bias_alpha: tuple[float, ...] = (3.0, 3.5, 4.0, 4.5)
    # extension: the injection at K = 1..6 (the growth of its exponent with K)
    hessian_bias_ext_k: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    hessian_bias_ext_alpha: float = 10.0
    # LIRPG (lirpg/run_step.sh): 'ele', Hessian by pg / lvc with GAE lambda 0.9, meta-parameter eta
    lirpg_estimators: tuple[str, ...] = ("pg", "lvc")
    lirpg_k: tuple[int, ...] = (1, 2, 3, 4, 5)
    lirpg_n: tuple[int, ...] = (16, 32, 64, 128, 256)
    lirpg_gae_lambda: float = 0.9
    experiments: tuple[str, ...] = OFFICIAL_EXPERIMENTS + EXTENSION_EXPERIMENTS
    # extension hessian_scoring: the OPE family on the gradient / Hessian of J (Tang et al. 2021)
    ope_estimators: tuple[str, ...] = OPE_ESTIMATORS
    ope_eps: tuple[float, ...] = (0.0, 0.2, 0.5, 0.8)
    ope_behaviours: tuple[str, ...] = BEHAVIOURS
    ope_n: tuple[int, ...] = (10, 100, 1000)
    ope_derivatives: tuple[str, ...] = DERIVATIVES
    # extension mlmc_bias: the plain inner estimators beside the MLMC inner stage ('lee', K =
    # inner_steps, alpha = inner_lr)
    mlmc_plain_estimators: tuple[str, ...] = ("dice", "loaded_dice", "lvc", "pg")
    mlmc_estimator: str = "pg"
    mlmc_n: tuple[int, ...] = (8,)
    mlmc_max_level: int | None = None
    mlmc_repeats: int = 1000
    mlmc_budget_n: tuple[int, ...] = (16, 32, 64)  # plain mlmc_estimator at larger budgets
    # extension sweep_states: the bias of these stage combinations against the number of states
    sweep_states: tuple[int, ...] = (20, 50, 100, 200, 500)
    sweep_states_combinations: tuple[str, ...] = ("lee", "ele")
    sweep_states_estimators: tuple[str, ...] = ("dice", "loaded_dice", "lvc", "pg")
    sweep_states_n: int = 32

    def __post_init__(self) -> None:
        if self.env != "MetaGrad/TabularMDP-v0":
            raise ValueError(
                f"env: the tabular bench runs 'MetaGrad/TabularMDP-v0', got unknown env {self.env!r}"
            )
        check_int_fields(
            self,
            (
                "num_tasks",
                "num_states",
                "num_actions",
                "horizon",
                "ablation_n",
                "comp_n",
            ),
            1,
        )
        check_int_fields(self, ("repeats",), 2)
        check_seed("seed", self.seed)
        for entry in self.budget_scales:
            if len(entry) != 3 or entry[0] not in EXPERIMENTS:
                raise ValueError(
                    f"budget_scales: expected (experiment, task factor, repeat factor) entries, got {entry!r}"
                )
            check_real("budget_scales task factor", entry[1], minimum=0.0, open_min=True)
            check_real("budget_scales repeat factor", entry[2], minimum=0.0, open_min=True)
        check_int_fields(self, ("inner_steps", "ablation_alpha_k", "sweep_n_k", "sweep_alpha_k"), 0)
        for name in _SIZE_FIELDS:
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in getattr(self, name)):
                raise ValueError(f"{name}: sample sizes must be integers >= 1, got {getattr(self, name)}")
        for name in _STEP_FIELDS:
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in getattr(self, name)):
                raise ValueError(f"{name}: inner steps K must be integers >= 0, got {getattr(self, name)}")
        for name in _RATE_FIELDS:
            for alpha in getattr(self, name):
                check_real(name, alpha)
        for name in ("inner_lr", "sweep_n_alpha", "sweep_k_alpha", "hessian_bias_ext_alpha"):
            check_real(name, getattr(self, name))
        check_real("critic_noise", self.critic_noise, minimum=0.0)
        check_real("gamma", self.gamma, minimum=0.0, maximum=1.0)
        check_real("dirichlet_alpha", self.dirichlet_alpha, minimum=0.0, open_min=True)
        check_real("lirpg_gae_lambda", self.lirpg_gae_lambda, minimum=0.0, maximum=1.0)
        for c in self.hessian_bias_c:
            check_real("hessian_bias_c", c, minimum=0.0)
        for name in _ESTIMATOR_FIELDS:
            for est in getattr(self, name):
                get_estimator(est)
        for combo in self.combinations:
            if combo not in COMBINATIONS:
                raise ValueError(f"combinations: unknown {combo!r}; known: {COMBINATIONS}")
        unknown = set(self.experiments) - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"experiments: unknown {sorted(unknown)}; known: {EXPERIMENTS}")
        self._check_extensions()

    def _check_extensions(self) -> None:
        """Validation of the ``hessian_scoring``, ``mlmc_bias`` and ``sweep_states`` fields."""
        get_estimator(self.mlmc_estimator)
        for eps in self.ope_eps:
            check_real("ope_eps", eps, minimum=0.0, maximum=1.0, open_max=True)
        for name, values, known in (
            ("ope_behaviours", self.ope_behaviours, BEHAVIOURS),
            ("ope_derivatives", self.ope_derivatives, DERIVATIVES),
        ):
            if set(values) - set(known):
                raise ValueError(f"{name}: unknown {sorted(set(values) - set(known))}; known: {known}")
        for n in (*self.ope_n, *self.mlmc_n, *self.mlmc_budget_n, self.sweep_states_n):
            check_int("ope_n / mlmc_n / sweep_states_n", n, 1)
        check_int("mlmc_repeats", self.mlmc_repeats, 2)
        MLMC(max_level=self.mlmc_max_level)
        for combo in self.sweep_states_combinations:
            if combo not in COMBINATIONS:
                raise ValueError(f"sweep_states_combinations: unknown {combo!r}; known: {COMBINATIONS}")
        for states in self.sweep_states:
            check_int("sweep_states", states, 1)

    @property
    def max_tasks(self) -> int:
        """Tasks of the largest family (each family scores the first ones)."""
        return max([self.num_tasks, *(self.budget(name)["tasks"] for name, _, _ in self.budget_scales)])

    def budget(self, experiment: str) -> dict[str, int]:
        """``Cell`` keyword arguments (``tasks``, ``repeats``) of an experiment listed in
        ``budget_scales`` (empty: the config's ``num_tasks`` x ``repeats``)."""
        for name, tasks, repeats in self.budget_scales:
            if name == experiment:
                return {
                    "tasks": max(1, round(tasks * self.num_tasks)),
                    "repeats": max(2, round(repeats * self.repeats)),
                }
        return {}

    def tasks(self, count: int | None = None) -> list[TabularTask]:
        """The first ``count`` tasks of the run (default :attr:`max_tasks`); task i is the same
        for every count."""
        return [
            random_task(
                self.num_states,
                self.num_actions,
                gamma=self.gamma,
                horizon=self.horizon,
                dirichlet_alpha=self.dirichlet_alpha,
                seed=self.seed * 100_003 + i,
            )
            for i in range(self.max_tasks if count is None else count)
        ]


PRESETS: dict[str, TabularBenchConfig] = {
    # Liu et al. 2022, every family at the official settings (infinite-horizon oracle, as the
    # official code: a gamma^T mismatch with the T = 20 samples, see `liu2022_finite`).
    "liu2022": TabularBenchConfig(preset="liu2022"),
    # The same families scored against the finite-horizon objective the samples estimate.
    "liu2022_finite": TabularBenchConfig(preset="liu2022_finite", objective="finite"),
    # A small version for a quick look and for CI-sized checks (finite-horizon oracle).
    "quick": TabularBenchConfig(
        preset="quick",
        objective="finite",
        num_tasks=3,
        repeats=10,
        budget_scales=(),
        combinations=("eel", "ele", "lee", "lll"),
        decomposition_n=(32,),
        ablation_k=(1, 3),
        ablation_alpha=(1.0, 9.0),
        ablation_alpha_k=2,
        sweep_n=(4, 16, 64),
        sweep_k=(1, 2, 3),
        sweep_k_estimators=("dice", "lvc"),
        sweep_alpha=(1.0, 5.0, 9.0),
        sweep_alpha_k=2,
        ranking_n=(32,),
        hessian_bias_c=(0.5, 2.0, 4.0),
        hessian_bias_alpha=(4.0,),
        hessian_bias_ext_k=(1, 3),
        lirpg_k=(1, 2),
        lirpg_n=(32,),
    ),
}

PRESETS.update(
    {
        # Bias against the number of states S (finite-horizon oracle, 10 tasks x 20 repeats)
        "large_s": TabularBenchConfig(preset="large_s", objective="finite", experiments=("sweep_states",)),
        # Tang et al. 2021, public code's toy protocol: 20x5 MDPs, Dirichlet 0.001, gamma 0.8,
        # T = 20, critic V^mu + noise 1.0, mu uniform, pi = 0.8 deterministic + 0.2 uniform, 10
        # MDPs, the five OPE estimators; their oracle is the infinite-horizon value. Their point is
        # n = 1000 episodes (one estimate per MDP; we take 5 to score variance), plus n = 10, 100.
        "tang2021": TabularBenchConfig(
            preset="tang2021",
            objective="infinite",
            critic_noise=1.0,
            num_tasks=10,
            repeats=5,
            experiments=("hessian_scoring",),
            ope_eps=(0.8,),
            ope_behaviours=("uniform",),
        ),
        # The whole Hessian-scoring sweep: eps in {0, 0.2, 0.5, 0.8}, on- and off-policy, n in
        # {10, 100, 1000}, on the finite objective the episodes estimate.
        "ope": TabularBenchConfig(
            preset="ope", objective="finite", num_tasks=5, repeats=5, experiments=("hessian_scoring",)
        ),
        # Compositional bias (lee, K = 1, alpha = 10, n = 8, finite objective) with 1000 estimates
        # per task: the plain inner estimators beside the MLMC inner stage (pg, n0 = 8), and plain
        # pg at n = 16, 32, 64 (its bias at budgets around MLMC's expected 43 episodes).
        "mlmc": TabularBenchConfig(preset="mlmc", objective="finite", experiments=("mlmc_bias",)),
    }
)


def _lee(config: TabularBenchConfig, est: str, n: int, k: int, alpha: float) -> MetaGradientSpec:
    critic = CriticSpec(kind="noisy_exact", noise=config.critic_noise)
    return MetaGradientSpec.from_combination(
        "lee", est, n, inner_steps=k, inner_lr=float(alpha), objective=config.objective, critic=critic
    )


def make_cells(config: TabularBenchConfig) -> list[Cell]:
    """The cells of a run, in a fixed order (official families first, then extensions)."""
    critic = CriticSpec(kind="noisy_exact", noise=config.critic_noise)
    common = dict(objective=config.objective, critic=critic)
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
    return cells


def _hessian_scoring_cells(config: TabularBenchConfig, critic: CriticSpec) -> list[Cell]:
    """One cell per estimator, derivative, eps, behaviour and n (eps is a tag: part of the key)."""
    cells = []
    for eps in config.ope_eps:
        for behaviour in config.ope_behaviours:
            for n in config.ope_n:
                for derivative in config.ope_derivatives:
                    for est in config.ope_estimators:
                        spec = DerivativeSpec(est, n, derivative, behaviour, critic, config.objective)
                        cells.append(Cell("hessian_scoring", est, spec, n, tags={"eps": float(eps)}))
    return cells


def _mlmc_cells(config: TabularBenchConfig, common: dict) -> list[Cell]:
    """The plain inner estimators and the MLMC inner stage on one compositional-bias setting,
    each with ``mlmc_repeats`` estimates per task (the MLMC stage pairs with the plain ones: its
    level-0 term sees the plain estimators' episodes)."""
    kw = dict(inner_steps=config.inner_steps, inner_lr=config.inner_lr, **common)
    repeats = config.mlmc_repeats
    cells = []
    for n in config.mlmc_n:
        for est in config.mlmc_plain_estimators:
            spec = MetaGradientSpec.from_combination("lee", est, n, **kw)
            cells.append(Cell("mlmc_bias", est, spec, n, repeats=repeats))
        mlmc = MLMC(max_level=config.mlmc_max_level)
        spec = MetaGradientSpec(inner=StageSpec(config.mlmc_estimator, n, mlmc=mlmc), **kw)
        extra = {"mlmc_base": config.mlmc_estimator, "mlmc_rate": mlmc.rate}
        if mlmc.max_level is not None:
            extra["mlmc_max_level"] = mlmc.max_level
        cells.append(Cell("mlmc_bias", "mlmc", spec, n, extra, repeats=repeats))
    for n in config.mlmc_budget_n:  # the plain estimator's bias-cost frontier, for equal budgets
        if n not in config.mlmc_n or config.mlmc_estimator not in config.mlmc_plain_estimators:
            spec = MetaGradientSpec.from_combination("lee", config.mlmc_estimator, n, **kw)
            cells.append(Cell("mlmc_bias", config.mlmc_estimator, spec, n, repeats=repeats))
    return cells


@functools.lru_cache(maxsize=8)
def _tasks(config: TabularBenchConfig) -> tuple[list[TabularTask], dict]:
    """The tasks of a run and a cache of their exact meta-gradients (per process)."""
    return config.tasks(), {}


def _task_config(config: TabularBenchConfig, cell: Cell) -> TabularBenchConfig:
    """The config that defines the cell's tasks: the run's, with the cell's own state count."""
    states = cell.tags.get("num_states")
    return config if states is None else dataclasses.replace(config, num_states=int(states))


def run_cell(config: TabularBenchConfig, cell: Cell, device: str = "cpu") -> ResultRow:
    """Score one cell over all tasks; returns its result row (config, metrics, provenance).

    Injected-Hessian-bias cells also carry, per task, the squared bias predicted exactly by
    :func:`~metagrad.decomposed.expected_injected_meta_gradient` (``per_task["predicted_bias_sq"]``).
    """
    if cell.experiment == "hessian_scoring":
        return _run_hessian_cell(config, cell, device)
    task_config = _task_config(config, cell)
    tasks, exact_cache = _tasks(task_config)
    tasks = tasks[: cell.num_tasks(config)]
    spec = cell.spec
    repeats = cell.estimates(config)
    start = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(cell_seed(config, cell))
    logits = torch.zeros(task_config.num_states, config.num_actions, dtype=torch.float64, device=device)
    lirpg = spec.meta_parameter == "intrinsic_reward"
    eta = torch.zeros_like(logits) if lirpg else None
    samples, exact, predicted = [], [], []
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
    gen = torch.Generator().manual_seed(config.seed * 100_003 + task_index + 7_919)
    actions = torch.randint(config.num_actions, (config.num_states,), generator=gen)
    return mixture_logits(config.num_states, config.num_actions, eps, actions=actions)


def hessian_cell_samples(
    config: TabularBenchConfig, cell: Cell, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(samples [N, R, D], exact [N, D])`` of a ``hessian_scoring`` cell: ``repeats`` estimates
    of the gradient or Hessian of J per task, and the exact one. Every estimator and both
    derivatives of a setting (eps, behaviour, n, critic, objective) see the same episodes and
    critic noise (paired)."""
    tasks, cache = _tasks(config)
    tasks = tasks[: cell.num_tasks(config)]
    repeats = cell.estimates(config)
    spec: DerivativeSpec = cell.spec  # type: ignore[assignment]
    eps = float(cell.tags["eps"])
    shared = dataclasses.replace(spec, estimator="dice", derivative="gradient", params=())
    payload = {
        "config": {name: getattr(config, name) for name in config.CELL_FIELDS},
        "experiment": cell.experiment,
        "spec": shared.to_dict(),
        "eps": eps,
    }
    seed = int(config_hash(payload), 16) % (2**62)
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
    spec: DerivativeSpec = cell.spec  # type: ignore[assignment]
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


# The exact stages' work in env-step equivalents: one stage at one inner step costs about as much as
# sampling this many episodes on the 20-state tasks, plus one env step per this many multiply-adds
# of the dense value recursions on larger state spaces; and the seconds per env-step equivalent
# (fitted on the default suite's cells on the 2-core machine, one thread: only ratios matter).
_EXACT_STAGE_EPISODES = 8
_MULTIPLY_ADDS_PER_STEP = 3000
_SECONDS_PER_STEP = 1.0e-6


def cell_cost(config: TabularBenchConfig, cell: Cell) -> float:
    """The cell's expected compute in seconds, roughly (``Suite.cost``: longest cells first)."""
    spec = cell.spec
    S, A, H = _task_config(config, cell).num_states, config.num_actions, config.horizon
    repeats = cell.estimates(config)
    if isinstance(spec, DerivativeSpec):  # hessian_scoring: n episodes, one backward pass per row
        rows = S * A if spec.derivative == "hessian" else 1
        return _SECONDS_PER_STEP * cell.num_tasks(config) * repeats * H * spec.n * (1 + rows / 10)
    stages = (spec.inner_steps + 1) * (
        1 + sum(stage.is_exact for stage in (spec.inner, spec.hessian, spec.outer))
    )
    values = stages * repeats * S * S * A * H / _MULTIPLY_ADDS_PER_STEP  # critics and exact stages
    episodes = episodes_per_estimate(spec) + _EXACT_STAGE_EPISODES * stages
    return _SECONDS_PER_STEP * cell.num_tasks(config) * (repeats * H * episodes + values)


def _series(rows: list[ResultRow], experiment: str, xkey: str) -> dict[str, list[ResultRow]]:
    """Rows of one experiment by series label (the estimator; (K, alpha) for the injections),
    each sorted by ``xkey``."""
    out: dict[str, list[ResultRow]] = {}
    for r in rows:
        if r.experiment == experiment:
            injected = experiment.startswith("hessian_bias")
            label = f"K={r.get('inner_steps')}, alpha={r.get('inner_lr'):g}" if injected else r.estimator
            if experiment == "lirpg":
                label = f"{r.estimator}, K={r.get('inner_steps')}"
            elif experiment == "sweep_states":
                label = f"{r.estimator} {r.get('combination')}"
            out.setdefault(label, []).append(r)
    return {k: sorted(v, key=lambda r: r.value(xkey)) for k, v in out.items()}


_BIAS = "debiased bias (95% CI)"
_CORR = "correlation with the exact gradient"
_PANELS = (
    ("sweep_n", "n_inner", "corr", "inner sample size n (episodes)", _CORR, False),
    ("sweep_n", "n_inner", "bias_debiased", "inner sample size n (episodes)", _BIAS, True),
    ("sweep_k", "inner_steps", "bias_debiased", "inner steps K", _BIAS, False),
    ("sweep_alpha", "inner_lr", "bias_debiased", "inner step size alpha", _BIAS, False),
    ("hessian_bias", "hessian_bias_c", "bias_debiased", "injected Hessian bias c", _BIAS, True),
    ("hessian_bias_k", "hessian_bias_c", "bias_debiased", "injected Hessian bias c", _BIAS, True),
    ("lirpg", "n_hessian", "corr", "Hessian sample size n (episodes)", _CORR, False),
    ("sweep_states", "num_states", "bias_debiased", "number of states S", _BIAS, True),
    ("sweep_states", "num_states", "relative_bias", "number of states S", "relative bias", True),
)
_SLOPE_NOTE = (
    "Dashed grey: slope -1/2, the paper's O(n^-1/2) bound on the compositional bias (the delta method "
    "gives -1 asymptotically: expect exponents between -1 and -1/2)."
)
_INJECTION_NOTE = (
    "Dotted: the exact prediction of the injected bias (the exact meta-gradient with the injected "
    "Hessian term in expectation), root of the mean over tasks of its squared distance to the exact one."
)


def _theory(
    experiment: str, series: dict[str, list[ResultRow]]
) -> dict[str, tuple[list[float], list[float]]]:
    """The exact injected-Hessian prediction per series, from the rows' ``predicted_bias_sq``."""
    if not experiment.startswith("hessian_bias"):
        return {}
    out = {}
    for label, rows in series.items():
        have = [r for r in rows if "predicted_bias_sq" in r.per_task]
        if have:
            x = [float(r.get("hessian_bias_c")) for r in have]
            y = [math.sqrt(max(_task_mean(r, "predicted_bias_sq")[0], 0.0)) for r in have]
            out[f"prediction, {label}"] = (x, y)
    return out


def _decomposition_plots(rows: list[ResultRow], folder: Path, stem: str) -> list[Path]:
    """The paper's main figure: per stage combination, each estimator's corr and debiased bias
    against the sample size n of its sampled stages (one panel per combination)."""
    dec = [r for r in rows if r.experiment == "decomposition" and r.estimator != "exact"]
    if len({r.cell.get("n") for r in dec}) < 2:
        return []
    panels: dict[str, dict[str, list[ResultRow]]] = {}
    for combo in dict.fromkeys(r.get("combination") for r in dec):
        series: dict[str, list[ResultRow]] = {}
        for r in sorted((r for r in dec if r.get("combination") == combo), key=lambda r: r.cell.get("n")):
            series.setdefault(human(r.estimator), []).append(r)
        panels[human(combo)] = series
    written = []
    for ykey, ylabel, loglog in (("corr", "corr", False), ("bias_debiased", "debiased bias", True)):
        written.append(
            series_grid(
                folder / f"{stem}_decomposition_{ykey}.png",
                panels,
                "n",
                ykey,
                xlabel="episodes n per sampled stage",
                ylabel=ylabel,
                title=f"Decomposition: {human(ykey)} per stage combination (inner, Hessian, outer; e exact, "
                "l sampled) vs n",
                loglog=loglog,
                notes="One panel per stage combination; colours: estimators (the same in every figure).",
            )
        )
    return written


def write_plots(rows: list[ResultRow], folder: Path, stem: str = "tabular") -> list[Path]:
    """Figures (PNG + PDF + caption): the decomposition per stage combination, the
    compositional-bias sweeps, the injected Hessian bias, LIRPG, the extensions."""
    folder = Path(folder)
    written = _decomposition_plots(rows, folder, stem)
    for experiment, xkey, ykey, xlabel, ylabel, loglog in _PANELS:
        series = _series(rows, experiment, xkey)
        if series:
            injected = experiment.startswith("hessian_bias")
            slope = -0.5 if experiment == "sweep_n" and ykey == "bias_debiased" else None
            notes = _SLOPE_NOTE if slope else (_INJECTION_NOTE if injected else "")
            written.append(
                series_panel(
                    folder / f"{stem}_{experiment}_{ykey}.png",
                    {human(k) if not injected else k: v for k, v in series.items()},
                    xkey,
                    ykey,
                    xlabel=xlabel,
                    ylabel=ylabel,
                    title=human(experiment),
                    loglog=loglog,
                    reference_slope=slope,
                    theory=_theory(experiment, series),
                    colors=sequence_styles(series) if injected else None,
                    notes=notes,
                )
            )
    return written + _extension_plots(rows, folder, stem)


def _extension_plots(rows: list[ResultRow], folder: Path, stem: str) -> list[Path]:
    """hessian_scoring: corr and debiased bias vs the number of episodes per estimator, per
    derivative, off-policy (behaviour uniform) at the largest eps, and corr vs eps at the largest n
    when several eps were run; mlmc_bias: debiased bias (95% CI) and MSE per estimator vs the
    (expected) episodes per estimate."""
    written = []
    ope = [r for r in rows if r.experiment == "hessian_scoring"]
    for derivative in DERIVATIVES:
        mine = [r for r in ope if r.get("derivative") == derivative]
        off = [r for r in mine if r.get("behaviour") == "uniform"] or mine
        if not off:
            continue
        eps = max(r.get("eps") for r in off)
        at_eps = [r for r in off if r.get("eps") == eps]
        for ykey, ylabel in (("corr", "corr (Tang et al.'s metric)"), ("bias_debiased", "debiased bias")):
            series = _by_estimator(at_eps, "n_episodes")
            written.append(
                series_panel(
                    folder / f"{stem}_hessian_scoring_{derivative}_{ykey}.png",
                    series,
                    "n_episodes",
                    ykey,
                    xlabel="episodes per estimate",
                    ylabel=ylabel,
                    title=f"{derivative} of J, {at_eps[0].get('behaviour')} behaviour, eps = {eps}",
                    loglog=ykey == "bias_debiased",
                    logx=True,
                )
            )
        if len({r.get("eps") for r in off}) > 1:
            n = max(r.get("n_episodes") for r in off)
            at_n = [r for r in off if r.get("n_episodes") == n]
            written.append(
                series_panel(
                    folder / f"{stem}_hessian_scoring_{derivative}_corr_vs_eps.png",
                    _by_estimator(at_n, "eps"),
                    "eps",
                    "corr",
                    xlabel="eps (0: target = behaviour)",
                    ylabel="corr",
                    title=f"{derivative} of J vs off-policyness, n = {n}",
                )
            )
    mlmc = [r for r in rows if r.experiment == "mlmc_bias"]
    if mlmc:
        for ykey, ylabel in (("bias_debiased", "debiased bias (95% CI)"), ("mse", "MSE")):
            written.append(
                series_panel(
                    folder / f"{stem}_mlmc_bias_{ykey}.png",
                    _by_estimator(mlmc, "episodes_per_estimate"),
                    "episodes_per_estimate",
                    ykey,
                    xlabel="(expected) episodes per estimate",
                    ylabel=ylabel,
                    title=f"mlmc_bias: {ylabel} vs cost",
                    logx=True,
                )
            )
    return written


def _by_estimator(rows: list[ResultRow], xkey: str) -> dict[str, list[ResultRow]]:
    out: dict[str, list[ResultRow]] = {}
    for r in sorted(rows, key=lambda r: r.value(xkey)):
        out.setdefault(r.estimator, []).append(r)
    return out


def _task_mean(r: ResultRow, metric: str) -> tuple[float, float]:
    """Mean over tasks of a per-task metric and its standard error (NaN where the row lacks it)."""
    if metric not in r.per_task:
        return math.nan, math.nan
    v = np.asarray(r.per_task[metric], dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0


def _grid(
    rows: list[ResultRow],
    row_of: Callable[[ResultRow], str],
    col_of: Callable[[ResultRow], Any],
    cell: Callable[[ResultRow], str],
    corner: str,
) -> list[str]:
    """A markdown table: one line per ``row_of`` label, one column per ``col_of`` value."""
    cols = sorted({col_of(r) for r in rows}, key=lambda c: (isinstance(c, str), c))
    labels = list(dict.fromkeys(row_of(r) for r in rows))
    at = {(row_of(r), col_of(r)): r for r in rows}
    lines = ["| " + corner + " | " + " | ".join(str(c) for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label in labels:
        lines.append(
            f"| {label} | "
            + " | ".join(cell(at[(label, c)]) if (label, c) in at else "-" for c in cols)
            + " |"
        )
    return [*lines, ""]


def _corr_and_paper_variance(r: ResultRow) -> str:
    var, _ = _task_mean(r, "paper_variance")
    return f"{r.metrics.corr:.3f} ({var:.3g})"


def _bias_and_paper_bias(r: ResultRow) -> str:
    mean, se = _task_mean(r, "bias_sq_debiased")
    paper, _ = _task_mean(r, "paper_bias")
    return f"{mean:.3g} ± {se:.2g} ({paper:.3g})"


def _bias_with_ci(r: ResultRow) -> str:
    m = r.metrics
    return f"{m.bias_debiased:.3g} [{m.bias_ci_low:.3g}, {m.bias_ci_high:.3g}]"


def _injected(r: ResultRow) -> str:
    mean, se = _task_mean(r, "bias_sq_debiased")
    predicted, _ = _task_mean(r, "predicted_bias_sq")
    paper, _ = _task_mean(r, "paper_bias")
    return f"{mean:.3g} ± {se:.2g} / {predicted:.3g} ({paper:.3g})"


def write_summary(rows: list[ResultRow], path: Path, total_seconds: float | None = None) -> Path:
    """Markdown summary: one table per family, with the official code's own metrics beside ours
    (corr with their variance, the sum of per-component standard deviations; our debiased squared
    bias with their non-debiased ``||mean - exact||^2 / D``), so figures compare with the paper's."""
    path = Path(path)
    lines = ["# Tabular meta-gradient bias", ""]
    if rows:
        r0 = rows[0]
        lines += [
            f"Preset `{r0.preset}`, objective `{r0.get('objective')}`, critic noise "
            f"{r0.get('critic_noise')}, seed {r0.seed}, commit `{r0.provenance.git_commit}`."
            + (f" Cell compute {total_seconds:.1f} s." if total_seconds is not None else ""),
            "Cells: `ours (official metric)`. corr: the papers' metric, (sum over components of the "
            "standard deviation: the official `var`). Squared bias: our debiased mean over tasks ± s.e. "
            "(the official non-debiased `||mean - exact||^2 / D`).",
            "",
        ]

    def budget(rs: list[ResultRow]) -> str:
        m = rs[0].metrics
        return f"{m.num_tasks} tasks x {m.repeats} estimates"

    def family(name: str) -> list[ResultRow]:
        return [r for r in rows if r.experiment == name]

    dec = family("decomposition")
    if dec:
        d0 = dec[0]
        lines += [
            f"## Decomposition (K = {d0.get('inner_steps')}, alpha = {d0.get('inner_lr')}, {budget(dec)}): "
            "corr (official variance) by n and stage combination",
            "",
        ]
        for est in dict.fromkeys(r.estimator for r in dec if r.estimator != "exact"):
            lines += [f"### {est}", ""]
            lines += _grid(
                [r for r in dec if r.estimator == est],
                lambda r: f"n = {max(r.get('n_inner'), r.get('n_hessian'), r.get('n_outer'))}",
                lambda r: r.get("combination"),
                _corr_and_paper_variance,
                "n",
            )
    for name, xkey, what in (("k_ablation", "inner_steps", "K"), ("alpha_ablation", "inner_lr", "alpha")):
        rs = family(name)
        if rs:
            lines += [
                f"## {name} ({', '.join(dict.fromkeys(r.estimator for r in rs))}, {budget(rs)}): "
                f"corr (official variance) by {what}",
                "",
            ]
            lines += _grid(
                rs,
                lambda r: r.get("combination"),
                lambda r, k=xkey: r.get(k),
                _corr_and_paper_variance,
                "combination",
            )
    for name, xkey in (("sweep_n", "n_inner"), ("sweep_k", "inner_steps"), ("sweep_alpha", "inner_lr")):
        rs = family(name)
        if rs:
            r0 = rs[0]
            lines += [
                f"## {name}: compositional bias, 'lee' (K = {r0.get('inner_steps')} / alpha = "
                f"{r0.get('inner_lr')} / n = {r0.get('n_inner')} where fixed, {budget(rs)}): debiased "
                f"squared bias ± s.e. (official bias) by {xkey}",
                "",
            ]
            lines += _grid(
                rs, lambda r: r.estimator, lambda r, k=xkey: r.get(k), _bias_and_paper_bias, "estimator"
            )
    for name in ("hessian_bias", "hessian_bias_k"):
        rs = family(name)
        if rs:
            lines += [
                f"## {name}: injected Hessian bias ({budget(rs)}): measured debiased squared bias ± s.e. / "
                "exact prediction (official bias) by c",
                "",
            ]
            lines += _grid(
                rs,
                lambda r: f"K = {r.get('inner_steps')}, alpha = {r.get('inner_lr'):g}",
                lambda r: r.get("hessian_bias_c"),
                _injected,
                "series",
            )
    rs = family("hessian_ranking")
    if rs:
        lines += [
            f"## hessian_ranking: 'ele' ({budget(rs)}): debiased squared bias ± s.e. (official bias) by n",
            "",
        ]
        lines += _grid(
            rs, lambda r: r.estimator, lambda r: r.get("n_hessian"), _bias_and_paper_bias, "estimator"
        )
    rs = family("lirpg")
    if rs:
        lines += [
            f"## lirpg: 'ele', GAE lambda {rs[0].get('gae_lambda')} ({budget(rs)}): "
            "corr (official variance) by n",
            "",
        ]
        lines += _grid(
            rs,
            lambda r: f"{r.estimator}, K = {r.get('inner_steps')}",
            lambda r: r.get("n_hessian"),
            _corr_and_paper_variance,
            "Hessian, K",
        )
    rs = family("sweep_states")
    if rs:
        lines += [f"## sweep_states: debiased bias [95% CI] by the number of states S ({budget(rs)})", ""]
        lines += _grid(
            rs,
            lambda r: f"{r.estimator} {r.get('combination')}",
            lambda r: r.get("num_states"),
            _bias_with_ci,
            "series",
        )
    lines += _extension_summary(rows)
    write_text_atomic(path, "\n".join(lines))
    return path


def _extension_summary(rows: list[ResultRow]) -> list[str]:
    """Markdown tables of the hessian_scoring and mlmc_bias rows."""
    lines: list[str] = []
    ope = [r for r in rows if r.experiment == "hessian_scoring"]
    if ope:
        lines += [
            "## hessian_scoring: gradient and Hessian of J (Tang et al. 2021 estimators)",
            "",
            "corr ± s.e. (Tang et al.'s metric, per estimate), debiased bias [95% CI], variance "
            "(tr Cov); target `eps * deterministic + (1 - eps) * uniform`; behaviour `uniform` is "
            "off-policy, `target` on-policy.",
            "",
            "| derivative | behaviour | eps | n | estimator | corr | bias [95% CI] | variance | MSE |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        order = sorted(
            ope,
            key=lambda r: (
                r.get("derivative"),
                r.get("behaviour"),
                r.get("eps"),
                r.get("n_episodes"),
                r.estimator,
            ),
        )
        for r in order:
            m = r.metrics
            lines.append(
                f"| {r.get('derivative')} | {r.get('behaviour')} | {r.get('eps')} | {r.get('n_episodes')} "
                f"| {r.estimator} | {m.corr:.3f} ± {m.corr_se:.3f} | {m.bias_debiased:.4g} "
                f"[{m.bias_ci_low:.3g}, {m.bias_ci_high:.3g}] | {m.variance:.4g} | {m.mse:.4g} |"
            )
        lines.append("")
    mlmc = [r for r in rows if r.experiment == "mlmc_bias"]
    if mlmc:
        r0 = mlmc[0]
        lines += [
            f"## mlmc_bias: compositional bias (lee, K = {r0.get('inner_steps')}, alpha = "
            f"{r0.get('inner_lr')}, {r0.metrics.repeats} estimates per task)",
            "",
            "Episodes: expected episodes per estimate (mlmc: randomised). Efficiency: MSE x episodes.",
            "",
            "| n | estimator | debiased bias [95% CI] | variance | MSE ± s.e. | episodes | MSE x episodes |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sorted(mlmc, key=lambda r: (r.get("n_inner"), r.estimator)):
            m = r.metrics
            lines.append(
                f"| {r.get('n_inner')} | {r.estimator} | {m.bias_debiased:.4g} [{m.bias_ci_low:.3g}, "
                f"{m.bias_ci_high:.3g}] | {m.variance:.4g} | {m.mse:.4g} ± {m.mse_se:.2g} "
                f"| {r.episodes_per_estimate:.4g} | {r.mse_x_episodes:.4g} |"
            )
        lines.append("")
    return lines


def memory_estimate(config: TabularBenchConfig, cell: Cell) -> MemoryEstimate:
    """A cell's peak memory (:mod:`metagrad.app.memory`): its largest sampled stage, the Jacobian
    graphs kept for the outer gradient, and the tasks (transition tables and alias tables)."""
    S, A = _task_config(config, cell).num_states, config.num_actions
    repeats = cell.estimates(config)
    fixed = cell.num_tasks(config) * (40 * S * S * A + 16 * repeats * S * A + 10_000)
    if isinstance(cell.spec, DerivativeSpec):  # hessian_scoring: one batch of n episodes per estimate
        stage = StageSpec(cell.spec.estimator, cell.spec.n)
        return staged_estimate(
            MetaGradientSpec(inner=stage),
            episodes=cell.spec.n,
            horizon=config.horizon,
            repeats=repeats,
            peak_per_step=200,
            kept_per_step=25,
            fixed=fixed + cell.num_tasks(config) * repeats * (S * A) ** 2 * 8,
            flags=("--ope-n", "--repeats"),
            fixed_flags=("--num-tasks", "--repeats"),
        )
    uses_n = cell.experiment in ("decomposition", "sweep_k", "sweep_alpha")
    # an MLMC inner stage: its expected episodes (a rare high level costs more; see MLMC)
    return staged_estimate(
        cell.spec,
        episodes=math.ceil(episodes_per_estimate(cell.spec)),
        horizon=config.horizon,
        repeats=repeats,
        peak_per_step=200,
        kept_per_step=25,
        fixed=fixed,
        flags=("--n", "--repeats") if uses_n else ("--repeats",),
        fixed_flags=("--num-tasks",),
    )


def describe_preset(config: TabularBenchConfig) -> str:
    """One line for ``metagrad list presets``."""
    return (
        f"{config.num_tasks} tasks x {config.repeats} repeats, objective {config.objective}, "
        f"experiments {', '.join(config.experiments)}"
    )


SUITE = Suite(
    name="tabular",
    summary="decomposed MAML meta-gradients on random tabular MDPs (Liu et al. 2022)",
    config_class=TabularBenchConfig,
    spec_class=MetaGradientSpec,
    spec_nested=STAGED_SPEC_FIELDS,
    presets=PRESETS,
    default_preset="liu2022",
    experiments=EXPERIMENTS,
    make_cells=make_cells,
    score_cell=run_cell,
    write_plots=write_plots,
    write_summary=write_summary,
    claims=tabular_claims,
    options=(
        *common_options(estimators=_ESTIMATOR_FIELDS[:-2] + _ESTIMATOR_FIELDS[-1:]),
        Option("--num-tasks", ("num_tasks",), "int", "random MDPs per cell"),
        Option(
            "--n",
            ("decomposition_n",),
            "ints",
            "episodes per estimated stage of the decomposition (e.g. 8,32)",
        ),
        Option("--inner-steps", ("inner_steps",), "int", "inner steps K of the decomposition"),
        Option(
            "--mlmc-max-level", ("mlmc_max_level",), "int", "mlmc_bias: truncation level of the MLMC stage"
        ),
        Option("--mlmc-repeats", ("mlmc_repeats",), "int", "mlmc_bias: estimates per task"),
        Option("--ope-n", ("ope_n",), "ints", "hessian_scoring: episodes per estimate, comma-separated"),
    ),
    setting_fields=(
        "combination",
        "n_inner",
        "n_hessian",
        "n_outer",
        "inner_steps",
        "inner_lr",
        "hessian_bias_c",
        "objective",
        "meta_parameter",
        "derivative",
        "eps",
        "behaviour",
        "n_episodes",
        "num_states",
    ),
    describe_preset=describe_preset,
    in_default_run=True,
    experiment_specs={"hessian_scoring": (DerivativeSpec, {"critic": CriticSpec})},
    memory_estimate=memory_estimate,
    cost=cell_cost,
)
