"""The ``metagrad`` command line: ``list``, ``perf``, ``bench``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

__all__ = ["main"]


def _set_threads(n: int) -> None:
    # 2-core machines: torch's default intra-op threads can be 10-400x slower under contention.
    if n < 1:
        raise SystemExit(f"metagrad: --threads must be >= 1, got {n}")
    torch.set_num_threads(n)


def _check_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"metagrad: --device {device} requested but CUDA is not available")
    if not (device == "cpu" or device.startswith("cuda")):
        raise SystemExit(f"metagrad: --device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return device


def _cmd_list(args: argparse.Namespace) -> int:
    from envs import ENV_IDS
    from metagrad.bench_tabular import PRESETS
    from metagrad.estimators import ESTIMATORS

    what = args.what
    if what in ("all", "estimators"):
        print("estimators:")
        for info in ESTIMATORS.values():
            print(f"  {info.name:<16} {info.summary}")
            print(
                f"  {'':<16} unbiased orders: {info.unbiased_orders}; critic: {info.uses_critic}; "
                f"off-policy: {info.off_policy}; ref: {info.reference}"
            )
    if what in ("all", "envs"):
        print("environments:")
        for env_id, desc in ENV_IDS.items():
            print(f"  {env_id:<28} {desc}")
    if what in ("all", "presets"):
        print("bench presets (metagrad bench tabular --preset NAME):")
        for name, cfg in PRESETS.items():
            print(
                f"  {name:<10} {cfg.num_tasks} tasks x {cfg.repeats} repeats, objective {cfg.objective}, "
                f"experiments {', '.join(cfg.experiments)}"
            )
    return 0


def _cmd_perf(args: argparse.Namespace) -> int:
    from metagrad.perf import python_loop_throughput, rollout_throughput
    from metagrad.provenance import run_metadata

    device = _check_device(args.device)
    engine = rollout_throughput(num_episodes=args.episodes, device=device)
    loop = python_loop_throughput(num_episodes=args.loop_episodes)
    ratio = engine["steps_per_s"] / loop["steps_per_s"]
    print(
        f"batched rollout (S=20, A=5, H=20, B={args.episodes}, log-probs recorded, {device}, "
        f"{torch.get_num_threads()} thread(s)): {engine['steps_per_s'] / 1e6:.2f} M env-steps/s"
    )
    print(f"python loop over the Gymnasium env: {loop['steps_per_s'] / 1e3:.1f} k env-steps/s")
    print(f"speed-up: {ratio:.0f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {"rollout": engine, "python_loop": loop, "speedup": ratio, **run_metadata(device)},
                indent=2,
                default=str,
            )
        )
    return 0


def _bench_config(args: argparse.Namespace):
    from metagrad.bench_tabular import PRESETS

    if args.preset not in PRESETS:
        raise SystemExit(f"metagrad: unknown preset {args.preset!r}; known: {sorted(PRESETS)}")
    overrides = {
        k: getattr(args, k) for k in ("seed", "num_tasks", "repeats") if getattr(args, k) is not None
    }
    if args.estimators:
        overrides["estimators"] = tuple(args.estimators.split(","))
        overrides["sweep_estimators"] = tuple(args.estimators.split(","))
    if args.experiments:
        overrides["experiments"] = tuple(args.experiments.split(","))
    try:
        return dataclasses.replace(PRESETS[args.preset], **overrides)
    except ValueError as exc:
        raise SystemExit(f"metagrad: bad bench configuration: {exc}") from exc


def _cmd_bench(args: argparse.Namespace) -> int:
    from metagrad.bench_tabular import run_tabular_bench

    device = _check_device(args.device)
    config = _bench_config(args)
    out = Path(args.out or f"results/tabular_{config.preset}.jsonl")
    if out.exists() and not args.append:
        out.unlink()
    rows = run_tabular_bench(config, out, device=device, progress=not args.no_progress)
    print(f"wrote {len(rows)} rows to {out}; summary {out.parent / (out.stem + '_summary.md')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metagrad",
        description="Benchmark suite for gradient bias in meta-reinforcement learning: meta-gradient "
        "estimators scored against exact meta-gradients.",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="list estimators, environments and presets")
    p_list.add_argument("what", nargs="?", default="all", choices=["all", "estimators", "envs", "presets"])
    p_list.set_defaults(func=_cmd_list)

    p_perf = sub.add_parser("perf", help="throughput of the batched engine against a Python loop")
    p_perf.add_argument("--episodes", type=int, default=4096)
    p_perf.add_argument("--loop-episodes", type=int, default=300)
    p_perf.add_argument("--device", default="cpu")
    p_perf.add_argument("--out", default=None, help="also write the figures as JSON")
    p_perf.set_defaults(func=_cmd_perf)

    p_bench = sub.add_parser("bench", help="run a benchmark (default: the tabular liu2022 preset)")
    p_bench.add_argument("suite", nargs="?", default="tabular", choices=["tabular"])
    p_bench.add_argument("--preset", default="liu2022")
    p_bench.add_argument("--out", default=None, help="JSONL file (default results/tabular_PRESET.jsonl)")
    p_bench.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    p_bench.add_argument("--device", default="cpu")
    p_bench.add_argument("--seed", type=int, default=None)
    p_bench.add_argument("--num-tasks", type=int, default=None)
    p_bench.add_argument("--repeats", type=int, default=None)
    p_bench.add_argument("--estimators", default=None, help="comma-separated estimator names")
    p_bench.add_argument(
        "--experiments",
        default=None,
        help="comma-separated: decomposition,sweep_n,sweep_k,sweep_alpha,hessian_bias",
    )
    p_bench.add_argument("--no-progress", action="store_true")
    p_bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _set_threads(args.threads)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
