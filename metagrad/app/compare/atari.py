"""``metagrad compare atari``: A2C and meta-gradient agents on real ALE games (and, with the same
code, on MinAtar: :mod:`metagrad.app.compare.minatar`).

Agents (16 games x 5-step rollouts by default):

* ``sb3_a2c``: stable-baselines3's A2C (ALE: its own Atari wrappers, ``make_atari_env`` +
  ``VecFrameStack(4)``, the RL Zoo's Atari settings as the README states them: entropy 0.01,
  value 0.25, RMSprop 7e-4; MinAtar: the
  MinAtar network and the suite's A2C settings), the reference;
* ``sb3_ppo``: stable-baselines3's PPO at the RL Zoo's Atari settings (128 steps per env, 4 epochs,
  minibatches of 256, lr 2.5e-4, clip 0.1, entropy 0.01, GAE 0.95);
* ``a2c``: the suite's A2C (:mod:`metagrad.agents.a2c`);
* ``mgrl_pg``: MGRL with the plain policy-gradient inner surrogate (common MGRL code);
* ``mgrl_lvc``: MGRL with the LVC inner surrogate (the low-bias Hessian of Liu et al. 2022).

Scores are raw game scores (never the clipped training rewards) of finished games. Outputs in
``out`` (``NAME`` = ``atari`` or ``minatar``): ``NAME_compare_curves.csv`` (mean raw score of
the last 100 games against frames; empty before the first game ends), ``NAME_compare_meta.csv``
(the meta-parameters of the MGRL agents against frames), ``NAME_compare.jsonl`` (a row per run
with config, seed, versions, commit, wall and CPU time), ``NAME_compare.md`` (final score: mean
of the last 100 games, mean and 95% Student-t CI over seeds; MGRL-LVC minus MGRL-pg paired by
seed; how far the meta-parameters moved and how far the two MGRL agents drifted apart) and plots
of the curves and of the meta-parameter trajectories per game. Runs go to ``workers`` processes
(one torch thread each).

The papers' budget is 10M frames per game; on a 2-core CPU the suite's agents play about
1-2k ALE frames/s, so that budget needs a GPU: see the README for the command.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

from metagrad.agents.a2c import A2CAgent, A2CConfig, minatar_cnn_torso
from metagrad.agents.mgrl import MGRLAgent, MGRLConfig
from metagrad.app.compare.comparison import Comparison, seeds_option
from metagrad.app.judging.statistics import mean_t_half_width
from metagrad.app.options import Option
from metagrad.app.presenting.outputs import write_csv, write_jsonl, write_text_atomic
from metagrad.app.presenting.plotting import curves_panel, new_figure, save_figure
from metagrad.app.running.progress import progress_bar
from metagrad.app.running.provenance import run_metadata
from metagrad.envs.atari import BACKENDS, rom_id
from metagrad.envs.minatar import game_config, is_minatar, minatar_gym_env
from metagrad.validation import check_choice, check_int_fields, check_real, check_seed

__all__ = [
    "AGENTS",
    "AtariCompareConfig",
    "close_env",
    "make_sb3_agent",
    "run_atari_agent",
    "run_atari_compare",
    "sb3_vec_env",
]

AGENTS = ("sb3_a2c", "sb3_ppo", "a2c", "mgrl_pg", "mgrl_lvc")


@dataclass(frozen=True)
class AtariCompareConfig:
    """Games x agents x seeds at a frame budget (ALE frames count the skipped ones: 4 per step;
    a MinAtar frame is a step). ``meta_lr``: MGRL's Adam step on the meta-parameters;
    ``workers``: parallel runs."""

    NAME: ClassVar[str] = "atari"

    games: tuple[str, ...] = ("pong",)
    agents: tuple[str, ...] = ("sb3_a2c", "a2c", "mgrl_pg", "mgrl_lvc")
    seeds: tuple[int, ...] = (0,)
    frames: int = 20_000
    num_envs: int = 16
    inner_steps: int = 2
    meta_lr: float = 1e-3
    backend: str = "ale"
    curve_points: int = 50
    workers: int = 1

    def __post_init__(self) -> None:
        if not self.seeds or not self.games:
            raise ValueError("games, seeds: give at least one")
        for game in self.games:
            game_config(game, num_envs=1)
        check_choice("agents", self.agents, AGENTS)
        if not self.agents:
            raise ValueError("agents: give at least one")
        for seed in self.seeds:
            check_seed("seeds", seed)
        check_int_fields(self, ("frames", "num_envs", "inner_steps", "curve_points", "workers"), 1)
        check_real("meta_lr", self.meta_lr, minimum=0.0, open_min=True)
        check_choice("backend", self.backend, BACKENDS)


class _Curve:
    """Raw scores of finished games and the running mean of the last 100 at sampled frames
    (``nan`` before the first game ends)."""

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


# ---------------------------------------------------------------------------------------------
# stable-baselines3 on the same games
# ---------------------------------------------------------------------------------------------


class MinAtarExtractor(BaseFeaturesExtractor):
    """The MinAtar network of :func:`metagrad.agents.a2c.minatar_cnn_torso` as an SB3 feature
    extractor (float ``[C, 10, 10]`` observations)."""

    def __init__(self, observation_space: gym.spaces.Box) -> None:
        torso, dim = minatar_cnn_torso(observation_space.shape[0])
        super().__init__(observation_space, dim)
        self.torso = torso

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.torso(observations)


def sb3_vec_env(game: str, num_envs: int, seed: int) -> VecEnv:
    """The SB3 vector env of a game: ALE through SB3's Atari wrappers and a 4-frame stack;
    MinAtar through the ``minatar`` Gymnasium env (same dynamics as :class:`MinAtarVector`)."""
    if is_minatar(game):
        config = game_config(game, num_envs=num_envs)
        return make_vec_env(lambda: minatar_gym_env(config), n_envs=num_envs, seed=seed)
    env_id = "".join(part.capitalize() for part in rom_id(game).split("_")) + "NoFrameskip-v4"
    return VecFrameStack(make_atari_env(env_id, n_envs=num_envs, seed=seed), n_stack=4)


def make_sb3_agent(agent: str, game: str, num_envs: int, seed: int, device: str = "cpu") -> BaseAlgorithm:
    """``sb3_a2c`` or ``sb3_ppo`` on :func:`sb3_vec_env` (see the module docstring for settings)."""
    check_choice("agent", agent, ("sb3_a2c", "sb3_ppo"))
    env = sb3_vec_env(game, num_envs, seed)
    minatar = is_minatar(game)
    policy = "MlpPolicy" if minatar else "CnnPolicy"
    kwargs: dict[str, Any] = {"seed": seed, "device": device, "verbose": 0}
    if minatar:
        kwargs["policy_kwargs"] = {
            "features_extractor_class": MinAtarExtractor,
            "net_arch": {"pi": [], "vf": []},
        }
    if agent == "sb3_a2c":
        a2c = A2CConfig(num_envs=num_envs)
        settings = {"vf_coef": a2c.value_coef, "gae_lambda": a2c.gae_lambda} if minatar else {"vf_coef": 0.25}
        return A2C(policy, env, ent_coef=a2c.entropy_coef, n_steps=a2c.n_steps, **settings, **kwargs)
    return PPO(
        policy, env, n_steps=128, n_epochs=4, batch_size=256, learning_rate=2.5e-4, clip_range=0.1,
        ent_coef=0.01, vf_coef=0.5, gae_lambda=0.95, **kwargs,
    )  # fmt: skip


def close_env(model: BaseAlgorithm) -> None:
    """Close the vector env of an SB3 model (if it has one)."""
    env = model.get_env()
    if env is not None:
        env.close()


class _Scores(BaseCallback):
    """Reports the frames played and the raw scores of the games that ended (SB3's Monitor)."""

    def __init__(self, report: Callable[[int, list[float]], None], frames_per_step: int) -> None:
        super().__init__()
        self.report, self.frames_per_step = report, frames_per_step

    def _on_step(self) -> bool:
        finished = [info["episode"]["r"] for info in self.locals["infos"] if "episode" in info]
        self.report(self.num_timesteps * self.frames_per_step, [float(s) for s in finished])
        return True


def _frame_skip(game: str) -> int:
    return game_config(game, num_envs=1).frame_skip


# ---------------------------------------------------------------------------------------------
# One run, all runs
# ---------------------------------------------------------------------------------------------


def run_atari_agent(
    agent: str, game: str, config: AtariCompareConfig, seed: int, *, device: str = "cpu", progress: Any = None
) -> dict[str, Any]:
    """Train one agent on one game for ``config.frames`` frames; returns its curve and scores."""
    curve = _Curve(config.frames, config.curve_points)
    start, cpu = time.perf_counter(), time.process_time()
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
    if agent.startswith("sb3_"):
        model = make_sb3_agent(agent, game, config.num_envs, seed, device)
        try:
            skip = _frame_skip(game)
            model.learn(total_timesteps=config.frames // skip, callback=_Scores(report, skip))
        finally:
            close_env(model)
    else:
        env_config = game_config(game, num_envs=config.num_envs, backend=config.backend)
        a2c = A2CConfig(num_envs=config.num_envs)
        if agent == "a2c":
            runner: A2CAgent | MGRLAgent = A2CAgent(a2c, env_config, seed=seed, device=device)
        else:
            estimator = agent.split("_", 1)[1]
            mgrl = MGRLConfig(
                a2c, inner_steps=config.inner_steps, estimator=estimator, meta_lr=config.meta_lr
            )
            runner = MGRLAgent(mgrl, env_config, seed=seed, device=device)
        try:
            initial = runner.meta_parameters() if isinstance(runner, MGRLAgent) else None
            out = runner.train(config.frames, callback=report)
        finally:
            runner.close()
        if initial is not None:
            trace = [(0, initial), *out["meta"]]
            step = max(len(trace) // 200, 1)
            extra["meta_trace"] = [*trace[:-1:step], trace[-1]]
            extra["final_meta"] = trace[-1][1]
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
        "cpu_s": time.process_time() - cpu,
        "frames_per_s": config.frames / wall,
        **extra,
    }


def _worker(job: tuple[str, str, AtariCompareConfig, int, str]) -> dict[str, Any]:
    agent, game, config, seed, device = job
    torch.set_num_threads(1)  # a worker process: one intra-op thread, like the CLI's default
    return run_atari_agent(agent, game, config, seed, device=device)


def run_atari_compare(
    config: AtariCompareConfig, out: str | Path = "results", *, device: str = "cpu", progress: bool = True
) -> list[dict[str, Any]]:
    """Every agent on every game for every seed; writes curves, rows, table and plots to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{config.NAME}_compare"
    runs = [(g, a, s) for g in config.games for a in config.agents for s in config.seeds]
    results = []
    if config.workers == 1:
        with progress_bar(
            len(runs) * config.frames,
            f"compare {config.NAME}",
            "frame",
            disable=not progress,
            unit_scale=True,
        ) as bar:
            for game, agent, seed in runs:
                results.append(run_atari_agent(agent, game, config, seed, device=device, progress=bar))
    else:
        jobs = [(agent, game, config, seed, device) for game, agent, seed in runs]
        context = multiprocessing.get_context("spawn")
        with (
            ProcessPoolExecutor(config.workers, mp_context=context) as pool,
            progress_bar(len(jobs), f"compare {config.NAME}", "run", disable=not progress) as bar,
        ):
            for result in pool.map(_worker, jobs):
                results.append(result)
                bar.update(1)
    rows = [{**r, "config": dataclasses.asdict(config), **run_metadata(device)} for r in results]
    write_jsonl(out / f"{name}.jsonl", rows)
    write_csv(
        out / f"{name}_curves.csv",
        ["game", "agent", "seed", "frames", "episodes", "mean_raw_score_last100"],
        (
            [
                row["game"],
                row["agent"],
                row["seed"],
                frames,
                episodes,
                "" if score != score else f"{score:.4f}",
            ]
            for row in rows
            for frames, episodes, score in row["curve"]
        ),
    )
    write_csv(
        out / f"{name}_meta.csv",
        ["game", "agent", "seed", "frames", "gamma", "lambda"],
        (
            [row["game"], row["agent"], row["seed"], frames, f"{meta['gamma']:.6f}", f"{meta['lambda']:.6f}"]
            for row in rows
            for frames, meta in row.get("meta_trace", [])
        ),
    )
    _write_table(rows, config, out / f"{name}.md")
    for game in config.games:
        _plot_game(rows, config, game, out, name)
    unfinished = [r for r in rows if not r["episodes"]]
    if unfinished:
        names = ", ".join(f"{r['agent']} on {r['game']} (seed {r['seed']})" for r in unfinished)
        print(
            f"metagrad: warning: {len(unfinished)} run(s) finished no game in {config.frames} frames, so "
            f"they have no score (the table says 'no game finished'): {names}; raise --frames",
            file=sys.stderr,
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Tables and plots
# ---------------------------------------------------------------------------------------------


def _fmt(mean: float, half: float, n: int, total: int, digits: int = 2) -> str:
    if n == 0:
        return "no game finished"
    text = f"{mean:.{digits}f} ± {half:.{digits}f}" if half == half else f"{mean:.{digits}f}"
    return text + (f" ({n} of {total} seeds)" if n < total else "")


def _curve_mean(row: dict[str, Any]) -> float:
    """Mean of the curve points that have a score (the area under the learning curve per point)."""
    values = [p[2] for p in row["curve"] if p[2] == p[2]]
    return float(np.mean(values)) if values else float("nan")


def _write_table(rows: list[dict], config: AtariCompareConfig, path: Path) -> None:
    commit = rows[0]["git_commit"] if rows else "?"
    lines = [
        f"# {config.NAME}: A2C and meta-gradient agents",
        "",
        f"{config.frames} frames per run, {config.num_envs} games x 5-step rollouts, MGRL K = "
        f"{config.inner_steps}, meta lr {config.meta_lr:g}, seeds {list(config.seeds)}, commit `{commit}`. "
        "Final score: the mean raw score of the last 100 finished games of a run; then the mean over "
        "seeds ± the half-width of the 95% Student-t CI. Curve mean: the mean of the learning curve's "
        "points. Wall and CPU: per run (measured where the run was made).",
        "",
        "| game | agent | final score | curve mean | games finished | frames/s | wall s | CPU s "
        "| final gamma | final lambda |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    n_seeds = len(config.seeds)
    for game in config.games:
        for agent in config.agents:
            rs = [r for r in rows if r["game"] == game and r["agent"] == agent]
            if not rs:
                continue
            final = _fmt(*mean_t_half_width([r["final_score"] for r in rs]), n_seeds)
            auc = _fmt(*mean_t_half_width([_curve_mean(r) for r in rs]), n_seeds)
            metas = [r["final_meta"] for r in rs if r.get("final_meta")]
            gamma = _fmt(*mean_t_half_width([m["gamma"] for m in metas]), n_seeds, 4) if metas else "-"
            lam = _fmt(*mean_t_half_width([m["lambda"] for m in metas]), n_seeds, 4) if metas else "-"
            lines.append(
                f"| {game} | {agent} | {final} | {auc} | {sum(r['episodes'] for r in rs)} "
                f"| {np.mean([r['frames_per_s'] for r in rs]):.0f} "
                f"| {np.mean([r['wall_s'] for r in rs]):.0f} "
                f"| {np.mean([r['cpu_s'] for r in rs]):.0f} | {gamma} | {lam} |"
            )
    lines += _mgrl_lines(rows, config)
    write_text_atomic(path, "\n".join(lines) + "\n")


def _mgrl_lines(rows: list[dict], config: AtariCompareConfig) -> list[str]:
    """MGRL-LVC against MGRL-pg paired by seed, and how the meta-parameters moved."""
    if not {"mgrl_pg", "mgrl_lvc"} <= set(config.agents):
        return []
    lines = [
        "",
        "MGRL-LVC minus MGRL-pg, paired by seed (same seed: same initial network, games and action "
        "stream until the two agents' updates differ), mean ± 95% Student-t half-width; movement: "
        "final minus initial meta-parameter; drift: |LVC - pg| of the final meta-parameter.",
        "",
        "| game | final score: LVC - pg | curve mean: LVC - pg | gamma moved (pg; LVC) | lambda moved "
        "(pg; LVC) | gamma drift LVC vs pg | lambda drift | first curve point that differs (frames) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    n_seeds = len(config.seeds)
    for game in config.games:
        by = {(r["agent"], r["seed"]): r for r in rows if r["game"] == game}
        pairs = [
            (by[("mgrl_pg", s)], by[("mgrl_lvc", s)])
            for s in config.seeds
            if ("mgrl_pg", s) in by and ("mgrl_lvc", s) in by
        ]
        if not pairs:
            continue
        final = _fmt(*mean_t_half_width([q["final_score"] - p["final_score"] for p, q in pairs]), n_seeds)
        auc = _fmt(*mean_t_half_width([_curve_mean(q) - _curve_mean(p) for p, q in pairs]), n_seeds)

        def moved(r: dict, key: str) -> float:
            return r["meta_trace"][-1][1][key] - r["meta_trace"][0][1][key]

        cells = []
        for key in ("gamma", "lambda"):
            pg = _fmt(*mean_t_half_width([moved(p, key) for p, _ in pairs]), n_seeds, 4)
            lvc = _fmt(*mean_t_half_width([moved(q, key) for _, q in pairs]), n_seeds, 4)
            cells.append(f"{pg}; {lvc}")
        drift = [
            _fmt(
                *mean_t_half_width([abs(q["final_meta"][k] - p["final_meta"][k]) for p, q in pairs]),
                n_seeds,
                5,
            )
            for k in ("gamma", "lambda")
        ]
        first = []
        for p, q in pairs:
            differ = [a[0] for a, b in zip(p["curve"], q["curve"], strict=False) if a[1:] != b[1:]]
            first.append(str(differ[0]) if differ else "never")
        lines.append(
            f"| {game} | {final} | {auc} | {cells[0]} | {cells[1]} | {drift[0]} | {drift[1]} "
            f"| {', '.join(first)} |"
        )
    return lines


def _plot_game(rows: list[dict], config: AtariCompareConfig, game: str, out: Path, name: str) -> None:
    curves = {}
    for agent in config.agents:
        rs = [r for r in rows if r["game"] == game and r["agent"] == agent and r["curve"]]
        if rs:
            n = min(len(r["curve"]) for r in rs)
            curves[agent] = ([p[0] for p in rs[0]["curve"][:n]], [[p[2] for p in r["curve"][:n]] for r in rs])
    tag = game.split("/")[-1].lower() if "/" in game else game
    if curves:
        curves_panel(
            out / f"{name}_{tag}.png",
            curves,
            xlabel="frames",
            ylabel="raw score (mean of the last 100 games)",
            title=f"{game}: A2C, PPO and MGRL",
        )
    mgrl = [r for r in rows if r["game"] == game and r.get("meta_trace")]
    if mgrl:
        fig, axes = new_figure((10, 3.8), ncols=2)
        colours = {"mgrl_pg": "tab:blue", "mgrl_lvc": "tab:red"}
        for r in mgrl:
            frames = [f for f, _ in r["meta_trace"]]
            for ax, key in zip(axes, ("gamma", "lambda"), strict=True):
                ax.plot(
                    frames,
                    [m[key] for _, m in r["meta_trace"]],
                    color=colours.get(r["agent"]),
                    alpha=0.8,
                    label=f"{r['agent']} seed {r['seed']}",
                )
        for ax, key in zip(axes, ("gamma", "lambda"), strict=True):
            ax.set_xlabel("frames")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{game}: MGRL meta-parameters")
        save_figure(fig, out / f"{name}_{tag}_meta.png")


def compare_options() -> tuple[Option, ...]:
    """The options of the Atari and MinAtar comparisons."""
    return (
        seeds_option(),
        Option("--games", ("games",), "names", "atari/minatar: comma-separated games, e.g. pong,breakout"),
        Option("--agents", ("agents",), "names", f"atari/minatar: from {','.join(AGENTS)}"),
        Option(
            "--frames",
            ("frames",),
            "int",
            "atari/minatar: frames per run (ALE: 4 per agent step; MinAtar: 1)",
        ),
        Option("--num-envs", ("num_envs",), "int", "atari/minatar: parallel games per rollout"),
        Option("--inner-steps", ("inner_steps",), "int", "inner steps K"),
        Option("--meta-lr", ("meta_lr",), "float", "atari/minatar: MGRL meta-parameter learning rate"),
        Option("--workers", ("workers",), "int", "atari/minatar: runs in parallel processes"),
    )


COMPARISON = Comparison(
    name="atari",
    summary="A2C (SB3 reference, the suite's), PPO (SB3), MGRL-pg and MGRL-LVC on ALE games",
    config_class=AtariCompareConfig,
    run=run_atari_compare,
    table="atari_compare.md",
    options=compare_options(),
)
