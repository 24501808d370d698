"""Argument checks shared by the environments, estimators' recipes, benches and agents.

The bottom of the library: it imports nothing from ``metagrad``. Every failure raises
``ValueError`` naming the argument, in one of three formats:

* ``"<name>: expected an integer >= <minimum>, got <value>"`` (:func:`check_int`);
* ``"<name>: expected a finite number <range>, got <value>"`` (:func:`check_real`);
* ``"<name>: unknown <value>; known: <choices>"`` (:func:`check_choice`, for a name from a fixed
  set; the registries of :mod:`metagrad.registry` word their unknown names the same way).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

__all__ = [
    "SEED_MAX",
    "as_float64",
    "check_choice",
    "check_finite_tensor",
    "check_int",
    "check_int_fields",
    "check_real",
    "check_real_fields",
    "check_seed",
]


# Largest run seed: cells mix it into 64-bit generator seeds, and numpy's legacy seeding takes 32 bits.
SEED_MAX = 2**32 - 1


def check_int(
    name: str, value: Any, minimum: int = 1, *, maximum: int | None = None, numpy_ok: bool = False
) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum`` (and ``<= maximum``
    when given); numpy integers pass only with ``numpy_ok``."""
    types = (int, np.integer) if numpy_ok else int
    if (
        isinstance(value, bool)
        or not isinstance(value, types)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ValueError(f"{name}: expected an integer {bounds}, got {value!r}")
    return int(value)


def check_seed(name: str, value: Any) -> int:
    """A run seed: an integer in ``[0, SEED_MAX]``."""
    return check_int(name, value, 0, maximum=SEED_MAX)


def check_int_fields(obj: Any, names: Iterable[str], minimum: int = 1) -> None:
    """:func:`check_int` on each named attribute of ``obj`` (a config dataclass)."""
    for name in names:
        check_int(name, getattr(obj, name), minimum)


def _range_text(minimum: float | None, maximum: float | None, open_min: bool, open_max: bool) -> str:
    low = None if minimum is None else f"{'>' if open_min else '>='} {minimum:g}"
    high = None if maximum is None else f"{'<' if open_max else '<='} {maximum:g}"
    return " and ".join(part for part in (low, high) if part)


def check_real(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    open_min: bool = False,
    open_max: bool = False,
) -> float:
    """``value`` as a ``float`` if it is a finite real number within the bounds, else ``ValueError``.

    Booleans, strings, complex numbers, NaN and +-inf are rejected; Python and numpy integers and
    floats (and 0-d tensors) are accepted. ``open_min`` / ``open_max`` make a bound strict.
    """
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.dtype.is_complex:
        value = value.item()
    ok_type = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    number = float(value) if ok_type else math.nan
    inside = (
        ok_type
        and math.isfinite(number)
        and (minimum is None or (number > minimum if open_min else number >= minimum))
        and (maximum is None or (number < maximum if open_max else number <= maximum))
    )
    if not inside:
        bounds = _range_text(minimum, maximum, open_min, open_max)
        raise ValueError(f"{name}: expected a finite number{' ' + bounds if bounds else ''}, got {value!r}")
    return number


def check_real_fields(obj: Any, names: Iterable[str], **bounds: Any) -> None:
    """:func:`check_real` on each named attribute of ``obj`` (a config dataclass)."""
    for name in names:
        check_real(name, getattr(obj, name), **bounds)


def check_finite_tensor(name: str, x: Any) -> torch.Tensor:
    """``x`` if it is a tensor without NaN or infinite entries, else ``ValueError`` naming it."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex():
        if not torch.isfinite(x.detach()).all():
            raise ValueError(f"{name}: contains NaN or infinite entries")
    return x


def check_choice(name: str, value: Any, known: Iterable[Any], *, what: str = "", where: str = "") -> Any:
    """``value`` if it is one of ``known`` (for a tuple, list or set: if every member is), else
    ``ValueError``: ``"<name>: unknown [<what> ]<value>[ for <where>]; known: <choices>"`` (the
    unknown members of a collection, as a list)."""
    choices = tuple(known)

    def known_choice(v: Any) -> bool:  # a boolean never matches an integer choice
        return v in choices and (not isinstance(v, bool) or any(c is v for c in choices))

    if isinstance(value, (tuple, list, set, frozenset)):
        unknown = [v for v in value if not known_choice(v)]
        shown = repr(sorted(unknown, key=str)) if unknown else ""
    else:
        shown = "" if known_choice(value) else repr(value)
    if shown:
        words = " ".join(part for part in ("unknown", what, shown) if part)
        place = f" for {where}" if where else ""
        raise ValueError(f"{name}: {words}{place}; known: {', '.join(repr(c) for c in choices)}")
    return value


def as_float64(name: str, value: Any) -> torch.Tensor:
    """``value`` as a detached CPU float64 tensor; ``ValueError`` naming ``name`` if it cannot be
    converted or holds NaN or infinite entries."""
    try:
        tensor = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot be converted to a float tensor ({exc})") from exc
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name}: contains NaN or infinite entries")
    return tensor.detach().cpu()
