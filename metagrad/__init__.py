"""metagrad: gradient bias in meta-reinforcement learning, measured against exact meta-gradients.

Flat public API; see the README for the tour.
"""

from __future__ import annotations

import metagrad.envs  # noqa: F401  (registers the Gymnasium ids)
from metagrad.decomposed import (
    COMBINATIONS,
    MLMC,
    CriticSpec,
    MetaGradientSpec,
    StageSpec,
    exact_meta_gradient,
    sample_meta_gradients,
)
from metagrad.estimators import (
    ESTIMATORS,
    EstimatorInfo,
    advantages,
    dice,
    dice_baseline,
    get_estimator,
    loaded_dice,
    lvc,
    magic_box,
    off_policy_dice,
    pg,
    register_estimator,
    stop_gradient,
)
from metagrad.exact import lirpg_meta_gradient, maml_meta_gradient, tabular_return, tabular_values
from metagrad.scoring import Score, score

__version__ = "0.1.0"

__all__ = [
    "COMBINATIONS",
    "ESTIMATORS",
    "MLMC",
    "CriticSpec",
    "EstimatorInfo",
    "MetaGradientSpec",
    "Score",
    "StageSpec",
    "__version__",
    "advantages",
    "dice",
    "dice_baseline",
    "exact_meta_gradient",
    "get_estimator",
    "lirpg_meta_gradient",
    "loaded_dice",
    "lvc",
    "magic_box",
    "maml_meta_gradient",
    "off_policy_dice",
    "pg",
    "register_estimator",
    "sample_meta_gradients",
    "score",
    "stop_gradient",
    "tabular_return",
    "tabular_values",
]
