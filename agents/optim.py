"""The optimiser table of the learners (MAML, LOLA): one name -> ``torch.optim`` class registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from metagrad.registry import Registry

__all__ = ["OPTIMIZERS", "check_optimizer", "make_optimizer"]

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("sgd", torch.optim.SGD)
OPTIMIZERS.register("adam", torch.optim.Adam)


def check_optimizer(name: str) -> str:
    """``name`` if it is in :data:`OPTIMIZERS`, else the registry's ``ValueError`` listing them."""
    OPTIMIZERS[name]  # an unknown name raises here
    return name


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """A fresh optimiser ``name`` over ``params`` with step size ``lr``."""
    return OPTIMIZERS[name](list(params), lr=lr)
