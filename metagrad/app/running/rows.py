"""The result-row schema: one typed row per scored cell, the only form the store, the leaderboard,
the report and ``check`` read.

A row is stored as one flat JSON object (easy to load with ``pandas.read_json(lines=True)``)::

    identity    cell_id, bench, env, preset, experiment, estimator
    setting     the suite's scalar description of the cell (stage recipe, sample sizes, sweep
                values, tags such as pair_kind): every key not named elsewhere
    cost        episodes_per_estimate (expected, for randomised budgets such as an MLMC inner stage)
    efficiency  mse_x_episodes, mse_x_episodes_se: MSE times the episodes of one estimate (the MSE
                an estimator would reach with one episode's budget if its variance fell like 1 / cost;
                lower is better), derived from the row: written to the JSON, recomputed on load
    seed        the run seed
    metrics     the fields of metagrad.scoring.Score (corr, bias_debiased, its CI, mse, ...)
    per_task    {metric: [one value per task]} (metagrad.scoring.task_metrics and suite extras):
                what paired comparisons between estimators on the same tasks are computed from
    wall_s      seconds the cell took
    structure   spec, cell, config (everything needed to recompute the cell)
    provenance  versions, git_commit, device, torch_threads, host

:meth:`ResultRow.from_json` validates a stored object against this schema (types, required keys,
finite numbers, the cell description) and raises :class:`RowError` naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metagrad.scoring import Score

__all__ = [
    "DERIVED_FIELDS",
    "METRIC_FIELDS",
    "Provenance",
    "ResultRow",
    "RowError",
    "stage_setting",
]

METRIC_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Score))
_INT_METRICS = ("num_tasks", "repeats")
_IDENTITY = ("cell_id", "bench", "env", "preset", "experiment", "estimator")
_STRUCTURE = ("spec", "cell", "config")
_PROVENANCE = ("versions", "git_commit", "device", "torch_threads", "host")
_OTHER = ("seed", "wall_s", "episodes_per_estimate")
DERIVED_FIELDS: tuple[str, ...] = ("mse_x_episodes", "mse_x_episodes_se")
_PER_TASK = "per_task"
RESERVED: frozenset[str] = frozenset(
    (*_IDENTITY, *_STRUCTURE, *_PROVENANCE, *_OTHER, *METRIC_FIELDS, *DERIVED_FIELDS, _PER_TASK)
)


class RowError(ValueError):
    """A stored object that is not a valid result row."""


@dataclass(frozen=True)
class Provenance:
    """Where and with what a row was computed."""

    versions: Mapping[str, str]
    git_commit: str
    device: str
    torch_threads: int
    host: str

    def to_json(self) -> dict[str, Any]:
        return {
            "versions": dict(self.versions),
            "git_commit": self.git_commit,
            "device": self.device,
            "torch_threads": self.torch_threads,
            "host": self.host,
        }


@dataclass(frozen=True)
class ResultRow:
    """One scored cell (see the module docstring)."""

    cell_id: str
    bench: str
    env: str
    preset: str
    experiment: str
    estimator: str
    setting: Mapping[str, Any]
    episodes_per_estimate: float
    seed: int
    metrics: Score
    wall_s: float
    spec: Mapping[str, Any]
    cell: Mapping[str, Any]
    config: Mapping[str, Any]
    provenance: Provenance
    per_task: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # metric -> [N]
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys of a newer schema, kept as is

    def get(self, name: str, default: Any = None) -> Any:
        """A setting field, or an identity field (``bench``, ``experiment``, ...) by name."""
        if name in self.setting:
            return self.setting[name]
        if name in _IDENTITY or name in _OTHER:
            return getattr(self, name)
        return default

    def value(self, name: str) -> Any:
        """A metric (``mse``, ``bias_ci_high``, ``mse_x_episodes``, ...) or, failing that,
        :meth:`get`'s field."""
        if name in METRIC_FIELDS:
            return getattr(self.metrics, name)
        if name in DERIVED_FIELDS:
            return getattr(self, name)
        return self.get(name)

    @property
    def mse_x_episodes(self) -> float:
        """Efficiency: MSE x (expected) episodes per estimate; compares a cheap biased estimator
        with an expensive unbiased one at equal cost (for an unbiased one, the MSE at a budget of
        B episodes is about ``mse_x_episodes / B``; bias does not shrink with budget)."""
        return self.metrics.mse * self.episodes_per_estimate

    @property
    def mse_x_episodes_se(self) -> float:
        return self.metrics.mse_se * self.episodes_per_estimate

    @property
    def label(self) -> str:
        """``bench/experiment/estimator/combination tags``: how messages name the cell."""
        tags = " ".join(str(v) for v in dict(self.cell.get("tags", {})).values())
        combo = self.setting.get("combination", "")
        return f"{self.bench}/{self.experiment}/{self.estimator}/{combo} {tags}".strip()

    def to_json(self) -> dict[str, Any]:
        """The flat JSON object of the store."""
        return {
            **{name: getattr(self, name) for name in _IDENTITY},
            **dict(self.setting),
            "episodes_per_estimate": self.episodes_per_estimate,
            "mse_x_episodes": self.mse_x_episodes,
            "mse_x_episodes_se": self.mse_x_episodes_se,
            "seed": self.seed,
            **self.metrics.to_dict(),
            "wall_s": self.wall_s,
            "spec": dict(self.spec),
            "cell": dict(self.cell),
            "config": dict(self.config),
            **self.provenance.to_json(),
            **({_PER_TASK: {k: list(v) for k, v in self.per_task.items()}} if self.per_task else {}),
            **dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Any) -> ResultRow:
        """Validate a stored object and build the row; :class:`RowError` names the problem."""
        if not isinstance(data, dict):
            raise RowError(f"expected a JSON object, got {type(data).__name__}")
        missing = [
            k for k in (*_IDENTITY, *_STRUCTURE, *_PROVENANCE, *_OTHER, *METRIC_FIELDS) if k not in data
        ]
        if missing:
            raise RowError(f"missing field(s) {missing}")
        for name in (*_IDENTITY, "git_commit", "device", "host"):
            if not isinstance(data[name], str) or not data[name]:
                raise RowError(f"{name}: expected a non-empty string, got {data[name]!r}")
        for name in _STRUCTURE:
            if not isinstance(data[name], dict):
                raise RowError(f"{name}: expected an object, got {type(data[name]).__name__}")
        if not isinstance(data["versions"], dict):
            raise RowError("versions: expected an object")
        _check_cell(data["cell"])
        metrics = {}
        for name in METRIC_FIELDS:
            metrics[name] = _number(name, data[name], integer=name in _INT_METRICS)
        setting = {k: v for k, v in data.items() if k not in RESERVED}
        for name, value in setting.items():
            if isinstance(value, dict) or (isinstance(value, float) and not math.isfinite(value)):
                raise RowError(f"{name}: expected a finite scalar or a list, got {value!r}")
        per_task = _per_task(data.get(_PER_TASK, {}), metrics["num_tasks"])
        return cls(
            cell_id=data["cell_id"],
            bench=data["bench"],
            env=data["env"],
            preset=data["preset"],
            experiment=data["experiment"],
            estimator=data["estimator"],
            setting=setting,
            episodes_per_estimate=_count(_number("episodes_per_estimate", data["episodes_per_estimate"])),
            seed=int(_number("seed", data["seed"], integer=True)),
            metrics=Score(**metrics),
            wall_s=_number("wall_s", data["wall_s"]),
            spec=data["spec"],
            cell=data["cell"],
            config=data["config"],
            provenance=Provenance(
                versions=data["versions"],
                git_commit=data["git_commit"],
                device=data["device"],
                torch_threads=int(_number("torch_threads", data["torch_threads"], integer=True)),
                host=data["host"],
            ),
            per_task=per_task,
        )


def _count(value: float) -> float:
    """An episode count: an int when whole (as most are), else the float (an expectation)."""
    return int(value) if float(value).is_integer() else value


def _check_cell(cell: dict[str, Any]) -> None:
    """The cell description rebuilds the cell and names it in messages: check its fields."""
    for name, kind in (("experiment", str), ("estimator", str), ("extra", dict), ("tags", dict)):
        if not isinstance(cell.get(name), kind):
            raise RowError(f"cell.{name}: expected {kind.__name__}, got {cell.get(name)!r}")
    _number("cell.n", cell.get("n"), integer=True)


def _per_task(value: Any, num_tasks: int) -> dict[str, tuple[float, ...]]:
    """Validate the ``per_task`` object: one list of ``num_tasks`` finite numbers per metric."""
    if not isinstance(value, dict):
        raise RowError(f"{_PER_TASK}: expected an object, got {type(value).__name__}")
    out = {}
    for name, values in value.items():
        if not isinstance(values, list) or len(values) != num_tasks:
            raise RowError(f"{_PER_TASK}.{name}: expected a list of {num_tasks} numbers (one per task)")
        out[name] = tuple(_number(f"{_PER_TASK}.{name}", v) for v in values)
    return out


def _number(name: str, value: Any, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowError(f"{name}: expected a number, got {value!r}")
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise RowError(f"{name}: expected an integer, got {value!r}")
    if not math.isfinite(value):
        raise RowError(f"{name}: not a finite number ({value!r})")
    return int(value) if integer else float(value)


def stage_setting(spec: Any) -> dict[str, Any]:
    """The stage fields of a row for a three-stage spec: the combination code, each stage's
    estimator and sample size."""
    return {
        "combination": spec.combination,
        "inner": spec.inner.estimator,
        "hessian": spec.hessian.estimator,
        "outer": spec.outer.estimator,
        "n_inner": spec.inner.n,
        "n_hessian": spec.hessian.n,
        "n_outer": spec.outer.n,
    }
