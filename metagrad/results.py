"""Bench cells and the result rows they produce.

A *cell* is one scored setting of a benchmark: an experiment label, an estimator label, the
recipe (a spec with ``to_dict()``), and optional tags (e.g. the kind of policy pair). Its key
hashes the recipe with the config fields that define its tasks, budget and seed
(``config.CELL_FIELDS``), never its position in the run, so a cell can be recomputed alone with
the same numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metagrad.provenance import config_hash, run_metadata

__all__ = ["Cell", "cell_row", "cell_seed", "dataclass_from_dict", "write_csv", "write_jsonl"]


@dataclass(frozen=True)
class Cell:
    """One scored setting: experiment, estimator label, recipe, sample size, extra row fields
    (not part of the key) and tags (part of the key, e.g. ``{"pair_kind": "random"}``)."""

    experiment: str
    estimator: str
    spec: Any
    n: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)

    def key(self, config: Any) -> str:
        payload: dict[str, Any] = {
            "config": {name: getattr(config, name) for name in config.CELL_FIELDS},
            "experiment": self.experiment,
            "spec": self.spec.to_dict(),
        }
        if self.tags:
            payload["tags"] = self.tags
        return config_hash(payload)


def cell_seed(config: Any, cell: Cell) -> int:
    """The seed of a cell's randomness: its key mixed with the run seed."""
    return int(cell.key(config), 16) % (2**62) + config.seed


def cell_row(
    bench: str,
    config: Any,
    cell: Cell,
    metrics: dict[str, Any],
    fields: dict[str, Any],
    *,
    wall_s: float,
    device: str,
) -> dict[str, Any]:
    """The result row of a scored cell: identity, stage recipe, bench-specific ``fields``,
    metrics, then provenance (spec, full config, versions, commit, device, wall time)."""
    spec = cell.spec
    row: dict[str, Any] = {
        "cell_id": cell.key(config),
        "bench": bench,
        "env": config.env,
        "preset": config.preset,
        "experiment": cell.experiment,
        "estimator": cell.estimator,
        **cell.tags,
        "combination": spec.combination,
        "inner": spec.inner.estimator,
        "hessian": spec.hessian.estimator,
        "outer": spec.outer.estimator,
        "n_inner": spec.inner.n,
        "n_hessian": spec.hessian.n,
        "n_outer": spec.outer.n,
        **fields,
        "repeats": config.repeats,
        "seed": config.seed,
        **metrics,
        "wall_s": wall_s,
        "spec": spec.to_dict(),
        "cell": {
            "experiment": cell.experiment,
            "estimator": cell.estimator,
            "n": cell.n,
            "extra": cell.extra,
            "tags": cell.tags,
        },
        "config": dataclasses.asdict(config),
        **run_metadata(device),
    }
    row.update(cell.extra)
    return row


def dataclass_from_dict(cls: type, data: dict[str, Any], nested: dict[str, type] | None = None) -> Any:
    """Rebuild a (frozen) config or spec dataclass from its ``dataclasses.asdict`` form.

    Lists become tuples (JSON has no tuples), recursively; ``nested`` maps field names to the
    dataclasses of nested fields (e.g. ``{"inner": StageSpec}``). Unknown keys raise.
    """
    nested = nested or {}
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")

    def convert(value: Any) -> Any:
        if isinstance(value, list):
            return tuple(convert(v) for v in value)
        return value

    kwargs = {}
    for key, value in data.items():
        if key in nested and isinstance(value, dict):
            kwargs[key] = dataclass_from_dict(nested[key], value)
        else:
            kwargs[key] = convert(value)
    return cls(**kwargs)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """``rows`` as a JSON-lines file (replacing it); non-JSON values are written as strings."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=str) + "\n")
    return path


def write_csv(path: str | Path, header: list[str], records: Iterable[list[Any]]) -> Path:
    """A CSV file with ``header`` and one line per record (replacing it)."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(records)
    return path
