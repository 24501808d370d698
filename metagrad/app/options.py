"""Command-line options declared by plugins (suites and comparisons).

A plugin lists its :class:`Option` objects; the CLI adds the union of all plugins' options to its
parser and hands each plugin only the values of the options it declares, as config overrides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Option", "OptionKind", "collect_overrides", "parse_seeds", "parse_value"]

OptionKind = Literal["int", "float", "str", "names", "ints", "seeds"]


def parse_seeds(text: str, flag: str = "--seeds") -> tuple[int, ...]:
    """Run seeds from ``"0-4"``, ``"0,2,5"`` or ``"0-2,7"`` (in order, without repeats); bad
    text raises ``ValueError`` naming ``flag``."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            low, _, high = part.partition("-") if not part.startswith("-") else (part, "", "")
            first, last = int(low), int(high) if high else int(low)
            if first < 0 or last < first:
                raise ValueError(part)
            seeds += [s for s in range(first, last + 1) if s not in seeds]
    except ValueError as exc:
        raise ValueError(f"{flag}: expected e.g. 0-4 or 0,1,2 (seeds >= 0), got {text!r}") from exc
    if not seeds:
        raise ValueError(f"{flag}: no seeds in {text!r}")
    return tuple(seeds)


def parse_value(kind: OptionKind, flag: str, text: str) -> Any:
    """The value of ``--flag text``: an int, a float, a string, a comma-separated tuple of
    names (``names``) or integers (``ints``), or run seeds with ranges (``seeds``: ``0-4``,
    ``0,1,2``, :func:`parse_seeds`); bad text raises ``ValueError`` naming the flag."""
    if kind == "seeds":
        return parse_seeds(text, flag)
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "str":
            return text
        items = tuple(x.strip() for x in text.split(",") if x.strip())
        if not items:
            raise ValueError("empty list")
        return tuple(int(x) for x in items) if kind == "ints" else items
    except ValueError as exc:
        expected = {
            "int": "an integer",
            "float": "a number",
            "names": "comma-separated names",
            "ints": "comma-separated integers",
        }.get(kind, "a value")
        raise ValueError(f"{flag}: expected {expected}, got {text!r}") from exc


@dataclass(frozen=True)
class Option:
    """A plugin's command-line option ``flag`` and the config ``fields`` it sets (one value to
    each)."""

    flag: str
    fields: tuple[str, ...]
    kind: OptionKind
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def overrides(self, text: str) -> dict[str, Any]:
        value = parse_value(self.kind, self.flag, text)
        return {name: value for name in self.fields}


def collect_overrides(options: Iterable[Option], given: dict[str, str]) -> dict[str, Any]:
    """Config overrides from the values ``given`` by argparse destination (unset ones skipped)."""
    out: dict[str, Any] = {}
    for option in options:
        text = given.get(option.dest)
        if text is not None:
            out.update(option.overrides(text))
    return out
