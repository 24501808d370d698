"""Shared pieces of the exact oracles: the objective conventions and argument checks.

* ``objective="finite"``: ``J = E[sum_{t<H} gamma^t r_t]`` from ``init``, exactly what a length-H
  rollout estimates (the suite's default).
* ``objective="infinite"``: ``J = init . (I - gamma P_pi)^-1 r_pi``, the convention of the papers'
  code (which compares it with length-H samples: a ``gamma^H`` mismatch kept only in the
  paper-parity preset).
* Inner updates are gradient *ascent*: ``theta_{k+1} = theta_k + alpha grad J_in(theta_k)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch

from metagrad.validation import check_choice, check_int, check_real

__all__ = [
    "OBJECTIVES",
    "Objective",
    "broadcast_shape",
    "check_objective",
    "check_steps",
    "differentiable_inner_loop",
    "float64_leaf",
]

Objective = Literal["finite", "infinite"]
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)


def check_objective(objective: str) -> None:
    check_choice("objective", objective, OBJECTIVES)


def check_steps(
    inner_steps: int, inner_lr: float, names: tuple[str, str] = ("inner_steps", "inner_lr")
) -> None:
    check_int(names[0], inner_steps, 0)
    check_real(names[1], inner_lr)


def broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of ``shapes`` (plain Python: torch.broadcast_shapes takes a slow path, with a
    first-call import, when one of them is empty)."""
    out: list[int] = []
    for shape in shapes:
        shape = tuple(shape)
        pad = len(shape) - len(out)
        out = [1] * pad + out if pad > 0 else out
        for i, n in enumerate(shape, start=len(out) - len(shape)):
            if out[i] == 1:
                out[i] = n
            elif n not in (1, out[i]):
                raise ValueError(f"shapes {shapes} do not broadcast")
    return tuple(out)


def differentiable_inner_loop(
    objective_fn: Callable[[torch.Tensor], torch.Tensor],
    theta0: torch.Tensor,
    inner_steps: int,
    inner_lr: float,
) -> torch.Tensor:
    """``theta_K`` after K exact ascent steps, keeping the graph (so d theta_K / d theta_0 exists).

    ``theta_{k+1} = theta_k + inner_lr * grad objective_fn(theta_k)``, each gradient taken with
    ``create_graph=True``. ``objective_fn`` maps ``[*G, S, A]`` to ``[*G]``; batch entries are
    independent, so the gradient of the sum is the per-entry gradient.
    """
    theta = theta0
    for _ in range(inner_steps):
        (grad,) = torch.autograd.grad(objective_fn(theta).sum(), theta, create_graph=True)
        theta = theta + inner_lr * grad
    return theta


def float64_leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float64).clone().requires_grad_(True)
