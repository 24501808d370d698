"""Regression-test helpers: is *your* surrogate unbiased against the exact tabular oracle?

Example (pytest)::

    from metagrad.testing import assert_unbiased

    def my_surrogate(log_probs, rewards, discounts, *, behaviour_log_probs=None,
                     values=None, bootstrap_value=None):
        ...  # returns the per-episode surrogate [B]

    def test_my_surrogate_hessian():
        assert_unbiased(my_surrogate, order=2)

The check draws ``num_groups`` independent batches of episodes from a small stochastic MDP,
computes one estimate per batch (the gradient for ``order=1``; Hessian-vector products along
fixed random directions for ``order=2``), and compares their mean with the exact float64
derivative of the finite-horizon return component by component. The tolerance comes from the
standard error: ``|z| = |mean - exact| / (std / sqrt(num_groups))`` must stay below the
Bonferroni-corrected normal quantile at family-wise level ``alpha``. Everything is seeded, so a
passing check passes every time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from metagrad.critics import critic_values
from metagrad.envs.tabular import TabularTask, policy_log_probs, random_task, rollout
from metagrad.exact import tabular_return, tabular_values
from metagrad.validation import check_int, check_real, check_seed

__all__ = [
    "UnbiasednessReport",
    "assert_unbiased",
    "central_difference",
    "check_unbiased",
    "relative_error",
]


def central_difference(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float = 1e-5):
    """``d fn / d x`` by float64 central differences; ``fn`` returns a scalar or a tensor ``[*O]``.

    Returns ``[*O, *x.shape]`` (the Jacobian, output dimensions first).
    """
    x = x.detach().to(torch.float64)
    flat = x.reshape(-1)
    columns = []
    for i in range(flat.numel()):
        step = torch.zeros_like(flat)
        step[i] = eps
        columns.append((fn((flat + step).reshape(x.shape)) - fn((flat - step).reshape(x.shape))) / (2 * eps))
    out = torch.stack(columns, dim=-1)
    return out.reshape(*out.shape[:-1], *x.shape)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` (Frobenius norms)."""
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


@dataclass(frozen=True)
class UnbiasednessReport:
    """Outcome of :func:`check_unbiased`: per-component estimates, exact values and z-scores."""

    order: int
    estimate: torch.Tensor
    exact: torch.Tensor
    stderr: torch.Tensor
    z: torch.Tensor
    max_abs_z: float
    threshold: float
    num_groups: int
    episodes_per_group: int

    @property
    def unbiased(self) -> bool:
        """True when no component's |z| exceeds the threshold."""
        return self.max_abs_z <= self.threshold

    def summary(self) -> str:
        worst = int(self.z.abs().argmax())
        return (
            f"order {self.order}: max |z| = {self.max_abs_z:.2f} (threshold {self.threshold:.2f}) "
            f"at component {worst}: estimate {float(self.estimate[worst]):.6g} "
            f"+- {float(self.stderr[worst]):.2g}, exact {float(self.exact[worst]):.6g}; "
            f"{self.num_groups} groups x {self.episodes_per_group} episodes"
        )


def _default_task(seed: int) -> TabularTask:
    return random_task(4, 3, gamma=0.9, horizon=6, dirichlet_alpha=1.0, seed=seed, start_state=None)


def check_unbiased(
    surrogate_fn: Callable[..., torch.Tensor],
    order: int = 1,
    *,
    task: TabularTask | None = None,
    logits: torch.Tensor | None = None,
    behaviour_logits: torch.Tensor | None = None,
    critic_noise: float | None = 0.5,
    num_groups: int = 400,
    episodes_per_group: int = 50,
    directions: int = 3,
    alpha: float = 1e-3,
    seed: int = 0,
    estimator_kwargs: dict | None = None,
) -> UnbiasednessReport:
    """Compare the mean ``order``-th derivative of ``surrogate_fn`` with the exact one.

    Args:
        surrogate_fn: estimator with the shared signature of :mod:`metagrad.estimators`,
            returning the per-episode surrogate ``[B, ...]`` for inputs ``[T, B, ...]``.
        order: 1 (gradient) or 2 (Hessian-vector products along ``directions`` random unit vectors).
        task: the MDP (default: a 4-state, 3-action stochastic MDP, horizon 6, gamma 0.9).
        logits: ``[S, A]`` policy at which to differentiate (default: random, seeded).
        behaviour_logits: ``[S, A]`` policy that generates the data (default: ``logits``, on-policy);
            ``behaviour_log_probs`` are passed to ``surrogate_fn`` either way.
        critic_noise: pass exact finite-horizon values plus this relative noise (fixed per group)
            as ``values``/``bootstrap_value``; ``None`` passes no critic.
        num_groups, episodes_per_group: the Monte Carlo budget (estimates are per group).
        alpha: family-wise false-alarm level of the Bonferroni-corrected z-test.
        seed: seeds the default task, logits, directions, episodes and critic noise.
        estimator_kwargs: extra keyword arguments for ``surrogate_fn``.
    Returns:
        An :class:`UnbiasednessReport`.
    """
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2, got {order!r}")
    check_int("num_groups", num_groups, 2)
    check_int("episodes_per_group", episodes_per_group, 1)
    check_int("directions", directions, 1)
    check_real("alpha", alpha, minimum=0.0, maximum=1.0, open_min=True, open_max=True)
    check_seed("seed", seed)
    if critic_noise is not None:
        check_real("critic_noise", critic_noise, minimum=0.0)
    gen = torch.Generator().manual_seed(seed)
    task = _default_task(seed) if task is None else task
    S, A = task.num_states, task.num_actions
    if logits is None:
        logits = torch.randn(S, A, generator=gen, dtype=torch.float64)
    logits = logits.detach().to(torch.float64)
    behaviour = logits if behaviour_logits is None else behaviour_logits.detach().to(torch.float64)
    G = num_groups

    theta = logits.expand(G, S, A).clone().requires_grad_(True)
    traj = rollout(task, behaviour.expand(G, S, A), episodes_per_group, generator=gen)
    log_probs = policy_log_probs(theta, traj.states, traj.actions)
    values = bootstrap = None
    if critic_noise is not None:
        table = tabular_values(task, logits, "finite").expand(G, -1, -1)
        noise = torch.randn(table.shape, generator=gen, dtype=table.dtype)
        table = table + critic_noise * noise * table.norm(dim=-1, keepdim=True) / S
        values, bootstrap = critic_values(table, traj.states, traj.final_states, "finite")
    surrogate = surrogate_fn(
        log_probs,
        traj.rewards,
        traj.discounts,
        behaviour_log_probs=traj.behaviour_log_probs,
        values=values,
        bootstrap_value=bootstrap,
        **(estimator_kwargs or {}),
    )
    if surrogate.shape != (episodes_per_group, G):
        raise ValueError(
            f"surrogate_fn: expected a per-episode surrogate of shape [B, ...] = "
            f"{[episodes_per_group, G]}, got {list(surrogate.shape)}"
        )
    objective = surrogate.mean(0).sum()

    exact_theta = logits.clone().requires_grad_(True)
    exact_obj = tabular_return(task, exact_theta, "finite")
    if order == 1:
        (per_group,) = torch.autograd.grad(objective, theta)
        per_group = per_group.reshape(G, -1)
        (exact,) = torch.autograd.grad(exact_obj, exact_theta)
        exact = exact.reshape(-1)
    else:
        vs = torch.randn(directions, S, A, generator=gen, dtype=torch.float64)
        vs = vs / vs.flatten(1).norm(dim=1).reshape(-1, 1, 1)
        (g,) = torch.autograd.grad(objective, theta, create_graph=True)
        (eg,) = torch.autograd.grad(exact_obj, exact_theta, create_graph=True)
        est, ex = [], []
        for v in vs:
            est.append(torch.autograd.grad((g * v).sum(), theta, retain_graph=True)[0].reshape(G, -1))
            ex.append(torch.autograd.grad((eg * v).sum(), exact_theta, retain_graph=True)[0].reshape(-1))
        per_group, exact = torch.cat(est, dim=1), torch.cat(ex)
    per_group, exact = per_group.detach(), exact.detach()

    mean = per_group.mean(0)
    stderr = per_group.std(0) / G**0.5
    diff = mean - exact
    tiny = 1e-10 * (1 + exact.abs())
    z = torch.where(
        stderr > 0,
        diff / stderr.clamp_min(1e-300),
        torch.where(diff.abs() <= tiny, torch.zeros_like(diff), torch.full_like(diff, float("inf"))),
    )
    dims = exact.numel()
    threshold = float(torch.special.ndtri(torch.tensor(1 - alpha / (2 * dims), dtype=torch.float64)))
    return UnbiasednessReport(
        order, mean, exact, stderr, z, float(z.abs().max()), threshold, G, episodes_per_group
    )


def assert_unbiased(
    surrogate_fn: Callable[..., torch.Tensor], order: int = 1, **kwargs
) -> UnbiasednessReport:
    """Raise ``AssertionError`` (with the worst component) unless :func:`check_unbiased` passes."""
    report = check_unbiased(surrogate_fn, order, **kwargs)
    if not report.unbiased:
        raise AssertionError(
            f"{getattr(surrogate_fn, '__name__', 'surrogate')} looks biased: {report.summary()}"
        )
    return report
