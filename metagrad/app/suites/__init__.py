"""The registry of benchmark suites.

Each suite module exports one :class:`~metagrad.app.suite.Suite` object, ``SUITE``. To add a
suite, write ``metagrad/app/suites/<name>.py`` exporting ``SUITE`` and add it to the tuple
below; the runner, ``metagrad bench``/``list``/``check``, the leaderboard and the report
iterate this registry. A suite defined outside the package registers itself with
:func:`register_suite` (e.g. from a module passed to ``metagrad --import``).
"""

from __future__ import annotations

from metagrad.app.suite import Suite
from metagrad.app.suites import atari, ipd, tabular

__all__ = ["SUITES", "default_runs", "get_suite", "register_suite"]

SUITES: dict[str, Suite] = {}


def register_suite(suite: Suite, *, overwrite: bool = False) -> Suite:
    """Add ``suite`` to :data:`SUITES` under ``suite.name``."""
    if suite.name in SUITES and not overwrite:
        raise ValueError(f"suite: {suite.name!r} is already registered (pass overwrite=True)")
    SUITES[suite.name] = suite
    return suite


def get_suite(name: str) -> Suite:
    """The registered suite ``name``; an unknown name raises ``ValueError`` listing them."""
    if name not in SUITES:
        raise ValueError(f"suite: unknown {name!r}; known: {sorted(SUITES)}")
    return SUITES[name]


def default_runs() -> list[tuple[str, str]]:
    """``(suite, preset)`` of plain ``metagrad bench``: every suite marked ``in_default_run``."""
    return [(s.name, s.default_preset) for s in SUITES.values() if s.in_default_run]


for _suite in (tabular.SUITE, ipd.SUITE, atari.SUITE):
    register_suite(_suite)
