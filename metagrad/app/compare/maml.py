"""``metagrad compare maml``: does meta-gradient bias hurt meta-training?

Trains one MAML learner per meta-gradient recipe over several seeds on the same task
distribution, with the float64 exact-meta-gradient learner as the reference. Each run records
the exact mean post-adaptation return on a held-out task set (the same set for every learner)
against meta-iterations and against environment episodes sampled, and the cosine between the
learner's update and the exact meta-gradient of its own meta-batch, along its own trajectory.
Outputs in ``out``: ``maml_compare_curves.csv``, ``maml_compare.jsonl`` (a row per run with
config, seed, versions, commit), ``maml_compare.md`` and three PNG plots.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metagrad.agents.maml import MAMLConfig, train_maml
from metagrad.app.compare.comparison import Comparison, seeds_option
from metagrad.app.judging.statistics import mean_se
from metagrad.app.options import Option
from metagrad.app.presenting.outputs import write_csv, write_jsonl, write_text_atomic
from metagrad.app.presenting.plotting import curves_panel
from metagrad.app.running.progress import progress_bar
from metagrad.app.running.provenance import run_metadata
from metagrad.critics import CriticKind, CriticSpec
from metagrad.decomposed import MetaGradientSpec
from metagrad.envs.tabular import TaskDistribution
from metagrad.staged import StageSpec
from metagrad.validation import check_choice, check_int_fields, check_seed

__all__ = ["LEARNERS", "MAMLCompareConfig", "learner_config", "run_maml_compare"]


def _sampled(estimator: str, **kwargs: Any) -> Callable[[MAMLCompareConfig], MetaGradientSpec]:
    def build(c: MAMLCompareConfig) -> MetaGradientSpec:
        return MetaGradientSpec.from_combination("lll", estimator, c.n, **c.spec_kwargs(), **kwargs)

    return build


def _off_policy(c: MAMLCompareConfig) -> MetaGradientSpec:
    return MetaGradientSpec(
        inner=StageSpec("off_policy_dice", c.n, c.replay),
        hessian=StageSpec("dice", c.n),
        outer=StageSpec("dice", c.n),
        **c.spec_kwargs(),
    )


# learner name -> (recipe builder, exact reference?)
LEARNERS: dict[str, tuple[Callable[[MAMLCompareConfig], MetaGradientSpec], bool]] = {
    "exact": (lambda c: MetaGradientSpec(**c.spec_kwargs()), True),
    "all_exact_stages": (lambda c: MetaGradientSpec(**c.spec_kwargs()), False),
    "dice": (_sampled("dice"), False),
    "loaded_dice": (_sampled("loaded_dice"), False),
    "lvc": (_sampled("lvc"), False),
    "pg": (_sampled("pg"), False),
    "fomaml": (_sampled("pg", first_order=True), False),
    "off_policy_dice": (_off_policy, False),
}


@dataclass(frozen=True)
class MAMLCompareConfig:
    """A comparison: learners x seeds on one task distribution, with a shared budget.

    Defaults: shared-transition 20 x 5 MDPs (Dirichlet 0.001, gamma 0.8, T = 20), K = 1,
    alpha = 10, 32 episodes per estimated stage, meta-batch 20, Adam 0.1, the papers' noisy-exact
    critic (noise 1.0; its values cost no episodes), 50 held-out tasks.
    """

    learners: tuple[str, ...] = ("exact", "dice", "loaded_dice", "lvc", "pg", "fomaml", "off_policy_dice")
    seeds: tuple[int, ...] = (0, 1, 2)
    iterations: int = 100
    distribution: str = "shared_transitions"
    num_states: int = 20
    num_actions: int = 5
    gamma: float = 0.8
    horizon: int = 20
    task_seed: int = 0
    inner_steps: int = 1
    inner_lr: float = 10.0
    n: int = 32
    replay: int = 96
    meta_batch: int = 20
    optimizer: str = "adam"
    lr: float = 0.1
    critic: CriticKind = "noisy_exact"
    critic_noise: float = 1.0
    eval_tasks: int = 50
    learn_intrinsic_reward: bool = False

    def __post_init__(self) -> None:
        check_choice("learners", self.learners, LEARNERS)
        if not self.learners:
            raise ValueError("learners: give at least one learner")
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        for seed in self.seeds:
            check_seed("seeds", seed)
        check_int_fields(self, ("iterations", "inner_steps"), 0)
        check_int_fields(self, ("n", "replay", "eval_tasks"), 1)
        self.task_distribution()
        for name in self.learners:
            learner_config(self, name)

    def spec_kwargs(self) -> dict[str, Any]:
        return dict(
            inner_steps=self.inner_steps,
            inner_lr=self.inner_lr,
            critic=CriticSpec(self.critic, self.critic_noise),
        )

    def task_distribution(self) -> TaskDistribution:
        return TaskDistribution(
            self.distribution,
            self.num_states,
            self.num_actions,
            gamma=self.gamma,
            horizon=self.horizon,
            seed=self.task_seed,
        )


def learner_config(config: MAMLCompareConfig, name: str) -> MAMLConfig:
    """The :class:`~metagrad.agents.maml.MAMLConfig` of learner ``name`` under ``config``."""
    check_choice("learner", name, LEARNERS)
    build, exact = LEARNERS[name]
    return MAMLConfig(
        spec=build(config),
        exact=exact,
        meta_batch=config.meta_batch,
        optimizer=config.optimizer,
        lr=config.lr,
        learn_intrinsic_reward=config.learn_intrinsic_reward,
        label=name,
    )


def run_maml_compare(
    config: MAMLCompareConfig,
    out: str | Path = "results",
    *,
    device: str = "cpu",
    progress: bool = True,
    plots: bool = True,
) -> list[dict[str, Any]]:
    """Train every learner for every seed; write curves, rows, table and plots to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    distribution = config.task_distribution()
    held_out = distribution.held_out(config.eval_tasks)
    runs = [(name, seed) for name in config.learners for seed in config.seeds]
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    with progress_bar(len(runs), "compare maml", "run", disable=not progress) as bar:
        for name, seed in runs:
            bar.set_postfix_str(f"{name} seed {seed}")
            learner = learner_config(config, name)
            hist = train_maml(
                learner, distribution, config.iterations, seed=seed, eval_tasks=held_out, device=device
            )
            cos = [c for c in hist["cosine"] if c == c]
            rows.append(
                {
                    "bench": "compare_maml",
                    "learner": name,
                    "seed": seed,
                    "initial_return": hist["held_out_return"][0],
                    "final_return": hist["held_out_return"][-1],
                    "mean_cosine": sum(cos) / len(cos) if cos else float("nan"),
                    "episodes_per_iteration": learner.episodes_per_iteration(),
                    "held_out_return": hist["held_out_return"],
                    "episodes": hist["episodes"],
                    "cosine": hist["cosine"],
                    "wall_s": hist["wall_s"],
                    "spec": learner.spec.to_dict(),
                    "learner_config": dataclasses.asdict(learner),
                    "config": dataclasses.asdict(config),
                    **run_metadata(device),
                }
            )
            bar.update(1)
    total = time.perf_counter() - start
    write_jsonl(out / "maml_compare.jsonl", rows)
    write_csv(
        out / "maml_compare_curves.csv",
        ["learner", "seed", "iteration", "episodes", "held_out_return", "cosine"],
        (
            [row["learner"], row["seed"], it, e, f"{r:.6f}", f"{c:.6f}"]
            for row in rows
            # no update after the last evaluation: its cosine is nan
            for it, (e, r, c) in enumerate(
                zip(row["episodes"], row["held_out_return"], [*row["cosine"], float("nan")], strict=True)
            )
        ),
    )
    _write_table(rows, config, out / "maml_compare.md", total)
    if plots:
        _write_plots(rows, out)
    return rows


def _write_table(rows: list[dict], config: MAMLCompareConfig, path: Path, total: float) -> None:
    r0 = rows[0] if rows else {}
    lines = [
        "# MAML meta-training with biased and unbiased meta-gradients",
        "",
        f"{config.distribution} {config.num_states}x{config.num_actions} MDPs (gamma {config.gamma}, "
        f"T = {config.horizon}), K = {config.inner_steps}, alpha = {config.inner_lr}, n = {config.n} "
        f"episodes per estimated stage, meta-batch {config.meta_batch}, {config.optimizer} lr {config.lr}, "
        f"critic {config.critic} (noise {config.critic_noise}), {config.iterations} meta-iterations, "
        f"seeds {list(config.seeds)}, {config.eval_tasks} held-out tasks; commit "
        f"`{r0.get('git_commit', '?')}`; wall time {total:.1f} s.",
        "",
        "Exact mean post-adaptation return on the held-out tasks (mean ± s.e. over seeds) and the "
        "mean cosine between each update and the exact meta-gradient of its meta-batch.",
        "",
        "| learner | start | final | gain over start | mean cosine | episodes / iteration | wall s / run |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["learner"] for r in rows):
        rs = [r for r in rows if r["learner"] == name]
        start_m, _ = mean_se(r["initial_return"] for r in rs)
        final_m, final_s = mean_se(r["final_return"] for r in rs)
        gain_m, gain_s = mean_se(r["final_return"] - r["initial_return"] for r in rs)
        cos_m, cos_s = mean_se(r["mean_cosine"] for r in rs)
        wall = sum(r["wall_s"] for r in rs) / len(rs)
        lines.append(
            f"| {name} | {start_m:.4f} | {final_m:.4f} ± {final_s:.4f} | {gain_m:.4f} ± {gain_s:.4f} "
            f"| {cos_m:.3f} ± {cos_s:.3f} | {rs[0]['episodes_per_iteration']} | {wall:.1f} |"
        )
    write_text_atomic(path, "\n".join(lines) + "\n")


def _write_plots(rows: list[dict], out: Path) -> None:
    names = list(dict.fromkeys(r["learner"] for r in rows))

    def runs(name: str, key: str) -> list[list[float]]:
        return [r[key] for r in rows if r["learner"] == name]

    by_iteration = {
        n: (list(range(len(runs(n, "held_out_return")[0]))), runs(n, "held_out_return")) for n in names
    }
    curves_panel(
        out / "maml_compare_return_vs_iterations.png",
        by_iteration,
        xlabel="meta-iteration",
        ylabel="held-out post-adaptation return (exact)",
        title="MAML: learning curves",
    )
    sampled = [n for n in names if runs(n, "episodes")[0][-1] > 0]
    if sampled:
        by_episodes = {n: (runs(n, "episodes")[0], runs(n, "held_out_return")) for n in sampled}
        curves_panel(
            out / "maml_compare_return_vs_episodes.png",
            by_episodes,
            xlabel="environment episodes sampled",
            ylabel="held-out post-adaptation return (exact)",
            title="MAML: sample efficiency (exact learner samples none)",
        )
    by_cosine = {n: (list(range(len(runs(n, "cosine")[0]))), runs(n, "cosine")) for n in names}
    curves_panel(
        out / "maml_compare_cosine.png",
        by_cosine,
        xlabel="meta-iteration",
        ylabel="cosine(update, exact meta-gradient)",
        title="MAML: update direction vs the exact meta-gradient",
    )


COMPARISON = Comparison(
    name="maml",
    summary="MAML meta-learners, one per meta-gradient recipe, the exact learner as reference",
    config_class=MAMLCompareConfig,
    run=run_maml_compare,
    table="maml_compare.md",
    options=(
        seeds_option(),
        Option("--learners", ("learners",), "names", f"maml: from {','.join(LEARNERS)}"),
        Option("--iterations", ("iterations",), "int", "meta-iterations"),
        Option("--distribution", ("distribution",), "str", "maml: shared_transitions or random"),
        Option("--horizon", ("horizon",), "int", "episode length"),
        Option("--inner-steps", ("inner_steps",), "int", "inner steps K"),
        Option("--inner-lr", ("inner_lr",), "float", "maml: inner step size alpha"),
        Option("--n", ("n",), "int", "maml: episodes per estimated stage"),
        Option("--meta-batch", ("meta_batch",), "int", "maml: tasks per meta-iteration"),
        Option("--lr", ("lr",), "float", "outer optimiser step size"),
        Option("--optimizer", ("optimizer",), "str", "adam or sgd"),
    ),
)
