"""The result store: one JSONL row per scored cell, appended atomically, keyed by ``cell_id``.

* Every row is written with a single ``write`` of one complete line to a file opened in append
  mode, then flushed to disk (``fsync``): a run killed at any moment leaves every finished row
  intact and at most one partial line at the end. A write that fails or comes up short (a full
  disk, a file-size limit) is cut back to the previous line boundary before the error is raised,
  so no partial line is left behind.
* :meth:`ResultStore.load` parses every line and validates it against the row schema
  (:class:`metagrad.app.running.rows.ResultRow`); a line that is not a valid row (a truncated last line
  after a kill, a corrupt or hand-edited line anywhere) is reported and ignored, never mixed in.
  :meth:`ResultStore.repair` moves a partial last line to ``<store>.corrupt`` so that appending
  can go on from a clean line boundary.
* A re-run skips the cells whose ``cell_id`` is already stored (the key hashes the cell's full
  config, so the same id means the same computation). :meth:`ResultStore.drop` removes the rows
  of given cells (``--fresh``) by rewriting the file atomically (temporary file and rename).
* :meth:`ResultStore.lock` takes an advisory lock (``fcntl.flock``) on the sidecar file
  ``<store>.lock``: a second run on the same store is refused at once, naming the process that
  holds it. :func:`check_store_path` checks a path before any work starts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from metagrad.app.presenting.outputs import write_bytes_atomic
from metagrad.app.running.rows import ResultRow, RowError

try:  # POSIX; elsewhere the store runs without a lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LoadReport", "ResultStore", "StoreError", "StoreLocked", "check_output_path", "check_store_path"]

# Free space a run needs besides its rows: summaries, the leaderboard, the report and the plots.
_OUTPUT_BYTES = 8 << 20


class StoreError(OSError):
    """A result store or output path that cannot be used, or a write to it that failed."""


class StoreLocked(StoreError):
    """Another process holds the store's lock."""


def _describe(path: Path) -> str | None:
    """Why an existing ``path`` cannot be a file we read and replace, or None if it can."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"{path} is a dangling symbolic link (to {os.readlink(path)})" if path.is_symlink() else None
    except NotADirectoryError:
        return None  # a parent is a file: reported by the caller
    if stat.S_ISDIR(mode):
        return f"{path} is a directory, not a file"
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file (a device, a pipe or a socket)"
    return None


def _existing_folder(path: Path) -> Path:
    """The nearest existing ancestor of ``path``; StoreError if it is not a folder."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        if folder.is_symlink():
            raise StoreError(f"{folder} is a dangling symbolic link, not a folder")
        folder = folder.parent
    if not folder.is_dir():
        raise StoreError(f"{folder} is a file, not a folder: cannot create {path}")
    return folder


def check_output_path(path: str | Path, *, needed_bytes: int = 0) -> Path:
    """Check that ``path`` can be (re)written, before any work starts; returns it.

    Refuses (:class:`StoreError`, one line) a directory, a device or pipe, a dangling symbolic
    link, a parent that is a file, a folder where no file can be created (read-only, no
    permission), an existing file that cannot be read and written, and a disk with less than
    ``needed_bytes`` free. Nothing is left behind (the folder probe is a temporary file).
    """
    path = Path(path)
    problem = _describe(path)
    if problem:
        raise StoreError(problem)
    folder = _existing_folder(path)
    try:
        fd, probe = tempfile.mkstemp(prefix=".metagrad-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StoreError(f"cannot create files in {folder}: {exc.strerror or exc}") from None
    if path.exists():
        for mode, what in ((os.R_OK, "read"), (os.W_OK, "write")):
            if not os.access(path, mode):
                raise StoreError(f"cannot {what} {path}: permission denied or a read-only file system")
    if needed_bytes:
        free = shutil.disk_usage(folder).free
        if free < needed_bytes:
            raise StoreError(
                f"only {free / 2**20:.1f} MiB free in {folder}; this run needs about "
                f"{needed_bytes / 2**20:.1f} MiB for its rows and outputs"
            )
    return path


def check_store_path(path: str | Path, *, cells: int = 0) -> Path:
    """:func:`check_output_path` for a result store that will receive ``cells`` new rows (with
    the outputs written beside it)."""
    return check_output_path(path, needed_bytes=cells * 16_384 + _OUTPUT_BYTES)


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

    @property
    def lock_path(self) -> Path:
        """The sidecar file the advisory lock is taken on (left in place after a run)."""
        return self.path.with_name(self.path.name + ".lock")

    def _read(self) -> bytes:
        problem = _describe(self.path)
        if problem:
            raise StoreError(problem)
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def load(self, *, warn: bool = True) -> LoadReport:
        """All valid rows (the last one wins for a repeated ``cell_id``) and the problems seen."""
        report = LoadReport()
        data = self._read()
        lines = data.split(b"\n")
        ends_clean = data.endswith(b"\n") or not data
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            last = number == len(lines)
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                kind = "truncated last line" if last and not ends_clean else "corrupt line"
                report.problems.append(f"{self.path}:{number}: {kind} ignored ({exc.__class__.__name__})")
                report.partial_tail = report.partial_tail or (last and not ends_clean)
                continue
            try:
                row = ResultRow.from_json(obj)
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

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's advisory lock (``<store>.lock``) for the ``with`` block.

        A second holder is refused at once with :class:`StoreLocked` naming the process that
        holds it. The lock is released when the block ends or the process dies.
        """
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {self.lock_path}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StoreError(f"cannot lock {self.lock_path}: {exc.strerror or exc}") from None
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                raise StoreLocked(
                    f"{self.path} is in use by another metagrad run (pid {holder}); wait for it to finish "
                    "or pass another --store"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def repair(self) -> list[str]:
        """Make the file end at a line boundary before appending.

        A partial last line that does not parse is moved to ``<store>.corrupt``; a complete last
        row missing only its newline gets one. Returns what was done (for the log).
        """
        problem = _describe(self.path)
        if problem:
            raise StoreError(problem)
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
            aside = self.path.with_suffix(self.path.suffix + ".corrupt")
            note = f"moved a truncated last line ({len(tail)} bytes) to {aside.name}"
            try:
                with open(aside, "ab") as fh:
                    fh.write(tail + b"\n")
            except OSError as exc:  # e.g. a full disk: the partial line is dropped all the same
                note = f"dropped a truncated last line ({len(tail)} bytes; {aside.name}: {exc.strerror})"
            with open(self.path, "r+b") as fh:
                fh.truncate(len(head) + 1 if head or data.startswith(b"\n") else 0)
            return [f"{self.path}: {note}"]
        try:
            with open(self.path, "ab") as fh:
                fh.write(b"\n")
        except OSError as exc:
            raise StoreError(f"cannot write to {self.path}: {exc.strerror or exc}") from None
        return [f"{self.path}: added the missing newline after the last row"]

    def drop(self, cell_ids: Iterable[str]) -> int:
        """Remove the rows of ``cell_ids`` (every line whose ``cell_id`` is one of them) and keep
        every other line as it is; the file is rewritten atomically. Returns the lines removed."""
        ids = set(cell_ids)
        data = self._read()
        if not data:
            return 0
        kept, removed = [], 0
        for raw in data.splitlines(keepends=True):
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("cell_id"), str) and obj["cell_id"] in ids:
                removed += 1
            else:
                kept.append(raw if raw.endswith(b"\n") else raw + b"\n")
        if removed:
            try:
                write_bytes_atomic(self.path, b"".join(kept))
            except OSError as exc:
                raise StoreError(f"cannot rewrite {self.path}: {exc.strerror or exc}") from None
        return removed

    def append(self, row: ResultRow) -> None:
        """Append one row atomically (one ``write`` of one line, then ``fsync``); a failed or
        short write is cut back to the previous line boundary and raises :class:`StoreError`."""
        line = (json.dumps(row.to_json(), default=str, allow_nan=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open {self.path} for appending: {exc.strerror or exc}") from None
        try:
            start = os.fstat(fd).st_size
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
                os.fsync(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise StoreError(
                    f"cannot append to {self.path}: {exc.strerror or exc}; the file was left at its "
                    "last complete row"
                ) from None
        finally:
            os.close(fd)
