"""The ``atari`` suite (``metagrad bench atari``): MGRL meta-gradient estimators where no closed
form exists.

At a fixed agent state (a seeded Nature-CNN actor-critic, optionally after ``warmup_frames`` of
A2C, with gamma 0.99, lambda 0.95 and the loss coefficients as meta-parameters), every cell
draws ``repeats`` independent meta-gradient estimates d L_out / d eta (K inner updates, fresh
rollouts for every stage) with one inner surrogate (``pg``, ``lvc``, ``dice``, ``loaded_dice``);
all estimators see the same games and action draws (common random numbers), so the differences
between them are the estimators'.
They are scored against a *reference* meta-gradient: the mean of ``reference_repeats`` estimates
with the ``reference_estimator`` (Loaded DiCE: unbiased at every order) and ``reference_scale``
times more episodes per stage. The reference has its own uncertainty: every row states its
standard error (``reference_se``) and a bias estimate with both noises removed
(``bias_sq_debiased_vs_reference``: the debiased squared bias minus ``tr(Cov_ref) / R_ref``).
Rows use the JSONL schema of the other benches.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from metagrad.agents.a2c import A2CAgent, A2CConfig, build_model, collect_rollout
from metagrad.agents.mgrl import MGRLConfig, initial_meta_parameters, meta_gradient
from metagrad.app.options import Option
from metagrad.app.outputs import write_text_atomic
from metagrad.app.plotting import new_figure, save_figure
from metagrad.app.rows import ResultRow
from metagrad.app.suite import Cell, Suite, cell_seed, common_options, make_row
from metagrad.envs.atari import BACKENDS, AtariConfig, AtariVector, rom_id
from metagrad.estimators import get_estimator
from metagrad.scoring import score
from metagrad.validation import check_int, check_int_fields, check_seed

__all__ = [
    "EXPERIMENTS",
    "PRESETS",
    "SUITE",
    "AtariBenchConfig",
    "AtariMetaSpec",
    "make_atari_cells",
    "reference_meta_gradient",
    "run_atari_cell",
    "write_atari_plots",
    "write_atari_summary",
]

EXPERIMENTS = ("estimators",)
_CELL_FIELDS = (
    "env",
    "num_envs",
    "n_steps",
    "warmup_frames",
    "repeats",
    "reference_estimator",
    "reference_scale",
    "reference_repeats",
    "seed",
    "backend",
)


@dataclass(frozen=True)
class AtariMetaSpec:
    """The recipe of one MGRL estimate: ``estimator``, the inner surrogate (one rollout of ``n``
    parallel games gives both the value and the Jacobian of each of the K inner updates), the
    outer loss is the fixed policy-gradient loss on a fresh rollout; ``scale`` consecutive
    rollouts side by side per batch."""

    estimator: str = "pg"
    n: int = 16
    inner_steps: int = 2
    learn_coefs: bool = True
    scale: int = 1

    def __post_init__(self) -> None:
        get_estimator(self.estimator)
        check_int_fields(self, ("n", "inner_steps", "scale"), 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AtariBenchConfig:
    """Everything that defines an Atari bias run (recorded in every row)."""

    CELL_FIELDS: ClassVar[tuple[str, ...]] = _CELL_FIELDS

    preset: str = "custom"
    env: str = "ALE/Breakout-v5"
    num_envs: int = 16
    n_steps: int = 5
    inner_steps: int = 2
    warmup_frames: int = 0
    estimators: tuple[str, ...] = ("pg", "lvc", "dice", "loaded_dice")
    repeats: int = 16
    reference_estimator: str = "loaded_dice"
    reference_scale: int = 4
    reference_repeats: int = 16
    seed: int = 0
    backend: str = "ale"
    experiments: tuple[str, ...] = EXPERIMENTS

    def __post_init__(self) -> None:
        try:
            rom_id(self.env)
        except ValueError as exc:
            raise ValueError(f"env: unknown env {self.env!r} ({exc})") from exc
        check_int_fields(self, ("num_envs", "n_steps", "inner_steps", "reference_scale"), 1)
        check_int_fields(self, ("repeats", "reference_repeats"), 2)
        check_int("warmup_frames", self.warmup_frames, 0)
        check_seed("seed", self.seed)
        for est in (*self.estimators, self.reference_estimator):
            get_estimator(est)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")
        unknown = set(self.experiments) - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"experiments: unknown {sorted(unknown)}")

    def spec(self, estimator: str, scale: int = 1) -> AtariMetaSpec:
        return AtariMetaSpec(estimator, self.num_envs * scale, self.inner_steps, True, scale)


PRESETS: dict[str, AtariBenchConfig] = {
    # MGRL on Breakout at the A2C defaults (16 games x 5 steps), K = 2; 16 estimates per cell
    # against a 4x-batch Loaded DiCE reference from 16 estimates. Heavy on CPU: use --device cuda.
    "xu2018": AtariBenchConfig(preset="xu2018"),
    "quick": AtariBenchConfig(preset="quick", num_envs=4, repeats=4, reference_repeats=4, reference_scale=2),
}


def make_atari_cells(config: AtariBenchConfig) -> list[Cell]:
    """One cell per inner estimator."""
    return [Cell("estimators", est, config.spec(est), config.num_envs) for est in config.estimators]


@functools.lru_cache(maxsize=4)
def _agent_state(config: AtariBenchConfig, device: str) -> dict[str, Any]:
    """The fixed agent state (parameters and RMSprop statistics), after the optional warm-up."""

    agent = A2CAgent(
        A2CConfig(num_envs=config.num_envs, n_steps=config.n_steps),
        AtariConfig(config.env, num_envs=config.num_envs, backend=config.backend),
        seed=config.seed,
        device=device,
    )
    try:
        if config.warmup_frames:
            agent.train(config.warmup_frames)
        params = {n: p.detach().clone() for n, p in agent.model.named_parameters()}
        num_actions = agent.env.num_actions
    finally:
        agent.close()
    return {"params": params, "num_actions": num_actions}


def _estimates(
    config: AtariBenchConfig, spec: AtariMetaSpec, repeats: int, seed: int, device: str
) -> torch.Tensor:
    """``[repeats, D]`` meta-gradient estimates (D meta-parameters) with their own env and seed."""

    state = _agent_state(config, device)
    env = AtariVector(AtariConfig(config.env, num_envs=config.num_envs, backend=config.backend))
    model = build_model(state["num_actions"], seed=config.seed, device=device)
    mgrl = MGRLConfig(
        A2CConfig(num_envs=config.num_envs, n_steps=config.n_steps),
        inner_steps=spec.inner_steps,
        estimator=spec.estimator,
        learn_coefs=spec.learn_coefs,
    )
    gen = torch.Generator(device=device).manual_seed(seed)
    obs = [env.reset(seed=seed % (2**31))]

    def next_batch(k: int, theta: dict[str, torch.Tensor]):
        batch = None
        for _ in range(spec.scale):  # `scale` consecutive rollouts side by side
            part, obs[0] = collect_rollout(
                env, model, theta, obs[0], config.n_steps, gamma=0.99, generator=gen, device=device
            )
            batch = part if batch is None else batch.cat(part)
        return batch

    out = []
    try:
        for _ in range(repeats):
            eta = initial_meta_parameters(mgrl, device)
            rms = {n: torch.zeros_like(p) for n, p in state["params"].items()}
            grads, _, _, _ = meta_gradient(model, state["params"], eta, next_batch, rms, mgrl)
            out.append(torch.stack(list(grads.values())).double().cpu())
    finally:
        env.close()
    return torch.stack(out)


@functools.lru_cache(maxsize=4)
def reference_meta_gradient(
    config: AtariBenchConfig, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference ``(mean [D], its standard errors [D])`` at the bench's agent state."""
    spec = config.spec(config.reference_estimator, config.reference_scale)
    samples = _estimates(config, spec, config.reference_repeats, config.seed * 1_000_003 + 17, device)
    return samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])


def run_atari_cell(config: AtariBenchConfig, cell: Cell, device: str = "cpu") -> ResultRow:
    """Score one estimator against the reference; returns its result row."""
    start = time.perf_counter()
    reference, reference_se = reference_meta_gradient(config, device)
    # common random numbers: every estimator sees the same games and action draws, so the
    # differences between cells come from the estimators (the reference uses its own stream)
    samples = _estimates(config, cell.spec, config.repeats, config.seed * 1_000_003 + 1, device)
    metrics = score(
        samples.unsqueeze(0),
        reference.unsqueeze(0),
        generator=torch.Generator().manual_seed(cell_seed(config, cell)),
    )  # scored here too: the row needs the squared bias to remove the reference's noise
    ref_var = float((reference_se**2).sum())
    setting = {
        "inner": cell.spec.estimator,
        "n_inner": cell.spec.n,
        "game": config.env,
        "inner_steps": config.inner_steps,
        "frames_per_estimate": (config.inner_steps + 1) * config.num_envs * config.n_steps * 4,
        "reference_estimator": config.reference_estimator,
        "reference_scale": config.reference_scale,
        "reference_repeats": config.reference_repeats,
        "reference": reference.tolist(),
        "reference_se": math.sqrt(ref_var),
        "bias_sq_debiased_vs_reference": metrics.bias_sq_debiased - ref_var,
    }
    return make_row(
        "atari",
        config,
        cell,
        metrics,
        setting,
        episodes_per_estimate=(config.inner_steps + 1) * config.num_envs,
        wall_s=time.perf_counter() - start,
        device=device,
    )


def write_atari_plots(rows: list[ResultRow], folder: Path, stem: str = "atari") -> list[Path]:
    """One PNG: MSE and debiased bias (with CI) per inner estimator."""
    if not rows:
        return []
    fig, axes = new_figure((9, 3.6), ncols=2)
    names = [r.estimator for r in rows]
    m = [r.metrics for r in rows]
    axes[0].bar(names, [x.mse for x in m], yerr=[x.mse_se for x in m], capsize=3)
    axes[0].set_ylabel("MSE vs reference")
    low = [x.bias_debiased - x.bias_ci_low for x in m]
    high = [x.bias_ci_high - x.bias_debiased for x in m]
    axes[1].bar(names, [x.bias_debiased for x in m], yerr=[low, high], capsize=3)
    axes[1].set_ylabel("debiased bias vs reference")
    r0 = rows[0]
    fig.suptitle(
        f"MGRL meta-gradient estimators, {r0.get('game')} (reference s.e. {r0.get('reference_se'):.3g})"
    )
    return [save_figure(fig, Path(folder) / f"{stem}_estimators.png")]


def write_atari_summary(rows: list[ResultRow], path: Path, total_seconds: float | None = None) -> Path:
    """Markdown table of the estimators against the reference."""
    path = Path(path)
    lines = ["# MGRL meta-gradient estimators on Atari (no closed form: scored against a reference)", ""]
    if rows:
        r0 = rows[0]
        lines += [
            f"{r0.get('game')}, K = {r0.get('inner_steps')}, {r0.metrics.repeats} estimates per "
            f"estimator; reference: {r0.get('reference_estimator')} with {r0.get('reference_scale')}x the "
            f"episodes, mean of {r0.get('reference_repeats')} estimates, standard error (norm) "
            f"{r0.get('reference_se'):.4g}; commit `{r0.provenance.git_commit}`."
            + (f" Cell compute {total_seconds:.0f} s." if total_seconds else ""),
            "",
            "| inner estimator | corr | cosine of mean | debiased bias [CI] | bias^2 minus both noises "
            "| variance | MSE |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            m = r.metrics
            lines.append(
                f"| {r.estimator} | {m.corr:.3f} ± {m.corr_se:.3f} | {m.cosine_of_mean:.3f} "
                f"| {m.bias_debiased:.4g} [{m.bias_ci_low:.3g}, {m.bias_ci_high:.3g}] "
                f"| {r.get('bias_sq_debiased_vs_reference'):.4g} | {m.variance:.4g} "
                f"| {m.mse:.4g} ± {m.mse_se:.2g} |"
            )
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def describe_preset(config: AtariBenchConfig) -> str:
    """One line for ``metagrad list presets``."""
    return (
        f"{config.env}, {config.num_envs} games x {config.n_steps} steps, K = {config.inner_steps}, "
        f"{config.repeats} estimates per estimator, reference {config.reference_estimator} "
        f"x{config.reference_scale} from {config.reference_repeats}"
    )


SUITE = Suite(
    name="atari",
    summary="MGRL meta-gradient estimators on ALE games, against a high-budget reference (Xu et al. 2018)",
    config_class=AtariBenchConfig,
    spec_class=AtariMetaSpec,
    presets=PRESETS,
    default_preset="xu2018",
    experiments=EXPERIMENTS,
    make_cells=make_atari_cells,
    score_cell=run_atari_cell,
    write_plots=write_atari_plots,
    write_summary=write_atari_summary,
    options=(
        *common_options(),
        Option("--n", ("num_envs",), "int", "parallel games per rollout (atari)"),
        Option("--inner-steps", ("inner_steps",), "int", "inner steps K"),
    ),
    setting_fields=("game", "n_inner", "inner_steps", "reference_estimator", "reference_scale"),
    describe_preset=describe_preset,
)
