"""The result store, resumable and distributed runs, the report, the leaderboard and ``check``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rowkit import row_json, synthetic_row

from metagrad.app.cli import main
from metagrad.app.judging.check import check_against
from metagrad.app.running.rows import ResultRow
from metagrad.app.running.runner import cell_from_row, run_bench
from metagrad.app.running.store import ResultStore
from metagrad.app.suites import get_suite

ROOT = Path(__file__).resolve().parent.parent

# A small tabular run: 9 cells of a few tenths of a second each.
TINY = dict(
    num_tasks=1,
    repeats=3,
    estimators=("dice", "pg"),
    combinations=("ele", "lll"),
    sweep_n_estimators=("dice",),
    sweep_n=(4, 16),
    sweep_k_estimators=("dice",),
    sweep_k=(1,),
    hessian_bias_c=(1.0,),
    experiments=("decomposition", "sweep_n", "sweep_k", "hessian_bias"),
)


def _tiny_runs():
    return [("tabular", get_suite("tabular").config("quick", **TINY))]


def _rows(path: Path) -> dict[str, ResultRow]:
    return ResultStore(path).load(warn=False).rows


def _quiet(*_args) -> None:
    pass


_METRICS = (
    "corr",
    "bias",
    "bias_debiased",
    "bias_ci_low",
    "bias_ci_high",
    "variance",
    "mse",
    "cosine_of_mean",
)


def _numbers(results) -> dict[str, tuple]:
    """The metrics of every cell (wall times and provenance differ between runs by design)."""
    return {r.cell_id: tuple(r.value(m) for m in _METRICS) for rows in results.values() for r in rows}


# ---------------------------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------------------------


def test_store_round_trip_and_corrupt_lines(tmp_path):
    store = ResultStore(tmp_path / "rows.jsonl")
    store.append(synthetic_row(cell_id="a"))
    store.append(synthetic_row(cell_id="b"))
    with open(store.path, "ab") as fh:
        fh.write(b'{"cell_id": "c", "x": ')  # a kill in the middle of a write
    report = store.load(warn=False)
    assert set(report.rows) == {"a", "b"} and report.partial_tail
    assert len(report.problems) == 1 and "truncated last line" in report.problems[0]
    with pytest.warns(UserWarning, match="truncated"):
        store.load()
    # repair moves the partial line aside; appending then goes on cleanly
    assert "moved a truncated last line" in store.repair()[0]
    store.append(synthetic_row(cell_id="c"))
    report = store.load(warn=False)
    assert set(report.rows) == {"a", "b", "c"} and not report.problems
    assert (tmp_path / "rows.jsonl.corrupt").read_bytes().startswith(b'{"cell_id": "c"')


def test_store_reports_corrupt_middle_lines_and_missing_newline(tmp_path):
    path = tmp_path / "rows.jsonl"
    good = [json.dumps(row_json(cell_id=name)) for name in ("a", "b")]
    path.write_text(f'{good[0]}\nnot json\n{{"no_id": 1}}\n{good[1]}')
    store = ResultStore(path)
    report = store.load(warn=False)
    assert set(report.rows) == {"a", "b"} and len(report.problems) == 2
    assert "invalid row ignored" in report.problems[1] and "missing field" in report.problems[1]
    assert "added the missing newline" in store.repair()[0]
    store.append(synthetic_row(cell_id="c"))
    assert set(store.load(warn=False).rows) == {"a", "b", "c"}


# ---------------------------------------------------------------------------------------------
# Resumable runs
# ---------------------------------------------------------------------------------------------


def test_rerun_skips_stored_cells_and_fills_gaps(tmp_path):
    path = tmp_path / "rows.jsonl"
    first = run_bench(_tiny_runs(), path, backend="serial", progress=False, log=_quiet)
    rows = first[("tabular", "quick")]
    assert len(rows) == 9 and len(_rows(path)) == 9
    messages: list[str] = []
    again = run_bench(_tiny_runs(), path, backend="serial", progress=False, log=messages.append)
    assert _numbers(again) == _numbers(first) and any("9 of 9 cells already" in m for m in messages)
    assert len(path.read_text().splitlines()) == 9  # nothing recomputed or re-appended
    # drop three rows: only those are recomputed, with the same numbers
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5]) + "\n")
    refilled = run_bench(_tiny_runs(), path, backend="serial", progress=False, log=_quiet)
    assert _numbers(refilled) == _numbers(first)


def test_killed_run_resumes_to_the_same_rows(tmp_path):
    reference = run_bench(_tiny_runs(), tmp_path / "ref.jsonl", backend="serial", progress=False, log=_quiet)
    path = tmp_path / "rows.jsonl"
    script = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_leaderboard import _tiny_runs, _quiet\n"
        "from metagrad.app.running.runner import run_bench\n"
        "run_bench(_tiny_runs(), sys.argv[1], backend='serial', progress=False, log=_quiet)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and (not path.exists() or len(path.read_bytes().splitlines()) < 2):
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = len(_rows(path))
    assert 2 <= done < 9, f"the run should have been killed part-way ({done} of 9 rows)"
    with open(path, "ab") as fh:  # and a kill can leave half a line behind
        fh.write(b'{"cell_id": "x", "corr"')
    resumed = run_bench(_tiny_runs(), path, backend="serial", progress=False, log=_quiet)
    assert _numbers(resumed) == _numbers(reference)
    assert set(_rows(path)) == set(_numbers(reference))


def test_local_pool_gives_the_same_numbers_as_serial(tmp_path):
    serial = run_bench(_tiny_runs(), tmp_path / "s.jsonl", backend="serial", progress=False, log=_quiet)
    pooled = run_bench(
        _tiny_runs(), tmp_path / "p.jsonl", backend="local", workers=2, progress=False, log=_quiet
    )
    assert _numbers(pooled) == _numbers(serial)


def test_ray_backend_gives_the_same_numbers(tmp_path):
    pytest.importorskip("ray")
    serial = run_bench(_tiny_runs(), tmp_path / "s.jsonl", backend="serial", progress=False, log=_quiet)
    on_ray = run_bench(
        _tiny_runs(), tmp_path / "r.jsonl", backend="ray", workers=2, progress=False, log=_quiet
    )
    assert _numbers(on_ray) == _numbers(serial)
    assert set(_rows(tmp_path / "r.jsonl")) == set(_rows(tmp_path / "s.jsonl"))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--estimators", "nope"], "unknown name 'nope'"),
        (["--env", "MetaGrad/Chess-v0"], "unknown env"),
        (["--num-tasks", "-1"], "num_tasks"),
        (["--n", "0"], "n:"),
        (["--repeats", "0"], "repeats"),
        (["--inner-steps", "-1"], "inner_steps"),
        (["--experiments", "sweep_q"], "experiments"),
        (["--backend", "mpi"], "invalid choice"),
    ],
)
def test_bad_configs_are_rejected_before_anything_runs(tmp_path, args, match, capsys):
    store = tmp_path / "rows.jsonl"
    with pytest.raises(SystemExit) as exc:
        main(["bench", *args, "--store", str(store), "--no-progress"])
    message = str(exc.value) + capsys.readouterr().err
    assert match in message
    assert not store.exists()


def test_bad_ipd_config_is_rejected(tmp_path):
    with pytest.raises(SystemExit, match="lookahead_steps"):
        main(["bench", "ipd", "--inner-steps", "-2", "--store", str(tmp_path / "x.jsonl")])
    with pytest.raises(SystemExit, match="unknown env"):
        main(["bench", "ipd", "--env", "MetaGrad/TabularMDP-v0", "--store", str(tmp_path / "x.jsonl")])


# ---------------------------------------------------------------------------------------------
# check --against
# ---------------------------------------------------------------------------------------------


def test_rows_rebuild_their_cells(tmp_path):
    runs = [
        *_tiny_runs(),
        ("ipd", get_suite("ipd").config("quick", num_pairs=1, repeats=2, experiments=("off_policy",))),
    ]
    results = run_bench(runs, tmp_path / "rows.jsonl", backend="serial", progress=False, log=_quiet)
    for rows in results.values():
        for row in rows:
            suite, _, cell = cell_from_row(ResultRow.from_json(json.loads(json.dumps(row.to_json()))))
            assert cell.key == row.cell_id and suite == row.bench


def _plugin(tmp_path: Path, name: str, estimator: str) -> str:
    (tmp_path / f"{name}.py").write_text(
        "from metagrad.estimators import ESTIMATORS, register_estimator\n"
        f"register_estimator('mine', ESTIMATORS[{estimator!r}].fn, reference='test', summary='test', "
        "uses_critic=True, overwrite=True)\n"
    )
    return name


def test_check_passes_unchanged_code_and_flags_a_changed_estimator(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    good = _plugin(tmp_path, "plugin_good", "dice")
    changed = _plugin(tmp_path, "plugin_changed", "pg")
    store = tmp_path / "baseline.jsonl"
    base = ["bench", "tabular", "--preset", "quick", "--num-tasks", "1", "--repeats", "4", "--no-progress"]
    scope = ["--estimators", "mine", "--experiments", "decomposition", "--backend", "serial"]
    assert main(["--import", good, *base, *scope, "--store", str(store)]) == 0
    assert (
        main(["--import", good, "check", "--against", str(store), "--backend", "serial", "--no-progress"])
        == 0
    )
    assert "OK:" in capsys.readouterr().out
    # the same name now computes a biased Hessian: the cells whose Hessian is sampled move
    code = main(
        ["--import", changed, "check", "--against", str(store), "--backend", "serial", "--no-progress"]
    )
    out = capsys.readouterr().out
    assert code == 1 and "MOVED" in out and "FAIL" in out
    movements, _, _ = check_against(store, backend="serial", progress=False)
    # pg with a critic has a lower-variance gradient and a biased Hessian: every cell moves
    assert {m.label.rsplit("/", 1)[1] for m in movements} == {"eel", "ele", "lee", "lll"}  # quick's


def test_check_rejects_missing_or_empty_files(tmp_path):
    with pytest.raises(SystemExit, match="no such result file"):
        main(["check", "--against", str(tmp_path / "none.jsonl")])
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SystemExit, match="holds no result rows"):
        main(["check", "--against", str(tmp_path / "empty.jsonl")])


# ---------------------------------------------------------------------------------------------
# Report and leaderboard
# ---------------------------------------------------------------------------------------------


def test_report_command_writes_report_and_leaderboard(tmp_path, capsys):
    store = tmp_path / "rows.jsonl"
    run_bench(_tiny_runs(), store, backend="serial", progress=False, log=_quiet)
    assert main(["report", "--store", str(store)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "compositional_bias_vs_n" in report and "![tabular_quick_sweep_n_corr]" in report
    assert (tmp_path / "leaderboard.md").exists()
    out = capsys.readouterr().out
    assert "hessian_bias_ranking" in out
    with pytest.raises(SystemExit, match="no result rows"):
        main(["report", "--store", str(tmp_path / "none.jsonl")])


def test_rerun_says_when_reused_cells_come_from_other_code(tmp_path):
    path = tmp_path / "rows.jsonl"
    run_bench(_tiny_runs(), path, backend="serial", progress=False, log=_quiet)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "git_commit": "0123abc"}) + "\n" for r in rows))
    messages: list[str] = []
    run_bench(_tiny_runs(), path, backend="serial", progress=False, log=messages.append)
    assert any("0123abc" in m and "--fresh" in m for m in messages)
