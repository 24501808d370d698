"""The registry of benchmark suites.

Each suite is a package ``metagrad/app/suites/<name>/`` whose ``__init__`` exports one
:class:`~metagrad.app.suite.Suite` object, ``SUITE`` (README, "Adding a suite", lists the modules
to write). To add a suite, write the package and add its ``SUITE`` to the tuple below; the runner,
``metagrad bench``/``list``/``check``, the leaderboard and the report iterate this registry. A
suite defined outside the package registers itself with :func:`register_suite` (e.g. from a
module passed to ``metagrad --import``).
"""

from __future__ import annotations

from typing import Any

from metagrad.app.suite import Suite
from metagrad.app.suites import atari, ipd, tabular
from metagrad.registry import Registry

__all__ = ["SUITES", "default_runs", "get_suite", "register_suite"]

SUITES: Registry[Suite[Any]] = Registry("suite")


def register_suite(suite: Suite[Any], *, overwrite: bool = False) -> Suite[Any]:
    """Add ``suite`` to :data:`SUITES` under ``suite.name``."""
    return SUITES.register(suite.name, suite, overwrite=overwrite)


def get_suite(name: str) -> Suite[Any]:
    """The registered suite ``name``; an unknown name raises ``ValueError`` listing them."""
    return SUITES[name]


def default_runs() -> list[tuple[str, str]]:
    """``(suite, preset)`` of plain ``metagrad bench``: every suite marked ``in_default_run``."""
    return [(s.name, s.default_preset) for s in SUITES.values() if s.in_default_run]


for _suite in (tabular.SUITE, ipd.SUITE, atari.SUITE):
    register_suite(_suite)
