"""Is *your* estimator unbiased? A seeded statistical check against the exact tabular oracle.

Example (pytest)::

    from metagrad.testing import assert_unbiased

    def my_surrogate(log_probs, rewards, discounts, *, behaviour_log_probs=None,
                     values=None, bootstrap_value=None):
        ...  # returns the per-episode surrogate [B, ...]

    def test_my_surrogate_hessian():
        assert_unbiased(my_surrogate, order=2)  # or a registered name: assert_unbiased("dice", 2)

**What is tested.** ``num_groups`` independent batches ("groups") of ``episodes_per_group``
episodes are drawn from a small stochastic MDP; each group gives one estimate (the gradient for
``order=1``; Hessian-vector products along ``directions`` fixed random unit vectors for
``order=2``), a vector of ``K`` components. Two tests run on every component:

* the **direct** test compares the mean estimate with the exact float64 derivative of the
  finite-horizon return: ``z = (mean - exact) / stderr``;
* the **paired** test also computes, on the *same* episodes, estimators that are unbiased at
  every order by theory (the *references*: step-wise importance sampling, i.e. DiCE on-policy;
  doubly robust with the exact critic, i.e. Loaded DiCE on-policy; doubly robust with the critic
  the estimator is given) and uses their errors ``R - exact`` (mean zero) as control variates:
  the least-squares intercept of the estimate regressed on them estimates the estimator's mean
  with the noise it shares with the references removed. Under the null hypothesis (no bias) the
  intercept's ``z`` is again standard normal for large ``num_groups``, because the references are
  unbiased; the fit only chooses how much of their noise to subtract (plain differences ``X - R``
  are the special case of coefficient 1).

The check fails when any of the ``2 K`` statistics exceeds the Bonferroni threshold
``Phi^-1(1 - alpha / (4 K))``: the family-wise false-alarm rate is at most ``alpha`` (up to the
normal approximation). Everything is seeded, so a passing check passes every time.

**Power.** Each report states :attr:`UnbiasednessReport.min_detectable_bias`: the smallest
relative bias ``eps`` (a mean of ``(1 + eps)`` times the exact derivative, as for a mis-scaled
return) that *this run* detects with probability at least ``power`` (default 95%). It is computed
from the run's own standard errors: one component with ``|eps exact_j| / stderr_j >= threshold +
Phi^-1(power)`` already rejects with that probability, so the figure is a conservative bound.
Because an estimator's noise largely cancels against the references, a mis-scaled DiCE is
detected far below its direct-test bound. ``python -m metagrad.testing.power`` measures the power
curve (DiCE and DiCE with a baseline scaled by ``1 + eps``, many seeds) and the false-alarm rate
(the built-in unbiased estimators and a plug-in copy of DiCE), and prints the call time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from metagrad.critics import critic_values
from metagrad.envs.tabular import TabularTask, policy_log_probs, random_task, rollout
from metagrad.estimators import EstimatorInfo, doubly_robust, stepwise_is
from metagrad.exact import tabular_return, tabular_values
from metagrad.seeding import torch_generator
from metagrad.testing.plugins import ResolvedEstimator, resolve_estimator
from metagrad.validation import check_int, check_real, check_seed

__all__ = [
    "DEFAULT_EPISODES_PER_GROUP",
    "DEFAULT_NUM_GROUPS",
    "UnbiasednessReport",
    "assert_unbiased",
    "check_unbiased",
]

DEFAULT_NUM_GROUPS = 8000
DEFAULT_EPISODES_PER_GROUP = 50

# A standard error below these floors is rounding, not a measurement: an estimator whose
# derivatives equal a reference's exactly leaves residuals of about 1e-16, and a z-score divided by
# them would be noise. The floor is relative to the direct test's standard error (the paired test
# then resolves biases down to 1e-6 of the direct test's bound) plus an absolute part for
# deterministic estimators.
_RELATIVE_FLOOR = 1e-6
_ABSOLUTE_FLOOR = 1e-10
# Groups simulated and differentiated at once: bounds the memory of a call (about 0.5 GB at order
# 2). The episodes of a seed depend on it, so it is a constant.
_CHUNK = 1000


@dataclass(frozen=True)
class UnbiasednessReport:
    """Outcome of :func:`check_unbiased`.

    Per-component tensors ``[K]`` (``K = S A`` for order 1, ``directions * S A`` for order 2):
    ``estimate`` (mean of the per-group estimates), ``exact``, ``stderr`` and ``z`` of the direct
    test; ``paired_estimate``, ``paired_stderr`` and ``paired_z`` of the paired (control-variate)
    test, or None when it was switched off.

    Attributes:
        passed: no statistic exceeded ``threshold`` (no bias detected).
        max_abs_z: the largest ``|z|`` over both tests; ``threshold`` the Bonferroni bound.
        p_value: family-wise p-value (Bonferroni-adjusted smallest two-sided p-value, capped at 1);
            the check passes at level ``alpha`` exactly when ``p_value > alpha``.
        min_detectable_bias: the relative bias along the exact derivative that this run detects
            with probability at least ``power`` (from its own standard errors).
        min_detectable_bias_direct: the same for the direct test alone.
        references: the reference estimators of the paired test.
        matches_references: the estimates are a linear combination of the references' up to
            rounding (e.g. DiCE, or a scaled copy): the paired test then resolves a bias down to
            the rounding floor, far below the direct test's bound.
    """

    name: str
    order: int
    passed: bool
    estimate: torch.Tensor
    exact: torch.Tensor
    stderr: torch.Tensor
    z: torch.Tensor
    paired_estimate: torch.Tensor | None
    paired_stderr: torch.Tensor | None
    paired_z: torch.Tensor | None
    max_abs_z: float
    threshold: float
    p_value: float
    alpha: float
    power: float
    min_detectable_bias: float
    min_detectable_bias_direct: float
    num_groups: int
    episodes_per_group: int
    references: tuple[str, ...]
    matches_references: bool = False

    @property
    def unbiased(self) -> bool:
        """Same as :attr:`passed` (no bias detected)."""
        return self.passed

    def summary(self) -> str:
        """One paragraph: the verdict, the worst component, the detectable bias and the budget."""
        tests = [("direct", self.z, self.estimate, self.stderr)]
        if self.paired_z is not None:
            tests.append(("paired", self.paired_z, self.paired_estimate, self.paired_stderr))
        test, z, est, se = max(tests, key=lambda t: float(t[1].abs().max()))
        worst = int(z.abs().argmax())
        verdict = "PASS (no bias detected)" if self.passed else "FAIL (biased)"
        paired = f", paired with {', '.join(self.references)}" if self.references else ""
        if self.matches_references:
            paired += " (its estimates equal a linear combination of the references' up to rounding)"
        return (
            f"{verdict}: {self.name}, order {self.order}: max |z| = {self.max_abs_z:.3g} "
            f"(threshold {self.threshold:.3g}, family-wise p = {self.p_value:.3g}, alpha {self.alpha:g}); "
            f"worst: {test} test, component {worst}: estimate {float(est[worst]):.6g} "
            f"+- {float(se[worst]):.2g}, exact {float(self.exact[worst]):.6g}. "
            f"Detects a relative bias of {_percent(self.min_detectable_bias)} "
            f"(direct test alone: {_percent(self.min_detectable_bias_direct)}) with "
            f"{self.power:.0%} power; {self.num_groups} groups x {self.episodes_per_group} episodes{paired}."
        )


def _percent(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{100 * x:.3g}%"


def _default_task(seed: int) -> TabularTask:
    return random_task(4, 3, gamma=0.9, horizon=6, dirichlet_alpha=1.0, seed=seed, start_state=None)


def _normal_quantile(p: float) -> float:
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))


def _per_group_derivatives(
    objectives: list[torch.Tensor], thetas: list[torch.Tensor], order: int, directions: torch.Tensor | None
) -> list[torch.Tensor]:
    """Per-group derivatives ``[G, K]`` of each objective w.r.t. its own parameters ``[G, S, A]``.

    One backward pass for all objectives (each reads only its own copy of the parameters); for
    order 2, one more per direction (Hessian-vector products).
    """
    G = thetas[0].shape[0]
    total = sum(o for o in objectives if o.requires_grad)
    if not isinstance(total, torch.Tensor):  # nothing depends on the parameters
        shape = (G, thetas[0][0].numel() * (1 if directions is None else directions.shape[0]))
        return [torch.zeros(shape, dtype=torch.float64) for _ in thetas]
    grads = torch.autograd.grad(total, thetas, create_graph=order > 1, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, thetas, strict=True)]
    if order == 1:
        return [g.detach().reshape(G, -1) for g in grads]
    assert directions is not None
    columns: list[list[torch.Tensor]] = [[] for _ in thetas]
    for v in directions:
        inner = sum((g * v).sum() for g in grads if g.requires_grad)
        if isinstance(inner, torch.Tensor):
            hv = torch.autograd.grad(inner, thetas, retain_graph=True, allow_unused=True)
        else:
            hv = (None,) * len(thetas)
        for k, (h, t) in enumerate(zip(hv, thetas, strict=True)):
            columns[k].append((torch.zeros_like(t) if h is None else h).detach().reshape(G, -1))
    return [torch.cat(c, dim=1) for c in columns]


def _paired_test(
    estimates: torch.Tensor, references: list[torch.Tensor], exact: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Control-variate estimate of the mean and its standard error, per component.

    For each component j, the per-group estimates ``X_gj`` are regressed (least squares, with an
    intercept) on the reference errors ``C_gjk = R_k,gj - exact_j``, which have mean zero; the
    fitted value at ``C = 0`` estimates ``E[X_j]`` and its usual standard error is
    ``s sqrt(1/G + cbar^T (C_c^T C_c)^+ cbar)`` (``C_c`` centred, ``cbar`` the mean of C,
    ``s^2`` the residual variance on ``G - 1 - rank`` degrees of freedom).

    Args: estimates ``[G, K]``; references: ``p`` tensors ``[G, K]``; exact ``[K]``.
    Returns: ``(estimate [K], stderr [K])``.
    """
    G = estimates.shape[0]
    controls = torch.stack([r - exact for r in references], dim=-1).transpose(0, 1)  # [K, G, p]
    cbar = controls.mean(1)  # [K, p]
    centred = controls - cbar.unsqueeze(1)
    scale = centred.norm(dim=1).clamp_min(1e-300)  # [K, p]
    centred, cbar = centred / scale.unsqueeze(1), cbar / scale
    y = estimates.T - estimates.mean(0).unsqueeze(1)  # [K, G]
    gram = centred.mT @ centred  # [K, p, p]
    gram_pinv = torch.linalg.pinv(gram, hermitian=True, rtol=1e-10)
    rank = torch.linalg.matrix_rank(gram, hermitian=True, rtol=1e-10)
    beta = gram_pinv @ (centred.mT @ y.unsqueeze(-1))  # [K, p, 1]
    residuals = y - (centred @ beta).squeeze(-1)
    dof = (G - 1 - rank).clamp_min(1).to(estimates.dtype)
    variance = residuals.square().sum(1) / dof
    leverage = (cbar.unsqueeze(1) @ gram_pinv @ cbar.unsqueeze(-1)).reshape(-1)
    estimate = estimates.mean(0) - (cbar.unsqueeze(1) @ beta).reshape(-1)
    return estimate, (variance * (1.0 / G + leverage)).sqrt()


def _detectable(margin: float, exact: torch.Tensor, stderr: torch.Tensor) -> float:
    """The smallest ``eps`` with ``|eps exact_j| / stderr_j >= margin`` for some component j: a
    mean of ``(1 + eps) exact`` is then rejected by that component alone with the power the
    margin was built for."""
    best = float((exact.abs() / stderr).max())
    return margin / best if best > 0 else math.inf


def _z_scores(estimate: torch.Tensor, exact: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    return (estimate - exact) / stderr


def check_unbiased(
    estimator: str | EstimatorInfo | Callable[..., torch.Tensor],
    order: int = 1,
    *,
    task: TabularTask | None = None,
    logits: torch.Tensor | None = None,
    behaviour_logits: torch.Tensor | None = None,
    critic_noise: float | None = 0.5,
    num_groups: int = DEFAULT_NUM_GROUPS,
    episodes_per_group: int = DEFAULT_EPISODES_PER_GROUP,
    directions: int = 3,
    alpha: float = 1e-3,
    power: float = 0.95,
    paired: bool = True,
    seed: int = 0,
    estimator_kwargs: dict | None = None,
) -> UnbiasednessReport:
    """Test whether the mean ``order``-th derivative of ``estimator`` equals the exact one.

    See the module docstring for the two tests and what the power statement means.

    Args:
        estimator: a registered name (``"dice"``), an :class:`~metagrad.estimators.EstimatorInfo`,
            or a function with the shared estimator signature of :mod:`metagrad.estimators`,
            returning the per-episode surrogate ``[B, ...]`` for inputs ``[T, B, ...]``.
        order: 1 (gradient) or 2 (Hessian-vector products along ``directions`` random unit vectors).
        task: the MDP (default: a 4-state, 3-action stochastic MDP, horizon 6, gamma 0.9, drawn
            from ``seed``).
        logits: ``[S, A]`` policy at which to differentiate (default: random, seeded).
        behaviour_logits: ``[S, A]`` policy that generates the data (default: ``logits``, on-policy);
            ``behaviour_log_probs`` are passed to the estimator either way, and the references
            weight by importance ratios, so they stay unbiased off-policy.
        critic_noise: pass the exact finite-horizon values plus this relative noise (fixed per
            group) as ``values`` / ``bootstrap_value``; ``None`` passes no critic.
        num_groups, episodes_per_group: the Monte Carlo budget (one estimate per group).
        alpha: family-wise false-alarm level (Bonferroni over both tests and all components).
        power: the detection probability at which :attr:`UnbiasednessReport.min_detectable_bias`
            is stated.
        paired: also run the paired test against the references (default); ``False`` runs the
            direct test alone (less powerful).
        seed: seeds the default task, logits, directions, episodes and critic noise.
        estimator_kwargs: extra keyword arguments for the estimator.
    Returns:
        An :class:`UnbiasednessReport` (``passed``, ``summary()``, ``min_detectable_bias``, ...).
    """
    resolved = resolve_estimator(estimator)
    if order not in (1, 2) or isinstance(order, bool):
        raise ValueError(f"order: expected 1 or 2, got {order!r}")
    check_int("num_groups", num_groups, 8)
    check_int("episodes_per_group", episodes_per_group, 1)
    check_int("directions", directions, 1)
    check_real("alpha", alpha, minimum=0.0, maximum=1.0, open_min=True, open_max=True)
    check_real("power", power, minimum=0.0, maximum=1.0, open_min=True, open_max=True)
    check_seed("seed", seed)
    if critic_noise is not None:
        check_real("critic_noise", critic_noise, minimum=0.0)
    if not isinstance(paired, bool):
        raise ValueError(f"paired: expected a bool, got {paired!r}")
    task = _default_task(seed) if task is None else task
    S, A = task.num_states, task.num_actions
    if logits is None:
        logits = torch.randn(S, A, generator=torch_generator(seed, "testing", "logits"), dtype=torch.float64)
    logits = logits.detach().to(torch.float64)
    behaviour = logits if behaviour_logits is None else behaviour_logits.detach().to(torch.float64)
    G = num_groups

    exact_table = tabular_values(task, logits, "finite")
    critic_table = None
    if critic_noise is not None:
        noise = torch.randn(
            (G, *exact_table.shape), generator=torch_generator(seed, "testing", "critic"), dtype=torch.float64
        )
        critic_table = exact_table + critic_noise * noise * exact_table.norm(dim=-1, keepdim=True) / S
    episodes = torch_generator(seed, "testing", "episodes")
    per_group: list[list[torch.Tensor]] = []
    vs = None
    if order == 2:
        vs = torch.randn(
            directions, S, A, generator=torch_generator(seed, "testing", "directions"), dtype=torch.float64
        )
        vs = vs / vs.flatten(1).norm(dim=1).reshape(-1, 1, 1)
    design = _Design(
        task, logits, behaviour, exact_table, critic_table, episodes_per_group, order, vs, paired
    )
    reference_names: tuple[str, ...] = ()
    for start in range(0, G, _CHUNK):
        rows = slice(start, min(G, start + _CHUNK))
        derivatives, reference_names = _chunk_derivatives(
            resolved, estimator_kwargs or {}, design, rows, episodes
        )
        per_group.append(derivatives)
    stacked = [torch.cat(parts, dim=0) for parts in zip(*per_group, strict=True)]

    exact_theta = logits.clone().requires_grad_(True)
    exact = _exact_derivative(tabular_return(task, exact_theta, "finite"), exact_theta, order, vs)

    estimates = stacked[0]
    mean = estimates.mean(0)
    stderr = estimates.std(0) / G**0.5
    floor = _ABSOLUTE_FLOOR * (1 + exact.abs())
    z = _z_scores(mean, exact, stderr.clamp_min(0) + floor)
    zs = [z]
    paired_mean = paired_se = paired_z = None
    matches = False
    if paired:
        paired_mean, raw_se = _paired_test(estimates, stacked[1:], exact)
        paired_se = torch.maximum(raw_se, _RELATIVE_FLOOR * stderr) + floor
        matches = bool((raw_se <= _RELATIVE_FLOOR * stderr + floor).all())
        paired_z = _z_scores(paired_mean, exact, paired_se)
        zs.append(paired_z)
    tests = len(zs) * exact.numel()
    threshold = _normal_quantile(1 - alpha / (2 * tests))
    max_abs_z = max(float(t.abs().max()) for t in zs)
    smallest_p = 2 * float(torch.special.ndtr(torch.tensor(-max_abs_z, dtype=torch.float64)))
    p_value = min(1.0, tests * smallest_p)
    margin = threshold + _normal_quantile(power)
    direct_mdb = _detectable(margin, exact, stderr + floor)
    mdb = (
        direct_mdb
        if paired_se is None
        else _detectable(margin, exact, torch.minimum(stderr + floor, paired_se))
    )
    return UnbiasednessReport(
        name=resolved.name,
        order=order,
        passed=max_abs_z <= threshold,
        estimate=mean,
        exact=exact,
        stderr=stderr,
        z=z,
        paired_estimate=paired_mean,
        paired_stderr=paired_se,
        paired_z=paired_z,
        max_abs_z=max_abs_z,
        threshold=threshold,
        p_value=p_value,
        alpha=alpha,
        power=power,
        min_detectable_bias=mdb,
        min_detectable_bias_direct=direct_mdb,
        num_groups=G,
        episodes_per_group=episodes_per_group,
        references=reference_names,
        matches_references=matches,
    )


@dataclass(frozen=True)
class _Design:
    """What every chunk of groups shares: the MDP, the policies, the critics and the derivative."""

    task: TabularTask
    logits: torch.Tensor  # [S, A] where the derivative is taken
    behaviour: torch.Tensor  # [S, A] that generates the episodes
    exact_table: torch.Tensor  # [H + 1, S] exact finite-horizon values of `logits`
    critic_table: torch.Tensor | None  # [G, H + 1, S] the noisy critic given to the estimator
    episodes_per_group: int
    order: int
    directions: torch.Tensor | None  # [D, S, A] unit vectors (order 2)
    paired: bool


def _chunk_derivatives(
    estimator: ResolvedEstimator,
    estimator_kwargs: dict,
    design: _Design,
    rows: slice,
    generator: torch.Generator,
) -> tuple[list[torch.Tensor], tuple[str, ...]]:
    """Per-group derivatives ``[g, K]`` of the estimator (first) and the references on the groups
    ``rows`` (fresh episodes from ``generator``); returns them with the references' names."""
    task, logits, behaviour = design.task, design.logits, design.behaviour
    G, episodes_per_group = rows.stop - rows.start, design.episodes_per_group
    S, A = task.num_states, task.num_actions
    traj = rollout(task, behaviour.expand(G, S, A), episodes_per_group, generator=generator)
    values = bootstrap = None
    if design.critic_table is not None:
        critic_table = design.critic_table[rows]
        values, bootstrap = critic_values(critic_table, traj.states, traj.final_states, "finite")

    def log_probs() -> tuple[torch.Tensor, torch.Tensor]:
        theta = logits.expand(G, S, A).clone().requires_grad_(True)
        return theta, policy_log_probs(theta, traj.states, traj.actions)

    common = (traj.rewards, traj.discounts)
    theta, lp = log_probs()
    surrogate = estimator.fn(
        lp,
        *common,
        behaviour_log_probs=traj.behaviour_log_probs,
        values=values,
        bootstrap_value=bootstrap,
        **estimator_kwargs,
    )
    if not isinstance(surrogate, torch.Tensor) or surrogate.shape != (episodes_per_group, G):
        got = list(surrogate.shape) if isinstance(surrogate, torch.Tensor) else type(surrogate).__name__
        raise ValueError(
            f"{estimator.name}: expected a per-episode surrogate of shape [B, ...] = "
            f"{[episodes_per_group, G]}, got {got}"
        )
    thetas, objectives = [theta], [surrogate.mean(0).sum()]
    critics: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}
    if design.paired:
        exact_table = design.exact_table.expand(G, -1, -1)
        exact_critic = critic_values(exact_table, traj.states, traj.final_states, "finite")
        critics = {"stepwise_is": None, "doubly_robust(exact critic)": exact_critic}
        if values is not None and bootstrap is not None and bool((critic_table != design.exact_table).any()):
            critics["doubly_robust(given critic)"] = (values, bootstrap)
    for critic in critics.values():
        theta_r, lp_r = log_probs()
        if critic is None:
            ref = stepwise_is(lp_r, *common, behaviour_log_probs=traj.behaviour_log_probs)
        else:
            ref = doubly_robust(
                lp_r,
                *common,
                behaviour_log_probs=traj.behaviour_log_probs,
                values=critic[0],
                bootstrap_value=critic[1],
            )
        thetas.append(theta_r)
        objectives.append(ref.mean(0).sum())
    derivatives = _per_group_derivatives(objectives, thetas, design.order, design.directions)
    return derivatives, tuple(critics)


def _exact_derivative(
    objective: torch.Tensor, theta: torch.Tensor, order: int, directions: torch.Tensor | None
) -> torch.Tensor:
    """The exact gradient ``[S A]``, or Hessian-vector products ``[directions * S A]``."""
    (g,) = torch.autograd.grad(objective, theta, create_graph=order > 1)
    if order == 1:
        return g.detach().reshape(-1)
    assert directions is not None
    rows = [torch.autograd.grad((g * v).sum(), theta, retain_graph=True)[0].reshape(-1) for v in directions]
    return torch.cat(rows).detach()


def assert_unbiased(
    estimator: str | EstimatorInfo | Callable[..., torch.Tensor], order: int = 1, **kwargs
) -> UnbiasednessReport:
    """Raise ``AssertionError`` with the report's summary unless :func:`check_unbiased` passes.

    Same arguments as :func:`check_unbiased`; returns the report when it passes.
    """
    report = check_unbiased(estimator, order, **kwargs)
    if not report.passed:
        raise AssertionError(f"{report.name} looks biased: {report.summary()}")
    return report
