"""Writing output files: every file is written to a temporary file beside it and renamed into place,
so a reader never sees a half-written table, plot or JSONL file, and a failed write leaves none.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["write_bytes_atomic", "write_csv", "write_jsonl", "write_text_atomic"]


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """``rows`` as a JSON-lines file (replacing it); non-JSON values are written as strings and
    non-finite floats as ``null`` (strict JSON: no bare NaN or Infinity)."""
    lines = [json.dumps(_finite_or_null(row), default=str, allow_nan=False) for row in rows]
    return write_text_atomic(path, "".join(line + "\n" for line in lines))


def write_csv(path: str | Path, header: list[str], records: Iterable[list[Any]]) -> Path:
    """A CSV file with ``header`` and one line per record (replacing it)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(records)
    return write_text_atomic(path, buffer.getvalue())


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value
