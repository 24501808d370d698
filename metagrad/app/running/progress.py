"""Progress display: a tqdm bar on a terminal, sparse plain lines anywhere else.

A tqdm bar redraws itself with carriage returns; in a log file or a CI job that is one endless
line of hundreds of updates. :func:`progress_bar` gives the bar only when the stream is a
terminal; otherwise :class:`LineProgress` writes one line at every tenth of the work and at least
every 30 seconds while something moves, and a last line when it ends.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["LineProgress", "progress_bar"]


class LineProgress:
    """The subset of tqdm the application uses, written as sparse complete lines."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        *,
        initial: int = 0,
        unit_scale: bool = False,
        file: TextIO | None = None,
        every_fraction: float = 0.1,
        every_seconds: float = 30.0,
    ) -> None:
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.n: float = initial
        self.file = file if file is not None else sys.stderr
        self.every_fraction, self.every_seconds = every_fraction, every_seconds
        self.postfix = ""
        self._start = self._last_time = time.monotonic()
        self._last_step = self._step(initial)
        self._printed_n: float | None = None

    def _step(self, n: float) -> int:
        return int(n / self.total / self.every_fraction) if self.total else 0

    def _count(self, n: float) -> str:
        return tqdm.format_sizeof(n) if self.unit_scale else f"{n:g}"

    def _write(self) -> None:
        elapsed = time.monotonic() - self._start
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = f" [{self.postfix}]" if self.postfix else ""
        counts = f"{self._count(self.n)}/{self._count(self.total)} {self.unit}s"
        print(f"{self.desc}: {counts}{share}, {elapsed:.0f} s{post}", file=self.file, flush=True)
        self._last_time, self._printed_n = time.monotonic(), self.n

    def update(self, n: float = 1) -> None:
        self.n += n
        step = self._step(self.n)
        if step > self._last_step or time.monotonic() - self._last_time >= self.every_seconds:
            self._last_step = step
            self._write()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        if self._printed_n != self.n and self.n:
            self._write()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(
    total: int,
    desc: str,
    unit: str,
    *,
    disable: bool = False,
    initial: int = 0,
    unit_scale: bool = False,
    file: TextIO | None = None,
) -> Any:
    """A tqdm bar on a terminal, :class:`LineProgress` elsewhere (``disable``: shows nothing)."""
    stream = file if file is not None else sys.stderr
    if disable or getattr(stream, "isatty", lambda: False)():
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            unit_scale=unit_scale,
            disable=disable,
            file=stream,
        )
    return LineProgress(total, desc, unit, initial=initial, unit_scale=unit_scale, file=stream)
