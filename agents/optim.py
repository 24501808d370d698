"""The optimiser table of the learners (MAML, LOLA): one name -> ``torch.optim`` class map."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

__all__ = ["OPTIMIZERS", "check_optimizer", "make_optimizer"]

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
}


def check_optimizer(name: str) -> str:
    """``name`` if it is in :data:`OPTIMIZERS`, else ``ValueError`` listing them."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {name!r}")
    return name


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """A fresh optimiser ``name`` over ``params`` with step size ``lr``."""
    return OPTIMIZERS[check_optimizer(name)](list(params), lr=lr)
