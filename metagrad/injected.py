"""The exact expected meta-gradient under an injected Hessian bias (a prediction with no free
parameter).

Liu et al. (NeurIPS 2022, arXiv 2112.15400) study the multi-step Hessian estimation bias by adding
a known term to the Jacobian path of every inner step (``MetaGradientSpec.hessian_bias``) with
every stage otherwise exact. Its expected effect follows from the Hessians along the exact inner
loop (:func:`inner_loop_curvature`): :func:`expected_injected_meta_gradient`, against which the
sampled estimates of :func:`metagrad.decomposed.sample_meta_gradients` are checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metagrad.decomposed import MetaGradientSpec, check_table
from metagrad.envs.tabular import TabularTask
from metagrad.estimators import stop_gradient
from metagrad.exact import tabular_return
from metagrad.staged import STAGE_ROLES, detached_leaf

__all__ = ["InnerLoopCurvature", "expected_injected_meta_gradient", "inner_loop_curvature"]


@dataclass(frozen=True, eq=False)
class InnerLoopCurvature:
    """The curvature along a recipe's exact inner loop at one start: the Hessians ``[K, D, D]`` of
    the inner objective at the exact iterates ``theta_0..theta_{K-1}`` and the outer gradient
    ``grad J(theta_K)`` ``[D]`` (float64, ``D = |S||A|``), from which every injected-bias
    prediction of that loop follows."""

    hessians: torch.Tensor
    outer_gradient: torch.Tensor


def inner_loop_curvature(
    task: TabularTask, logits: torch.Tensor, spec: MetaGradientSpec
) -> InnerLoopCurvature:
    """:class:`InnerLoopCurvature` of ``spec``'s K exact steps of size alpha from ``logits [S, A]``."""
    if task.batch_shape:
        raise ValueError("task: inner_loop_curvature takes one task, not a batch")
    check_table(task, logits, "logits")
    shape = (task.num_states, task.num_actions)

    def objective(flat: torch.Tensor) -> torch.Tensor:
        return tabular_return(task, flat.reshape(shape), spec.objective)

    theta = stop_gradient(logits).to(torch.float64).reshape(-1)
    hessians = []
    with torch.enable_grad():
        for _ in range(spec.inner_steps):
            hessians.append(torch.autograd.functional.hessian(objective, theta, vectorize=True))
            leaf = detached_leaf(theta)
            (grad,) = torch.autograd.grad(objective(leaf), leaf)
            theta = theta + spec.inner_lr * grad
        leaf = detached_leaf(theta)
        (outer,) = torch.autograd.grad(objective(leaf), leaf)
    dim = shape[0] * shape[1]
    stacked = torch.stack(hessians) if hessians else torch.zeros(0, dim, dim, dtype=torch.float64)
    return InnerLoopCurvature(stacked.detach(), outer.detach())


def expected_injected_meta_gradient(
    task: TabularTask,
    logits: torch.Tensor,
    spec: MetaGradientSpec,
    *,
    curvature: InnerLoopCurvature | None = None,
) -> torch.Tensor:
    """The exact expected meta-gradient under an injected Hessian bias, every stage exact.

    With ``spec.hessian_bias = c``, each inner step adds ``mean(theta^2 (c + s eps))`` (mean over
    the ``D = |S||A|`` entries, ``eps ~ N(0, 1)`` fresh per step and entry) to the Jacobian path
    only (the injected-bias experiment of Liu et al.'s tabular study of the multi-step Hessian
    estimation bias, NeurIPS 2022). Its curvature is ``diag(2 (c + s eps) / D)``, so with the
    values exact the Jacobian of step k is ``I + alpha (H_k + diag(2 (c + s eps_k) / D))`` with
    ``H_k`` the exact Hessian at the exact iterate ``theta_k``; the factors are independent across
    steps, so the expectation of their product is the product of their expectations and::

        E[estimate] = (I + alpha (H_0 + 2 c' I)) ... (I + alpha (H_{K-1} + 2 c' I)) grad J(theta_K)

    with ``c' = c / D`` (the matrices are symmetric; the chain rule through K ascent steps, as in
    MAML, Finn et al., ICML 2017). Computed from the explicit float64 Hessians
    (:func:`inner_loop_curvature`; pass ``curvature`` to reuse them across values of ``c``),
    independently of the sampler; its distance to :func:`~metagrad.decomposed.exact_meta_gradient`
    is the predicted bias, a polynomial in ``c`` of degree K.

    Args:
        task: one MDP (not a batch); logits: ``[S, A]``; spec: all stages exact, ``hessian_bias`` set.
    Returns:
        ``[S, A]`` float64.
    """
    if spec.hessian_bias is None or any(not spec.stage(r).is_exact for r in STAGE_ROLES):
        raise ValueError("spec: needs hessian_bias set and every stage exact")
    if spec.meta_parameter != "logits" or spec.first_order:
        raise ValueError(
            "spec: the injected-bias prediction is for the MAML meta-gradient (logits, not first order)"
        )
    if curvature is None:
        curvature = inner_loop_curvature(task, logits, spec)
    dim = curvature.outer_gradient.numel()
    shift = 1.0 + spec.inner_lr * 2.0 * spec.hessian_bias / dim
    vector = curvature.outer_gradient
    for hessian in reversed(curvature.hessians):
        vector = shift * vector + spec.inner_lr * (hessian.T @ vector)
    return vector.reshape(task.num_states, task.num_actions)
