"""What a ``metagrad compare`` command is: a config class, a run function, its table and options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metagrad.app.options import Option

__all__ = ["Comparison", "seeds_option"]


@dataclass(frozen=True)
class Comparison:
    """One ``metagrad compare NAME`` command.

    Attributes:
        name, summary: CLI name and one line for the help.
        config_class: the frozen config dataclass (validates in ``__post_init__``).
        run: ``(config, out, *, device, progress) -> rows``; writes its outputs into the folder
            ``out``.
        table: the markdown table it writes into ``out`` (printed at the end).
        options: its command-line options (config overrides).
    """

    name: str
    summary: str
    config_class: type
    run: Callable[..., list[dict[str, Any]]]
    table: str
    options: tuple[Option, ...]

    def table_path(self, out: str | Path) -> Path:
        return Path(out) / self.table


def seeds_option() -> Option:
    """``--seeds 0-4`` or ``--seeds 0,1,2``: the seeds every comparison runs (ranges as in
    ``metagrad bench --seeds``)."""
    return Option("--seeds", ("seeds",), "seeds", "run seeds, e.g. 0-4 or 0,1,2")
