"""``metagrad compare atari``: A2C and meta-gradient agents on real ALE games.

Agents (all on the DeepMind preprocessing, 16 games x 5-step rollouts by default):

* ``sb3_a2c``: stable-baselines3's A2C with its own Atari wrappers (``make_atari_env`` +
  ``VecFrameStack(4)``; RL Zoo settings: entropy 0.01, value 0.25, RMSprop 7e-4), the reference;
* ``a2c``: the suite's A2C (:mod:`metagrad.agents.a2c`);
* ``mgrl_pg``: MGRL with the plain policy-gradient inner surrogate (common MGRL code);
* ``mgrl_lvc``: MGRL with the LVC inner surrogate (the low-bias Hessian of Liu et al. 2022).

Scores are raw game scores (never the clipped training rewards) of finished games. Outputs in
``out``: ``atari_compare_curves.csv`` (mean raw score of the last 100 games against frames),
``atari_compare.jsonl`` (a row per run with config, seed, versions, commit), ``atari_compare.md``
(final score: mean of the last 100 games, averaged over seeds) and a plot per game.

The papers' budget is 10M frames per game; on a 2-core CPU the suite's agents play about
1-2k frames/s, so that budget needs a GPU: see the README for the command.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.vec_env import VecFrameStack

from metagrad.agents.a2c import A2CAgent, A2CConfig
from metagrad.agents.mgrl import MGRLAgent, MGRLConfig
from metagrad.app.compare.comparison import Comparison, seeds_option
from metagrad.app.options import Option
from metagrad.app.outputs import write_csv, write_jsonl, write_text_atomic
from metagrad.app.plotting import curves_panel, mean_se
from metagrad.app.progress import progress_bar
from metagrad.app.provenance import run_metadata
from metagrad.envs.atari import BACKENDS, AtariConfig, rom_id
from metagrad.validation import check_int_fields, check_seed

__all__ = ["AGENTS", "AtariCompareConfig", "run_atari_agent", "run_atari_compare"]

AGENTS = ("sb3_a2c", "a2c", "mgrl_pg", "mgrl_lvc")


@dataclass(frozen=True)
class AtariCompareConfig:
    """Games x agents x seeds at a frame budget (frames count the skipped ones: 4 per step)."""

    games: tuple[str, ...] = ("pong",)
    agents: tuple[str, ...] = AGENTS
    seeds: tuple[int, ...] = (0,)
    frames: int = 20_000
    num_envs: int = 16
    inner_steps: int = 2
    backend: str = "ale"
    curve_points: int = 50

    def __post_init__(self) -> None:
        for game in self.games:
            rom_id(game)
        unknown = [a for a in self.agents if a not in AGENTS]
        if unknown or not self.agents:
            raise ValueError(f"agents: unknown {unknown}; known: {AGENTS}")
        if not self.seeds or not self.games:
            raise ValueError("games, seeds: give at least one")
        for seed in self.seeds:
            check_seed("seeds", seed)
        check_int_fields(self, ("frames", "num_envs", "inner_steps", "curve_points"), 1)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")


class _Curve:
    """Raw scores of finished games and the running mean of the last 100 at sampled frames."""

    def __init__(self, total: int, points: int) -> None:
        self.scores: list[float] = []
        self.points: list[tuple[int, int, float]] = []
        self._every = max(total // points, 1)
        self._next = self._every

    def add(self, frames: int, scores: list[float]) -> None:
        self.scores += scores
        while frames >= self._next:
            last = self.scores[-100:]
            self.points.append((self._next, len(self.scores), float(np.mean(last)) if last else float("nan")))
            self._next += self._every


def _run_sb3(
    game: str, config: AtariCompareConfig, seed: int, device: str, report: Callable
) -> dict[str, Any]:
    env_id = "".join(part.capitalize() for part in rom_id(game).split("_")) + "NoFrameskip-v4"
    env = VecFrameStack(make_atari_env(env_id, n_envs=config.num_envs, seed=seed), n_stack=4)

    class Scores(BaseCallback):
        def _on_step(self) -> bool:
            finished = [info["episode"]["r"] for info in self.locals["infos"] if "episode" in info]
            report(self.num_timesteps * 4, [float(s) for s in finished])
            return True

    model = A2C("CnnPolicy", env, ent_coef=0.01, vf_coef=0.25, seed=seed, device=device, verbose=0)
    model.learn(total_timesteps=config.frames // 4, callback=Scores())
    env.close()
    return {}


def run_atari_agent(
    agent: str, game: str, config: AtariCompareConfig, seed: int, *, device: str = "cpu", progress: Any = None
) -> dict[str, Any]:
    """Train one agent on one game for ``config.frames`` frames; returns its curve and scores."""
    curve = _Curve(config.frames, config.curve_points)
    start = time.perf_counter()
    seen = [0]

    def report(frames: int, scores: list[float]) -> None:
        curve.add(frames, scores)
        if progress is not None:
            progress.update(max(frames - seen[0], 0))
            seen[0] = max(seen[0], frames)
            progress.set_postfix_str(
                f"{game} {agent} seed {seed}: {frames / (time.perf_counter() - start):.0f} frames/s"
            )

    extra: dict[str, Any] = {}
    if agent == "sb3_a2c":
        _run_sb3(game, config, seed, device, report)
    else:
        env_config = AtariConfig(game, num_envs=config.num_envs, backend=config.backend)
        a2c = A2CConfig(num_envs=config.num_envs)
        if agent == "a2c":
            runner = A2CAgent(a2c, env_config, seed=seed, device=device)
        else:
            estimator = agent.split("_", 1)[1]
            mgrl = MGRLConfig(a2c, inner_steps=config.inner_steps, estimator=estimator)
            runner = MGRLAgent(mgrl, env_config, seed=seed, device=device)
        try:
            out = runner.train(config.frames, callback=report)
        finally:
            runner.close()
        if "meta" in out:
            extra["meta_trace"] = [(f, m) for f, m in out["meta"]][:: max(len(out["meta"]) // 100, 1)]
            extra["final_meta"] = out["meta"][-1][1] if out["meta"] else {}
    wall = time.perf_counter() - start
    last = curve.scores[-100:]
    return {
        "game": game,
        "agent": agent,
        "seed": seed,
        "frames": config.frames,
        "episodes": len(curve.scores),
        "final_score": float(np.mean(last)) if last else float("nan"),
        "curve": curve.points,
        "scores": curve.scores,
        "wall_s": wall,
        "frames_per_s": config.frames / wall,
        **extra,
    }


def run_atari_compare(
    config: AtariCompareConfig, out: str | Path = "results", *, device: str = "cpu", progress: bool = True
) -> list[dict[str, Any]]:
    """Every agent on every game for every seed; writes curves, rows, table and plots to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(g, a, s) for g in config.games for a in config.agents for s in config.seeds]
    rows = []
    with progress_bar(
        len(runs) * config.frames, "compare atari", "frame", disable=not progress, unit_scale=True
    ) as bar:
        for game, agent, seed in runs:
            result = run_atari_agent(agent, game, config, seed, device=device, progress=bar)
            rows.append({**result, "config": dataclasses.asdict(config), **run_metadata(device)})
    write_jsonl(out / "atari_compare.jsonl", rows)
    write_csv(
        out / "atari_compare_curves.csv",
        ["game", "agent", "seed", "frames", "episodes", "mean_raw_score_last100"],
        (
            [row["game"], row["agent"], row["seed"], frames, episodes, f"{score:.4f}"]
            for row in rows
            for frames, episodes, score in row["curve"]
        ),
    )
    _write_table(rows, config, out / "atari_compare.md")
    for game in config.games:
        curves = {}
        for agent in config.agents:
            rs = [r for r in rows if r["game"] == game and r["agent"] == agent and r["curve"]]
            if rs:
                n = min(len(r["curve"]) for r in rs)
                curves[agent] = (
                    [p[0] for p in rs[0]["curve"][:n]],
                    [[p[2] for p in r["curve"][:n]] for r in rs],
                )
        if curves:
            curves_panel(
                out / f"atari_compare_{game}.png",
                curves,
                xlabel="frames",
                ylabel="raw score (mean of the last 100 games)",
                title=f"{game}: A2C and MGRL",
            )
    return rows


def _write_table(rows: list[dict], config: AtariCompareConfig, path: Path) -> None:
    lines = [
        "# Atari: A2C and meta-gradient agents",
        "",
        f"{config.frames} frames per run, {config.num_envs} games x 5-step rollouts, "
        f"MGRL K = {config.inner_steps}, seeds {list(config.seeds)}, "
        f"commit `{rows[0]['git_commit'] if rows else '?'}`. Final score: the mean raw score of the last "
        "100 finished games (fewer if fewer finished), then mean ± s.e. over seeds.",
        "",
        "| game | agent | final score | games finished | frames/s | final gamma, lambda |",
        "|---|---|---|---|---|---|",
    ]
    for game in config.games:
        for agent in config.agents:
            rs = [r for r in rows if r["game"] == game and r["agent"] == agent]
            if not rs:
                continue
            m, se = mean_se(r["final_score"] for r in rs)
            meta = rs[0].get("final_meta") or {}
            gl = f"{meta['gamma']:.4f}, {meta['lambda']:.4f}" if meta else "-"
            lines.append(
                f"| {game} | {agent} | {m:.2f} ± {se:.2f} | {sum(r['episodes'] for r in rs)} "
                f"| {np.mean([r['frames_per_s'] for r in rs]):.0f} | {gl} |"
            )
    write_text_atomic(path, "\n".join(lines) + "\n")


COMPARISON = Comparison(
    name="atari",
    summary="A2C (SB3 reference, the suite's), MGRL-pg and MGRL-LVC on ALE games",
    config_class=AtariCompareConfig,
    run=run_atari_compare,
    table="atari_compare.md",
    options=(
        seeds_option(),
        Option("--games", ("games",), "names", "atari: comma-separated games, e.g. pong,breakout"),
        Option("--agents", ("agents",), "names", f"atari: from {','.join(AGENTS)}"),
        Option("--frames", ("frames",), "int", "atari: frames per run (4 per agent step)"),
        Option("--n", ("num_envs",), "int", "atari: parallel games"),
        Option("--inner-steps", ("inner_steps",), "int", "inner steps K"),
    ),
)
