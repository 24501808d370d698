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
from metagrad import estimators as _estimators
from metagrad import exact as _exact
from metagrad.critics import CriticSpec
from metagrad.decomposed import (
    MetaGradientSpec,
    exact_meta_gradient,
    sample_meta_gradients,
    sample_meta_gradients_wrt,
)
from metagrad.derivatives import DerivativeSpec, exact_derivatives, mixture_logits, sample_derivatives

# Every estimator and the registry (metagrad.estimators.__all__), every oracle
# (metagrad.exact.__all__): a new built-in is in the flat API as soon as its package exports it.
from metagrad.estimators import *  # noqa: F403
from metagrad.exact import *  # noqa: F403
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
    "LOLA_VARIANTS",
    "MLMC",
    "CriticSpec",
    "DerivativeSpec",
    "InnerLoopCurvature",
    "LolaSpec",
    "MetaGradientSpec",
    "RandomStreams",
    "Registry",
    "Score",
    "StageSpec",
    "StagedSampler",
    "UnknownNameError",
    "__version__",
    "detached_leaf",
    "exact_derivatives",
    "exact_lola_target",
    "exact_meta_gradient",
    "expected_injected_meta_gradient",
    "inner_loop_curvature",
    "lola_variant",
    "mixture_logits",
    "sample_derivatives",
    "sample_lola_gradients",
    "sample_meta_gradients",
    "sample_meta_gradients_wrt",
    "score",
    "staged_inner_loop",
    "staged_step",
    "straight_through",
]
__all__ += _estimators.__all__
__all__ += _exact.__all__
