"""The command line, the quick bench end to end, and the README/CI contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from metagrad.app.cli import main
from metagrad.app.suites.tabular import PRESETS, TabularBenchConfig, make_cells

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
                "--out",
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
    assert {r["experiment"] for r in rows} == {
        "decomposition",
        "sweep_n",
        "sweep_k",
        "sweep_alpha",
        "hessian_bias",
    }
    assert len(list(tmp_path.glob("tabular_quick_*.png"))) == 5
    assert "Decomposition" in (tmp_path / "tabular_quick_summary.md").read_text()
    assert (tmp_path / "leaderboard.md").exists() and (tmp_path / "report.md").exists()


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
    main([*args, "--out", str(tmp_path / "a.jsonl")])
    main([*args, "--out", str(tmp_path / "b.jsonl")])
    # the store holds rows in completion order (parallel workers): compare by cell
    a = {r["cell_id"]: r for r in map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())}
    b = {r["cell_id"]: r for r in map(json.loads, (tmp_path / "b.jsonl").read_text().splitlines())}
    assert set(a) == set(b) and len(a) == 7
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
        main([*args, "--no-progress", "--out", "/nonexistent/dir/x.jsonl"])


def test_presets_follow_the_protocol():
    liu = PRESETS["liu2022"]
    assert (liu.num_states, liu.num_actions, liu.dirichlet_alpha, liu.gamma, liu.horizon) == (
        20,
        5,
        0.001,
        0.8,
        20,
    )
    assert (liu.objective, liu.critic_noise, liu.inner_steps, liu.inner_lr, liu.n) == (
        "infinite",
        1.0,
        1,
        10.0,
        32,
    )
    assert (liu.num_tasks, liu.repeats) == (10, 20)
    assert liu.sweep_n == (2, 4, 8, 16, 32, 64, 128, 256) and liu.sweep_k == (1, 2, 3, 4, 5, 6)
    assert liu.sweep_alpha == (1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0)
    assert liu.hessian_bias_c == tuple(0.5 * i for i in range(1, 9))
    dec = [c for c in make_cells(liu) if c.experiment == "decomposition"]
    assert len(dec) == 28 and {c.spec.combination for c in dec} == {
        "eel",
        "ele",
        "lee",
        "ell",
        "lel",
        "lle",
        "lll",
    }
    with pytest.raises(ValueError, match="sweep_n"):
        TabularBenchConfig(sweep_n=(4, -1))


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
    keys_small = [c.key(small) for c in make_cells(small)]
    keys_large = [c.key(large) for c in make_cells(large) if c.estimator == "pg"]
    assert keys_small == keys_large
    assert make_cells(small)[0].key(small) != make_cells(small)[0].key(TabularBenchConfig(seed=1))
