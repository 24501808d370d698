"""The ``ipd`` suite (``metagrad bench ipd``): LOLA gradient estimators scored against the exact
LOLA gradient.

A run is a list of *cells*; a cell is one LOLA recipe (:class:`~metagrad.lola.LolaSpec`) on one
kind of policy pair, scored over ``num_pairs`` pairs x ``repeats`` estimates against
:func:`metagrad.exact.lola_gradient` on the same horizon and discount as the samples.

Policy pairs:

* ``random``: both agents' logits ~ N(0, 1); the earlier (behaviour) pair for replayed episodes is
  the pair shifted by ``behaviour_shift * N(0, 1)`` (a policy one small update earlier);
* ``trained``: the pair after ``train_iterations`` simultaneous exact-LOLA updates from a random
  start (Adam, lr 0.1, lookahead ``train_lookahead_lr``); the behaviour pair is the one
  ``behaviour_lag`` updates earlier on the same run;
* ``run``: the official off-policy protocol (the off-policy LOLA-DiCE code of Liu et al. 2022;
  README, "Iterated games and LOLA"):
  ``num_pairs`` points spread along one training run of ``run_iterations`` simultaneous
  off-policy LOLA-DiCE updates from zero logits (lookahead 0.3, 128 + 128 episodes, Adam 0.1),
  each with the official FIFO buffer of 1024 episodes: the 128 fresh ones and 896 replayed from
  the earlier pairs that filled it (two batches of 128 per update, one per agent's lookahead, the
  buffer first filled at the zero logits).

Experiments:

* ``decomposition``: each estimator on the 7 exact/sampled stage combinations (the ``lle`` row
  is "the outer gradient made exact");
* ``sweep_n``: the fully sampled practical LOLA-DiCE (shared lookahead batch) against the batch n;
* ``sweep_lr``, ``sweep_steps``: compositional bias (lookahead sampled, rest exact) against the
  lookahead step size and number of lookahead steps;
* ``off_policy``: the off-policy fix of Liu et al. 2022 disentangled, at the official protocol
  (``run`` pairs, lookahead 0.3, n = 128, replay 896), every variant on the same fresh episodes:
  the lookahead by ``dice_baseline`` (LOLA-DiCE: baseline ``(1 - box(log pi_t)) b``), by
  ``off_policy_dice`` without replay (its cumulative baseline ``(rho_{t-1} - rho_t) b``), by
  ``off_policy_dice`` with the replayed buffer, and without any baseline, by ``dice`` on-policy and
  ``off_policy_dice`` with the buffer (the official code's own pattern: its value tables regress on
  the immediate rewards, a baseline of about -1..-3 against returns of about -25..-50, which these
  rows approximate by none). Each variant with the outer gradient exact ('lle', the lookahead
  alone) and sampled with 128 episodes ('lll').
"""

from __future__ import annotations

from metagrad.app.options import Option
from metagrad.app.suite import STAGED_SPEC_FIELDS, Suite, common_options
from metagrad.app.suites.ipd.cells import make_cells
from metagrad.app.suites.ipd.claims import ipd_claims
from metagrad.app.suites.ipd.config import (
    EXPERIMENTS,
    PAIR_KINDS,
    PRESETS,
    IPDBenchConfig,
    describe_preset,
)
from metagrad.app.suites.ipd.cost import cell_cost, memory_estimate
from metagrad.app.suites.ipd.figures import write_figures
from metagrad.app.suites.ipd.run import (
    fifo_buffer_updates,
    pairs_of,
    policy_pairs,
    prepare,
    run_cell,
    training_run,
)
from metagrad.app.suites.ipd.summary import write_summary
from metagrad.lola import LolaSpec

__all__ = [
    "EXPERIMENTS",
    "PAIR_KINDS",
    "PRESETS",
    "SUITE",
    "IPDBenchConfig",
    "cell_cost",
    "describe_preset",
    "fifo_buffer_updates",
    "ipd_claims",
    "make_cells",
    "memory_estimate",
    "pairs_of",
    "policy_pairs",
    "prepare",
    "run_cell",
    "training_run",
    "write_figures",
    "write_summary",
]

SUITE: Suite[IPDBenchConfig] = Suite(
    name="ipd",
    summary="LOLA gradient estimators in the iterated Prisoner's Dilemma (Foerster et al. 2018)",
    config_class=IPDBenchConfig,
    spec_class=LolaSpec,
    spec_nested=STAGED_SPEC_FIELDS,
    presets=PRESETS,
    default_preset="foerster2018",
    experiments=EXPERIMENTS,
    make_cells=make_cells,
    run_cell=run_cell,
    write_figures=write_figures,
    write_summary=write_summary,
    claims=ipd_claims,
    options=(
        *common_options(),
        Option("--num-tasks", ("num_pairs",), "int", "policy pairs per cell"),
        Option("--n", ("n",), "int", "episodes per estimated stage (decomposition)"),
        Option("--inner-steps", ("lookahead_steps",), "int", "lookahead steps"),
    ),
    setting_fields=(
        "pair_kind",
        "combination",
        "n_inner",
        "n_hessian",
        "n_outer",
        "lookahead_steps",
        "lookahead_lr",
        "horizon",
    ),
    describe_preset=describe_preset,
    in_default_run=True,
    memory_estimate=memory_estimate,
    cost=cell_cost,
    prepare=prepare,
)
