"""Zero-sample structural checks of a surrogate: the bugs that sampling finds late, found at once.

``lint_surrogate(fn)`` calls ``fn`` on a small deterministic on-policy batch (``[T, B] = [5, 4]``,
float64, every input a leaf so that leaks show) and returns a list of :class:`Finding`; an empty
list means clean. The checks:

* ``call`` / ``shape``: it runs and returns the per-episode surrogate ``[B, ...]`` (not per step,
  not a batch mean), also with an extra batch axis ``[T, B, 2]``, slice by slice the same;
* ``dtype`` / ``precision``: float64 in, float64 out, and not computed in float32 and cast back
  (values all exactly representable in float32);
* ``value``: the forward value is the estimate the surrogate claims: the sampled return
  ``sum_t c_t r_t`` (bootstrapped or not) for the DiCE and importance-sampling families, 0 for
  surrogates whose derivatives alone are the estimate (Loaded DiCE, LVC, the Taylor expansions);
* ``episodes``: episode b's output depends on episode b's inputs only (no batch-normalised
  advantages);
* ``critic`` / ``behaviour``: no gradient reaches ``values``, ``bootstrap_value`` or
  ``behaviour_log_probs``, from the surrogate or from its gradient (a critic updated through the
  policy loss, a ratio whose denominator is not cut);
* ``order 1`` .. ``order 3``: the gradient w.r.t. the log-probabilities is not identically zero,
  and where the estimator claims unbiased derivatives of order ``k`` (2 or 3) its ``k``-th mixed
  derivative across ``k`` different time steps is connected and not zero. The exact ``k``-th
  derivative has such cross-time terms (in a tabular MDP, blocks between different states that
  terms within one time step cannot produce), so a surrogate without them is biased at order
  ``k``: a magic box detached inside, or applied per step instead of to cumulative log-probs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from metagrad.estimators import EstimatorInfo, UnbiasedOrders, cumulative_discounts
from metagrad.seeding import torch_generator
from metagrad.testing.plugins import ResolvedEstimator, resolve_estimator

__all__ = ["FORWARD_VALUES", "Finding", "ForwardValue", "lint_surrogate"]

ForwardValue = Literal["return", "zero"] | None

# The forward value of each built-in estimator's surrogate on on-policy data: "return" (the
# sampled discounted return, with or without the bootstrap term c_T V_T), "zero" (the derivatives
# alone are the estimate), None (neither: pg's sum_t c_t A_t log pi_t, per-step IS's mean
# advantage). Estimators registered by users pass ``value=`` to lint_surrogate.
FORWARD_VALUES: dict[str, ForwardValue] = {
    "dice": "return",
    "dice_baseline": "return",
    "off_policy_dice": "return",
    "stepwise_is": "return",
    "doubly_robust": "return",
    "vtrace": "return",
    "loaded_dice": "zero",
    "lvc": "zero",
    "taylor1": "zero",
    "taylor2": "zero",
    "pg": None,
    "per_step_is": None,
}

_T, _B = 5, 4
_ZERO = 1e-10  # a derivative this small (inputs are O(1)) is zero
_CLOSE = 1e-10  # relative tolerance of the value check


@dataclass(frozen=True)
class Finding:
    """One problem :func:`lint_surrogate` found: the check's name and a one-line message."""

    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


@dataclass(frozen=True)
class _Batch:
    log_probs: torch.Tensor
    rewards: torch.Tensor
    discounts: torch.Tensor
    behaviour_log_probs: torch.Tensor
    values: torch.Tensor
    bootstrap_value: torch.Tensor

    def inputs(self) -> dict[str, torch.Tensor]:
        return {
            "behaviour_log_probs": self.behaviour_log_probs,
            "values": self.values,
            "bootstrap_value": self.bootstrap_value,
        }


def _batch(seed: int, shape: tuple[int, ...]) -> _Batch:
    """A deterministic on-policy batch of leaves (``log_probs`` of probabilities in [0.1, 0.9],
    rewards in [0.5, 1.5], gamma 0.9, critic values in [0, 1])."""
    gen = torch_generator(seed, "testing", "lint", *shape)

    def uniform(lo: float, hi: float, size: tuple[int, ...]) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(size, generator=gen, dtype=torch.float64)

    log_probs = uniform(0.1, 0.9, shape).log()
    return _Batch(
        log_probs=log_probs.requires_grad_(True),
        rewards=uniform(0.5, 1.5, shape).requires_grad_(True),
        discounts=torch.full(shape, 0.9, dtype=torch.float64),
        behaviour_log_probs=log_probs.detach().clone().requires_grad_(True),
        values=uniform(0.0, 1.0, shape).requires_grad_(True),
        bootstrap_value=uniform(0.0, 1.0, shape[1:]).requires_grad_(True),
    )


def _call(estimator: ResolvedEstimator, batch: _Batch, kwargs: dict) -> torch.Tensor:
    return estimator.fn(batch.log_probs, batch.rewards, batch.discounts, **batch.inputs(), **kwargs)


def _float32_exact(x: torch.Tensor) -> bool:
    """Every entry exactly representable in float32 (and at least one non-zero)."""
    x = x.detach()
    return bool(x.ne(0).any()) and bool((x.to(torch.float32).to(torch.float64) == x).all())


def _grad(outputs: torch.Tensor, inputs: list[torch.Tensor], create_graph: bool = False) -> list:
    """``d outputs / d inputs`` (outputs summed), None where not connected."""
    if not outputs.requires_grad:
        return [None] * len(inputs)
    return list(
        torch.autograd.grad(
            outputs.sum(), inputs, create_graph=create_graph, retain_graph=True, allow_unused=True
        )
    )


def _nonzero(g: torch.Tensor | None) -> bool:
    return g is not None and bool(g.detach().abs().gt(_ZERO).any())


def _claimed_orders(claims: UnbiasedOrders) -> list[int]:
    if claims == "all":
        return [2, 3]
    return [k for k in (2, 3) if isinstance(claims, int) and k <= claims]


def _check_value(out: torch.Tensor, batch: _Batch, value: ForwardValue) -> list[Finding]:
    r, d = batch.rewards.detach(), batch.discounts
    weights = cumulative_discounts(d)
    ret = (weights * r).sum(0)
    boot = ret + weights[-1] * d[-1] * batch.bootstrap_value.detach()
    got = out.detach().to(torch.float64)
    scale = 1.0 + ret.abs()
    if value == "return":
        gap = torch.minimum((got - ret).abs(), (got - boot).abs())
        if bool((gap > _CLOSE * scale).any()):
            return [
                Finding(
                    "value",
                    f"forward value differs from the sampled return sum_t c_t r_t by up to "
                    f"{float(gap.max()):.3g} (a magic box whose value is not 1, or a float32 step?)",
                )
            ]
    elif value == "zero" and bool((got.abs() > _CLOSE * scale).any()):
        return [
            Finding(
                "value",
                f"forward value should be 0 (the derivatives alone are the estimate), "
                f"got up to {float(got.abs().max()):.3g}",
            )
        ]
    return []


def _check_leaks(out: torch.Tensor, batch: _Batch) -> list[Finding]:
    """No gradient to the critic or the behaviour log-probs, from the surrogate or its gradient."""
    leaves = [batch.values, batch.bootstrap_value, batch.behaviour_log_probs]
    first = _grad(out, leaves)
    (g,) = _grad(out, [batch.log_probs], create_graph=True)
    direction = torch.linspace(0.5, 1.5, batch.log_probs.numel(), dtype=torch.float64)
    second = (
        _grad((g * direction.reshape(g.shape)).sum(), leaves)
        if g is not None and g.requires_grad
        else [None] * 3
    )
    findings = []
    names = ("values", "bootstrap_value", "behaviour_log_probs")
    for name, a, b in zip(names, first, second, strict=True):
        if _nonzero(a) or _nonzero(b):
            where = "the surrogate" if _nonzero(a) else "its gradient w.r.t. log_probs"
            check = "behaviour" if name == "behaviour_log_probs" else "critic"
            findings.append(
                Finding(check, f"a gradient reaches {name} through {where} (cut it with stop_gradient)")
            )
    return findings


def _check_orders(out: torch.Tensor, batch: _Batch, claims: UnbiasedOrders, seed: int) -> list[Finding]:
    """Order 1: a gradient. Order k claimed: a connected, non-zero k-th mixed derivative across
    time steps 0..k-1 (directions random over episodes, each supported on one time step)."""
    (g,) = _grad(out, [batch.log_probs], create_graph=True)
    if not _nonzero(g):
        how = "disconnected" if g is None else "identically zero"
        return [
            Finding(
                "order 1",
                f"the gradient w.r.t. log_probs is {how}: the surrogate does not depend on the "
                f"policy (a magic box detached inside?)",
            )
        ]
    findings = []
    gen = torch_generator(seed, "testing", "lint", "directions")
    derivative = g
    for k in range(2, max(_claimed_orders(claims), default=1) + 1):
        v = torch.zeros_like(batch.log_probs)
        v[k - 2] = 0.5 + torch.rand(v.shape[1:], generator=gen, dtype=torch.float64)
        projected = (derivative * v).sum()
        (nxt,) = _grad(projected, [batch.log_probs], create_graph=True)
        # the k-th mixed derivative across steps 0..k-1: project on a direction at step k - 1
        w = torch.zeros_like(batch.log_probs)
        w[k - 1] = 0.5 + torch.rand(w.shape[1:], generator=gen, dtype=torch.float64)
        mixed = None if nxt is None else (nxt * w).sum()
        if mixed is None or not bool(mixed.detach().abs() > _ZERO):
            how = "disconnected (no graph left)" if nxt is None else "zero"
            findings.append(
                Finding(
                    f"order {k}",
                    f"claims unbiased order-{k} derivatives, but its {k}-th derivative across {k} "
                    f"different time steps is {how}: the cross-time terms of the exact one are "
                    f"missing (a magic box detached inside, or over per-step log-probs?)",
                )
            )
            break
        derivative = nxt
    return findings


def _check_episodes(estimator: ResolvedEstimator, batch: _Batch, out: torch.Tensor, kwargs: dict) -> list:
    """Output b depends on episode b only: changing episode 0's inputs leaves the other outputs
    unchanged, and the Jacobian w.r.t. log_probs and rewards has no entry across episodes."""

    def shifted(x: torch.Tensor, by: float) -> torch.Tensor:
        x = x.detach().clone()
        x[:, 0] += by
        return x

    lp = shifted(batch.log_probs, -0.1)
    other = _Batch(
        lp,
        shifted(batch.rewards, 0.3),
        batch.discounts,
        lp.clone(),
        shifted(batch.values, 0.2),
        batch.bootstrap_value.detach() + 0.2 * (torch.arange(_B) == 0),
    )
    changed = _call(estimator, other, kwargs).detach()
    message = "episode {b}'s output depends on other episodes' {what} (normalised over the batch?)"
    if not torch.allclose(changed[1:], out.detach()[1:], rtol=1e-12, atol=1e-12):
        return [Finding("episodes", message.format(b="another", what="inputs"))]
    for b in range(out.shape[0]):
        grads = _grad(out[b], [batch.log_probs, batch.rewards])
        for name, g in zip(("log_probs", "rewards"), grads, strict=True):
            if g is not None and _nonzero(torch.cat([g[:, :b], g[:, b + 1 :]], dim=1)):
                return [Finding("episodes", message.format(b=b, what=name))]
    return []


def _check_batch_axes(estimator: ResolvedEstimator, seed: int, kwargs: dict) -> list[Finding]:
    """With inputs ``[T, B, 2]`` the output is ``[B, 2]`` and each slice equals the ``[T, B]`` call."""
    batch = _batch(seed, (_T, _B, 2))
    try:
        out = _call(estimator, batch, kwargs)
    except Exception as error:  # a user's function may raise anything
        return [Finding("shape", f"fails on inputs [T, B, 2] ({type(error).__name__}: {error})")]
    if not isinstance(out, torch.Tensor) or out.shape != (_B, 2):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return [
            Finding("shape", f"inputs [T, B, 2] = [{_T}, {_B}, 2] give {got}, expected [B, 2] = [{_B}, 2]")
        ]
    for j in range(2):
        part = _Batch(
            *(x.detach()[..., j].clone() for x in (batch.log_probs, batch.rewards, batch.discounts)),
            *(
                x.detach()[..., j].clone()
                for x in (batch.behaviour_log_probs, batch.values, batch.bootstrap_value)
            ),
        )
        alone = _call(estimator, part, kwargs).detach()
        if not torch.allclose(out.detach()[..., j].to(alone.dtype), alone, rtol=1e-12, atol=1e-12):
            return [Finding("shape", "with inputs [T, B, 2], slice j differs from the call on slice j alone")]
    return []


def lint_surrogate(
    fn: str | EstimatorInfo | Callable[..., torch.Tensor],
    *,
    claims_orders: UnbiasedOrders | Literal["auto"] = "auto",
    value: ForwardValue | Literal["auto"] = "auto",
    seed: int = 0,
    **kwargs,
) -> list[Finding]:
    """Structural checks of a surrogate on a small deterministic batch (see the module docstring).

    Args:
        fn: a registered name, an :class:`~metagrad.estimators.EstimatorInfo`, or a function with
            the shared estimator signature.
        claims_orders: the orders claimed unbiased (an int, ``"all"`` or None); ``"auto"``: the
            registry's ``unbiased_orders`` for a registered estimator, else None (only the
            gradient is checked).
        value: what the forward value must equal: ``"return"``, ``"zero"`` or None (unchecked);
            ``"auto"``: :data:`FORWARD_VALUES` for the built-ins, else None.
        seed: seeds the batch.
        **kwargs: passed to ``fn`` (e.g. ``rho_bar=2.0``).
    Returns:
        The findings, in the order of the checks; an empty list means clean.
    """
    estimator = resolve_estimator(fn)
    if claims_orders == "auto":
        claims_orders = estimator.info.unbiased_orders if estimator.info is not None else None
    if value == "auto":
        value = FORWARD_VALUES.get(estimator.name) if estimator.info is not None else None
    if value not in ("return", "zero", None):
        raise ValueError(f"value: expected 'return', 'zero', None or 'auto', got {value!r}")
    batch = _batch(seed, (_T, _B))
    try:
        out = _call(estimator, batch, kwargs)
    except Exception as error:  # a user's function may raise anything
        return [Finding("call", f"raised {type(error).__name__}: {error}")]
    if not isinstance(out, torch.Tensor):
        return [Finding("call", f"returned {type(out).__name__}, expected a tensor [B, ...]")]
    findings = []
    per_episode = out.shape == (_B,)
    if not per_episode:
        hint = " (per step: sum over time)" if out.shape == (_T, _B) else ""
        hint = " (a batch mean: return one value per episode)" if out.ndim == 0 else hint
        findings.append(
            Finding("shape", f"inputs [T, B] = [{_T}, {_B}] give {list(out.shape)}, expected [B]{hint}")
        )
    if out.dtype != torch.float64:
        findings.append(Finding("dtype", f"float64 inputs give a {out.dtype} output (a downcast inside?)"))
    elif out.requires_grad:
        (g,) = _grad(out, [batch.log_probs], create_graph=False)
        if _float32_exact(out) or (g is not None and _float32_exact(g)):
            findings.append(
                Finding(
                    "precision", "float64 output with float32 precision (computed in float32 and cast back?)"
                )
            )
    if per_episode:
        findings += _check_value(out, batch, value)
        findings += _check_episodes(estimator, batch, out, kwargs)
    findings += _check_leaks(out, batch)
    findings += _check_orders(out, batch, claims_orders, seed)
    if per_episode:
        findings += _check_batch_axes(estimator, seed, kwargs)
    return findings
