"""The registry of ``metagrad compare`` commands (learners trained against each other).

Each comparison module exports one :class:`~metagrad.app.compare.comparison.Comparison`,
``COMPARISON``; to add one, write the module and add it to the tuple below.
"""

from __future__ import annotations

from metagrad.app.compare import atari, ipd, maml, minatar
from metagrad.app.compare.comparison import Comparison
from metagrad.registry import Registry

__all__ = ["COMPARISONS", "Comparison", "get_comparison"]

COMPARISONS: Registry[Comparison] = Registry("comparison")
for _comparison in (ipd.COMPARISON, maml.COMPARISON, atari.COMPARISON, minatar.COMPARISON):
    COMPARISONS.register(_comparison.name, _comparison)


def get_comparison(name: str) -> Comparison:
    """The registered comparison ``name``; an unknown name raises ``ValueError`` listing them."""
    return COMPARISONS[name]
