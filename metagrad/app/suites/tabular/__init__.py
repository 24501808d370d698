"""The ``tabular`` suite (``metagrad bench tabular``): decomposed meta-gradient bias on random
tabular MDPs.

A run is a list of *cells*; a cell is one meta-gradient recipe (:class:`MetaGradientSpec`) scored
over ``num_tasks`` random MDPs x ``repeats`` estimates against the exact float64 meta-gradient.
The preset ``liu2022`` is the official protocol of Liu et al., NeurIPS 2022 (arXiv 2112.15400;
the settings of their official experiment scripts, listed in the README), each family at its own
settings:

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

from metagrad.app.options import Option
from metagrad.app.suite import STAGED_SPEC_FIELDS, Suite, common_options
from metagrad.app.suites.tabular.cells import make_cells
from metagrad.app.suites.tabular.claims import tabular_claims
from metagrad.app.suites.tabular.config import (
    ESTIMATOR_FIELDS,
    EXPERIMENTS,
    EXTENSION_EXPERIMENTS,
    EXTRA_EXPERIMENTS,
    OFFICIAL_EXPERIMENTS,
    PRESETS,
    TabularBenchConfig,
    describe_preset,
)
from metagrad.app.suites.tabular.cost import cell_cost, memory_estimate
from metagrad.app.suites.tabular.figures import write_figures
from metagrad.app.suites.tabular.run import cached_tasks, hessian_cell_samples, run_cell, target_logits
from metagrad.app.suites.tabular.summary import write_summary
from metagrad.critics import CriticSpec
from metagrad.decomposed import MetaGradientSpec
from metagrad.derivatives import DerivativeSpec

__all__ = [
    "EXPERIMENTS",
    "EXTENSION_EXPERIMENTS",
    "EXTRA_EXPERIMENTS",
    "OFFICIAL_EXPERIMENTS",
    "PRESETS",
    "SUITE",
    "TabularBenchConfig",
    "cached_tasks",
    "cell_cost",
    "describe_preset",
    "hessian_cell_samples",
    "make_cells",
    "memory_estimate",
    "run_cell",
    "tabular_claims",
    "target_logits",
    "write_figures",
    "write_summary",
]


SUITE: Suite[TabularBenchConfig] = Suite(
    name="tabular",
    summary="decomposed MAML meta-gradients on random tabular MDPs (Liu et al. 2022)",
    config_class=TabularBenchConfig,
    spec_class=MetaGradientSpec,
    spec_nested=STAGED_SPEC_FIELDS,
    presets=PRESETS,
    default_preset="liu2022",
    experiments=EXPERIMENTS,
    make_cells=make_cells,
    run_cell=run_cell,
    write_figures=write_figures,
    write_summary=write_summary,
    claims=tabular_claims,
    options=(
        *common_options(estimators=ESTIMATOR_FIELDS[:-2] + ESTIMATOR_FIELDS[-1:]),
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
