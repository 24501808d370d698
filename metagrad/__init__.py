"""metagrad: gradient bias in meta-reinforcement learning, measured against exact meta-gradients.

The flat public API (see the README for the tour):

* estimators, pure functions of time-major trajectory tensors, and their registry
  (:data:`ESTIMATORS`, :func:`register_estimator`, :func:`get_estimator`);
* the recipes of a sampled estimate (:class:`StageSpec`, :class:`MetaGradientSpec`,
  :class:`CriticSpec`, :class:`MLMC`, :class:`LolaSpec`, :class:`DerivativeSpec`), their samplers
  (:func:`sample_meta_gradients`, :func:`sample_lola_gradients`, :func:`sample_derivatives`) and the
  staged step they share (:func:`staged_step`);
* the exact float64 oracles (everything in :mod:`metagrad.exact`) and the targets of each recipe;
* :func:`score`, the distance of estimates to their exact target.
"""

from __future__ import annotations

import metagrad.envs  # noqa: F401  (registers the Gymnasium ids)
from metagrad.critics import CriticSpec
from metagrad.decomposed import (
    MetaGradientSpec,
    exact_meta_gradient,
    sample_meta_gradients,
    sample_meta_gradients_wrt,
)
from metagrad.derivatives import DerivativeSpec, exact_derivatives, mixture_logits, sample_derivatives
from metagrad.estimators import (
    ESTIMATORS,
    EstimatorInfo,
    advantages,
    dice,
    dice_baseline,
    doubly_robust,
    get_estimator,
    loaded_dice,
    lvc,
    magic_box,
    off_policy_dice,
    per_step_is,
    pg,
    register_estimator,
    stepwise_is,
    stop_gradient,
    taylor1,
    taylor2,
    vtrace,
)
from metagrad.exact import (
    OBJECTIVES,
    Objective,
    differentiable_inner_loop,
    ipd_model,
    ipd_state_values,
    ipd_values,
    lirpg_meta_gradient,
    lola_gradient,
    maml_meta_gradient,
    naive_gradient,
    policy_model,
    post_adaptation_return,
    tabular_return,
    tabular_values,
)
from metagrad.injected import InnerLoopCurvature, expected_injected_meta_gradient, inner_loop_curvature
from metagrad.lola import LOLA_VARIANTS, LolaSpec, exact_lola_target, lola_variant, sample_lola_gradients
from metagrad.mlmc import MLMC
from metagrad.registry import Registry, UnknownNameError
from metagrad.scoring import Score, score
from metagrad.staged import (
    COMBINATIONS,
    RandomStreams,
    StagedSampler,
    StageSpec,
    detached_leaf,
    staged_inner_loop,
    staged_step,
    straight_through,
)

__version__ = "0.1.0"

__all__ = [
    "COMBINATIONS",
    "ESTIMATORS",
    "LOLA_VARIANTS",
    "MLMC",
    "OBJECTIVES",
    "CriticSpec",
    "DerivativeSpec",
    "EstimatorInfo",
    "InnerLoopCurvature",
    "LolaSpec",
    "MetaGradientSpec",
    "Objective",
    "RandomStreams",
    "Registry",
    "Score",
    "StageSpec",
    "StagedSampler",
    "UnknownNameError",
    "__version__",
    "advantages",
    "detached_leaf",
    "dice",
    "dice_baseline",
    "differentiable_inner_loop",
    "doubly_robust",
    "exact_derivatives",
    "exact_lola_target",
    "exact_meta_gradient",
    "expected_injected_meta_gradient",
    "get_estimator",
    "inner_loop_curvature",
    "ipd_model",
    "ipd_state_values",
    "ipd_values",
    "lirpg_meta_gradient",
    "loaded_dice",
    "lola_gradient",
    "lola_variant",
    "lvc",
    "magic_box",
    "maml_meta_gradient",
    "mixture_logits",
    "naive_gradient",
    "off_policy_dice",
    "per_step_is",
    "pg",
    "policy_model",
    "post_adaptation_return",
    "register_estimator",
    "sample_derivatives",
    "sample_lola_gradients",
    "sample_meta_gradients",
    "sample_meta_gradients_wrt",
    "score",
    "staged_inner_loop",
    "staged_step",
    "stepwise_is",
    "stop_gradient",
    "straight_through",
    "tabular_return",
    "tabular_values",
    "taylor1",
    "taylor2",
    "vtrace",
]
