"""The ``tabular`` suite (``metagrad bench tabular``): decomposed meta-gradient bias on random
tabular MDPs.

A run is a list of *cells*; a cell is one meta-gradient recipe (:class:`MetaGradientSpec`) scored
over ``num_tasks`` random MDPs x ``repeats`` estimates against the exact float64 meta-gradient.
Experiments (Liu et al., NeurIPS 2022, arXiv 2112.15400, section 5 / BACKGROUND.md section 4):

* ``decomposition``: every estimator on the 7 exact/estimated stage combinations;
* ``sweep_n``, ``sweep_k``, ``sweep_alpha``: compositional bias (inner stage estimated, Hessian
  and outer exact) against the inner sample size n, the inner steps K and the step size alpha;
* ``hessian_bias``: the injected Hessian bias ``mean(theta^2 (c + 0.3 eps))`` on the Jacobian
  path (all stages exact otherwise): the MSE should grow like ``c^2``.

Extensions (separately named experiments, in their own presets; not part of ``liu2022``):

* ``hessian_scoring`` (presets ``tang2021``, ``ope``): the gradient and the Hessian of ``J`` itself
  from on- or off-policy episodes (behaviour uniform, target ``eps * deterministic + (1 - eps) *
  uniform``), per estimator (the OPE family of Tang et al., NeurIPS 2021), against the exact ones,
  vs the number of episodes;
* ``mlmc_bias`` (preset ``mlmc``): the compositional-bias setting (inner stage estimated, Hessian
  and outer exact, finite objective) scored for the plain inner estimators and for the MLMC inner
  stage (estimator label ``mlmc``) with many estimates per task, so that a bias of the plain
  estimators is resolved; rows carry the expected episodes per estimate;
* ``sweep_states`` (preset ``large_s``): how the bias of the stage combinations
  ``sweep_states_combinations`` behaves as the number of states S grows (``sweep_states``; the
  other task fields as the config), on ``num_tasks`` random MDPs of each size.

Each cell's randomness is seeded from the run seed and the cell's own config (not its position),
so any cell can be recomputed alone with the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from metagrad.app.claims import fit_loglog_slope, tabular_claims
from metagrad.app.memory import MemoryEstimate, staged_estimate
from metagrad.app.options import Option
from metagrad.app.outputs import write_text_atomic
from metagrad.app.plotting import series_panel
from metagrad.app.provenance import config_hash
from metagrad.app.rows import ResultRow, stage_setting
from metagrad.app.suite import STAGED_SPEC_FIELDS, Cell, Suite, cell_seed, common_options, scored_row
from metagrad.decomposed import (
    COMBINATIONS,
    MLMC,
    CriticSpec,
    MetaGradientSpec,
    StageSpec,
    episodes_per_estimate,
    exact_meta_gradient,
    sample_meta_gradients,
)
from metagrad.envs.tabular import TabularTask, random_task
from metagrad.estimators import get_estimator
from metagrad.exact import Objective
from metagrad.offpolicy import (
    BEHAVIOURS,
    DERIVATIVES,
    DerivativeSpec,
    exact_derivatives,
    mixture_logits,
    sample_derivatives,
)
from metagrad.validation import check_int, check_int_fields, check_real, check_seed

__all__ = [
    "EXPERIMENTS",
    "EXTRA_EXPERIMENTS",
    "PRESETS",
    "SUITE",
    "TabularBenchConfig",
    "cell_cost",
    "make_cells",
    "run_cell",
    "write_plots",
    "write_summary",
]


EXPERIMENTS = ("decomposition", "sweep_n", "sweep_k", "sweep_alpha", "hessian_bias")
# Extensions beyond Liu et al. 2022 (module docstring), selected by their own presets.
EXTRA_EXPERIMENTS = ("hessian_scoring", "mlmc_bias", "sweep_states")
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


@dataclass(frozen=True)
class TabularBenchConfig:
    """Everything that defines a tabular bench run (recorded in every row)."""

    CELL_FIELDS: ClassVar[tuple[str, ...]] = _CELL_FIELDS

    preset: str = "custom"
    env: str = "MetaGrad/TabularMDP-v0"
    num_states: int = 20
    num_actions: int = 5
    gamma: float = 0.8
    horizon: int = 20
    dirichlet_alpha: float = 0.001
    objective: Objective = "finite"
    critic_noise: float = 1.0
    num_tasks: int = 10
    repeats: int = 20
    seed: int = 0
    inner_steps: int = 1
    inner_lr: float = 10.0
    estimators: tuple[str, ...] = ("dice", "loaded_dice", "lvc", "pg")
    combinations: tuple[str, ...] = COMBINATIONS
    n: int = 32
    sweep_estimators: tuple[str, ...] = ("dice", "loaded_dice", "lvc", "pg")
    sweep_n: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256)
    sweep_k: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    sweep_alpha: tuple[float, ...] = (1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0)
    hessian_bias_c: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
    hessian_bias_k: tuple[int, ...] = (1, 2, 3)
    experiments: tuple[str, ...] = EXPERIMENTS
    # hessian_scoring: the OPE family on the gradient / Hessian of J (Tang et al. 2021)
    ope_estimators: tuple[str, ...] = OPE_ESTIMATORS
    ope_eps: tuple[float, ...] = (0.0, 0.2, 0.5, 0.8)
    ope_behaviours: tuple[str, ...] = BEHAVIOURS
    ope_n: tuple[int, ...] = (10, 100, 1000)
    ope_derivatives: tuple[str, ...] = DERIVATIVES
    # mlmc_bias: plain inner estimators (sweep_estimators) beside the MLMC inner stage
    mlmc_estimator: str = "pg"
    mlmc_n: tuple[int, ...] = (8,)
    mlmc_max_level: int | None = None
    mlmc_repeats: int = 1000
    mlmc_budget_n: tuple[int, ...] = (16, 32, 64)  # plain mlmc_estimator at larger budgets
    # sweep_states: bias against the number of states
    sweep_states: tuple[int, ...] = (20, 50, 100, 200, 500)
    sweep_states_combinations: tuple[str, ...] = ("lee", "ele")

    def __post_init__(self) -> None:
        if self.env != "MetaGrad/TabularMDP-v0":
            raise ValueError(
                f"env: the tabular bench runs 'MetaGrad/TabularMDP-v0', got unknown env {self.env!r}"
            )
        check_int_fields(self, ("num_tasks", "num_states", "num_actions", "horizon", "n"), 1)
        check_int_fields(self, ("repeats",), 2)
        check_seed("seed", self.seed)
        if any(v < 1 for v in self.sweep_n):
            raise ValueError(f"sweep_n: sample sizes must be >= 1, got {self.sweep_n}")
        if any(k < 0 for k in (*self.sweep_k, *self.hessian_bias_k, self.inner_steps)):
            raise ValueError("inner steps: K must be >= 0")
        check_real("critic_noise", self.critic_noise, minimum=0.0)
        check_real("gamma", self.gamma, minimum=0.0, maximum=1.0)
        check_real("dirichlet_alpha", self.dirichlet_alpha, minimum=0.0, open_min=True)
        check_real("inner_lr", self.inner_lr)
        for alpha in self.sweep_alpha:
            check_real("sweep_alpha", alpha)
        for c in self.hessian_bias_c:
            check_real("hessian_bias_c", c, minimum=0.0)
        for est in (*self.estimators, *self.sweep_estimators):
            get_estimator(est)
        for combo in self.combinations:
            if combo not in COMBINATIONS:
                raise ValueError(f"combinations: unknown {combo!r}; known: {COMBINATIONS}")
        for combo in self.sweep_states_combinations:
            if combo not in COMBINATIONS:
                raise ValueError(f"sweep_states_combinations: unknown {combo!r}; known: {COMBINATIONS}")
        for states in self.sweep_states:
            check_int("sweep_states", states, 1)
        unknown = set(self.experiments) - set(EXPERIMENTS) - set(EXTRA_EXPERIMENTS)
        if unknown:
            raise ValueError(f"experiments: unknown {sorted(unknown)}")
        self._check_extensions()

    def _check_extensions(self) -> None:
        """Validation of the ``hessian_scoring`` and ``mlmc_bias`` fields."""
        for est in (*self.ope_estimators, self.mlmc_estimator):
            get_estimator(est)
        for eps in self.ope_eps:
            check_real("ope_eps", eps, minimum=0.0, maximum=1.0, open_max=True)
        for name, values, known in (
            ("ope_behaviours", self.ope_behaviours, BEHAVIOURS),
            ("ope_derivatives", self.ope_derivatives, DERIVATIVES),
        ):
            if set(values) - set(known):
                raise ValueError(f"{name}: unknown {sorted(set(values) - set(known))}; known: {known}")
        for n in (*self.ope_n, *self.mlmc_n, *self.mlmc_budget_n):
            check_int("ope_n / mlmc_n", n, 1)
        check_int("mlmc_repeats", self.mlmc_repeats, 2)
        MLMC(max_level=self.mlmc_max_level)

    def tasks(self) -> list[TabularTask]:
        return [
            random_task(
                self.num_states,
                self.num_actions,
                gamma=self.gamma,
                horizon=self.horizon,
                dirichlet_alpha=self.dirichlet_alpha,
                seed=self.seed * 100_003 + i,
            )
            for i in range(self.num_tasks)
        ]


PRESETS: dict[str, TabularBenchConfig] = {
    # Liu et al. 2022 tabular protocol: infinite-horizon oracle, critic noise 1.0, T = 20.
    "liu2022": TabularBenchConfig(preset="liu2022", objective="infinite"),
    # A small version for a quick look and for CI-sized checks (finite-horizon oracle).
    "quick": TabularBenchConfig(
        preset="quick",
        objective="finite",
        num_tasks=3,
        repeats=10,
        estimators=("dice", "loaded_dice", "lvc", "pg"),
        sweep_estimators=("dice", "lvc"),
        sweep_n=(4, 16, 64),
        sweep_k=(1, 2, 3),
        sweep_alpha=(1.0, 5.0, 10.0),
        hessian_bias_c=(0.5, 2.0, 4.0),
        hessian_bias_k=(1,),
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


def make_cells(config: TabularBenchConfig) -> list[Cell]:
    """The cells of a run, in a fixed order."""
    critic = CriticSpec(kind="noisy_exact", noise=config.critic_noise)
    common = dict(objective=config.objective, critic=critic)
    cells: list[Cell] = []
    if "decomposition" in config.experiments:
        for est in config.estimators:
            for combo in config.combinations:
                spec = MetaGradientSpec.from_combination(
                    combo, est, config.n, inner_steps=config.inner_steps, inner_lr=config.inner_lr, **common
                )
                cells.append(Cell("decomposition", est, spec, config.n))
    for est in config.sweep_estimators:
        if "sweep_n" in config.experiments:
            for n in config.sweep_n:
                spec = MetaGradientSpec.from_combination(
                    "lee", est, n, inner_steps=config.inner_steps, inner_lr=config.inner_lr, **common
                )
                cells.append(Cell("sweep_n", est, spec, n))
        if "sweep_k" in config.experiments:
            for k in config.sweep_k:
                spec = MetaGradientSpec.from_combination(
                    "lee", est, config.n, inner_steps=k, inner_lr=config.inner_lr, **common
                )
                cells.append(Cell("sweep_k", est, spec, config.n))
        if "sweep_alpha" in config.experiments:
            for alpha in config.sweep_alpha:
                spec = MetaGradientSpec.from_combination(
                    "lee", est, config.n, inner_steps=config.inner_steps, inner_lr=float(alpha), **common
                )
                cells.append(Cell("sweep_alpha", est, spec, config.n))
    if "hessian_bias" in config.experiments:
        for k in config.hessian_bias_k:
            for c in config.hessian_bias_c:
                spec = MetaGradientSpec(
                    inner_steps=k, inner_lr=config.inner_lr, hessian_bias=float(c), **common
                )
                cells.append(Cell("hessian_bias", "exact", spec, 0, {"hessian_bias_c": float(c)}))
    if "sweep_states" in config.experiments:
        for est in config.sweep_estimators:
            for combo in config.sweep_states_combinations:
                spec = MetaGradientSpec.from_combination(
                    combo, est, config.n, inner_steps=config.inner_steps, inner_lr=config.inner_lr, **common
                )
                for states in config.sweep_states:
                    cells.append(Cell("sweep_states", est, spec, config.n, tags={"num_states": int(states)}))
    if "hessian_scoring" in config.experiments:
        cells += _hessian_scoring_cells(config, critic)
    if "mlmc_bias" in config.experiments:
        cells += _mlmc_cells(config, common)
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
    each with ``mlmc_repeats`` estimates per task (a tag: part of the key)."""
    tags = {"estimates_per_task": config.mlmc_repeats}
    kw = dict(inner_steps=config.inner_steps, inner_lr=config.inner_lr, **common)
    cells = []
    for n in config.mlmc_n:
        for est in config.sweep_estimators:
            spec = MetaGradientSpec.from_combination("lee", est, n, **kw)
            cells.append(Cell("mlmc_bias", est, spec, n, tags=tags))
        mlmc = MLMC(max_level=config.mlmc_max_level)
        spec = MetaGradientSpec(inner=StageSpec(config.mlmc_estimator, n, mlmc=mlmc), **kw)
        extra = {"mlmc_base": config.mlmc_estimator, "mlmc_rate": mlmc.rate}
        if mlmc.max_level is not None:
            extra["mlmc_max_level"] = mlmc.max_level
        cells.append(Cell("mlmc_bias", "mlmc", spec, n, extra, tags))
    for n in config.mlmc_budget_n:  # the plain estimator's bias-cost frontier, for equal budgets
        if n not in config.mlmc_n or config.mlmc_estimator not in config.sweep_estimators:
            spec = MetaGradientSpec.from_combination("lee", config.mlmc_estimator, n, **kw)
            cells.append(Cell("mlmc_bias", config.mlmc_estimator, spec, n, tags=tags))
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
    """Score one cell over all tasks; returns its result row (config, metrics, provenance)."""
    if cell.experiment == "hessian_scoring":
        return _run_hessian_cell(config, cell, device)
    repeats = cell.tags.get("estimates_per_task", config.repeats)
    task_config = _task_config(config, cell)
    tasks, exact_cache = _tasks(task_config)
    spec = cell.spec
    start = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(cell_seed(config, cell))
    logits = torch.zeros(task_config.num_states, config.num_actions, dtype=torch.float64, device=device)
    samples, exact = [], []
    for i, task in enumerate(tasks):
        ekey = (i, spec.inner_steps, spec.inner_lr, spec.objective)
        if ekey not in exact_cache:
            exact_cache[ekey] = exact_meta_gradient(task, logits.cpu(), spec).reshape(-1)
        exact.append(exact_cache[ekey])
        samples.append(
            sample_meta_gradients(task, logits, spec, repeats, generator=gen).reshape(repeats, -1).cpu()
        )
    setting = {
        **stage_setting(spec),
        "inner_steps": spec.inner_steps,
        "inner_lr": spec.inner_lr,
        "objective": spec.objective,
        "critic_noise": spec.critic.noise,
        "hessian_bias_c": spec.hessian_bias,
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
        x = sample_derivatives(task, logits.to(device), spec, config.repeats, generator=gen)
        samples.append(x.reshape(config.repeats, -1).cpu())
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
    repeats = cell.tags.get("estimates_per_task", config.repeats)
    if isinstance(spec, DerivativeSpec):  # hessian_scoring: n episodes, one backward pass per row
        rows = S * A if spec.derivative == "hessian" else 1
        return _SECONDS_PER_STEP * config.num_tasks * repeats * H * spec.n * (1 + rows / 10)
    stages = (spec.inner_steps + 1) * (
        1 + sum(stage.is_exact for stage in (spec.inner, spec.hessian, spec.outer))
    )
    values = stages * repeats * S * S * A * H / _MULTIPLY_ADDS_PER_STEP  # critics and exact stages
    episodes = episodes_per_estimate(spec) + _EXACT_STAGE_EPISODES * stages
    return _SECONDS_PER_STEP * config.num_tasks * (repeats * H * episodes + values)


def _series(rows: list[ResultRow], experiment: str, xkey: str) -> dict[str, list[ResultRow]]:
    out: dict[str, list[ResultRow]] = {}
    for r in rows:
        if r.experiment == experiment:
            label = r.estimator
            if experiment == "hessian_bias":
                label = f"K={r.get('inner_steps')}"
            elif experiment == "sweep_states":
                label = f"{r.estimator} {r.get('combination')}"
            out.setdefault(label, []).append(r)
    return {k: sorted(v, key=lambda r: r.value(xkey)) for k, v in out.items()}


def write_plots(rows: list[ResultRow], folder: Path, stem: str = "tabular") -> list[Path]:
    """PNG plots: corr vs n, bias vs n (log-log, fitted slope), bias vs K, bias vs alpha, MSE vs c."""
    folder = Path(folder)
    panels = [
        ("sweep_n", "n_inner", "corr", "inner sample size n", "corr (papers' metric)", False),
        ("sweep_n", "n_inner", "bias_debiased", "inner sample size n", "debiased bias", True),
        ("sweep_k", "inner_steps", "bias_debiased", "inner steps K", "debiased bias", False),
        ("sweep_alpha", "inner_lr", "bias_debiased", "inner step size alpha", "debiased bias", False),
        ("hessian_bias", "hessian_bias_c", "mse", "injected Hessian bias c", "MSE", True),
        ("sweep_states", "num_states", "bias_debiased", "number of states S", "debiased bias", True),
        ("sweep_states", "num_states", "relative_bias", "number of states S", "relative bias", True),
    ]
    written = []
    for experiment, xkey, ykey, xlabel, ylabel, loglog in panels:
        series = _series(rows, experiment, xkey)
        if series:
            written.append(
                series_panel(
                    folder / f"{stem}_{experiment}_{ykey}.png",
                    series,
                    xkey,
                    ykey,
                    xlabel=xlabel,
                    ylabel=ylabel,
                    title=f"{experiment}: {ylabel} vs {xlabel.split(' ')[-1]}",
                    loglog=loglog,
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


def write_summary(rows: list[ResultRow], path: Path, total_seconds: float | None = None) -> Path:
    """Markdown summary: the decomposition table and the fitted scaling of each sweep."""
    path = Path(path)
    lines = ["# Tabular meta-gradient bias", ""]
    if rows:
        r0 = rows[0]
        lines += [
            f"Preset `{r0.preset}`, objective `{r0.get('objective')}`, critic noise "
            f"{r0.get('critic_noise')}, {r0.metrics.num_tasks} tasks x {r0.metrics.repeats} repeats, "
            f"seed {r0.seed}, commit `{r0.provenance.git_commit}`."
            + (f" Wall time {total_seconds:.1f} s." if total_seconds is not None else ""),
            "",
        ]
    dec = [r for r in rows if r.experiment == "decomposition"]
    if dec:
        combos = list(dict.fromkeys(r.get("combination") for r in dec))
        ests = list(dict.fromkeys(r.estimator for r in dec))
        by = {(r.estimator, r.get("combination")): r.metrics for r in dec}
        d0 = dec[0]
        n = d0.get("n_inner") or d0.get("n_hessian") or d0.get("n_outer")
        for metric in ("corr", "bias_debiased"):
            lines += [
                f"## Decomposition (K = {d0.get('inner_steps')}, alpha = {d0.get('inner_lr')}, n = {n}): "
                f"{metric}",
                "",
                "| estimator | " + " | ".join(combos) + " |",
                "|---" * (len(combos) + 1) + "|",
            ]
            for est in ests:
                cells = []
                for combo in combos:
                    m = by.get((est, combo))
                    if m is None:
                        cells.append("-")
                    elif metric == "corr":
                        cells.append(f"{m.corr:.3f} ± {m.corr_se:.3f}")
                    else:
                        cells.append(f"{m.bias_debiased:.4f} [{m.bias_ci_low:.4f}, {m.bias_ci_high:.4f}]")
                lines.append(f"| {est} | " + " | ".join(cells) + " |")
            lines.append("")
    for experiment, xkey, ykey in (
        ("sweep_n", "n_inner", "bias_debiased"),
        ("sweep_k", "inner_steps", "bias_debiased"),
        ("sweep_alpha", "inner_lr", "bias_debiased"),
        ("hessian_bias", "hessian_bias_c", "mse"),
        ("sweep_states", "num_states", "bias_debiased"),
        ("sweep_states", "num_states", "relative_bias"),
    ):
        series = _series(rows, experiment, xkey)
        if not series:
            continue
        xs = list(dict.fromkeys(r.value(xkey) for rs in series.values() for r in rs))
        lines += [
            f"## {experiment}: {ykey} vs {xkey}",
            "",
            "| series | " + " | ".join(str(x) for x in xs) + " | log-log slope |",
            "|---" * (len(xs) + 2) + "|",
        ]
        for label, rs in series.items():
            at = {r.value(xkey): r.value(ykey) for r in rs}
            slope = fit_loglog_slope(list(at), list(at.values()))
            values = " | ".join(f"{at[x]:.4g}" if x in at else "-" for x in xs)
            lines.append(f"| {label} | {values} | {slope:.2f} |")
        lines.append("")
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
    repeats = cell.tags.get("estimates_per_task", config.repeats)
    fixed = config.num_tasks * (40 * S * S * A + 16 * repeats * S * A + 10_000)
    if isinstance(cell.spec, DerivativeSpec):  # hessian_scoring: one batch of n episodes per estimate
        stage = StageSpec(cell.spec.estimator, cell.spec.n)
        return staged_estimate(
            MetaGradientSpec(inner=stage),
            episodes=cell.spec.n,
            horizon=config.horizon,
            repeats=repeats,
            peak_per_step=200,
            kept_per_step=25,
            fixed=fixed + config.num_tasks * repeats * (S * A) ** 2 * 8,
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
    repeats = f"{config.repeats} repeats"
    if "mlmc_bias" in config.experiments:
        repeats += f" ({config.mlmc_repeats} in mlmc_bias)"
    return (
        f"{config.num_tasks} tasks x {repeats}, objective {config.objective}, "
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
    experiments=(*EXPERIMENTS, *EXTRA_EXPERIMENTS),
    make_cells=make_cells,
    score_cell=run_cell,
    write_plots=write_plots,
    write_summary=write_summary,
    claims=tabular_claims,
    options=(
        *common_options(estimators=("estimators", "sweep_estimators", "ope_estimators")),
        Option("--num-tasks", ("num_tasks",), "int", "random MDPs per cell"),
        Option("--n", ("n",), "int", "episodes per estimated stage (decomposition)"),
        Option("--inner-steps", ("inner_steps",), "int", "inner steps K"),
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
