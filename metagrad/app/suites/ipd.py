"""The ``ipd`` suite (``metagrad bench ipd``): LOLA gradient estimators scored against the exact
LOLA gradient.

A run is a list of *cells*; a cell is one LOLA recipe (:class:`~metagrad.lola.LolaSpec`) on one
kind of policy pair, scored over ``num_pairs`` pairs x ``repeats`` estimates against
:func:`metagrad.exact.lola_gradient` on the same horizon and discount as the samples.

Policy pairs:

* ``random``: both agents' logits ~ N(0, 1); the earlier (behaviour) pair for replayed episodes is
  the pair shifted by ``behaviour_shift * N(0, 1)`` (a policy one small update earlier);
* ``trained``: the pair after ``train_iterations`` simultaneous exact-LOLA updates from a random
  start (Adam, lr 0.1, lookahead ``train_lookahead_lr``); the behaviour pair is the one
  ``behaviour_lag`` updates earlier on the same run;
* ``run``: the official off-policy protocol (Theoretical-GMRL ``lola/lola_dice_off_policy.py``):
  ``num_pairs`` points spread along one training run of ``run_iterations`` simultaneous
  off-policy LOLA-DiCE updates from zero logits (lookahead 0.3, 128 + 128 episodes, Adam 0.1),
  each with the official FIFO buffer of 1024 episodes: the 128 fresh ones and 896 replayed from
  the earlier pairs that filled it (two batches of 128 per update, one per agent's lookahead, the
  buffer first filled at the zero logits).

Experiments:

* ``decomposition``: each estimator on the 7 exact/sampled stage combinations (the ``lle`` row
  is "the outer gradient made exact");
* ``sweep_n``: the fully sampled practical LOLA-DiCE (shared lookahead batch) against the batch n;
* ``sweep_lr``, ``sweep_steps``: compositional bias (lookahead sampled, rest exact) against the
  lookahead step size and number of lookahead steps;
* ``off_policy``: the off-policy fix of Liu et al. 2022 disentangled, at the official protocol
  (``run`` pairs, lookahead 0.3, n = 128, replay 896), every variant on the same fresh episodes:
  the lookahead by ``dice_baseline`` (LOLA-DiCE: baseline ``(1 - box(log pi_t)) b``), by
  ``off_policy_dice`` without replay (its cumulative baseline ``(rho_{t-1} - rho_t) b``), by
  ``off_policy_dice`` with the replayed buffer, and without any baseline, by ``dice`` on-policy and
  ``off_policy_dice`` with the buffer (the official code's own pattern: its value tables regress on
  the immediate rewards, a baseline of about -1..-3 against returns of about -25..-50, which these
  rows approximate by none). Each variant with the outer gradient exact ('lle', the lookahead
  alone) and sampled with 128 episodes ('lll').
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from metagrad.agents.lola import GameConfig, LearnerConfig, play
from metagrad.app.claims import ipd_claims, power_law_exponent
from metagrad.app.memory import MemoryEstimate, staged_estimate
from metagrad.app.options import Option
from metagrad.app.outputs import write_text_atomic
from metagrad.app.plotting import human, series_panel
from metagrad.app.rows import ResultRow, stage_setting
from metagrad.app.suite import (
    STAGED_SPEC_FIELDS,
    Cell,
    Suite,
    cell_seed,
    common_options,
    run_state,
    scored_row,
)
from metagrad.critics import CriticSpec
from metagrad.envs.ipd import check_gamma, get_game
from metagrad.estimators import get_estimator
from metagrad.lola import (
    LolaSpec,
    episodes_per_lola_estimate,
    exact_lola_target,
    lola_variant,
    sample_lola_gradients,
)
from metagrad.staged import COMBINATIONS, StageSpec
from metagrad.validation import check_int, check_real, check_seed

__all__ = [
    "BASELINES",
    "EXPERIMENTS",
    "PAIR_KINDS",
    "PRESETS",
    "SUITE",
    "IPDBenchConfig",
    "fifo_buffer_updates",
    "ipd_cell_cost",
    "make_ipd_cells",
    "policy_pairs",
    "prepare_pairs",
    "run_ipd_cell",
    "training_run",
    "write_ipd_plots",
    "write_ipd_summary",
]

EXPERIMENTS = ("decomposition", "sweep_n", "sweep_lr", "sweep_steps", "off_policy")
PAIR_KINDS = ("random", "trained", "run")
BASELINES = ("per_step", "cumulative", "none")
_CELL_FIELDS = (
    "env",
    "game",
    "gamma",
    "horizon",
    "num_pairs",
    "repeats",
    "seed",
    "train_iterations",
    "train_lookahead_lr",
    "behaviour_shift",
    "behaviour_lag",
    "run_iterations",
    "off_policy_buffer",
)


@dataclass(frozen=True)
class IPDBenchConfig:
    """Everything that defines an IPD/LOLA bench run (recorded in every row)."""

    CELL_FIELDS: ClassVar[tuple[str, ...]] = _CELL_FIELDS

    preset: str = "custom"
    env: str = "MetaGrad/IPD-v0"
    game: str = "ipd"
    gamma: float = 0.96
    horizon: int = 100
    num_pairs: int = 6
    repeats: int = 16
    seed: int = 0
    pair_kinds: tuple[str, ...] = ("random", "trained")
    train_iterations: int = 50
    train_lookahead_lr: float = 0.3
    behaviour_shift: float = 0.05
    behaviour_lag: int = 1
    lookahead_lr: float = 0.3
    lookahead_steps: int = 1
    critic: str = "learned"
    critic_noise: float = 0.0
    estimators: tuple[str, ...] = ("dice_baseline", "loaded_dice", "lvc", "pg")
    combinations: tuple[str, ...] = COMBINATIONS
    n: int = 128
    sweep_variants: tuple[str, ...] = ("lola_dice", "lola_lvc")
    sweep_n: tuple[int, ...] = (16, 32, 64, 128, 256)
    sweep_lr: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    sweep_steps: tuple[int, ...] = (1, 2, 3)
    # the official off-policy protocol (lola/lola_dice_off_policy.py): lookahead 0.3, 128 + 128
    # episodes, a FIFO buffer of 1024 episodes (128 per agent's lookahead per update)
    off_policy_pair_kinds: tuple[str, ...] = ("run",)
    off_policy_n: int = 128
    off_policy_buffer: int = 1024
    off_policy_lookahead_lr: float = 0.3
    run_iterations: int = 100
    experiments: tuple[str, ...] = EXPERIMENTS

    def __post_init__(self) -> None:
        get_game(self.game)
        envs = {"MetaGrad/IPD-v0": "ipd", "MetaGrad/IMP-v0": "imp"}
        if self.env not in envs:
            raise ValueError(f"env: unknown env {self.env!r} for the ipd bench; known: {sorted(envs)}")
        if envs[self.env] != self.game:
            raise ValueError(f"env: {self.env!r} plays game {envs[self.env]!r}, but game is {self.game!r}")
        check_gamma(self.gamma)
        for name in ("horizon", "num_pairs", "n", "off_policy_n", "run_iterations"):
            check_int(name, getattr(self, name))
        check_int("off_policy_buffer", self.off_policy_buffer, 2 * self.off_policy_n)
        if self.off_policy_buffer % self.off_policy_n:
            raise ValueError(
                f"off_policy_buffer: {self.off_policy_buffer} is not a whole number of batches of "
                f"off_policy_n = {self.off_policy_n}"
            )
        check_int("repeats", self.repeats, 2)
        check_seed("seed", self.seed)
        check_int("train_iterations", self.train_iterations, 0)
        check_int("behaviour_lag", self.behaviour_lag, 0)
        check_int("lookahead_steps", self.lookahead_steps, 0)
        if self.behaviour_lag > self.train_iterations:
            raise ValueError(
                f"behaviour_lag: {self.behaviour_lag} exceeds train_iterations {self.train_iterations}"
            )
        if any(v < 1 for v in self.sweep_n):
            raise ValueError("sweep_n: sample sizes must be >= 1")
        if any(k < 0 for k in self.sweep_steps):
            raise ValueError(f"sweep_steps: lookahead steps must be >= 0, got {self.sweep_steps}")
        check_real("behaviour_shift", self.behaviour_shift, minimum=0.0)
        check_real("critic_noise", self.critic_noise, minimum=0.0)
        check_real("lookahead_lr", self.lookahead_lr)
        check_real("train_lookahead_lr", self.train_lookahead_lr)
        check_real("off_policy_lookahead_lr", self.off_policy_lookahead_lr)
        for lr in self.sweep_lr:
            check_real("sweep_lr", lr)
        CriticSpec(self.critic, self.critic_noise)
        for est in self.estimators:
            get_estimator(est)
        for variant in self.sweep_variants:
            lola_variant(variant, replay=1)
        for combo in self.combinations:
            if combo not in COMBINATIONS:
                raise ValueError(f"combinations: unknown {combo!r}; known: {COMBINATIONS}")
        for name in ("pair_kinds", "off_policy_pair_kinds"):
            for kind in getattr(self, name):
                if kind not in PAIR_KINDS:
                    raise ValueError(f"{name}: unknown {kind!r}; known: {PAIR_KINDS}")
        unknown = set(self.experiments) - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"experiments: unknown {sorted(unknown)}; known: {EXPERIMENTS}")

    @property
    def off_policy_replay(self) -> int:
        """Replayed episodes of an off-policy lookahead: the buffer less the fresh batch."""
        return self.off_policy_buffer - self.off_policy_n

    def base_spec(self, **kwargs: Any) -> dict[str, Any]:
        return dict(
            gamma=self.gamma,
            horizon=self.horizon,
            game=self.game,
            critic=CriticSpec(self.critic, self.critic_noise),
            lookahead_lr=kwargs.pop("lookahead_lr", self.lookahead_lr),
            lookahead_steps=kwargs.pop("lookahead_steps", self.lookahead_steps),
            **kwargs,
        )


PRESETS: dict[str, IPDBenchConfig] = {
    # LOLA-DiCE protocol (Foerster et al. 2018): gamma 0.96, 100-step episodes, batch 128,
    # one lookahead step of 0.3; 8 pairs x 24 repeats per cell.
    "foerster2018": IPDBenchConfig(preset="foerster2018", num_pairs=8, repeats=24),
    "quick": IPDBenchConfig(
        preset="quick",
        horizon=50,
        num_pairs=3,
        repeats=8,
        train_iterations=20,
        estimators=("dice_baseline", "lvc"),
        combinations=("eel", "ele", "lee", "lle", "lll"),
        n=64,
        sweep_variants=("lola_dice",),
        sweep_n=(16, 64),
        sweep_lr=(0.3, 1.0),
        sweep_steps=(1, 2),
        off_policy_n=32,
        off_policy_buffer=128,
        run_iterations=12,
    ),
}


def make_ipd_cells(config: IPDBenchConfig) -> list[Cell]:
    """The cells of a run, in a fixed order."""
    cells: list[Cell] = []
    for kind in config.pair_kinds:
        tag = {"pair_kind": kind}
        if "decomposition" in config.experiments:
            for est in config.estimators:
                for combo in config.combinations:
                    spec = LolaSpec.from_combination(combo, est, config.n, **config.base_spec())
                    cells.append(Cell("decomposition", est, spec, config.n, tags=tag))
        if "sweep_n" in config.experiments:
            for variant in config.sweep_variants:
                for n in config.sweep_n:
                    spec = lola_variant(variant, n, n, replay=n, **config.base_spec())
                    cells.append(Cell("sweep_n", variant, spec, n, tags=tag))
        for experiment, values, name in (
            ("sweep_lr", config.sweep_lr, "lookahead_lr"),
            ("sweep_steps", config.sweep_steps, "lookahead_steps"),
        ):
            if experiment not in config.experiments:
                continue
            for value in values:
                spec = LolaSpec.from_combination(
                    "lee", "dice_baseline", config.n, **config.base_spec(**{name: value})
                )
                cells.append(Cell(experiment, "dice_baseline", spec, config.n, tags=tag))
    if "off_policy" in config.experiments:
        cells += _off_policy_cells(config)
    return cells


def _off_policy_cells(config: IPDBenchConfig) -> list[Cell]:
    """The ``off_policy`` cells: five lookahead variants x outer exact / sampled x pair kinds."""
    n, replay = config.off_policy_n, config.off_policy_replay
    learned = CriticSpec(config.critic, config.critic_noise)
    variants = (  # label, lookahead estimator, replay, critic, baseline
        ("dice_baseline", "dice_baseline", 0, learned, "per_step"),
        ("off_policy_dice", "off_policy_dice", 0, learned, "cumulative"),
        ("off_policy_dice", "off_policy_dice", replay, learned, "cumulative"),
        ("dice", "dice", 0, CriticSpec("zero"), "none"),
        ("off_policy_dice", "off_policy_dice", replay, CriticSpec("zero"), "none"),
    )
    cells = []
    for kind in config.off_policy_pair_kinds:
        for outer in (StageSpec(), StageSpec("dice_baseline", n)):
            for label, estimator, m, critic, baseline in variants:
                look = StageSpec(estimator, n, m)
                spec = LolaSpec(
                    inner=look,
                    hessian=look,
                    outer=outer,
                    shared_lookahead=True,
                    **{**config.base_spec(lookahead_lr=config.off_policy_lookahead_lr), "critic": critic},
                )
                extra = {"replay": m, "baseline": baseline}
                cells.append(Cell("off_policy", label, spec, n, extra, {"pair_kind": kind}))
    return cells


def policy_pairs(config: IPDBenchConfig, kind: str) -> list[dict[str, torch.Tensor]]:
    """The ``num_pairs`` evaluation pairs of one kind, each with its behaviour (earlier) pair.

    Returns dicts with ``theta1, theta2`` (float64 ``[5]``) and ``mu1, mu2`` (``[5]``, or
    ``[J, 5]`` for the ``run`` kind: the pairs whose batches fill its FIFO buffer), deterministic
    in the seed.
    """
    if kind not in PAIR_KINDS:
        raise ValueError(f"pair_kind: unknown {kind!r}; known: {PAIR_KINDS}")
    if kind == "run":
        return _run_pairs(config)
    pairs = []
    for i in range(config.num_pairs):
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + i)
        t1 = torch.randn(5, generator=gen, dtype=torch.float64)
        t2 = torch.randn(5, generator=gen, dtype=torch.float64)
        if kind == "random":
            shift = config.behaviour_shift
            mu1 = t1 + shift * torch.randn(5, generator=gen, dtype=torch.float64)
            mu2 = t2 + shift * torch.randn(5, generator=gen, dtype=torch.float64)
            pairs.append({"theta1": t1, "theta2": t2, "mu1": mu1, "mu2": mu2})
            continue
        learner = LearnerConfig(
            "lola", "exact", lookahead_lr=config.train_lookahead_lr, optimizer="adam", lr=0.1
        )
        game = GameConfig(config.game, config.gamma, config.horizon)
        hist = play(learner, learner, config.train_iterations, game=game, theta1=t1, theta2=t2, seed=i)
        lag = -1 - config.behaviour_lag
        pairs.append(
            {
                "theta1": hist["path1"][-1],
                "theta2": hist["path2"][-1],
                "mu1": hist["path1"][lag],
                "mu2": hist["path2"][lag],
            }
        )
    return pairs


def training_run(config: IPDBenchConfig) -> dict[str, Any]:
    """The official protocol's training run: both agents off-policy LOLA-DiCE from zero logits
    (lookahead ``off_policy_lookahead_lr``, ``off_policy_n`` inner and outer episodes, Adam 0.1,
    the earlier inner batches of the buffer replayed), ``run_iterations`` simultaneous updates,
    seeded from the run seed; :func:`metagrad.agents.lola.play`'s history."""
    learner = LearnerConfig(
        "lola",
        "off_policy_lola_dice",
        lookahead_lr=config.off_policy_lookahead_lr,
        optimizer="adam",
        lr=0.1,
        n_inner=config.off_policy_n,
        n_outer=config.off_policy_n,
        replay_batches=config.off_policy_replay // config.off_policy_n,
    )
    game = GameConfig(config.game, config.gamma, config.horizon)
    zeros = torch.zeros(5, dtype=torch.float64)
    return play(
        learner, learner, config.run_iterations, game=game, theta1=zeros, theta2=zeros, seed=config.seed
    )


def fifo_buffer_updates(update: int, batches: int) -> list[int]:
    """The updates whose pairs played the ``batches`` replayed batches of the official FIFO
    buffer when agent 1's lookahead is computed at ``update``: each update adds one batch per
    agent (agent 2's lookahead, the one that shapes agent 1, adds its fresh batch first), so the
    buffer holds, newest first, two batches of ``update - 1``, two of ``update - 2``, ... ;
    updates before 0 are the initial fill at the zero logits (update 0)."""
    return [max(update - 1 - j // 2, 0) for j in range(batches)]


def _run_pairs(config: IPDBenchConfig) -> list[dict[str, torch.Tensor]]:
    history = _training_run(config)
    path1, path2 = torch.stack(history["path1"]), torch.stack(history["path2"])
    batches = config.off_policy_replay // config.off_policy_n
    pairs = []
    for i in range(config.num_pairs):
        update = (i + 1) * config.run_iterations // config.num_pairs
        earlier = fifo_buffer_updates(update, batches)
        pairs.append(
            {
                "theta1": path1[update],
                "theta2": path2[update],
                "mu1": path1[earlier],
                "mu2": path2[earlier],
            }
        )
    return pairs


@functools.lru_cache(maxsize=4)
def _training_run(config: IPDBenchConfig) -> dict[str, Any]:
    return training_run(config)


def _pairs(config: IPDBenchConfig, kind: str) -> list[dict[str, torch.Tensor]]:
    return run_state(("ipd_pairs", config, kind), functools.partial(policy_pairs, config, kind))


def prepare_pairs(config: IPDBenchConfig) -> dict[Any, Any]:
    """The run's policy pairs of every kind its cells use (``Suite.prepare``: trained once, by
    the runner, and handed to the workers)."""
    kinds = set(config.pair_kinds)
    if "off_policy" in config.experiments:
        kinds |= set(config.off_policy_pair_kinds)
    return {("ipd_pairs", config, kind): _pairs(config, kind) for kind in sorted(kinds)}


# An exact LOLA target and its estimate's closed-form stages cost about as much as this many
# sampled episodes per lookahead step; seconds per sampled joint step (fitted on the default
# suite's cells on the 2-core machine, one thread: only ratios matter)
_EXACT_STAGE_EPISODES = 8
_SECONDS_PER_STEP = 4.5e-7


def ipd_cell_cost(config: IPDBenchConfig, cell: Cell) -> float:
    """The cell's expected compute in seconds, roughly (``Suite.cost``: longest cells first)."""
    spec = cell.spec
    exact = (spec.lookahead_steps + 1) * sum(
        stage.is_exact for stage in (spec.inner, spec.hessian, spec.outer)
    )
    episodes = episodes_per_lola_estimate(spec) + _EXACT_STAGE_EPISODES * (exact + 1)
    return _SECONDS_PER_STEP * config.num_pairs * config.repeats * spec.horizon * episodes


def run_ipd_cell(config: IPDBenchConfig, cell: Cell, device: str = "cpu") -> ResultRow:
    """Score one cell over its policy pairs; returns its result row (config, metrics, provenance)."""
    pairs = _pairs(config, cell.tags["pair_kind"])
    spec = cell.spec
    start = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(cell_seed(config, cell))
    samples, exact = [], []
    for p in pairs:
        t1, t2 = p["theta1"].to(device), p["theta2"].to(device)
        exact.append(exact_lola_target(p["theta1"], p["theta2"], spec).cpu())
        samples.append(
            sample_lola_gradients(
                t1,
                t2,
                spec,
                config.repeats,
                generator=gen,
                behaviour=(p["mu1"].to(device), p["mu2"].to(device)),
            ).cpu()
        )
    setting = {
        **stage_setting(spec),
        "game": config.game,
        "replay": spec.inner.replay,
        "shared_lookahead": spec.shared_lookahead,
        "lookahead_steps": spec.lookahead_steps,
        "lookahead_lr": spec.lookahead_lr,
        "gamma": spec.gamma,
        "horizon": spec.horizon,
        "critic": spec.critic.kind,
    }
    return scored_row(
        "ipd",
        config,
        cell,
        torch.stack(samples),
        torch.stack(exact),
        setting,
        episodes_per_estimate=episodes_per_lola_estimate(spec),
        started=start,
        device=device,
    )


def _series(rows: list[ResultRow], experiment: str, xkey: str, kind: str) -> dict[str, list[ResultRow]]:
    out: dict[str, list[ResultRow]] = {}
    for r in rows:
        if r.experiment == experiment and r.get("pair_kind") == kind:
            label = str(r.get("combination")) if experiment == "off_policy" else r.estimator
            out.setdefault(label, []).append(r)
    return {k: sorted(v, key=lambda r: r.value(xkey)) for k, v in out.items()}


_PANELS = (
    (
        "sweep_n",
        "n_inner",
        "bias_debiased",
        "batch n (inner = outer, episodes)",
        "debiased bias (95% CI)",
        True,
    ),
    (
        "sweep_n",
        "n_inner",
        "corr",
        "batch n (inner = outer, episodes)",
        "correlation with the exact gradient",
        False,
    ),
    ("sweep_lr", "lookahead_lr", "bias_debiased", "lookahead step size", "debiased bias (95% CI)", False),
    ("sweep_steps", "lookahead_steps", "bias_debiased", "lookahead steps", "debiased bias (95% CI)", False),
)
_KIND_STYLES = ("-", "--", ":", "-.")


def write_ipd_plots(rows: list[ResultRow], folder: Path, stem: str = "ipd") -> list[Path]:
    """Figures (PNG + PDF + caption) per experiment: one line per estimator (its colour) and pair
    kind (its line style), with CIs."""
    folder = Path(folder)
    written = []
    for experiment, xkey, ykey, xlabel, ylabel, loglog in _PANELS:
        series, styles = {}, {}
        for i, kind in enumerate(PAIR_KINDS):
            for label, rs in _series(rows, experiment, xkey, kind).items():
                series[f"{human(label)} ({kind} pairs)"] = rs
                styles[f"{human(label)} ({kind} pairs)"] = _KIND_STYLES[i % len(_KIND_STYLES)]
        if series:
            written.append(
                series_panel(
                    folder / f"{stem}_{experiment}_{ykey}.png",
                    series,
                    xkey,
                    ykey,
                    xlabel=xlabel,
                    ylabel=ylabel,
                    title=f"LOLA in the IPD: {human(experiment).lower()}"
                    if experiment != "sweep_n"
                    else "LOLA in the IPD: bias vs batch size",
                    loglog=loglog,
                    reference_slope=-0.5 if loglog else None,
                    linestyles=styles,
                    notes="Line styles: pair kinds (random or trained policy pairs)."
                    + (
                        " Dashed grey: slope -1/2 reference (sampling error of n episodes)." if loglog else ""
                    ),
                )
            )
    return written


def _bias_ci(r: ResultRow) -> str:
    m = r.metrics
    return f"{m.bias_debiased:.4f} [{m.bias_ci_low:.4f}, {m.bias_ci_high:.4f}]"


def write_ipd_summary(rows: list[ResultRow], path: Path, total_seconds: float | None = None) -> Path:
    """Markdown summary: the decomposition tables (corr, corr with the outer stage exact, bias,
    variance, MSE) and each sweep, per pair kind."""
    path = Path(path)
    lines = ["# LOLA gradient estimators in the IPD", ""]
    if rows:
        r0 = rows[0]
        lines += [
            f"Preset `{r0.preset}`, game `{r0.get('game')}`, gamma {r0.get('gamma')}, horizon "
            f"{r0.get('horizon')}, critic `{r0.get('critic')}`, {r0.metrics.num_tasks} pairs x "
            f"{r0.metrics.repeats} repeats, seed {r0.seed}, commit `{r0.provenance.git_commit}`."
            + (f" Wall time {total_seconds:.1f} s." if total_seconds else ""),
            "",
        ]
    for kind in PAIR_KINDS:
        dec = [r for r in rows if r.experiment == "decomposition" and r.get("pair_kind") == kind]
        if dec:
            d0 = dec[0]
            lines += [
                f"## Decomposition, {kind} pairs (n = {d0.get('n_inner') or d0.get('n_outer')}, "
                f"lookahead {d0.get('lookahead_steps')} x {d0.get('lookahead_lr')})",
                "",
                "| estimator | corr lll | corr lle (outer exact) | bias ele (Hessian only) | bias lll [CI] "
                "| variance lll | mse lll |",
                "|---|---|---|---|---|---|---|",
            ]
            for est in dict.fromkeys(r.estimator for r in dec):
                by = {r.get("combination"): r for r in dec if r.estimator == est}

                def cell(combo: str, text: Any, by: dict = by) -> str:
                    r = by.get(combo)
                    return "-" if r is None else text(r)

                lines.append(
                    f"| {est} | {cell('lll', lambda r: f'{r.metrics.corr:.3f} ± {r.metrics.corr_se:.3f}')} "
                    f"| {cell('lle', lambda r: f'{r.metrics.corr:.3f} ± {r.metrics.corr_se:.3f}')} "
                    f"| {cell('ele', _bias_ci)} | {cell('lll', _bias_ci)} "
                    f"| {cell('lll', lambda r: f'{r.metrics.variance:.4g}')} "
                    f"| {cell('lll', lambda r: f'{r.metrics.mse:.4g}')} |"
                )
            lines.append("")
        for experiment, xkey, ykey, xlabel, _, _ in _PANELS:
            if ykey != "bias_debiased":
                continue
            series = _series(rows, experiment, xkey, kind)
            if not series:
                continue
            lines += [f"## {experiment}, {kind} pairs: debiased bias and MSE vs {xlabel}", ""]
            lines += ["| series | points (x: bias [CI], mse) | log-log slope of bias |", "|---|---|---|"]
            for label, rs in series.items():
                pts = "; ".join(
                    f"{r.value(xkey)}: {r.metrics.bias_debiased:.4g} [{r.metrics.bias_ci_low:.3g}, "
                    f"{r.metrics.bias_ci_high:.3g}], {r.metrics.mse:.3g}"
                    for r in rs
                )
                slope = power_law_exponent(
                    [r.value(xkey) for r in rs], np.asarray([r.value(ykey) for r in rs])
                )
                lines.append(f"| {label} | {pts} | {slope:.2f} |")
            lines.append("")
        lines += _off_policy_table(
            [r for r in rows if r.experiment == "off_policy" and r.get("pair_kind") == kind]
        )
    write_text_atomic(path, "\n".join(lines))
    return path


def _off_policy_table(rows: list[ResultRow]) -> list[str]:
    """The off-policy variants side by side: corr, MSE and debiased squared bias [CI], with the
    outer gradient exact ('lle', the lookahead alone) and sampled ('lll')."""
    if not rows:
        return []
    r0 = rows[0]
    lines = [
        f"## off_policy, {r0.get('pair_kind')} pairs (lookahead {r0.get('lookahead_lr')}, "
        f"n = {r0.get('n_inner')}, {r0.metrics.num_tasks} pairs x {r0.metrics.repeats} estimates): "
        "corr / MSE / squared bias [CI]",
        "",
        "| lookahead | replay | baseline | outer exact ('lle') | outer sampled ('lll') |",
        "|---|---|---|---|---|",
    ]
    by = {(r.estimator, r.get("replay"), r.get("baseline"), r.get("combination")): r for r in rows}
    for est, replay, baseline in dict.fromkeys(k[:3] for k in by):
        cells = []
        for combo in ("lle", "lll"):
            r = by.get((est, replay, baseline, combo))
            m = None if r is None else r.metrics
            cells.append(
                "-"
                if m is None
                else f"{m.corr:.3f} / {m.mse:.3g} / {m.bias_sq_debiased:.3g} "
                f"[{m.bias_ci_low**2:.2g}, {m.bias_ci_high**2:.2g}]"
            )
        lines.append(f"| {est} | {replay} | {baseline} | {cells[0]} | {cells[1]} |")
    return [*lines, ""]


def memory_estimate(config: IPDBenchConfig, cell: Cell) -> MemoryEstimate:
    """A cell's peak memory (:mod:`metagrad.app.memory`): its largest sampled stage and the
    Jacobian graphs kept for the outer gradient (the policy pairs are a few numbers each)."""
    uses_n = cell.experiment in ("decomposition", "sweep_lr", "sweep_steps")
    return staged_estimate(
        cell.spec,
        episodes=episodes_per_lola_estimate(cell.spec),
        horizon=config.horizon,
        repeats=config.repeats,
        peak_per_step=220,
        kept_per_step=65,
        fixed=config.num_pairs * 10_000,
        flags=("--n", "--repeats") if uses_n else ("--repeats",),
    )


def describe_preset(config: IPDBenchConfig) -> str:
    """One line for ``metagrad list presets``."""
    return (
        f"{config.num_pairs} pairs x {config.repeats} repeats, horizon {config.horizon}, n {config.n}, "
        f"experiments {', '.join(config.experiments)}"
    )


SUITE = Suite(
    name="ipd",
    summary="LOLA gradient estimators in the iterated Prisoner's Dilemma (Foerster et al. 2018)",
    config_class=IPDBenchConfig,
    spec_class=LolaSpec,
    spec_nested=STAGED_SPEC_FIELDS,
    presets=PRESETS,
    default_preset="foerster2018",
    experiments=EXPERIMENTS,
    make_cells=make_ipd_cells,
    score_cell=run_ipd_cell,
    write_plots=write_ipd_plots,
    write_summary=write_ipd_summary,
    claims=ipd_claims,
    options=(
        *common_options(),
        Option("--num-tasks", ("num_pairs",), "int", "policy pairs per cell"),
        Option("--n", ("n",), "int", "episodes per estimated stage (decomposition)"),
        Option("--inner-steps", ("lookahead_steps",), "int", "lookahead steps"),
    ),
    setting_fields=(
        "pair_kind",
        "combination",
        "n_inner",
        "n_hessian",
        "n_outer",
        "lookahead_steps",
        "lookahead_lr",
        "horizon",
    ),
    describe_preset=describe_preset,
    in_default_run=True,
    memory_estimate=memory_estimate,
    cost=ipd_cell_cost,
    prepare=prepare_pairs,
)
