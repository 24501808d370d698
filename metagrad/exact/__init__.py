"""Exact, autograd-differentiable objectives and meta-gradients (closed forms, float64).

These are the oracles every estimate in the suite is scored against, one module per model:
:mod:`metagrad.exact.tabular` (finite MDPs with softmax policies) and :mod:`metagrad.exact.ipd`
(iterated games with memory-one policies); :mod:`metagrad.exact.common` holds the objective
conventions they share.
"""

from __future__ import annotations

from metagrad.exact.common import OBJECTIVES, Objective, differentiable_inner_loop
from metagrad.exact.ipd import ipd_model, ipd_state_values, ipd_values, lola_gradient, naive_gradient
from metagrad.exact.lqr import (
    LQRValue,
    lqr_maml_meta_gradient,
    lqr_moments,
    lqr_return,
    lqr_state_values,
    lqr_value,
)
from metagrad.exact.mgrl import mgrl_direction, mgrl_meta_gradient
from metagrad.exact.tabular import (
    lirpg_meta_gradient,
    maml_meta_gradient,
    policy_model,
    post_adaptation_return,
    tabular_return,
    tabular_values,
)

__all__ = [
    "OBJECTIVES",
    "LQRValue",
    "Objective",
    "differentiable_inner_loop",
    "ipd_model",
    "ipd_state_values",
    "ipd_values",
    "lirpg_meta_gradient",
    "lola_gradient",
    "lqr_maml_meta_gradient",
    "lqr_moments",
    "lqr_return",
    "lqr_state_values",
    "lqr_value",
    "maml_meta_gradient",
    "mgrl_direction",
    "mgrl_meta_gradient",
    "naive_gradient",
    "policy_model",
    "post_adaptation_return",
    "tabular_return",
    "tabular_values",
]
