"""The ``metagrad`` command line: ``list``, ``perf``, ``bench``, ``report``, ``check``, ``compare``."""

from __future__ import annotations

import argparse
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
        print(
            f"  {'ALE/<Game>-v5':<28} any ALE game through envs.atari.AtariVector "
            "(DeepMind preprocessing, ale-py vector env or Gymnasium AsyncVectorEnv)"
        )
    if what in ("all", "presets"):
        from metagrad.bench_atari import PRESETS as ATARI_PRESETS
        from metagrad.bench_ipd import PRESETS as IPD_PRESETS

        print("bench presets (metagrad bench tabular --preset NAME):")
        for name, cfg in PRESETS.items():
            print(
                f"  {name:<13} {cfg.num_tasks} tasks x {cfg.repeats} repeats, objective {cfg.objective}, "
                f"experiments {', '.join(cfg.experiments)}"
            )
        print("bench presets (metagrad bench ipd --preset NAME):")
        for name, icfg in IPD_PRESETS.items():
            print(
                f"  {name:<13} {icfg.num_pairs} pairs x {icfg.repeats} repeats, horizon {icfg.horizon}, "
                f"n {icfg.n}, experiments {', '.join(icfg.experiments)}"
            )
        print("bench presets (metagrad bench atari --preset NAME; only when asked):")
        for name, acfg in ATARI_PRESETS.items():
            print(
                f"  {name:<13} {acfg.env}, {acfg.num_envs} games x {acfg.n_steps} steps, "
                f"K = {acfg.inner_steps}, "
                f"{acfg.repeats} estimates per estimator, reference {acfg.reference_estimator} "
                f"x{acfg.reference_scale} from {acfg.reference_repeats}"
            )
    return 0


def _cmd_perf(args: argparse.Namespace) -> int:
    from metagrad.perf import (
        ipd_rollout_throughput,
        lola_dice_update_rate,
        maml_meta_iteration_time,
        python_loop_throughput,
        rollout_throughput,
    )
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
    ipd = ipd_rollout_throughput(device=device)
    print(
        f"IPD engine (B=4096, H=100, no grad, float64, {device}): "
        f"{ipd['steps_per_s'] / 1e6:.2f} M joint steps/s"
    )
    lola = lola_dice_update_rate(device=device)
    print(
        f"LOLA-DiCE, two agents, 128 inner + 128 outer episodes of 100 steps: "
        f"{lola['updates_per_s']:.1f} simultaneous updates/s"
    )
    if args.atari:
        from metagrad.perf import a2c_training_throughput, atari_env_throughput

        ale = atari_env_throughput()
        fallback = atari_env_throughput(backend="gymnasium")
        print(
            "Atari (breakout, 16 games, random actions): "
            f"ale-py vector env {ale['frames_per_s']:.0f} frames/s, "
            f"Gymnasium AsyncVectorEnv {fallback['frames_per_s']:.0f} frames/s"
        )
        for agent in ("a2c", "mgrl"):
            rate = a2c_training_throughput(agent=agent, device=device)
            print(
                f"{agent.upper()} training (16 games x 5 steps, {device}): "
                f"{rate['frames_per_s']:.0f} frames/s"
            )
    maml = maml_meta_iteration_time(device=device)
    print(
        "MAML meta-iteration, meta-batch 20, K = 1, 32 episodes per stage, 20x5 MDPs: "
        f"{maml['seconds_per_iteration'] * 1e3:.1f} ms"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "rollout": engine,
                    "python_loop": loop,
                    "speedup": ratio,
                    "ipd_rollout": ipd,
                    "lola_dice_update": lola,
                    "maml_meta_iteration": maml,
                    **run_metadata(device),
                },
                indent=2,
                default=str,
            )
        )
    return 0


def _split(text: str | None) -> tuple[str, ...] | None:
    return None if not text else tuple(x.strip() for x in text.split(",") if x.strip())


def _bench_runs(args: argparse.Namespace) -> list[tuple[str, object]]:
    """The validated ``(suite, config)`` runs of a ``bench`` call (nothing runs before this)."""
    from metagrad.bench_atari import EXPERIMENTS as ATARI_EXPERIMENTS
    from metagrad.bench_ipd import EXPERIMENTS as IPD_EXPERIMENTS
    from metagrad.bench_tabular import EXPERIMENTS as TABULAR_EXPERIMENTS
    from metagrad.suites import DEFAULT_RUNS, make_config

    if args.suite is None and args.preset is not None:
        raise SystemExit("metagrad: --preset needs a suite: metagrad bench tabular|ipd --preset NAME")
    plan = [(args.suite, args.preset)] if args.suite else list(DEFAULT_RUNS)
    experiments = _split(args.experiments)
    known = {"tabular": TABULAR_EXPERIMENTS, "ipd": IPD_EXPERIMENTS, "atari": ATARI_EXPERIMENTS}
    if experiments:
        allowed = set(known[args.suite]) if args.suite else set(TABULAR_EXPERIMENTS) | set(IPD_EXPERIMENTS)
        unknown = sorted(set(experiments) - allowed)
        if unknown:
            raise SystemExit(f"metagrad: bad bench configuration: experiments: unknown {unknown}")
    runs = []
    for suite, preset in plan:
        overrides: dict = {k: getattr(args, k) for k in ("seed", "repeats") if getattr(args, k) is not None}
        if args.num_tasks is not None and suite != "atari":
            overrides["num_pairs" if suite == "ipd" else "num_tasks"] = args.num_tasks
        if args.inner_steps is not None:
            overrides["lookahead_steps" if suite == "ipd" else "inner_steps"] = args.inner_steps
        if args.n is not None:
            overrides["num_envs" if suite == "atari" else "n"] = args.n
        if args.env is not None:
            overrides["env"] = args.env
        estimators = _split(args.estimators)
        if estimators:
            overrides["estimators"] = estimators
            if suite == "tabular":
                overrides["sweep_estimators"] = estimators
        if experiments:
            mine = tuple(e for e in experiments if e in known[suite])
            if not mine:
                continue
            overrides["experiments"] = mine
        try:
            runs.append((suite, make_config(suite, preset, **overrides)))
        except (ValueError, TypeError) as exc:
            raise SystemExit(f"metagrad: bad bench configuration: {exc}") from exc
    return runs


def _store_path(args: argparse.Namespace) -> Path:
    return Path(args.store or "results/rows.jsonl")


def _cmd_bench(args: argparse.Namespace) -> int:
    from metagrad.suites import run_bench, write_run_outputs

    device = _check_device(args.device)
    runs = _bench_runs(args)
    store = _store_path(args)
    if args.fresh and store.exists():
        store.unlink()
    try:
        results = run_bench(
            runs,
            store,
            backend=args.backend,
            workers=args.workers,
            address=args.address,
            device=device,
            progress=not args.no_progress,
            plugins=tuple(args.imports),
        )
    except ValueError as exc:
        raise SystemExit(f"metagrad: {exc}") from exc
    written = write_run_outputs(results, store.parent)
    total = sum(len(rows) for rows in results.values())
    print(
        f"{total} cells in {store}; leaderboard {written['leaderboard']}; report {written['report']}; "
        f"per-run summaries and plots in {store.parent}/"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from metagrad.leaderboard import evaluate_claims
    from metagrad.store import ResultStore
    from metagrad.suites import write_run_outputs

    store = _store_path(args)
    loaded = ResultStore(store).load(warn=False)
    for problem in loaded.problems:
        print(f"metagrad: {problem}", file=sys.stderr)
    if not loaded.rows:
        raise SystemExit(f"metagrad: no result rows in {store}; run `metagrad bench` first")
    results: dict = {}
    for row in loaded.rows.values():
        results.setdefault((row["bench"], row["preset"]), []).append(row)
    written = write_run_outputs(results, store.parent)
    for claim in evaluate_claims([r for rows in results.values() for r in rows]):
        print(f"{claim.verdict:<5} {claim.name}: {claim.evidence}")
    print(f"report {written['report']}; leaderboard {written['leaderboard']}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from metagrad.check import check_against

    device = _check_device(args.device)
    try:
        movements, fresh, problems = check_against(
            args.against,
            backend=args.backend,
            workers=args.workers,
            address=args.address,
            device=device,
            plugins=tuple(args.imports),
            z=args.z,
            progress=not args.no_progress,
            fresh_out=args.out,
        )
    except ValueError as exc:
        raise SystemExit(f"metagrad: {exc}") from exc
    for problem in problems:
        print(f"metagrad: {problem}", file=sys.stderr)
    for movement in movements:
        print(f"MOVED {movement}")
    status = "FAIL" if movements else "OK"
    print(f"{status}: {len(fresh)} cells recomputed, {len(movements)} metric(s) moved beyond their interval")
    return 1 if movements else 0


def _compare_overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    overrides: dict = {}
    if args.seeds:
        try:
            overrides["seeds"] = tuple(int(seed) for seed in args.seeds.split(","))
        except ValueError as exc:
            raise SystemExit(
                f"metagrad: --seeds expects comma-separated integers, got {args.seeds!r}"
            ) from exc
    for name in names:
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    return overrides


def _cmd_compare(args: argparse.Namespace) -> int:
    device = _check_device(args.device)
    if args.suite == "atari":
        from metagrad.compare_atari import AtariCompareConfig as Config
        from metagrad.compare_atari import run_atari_compare as run

        overrides = _compare_overrides(args, ("frames", "inner_steps"))
        for name in ("games", "agents"):
            if getattr(args, name):
                overrides[name] = _split(getattr(args, name))
        if args.n is not None:
            overrides["num_envs"] = args.n
        table = "atari_compare.md"
    elif args.suite == "maml":
        from metagrad.compare_maml import MAMLCompareConfig as Config
        from metagrad.compare_maml import run_maml_compare as run

        overrides = _compare_overrides(
            args,
            (
                "iterations",
                "distribution",
                "horizon",
                "inner_steps",
                "inner_lr",
                "n",
                "meta_batch",
                "lr",
                "optimizer",
            ),
        )
        if args.learners:
            overrides["learners"] = tuple(args.learners.split(","))
        table = "maml_compare.md"
    else:
        from metagrad.compare_ipd import IPDCompareConfig as Config
        from metagrad.compare_ipd import run_ipd_compare as run

        overrides = _compare_overrides(
            args, ("iterations", "game", "horizon", "lookahead_lr", "lr", "optimizer")
        )
        if args.pairings:
            overrides["pairings"] = tuple(args.pairings.split(","))
        if args.n is not None:
            overrides["n_inner"] = overrides["n_outer"] = args.n
        table = "ipd_compare.md"
    try:
        config = Config(**overrides)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"metagrad: bad compare configuration: {exc}") from exc
    rows = run(config, args.out, device=device, progress=not args.no_progress)
    print(Path(args.out, table).read_text())
    print(f"wrote {len(rows)} runs to {args.out}/ (JSONL rows, curves CSV, table, plots)")
    return 0


def _add_backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="local", choices=["local", "serial", "ray"])
    parser.add_argument("--workers", type=int, default=2, help="processes (local) or CPUs of a local Ray")
    parser.add_argument("--address", default=None, help="ray: address of a running cluster")
    parser.add_argument("--device", default="cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metagrad",
        description="Benchmark suite for gradient bias in meta-reinforcement learning: meta-gradient "
        "estimators scored against exact meta-gradients.",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (e.g. one that registers your estimator); repeatable",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="list estimators, environments and presets")
    p_list.add_argument("what", nargs="?", default="all", choices=["all", "estimators", "envs", "presets"])
    p_list.set_defaults(func=_cmd_list)

    p_perf = sub.add_parser("perf", help="throughput of the batched engine against a Python loop")
    p_perf.add_argument("--episodes", type=int, default=4096)
    p_perf.add_argument("--loop-episodes", type=int, default=300)
    p_perf.add_argument("--device", default="cpu")
    p_perf.add_argument("--out", default=None, help="also write the figures as JSON")
    p_perf.add_argument("--atari", action="store_true", help="also time the Atari env and A2C/MGRL training")
    p_perf.set_defaults(func=_cmd_perf)

    p_bench = sub.add_parser(
        "bench",
        help="the leaderboard: score estimators (default suite: tabular liu2022 + ipd foerster2018)",
    )
    p_bench.add_argument("suite", nargs="?", default=None, choices=["tabular", "ipd", "atari"])
    p_bench.add_argument(
        "--preset", default=None, help="with a suite: liu2022|quick (tabular), foerster2018|quick (ipd)"
    )
    p_bench.add_argument(
        "--store", "--out", dest="store", default=None, help="result store (default results/rows.jsonl)"
    )
    p_bench.add_argument("--fresh", action="store_true", help="delete the store first instead of resuming")
    _add_backend_args(p_bench)
    p_bench.add_argument("--seed", type=int, default=None)
    p_bench.add_argument("--num-tasks", type=int, default=None, help="tasks (tabular) or policy pairs (ipd)")
    p_bench.add_argument("--repeats", type=int, default=None)
    p_bench.add_argument("--n", type=int, default=None, help="episodes per estimated stage (decomposition)")
    p_bench.add_argument(
        "--inner-steps",
        dest="inner_steps",
        type=int,
        default=None,
        help="K (tabular) / lookahead steps (ipd)",
    )
    p_bench.add_argument("--env", default=None, help="environment id of the suite")
    p_bench.add_argument("--estimators", default=None, help="comma-separated estimator names")
    p_bench.add_argument(
        "--experiments",
        default=None,
        help="comma-separated; tabular: decomposition,sweep_n,sweep_k,sweep_alpha,hessian_bias; "
        "ipd: decomposition,sweep_n,sweep_lr,sweep_steps,off_policy",
    )
    p_bench.add_argument("--no-progress", action="store_true")
    p_bench.set_defaults(func=_cmd_bench)

    p_report = sub.add_parser("report", help="reproduction report and leaderboard from the stored rows")
    p_report.add_argument("--store", default=None, help="result store (default results/rows.jsonl)")
    p_report.set_defaults(func=_cmd_report)

    p_check = sub.add_parser("check", help="recompute stored cells; exit 1 if a metric moved beyond its CI")
    p_check.add_argument("--against", required=True, help="a result file written by metagrad bench")
    p_check.add_argument("--z", type=float, default=1.96, help="half-width in standard errors (default 1.96)")
    p_check.add_argument("--out", default=None, help="also store the fresh rows here")
    _add_backend_args(p_check)
    p_check.add_argument("--no-progress", action="store_true")
    p_check.set_defaults(func=_cmd_check)

    p_cmp = sub.add_parser(
        "compare", help="train learners against each other (ipd: naive vs LOLA; maml: one per estimator)"
    )
    p_cmp.add_argument("suite", choices=["ipd", "maml", "atari"])
    p_cmp.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    p_cmp.add_argument("--iterations", type=int, default=None)
    p_cmp.add_argument("--horizon", type=int, default=None)
    p_cmp.add_argument("--lr", type=float, default=None, help="outer optimiser step size")
    p_cmp.add_argument("--optimizer", default=None, help="adam or sgd")
    p_cmp.add_argument(
        "--n", type=int, default=None, help="episodes per estimated stage / batch (atari: parallel games)"
    )
    p_cmp.add_argument("--pairings", default=None, help="ipd: e.g. NL-NL,LOLA-LOLA,LOLA-DiCE")
    p_cmp.add_argument("--game", default=None, help="ipd: ipd or imp")
    p_cmp.add_argument("--lookahead-lr", dest="lookahead_lr", type=float, default=None, help="ipd")
    p_cmp.add_argument("--learners", default=None, help="maml: e.g. exact,dice,lvc,pg,fomaml")
    p_cmp.add_argument("--distribution", default=None, help="maml: shared_transitions or random")
    p_cmp.add_argument("--inner-steps", dest="inner_steps", type=int, default=None, help="maml: K")
    p_cmp.add_argument("--inner-lr", dest="inner_lr", type=float, default=None, help="maml: alpha")
    p_cmp.add_argument("--meta-batch", dest="meta_batch", type=int, default=None, help="maml")
    p_cmp.add_argument("--games", default=None, help="atari: comma-separated, e.g. pong,breakout")
    p_cmp.add_argument("--agents", default=None, help="atari: sb3_a2c,a2c,mgrl_pg,mgrl_lvc")
    p_cmp.add_argument("--frames", type=int, default=None, help="atari: frames per run (4 per agent step)")
    p_cmp.add_argument("--out", default="results")
    p_cmp.add_argument("--device", default="cpu")
    p_cmp.add_argument("--no-progress", action="store_true")
    p_cmp.set_defaults(func=_cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    import importlib

    args = build_parser().parse_args(argv)
    _set_threads(args.threads)
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SystemExit(f"metagrad: --import {module}: {exc}") from exc
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
