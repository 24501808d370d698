"""``metagrad perf``: throughput of the engines against a Python loop, the ceiling rollouts, and
optionally large state spaces and the Atari / MinAtar agents beside stable-baselines3 (the
measurements: :mod:`metagrad.app.perf`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from metagrad.app import perf
from metagrad.app.cli.common import check_args, check_device
from metagrad.app.presenting.outputs import write_text_atomic
from metagrad.app.running.provenance import run_metadata
from metagrad.app.running.store import check_output_path
from metagrad.validation import check_int

__all__ = ["PERF_FILE", "add_parser", "run"]

PERF_FILE = "perf.json"  # what --out FOLDER receives


def run(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    check_args(lambda: check_int("--episodes", args.episodes))
    check_args(lambda: check_int("--loop-episodes", args.loop_episodes))
    out = Path(args.out) / PERF_FILE if args.out else None
    if out is not None:
        check_output_path(out)
    engine = perf.rollout_throughput(num_episodes=args.episodes, device=device)
    loop = perf.python_loop_throughput(num_episodes=args.loop_episodes)
    ratio = engine["steps_per_s"] / loop["steps_per_s"]
    print(
        f"batched rollout (S=20, A=5, H=20, B={args.episodes}, log-probs recorded, {device}, "
        f"{torch.get_num_threads()} thread(s)): {engine['steps_per_s'] / 1e6:.2f} M env-steps/s"
    )
    print(f"python loop over the Gymnasium env: {loop['steps_per_s'] / 1e3:.1f} k env-steps/s")
    print(f"speed-up: {ratio:.0f}x")
    ipd = perf.ipd_rollout_throughput(device=device)
    print(
        f"IPD engine (B=4096, H=100, no grad, float64, {device}): "
        f"{ipd['steps_per_s'] / 1e6:.2f} M joint steps/s"
    )
    ceiling = _print_ceiling(args.episodes, args.ceiling_rounds, device)
    large_s = _print_large_s(args.large_s, device) if args.large_s else None
    lola = perf.lola_dice_update_rate(device=device)
    print(
        f"LOLA-DiCE, two agents, 128 inner + 128 outer episodes of 100 steps: "
        f"{lola['updates_per_s']:.1f} simultaneous updates/s"
    )
    games = _perf_games(args)
    games_figures = {game: _perf_game(game, device) for game in games}
    maml = perf.maml_meta_iteration_time(device=device)
    print(
        "MAML meta-iteration, meta-batch 20, K = 1, 32 episodes per stage, 20x5 MDPs: "
        f"{maml['seconds_per_iteration'] * 1e3:.1f} ms"
    )
    if out is not None:
        write_text_atomic(
            out,
            json.dumps(
                {
                    "rollout": engine,
                    "python_loop": loop,
                    "speedup": ratio,
                    "ipd_rollout": ipd,
                    "lola_dice_update": lola,
                    "maml_meta_iteration": maml,
                    "ceiling": ceiling,
                    "large_s": large_s,
                    "games": games_figures,
                    **run_metadata(device),
                },
                indent=2,
                default=str,
            ),
        )
    return 0


def _print_ceiling(episodes: int, rounds: int, device: str) -> dict[str, dict[str, float]]:
    """Engine throughput against the reference (ceiling) rollouts, timed alternately."""
    if rounds < 1:
        raise SystemExit(f"metagrad: --ceiling-rounds must be >= 1, got {rounds}")
    ratios = perf.ceiling_ratios(episodes, rounds=rounds, device=device)
    for job, r in ratios.items():
        print(
            f"ceiling {job} (B={episodes}, {rounds} ABBA rounds, CPU time): engine / reference = "
            f"{r['ratio']:.3f} (median; range {r['ratio_min']:.2f}-{r['ratio_max']:.2f}; fastest rounds "
            f"{r['ratio_of_fastest']:.3f}); "
            f"engine {r['engine_steps_per_s'] / 1e6:.2f} M, "
            f"reference {r['reference_steps_per_s'] / 1e6:.2f} M steps/s"
        )
    return ratios


def _print_large_s(states: str, device: str) -> dict[str, object]:
    """One lll Loaded DiCE tabular cell (10 tasks x 20 repeats, n = 32) at every S of ``states``."""
    try:
        sizes = tuple(int(x) for x in states.split(","))
    except ValueError as exc:
        raise SystemExit(
            f"metagrad: --large-s: expected comma-separated state counts, got {states!r}"
        ) from exc
    if any(S < 1 for S in sizes):
        raise SystemExit(f"metagrad: --large-s: state counts must be >= 1, got {states!r}")
    out = perf.large_s_timings(sizes, device=device)
    for cell in out["cells"]:
        print(
            f"large S: lll loaded_dice cell, S={cell['num_states']}, A=5, 10 tasks x 20 repeats, n=32: "
            f"{cell['cell_s']:.2f} s wall, {cell['cell_cpu_s']:.2f} s CPU (drawing the tasks "
            f"{cell['tasks_s']:.2f} s; peak RSS {cell['peak_rss_mib']:.0f} MiB)"
        )
    print(
        f"large S: fitted growth exponent of the cell time over S >= 100: {out['exponent']:.2f} "
        f"(CPU time; wall time {out['exponent_wall']:.2f})"
    )
    return out


def _perf_games(args: argparse.Namespace) -> list[str]:
    """The games ``perf`` times: ALE Breakout with ``--atari``, MinAtar Breakout with ``--minatar``."""
    return [
        g for flag, g in (("atari", "breakout"), ("minatar", "MinAtar/Breakout-v1")) if getattr(args, flag)
    ]


def _perf_game(game: str, device: str) -> dict[str, Any]:
    """Env and training frames/s of the suite's agents beside stable-baselines3 on ``game``, printed."""
    ours = perf.atari_env_throughput(game)
    sb3 = perf.sb3_env_throughput(game)
    figures: dict[str, Any] = {"env": ours, "sb3_env": sb3}
    line = f"{game} env, 16 games, random actions: suite {ours['frames_per_s']:.0f} frames/s"
    if not game.lower().startswith("minatar"):
        fallback = perf.atari_env_throughput(game, backend="gymnasium")
        figures["gymnasium_env"] = fallback
        line += f" (ale-py vector env; Gymnasium AsyncVectorEnv {fallback['frames_per_s']:.0f})"
    ratio = ours["frames_per_s"] / sb3["frames_per_s"]
    print(f"{line}, SB3 vec env {sb3['frames_per_s']:.0f} frames/s: ratio {ratio:.2f}")
    training = perf.training_throughput(game, device=device)
    figures["training"] = training
    print(f"{game} training frames/s, 16 games, {device}, agents side by side (ratio to SB3 A2C):")
    for agent, entry in training.items():
        print(
            f"  {agent:<9} {entry['frames_per_s']:8.0f}  ({entry.get('ratio_to_sb3_a2c', float('nan')):.2f}x)"
        )
    return figures


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("perf", help="throughput of the batched engine against a Python loop")
    parser.add_argument("--episodes", type=int, default=4096)
    parser.add_argument("--loop-episodes", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out", default=None, metavar="FOLDER", help=f"also write the figures as JSON to FOLDER/{PERF_FILE}"
    )
    parser.add_argument(
        "--ceiling-rounds", type=int, default=11, help="engine/reference rounds, each timed ABBA (default 11)"
    )
    parser.add_argument(
        "--large-s",
        nargs="?",
        const="100,200,500,1000,2000",
        default=None,
        metavar="S,S,...",
        help="also time one tabular lll cell at these state counts (default 100,200,500,1000,2000)",
    )
    parser.add_argument(
        "--atari", action="store_true", help="also time the ALE env and A2C/MGRL/SB3 training (Breakout)"
    )
    parser.add_argument(
        "--minatar",
        action="store_true",
        help="also time the MinAtar env and A2C/MGRL/SB3 training (Breakout)",
    )
    parser.set_defaults(func=run)
