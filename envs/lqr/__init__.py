"""Linear-quadratic-Gaussian tasks: parameters, task distributions, a batched torch rollout
engine for linear-Gaussian policies and Gymnasium faces (``MetaGrad/LQR-v0``).

The model (state ``x`` in R^n, action ``u`` in R^m, horizon T, discount gamma)::

    x_0 ~ N(mu0, S0),   x_{t+1} = A x_t + B u_t + w_t,   w_t ~ N(0, W),
    r_t = -((x_t - goal)^T Q (x_t - goal) + u_t^T R u_t),   t < T,
    u_t = K x_t + k + exp(log_std) * eps_t,   eps_t ~ N(0, I_m)   (the policy),

and the objective ``J = E[sum_{t<T} gamma^t r_t]``, which :mod:`metagrad.exact.lqr` computes in
closed form. Task parameters (:class:`LQRTask`) are frozen and may hold a batch of N tasks; the
engine (:func:`rollout`) samples every episode of every policy of a batch as one tensor
recursion, time-major ``[T, B, *G, ...]``, on the CPU or a GPU.

Modules: :mod:`~metagrad.envs.lqr.task` (parameters and task distributions),
:mod:`~metagrad.envs.lqr.engine` (policies and the batched engine),
:mod:`~metagrad.envs.lqr.gym` (the Gymnasium env and vector env).
"""

from __future__ import annotations

from metagrad.envs.lqr.engine import LinearGaussian, LQRTrajectory, as_policy, gaussian_log_probs, rollout
from metagrad.envs.lqr.gym import LQREnv, LQRVectorEnv
from metagrad.envs.lqr.task import (
    LQR_DISTRIBUTIONS,
    LQRTask,
    PointMassNavigation,
    RandomStableSystem,
    TaskDistribution,
)

__all__ = [
    "LQR_DISTRIBUTIONS",
    "LQREnv",
    "LQRTask",
    "LQRTrajectory",
    "LQRVectorEnv",
    "LinearGaussian",
    "PointMassNavigation",
    "RandomStableSystem",
    "TaskDistribution",
    "as_policy",
    "gaussian_log_probs",
    "rollout",
]
