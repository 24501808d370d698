"""Meta-gradient estimators as pure functions of time-major trajectory tensors.

Every estimator shares one signature::

    fn(log_probs, rewards, discounts, *, behaviour_log_probs=None, values=None,
       bootstrap_value=None, **params) -> Tensor  # [B, ...]

* ``log_probs``: ``[T, B, ...]`` log pi_theta(a_t | s_t), carrying the graph of theta.
* ``rewards``: ``[T, B, ...]`` (may carry a graph too, e.g. an intrinsic reward eta).
* ``discounts``: ``[T, B, ...]`` per-step discount applied between t and t + 1 (gamma, or 0 after
  termination). The weight of step t is ``c_t = prod_{k<t} discounts_k`` (``gamma^t``).
* ``behaviour_log_probs``: ``[T, B, ...]`` log mu(a_t | s_t) of the policy that generated the data.
* ``values``: ``[T, B, ...]`` critic values V(s_t), never differentiated; ``bootstrap_value``:
  ``[B, ...]`` V(s_T) for truncated episodes.

The return value is the *per-episode* surrogate (time summed), shape ``[B, ...]``; its mean over
the episode axis is the surrogate objective, and the n-th derivative of that mean w.r.t. theta
is the estimator's n-th order estimate of the n-th derivative of the expected return.

Estimators live in :data:`ESTIMATORS`; :func:`get_estimator` looks one up by name and
:func:`register_estimator` adds a user's own (for scoring it with the suite).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from metagrad.validation import check_finite_tensor, check_real

__all__ = [
    "ESTIMATORS",
    "EstimatorInfo",
    "advantages",
    "check_trajectory_inputs",
    "cumulative_discounts",
    "dice",
    "dice_baseline",
    "discounted_returns",
    "doubly_robust",
    "get_estimator",
    "loaded_dice",
    "log_ratios",
    "lvc",
    "magic_box",
    "off_policy_dice",
    "per_step_is",
    "pg",
    "register_estimator",
    "stepwise_is",
    "stop_gradient",
    "taylor1",
    "taylor2",
    "vtrace",
]

Estimator = Callable[..., torch.Tensor]


# --------------------------------------------------------------------------------------------
# Gradient-flow helpers: every cut of the graph in meta-gradient code goes through these.
# --------------------------------------------------------------------------------------------


def stop_gradient(x: torch.Tensor) -> torch.Tensor:
    """``stop(x)``: same value, no derivative (the only sanctioned graph cut in estimator code)."""
    return x.detach()


def magic_box(x: torch.Tensor) -> torch.Tensor:
    """DiCE magic box ``exp(x - stop(x))`` (Foerster et al. 2018).

    Value 1; derivative ``magic_box(x) * dx``.
    """
    return torch.exp(x - stop_gradient(x))


def cumulative_discounts(discounts: torch.Tensor) -> torch.Tensor:
    """``c_t = prod_{k<t} discounts_k`` (``gamma^t`` for constant gamma), shape ``[T, B, ...]``."""
    ones = torch.ones_like(discounts[:1])
    return torch.cat([ones, torch.cumprod(discounts[:-1], dim=0)], dim=0)


def discounted_returns(
    rewards: torch.Tensor, discounts: torch.Tensor, bootstrap_value: torch.Tensor | None = None
) -> torch.Tensor:
    """Rewards-to-go ``G_t = r_t + discounts_t G_{t+1}``, ``G_T = bootstrap_value`` (0 if None).

    Args: rewards, discounts ``[T, B, ...]``; bootstrap_value ``[B, ...]``. Returns ``[T, B, ...]``.
    """
    g = torch.zeros_like(rewards[0]) if bootstrap_value is None else bootstrap_value.to(rewards.dtype)
    weights = cumulative_discounts(discounts.to(rewards.dtype))
    tail = weights[-1] * discounts[-1]  # c_T
    floor = 1e-100 if rewards.dtype == torch.float64 else 1e-20
    if rewards.shape[0] > 1 and bool((tail.detach().abs() > floor).all()):
        # No termination and no underflow: G_t = (sum_{k>=t} c_k r_k + c_T G_T) / c_t with
        # suffix sums (one vectorised pass instead of a Python loop over t).
        weighted = (weights * rewards).flip(0).cumsum(0).flip(0)
        return (weighted + tail * g) / weights
    out = []
    for t in range(rewards.shape[0] - 1, -1, -1):
        g = rewards[t] + discounts[t] * g
        out.append(g)
    return torch.stack(out[::-1], dim=0)


def advantages(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """GAE advantages ``A_t = delta_t + discounts_t * gae_lambda * A_{t+1}`` (Schulman et al. 2016).

    ``delta_t = r_t + discounts_t V(s_{t+1}) - V(s_t)`` with ``V(s_T) = bootstrap_value``. With
    ``gae_lambda = 1`` this is ``G_t - V(s_t)`` (unbiased for any critic); with no critic it is
    ``G_t``. Critic inputs are cut from the graph; rewards keep theirs.

    Args: rewards, discounts, values ``[T, B, ...]``; bootstrap_value ``[B, ...]``.
    Returns: ``[T, B, ...]``.
    """
    if values is None:
        return discounted_returns(rewards, discounts, bootstrap_value)
    values = stop_gradient(values).to(rewards.dtype)
    boot = torch.zeros_like(values[0]) if bootstrap_value is None else stop_gradient(bootstrap_value)
    next_values = torch.cat([values[1:], boot.to(values.dtype).unsqueeze(0)], dim=0)
    deltas = rewards + discounts * next_values - values
    if gae_lambda == 1.0:
        return discounted_returns(deltas, discounts)
    return discounted_returns(deltas, discounts * gae_lambda)


def check_trajectory_inputs(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> None:
    """Raise ``ValueError`` naming the argument when shapes disagree or entries are NaN/inf."""
    named = {"log_probs": log_probs, "rewards": rewards, "discounts": discounts}
    if behaviour_log_probs is not None:
        named["behaviour_log_probs"] = behaviour_log_probs
    if values is not None:
        named["values"] = values
    for name, x in named.items():
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor [T, B, ...], got {type(x).__name__}")
        if x.ndim < 2:
            raise ValueError(f"{name}: expected a time-major tensor [T, B, ...], got shape {list(x.shape)}")
        if x.shape != log_probs.shape:
            raise ValueError(f"{name}: shape {list(x.shape)} differs from log_probs {list(log_probs.shape)}")
        check_finite_tensor(name, x)
    if bootstrap_value is not None:
        if not isinstance(bootstrap_value, torch.Tensor) or bootstrap_value.shape != log_probs.shape[1:]:
            got = (
                list(bootstrap_value.shape) if isinstance(bootstrap_value, torch.Tensor) else bootstrap_value
            )
            raise ValueError(
                f"bootstrap_value: expected shape [B, ...] = {list(log_probs.shape[1:])}, got {got}"
            )
        check_finite_tensor("bootstrap_value", bootstrap_value)


# --------------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------------


def dice(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """DiCE: ``sum_t c_t box(W_t) r_t`` with ``W_t = sum_{k<=t} log pi_k`` (Foerster et al., ICML 2018).

    Unbiased for every derivative order of the finite-horizon objective; high variance. Uses no
    critic (``values`` and ``bootstrap_value`` are ignored, as in the papers' protocol).

    Args: see the module docstring (shapes ``[T, B, ...]``).
    Returns: ``[B, ...]``; its mean over episodes has the n-th derivative
    ``E[d^n sum_t gamma^t r_t]`` in expectation, for every n.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    weights = cumulative_discounts(discounts)
    return (weights * magic_box(torch.cumsum(log_probs, dim=0)) * rewards).sum(0)


def dice_baseline(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """DiCE with a baseline: ``dice + sum_t c_t (1 - box(log pi_t)) b(s_t)`` (Mao et al. 2019; LOLA-DiCE).

    The baseline term has zero mean at every derivative order (given the history, the expected
    derivatives of ``box(log pi_t)`` vanish), so all orders stay unbiased; it reduces
    first-order variance. ``values`` supply ``b``; without them this is :func:`dice`.

    Returns: ``[B, ...]`` per-episode surrogate.
    """
    surrogate = dice(
        log_probs,
        rewards,
        discounts,
        behaviour_log_probs=behaviour_log_probs,
        values=values,
        bootstrap_value=bootstrap_value,
    )
    if values is None:
        return surrogate
    weights = cumulative_discounts(discounts)
    baseline = stop_gradient(values).to(log_probs.dtype)
    return surrogate + (weights * (1.0 - magic_box(log_probs)) * baseline).sum(0)


def loaded_dice(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    lambda_: float = 1.0,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """Loaded DiCE: ``sum_t c_t (box(w_t) - box(w_t - log pi_t)) A_t`` (Farquhar et al., NeurIPS 2019).

    ``w_t = sum_{k<=t} lambda^(t-k) log pi_k`` discounts how far back higher-order dependencies
    reach (``lambda_ = 1``: all of them, unbiased at every order for any critic that does not
    depend on theta, with ``gae_lambda = 1``); ``A_t`` are GAE advantages of the critic
    (``G_t`` with no critic, which makes the derivatives equal :func:`dice`'s).

    Returns: ``[B, ...]`` per-episode surrogate (value 0; its derivatives are the estimates).
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    check_real("lambda_", lambda_, minimum=0.0, maximum=1.0)
    if lambda_ == 1.0:
        deps = torch.cumsum(log_probs, dim=0)
    else:
        acc, steps = torch.zeros_like(log_probs[0]), []
        for t in range(log_probs.shape[0]):
            acc = lambda_ * acc + log_probs[t]
            steps.append(acc)
        deps = torch.stack(steps, dim=0)
    adv = advantages(rewards, discounts, values, bootstrap_value, gae_lambda)
    weights = cumulative_discounts(discounts)
    return (weights * (magic_box(deps) - magic_box(deps - log_probs)) * adv).sum(0)


def lvc(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """LVC: ``sum_t c_t A_t (pi_t / stop(pi_t) - 1)`` (Rothfuss et al., ProMP, ICLR 2019).

    Right first derivative; its Hessian keeps ``A_t (grad log pi_t grad log pi_t^T + hess log pi_t)``
    but drops the cross-time terms: biased, low variance (the paper's low-bias Hessian fix).

    Returns: ``[B, ...]`` per-episode surrogate.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    adv = advantages(rewards, discounts, values, bootstrap_value, gae_lambda)
    weights = cumulative_discounts(discounts)
    return (weights * adv * (magic_box(log_probs) - 1.0)).sum(0)


def pg(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """Plain policy-gradient surrogate ``sum_t c_t A_t log pi_t`` (Williams 1992; common MAML-RL code).

    Right first derivative; differentiated twice its Hessian is ``sum_t c_t A_t hess log pi_t``,
    missing the score-function outer products: the biased Hessian of Liu et al. 2022.

    Returns: ``[B, ...]`` per-episode surrogate.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    adv = advantages(rewards, discounts, values, bootstrap_value, gae_lambda)
    weights = cumulative_discounts(discounts)
    return (weights * adv * log_probs).sum(0)


def off_policy_dice(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Off-policy DiCE: ``sum_t c_t rho_{0:t} r_t``, ``rho_{0:t} = exp(W_t - W^mu_t)`` (Liu et al. 2022).

    ``W^mu_t`` sums the behaviour log-probs. Since ``E_mu[rho(theta) f] = E_pi_theta[f]`` as a
    function of theta, every derivative order is unbiased wherever mu covers pi; variance grows
    with the trajectory-level ratio. With ``values``, adds the baseline
    ``sum_t c_t (rho_{0:t-1} - rho_{0:t}) b(s_t)``, zero-mean at every order. When
    ``behaviour_log_probs`` is None the data are on-policy (``mu = stop(pi)``), i.e. DiCE.
    ``bootstrap_value`` is ignored (:func:`doubly_robust` is the same estimator with it).

    Returns: ``[B, ...]`` per-episode surrogate (value: the importance-weighted return).
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    return doubly_robust(
        log_probs, rewards, discounts, behaviour_log_probs=behaviour_log_probs, values=values
    )


def per_step_is(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """Per-decision importance-weighted policy gradient ``sum_t c_t rho_t A_t``.

    ``rho_t = exp(log pi_t - log mu_t)`` per step (Precup et al. 2000), not cumulative.

    The surrogate of off-policy actor-critics that reuse a slightly stale batch (the advantages
    come from the behaviour data; the state-distribution shift is ignored, so it is biased away
    from ``mu = pi``). At ``mu = pi`` its value is the mean advantage and its gradient is
    :func:`pg`'s. ``behaviour_log_probs`` default to ``stop(log_probs)`` (on-policy).

    Returns: ``[B, ...]`` per-episode surrogate.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    adv = advantages(rewards, discounts, values, bootstrap_value, gae_lambda)
    weights = cumulative_discounts(discounts)
    return (weights * torch.exp(log_ratios(log_probs, behaviour_log_probs)) * adv).sum(0)


# --------------------------------------------------------------------------------------------
# Derivatives of off-policy evaluation (Tang, Kozuno, Rowland, Munos, Valko, NeurIPS 2021,
# arXiv 2106.13125): an estimate V_hat(pi; data from mu) of the return of pi, differentiated at
# pi, is a gradient / Hessian estimator. Ratios rho_t = pi(a_t|s_t) / mu(a_t|s_t); on-policy data
# (behaviour_log_probs None) use mu = stop(pi), so rho_t = box(log pi_t) (value 1).
# --------------------------------------------------------------------------------------------


def log_ratios(log_probs: torch.Tensor, behaviour_log_probs: torch.Tensor | None) -> torch.Tensor:
    """Per-step ``log rho_t = log pi_t - stop(log mu_t)``, ``[T, B, ...]`` (``mu = stop(pi)`` if None)."""
    behaviour = log_probs if behaviour_log_probs is None else behaviour_log_probs
    return log_probs - stop_gradient(behaviour)


def _check_bar(name: str, value: float) -> float:
    """A truncation level: a positive finite number or ``math.inf`` (no truncation)."""
    if isinstance(value, float) and value == math.inf:
        return value
    return check_real(name, value, minimum=0.0, open_min=True)


def stepwise_is(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Step-wise importance sampling: ``V_hat = sum_t c_t rho_{0:t} r_t``, ``rho_{0:t} = prod_{k<=t} rho_k``.

    Precup, Sutton & Singh 2000 (per-decision IS); as an OPE gradient estimator Tang et al. 2021
    (arXiv 2106.13125). No critic (``values`` and ``bootstrap_value`` are ignored). On-policy its
    surrogate is :func:`dice` (every derivative equal); off-policy it is :func:`off_policy_dice`
    without a baseline. Since ``E_mu[V_hat](theta) = J(theta)`` for every theta, derivatives of
    every order are unbiased for the finite-horizon objective wherever mu covers pi.

    Args: see the module docstring (shapes ``[T, B, ...]``).
    Returns: ``[B, ...]`` per-episode estimate of the return of pi.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    return doubly_robust(log_probs, rewards, discounts, behaviour_log_probs=behaviour_log_probs)


def doubly_robust(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Doubly robust OPE: ``v_t = V_t + rho_t (r_t + gamma_t v_{t+1} - V_t)``, ``v_T = V_T``; returns ``v_0``.

    Jiang & Li, ICML 2016 (arXiv 1511.03722); as an OPE gradient estimator Tang et al. 2021.
    Unrolled: ``sum_t c_t rho_{0:t} r_t + sum_t c_t (rho_{0:t-1} - rho_{0:t}) V_t + c_T rho_{0:T-1} V_T``
    with ``V_t = stop(values)`` (0 if None) and ``V_T = stop(bootstrap_value)`` (0 if None). The
    middle sum has zero mean at every derivative order for any critic that does not depend on
    theta, so every order is unbiased for ``E_pi[sum_{t<T} gamma^t r_t + gamma^T V_T]`` wherever
    mu covers pi (with the finite-horizon objective ``V_T = 0``). On-policy its derivatives of
    every order equal :func:`loaded_dice`'s (``lambda_ = 1``, ``gae_lambda = 1``: the surrogates
    differ by a theta-free constant); without a critic it is :func:`stepwise_is`.

    Returns: ``[B, ...]`` per-episode estimate of the return of pi.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    log_rho = log_ratios(log_probs, behaviour_log_probs)
    log_ratio = torch.cumsum(log_rho, dim=0)
    rho = torch.exp(log_ratio)
    weights = cumulative_discounts(discounts)
    surrogate = (weights * rho * rewards).sum(0)
    if values is not None:
        rho_prev = torch.exp(log_ratio - log_rho)
        surrogate = surrogate + (weights * (rho_prev - rho) * stop_gradient(values).to(rho.dtype)).sum(0)
    if bootstrap_value is not None:
        tail = weights[-1] * discounts[-1]  # c_T
        surrogate = surrogate + tail * rho[-1] * stop_gradient(bootstrap_value).to(rho.dtype)
    return surrogate


def vtrace(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
) -> torch.Tensor:
    """V-trace: ``v_t = V_t + rho'_t delta_t + gamma_t c'_t (v_{t+1} - V_{t+1})``, ``v_T = V_T``.

    Returns the estimate ``v_0``. Espeholt et al., ICML 2018 (IMPALA, arXiv 1802.01561); as an
    OPE gradient estimator Tang et al. 2021. ``delta_t = r_t + gamma_t V_{t+1} - V_t``,
    ``rho'_t = min(rho_t, rho_bar)``, ``c'_t = min(rho_t, c_bar)``; unrolled
    ``v_0 = V_0 + sum_t c_t (prod_{k<t} c'_k) rho'_t delta_t``.
    ``V_t = stop(values)``, ``V_T = stop(bootstrap_value)`` (0 if None). A truncated ratio is a
    constant (no derivative); at a tie (``rho_t = rho_bar``, e.g. on-policy data with
    ``rho_bar = 1``) the untruncated branch's derivative is taken. While no ratio exceeds the
    bars (always with ``rho_bar = c_bar = math.inf``) this is :func:`doubly_robust`, unbiased at
    every order; where truncation binds the estimate targets a policy between mu and pi: biased,
    lower variance.

    Returns: ``[B, ...]`` per-episode estimate of the return of pi.
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    rho_bar, c_bar = _check_bar("rho_bar", rho_bar), _check_bar("c_bar", c_bar)
    rho = torch.exp(log_ratios(log_probs, behaviour_log_probs))
    # clamp passes the derivative where rho <= bar (ties included) and cuts it above
    rho_t, c_t = torch.clamp(rho, max=rho_bar), torch.clamp(rho, max=c_bar)
    v = torch.zeros_like(rewards) if values is None else stop_gradient(values).to(rewards.dtype)
    boot = (
        torch.zeros_like(rewards[0])
        if bootstrap_value is None
        else stop_gradient(bootstrap_value).to(rewards.dtype)
    )
    next_v = torch.cat([v[1:], boot.unsqueeze(0)], dim=0)
    deltas = rewards + discounts * next_v - v
    traces = torch.cat([torch.ones_like(c_t[:1]), torch.cumprod(c_t[:-1], dim=0)], dim=0)
    return v[0] + (cumulative_discounts(discounts) * traces * rho_t * deltas).sum(0)


def taylor1(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """First-order expansion: ``V_hat - V^mu = sum_t c_t (rho_t - 1) A_t`` (returns the sum).

    Kakade & Langford, ICML 2002 (the surrogate of TRPO/PPO); Tang et al., ICML 2020 (TayPO,
    arXiv 2003.06259); as an OPE gradient estimator Tang et al. 2021. ``A_t`` are the advantages
    of the behaviour data (``G_t - V_t`` with ``gae_lambda = 1``; critic cut from the graph). The
    expansion is exact to first order in ``pi - mu``: at ``pi = mu`` (on-policy) the gradient is
    unbiased, and every derivative equals :func:`lvc`'s (the Hessian drops the cross-time terms:
    biased). Off-policy (``pi != mu``) it is biased at every order.

    Returns: ``[B, ...]`` per-episode surrogate (value: the estimated ``V^pi - V^mu``, 0 on-policy).
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    excess = torch.exp(log_ratios(log_probs, behaviour_log_probs)) - 1.0
    adv = advantages(rewards, discounts, values, bootstrap_value, gae_lambda)
    return (cumulative_discounts(discounts) * adv * excess).sum(0)


def taylor2(
    log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    *,
    behaviour_log_probs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    bootstrap_value: torch.Tensor | None = None,
    gae_lambda: float = 1.0,
) -> torch.Tensor:
    """Second-order expansion (TayPO-2): :func:`taylor1` ``+ sum_{k<t} c_t (rho_k - 1)(rho_t - 1) A_t``.

    Tang, Valko & Munos, ICML 2020 (TayPO-2, arXiv 2003.06259); as an OPE gradient estimator
    Tang et al. 2021. The exact expansion ``V^pi - V^mu = sum_t c_t E_mu[rho_{0:t-1} (rho_t - 1)
    Q^mu_t]`` with ``rho_{0:t-1} = prod_{k<t} (1 + (rho_k - 1))`` keeps the terms of order <= 2
    in ``rho - 1``; a term of order j has zero n-th derivative at ``pi = mu`` for n < j, so
    on-policy the gradient and the Hessian are unbiased (both equal :func:`loaded_dice`'s with
    ``lambda_ = 1``; third derivatives differ). Off-policy it is biased at every order
    (the terms of order >= 3 are missing), less so than :func:`taylor1`.

    Returns: ``[B, ...]`` per-episode surrogate (value: the estimated ``V^pi - V^mu``, 0 on-policy).
    """
    check_trajectory_inputs(log_probs, rewards, discounts, behaviour_log_probs, values, bootstrap_value)
    excess = torch.exp(log_ratios(log_probs, behaviour_log_probs)) - 1.0
    earlier = torch.cumsum(excess, dim=0) - excess  # sum_{k<t} (rho_k - 1)
    adv = advantages(rewards, discounts, values, bootstrap_value, gae_lambda)
    return (cumulative_discounts(discounts) * adv * excess * (1.0 + earlier)).sum(0)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimatorInfo:
    """A registered estimator: the function and what a user needs to know to pick it."""

    name: str
    fn: Estimator
    reference: str
    summary: str
    uses_critic: bool
    off_policy: bool
    unbiased_orders: str
    params: tuple[str, ...] = ()  # its keyword parameters beyond the shared signature


_SHARED_PARAMETERS = (
    "log_probs",
    "rewards",
    "discounts",
    "behaviour_log_probs",
    "values",
    "bootstrap_value",
)


ESTIMATORS: dict[str, EstimatorInfo] = {}


def register_estimator(
    name: str,
    fn: Estimator,
    *,
    reference: str,
    summary: str,
    uses_critic: bool = False,
    off_policy: bool = False,
    unbiased_orders: str = "unknown",
    overwrite: bool = False,
) -> EstimatorInfo:
    """Add ``fn`` (with the shared estimator signature) to :data:`ESTIMATORS` under ``name``."""
    if not isinstance(name, str) or not name.isidentifier() or name == "exact":
        raise ValueError(f"name: expected an identifier other than 'exact', got {name!r}")
    if name in ESTIMATORS and not overwrite:
        raise ValueError(f"name: estimator {name!r} is already registered (pass overwrite=True)")
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
    params = tuple(p for p in inspect.signature(fn).parameters if p not in _SHARED_PARAMETERS)
    info = EstimatorInfo(name, fn, reference, summary, uses_critic, off_policy, unbiased_orders, params)
    ESTIMATORS[name] = info
    return info


def get_estimator(name: str) -> EstimatorInfo:
    """Look up a registered estimator; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in ESTIMATORS:
        raise ValueError(f"estimator: unknown name {name!r}; known: {sorted(ESTIMATORS)} (or 'exact')")
    return ESTIMATORS[name]


register_estimator(
    "dice",
    dice,
    reference="Foerster et al., ICML 2018 (arXiv 1802.05098)",
    summary="magic box over cumulative log-probs, no baseline",
    unbiased_orders="all",
)
register_estimator(
    "dice_baseline",
    dice_baseline,
    reference="Mao et al., ICML 2019 (baseline for any-order estimators); LOLA-DiCE",
    summary="DiCE + (1 - box(log pi_t)) b(s_t) baseline term",
    uses_critic=True,
    unbiased_orders="all",
)
register_estimator(
    "loaded_dice",
    loaded_dice,
    reference="Farquhar et al., NeurIPS 2019 (Loaded DiCE)",
    summary="critic-weighted DiCE with lambda-discounted dependencies",
    uses_critic=True,
    unbiased_orders="all (lambda = 1, gae_lambda = 1)",
)
register_estimator(
    "lvc",
    lvc,
    reference="Rothfuss et al., ICLR 2019, ProMP (arXiv 1810.06784)",
    summary="A_t (pi/stop(pi) - 1): low-variance curvature, drops cross-time Hessian terms",
    uses_critic=True,
    unbiased_orders="first",
)
register_estimator(
    "pg",
    pg,
    reference="Williams 1992; the surrogate of common MAML-RL code (Finn et al. 2017)",
    summary="A_t log pi_t differentiated twice: right gradient, biased Hessian",
    uses_critic=True,
    unbiased_orders="first",
)
register_estimator(
    "off_policy_dice",
    off_policy_dice,
    reference="Liu et al., NeurIPS 2022 (arXiv 2112.15400)",
    summary="importance-weighted DiCE against stored behaviour log-probs",
    uses_critic=True,
    off_policy=True,
    unbiased_orders="all (where mu covers pi)",
)
register_estimator(
    "per_step_is",
    per_step_is,
    reference="per-decision importance sampling (Precup et al. 2000), as in off-policy actor-critics",
    summary="rho_t A_t with per-step ratios against stored behaviour log-probs (first order)",
    uses_critic=True,
    off_policy=True,
    unbiased_orders="first (at mu = pi)",
)
register_estimator(
    "stepwise_is",
    stepwise_is,
    reference="Precup et al. 2000 (per-decision IS); Tang et al., NeurIPS 2021 (arXiv 2106.13125)",
    summary="sum_t c_t rho_{0:t} r_t: step-wise importance sampling, no critic (= dice on-policy)",
    off_policy=True,
    unbiased_orders="all (where mu covers pi)",
)
register_estimator(
    "doubly_robust",
    doubly_robust,
    reference="Jiang & Li, ICML 2016 (arXiv 1511.03722); Tang et al., NeurIPS 2021 (arXiv 2106.13125)",
    summary="v_t = V_t + rho_t (r_t + gamma v_{t+1} - V_t): IS + critic (= loaded_dice on-policy)",
    uses_critic=True,
    off_policy=True,
    unbiased_orders="all (where mu covers pi; critic independent of theta)",
)
register_estimator(
    "vtrace",
    vtrace,
    reference="Espeholt et al., ICML 2018 (IMPALA, arXiv 1802.01561); Tang et al., NeurIPS 2021",
    summary="v_t = V_t + min(rho_t, rho_bar) delta_t + gamma min(rho_t, c_bar) (v_{t+1} - V_{t+1})",
    uses_critic=True,
    off_policy=True,
    unbiased_orders="all while no ratio exceeds rho_bar, c_bar (= doubly_robust); biased where they bind",
)
register_estimator(
    "taylor1",
    taylor1,
    reference="Kakade & Langford, ICML 2002; Tang et al., ICML 2020 (arXiv 2003.06259); Tang et al. 2021",
    summary="sum_t c_t (rho_t - 1) A_t: first-order expansion around mu (= lvc on-policy)",
    uses_critic=True,
    off_policy=True,
    unbiased_orders="first, at pi = mu only (on-policy); Hessian biased; biased off-policy",
)
register_estimator(
    "taylor2",
    taylor2,
    reference="Tang, Valko & Munos, ICML 2020 (TayPO-2, arXiv 2003.06259); Tang et al., NeurIPS 2021",
    summary="taylor1 + sum_{k<t} c_t (rho_k - 1)(rho_t - 1) A_t: second-order expansion around mu",
    uses_critic=True,
    off_policy=True,
    unbiased_orders="first and second at pi = mu only (= loaded_dice to order 2); biased off-policy",
)
