"""The ``atari`` suite (``metagrad bench atari``): MGRL meta-gradient estimators on ALE and MinAtar
games, where no closed form exists.

At a fixed agent state (a seeded actor-critic, optionally after ``warmup_frames`` of A2C; gamma
0.99, lambda 0.95 and the two loss coefficients as meta-parameters), a meta-gradient estimate is
d L_out / d eta through K = 2 inner updates on fresh rollouts (16 games x 5 steps each) and the
outer loss on a further rollout. Two views:

* ``paired`` (the verdicts). Every estimate of an estimator X is paired with an estimate of the
  reference, Loaded DiCE with lambda = 1, on the *same* batches (the same games, the same action
  draws, the same critic values): the reference plays, X replays its batches
  (:func:`metagrad.agents.mgrl.paired_meta_gradients`). The inner policy term uses advantages
  ``G_t - V(s_t)`` (``policy_lambda = 1``) with the critic cut from the graph, so Loaded DiCE's
  Hessian estimate of the policy term is unbiased (Farquhar et al. 2019) and X's first-order
  update is the reference's: the inner iterates coincide, the value and entropy terms of the
  inner loss are the same on both sides and cancel, and ``E[g_X - g_ref]`` is the part of X's
  meta-gradient bias that its policy-Hessian estimator adds (the compositional bias of the
  sampled inner updates is on both sides). It is
  estimated from the paired differences ``d_r = g_X,r - g_ref,r``; the noise of a separate
  reference never enters. Consecutive estimates share the continuing games, so the resampling unit
  is a block of ``ci_block`` consecutive estimates: each component's 95% CI (Bonferroni over the D
  meta-parameters) is a Student-t interval on the block means. Criterion, fixed before any run:
  X's Hessian bias is RESOLVED on a game when at least one component's CI excludes 0, otherwise
  INCONCLUSIVE. The row's metrics score the block means of ``d`` against 0 (``bias_debiased`` =
  ``||E d||``, its bootstrap CI over blocks), with ``corr``/``cosine_of_mean`` between X's and
  the reference's block means and ``relative_bias`` relative to ``||mean g_ref||``. Estimators
  with another first-order update (``dice``: no critic) cannot be paired this way and appear in
  the reference view only. The summary also compares LVC with pg on the same blocks:
  ``||E d_pg||^2 - ||E d_lvc||^2`` with a block-bootstrap CI (LVC smaller / larger / INCONCLUSIVE).
* ``reference`` (the second view, as before): each estimator's own estimates (common random
  numbers across estimators) against the mean of ``reference_repeats`` Loaded DiCE estimates with
  ``reference_scale`` times the games; every row states the reference's standard error and a
  squared bias with both noises removed.

Games: ALE ids (``ALE/Breakout-v5``) and MinAtar ids (``MinAtar/Breakout-v1``; preset ``minatar``).
Every row records its budget (games x steps x estimates, frames, CPU seconds).
"""

from __future__ import annotations

from metagrad.app.options import Option
from metagrad.app.suite import Suite
from metagrad.app.suites.atari.cells import make_cells
from metagrad.app.suites.atari.claims import atari_claims, lvc_vs_pg, paired_statistics
from metagrad.app.suites.atari.config import (
    EXPERIMENTS,
    PRESETS,
    AtariBenchConfig,
    AtariMetaSpec,
    describe_preset,
)
from metagrad.app.suites.atari.figures import write_figures
from metagrad.app.suites.atari.run import run_cell
from metagrad.app.suites.atari.samples import PairedSamples, paired_estimates, reference_meta_gradient
from metagrad.app.suites.atari.summary import write_summary

__all__ = [
    "EXPERIMENTS",
    "PRESETS",
    "SUITE",
    "AtariBenchConfig",
    "AtariMetaSpec",
    "PairedSamples",
    "atari_claims",
    "describe_preset",
    "lvc_vs_pg",
    "make_cells",
    "paired_estimates",
    "paired_statistics",
    "reference_meta_gradient",
    "run_cell",
    "write_figures",
    "write_summary",
]

SUITE: Suite[AtariBenchConfig] = Suite(
    name="atari",
    summary="MGRL meta-gradient estimators on ALE and MinAtar games: paired against Loaded DiCE on the "
    "same samples, and against a high-budget reference (Xu et al. 2018)",
    config_class=AtariBenchConfig,
    spec_class=AtariMetaSpec,
    presets=PRESETS,
    default_preset="xu2018",
    experiments=EXPERIMENTS,
    make_cells=make_cells,
    run_cell=run_cell,
    write_figures=write_figures,
    write_summary=write_summary,
    claims=atari_claims,
    options=(
        Option("--seed", ("seed",), "int", "run seed (every cell seeds itself from it and its key)"),
        Option("--repeats", ("repeats",), "int", "paired estimates per estimator and game (atari)"),
        Option("--games", ("games",), "names", "atari: comma-separated ALE or MinAtar ids"),
        Option("--estimators", ("estimators",), "names", "comma-separated estimator names"),
        Option("--num-envs", ("num_envs",), "int", "atari: parallel games per rollout"),
        Option("--inner-steps", ("inner_steps",), "int", "inner steps K"),
        Option(
            "--warmup-frames", ("warmup_frames",), "int", "atari: A2C frames before the agent state is fixed"
        ),
    ),
    setting_fields=("game", "n_inner", "inner_steps", "reference_estimator", "policy_lambda"),
    describe_preset=describe_preset,
)
