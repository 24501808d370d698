"""What a benchmark suite is: its cells, the suite object every suite module exports, and the
pieces every suite shares (cell keys and seeds, row building, rebuilding a cell from a row).

A *cell* is one scored setting of a suite: an experiment label, an estimator label, the recipe
(a spec with ``to_dict()``), and optional tags (e.g. the kind of policy pair). Its key hashes the
recipe with the config fields that define its tasks, budget and seed (``config.CELL_FIELDS``),
never its position in the run, so a cell can be recomputed alone with the same numbers.

**Common random numbers.** A cell's randomness is seeded from its *setting*, never from its
estimator (:attr:`Cell.pairing`, :attr:`Cell.seed`): the recipe with every field that names the
estimator (``estimator``, its ``params``, ``replay``, ``critic``: :data:`ESTIMATOR_FIELDS`) blanked,
plus the config fields, tags and repeats. Every estimator scored on one setting therefore sees the
same tasks, trajectories and critic noise (the library splits one generator into independent
streams, :class:`metagrad.decomposed.RandomStreams`, so what one estimator draws and another does
not never shifts the shared draws), and the same function registered under two names scores
bit-identically. A cell's key, pairing key and seed are computed once, where the cell is made
(:meth:`Cell.bind`, called by every suite's ``make_cells``), from :mod:`metagrad.seeding`. Rows
record the pairing key (``cell["pairing"]``) and per-task metrics (``per_task``), from which
:mod:`metagrad.app.judging.paired` computes paired differences.

A *suite* (:class:`Suite`, generic in its config type) bundles everything the runner, the CLI,
``metagrad list``, the leaderboard and the report need, under the same hook names in every suite:
presets and ``describe_preset``, ``make_cells``, ``run_cell``, ``write_figures``,
``write_summary``, ``claims``, ``cost``, ``memory_estimate``, ``prepare``, its CLI options and the
row fields that define a setting. Adding a suite is one package ``metagrad/app/suites/<name>/``
exporting ``SUITE = Suite(...)`` plus one line in :mod:`metagrad.app.suites` (README, "Adding a
suite").
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch

from metagrad.app.judging.claims import Claim
from metagrad.app.options import Option
from metagrad.app.running.memory import MemoryEstimate
from metagrad.app.running.provenance import provenance
from metagrad.app.running.rows import ResultRow
from metagrad.critics import CriticSpec
from metagrad.scoring import Score, score, task_metrics
from metagrad.seeding import cell_seed, digest
from metagrad.staged import StageSpec
from metagrad.validation import check_choice

__all__ = [
    "ESTIMATOR_FIELDS",
    "STAGED_SPEC_FIELDS",
    "BenchConfig",
    "Cell",
    "ConfigT",
    "Option",
    "Recipe",
    "Suite",
    "bind_cells",
    "common_options",
    "dataclass_from_dict",
    "install_run_state",
    "make_row",
    "run_state",
    "scored_row",
    "setting_only",
]

# The nested dataclasses of a three-stage spec (MetaGradientSpec, LolaSpec), for rebuilding it
STAGED_SPEC_FIELDS: dict[str, type] = {
    "inner": StageSpec,
    "hessian": StageSpec,
    "outer": StageSpec,
    "critic": CriticSpec,
}


# Recipe fields that name the estimator rather than the setting it is scored on: blanked in the
# seed of a cell (a sampled stage keeps only that it is sampled, its n and its role).
ESTIMATOR_FIELDS: tuple[str, ...] = ("estimator", "params", "replay", "critic", "mlmc")


def setting_only(recipe: Any) -> Any:
    """A recipe's plain-dict form without what names the estimator (see :data:`ESTIMATOR_FIELDS`)."""
    if isinstance(recipe, dict):
        out = {}
        for name, value in recipe.items():
            if name == "estimator":
                out[name] = "exact" if value == "exact" else "sampled"
            elif name not in ESTIMATOR_FIELDS:
                out[name] = setting_only(value)
        return out
    if isinstance(recipe, (list, tuple)):
        return [setting_only(v) for v in recipe]
    return recipe


class BenchConfig(Protocol):
    """What the runner needs of a suite's config dataclass (frozen; recorded in every row)."""

    CELL_FIELDS: ClassVar[tuple[str, ...]]
    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def preset(self) -> str: ...

    @property
    def env(self) -> str: ...

    @property
    def seed(self) -> int: ...

    @property
    def repeats(self) -> int: ...

    @property
    def experiments(self) -> tuple[str, ...]: ...


ConfigT = TypeVar("ConfigT", bound=BenchConfig)


class Recipe(Protocol):
    """A cell's recipe: a frozen spec dataclass (e.g. a :class:`~metagrad.decomposed.StagedSpec`)
    whose plain-dict form goes into the cell key and the row."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Cell:
    """One scored setting: experiment, estimator label, recipe, sample size, extra row fields
    (not part of the key), tags (part of the key, e.g. ``{"pair_kind": "random"}``), the
    estimates per task (``repeats``; 0: the config's) and the number of tasks (``tasks``; 0: the
    config's; a suite's tasks are the same for every count, so a cell with fewer tasks scores the
    first ones of a cell with more).

    ``key`` (the cell's identity), ``pairing`` (the key of its setting) and ``seed`` (of its
    random numbers) are computed once, by :meth:`bind`, where the cell is made; a suite's
    ``make_cells`` returns bound cells, and a copy with other fields (``dataclasses.replace``)
    must be bound again."""

    experiment: str
    estimator: str
    spec: Recipe
    n: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    repeats: int = 0
    tasks: int = 0
    # set by bind() only: a copy made with dataclasses.replace is unbound again (never stale)
    key: str = field(default="", init=False)
    pairing: str = field(default="", init=False)
    seed: int = field(default=-1, init=False)

    def _payload(self, config: BenchConfig, spec: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "config": {name: getattr(config, name) for name in config.CELL_FIELDS},
            "spec": spec,
        }
        if self.tags:
            payload["tags"] = self.tags
        if self.repeats:
            payload["repeats"] = self.repeats
        if self.tasks:
            payload["tasks"] = self.tasks
        return payload

    def bind(self, config: BenchConfig) -> Cell:
        """This cell with its ``key`` (config fields, experiment, recipe, tags, repeats), its
        ``pairing`` key (the same without the experiment and with the recipe's estimator blanked,
        :func:`setting_only`: cells with the same pairing key share their random numbers) and its
        ``seed`` (:func:`metagrad.seeding.cell_seed` of the pairing key and the run seed)."""
        recipe = self.spec.to_dict()
        key = digest({**self._payload(config, recipe), "experiment": self.experiment})
        pairing = digest(self._payload(config, setting_only(recipe)))
        cell = dataclasses.replace(self)
        object.__setattr__(cell, "key", key)
        object.__setattr__(cell, "pairing", pairing)
        object.__setattr__(cell, "seed", cell_seed(config.seed, pairing))
        return cell

    @property
    def bound(self) -> bool:
        """Whether :meth:`bind` gave the cell its key, pairing key and seed."""
        return bool(self.key)

    def estimates(self, config: BenchConfig) -> int:
        """Estimates per task: ``repeats`` or the config's."""
        return self.repeats or config.repeats

    def num_tasks(self, config: Any) -> int:
        """Tasks scored: ``tasks`` or the config's ``num_tasks``."""
        return self.tasks or int(config.num_tasks)

    def describe(self) -> dict[str, Any]:
        """The cell's own description in a row (with the config, enough to rebuild it)."""
        if not self.bound:
            raise ValueError(f"cell {self.experiment}/{self.estimator}: not bound to a config (Cell.bind)")
        return {
            "experiment": self.experiment,
            "estimator": self.estimator,
            "n": self.n,
            "extra": dict(self.extra),
            "tags": dict(self.tags),
            "repeats": self.repeats,
            "tasks": self.tasks,
            "pairing": self.pairing,
        }


def bind_cells(config: BenchConfig, cells: list[Cell]) -> list[Cell]:
    """``cells`` bound to ``config`` (:meth:`Cell.bind`), in order: the end of every ``make_cells``."""
    return [cell.bind(config) for cell in cells]


_RUN_STATE: dict[Any, Any] = {}


def run_state(key: Any, build: Callable[[], Any]) -> Any:
    """Per-run state shared by the cells of a run (``build()`` once per process, unless the
    runner has handed the value over with :func:`install_run_state`)."""
    if key not in _RUN_STATE:
        _RUN_STATE[key] = build()
    return _RUN_STATE[key]


def install_run_state(state: Mapping[Any, Any]) -> None:
    """Make ``state`` (from a suite's ``prepare``) what :func:`run_state` returns in this process."""
    _RUN_STATE.update(state)


def scored_row(
    bench: str,
    config: BenchConfig,
    cell: Cell,
    samples: torch.Tensor,
    exact: torch.Tensor,
    setting: dict[str, Any],
    *,
    episodes_per_estimate: float,
    started: float,
    device: str,
    per_task: Mapping[str, torch.Tensor] | None = None,
) -> ResultRow:
    """Score ``samples [N, R, D]`` against ``exact [N, D]`` (the bootstrap seeded from the cell's
    setting, so paired cells resample the same repeats) and build the cell's row with its
    per-task metrics (:func:`metagrad.scoring.task_metrics`, plus the suite's ``per_task``
    extras, ``[N]`` each); ``started`` is the ``time.perf_counter()`` at the cell's start."""
    metrics = score(samples, exact, generator=torch.Generator().manual_seed(cell.seed))
    tasks = {**task_metrics(samples, exact), **(per_task or {})}
    return make_row(
        bench,
        config,
        cell,
        metrics,
        setting,
        episodes_per_estimate=episodes_per_estimate,
        wall_s=time.perf_counter() - started,
        device=device,
        per_task={name: tuple(float(v) for v in values.reshape(-1)) for name, values in tasks.items()},
    )


def make_row(
    bench: str,
    config: BenchConfig,
    cell: Cell,
    metrics: Score,
    setting: dict[str, Any],
    *,
    episodes_per_estimate: float,
    wall_s: float,
    device: str,
    per_task: Mapping[str, tuple[float, ...]] | None = None,
) -> ResultRow:
    """The result row of a scored cell: identity, the suite's ``setting`` fields (with the
    cell's tags and extra fields), cost, metrics, per-task metrics, then what rebuilds it and
    provenance."""
    return ResultRow(
        cell_id=cell.key,
        bench=bench,
        env=config.env,
        preset=config.preset,
        experiment=cell.experiment,
        estimator=cell.estimator,
        setting={**cell.tags, **setting, **cell.extra},
        episodes_per_estimate=episodes_per_estimate,
        seed=config.seed,
        metrics=metrics,
        wall_s=wall_s,
        spec=cell.spec.to_dict(),
        cell=cell.describe(),
        config=dataclasses.asdict(config),
        provenance=provenance(device),
        per_task=dict(per_task or {}),
    )


def dataclass_from_dict(cls: type, data: Mapping[str, Any], nested: Mapping[str, type] | None = None) -> Any:
    """Rebuild a (frozen) config or spec dataclass from its ``dataclasses.asdict`` form.

    Lists become tuples (JSON has no tuples), recursively; ``nested`` maps field names to the
    dataclasses of nested fields (e.g. ``{"inner": StageSpec}``). Unknown keys raise.
    """
    nested = nested or {}
    check_choice(cls.__name__, tuple(data), [f.name for f in dataclasses.fields(cls) if f.init])

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


def common_options(*, estimators: tuple[str, ...] = ("estimators",)) -> tuple[Option, ...]:
    """The options every suite accepts (run seed, repeats, env, estimators, experiments)."""
    return (
        Option("--seed", ("seed",), "int", "run seed (every cell seeds itself from it and its key)"),
        Option("--repeats", ("repeats",), "int", "estimates per task / policy pair"),
        Option("--env", ("env",), "str", "environment id of the suite"),
        Option("--estimators", estimators, "names", "comma-separated estimator names"),
    )


def _no_claims(rows: list[ResultRow]) -> list[Claim]:
    return []


@dataclass(frozen=True)
class Suite(Generic[ConfigT]):
    """One benchmark family (see the module docstring), generic in its config type ``ConfigT``.

    Attributes:
        name: the CLI name (``metagrad bench NAME``) and the rows' ``bench`` field.
        summary: one line for listings.
        config_class, spec_class: the run config and the cell recipe dataclasses;
            ``spec_nested`` maps the spec's nested dataclass fields for rebuilding from a row;
            ``experiment_specs`` maps an experiment whose cells use another recipe to
            ``(spec_class, spec_nested)``.
        presets, default_preset: named configs.
        experiments: the experiment names a config may select.
        options: its ``metagrad bench`` options.
        setting_fields: row fields that, with bench, preset and experiment, define a setting
            (what the leaderboard compares estimators on).
        in_default_run: part of plain ``metagrad bench`` (with its default preset).

    Hooks (the same names in every suite; the modules of ``metagrad/app/suites/<name>/``):
        describe_preset (``config.py``): ``config -> str``, one line for ``metagrad list presets``.
        make_cells (``cells.py``): ``config -> [Cell]`` in a fixed order, bound
            (:func:`bind_cells`).
        run_cell (``run.py``): ``(config, cell, device) -> ResultRow``, callable in any process.
        prepare (``run.py``, optional): ``config -> {key: value}``, per-run state every cell of
            ``config`` reads through :func:`run_state` (e.g. trained policy pairs): the runner
            computes it once, in its own process while the workers start, and hands it to them.
        write_figures (``figures.py``): ``(rows, folder, stem) -> [paths]``.
        write_summary (``summary.py``): ``(rows, path, seconds) -> path``.
        claims (``claims.py``): ``rows -> [Claim]``, the paper's claims this suite's rows speak to.
        cost (``cost.py``, optional): ``(config, cell) -> float``, the cell's expected compute in
            seconds, roughly (only the order across the suites of a run matters): the runner
            starts the longest cells first. ``None``: unknown (run first).
        memory_estimate (``cost.py``, optional): ``(config, cell) -> MemoryEstimate`` of a cell's
            peak memory, checked before a run starts (None: not estimated).
    """

    name: str
    summary: str
    config_class: type[ConfigT]
    spec_class: type
    presets: Mapping[str, ConfigT]
    default_preset: str
    experiments: tuple[str, ...]
    make_cells: Callable[[ConfigT], list[Cell]]
    run_cell: Callable[[ConfigT, Cell, str], ResultRow]
    write_figures: Callable[[list[ResultRow], Path, str], list[Path]]
    write_summary: Callable[[list[ResultRow], Path, float | None], Path]
    options: tuple[Option, ...]
    setting_fields: tuple[str, ...]
    describe_preset: Callable[[ConfigT], str]
    claims: Callable[[list[ResultRow]], list[Claim]] = _no_claims
    spec_nested: Mapping[str, type] = field(default_factory=dict)
    in_default_run: bool = False
    experiment_specs: Mapping[str, tuple[type, Mapping[str, type]]] = field(default_factory=dict)
    memory_estimate: Callable[[ConfigT, Cell], MemoryEstimate] | None = None
    cost: Callable[[ConfigT, Cell], float] | None = None
    prepare: Callable[[ConfigT], dict[Any, Any]] | None = None

    def __post_init__(self) -> None:
        check_choice("default_preset", self.default_preset, self.presets, where=self.name)

    def config(self, preset: str | None = None, **overrides: Any) -> ConfigT:
        """A run config: ``preset`` (default: the suite's) with ``overrides`` (validated)."""
        preset = preset or self.default_preset
        check_choice("preset", preset, self.presets, what="preset", where=self.name)
        return dataclasses.replace(self.presets[preset], **overrides)

    def option(self, dest: str) -> Option | None:
        """This suite's option with argparse destination ``dest`` (None if it has none)."""
        return next((o for o in self.options if o.dest == dest), None)

    def rebuild(self, row: ResultRow) -> tuple[ConfigT, Cell]:
        """``(config, cell)`` that reproduce a stored row (checked against its ``cell_id``)."""
        config = dataclass_from_dict(self.config_class, row.config)
        spec_class, nested = self.experiment_specs.get(row.experiment, (self.spec_class, self.spec_nested))
        spec = dataclass_from_dict(spec_class, row.spec, nested)
        desc = row.cell
        cell = Cell(
            desc["experiment"],
            desc["estimator"],
            spec,
            desc["n"],
            dict(desc["extra"]),
            dict(desc["tags"]),
            int(desc.get("repeats", 0)),
            int(desc.get("tasks", 0)),
        ).bind(config)
        if cell.key != row.cell_id:
            raise ValueError(f"row {row.cell_id}: the rebuilt cell hashes to {cell.key}")
        return config, cell
