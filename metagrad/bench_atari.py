"""``metagrad bench atari``: MGRL meta-gradient estimators where no closed form exists.

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

from envs.validation import check_int_fields
from metagrad.decomposed import StagedSpec, StageSpec
from metagrad.estimators import get_estimator
from metagrad.results import Cell, cell_row, cell_seed
from metagrad.scoring import score

__all__ = [
    "EXPERIMENTS",
    "PRESETS",
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
class AtariMetaSpec(StagedSpec):
    """The recipe of one MGRL estimate: the inner surrogate at the inner (value) and Hessian
    (Jacobian) stages with ``n`` parallel games per rollout, the outer ``pg`` loss, K steps."""

    inner: StageSpec = dataclasses.field(default_factory=StageSpec)
    hessian: StageSpec = dataclasses.field(default_factory=StageSpec)
    outer: StageSpec = dataclasses.field(default_factory=StageSpec)
    inner_steps: int = 2
    learn_coefs: bool = True
    scale: int = 1

    def __post_init__(self) -> None:
        self.check_stages()


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
        from envs.atari import BACKENDS, rom_id

        try:
            rom_id(self.env)
        except ValueError as exc:
            raise ValueError(f"env: unknown env {self.env!r} ({exc})") from exc
        check_int_fields(self, ("num_envs", "n_steps", "inner_steps", "reference_scale"), 1)
        check_int_fields(self, ("repeats", "reference_repeats"), 2)
        if self.warmup_frames < 0:
            raise ValueError(f"warmup_frames: must be >= 0, got {self.warmup_frames}")
        for est in (*self.estimators, self.reference_estimator):
            get_estimator(est)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")
        unknown = set(self.experiments) - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"experiments: unknown {sorted(unknown)}")

    def spec(self, estimator: str, scale: int = 1) -> AtariMetaSpec:
        stage = StageSpec(estimator, self.num_envs * scale)
        return AtariMetaSpec(
            stage, stage, StageSpec("pg", self.num_envs * scale), self.inner_steps, True, scale
        )


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
    from agents.a2c import A2CAgent, A2CConfig
    from envs.atari import AtariConfig

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
    from agents.a2c import A2CConfig, build_model, collect_rollout
    from agents.mgrl import MGRLConfig, initial_meta_parameters, meta_gradient
    from envs.atari import AtariConfig, AtariVector

    state = _agent_state(config, device)
    env = AtariVector(AtariConfig(config.env, num_envs=config.num_envs, backend=config.backend))
    model = build_model(state["num_actions"], seed=config.seed, device=device)
    mgrl = MGRLConfig(
        A2CConfig(num_envs=config.num_envs, n_steps=config.n_steps),
        inner_steps=spec.inner_steps,
        estimator=spec.inner.estimator,
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


def run_atari_cell(config: AtariBenchConfig, cell: Cell, device: str = "cpu") -> dict[str, Any]:
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
    ).to_dict()
    ref_var = float((reference_se**2).sum())
    fields = {
        "game": config.env,
        "inner_steps": config.inner_steps,
        "episodes_per_estimate": (config.inner_steps + 1) * config.num_envs,
        "frames_per_estimate": (config.inner_steps + 1) * config.num_envs * config.n_steps * 4,
        "reference_estimator": config.reference_estimator,
        "reference_scale": config.reference_scale,
        "reference_repeats": config.reference_repeats,
        "reference": reference.tolist(),
        "reference_se": math.sqrt(ref_var),
        "bias_sq_debiased_vs_reference": metrics["bias_sq_debiased"] - ref_var,
        "num_tasks": 1,
    }
    return cell_row("atari", config, cell, metrics, fields, wall_s=time.perf_counter() - start, device=device)


def write_atari_plots(rows: list[dict], folder: str | Path, stem: str = "atari") -> list[Path]:
    """One PNG: MSE and debiased bias (with CI) per inner estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [r["estimator"] for r in rows]
    axes[0].bar(names, [r["mse"] for r in rows], yerr=[r["mse_se"] for r in rows], capsize=3)
    axes[0].set_ylabel("MSE vs reference")
    low = [r["bias_debiased"] - r["bias_ci_low"] for r in rows]
    high = [r["bias_ci_high"] - r["bias_debiased"] for r in rows]
    axes[1].bar(names, [r["bias_debiased"] for r in rows], yerr=[low, high], capsize=3)
    axes[1].set_ylabel("debiased bias vs reference")
    fig.suptitle(
        f"MGRL meta-gradient estimators, {rows[0]['game']} (reference s.e. {rows[0]['reference_se']:.3g})"
    )
    fig.tight_layout()
    path = Path(folder) / f"{stem}_estimators.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def write_atari_summary(rows: list[dict], path: str | Path, total_seconds: float | None = None) -> Path:
    """Markdown table of the estimators against the reference."""
    path = Path(path)
    lines = ["# MGRL meta-gradient estimators on Atari (no closed form: scored against a reference)", ""]
    if rows:
        r0 = rows[0]
        lines += [
            f"{r0['game']}, K = {r0['inner_steps']}, {r0['repeats']} estimates per estimator; reference: "
            f"{r0['reference_estimator']} with {r0['reference_scale']}x the episodes, mean of "
            f"{r0['reference_repeats']} estimates, standard error (norm) {r0['reference_se']:.4g}; "
            f"commit `{r0['git_commit']}`."
            + (f" Cell compute {total_seconds:.0f} s." if total_seconds else ""),
            "",
            "| inner estimator | corr | cosine of mean | debiased bias [CI] | bias^2 minus both noises "
            "| variance | MSE |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['estimator']} | {r['corr']:.3f} ± {r['corr_se']:.3f} | {r['cosine_of_mean']:.3f} "
                f"| {r['bias_debiased']:.4g} [{r['bias_ci_low']:.3g}, {r['bias_ci_high']:.3g}] "
                f"| {r['bias_sq_debiased_vs_reference']:.4g} | {r['variance']:.4g} "
                f"| {r['mse']:.4g} ± {r['mse_se']:.2g} |"
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
