"""The estimator registry: each estimator's facts, stated once, on the function itself.

A built-in estimator is registered by decorating its function::

    @register_estimator(
        reference="Foerster et al., ICML 2018 (arXiv 1802.05098)",
        label="DiCE",
        formula="sum_t c_t box(W_t) r_t",
        unbiased_orders="all",
    )
    def dice(log_probs, rewards, discounts, *, behaviour_log_probs=None, values=None,
             bootstrap_value=None): ...

and a user's estimator the same way, or with the call form
``register_estimator("name", fn, reference=..., summary=...)``. Everything else that shows an
estimator (``metagrad list``, the docs' estimator table, figure names and colours, the claims'
unbiasedness rules) reads these facts from :data:`ESTIMATORS`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias, overload

import torch

from metagrad.registry import Registry

__all__ = [
    "ESTIMATORS",
    "FAMILIES",
    "SHARED_PARAMETERS",
    "Estimator",
    "EstimatorInfo",
    "UnbiasedOrders",
    "get_estimator",
    "register_estimator",
]

Estimator: TypeAlias = Callable[..., torch.Tensor]

# The highest derivative order up to which every order is unbiased: an int >= 0 (0: not even the
# gradient; 1: first order only), "all" (every order), or None (not stated).
UnbiasedOrders: TypeAlias = int | Literal["all"] | None

# Families group estimators in listings and leaderboards.
FAMILIES: tuple[str, ...] = ("score function", "off-policy evaluation", "pathwise", "zeroth order")

SHARED_PARAMETERS: tuple[str, ...] = (
    "log_probs",
    "rewards",
    "discounts",
    "behaviour_log_probs",
    "values",
    "bootstrap_value",
)

_ORDER_WORDS = {"first": 1, "second": 2, "third": 3}
_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")


def _orders(value: object) -> UnbiasedOrders:
    """``unbiased_orders`` as a typed value; the words ``"all"``, ``"first"``, ``"second"``,
    ``"unknown"`` (what earlier versions took) are accepted at the start of a string."""
    if value is None or value == "all":
        return value  # type: ignore[return-value]
    if isinstance(value, bool):
        raise ValueError(f"unbiased_orders: expected an int >= 0, 'all' or None, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"unbiased_orders: expected an int >= 0, 'all' or None, got {value!r}")
        return value
    if isinstance(value, str):
        word = value.strip().split(" ", 1)[0].rstrip(",;").lower()
        if word == "all":
            return "all"
        if word in _ORDER_WORDS:
            return _ORDER_WORDS[word]
        if word in ("unknown", "none", ""):
            return None
    raise ValueError(f"unbiased_orders: expected an int >= 0, 'all' or None, got {value!r}")


@dataclass(frozen=True)
class EstimatorInfo:
    """A registered estimator: the function and what a user needs to know to pick it.

    Attributes:
        name: registry name (an identifier).
        fn: the pure function with the shared signature (see :mod:`metagrad.estimators`).
        reference: the paper(s), authors, venue, year.
        summary: one line on what it does.
        label: the human name in tables and figures.
        formula: the per-episode surrogate in plain text.
        family: one of :data:`FAMILIES` (or a user's own word).
        color, marker: how figures draw it (``None``: a stable colour from the name).
        uses_critic: reads ``values`` / ``bootstrap_value``.
        off_policy: accepts ``behaviour_log_probs`` of another policy.
        unbiased_orders: see :data:`UnbiasedOrders`.
        unbiased_when: the condition under which ``unbiased_orders`` holds ("" if none).
        params: its keyword parameters beyond the shared signature.
    """

    name: str
    fn: Estimator
    reference: str
    summary: str
    label: str
    formula: str = ""
    family: str = "score function"
    color: str | None = None
    marker: str | None = None
    uses_critic: bool = False
    off_policy: bool = False
    unbiased_orders: UnbiasedOrders = None
    unbiased_when: str = ""
    params: tuple[str, ...] = ()

    def unbiased_at(self, order: int) -> bool | None:
        """Whether derivatives of ``order`` are unbiased (under :attr:`unbiased_when`); None: not stated."""
        if self.unbiased_orders is None:
            return None
        return self.unbiased_orders == "all" or order <= self.unbiased_orders

    @property
    def unbiasedness(self) -> str:
        """The unbiasedness fact in words, e.g. ``"every order (where mu covers pi)"``."""
        orders = self.unbiased_orders
        if orders is None:
            text = "not stated"
        elif orders == "all":
            text = "every order"
        elif orders == 0:
            text = "none"
        elif orders == 1:
            text = "first order only"
        else:
            text = f"orders 1 to {orders}"
        return f"{text} ({self.unbiased_when})" if self.unbiased_when else text


ESTIMATORS: Registry[EstimatorInfo] = Registry("estimator", reserved=("exact",))


def get_estimator(name: str) -> EstimatorInfo:
    """Look up a registered estimator; an unknown name raises ``ValueError`` listing the known ones."""
    return ESTIMATORS[name]


def _facts_section(info: EstimatorInfo) -> str:
    lines = [
        f"Registered as ``{info.name}`` ({info.label}; family: {info.family}).",
        "",
        f"Reference: {info.reference}.",
    ]
    if info.formula:
        lines.append(f"Surrogate: ``{info.formula}``.")
    lines.append(f"Unbiased derivatives: {info.unbiasedness}.")
    return "\n".join(lines)


def _document(fn: Estimator, info: EstimatorInfo) -> None:
    """Append the registered facts to ``fn``'s docstring (so the API reference shows them)."""
    doc = inspect.cleandoc(fn.__doc__ or "")
    if "Registered as ``" in doc:  # the same function under a second name keeps its first facts
        return
    section = _facts_section(info)
    try:
        fn.__doc__ = f"{doc}\n\n{section}\n" if doc else section
    except (AttributeError, TypeError):  # builtins and some callables have a read-only __doc__
        pass


@overload
def register_estimator(
    name: str | None = None,
    fn: None = None,
    *,
    reference: str,
    summary: str = "",
    label: str | None = None,
    formula: str = "",
    family: str = "score function",
    color: str | None = None,
    marker: str | None = None,
    uses_critic: bool = False,
    off_policy: bool = False,
    unbiased_orders: UnbiasedOrders | str = None,
    unbiased_when: str = "",
    overwrite: bool = False,
) -> Callable[[Estimator], Estimator]: ...


@overload
def register_estimator(
    name: str,
    fn: Estimator,
    *,
    reference: str,
    summary: str = "",
    label: str | None = None,
    formula: str = "",
    family: str = "score function",
    color: str | None = None,
    marker: str | None = None,
    uses_critic: bool = False,
    off_policy: bool = False,
    unbiased_orders: UnbiasedOrders | str = None,
    unbiased_when: str = "",
    overwrite: bool = False,
) -> EstimatorInfo: ...


def register_estimator(
    name: str | None = None,
    fn: Estimator | None = None,
    *,
    reference: str,
    summary: str = "",
    label: str | None = None,
    formula: str = "",
    family: str = "score function",
    color: str | None = None,
    marker: str | None = None,
    uses_critic: bool = False,
    off_policy: bool = False,
    unbiased_orders: UnbiasedOrders | str = None,
    unbiased_when: str = "",
    overwrite: bool = False,
) -> EstimatorInfo | Callable[[Estimator], Estimator]:
    """Add an estimator (with the shared signature) to :data:`ESTIMATORS`.

    Two forms: ``register_estimator(name, fn, reference=..., ...)`` registers ``fn`` and returns
    its :class:`EstimatorInfo`; ``@register_estimator(reference=..., ...)`` (``name`` optional,
    default the function's name) decorates a function, registers it and returns it unchanged.
    The facts are appended to the function's docstring.
    """
    if fn is None:

        def decorate(function: Estimator) -> Estimator:
            register_estimator(
                name or getattr(function, "__name__", ""),
                function,
                reference=reference,
                summary=summary,
                label=label,
                formula=formula,
                family=family,
                color=color,
                marker=marker,
                uses_critic=uses_critic,
                off_policy=off_policy,
                unbiased_orders=unbiased_orders,
                unbiased_when=unbiased_when,
                overwrite=overwrite,
            )
            return function

        return decorate
    if not isinstance(name, str) or not name.isidentifier() or name == "exact":
        raise ValueError(f"name: expected an identifier other than 'exact', got {name!r}")
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
    for field_name, text in (("reference", reference), ("summary", summary), ("formula", formula)):
        if not isinstance(text, str):
            raise ValueError(f"{field_name}: expected a string, got {type(text).__name__}")
    if label is not None and (not isinstance(label, str) or not label.strip() or len(label) > 80):
        raise ValueError(f"label: expected a non-empty string of at most 80 characters, got {label!r}")
    if color is not None and not (isinstance(color, str) and _COLOUR.fullmatch(color)):
        raise ValueError(f"color: expected a colour '#RRGGBB', got {color!r}")
    params = tuple(p for p in inspect.signature(fn).parameters if p not in SHARED_PARAMETERS)
    first_line = (inspect.getdoc(fn) or "").split("\n", 1)[0]
    info = EstimatorInfo(
        name=name,
        fn=fn,
        reference=reference,
        summary=summary or first_line,
        label=label or name,
        formula=formula,
        family=family,
        color=color,
        marker=marker,
        uses_critic=bool(uses_critic),
        off_policy=bool(off_policy),
        unbiased_orders=_orders(unbiased_orders),
        unbiased_when=unbiased_when,
        params=params,
    )
    ESTIMATORS.register(name, info, overwrite=overwrite)
    _document(fn, info)
    return info
