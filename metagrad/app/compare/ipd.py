"""``metagrad compare ipd``: naive and LOLA learners played against each other over seeds.

Each *pairing* names the two learners (agent 1 vs agent 2). Every run records the exact per-step
average reward of both agents after every simultaneous update (the discount-weighted average of
the finite-horizon value, so mutual cooperation in the IPD is -1 and mutual defection -2).
Outputs in ``out``: ``ipd_compare_curves.csv`` (one line per pairing, seed and iteration),
``ipd_compare.jsonl`` (one row per run with config, seed, versions, commit), ``ipd_compare.md``
(final table) and ``ipd_compare_rewards.png``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metagrad.agents.lola import GameConfig, LearnerConfig, play
from metagrad.app.compare.comparison import Comparison, seeds_option
from metagrad.app.judging.statistics import mean_se
from metagrad.app.options import Option
from metagrad.app.presenting.outputs import write_csv, write_jsonl, write_text_atomic
from metagrad.app.presenting.plotting import curves_panel
from metagrad.app.running.progress import progress_bar
from metagrad.app.running.provenance import run_metadata
from metagrad.validation import check_choice, check_int, check_seed

__all__ = ["PAIRINGS", "IPDCompareConfig", "pairing_learners", "run_ipd_compare"]

# pairing -> (agent 1 (kind, gradient), agent 2 (kind, gradient))
PAIRINGS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "NL-NL": (("naive", "exact"), ("naive", "exact")),
    "LOLA-LOLA": (("lola", "exact"), ("lola", "exact")),
    "LOLA-DiCE": (("lola", "lola_dice"), ("lola", "lola_dice")),
    "OffPolicy-LOLA-DiCE": (("lola", "off_policy_lola_dice"), ("lola", "off_policy_lola_dice")),
    "LOLA-NL": (("lola", "exact"), ("naive", "exact")),
}


@dataclass(frozen=True)
class IPDCompareConfig:
    """A comparison: pairings x seeds, the learners' shared hyper-parameters and the game.

    Defaults follow the LOLA-DiCE protocol (Foerster et al. 2018): gamma 0.96, 100-step
    episodes, batches of 128, one lookahead step of 0.3, Adam with lr 0.1.
    """

    pairings: tuple[str, ...] = tuple(PAIRINGS)
    seeds: tuple[int, ...] = (0, 1, 2)
    iterations: int = 200
    game: str = "ipd"
    gamma: float = 0.96
    horizon: int = 100
    lookahead_lr: float = 0.3
    lookahead_steps: int = 1
    optimizer: str = "adam"
    lr: float = 0.1
    n_inner: int = 128
    n_outer: int = 128
    replay_batches: int = 3
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        check_choice("pairings", self.pairings, PAIRINGS)
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        for seed in self.seeds:
            check_seed("seeds", seed)
        check_int("iterations", self.iterations, 0)
        GameConfig(self.game, self.gamma, self.horizon)
        for pairing in self.pairings:
            pairing_learners(self, pairing)


def pairing_learners(config: IPDCompareConfig, pairing: str) -> tuple[LearnerConfig, LearnerConfig]:
    """The two :class:`~metagrad.agents.lola.LearnerConfig` of a pairing under ``config``."""
    check_choice("pairing", pairing, PAIRINGS)
    common = dict(
        lookahead_lr=config.lookahead_lr,
        lookahead_steps=config.lookahead_steps,
        optimizer=config.optimizer,
        lr=config.lr,
        n_inner=config.n_inner,
        n_outer=config.n_outer,
        replay_batches=config.replay_batches,
    )
    (k1, g1), (k2, g2) = PAIRINGS[pairing]
    return LearnerConfig(k1, g1, **common), LearnerConfig(k2, g2, **common)


def run_ipd_compare(
    config: IPDCompareConfig,
    out: str | Path = "results",
    *,
    device: str = "cpu",
    progress: bool = True,
    plots: bool = True,
) -> list[dict[str, Any]]:
    """Play every pairing for every seed; write curves, rows, table and plot to ``out``.

    Returns one row per (pairing, seed) with its final rewards and full curves.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    game = GameConfig(config.game, config.gamma, config.horizon)
    runs = [(p, s) for p in config.pairings for s in config.seeds]
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    with progress_bar(len(runs), "compare ipd", "run", disable=not progress) as bar:
        for pairing, seed in runs:
            bar.set_postfix_str(f"{pairing} seed {seed}")
            c1, c2 = pairing_learners(config, pairing)
            hist = play(
                c1, c2, config.iterations, game=game, seed=seed, init_scale=config.init_scale, device=device
            )
            rows.append(
                {
                    "bench": "compare_ipd",
                    "pairing": pairing,
                    "agent1": c1.label,
                    "agent2": c2.label,
                    "seed": seed,
                    "final_reward1": hist["reward1"][-1],
                    "final_reward2": hist["reward2"][-1],
                    "final_reward_mean": 0.5 * (hist["reward1"][-1] + hist["reward2"][-1]),
                    "reward1": hist["reward1"],
                    "reward2": hist["reward2"],
                    "episodes": hist["episodes"],
                    "theta1": hist["theta1"].tolist(),
                    "theta2": hist["theta2"].tolist(),
                    "wall_s": hist["wall_s"],
                    "learner1": dataclasses.asdict(c1),
                    "learner2": dataclasses.asdict(c2),
                    "config": dataclasses.asdict(config),
                    **run_metadata(device),
                }
            )
            bar.update(1)
    total = time.perf_counter() - start
    write_jsonl(out / "ipd_compare.jsonl", rows)
    write_csv(
        out / "ipd_compare_curves.csv",
        ["pairing", "seed", "iteration", "episodes", "reward1", "reward2"],
        (
            [row["pairing"], row["seed"], it, e, f"{r1:.6f}", f"{r2:.6f}"]
            for row in rows
            for it, (e, r1, r2) in enumerate(
                zip(row["episodes"], row["reward1"], row["reward2"], strict=True)
            )
        ),
    )
    _write_table(rows, config, out / "ipd_compare.md", total)
    if plots:
        _write_plot(rows, out / "ipd_compare_rewards.png")
    return rows


def _write_table(rows: list[dict], config: IPDCompareConfig, path: Path, total: float) -> None:
    r0 = rows[0] if rows else {}
    lines = [
        f"# {config.game.upper()}: naive and LOLA learners",
        "",
        f"{config.iterations} simultaneous updates, seeds {list(config.seeds)}, gamma {config.gamma}, "
        f"horizon {config.horizon}, lookahead {config.lookahead_steps} x {config.lookahead_lr}, "
        f"{config.optimizer} lr {config.lr}, batches {config.n_inner} + {config.n_outer}; "
        f"commit `{r0.get('git_commit', '?')}`; wall time {total:.1f} s.",
        "",
        "Final exact per-step average reward (mean ± s.e. over seeds; mutual cooperation -1, "
        "mutual defection -2 in the IPD).",
        "",
        "| pairing | agent 1 | agent 2 | reward agent 1 | reward agent 2 | mean of both | wall s / run |",
        "|---|---|---|---|---|---|---|",
    ]
    for pairing in dict.fromkeys(r["pairing"] for r in rows):
        rs = [r for r in rows if r["pairing"] == pairing]
        m1, s1 = mean_se([r["final_reward1"] for r in rs])
        m2, s2 = mean_se([r["final_reward2"] for r in rs])
        mm, sm = mean_se([r["final_reward_mean"] for r in rs])
        wall = sum(r["wall_s"] for r in rs) / len(rs)
        lines.append(
            f"| {pairing} | {rs[0]['agent1']} | {rs[0]['agent2']} | {m1:.3f} ± {s1:.3f} "
            f"| {m2:.3f} ± {s2:.3f} | {mm:.3f} ± {sm:.3f} | {wall:.1f} |"
        )
    write_text_atomic(path, "\n".join(lines) + "\n")


def _write_plot(rows: list[dict], path: Path) -> None:
    curves = {}
    for pairing in dict.fromkeys(r["pairing"] for r in rows):
        runs = [
            [0.5 * (a + b) for a, b in zip(r["reward1"], r["reward2"], strict=True)]
            for r in rows
            if r["pairing"] == pairing
        ]
        curves[pairing] = (list(range(len(runs[0]))), runs)
    curves_panel(
        path,
        curves,
        xlabel="iteration (simultaneous updates)",
        ylabel="per-step average reward (mean of both agents)",
        title="Iterated game: naive vs LOLA learners",
        hlines=_REWARD_LINES.get(rows[0].get("game", "ipd"), {}) if rows else {},
    )


# Per-step rewards of the iterated prisoner's dilemma (Foerster et al. 2018): mutual cooperation
# -1, mutual defection -2 (each agent's reward; the plot shows the mean of the two).
_REWARD_LINES = {"ipd": {"mutual cooperation (-1)": -1.0, "mutual defection (-2)": -2.0}}


COMPARISON = Comparison(
    name="ipd",
    summary="naive and LOLA learners played against each other in iterated games",
    config_class=IPDCompareConfig,
    run=run_ipd_compare,
    table="ipd_compare.md",
    options=(
        seeds_option(),
        Option("--pairings", ("pairings",), "names", f"ipd: from {','.join(PAIRINGS)}"),
        Option("--iterations", ("iterations",), "int", "simultaneous updates"),
        Option("--game", ("game",), "str", "ipd: ipd or imp"),
        Option("--horizon", ("horizon",), "int", "episode length"),
        Option("--lookahead-lr", ("lookahead_lr",), "float", "ipd: lookahead step size"),
        Option("--lr", ("lr",), "float", "outer optimiser step size"),
        Option("--optimizer", ("optimizer",), "str", "adam or sgd"),
        Option("--n", ("n_inner", "n_outer"), "int", "episodes per batch (lookahead and outer)"),
    ),
)
