"""Float64 numerics for tests: central differences and relative errors."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["central_difference", "relative_error"]


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
