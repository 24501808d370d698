"""The ``metagrad`` command line: ``list``, ``perf``, ``bench``, ``report``, ``check``, ``compare``.

``bench`` and ``compare`` are built from the plugin registries (:data:`metagrad.app.suites.SUITES`,
:data:`metagrad.app.compare.COMPARISONS`): their choices, presets and options come from the
plugins, so adding a suite or a comparison needs no change here.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from metagrad.app import perf
from metagrad.app.backends import BackendError, PluginError, configure_allocator, load_plugin
from metagrad.app.check import check_against
from metagrad.app.compare import COMPARISONS, get_comparison
from metagrad.app.memory import InsufficientMemory
from metagrad.app.options import Option, collect_overrides
from metagrad.app.outputs import write_text_atomic
from metagrad.app.provenance import run_metadata
from metagrad.app.report import failed, output_paths, output_prefix, seed_table, write_outputs
from metagrad.app.runner import BenchInterrupted, CellsFailed, RunResults, run_bench
from metagrad.app.store import ResultStore, StoreError, check_output_path
from metagrad.app.suites import SUITES, default_runs, get_suite
from metagrad.envs import ENV_IDS
from metagrad.estimators import ESTIMATORS
from metagrad.validation import check_int, check_real

__all__ = ["build_parser", "main", "parse_seeds"]

DEFAULT_STORE = "results/rows.jsonl"


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
    what = args.what
    if what in ("all", "estimators"):
        print("estimators:")
        for info in ESTIMATORS.values():
            print(f"  {info.name:<16} {info.summary}")
            print(
                f"  {'':<16} unbiased orders: {info.unbiasedness}; critic: {info.uses_critic}; "
                f"off-policy: {info.off_policy}; ref: {info.reference}"
                + (f"; params: {', '.join(info.params)}" if info.params else "")
            )
    if what in ("all", "envs"):
        print("environments:")
        for env_id, desc in ENV_IDS.items():
            print(f"  {env_id:<28} {desc}")
        print(
            f"  {'ALE/<Game>-v5':<28} any ALE game through metagrad.envs.atari.AtariVector "
            "(DeepMind preprocessing, ale-py vector env or Gymnasium AsyncVectorEnv)"
        )
        print(
            f"  {'MinAtar/<Game>-v1':<28} the five MinAtar games through metagrad.envs.minatar.MinAtarVector "
            "(10x10xC grids; extra metagrad[minatar])"
        )
    if what in ("all", "presets", "suites"):
        for suite in SUITES.values():
            when = "in the default run" if suite.in_default_run else "only when asked"
            print(f"suite {suite.name} ({when}): {suite.summary}")
            print(f"  presets (metagrad bench {suite.name} --preset NAME; default {suite.default_preset}):")
            for name, config in suite.presets.items():
                print(f"    {name:<13} {suite.describe_preset(config)}")
            print(f"  experiments: {', '.join(suite.experiments)}")
    return 0


def _cmd_perf(args: argparse.Namespace) -> int:
    device = _check_device(args.device)
    _check_args(lambda: check_int("--episodes", args.episodes))
    _check_args(lambda: check_int("--loop-episodes", args.loop_episodes))
    if args.out:
        check_output_path(args.out)
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
    if args.out:
        write_text_atomic(
            args.out,
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
    for cell in out["cells"]:  # type: ignore[union-attr]
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


def _given(args: argparse.Namespace, options: Iterable[Option]) -> dict[str, str]:
    """The option values given on the command line, by destination."""
    return {o.dest: getattr(args, o.dest) for o in options if getattr(args, o.dest, None) is not None}


def parse_seeds(text: str) -> list[int]:
    """Run seeds from ``"0-4"``, ``"0,2,5"`` or ``"0-2,7"`` (in order, without repeats)."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            low, _, high = part.partition("-") if not part.startswith("-") else (part, "", "")
            first, last = int(low), int(high) if high else int(low)
            if first < 0 or last < first:
                raise ValueError(part)
            seeds += [s for s in range(first, last + 1) if s not in seeds]
    except ValueError as exc:
        raise SystemExit(f"metagrad: --seeds: expected e.g. 0-4 or 0,1,2 (seeds >= 0), got {text!r}") from exc
    if not seeds:
        raise SystemExit(f"metagrad: --seeds: no seeds in {text!r}")
    return seeds


def _bench_runs(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The validated ``(suite, config)`` runs of a ``bench`` call (nothing runs before this);
    with ``--seeds``, every run once per seed."""
    plan = [(args.suite, args.preset)] if args.suite else [(s, args.preset or p) for s, p in default_runs()]
    every = {o.dest: o for s in SUITES.values() for o in s.options}
    given = _given(args, every.values())
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if seeds is not None and "seed" in given:
        raise SystemExit("metagrad: give either --seed or --seeds, not both")
    experiments = tuple(x.strip() for x in (args.experiments or "").split(",") if x.strip())
    suites = [get_suite(name) for name, _ in plan]
    if experiments:
        allowed = {e for s in suites for e in s.experiments}
        unknown = sorted(set(experiments) - allowed)
        if unknown:
            raise SystemExit(f"metagrad: bad bench configuration: experiments: unknown {unknown}")
    for dest in given:
        if not any(s.option(dest) for s in suites):
            names = ", ".join(s.name for s in suites)
            raise SystemExit(f"metagrad: --{dest.replace('_', '-')} is not an option of suite(s) {names}")
    runs = []
    for suite, (_, preset) in zip(suites, plan, strict=True):
        if preset is not None and preset not in suite.presets:
            raise SystemExit(
                f"metagrad: bad bench configuration: preset: unknown preset {preset!r} for {suite.name}; "
                f"known: {sorted(suite.presets)}"
            )
        try:
            overrides = collect_overrides(suite.options, given)
        except ValueError as exc:
            raise SystemExit(f"metagrad: {exc}") from exc
        if experiments:
            mine = tuple(e for e in experiments if e in suite.experiments)
            if not mine:
                continue
            overrides["experiments"] = mine
        for seed in seeds or [None]:
            if seed is not None:
                overrides["seed"] = seed
            try:
                runs.append((suite.name, suite.config(preset, **overrides)))
            except (ValueError, TypeError) as exc:
                raise SystemExit(f"metagrad: bad bench configuration: {exc}") from exc
    return runs


def _store_path(args: argparse.Namespace) -> Path:
    return Path(args.store or DEFAULT_STORE)


def _print_written(written: Any, total: int, store: Path) -> None:
    table = f"; seed table {written['seed_table']}" if "seed_table" in written.paths else ""
    print(
        f"{total} cells in {store}; leaderboard {written['leaderboard']}; report {written['report']}"
        f"{table}; per-run summaries and plots in {store.parent}/"
    )


def _check_outputs(store: Path) -> None:
    """The store and the fixed outputs beside it can be used (checked before any work)."""
    for path in (store, *output_paths(store).values()):
        check_output_path(path)


def _store_results(store: Path) -> RunResults:
    """Every valid row of ``store`` by ``(suite, preset)`` (problems printed to stderr)."""
    loaded = ResultStore(store).load(warn=False)
    for problem in loaded.problems:
        print(f"metagrad: {problem}", file=sys.stderr)
    results: RunResults = {}
    for row in loaded.rows.values():
        results.setdefault((row.bench, row.preset), []).append(row)
    return results


def _cmd_bench(args: argparse.Namespace) -> int:
    device = _check_device(args.device)
    runs = _bench_runs(args)
    store = _store_path(args)
    _check_outputs(store)
    failed: CellsFailed | None = None
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
            fresh=args.fresh,
        )
    except CellsFailed as exc:
        failed, results = exc, exc.results
    except ValueError as exc:
        raise SystemExit(f"metagrad: {exc}") from exc
    # the outputs reflect the whole store, never only this run's rows
    everything = _store_results(store) or results
    written = write_outputs(everything, store.parent, prefix=output_prefix(store))
    ran = sum(len(rows) for rows in results.values())
    total = sum(len(rows) for rows in everything.values())
    if total != ran:
        print(
            f"metagrad: this run scored or reused {ran} cells; the outputs cover all {total} rows of {store}"
        )
    if args.suite:  # a suite asked for by name: print its run's summary table too
        for suite, preset in results:
            summary = store.parent / f"{output_prefix(store)}{suite}_{preset}_summary.md"
            if summary.exists():
                print(summary.read_text())
    _print_written(written, total, store)
    if failed is not None:
        raise SystemExit(
            f"metagrad: {len(failed.failures)} cell(s) failed and were not stored (listed above); "
            "they are retried when the same command runs again"
        )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    store = _store_path(args)
    _check_outputs(store)
    results = _store_results(store)
    if not results:
        raise SystemExit(f"metagrad: no result rows in {store}; run `metagrad bench` first")
    present = sorted({r.seed for rows in results.values() for r in rows})
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if seeds is not None:
        missing = sorted(set(seeds) - set(present))
        if missing:
            raise SystemExit(f"metagrad: --seeds: no rows of seed(s) {missing} in {store} (it has {present})")
    written = write_outputs(results, store.parent, seeds, prefix=output_prefix(store))
    for seed, claims in written.claims.items():
        for claim in claims:
            print(f"seed {seed} {claim.verdict:<12} {claim.name}: {claim.evidence}")
    if len(written.claims) > 1:
        print(seed_table(written.claims))
    _print_written(written, sum(len(v) for v in results.values()), store)
    failures = failed(written.claims)
    if args.strict and failures:
        print(
            "metagrad: --strict: FAIL in " + ", ".join(f"{name} (seed {seed})" for seed, name in failures),
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    device = _check_device(args.device)
    _check_args(lambda: check_real("--z", args.z, minimum=0.0, open_min=True))
    failures = []
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
    except CellsFailed as exc:
        (movements, fresh, problems), failures = exc.results, exc.failures
    except ValueError as exc:
        raise SystemExit(f"metagrad: {exc}") from exc
    for problem in problems:
        print(f"metagrad: {problem}", file=sys.stderr)
    for movement in movements:
        print(f"MOVED {movement}")
    for failure in failures:
        print(f"FAILED {failure}")
    status = "FAIL" if movements or failures else "OK"
    print(
        f"{status}: {len(fresh)} cells recomputed, {len(movements)} metric(s) moved beyond their interval"
        + (f", {len(failures)} cell(s) could not be recomputed" if failures else "")
    )
    return 1 if movements or failures else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    device = _check_device(args.device)
    comparison, config = _compare_config(args)
    check_output_path(Path(args.out) / comparison.table_path(args.out).name)
    rows = comparison.run(config, args.out, device=device, progress=not args.no_progress)
    print(comparison.table_path(args.out).read_text())
    print(f"wrote {len(rows)} runs to {args.out}/ (JSONL rows, curves CSV, table, plots)")
    return 0


def _compare_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """The comparison and its validated config of a ``compare`` call (nothing runs before this)."""
    comparison = get_comparison(args.suite)
    every = {o.dest: o for c in COMPARISONS.values() for o in c.options}
    given = _given(args, every.values())
    for dest in given:
        if not any(o.dest == dest for o in comparison.options):
            raise SystemExit(
                f"metagrad: --{dest.replace('_', '-')} is not an option of compare {comparison.name}"
            )
    try:
        config = comparison.config_class(**collect_overrides(comparison.options, given))
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"metagrad: bad compare configuration: {exc}") from exc
    return comparison, config


def _add_backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="local", choices=["local", "serial", "ray"])
    parser.add_argument("--workers", type=int, default=2, help="processes (local) or CPUs of a local Ray")
    parser.add_argument("--address", default=None, help="ray: address of a running cluster")
    parser.add_argument("--device", default="cpu")


def _add_plugin_options(parser: argparse.ArgumentParser, owners: dict[str, tuple[Option, ...]]) -> None:
    """One ``--flag`` per distinct option of the plugins, its help naming the plugins that take it."""
    by_flag: dict[str, list[tuple[str, Option]]] = {}
    for owner, options in owners.items():
        for option in options:
            by_flag.setdefault(option.flag, []).append((owner, option))
    for flag, uses in by_flag.items():
        helps = dict.fromkeys(option.help for _, option in uses)
        text = "; ".join(helps) + f" [{', '.join(owner for owner, _ in uses)}]"
        parser.add_argument(flag, dest=uses[0][1].dest, default=None, metavar="VALUE", help=text)


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

    p_list = sub.add_parser("list", help="list estimators, environments, suites and their presets")
    p_list.add_argument(
        "what", nargs="?", default="all", choices=["all", "estimators", "envs", "presets", "suites"]
    )
    p_list.set_defaults(func=_cmd_list)

    p_perf = sub.add_parser("perf", help="throughput of the batched engine against a Python loop")
    p_perf.add_argument("--episodes", type=int, default=4096)
    p_perf.add_argument("--loop-episodes", type=int, default=300)
    p_perf.add_argument("--device", default="cpu")
    p_perf.add_argument("--out", default=None, help="also write the figures as JSON")
    p_perf.add_argument(
        "--ceiling-rounds", type=int, default=11, help="engine/reference rounds, each timed ABBA (default 11)"
    )
    p_perf.add_argument(
        "--large-s",
        nargs="?",
        const="100,200,500,1000,2000",
        default=None,
        metavar="S,S,...",
        help="also time one tabular lll cell at these state counts (default 100,200,500,1000,2000)",
    )
    p_perf.add_argument(
        "--atari", action="store_true", help="also time the ALE env and A2C/MGRL/SB3 training (Breakout)"
    )
    p_perf.add_argument(
        "--minatar",
        action="store_true",
        help="also time the MinAtar env and A2C/MGRL/SB3 training (Breakout)",
    )
    p_perf.set_defaults(func=_cmd_perf)

    default = " + ".join(f"{s} {p}" for s, p in default_runs())
    p_bench = sub.add_parser("bench", help=f"the leaderboard: score estimators (default suite: {default})")
    p_bench.add_argument("suite", nargs="?", default=None, choices=list(SUITES))
    presets = "; ".join(f"{s.name}: {'|'.join(s.presets)}" for s in SUITES.values())
    p_bench.add_argument(
        "--preset",
        default=None,
        help=f"a preset of the suite (without a suite: of every default suite); {presets}",
    )
    p_bench.add_argument(
        "--store", "--out", dest="store", default=None, help=f"result store (default {DEFAULT_STORE})"
    )
    p_bench.add_argument("--fresh", action="store_true", help="delete the store first instead of resuming")
    _add_backend_args(p_bench)
    _add_plugin_options(p_bench, {s.name: s.options for s in SUITES.values()})
    experiments = "; ".join(f"{s.name}: {','.join(s.experiments)}" for s in SUITES.values())
    p_bench.add_argument("--experiments", default=None, help=f"comma-separated; {experiments}")
    p_bench.add_argument("--no-progress", action="store_true")
    p_bench.add_argument(
        "--seeds",
        default=None,
        help="run every suite once per run seed (e.g. 0-4 or 0,1,2) into one store; also writes "
        "seed_table.md, the verdicts and fitted numbers of every claim per seed",
    )
    p_bench.set_defaults(func=_cmd_bench)

    p_report = sub.add_parser("report", help="reproduction report and leaderboard from the stored rows")
    p_report.add_argument("--store", default=None, help=f"result store (default {DEFAULT_STORE})")
    p_report.add_argument(
        "--seeds",
        default=None,
        help="judge the claims on these run seeds of the store (e.g. 0-4; default: every seed) and "
        "print / write the seed table (seed_table.md) when there are several",
    )
    p_report.add_argument("--strict", action="store_true", help="exit 1 when any claim FAILs")
    p_report.set_defaults(func=_cmd_report)

    p_check = sub.add_parser("check", help="recompute stored cells; exit 1 if a metric moved beyond its CI")
    p_check.add_argument("--against", required=True, help="a result file written by metagrad bench")
    p_check.add_argument("--z", type=float, default=1.96, help="half-width in standard errors (default 1.96)")
    p_check.add_argument("--out", default=None, help="also store the fresh rows here")
    _add_backend_args(p_check)
    p_check.add_argument("--no-progress", action="store_true")
    p_check.set_defaults(func=_cmd_check)

    summaries = "; ".join(f"{c.name}: {c.summary}" for c in COMPARISONS.values())
    p_cmp = sub.add_parser("compare", help=f"train learners against each other ({summaries})")
    p_cmp.add_argument("suite", choices=list(COMPARISONS))
    _add_plugin_options(p_cmp, {c.name: c.options for c in COMPARISONS.values()})
    p_cmp.add_argument("--out", default="results")
    p_cmp.add_argument("--device", default="cpu")
    p_cmp.add_argument("--no-progress", action="store_true")
    p_cmp.set_defaults(func=_cmd_compare)
    return parser


def _check_args(check: Callable[[], object]) -> None:
    try:
        check()
    except ValueError as exc:
        raise SystemExit(f"metagrad: {exc}") from exc


def _resume_line(argv: list[str], exc: KeyboardInterrupt, signum: int) -> str:
    """The one line printed on Ctrl-C / SIGTERM: what was kept and the command that goes on."""
    name = signal.Signals(signum).name
    again = shlex.join(["metagrad", *(a for a in argv if a != "--fresh")])
    if isinstance(exc, BenchInterrupted):
        return f"metagrad: interrupted ({name}); {exc}; resume with: {again}"
    if "bench" in argv:
        return f"metagrad: interrupted ({name}); the cells already stored are kept; resume with: {again}"
    return f"metagrad: interrupted ({name}); nothing was stored; run again with: {again}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        # the first SIGINT / SIGTERM ends the run cleanly; later ones wait for that to finish
        received.append(signum)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        signum = received[0] if received else signal.SIGINT
        print(_resume_line(argv, exc, signum), file=sys.stderr)
        return 128 + signum
    except (StoreError, InsufficientMemory, BackendError, PluginError, CellsFailed) as exc:
        raise SystemExit(f"metagrad: {exc}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str]) -> int:
    # --import first: the modules may register estimators, suites or comparisons the parser lists
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--import", dest="imports", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    plugins = [load_plugin(module) for module in known.imports]
    args = build_parser().parse_args(argv)
    args.imports = plugins  # the resolved forms, which every worker process imports too
    _set_threads(args.threads)
    configure_allocator()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
