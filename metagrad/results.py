"""Bench cells and the loop that scores them into JSONL result rows.

A *cell* is one scored setting of a benchmark: an experiment label, an estimator label, the
recipe (a spec with ``to_dict()``), and optional tags (e.g. the kind of policy pair). Its key
hashes the recipe with the config fields that define its tasks, budget and seed
(``config.CELL_FIELDS``), never its position in the run, so a cell can be recomputed alone with
the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metagrad.provenance import config_hash, run_metadata

__all__ = ["Cell", "cell_row", "cell_seed", "run_cells"]


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


def run_cells(
    cells: list[Cell],
    run_one: Callable[[Cell], dict[str, Any]],
    out: str | Path,
    *,
    desc: str,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], float]:
    """Score ``cells`` in order, appending each row to the JSONL file ``out`` as it finishes.

    Returns the rows and the wall time in seconds.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    start = time.perf_counter()
    with (
        out.open("a", encoding="utf-8") as fh,
        tqdm(total=len(cells), disable=not progress, unit="cell", desc=desc) as bar,
    ):
        for cell in cells:
            tags = " ".join(str(v) for v in cell.tags.values())
            bar.set_postfix_str(f"{cell.experiment} {cell.estimator} {cell.spec.combination} {tags}".strip())
            row = run_one(cell)
            fh.write(json.dumps(row, default=str) + "\n")
            fh.flush()
            rows.append(row)
            bar.update(1)
    return rows, time.perf_counter() - start


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
        "config": dataclasses.asdict(config),
        **run_metadata(device),
    }
    row.update(cell.extra)
    return row
