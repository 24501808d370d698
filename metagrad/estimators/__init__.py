"""Meta-gradient estimators as pure functions of time-major trajectory tensors.

Every estimator shares one signature::

    fn(log_probs, rewards, discounts, *, behaviour_log_probs=None, values=None,
       bootstrap_value=None, **params) -> Tensor  # [B, ...]

* ``log_probs``: ``[T, B, ...]`` log pi_theta(a_t | s_t), carrying the graph of theta.
* ``rewards``: ``[T, B, ...]`` (may carry a graph too, e.g. an intrinsic reward eta, or the
  reparameterised actions of a pathwise estimator).
* ``discounts``: ``[T, B, ...]`` per-step discount applied between t and t + 1 (gamma, or 0 after
  termination). The weight of step t is ``c_t = prod_{k<t} discounts_k`` (``gamma^t``).
* ``behaviour_log_probs``: ``[T, B, ...]`` log mu(a_t | s_t) of the policy that generated the data.
* ``values``: ``[T, B, ...]`` critic values V(s_t), never differentiated; ``bootstrap_value``:
  ``[B, ...]`` V(s_T) for truncated episodes.

The return value is the *per-episode* surrogate (time summed), shape ``[B, ...]``; its mean over
the episode axis is the surrogate objective, and the n-th derivative of that mean w.r.t. theta
is the estimator's n-th order estimate of the n-th derivative of the expected return.

Modules: :mod:`~metagrad.estimators.core` (graph cuts, discounting, advantages, checks),
:mod:`~metagrad.estimators.score_function` (the DiCE family, LVC, pg),
:mod:`~metagrad.estimators.ope` (derivatives of off-policy evaluation) and
:mod:`~metagrad.estimators.facts` (the registry :data:`ESTIMATORS`: :func:`get_estimator` looks
one up by name, :func:`register_estimator` adds a user's own, as a call or a decorator).
"""

from __future__ import annotations

from metagrad.estimators.core import *  # noqa: F403
from metagrad.estimators.facts import *  # noqa: F403

# Each estimator module lists its estimators in its own ``__all__``: a new built-in estimator is a
# decorated function in its module (and that module's ``__all__``), nothing here. Registration
# order is listing order: the score-function family first.
from metagrad.estimators.score_function import *  # noqa: F403

# isort: split
from metagrad.estimators.ope import *  # noqa: F403

# isort: split
from metagrad.estimators import pathwise as _pathwise_module
from metagrad.estimators.pathwise import *  # noqa: F403

# isort: split
from metagrad.estimators import core, facts, ope, score_function  # the modules, for __all__

__all__ = [*core.__all__, *facts.__all__, *score_function.__all__, *ope.__all__, *_pathwise_module.__all__]
