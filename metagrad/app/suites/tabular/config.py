"""The tabular suite's config: experiments, :class:`TabularBenchConfig`, presets.

The defaults are the official protocol of Liu et al., NeurIPS 2022 (arXiv 2112.15400): each family
at the settings of the paper's official experiment scripts (listed in the README, "The `liu2022`
preset is the official protocol"); extensions are separately named experiments and presets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from metagrad.derivatives import BEHAVIOURS, DERIVATIVES, Behaviour, Derivative
from metagrad.envs.tabular import TabularTask, random_task
from metagrad.estimators import get_estimator
from metagrad.exact import Objective
from metagrad.mlmc import MLMC
from metagrad.seeding import task_seed
from metagrad.staged import COMBINATIONS
from metagrad.validation import check_choice, check_int, check_int_fields, check_real, check_seed

__all__ = [
    "ESTIMATOR_FIELDS",
    "EXPERIMENTS",
    "EXTENSION_EXPERIMENTS",
    "EXTRA_EXPERIMENTS",
    "OFFICIAL_EXPERIMENTS",
    "OPE_ESTIMATORS",
    "PRESETS",
    "TabularBenchConfig",
    "describe_preset",
]


# The official protocol's families (the official experiment scripts of Liu et al. 2022), then this
# suite's own extensions (separately named).
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

ESTIMATOR_FIELDS = (
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

    The defaults are the official protocol of Liu et al. 2022 (README, "The `liu2022` preset"), one
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
    # decomposition: 7 combinations + eee, K = 1, alpha = 10, n = 2..256
    estimators: tuple[str, ...] = ("dice", "loaded_dice", "lvc", "pg")
    combinations: tuple[str, ...] = COMBINATIONS
    decomposition_n: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256)
    inner_steps: int = 1
    inner_lr: float = 10.0
    # K and alpha ablations: 7 combinations, n = 32
    ablation_estimators: tuple[str, ...] = ("pg",)
    ablation_n: int = 32
    ablation_k: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    ablation_alpha: tuple[float, ...] = (1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0)
    ablation_alpha_k: int = 5
    # compositional bias, inner stage only ('lee'): against n, K and alpha
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
    # injected Hessian bias: eee + mean(theta^2 (c + 0.3 eps)), K = 2
    hessian_bias_c: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
    hessian_bias_k: tuple[int, ...] = (2,)
    hessian_bias_alpha: tuple[float, ...] = (3.0, 3.5, 4.0, 4.5)
    # extension: the injection at K = 1..6 (the growth of its exponent with K)
    hessian_bias_ext_k: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    hessian_bias_ext_alpha: float = 10.0
    # LIRPG: 'ele', Hessian by pg / lvc with GAE lambda 0.9, meta-parameter eta
    lirpg_estimators: tuple[str, ...] = ("pg", "lvc")
    lirpg_k: tuple[int, ...] = (1, 2, 3, 4, 5)
    lirpg_n: tuple[int, ...] = (16, 32, 64, 128, 256)
    lirpg_gae_lambda: float = 0.9
    experiments: tuple[str, ...] = OFFICIAL_EXPERIMENTS + EXTENSION_EXPERIMENTS
    # extension hessian_scoring: the OPE family on the gradient / Hessian of J (Tang et al. 2021)
    ope_estimators: tuple[str, ...] = OPE_ESTIMATORS
    ope_eps: tuple[float, ...] = (0.0, 0.2, 0.5, 0.8)
    ope_behaviours: tuple[Behaviour, ...] = BEHAVIOURS
    ope_n: tuple[int, ...] = (10, 100, 1000)
    ope_derivatives: tuple[Derivative, ...] = DERIVATIVES
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
        check_choice("env", self.env, ("MetaGrad/TabularMDP-v0",), what="env", where="the tabular bench")
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
            if len(entry) != 3:
                raise ValueError(
                    f"budget_scales: expected (experiment, task factor, repeat factor) entries, got {entry!r}"
                )
            check_choice("budget_scales", entry[0], EXPERIMENTS, what="experiment")
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
        for name in ESTIMATOR_FIELDS:
            for est in getattr(self, name):
                get_estimator(est)
        check_choice("combinations", self.combinations, COMBINATIONS)
        check_choice("experiments", self.experiments, EXPERIMENTS)
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
            check_choice(name, values, known)
        for n in (*self.ope_n, *self.mlmc_n, *self.mlmc_budget_n, self.sweep_states_n):
            check_int("ope_n / mlmc_n / sweep_states_n", n, 1)
        check_int("mlmc_repeats", self.mlmc_repeats, 2)
        MLMC(max_level=self.mlmc_max_level)
        check_choice("sweep_states_combinations", self.sweep_states_combinations, COMBINATIONS)
        for states in self.sweep_states:
            check_int("sweep_states", states, 1)

    @property
    def max_tasks(self) -> int:
        """Tasks of the largest family (each family scores the first ones)."""
        return max([self.num_tasks, *(self.budget(name)["tasks"] for name, _, _ in self.budget_scales)])

    def budget(self, experiment: str) -> dict[str, Any]:
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
                seed=task_seed(self.seed, i),
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


def describe_preset(config: TabularBenchConfig) -> str:
    """One line for ``metagrad list presets``."""
    return (
        f"{config.num_tasks} tasks x {config.repeats} repeats, objective {config.objective}, "
        f"experiments {', '.join(config.experiments)}"
    )
