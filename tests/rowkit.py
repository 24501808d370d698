"""Synthetic result rows for the tests of the store, the claims and the leaderboard."""

from __future__ import annotations

import dataclasses
from typing import Any

from metagrad.app.running.rows import METRIC_FIELDS, ResultRow
from metagrad.scoring import Score

_METRIC_DEFAULTS: dict[str, Any] = {name: 0.0 for name in METRIC_FIELDS} | {
    "corr": 0.5,
    "corr_se": 0.01,
    "mse": 1.0,
    "mse_se": 0.1,
    "bias_debiased": 0.1,
    "bias_ci_low": 0.05,
    "bias_ci_high": 0.15,
    "num_tasks": 1,
    "repeats": 2,
}
assert set(_METRIC_DEFAULTS) == {f.name for f in dataclasses.fields(Score)}


def row_json(**fields: Any) -> dict[str, Any]:
    """A complete, valid stored row with ``fields`` replacing the defaults."""
    base: dict[str, Any] = {
        "cell_id": "x",
        "bench": "tabular",
        "env": "MetaGrad/TabularMDP-v0",
        "preset": "p",
        "experiment": "decomposition",
        "estimator": "dice",
        "combination": "lee",
        "n_inner": 32,
        "inner_steps": 1,
        "inner_lr": 10.0,
        "episodes_per_estimate": 32,
        "seed": 0,
        **_METRIC_DEFAULTS,
        "wall_s": 0.1,
        "spec": {},
        "cell": {"experiment": "decomposition", "estimator": "dice", "n": 0, "extra": {}, "tags": {}},
        "config": {},
        "versions": {},
        "git_commit": "test",
        "device": "cpu",
        "torch_threads": 1,
        "host": "test",
    }
    base.update(fields)
    return base


def synthetic_row(**fields: Any) -> ResultRow:
    """:func:`row_json` parsed into a :class:`ResultRow`."""
    return ResultRow.from_json(row_json(**fields))
