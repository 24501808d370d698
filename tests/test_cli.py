"""The command line, the quick bench end to end, and the README/CI contract."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from metagrad.app.cli import build_parser, main
from metagrad.app.cli.bench import bench_runs
from metagrad.app.cli.compare import compare_config
from metagrad.app.compare import get_comparison
from metagrad.app.suites import get_suite
from metagrad.app.suites.tabular import (
    EXTENSION_EXPERIMENTS,
    OFFICIAL_EXPERIMENTS,
    PRESETS,
    TabularBenchConfig,
    make_cells,
)
from metagrad.seeding import cell_seed

ROOT = Path(__file__).resolve().parent.parent


def test_help_and_list(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("dice", "loaded_dice", "lvc", "pg", "off_policy_dice", "MetaGrad/TabularMDP-v0", "liu2022"):
        assert name in out


def test_quick_bench_writes_rows_plots_summary(tmp_path, capsys):
    out = tmp_path / "quick.jsonl"
    assert (
        main(
            [
                "bench",
                "tabular",
                "--preset",
                "quick",
                "--store",
                str(out),
                "--no-progress",
                "--num-tasks",
                "2",
                "--repeats",
                "4",
                "--estimators",
                "dice,lvc",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    required = {
        "env",
        "inner",
        "hessian",
        "outer",
        "n_inner",
        "n_hessian",
        "n_outer",
        "inner_steps",
        "inner_lr",
        "objective",
        "critic_noise",
        "num_tasks",
        "repeats",
        "seed",
        "corr",
        "corr_std",
        "bias",
        "bias_ci_low",
        "bias_ci_high",
        "variance",
        "mse",
        "wall_s",
        "versions",
        "git_commit",
        "config",
    }
    assert rows and all(required <= set(r) for r in rows)
    assert {r["experiment"] for r in rows} == set(OFFICIAL_EXPERIMENTS + EXTENSION_EXPERIMENTS)
    assert all(len(r["per_task"]["mse"]) == r["num_tasks"] for r in rows)
    # outputs of a store other than rows.jsonl are named after it (quick_*)
    assert len(list(tmp_path.glob("quick_tabular_quick_*.png"))) == 7
    assert "Decomposition" in (tmp_path / "quick_tabular_quick_summary.md").read_text()
    assert (tmp_path / "quick_leaderboard.md").exists() and (tmp_path / "quick_report.md").exists()


def test_bench_is_reproducible(tmp_path):
    args = [
        "bench",
        "tabular",
        "--preset",
        "quick",
        "--no-progress",
        "--num-tasks",
        "1",
        "--repeats",
        "3",
        "--estimators",
        "pg",
        "--experiments",
        "decomposition",
    ]
    main([*args, "--store", str(tmp_path / "a.jsonl")])
    main([*args, "--store", str(tmp_path / "b.jsonl")])
    # the store holds rows in completion order (parallel workers): compare by cell
    a = {r["cell_id"]: r for r in map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())}
    b = {r["cell_id"]: r for r in map(json.loads, (tmp_path / "b.jsonl").read_text().splitlines())}
    assert set(a) == set(b) and len(a) == 5  # eee + 4 combinations of the quick preset
    assert all(a[k]["corr"] == b[k]["corr"] and a[k]["mse"] == b[k]["mse"] for k in a)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["bench", "tabular", "--preset", "nope"], "unknown preset"),
        (["bench", "--preset", "nope"], "unknown preset 'nope' for tabular"),
        (["bench", "atari", "--num-tasks", "3"], "--num-tasks is not an option of suite"),
        (["bench", "--estimators", "nope"], "unknown name 'nope'"),
        (["bench", "--repeats", "1"], "repeats"),
        (["bench", "--num-tasks", "-2"], "num_tasks"),
        (["bench", "--experiments", "sweep_q"], "experiments"),
        (["bench", "--device", "tpu"], "--device"),
    ],
)
def test_bad_bench_arguments_fail_before_running(args, match):
    with pytest.raises(SystemExit, match=match):
        main([*args, "--no-progress", "--store", "/nonexistent/dir/x.jsonl"])


def test_liu2022_is_the_official_protocol():
    """Every family of Theoretical-GMRL's tabular/maml/run_*.sh and tabular/lirpg/run_step.sh at its
    own settings (README, "The `liu2022` preset is the official protocol")."""
    liu = PRESETS["liu2022"]
    assert (liu.num_states, liu.num_actions, liu.dirichlet_alpha, liu.gamma, liu.horizon) == (
        20,
        5,
        0.001,
        0.8,
        20,
    )
    assert (liu.objective, liu.critic_noise, liu.num_tasks, liu.repeats) == ("infinite", 1.0, 10, 20)
    cells = make_cells(liu)
    by = {}
    for c in cells:
        by.setdefault(c.experiment, []).append(c)
    powers = (2, 4, 8, 16, 32, 64, 128, 256)
    combos = {"eel", "ele", "lee", "ell", "lel", "lle", "lll"}
    dec = by["decomposition"]
    assert len(dec) == 1 + 4 * 7 * 8 and dec[0].spec.combination == "eee"
    assert {c.spec.combination for c in dec[1:]} == combos and {c.n for c in dec[1:]} == set(powers)
    assert {(c.spec.inner_steps, c.spec.inner_lr) for c in dec} == {(1, 10.0)}
    assert {c.estimator for c in dec[1:]} == {"dice", "loaded_dice", "lvc", "pg"}
    k_ab = by["k_ablation"]
    assert {c.estimator for c in k_ab} == {"pg"} and {c.n for c in k_ab} == {32}
    assert {(c.spec.inner_steps, c.spec.combination) for c in k_ab} == {
        (k, x) for k in range(1, 7) for x in combos
    }
    a_ab = by["alpha_ablation"]
    assert {(c.spec.inner_steps, c.spec.inner_lr) for c in a_ab} == {(5, float(a)) for a in range(1, 14, 2)}
    sweep_n = by["sweep_n"]
    assert {c.estimator for c in sweep_n} == {"pg", "dice"} and {c.n for c in sweep_n} == set(powers)
    assert {(c.spec.combination, c.spec.inner_steps, c.spec.inner_lr) for c in sweep_n} == {("lee", 2, 3.0)}
    sweep_k = by["sweep_k"]
    assert {c.estimator for c in sweep_k} == {"pg", "lvc", "loaded_dice", "dice"}
    assert {(c.spec.inner_steps, c.spec.inner_lr, c.n) for c in sweep_k} == {
        (k, 3.0, 32) for k in range(1, 7)
    }
    sweep_alpha = by["sweep_alpha"]
    assert {c.estimator for c in sweep_alpha} == {"pg", "dice"}
    assert {(c.spec.inner_steps, c.spec.inner_lr) for c in sweep_alpha} == {
        (6, float(a)) for a in range(1, 14, 2)
    }
    hess = by["hessian_bias"]
    assert {(c.spec.inner_steps, c.spec.inner_lr, c.spec.hessian_bias) for c in hess} == {
        (2, a, 0.5 * i) for a in (3.0, 3.5, 4.0, 4.5) for i in range(1, 9)
    }
    assert {c.spec.combination for c in hess} == {"eee"}
    lirpg = by["lirpg"]
    assert {(c.estimator, c.spec.combination, c.spec.meta_parameter) for c in lirpg} == {
        (e, "ele", "intrinsic_reward") for e in ("pg", "lvc")
    }
    assert {(c.spec.inner_steps, c.n) for c in lirpg} == {
        (k, n) for k in range(1, 6) for n in (16, 32, 64, 128, 256)
    }
    assert {dict(c.spec.hessian.params)["gae_lambda"] for c in lirpg} == {0.9}
    # extensions are separately named experiments
    assert {c.spec.inner_steps for c in by["hessian_bias_k"]} == set(range(1, 7))
    assert PRESETS["liu2022_finite"].objective == "finite"
    with pytest.raises(ValueError, match="sweep_n"):
        TabularBenchConfig(sweep_n=(4, -1))
    with pytest.raises(ValueError, match="budget_scales"):
        TabularBenchConfig(budget_scales=(("nope", 1.0, 1.0),))


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    test_cmd = next(c for c in commands if "pytest" in c)
    assert test_cmd in ci
    assert "constraints.txt" in test_cmd and "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


def test_cell_seed_depends_on_the_cell_not_on_the_rest_of_the_run():
    small = TabularBenchConfig(estimators=("pg",), experiments=("decomposition",))
    large = TabularBenchConfig(estimators=("pg", "dice"), sweep_alpha=(2.0,), experiments=("decomposition",))
    keys_small = [c.key for c in make_cells(small) if c.estimator == "pg"]
    keys_large = [c.key for c in make_cells(large) if c.estimator == "pg"]
    assert keys_small == keys_large
    assert make_cells(small)[0].key != make_cells(small)[0].bind(TabularBenchConfig(seed=1)).key


def test_flags_mean_one_thing_in_every_command():
    """Issue 21: a store is always --store, --out always an output folder, --seeds takes ranges on
    compare as on bench, and the Atari bench names its games --games and its parallel games
    --num-envs (--n: episodes per estimated stage; --env: one environment id)."""
    parser = build_parser()
    for argv in (["bench", "--out", "x.jsonl"], ["check", "--against", "a.jsonl", "--out", "b.jsonl"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    assert parser.parse_args(["check", "--against", "a.jsonl", "--store", "b.jsonl"]).store == "b.jsonl"
    _, config = compare_config(parser.parse_args(["compare", "ipd", "--seeds", "0-2,5"]))
    assert config.seeds == (0, 1, 2, 5)
    args = ["bench", "atari", "--preset", "quick", "--games", "MinAtar/Breakout-v1", "--num-envs", "3"]
    ((suite, atari),) = bench_runs(parser.parse_args(args))
    assert suite == "atari" and atari.games == ("MinAtar/Breakout-v1",) and atari.num_envs == 3
    for flag in ("--n", "--env"):
        with pytest.raises(SystemExit, match="is not an option of suite"):
            bench_runs(parser.parse_args(["bench", "atari", flag, "2"]))


def test_a_cell_is_bound_once_and_a_changed_copy_must_be_bound_again():
    config = PRESETS["quick"]
    cell = make_cells(config)[0]
    assert cell.bound and cell.seed == cell_seed(config.seed, cell.pairing)
    copy = dataclasses.replace(cell, tags={"independent": 1})
    assert not copy.bound  # never the original's key or seed
    with pytest.raises(ValueError, match="not bound"):
        copy.describe()
    assert copy.bind(config).key != cell.key


def test_unknown_names_share_one_message():
    for lookup, kind in ((get_suite, "suite"), (get_comparison, "comparison")):
        with pytest.raises(ValueError, match=f"{kind}: unknown name 'nope'; known: "):
            lookup("nope")
    with pytest.raises(
        ValueError, match="preset: unknown preset 'nope' for ipd; known: 'foerster2018', 'quick'"
    ):
        get_suite("ipd").config("nope")
    with pytest.raises(ValueError, match=r"experiments: unknown \['later'\]; known: 'paired', 'reference'"):
        get_suite("atari").config("quick", experiments=("paired", "later"))
