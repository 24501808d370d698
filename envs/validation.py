"""Argument checks shared by the environments, estimators' recipes, benches and agents.

Every failure raises ``ValueError`` naming the argument, in one format:
``"<name>: expected an integer >= <minimum>, got <value>"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["check_int", "check_int_fields"]


def check_int(name: str, value: Any, minimum: int = 1, *, numpy_ok: bool = False) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum``; numpy integers
    pass only with ``numpy_ok``."""
    types = (int, np.integer) if numpy_ok else int
    if isinstance(value, bool) or not isinstance(value, types) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_int_fields(obj: Any, names: Iterable[str], minimum: int = 1) -> None:
    """:func:`check_int` on each named attribute of ``obj`` (a config dataclass)."""
    for name in names:
        check_int(name, getattr(obj, name), minimum)
