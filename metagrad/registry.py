"""One registry type for every named table of the suite.

Estimators, suites, comparisons, LOLA variants and optimisers are all looked up by name. Each is a
:class:`Registry`: a read-only mapping from name to item with one way to add an entry
(:meth:`Registry.register`) and one message for an unknown name (:class:`UnknownNameError`, a
``KeyError`` and a ``ValueError`` at once, so ``mapping.get(name)`` still returns ``None`` and
command-line code that reports ``ValueError`` in one line keeps doing so).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Generic, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not in a :class:`Registry`; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(MutableMapping[str, T], Generic[T]):
    """Name -> item, in registration order (a mutable mapping whose every write is checked).

    Args:
        kind: what the items are, in the singular (``"estimator"``, ``"suite"``): it names the
            table in every message.
        reserved: names that may not be registered (e.g. ``"exact"`` for estimators), listed as
            known in the unknown-name message.
        identifiers: require names to be Python identifiers (safe in file names, tables and HTML).
    """

    def __init__(self, kind: str, *, reserved: Iterable[str] = (), identifiers: bool = True) -> None:
        self.kind = kind
        self.reserved = tuple(reserved)
        self.identifiers = identifiers
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, *, overwrite: bool = False) -> T:
        """Add ``item`` under ``name``; a taken name raises unless ``overwrite``."""
        if not isinstance(name, str) or not name or (self.identifiers and not name.isidentifier()):
            raise ValueError(f"{self.kind}: expected an identifier as the name, got {name!r}")
        if name in self.reserved:
            raise ValueError(f"{self.kind}: the name {name!r} is reserved")
        if name in self._items and not overwrite:
            raise ValueError(f"{self.kind}: {name!r} is already registered (pass overwrite=True)")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> T:
        """Remove and return the item of ``name`` (for tests and plug-ins that clean up)."""
        item = self[name]
        del self._items[name]
        return item

    def __setitem__(self, name: str, item: T) -> None:
        """``registry[name] = item``: :meth:`register` with ``overwrite=True`` (same name checks)."""
        self.register(name, item, overwrite=True)

    def __delitem__(self, name: str) -> None:
        self.unregister(name)

    def unknown(self, name: object) -> UnknownNameError:
        """The error for ``name`` not being registered (raise it)."""
        known = ", ".join(repr(n) for n in (*sorted(self._items), *self.reserved))
        return UnknownNameError(f"{self.kind}: unknown name {name!r}; known: {known}")

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._items)})"
