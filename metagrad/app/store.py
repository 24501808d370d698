"""The result store: one JSONL row per scored cell, appended atomically, keyed by ``cell_id``.

* Every row is written with a single ``write`` of one complete line to a file opened in append
  mode, then flushed to disk (``fsync``): a run killed at any moment leaves every finished row
  intact and at most one partial line at the end.
* :meth:`ResultStore.load` parses every line and validates it against the row schema
  (:class:`metagrad.app.rows.ResultRow`); a line that is not a valid row (a truncated last line
  after a kill, a corrupt or hand-edited line anywhere) is reported and ignored, never mixed in.
  :meth:`ResultStore.repair` moves a partial last line to ``<store>.corrupt`` so that appending
  can go on from a clean line boundary.
* A re-run skips the cells whose ``cell_id`` is already stored (the key hashes the cell's full
  config, so the same id means the same computation).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from metagrad.app.rows import ResultRow, RowError

__all__ = ["LoadReport", "ResultStore"]


@dataclass
class LoadReport:
    """What :meth:`ResultStore.load` found: rows by ``cell_id`` and the lines it ignored."""

    rows: dict[str, ResultRow] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    partial_tail: bool = False


class ResultStore:
    """A JSONL file of result rows (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self, *, warn: bool = True) -> LoadReport:
        """All valid rows (the last one wins for a repeated ``cell_id``) and the problems seen."""
        report = LoadReport()
        if not self.path.exists():
            return report
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        ends_clean = data.endswith(b"\n") or not data
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            last = number == len(lines)
            try:
                data = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                kind = "truncated last line" if last and not ends_clean else "corrupt line"
                report.problems.append(f"{self.path}:{number}: {kind} ignored ({exc.__class__.__name__})")
                report.partial_tail = report.partial_tail or (last and not ends_clean)
                continue
            try:
                row = ResultRow.from_json(data)
            except RowError as exc:
                report.problems.append(f"{self.path}:{number}: invalid row ignored ({exc})")
                continue
            if last and not ends_clean:
                # complete JSON without its newline: keep it, but the file needs a line break
                report.partial_tail = True
            report.rows[row.cell_id] = row
        if warn:
            for problem in report.problems:
                warnings.warn(problem, stacklevel=2)
        return report

    def repair(self) -> list[str]:
        """Make the file end at a line boundary before appending.

        A partial last line that does not parse is moved to ``<store>.corrupt``; a complete last
        row missing only its newline gets one. Returns what was done (for the log).
        """
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:  # the common case: only the last byte is read
            if fh.seek(0, os.SEEK_END) == 0:
                return []
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return []
        data = self.path.read_bytes()
        head, _, tail = data.rpartition(b"\n")
        try:
            json.loads(tail.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            with open(self.path.with_suffix(self.path.suffix + ".corrupt"), "ab") as fh:
                fh.write(tail + b"\n")
            with open(self.path, "r+b") as fh:
                fh.truncate(len(head) + 1 if head or data.startswith(b"\n") else 0)
            return [
                f"{self.path}: moved a truncated last line ({len(tail)} bytes) to {self.path.name}.corrupt"
            ]
        with open(self.path, "ab") as fh:
            fh.write(b"\n")
        return [f"{self.path}: added the missing newline after the last row"]

    def append(self, row: ResultRow) -> None:
        """Append one row atomically (one ``write`` of one line, then ``fsync``)."""
        line = (json.dumps(row.to_json(), default=str, allow_nan=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):  # pragma: no cover - a short write on a regular file
                raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)
