"""Hardening (issue 14): the result store, the CLI and the ecosystem faces under faults, bad input
and real use. Each test reproduces one of the issue's numbered failures and checks the fix; the
item number is in the test's docstring. Tests that start processes keep to a few seconds each;
those that start Ray clusters are marked slow."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib.util
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from rowkit import row_json, synthetic_row

from metagrad.app import cli, perf
from metagrad.app.cli.bench import bench_runs
from metagrad.app.cli.compare import compare_config
from metagrad.app.judging.check import check_against
from metagrad.app.presenting.outputs import write_bytes_atomic
from metagrad.app.running.backends import PluginError, load_plugin
from metagrad.app.running.memory import InsufficientMemory, MemoryEstimate, check_memory
from metagrad.app.running.progress import LineProgress, progress_bar
from metagrad.app.running.provenance import NO_CHECKOUT, checkout_commit, git_commit, provenance
from metagrad.app.running.runner import CellsFailed, run_bench
from metagrad.app.running.store import ResultStore, StoreError, StoreLocked, check_output_path
from metagrad.app.suites import get_suite
from metagrad.critics import CriticSpec
from metagrad.decomposed import MetaGradientSpec
from metagrad.envs import random_task
from metagrad.estimators import ESTIMATORS, register_estimator
from metagrad.exact import tabular_return
from metagrad.lola import LolaSpec
from metagrad.scoring import score
from metagrad.staged import StageSpec
from metagrad.testing import check_unbiased

ROOT = Path(__file__).resolve().parent.parent
METAGRAD = Path(sys.executable).with_name("metagrad")  # the console script of this environment

# The quick decomposition with pg (the exact recipe and pg on the quick preset's stage
# combinations), 1 task x 2 repeats: well under a second in all.
TINY_ARGS = [
    "bench",
    "tabular",
    "--preset",
    "quick",
    "--num-tasks",
    "1",
    "--repeats",
    "2",
    "--experiments",
    "decomposition",
    "--no-progress",
]


def _tiny_cells(estimators: tuple[str, ...]) -> int:
    """Cells of the TINY_ARGS run with these estimators."""
    ((suite, config),) = _tiny_run(estimators=estimators)
    return len(get_suite(suite).make_cells(config))


def _tiny_run(**overrides):
    config = dict(num_tasks=1, repeats=2, estimators=("pg",), experiments=("decomposition",))
    return [("tabular", get_suite("tabular").config("quick", **{**config, **overrides}))]


def _quiet(*_args) -> None:
    pass


def _bench(store: Path, *extra: str) -> int:
    return cli.main([*TINY_ARGS, "--estimators", "pg", "--backend", "serial", "--store", str(store), *extra])


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# 1. --fresh
# ---------------------------------------------------------------------------------------------


def test_fresh_drops_only_the_rows_of_the_run_it_restarts(tmp_path):
    """Item 1: `--fresh` used to delete the whole store, other suites' rows included."""
    store = tmp_path / "rows.jsonl"
    ResultStore(store).append(synthetic_row(cell_id="other-suite", bench="ipd"))
    other_run = run_bench(_tiny_run(seed=1), store, backend="serial", progress=False, log=_quiet)
    first = run_bench(_tiny_run(), store, backend="serial", progress=False, log=_quiet)
    ours = {r.cell_id for r in first[("tabular", "quick")]}
    theirs = {r.cell_id for r in other_run[("tabular", "quick")]} | {"other-suite"}
    messages: list[str] = []
    again = run_bench(_tiny_run(), store, backend="serial", progress=False, fresh=True, log=messages.append)
    n = len(ours)
    assert n >= 4
    assert any(f"dropped the {n} stored row(s)" in m for m in messages)
    assert any(f"scored {n} cells" in m for m in messages)  # recomputed, not reused
    ids = [row["cell_id"] for row in _lines(store)]
    assert theirs <= set(ids) and ours <= set(ids) and len(ids) == len(set(ids)) == 2 * n + 1
    assert {r.cell_id: r.metrics for r in again[("tabular", "quick")]} == {
        r.cell_id: r.metrics for r in first[("tabular", "quick")]
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl", "rows.jsonl.lock"]  # no temp file
    # the command line does the same
    assert _bench(store, "--fresh") == 0
    assert theirs <= {row["cell_id"] for row in _lines(store)}


def test_fresh_on_a_store_in_use_drops_nothing(tmp_path):
    """Item 1 with item 4: the rewrite happens under the store's lock."""
    store = tmp_path / "rows.jsonl"
    run_bench(_tiny_run(), store, backend="serial", progress=False, log=_quiet)
    before = store.read_bytes()
    with ResultStore(store).lock(), pytest.raises(StoreLocked):
        run_bench(_tiny_run(), store, backend="serial", progress=False, fresh=True, log=_quiet)
    assert store.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# 2. Non-finite metrics; 10 (last point): a user estimator returning NaN
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def bad_estimators(monkeypatch):
    """``huge``: DiCE x 1e200 (finite inputs, squares overflow); ``nan_dice``: DiCE x NaN."""
    dice = ESTIMATORS["dice"].fn
    for name, factor in (("huge", 1e200), ("nan_dice", math.nan)):
        monkeypatch.setitem(ESTIMATORS, name, None)  # removed again after the test

        def fn(log_probs, rewards, discounts, _factor=factor, **kw):
            return dice(log_probs, rewards, discounts, **kw) * _factor

        register_estimator(name, fn, reference="test", summary="test", overwrite=True)


def test_non_finite_metrics_are_reported_by_cell_and_never_stored(tmp_path, bad_estimators, capsys):
    """Item 2: rows with NaN / inf metrics used to be stored and ranked ("nan ± 0.02")."""
    store = tmp_path / "rows.jsonl"
    with pytest.raises(SystemExit) as exc:
        cli.main([*TINY_ARGS, "--estimators", "huge,pg", "--backend", "serial", "--store", str(store)])
    out = capsys.readouterr().out
    assert exc.value.code and "cell(s) failed and were not stored" in str(exc.value)
    failed = [line for line in out.splitlines() if "cell failed, not stored" in line]
    assert failed and all("tabular/decomposition/huge/" in line for line in failed)
    assert any("non-finite metrics" in line and "mse=inf" in line for line in failed)
    text = store.read_text()
    assert "NaN" not in text and "Infinity" not in text
    rows = _lines(store)
    assert all(math.isfinite(r[m]) for r in rows for m in ("mse", "bias_debiased", "corr"))
    assert {r["estimator"] for r in rows} <= {"huge", "pg", "exact"}
    assert len(rows) == _tiny_cells(("huge", "pg")) - len(failed)
    leaderboard = (tmp_path / "leaderboard.md").read_text()
    assert "nan" not in leaderboard and "inf" not in leaderboard.replace("info", "")
    # the scorer itself refuses to return non-finite metrics, and the store never writes them
    with pytest.raises(ValueError, match="non-finite metrics"):
        score(torch.full((1, 3, 2), 1e200, dtype=torch.float64), torch.zeros(1, 2))
    with pytest.raises(ValueError):
        ResultStore(tmp_path / "x.jsonl").append(dataclasses.replace(synthetic_row(), wall_s=math.nan))


def test_an_estimator_returning_nan_is_named_with_its_cell(tmp_path, bad_estimators):
    """Item 10 (last point): it used to abort the run with "logits: contains NaN", naming nothing."""
    with pytest.raises(CellsFailed) as exc:
        run_bench(
            _tiny_run(estimators=("nan_dice",)),
            tmp_path / "r.jsonl",
            backend="serial",
            progress=False,
            log=_quiet,
        )
    failures = exc.value.failures
    assert len(failures) == _tiny_cells(("nan_dice",)) - 1  # all but the exact recipe's cell
    assert (tmp_path / "r.jsonl").exists() and len(_lines(tmp_path / "r.jsonl")) == 1
    assert all(f.label.startswith("tabular/decomposition/nan_dice/") for f in failures)
    assert any("NaN" in f.error for f in failures)


def test_check_names_cells_that_now_fail_instead_of_comparing_nan(tmp_path, monkeypatch, capsys):
    """Item 2: `check` reported "moved from nan to nan"; a cell whose recompute is not finite is
    now a FAILED line naming it, and check exits 1."""
    monkeypatch.setitem(ESTIMATORS, "mine", ESTIMATORS["pg"])
    store = tmp_path / "rows.jsonl"
    assert cli.main([*TINY_ARGS, "--estimators", "mine", "--backend", "serial", "--store", str(store)]) == 0
    dice = ESTIMATORS["dice"].fn
    register_estimator(
        "mine",
        lambda *a, **k: dice(*a, **k) * 1e200,
        reference="t",
        summary="t",
        uses_critic=True,
        overwrite=True,
    )
    capsys.readouterr()
    assert cli.main(["check", "--against", str(store), "--backend", "serial", "--no-progress"]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAILED tabular/decomposition/mine/")]
    assert failed and "non-finite metrics" in out and "nan to nan" not in out
    assert out.splitlines()[-1].startswith("FAIL: ")
    assert out.splitlines()[-1].endswith(f", {len(failed)} cell(s) could not be recomputed")


# ---------------------------------------------------------------------------------------------
# 3. Rows validated on load
# ---------------------------------------------------------------------------------------------


def test_invalid_rows_are_set_aside_and_never_shadow_good_rows(tmp_path, capsys):
    """Item 3: `{"cell_id": id}` shadowed the good row; a list id or a string metric crashed."""
    store = tmp_path / "rows.jsonl"
    assert _bench(store) == 0
    good = _lines(store)
    cell_id = good[0]["cell_id"]
    bad = [
        {"cell_id": cell_id},
        row_json(cell_id=[cell_id]),
        {**good[1], "mse": "0.5"},
        {**good[2], "bias_debiased": None},
        {**good[3], "cell": {**good[3]["cell"], "tags": ["x"]}},
        {**good[4], "inner_lr": {"a": 1}},
    ]
    with open(store, "a") as fh:
        fh.writelines(json.dumps(b) + "\n" for b in bad)
        fh.write('{"cell_id": ' + json.dumps(cell_id) + ', "mse": NaN}\n')
    report = ResultStore(store).load(warn=False)
    assert len(report.problems) == 7 and all("invalid row ignored" in p for p in report.problems)
    assert {cell_id: report.rows[cell_id].to_json()} == {cell_id: good[0]}  # the good row stands
    assert len(report.rows) == len(good) == _tiny_cells(("pg",))
    capsys.readouterr()
    assert _bench(store) == 0  # nothing recomputed, the outputs (plots included) are written
    out = capsys.readouterr().out
    n = _tiny_cells(("pg",))
    assert f"{n} of {n} cells already" in out and "invalid row ignored" in out
    assert cli.main(["check", "--against", str(store), "--backend", "serial", "--no-progress"]) == 0
    assert f"OK: {n} cells recomputed" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# 4. One run per store
# ---------------------------------------------------------------------------------------------


def test_a_second_run_on_a_store_in_use_is_refused(tmp_path):
    """Item 4: two `bench` processes on one store both computed every cell (49 duplicates)."""
    store = tmp_path / "rows.jsonl"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom metagrad.app.running.store import ResultStore\n"
            "with ResultStore(sys.argv[1]).lock():\n    print('locked', flush=True)\n    time.sleep(60)\n",
            str(store),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit, match=rf"in use by another metagrad run \(pid {holder.pid}\)"):
            _bench(store)
        assert not store.exists()  # refused before computing anything
    finally:
        holder.kill()
        holder.wait()
    assert _bench(store) == 0 and len(_lines(store)) == _tiny_cells(("pg",))  # the lock died with its holder


# ---------------------------------------------------------------------------------------------
# 5. Atomic outputs
# ---------------------------------------------------------------------------------------------


_WRITES: list[tuple[str, object]] | None = None


def _audit(event: str, args: tuple) -> None:
    if _WRITES is not None and event == "open" and args[0] is not None:
        path, mode, flags = args
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)
        )
        if writing:
            _WRITES.append(
                (os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path), mode)
            )


sys.addaudithook(_audit)


def test_every_output_file_is_written_through_a_temporary_file(tmp_path, monkeypatch, capsys):
    """Item 5: a poller saw a 0-byte leaderboard.md 170 times and report.md 955 times."""
    global _WRITES
    store = tmp_path / "rows.jsonl"
    assert _bench(store, "--experiments", "decomposition,sweep_n") == 0  # rows with plots
    for name, figure in (
        ("rollout_throughput", "steps_per_s"),
        ("python_loop_throughput", "steps_per_s"),
        ("ipd_rollout_throughput", "steps_per_s"),
        ("lola_dice_update_rate", "updates_per_s"),
        ("maml_meta_iteration_time", "seconds_per_iteration"),
    ):
        monkeypatch.setattr(perf, name, lambda *a, _f=figure, **k: {_f: 1.0})
    _WRITES = []
    try:
        assert cli.main(["report", "--store", str(store)]) == 0
        assert cli.main(["perf", "--out", str(tmp_path)]) == 0
        written = list(_WRITES)
    finally:
        _WRITES = None
    capsys.readouterr()
    ours = [Path(p) for p, _ in written if Path(p).resolve().is_relative_to(tmp_path.resolve())]
    ours = [p for p in ours if not p.name.startswith(".metagrad-probe-")]  # path checks: created, removed
    assert len(ours) >= 6  # two plots, the summary, leaderboard.md, report.md, perf.json
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in ours), ours
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert {"leaderboard.md", "report.md", "perf.json"} <= {p.name for p in files}
    assert all(p.stat().st_size > 0 for p in files if p.suffix != ".lock")
    assert not [p for p in files if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# 6. report on a partial store
# ---------------------------------------------------------------------------------------------


def test_report_on_the_prefix_of_a_killed_run_reports_what_it_has(tmp_path, capsys):
    """Item 6: `head -n 15 rows.jsonl > p.jsonl; metagrad report --store p.jsonl` died with
    StopIteration."""
    store = tmp_path / "rows.jsonl"
    ipd = get_suite("ipd").config(
        "quick", num_pairs=1, repeats=2, pair_kinds=("random",), experiments=("decomposition", "off_policy")
    )
    runs = [
        *_tiny_run(
            experiments=("decomposition", "sweep_n", "hessian_bias"),
            estimators=("pg", "lvc"),
            sweep_n_estimators=("lvc",),
        ),
        ("ipd", ipd),
    ]
    run_bench(runs, store, backend="serial", progress=False, log=_quiet)
    lines = store.read_text().splitlines(keepends=True)
    for n in (1, 3, 15, len(lines) - 1):
        partial = tmp_path / f"p{n}" / "rows.jsonl"
        partial.parent.mkdir()
        partial.write_text("".join(lines[:n]) + lines[n][: len(lines[n]) // 2])  # and a torn line
        capsys.readouterr()
        assert cli.main(["report", "--store", str(partial)]) == 0
        captured = capsys.readouterr()
        assert "truncated last line ignored" in captured.err
        assert re.search(r"no \w+ rows|missing", captured.out), captured.out  # names what is missing
        assert (partial.parent / "report.md").stat().st_size > 0


# ---------------------------------------------------------------------------------------------
# 7. Interrupts and killed main processes
# ---------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> set[int]:
    kids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[1]) == pid:
                kids.add(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited


_KILLED_RUN = ["bench", "tabular", "--preset", "quick", "--no-progress", "--workers", "2", "--store"]


def _start_bench(store: Path) -> tuple[subprocess.Popen, set[int]]:
    """A local-pool bench (2 workers, the quick tabular preset) in its own session; returns it once it has
    stored a row, with its children (the workers and the resource tracker)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "metagrad.app.cli", *_KILLED_RUN, str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (store.exists() and store.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    return proc, _children(proc.pid)


def _gone(pids: set[int], seconds: float = 10.0) -> set[int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return {p for p in pids if _alive(p)}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize(("sig", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_ctrl_c_and_sigterm_end_the_run_with_one_resume_line(tmp_path, sig, group):
    """Item 7: SIGTERM / Ctrl-C end the run cleanly with one line that says how to resume (Ctrl-C
    reaches the whole process group, workers included)."""
    store = tmp_path / "rows.jsonl"
    proc, kids = _start_bench(store)
    assert len(kids) >= 2
    (os.killpg if group else os.kill)(proc.pid, sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("metagrad: interrupted")]
    assert len(lines) == 1, err
    stored = len(_lines(store))
    total = len(get_suite("tabular").make_cells(get_suite("tabular").config("quick")))
    assert f"({signal.Signals(sig).name}); {stored} of {total} cells are stored in {store}" in lines[0]
    resume = lines[0].split("resume with: ", 1)[1]
    assert shlex.split(resume)[1:] == [*_KILLED_RUN, str(store)]
    assert not _gone(kids), "worker processes outlived the run"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_workers_exit_when_the_main_process_is_killed(tmp_path):
    """Item 7: `kill -9` of the main process left both pool workers and the resource tracker
    alive, re-parented to init."""
    proc, kids = _start_bench(tmp_path / "rows.jsonl")
    assert len(kids) >= 2
    os.kill(proc.pid, signal.SIGKILL)  # the main process only, not its group
    proc.communicate(timeout=60)
    assert not _gone(kids), "worker processes outlived their parent"


# ---------------------------------------------------------------------------------------------
# 8. Store and output paths, full disks
# ---------------------------------------------------------------------------------------------


def _bad_paths(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "nowhere" / "x.jsonl")
    cases = {
        "directory": (tmp_path / "a_folder", "is a directory"),
        "dangling link": (tmp_path / "dangling.jsonl", "dangling symbolic link"),
        "parent is a file": (tmp_path / "a_file" / "rows.jsonl", "is a file, not a folder"),
    }
    for device in ("/dev/null", "/dev/full"):
        if Path(device).exists():
            cases[device] = (Path(device), "not a regular file")
    return cases


@pytest.mark.parametrize("case", ["directory", "dangling link", "parent is a file", "/dev/null", "/dev/full"])
def test_unusable_store_paths_fail_with_one_line_before_any_work(tmp_path, monkeypatch, case):
    """Item 8: these gave raw tracebacks after the first cell; `--store /dev/full` was read
    without end until the kernel killed the process."""
    cases = _bad_paths(tmp_path)
    if case not in cases:
        pytest.skip(f"{case} does not exist here")
    path, message = cases[case]

    def no_work(*args, **kwargs):
        raise AssertionError("a cell ran")

    monkeypatch.setattr("metagrad.app.running.backends.run_task", no_work)
    for argv in ([*TINY_ARGS, "--backend", "serial", "--store", str(path)], ["report", "--store", str(path)]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert message in str(exc.value) and "\n" not in str(exc.value)
    if case.startswith("/dev"):
        with pytest.raises(StoreError, match=message):
            ResultStore(path).load()  # refused at once, never read


def test_a_read_only_results_folder_fails_before_any_work(tmp_path, monkeypatch):
    """Item 8: a read-only results folder. As root a folder's mode does not stop writes, so there
    the refused write is simulated (the probe that creates a file fails with EACCES)."""
    folder = tmp_path / "results"
    folder.mkdir()
    if os.geteuid() == 0:
        real = os.open

        def refuse(path, flags, *args, **kwargs):
            if Path(os.fsdecode(path)).parent == folder and flags & os.O_CREAT:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(SystemExit, match=r"cannot create files in .*results: Permission denied"):
            cli.main([*TINY_ARGS, "--backend", "serial", "--store", str(folder / "rows.jsonl")])
    finally:
        folder.chmod(0o755)
    assert not list(folder.iterdir())


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """RLIMIT_FSIZE for this process: writes past ``limit`` bytes come up short or fail (EFBIG),
    as on a full disk (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_short_write_never_leaves_a_partial_line_or_file(tmp_path):
    """Item 8: on a full disk a short write left a partial line (the resume then failed in
    repair) and a 0-byte PNG stayed behind."""
    store = ResultStore(tmp_path / "rows.jsonl")
    store.append(synthetic_row(cell_id="a"))
    size = store.path.stat().st_size
    with _file_size_limit(size + 100), pytest.raises(StoreError, match="left at its last complete row"):
        store.append(synthetic_row(cell_id="b"))  # the line is far longer than 100 bytes
    assert store.path.stat().st_size == size
    assert store.repair() == [] and set(store.load(warn=False).rows) == {"a"}
    store.append(synthetic_row(cell_id="b"))
    assert set(store.load(warn=False).rows) == {"a", "b"}
    with _file_size_limit(1000), pytest.raises(OSError):
        write_bytes_atomic(tmp_path / "plot.png", b"\x89PNG" + bytes(10_000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]
    with pytest.raises(StoreError, match="MiB free"):
        check_output_path(tmp_path / "x.jsonl", needed_bytes=shutil.disk_usage(tmp_path).free * 2)


def test_a_disk_filling_up_mid_run_stops_with_one_line_and_resumes(tmp_path):
    """Item 8: the run stops at the first failed append with one line, the store ends on a
    complete row, and the same command resumes to the full result."""
    store = tmp_path / "rows.jsonl"
    argv = [*TINY_ARGS, "--estimators", "pg", "--backend", "serial", "--store", str(store)]
    assert cli.main([*argv[:-1], str(tmp_path / "ref.jsonl")]) == 0
    row_size = len((tmp_path / "ref.jsonl").read_bytes().splitlines()[0]) + 1

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(2.5 * row_size), resource.RLIM_INFINITY))

    proc = subprocess.run(
        [sys.executable, "-m", "metagrad.app.cli", *argv], preexec_fn=limited, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"metagrad: cannot append to {store}")
    assert store.read_bytes().endswith(b"\n") and len(_lines(store)) == 2
    assert cli.main(argv) == 0
    ref = {r["cell_id"]: r["mse"] for r in _lines(tmp_path / "ref.jsonl")}
    assert {r["cell_id"]: r["mse"] for r in _lines(store)} == ref


# ---------------------------------------------------------------------------------------------
# 9. Memory estimates
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["tabular", "--preset", "quick", "--n", "1000000000"], "--n or --repeats"),
        (["tabular", "--preset", "quick", "--num-tasks", "1000000000"], "--num-tasks"),
        (["ipd", "--preset", "quick", "--n", "100000000"], "--n or --repeats"),
    ],
)
def test_cells_that_cannot_fit_are_refused_before_allocating(tmp_path, args, flag):
    """Item 9: `--n 1000000000` died in the allocator ("tried to allocate 3.36 TB"); a billion
    tasks segfaulted."""
    store = tmp_path / "rows.jsonl"
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *args, "--store", str(store), "--no-progress"])
    assert re.search(
        r"needs about [\d.]+ TB of memory .* is available on cpu: lower " + re.escape(flag), str(exc.value)
    ), str(exc.value)
    assert not store.exists()


def test_memory_check_counts_the_cells_that_run_at_once():
    """Item 9: W workers hold W cells at once."""
    cells = [("a", MemoryEstimate(6 * 2**30, "x", ("--n",))), ("b", MemoryEstimate(6 * 2**30, "y", ("--n",)))]
    check_memory(cells, workers=1, available=8 * 2**30)
    with pytest.raises(InsufficientMemory, match=r"2 cells at once .* lower --workers"):
        check_memory(cells, workers=2, available=8 * 2**30)
    with pytest.raises(InsufficientMemory, match=r"cell a needs about 6\.44 GB"):
        check_memory(cells, workers=1, available=2**30)


_PEAK_SCRIPT = """
import json, resource, sys, torch
torch.set_num_threads(1)
from metagrad.app.suites import get_suite
suite = get_suite(sys.argv[1])
overrides = json.loads(sys.argv[2])
overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
small = suite.config("quick", **{**overrides, "n": 2})
suite.run_cell(small, suite.make_cells(small)[0], "cpu")  # imports, caches, allocator warm
config = suite.config("quick", **overrides)
cell = suite.make_cells(config)[0]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
suite.run_cell(config, cell, "cpu")
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"measured": grown, "estimate": suite.memory_estimate(config, cell).bytes}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("suite", "overrides"),
    [
        (
            "tabular",
            {
                "num_tasks": 1,
                "repeats": 10,
                "estimators": ["dice"],
                "combinations": ["lll"],
                "experiments": ["decomposition"],
                "n": 20000,
            },
        ),
        (
            "tabular",
            {
                "num_tasks": 1,
                "repeats": 10,
                "estimators": ["loaded_dice"],
                "combinations": ["ele"],
                "experiments": ["decomposition"],
                "n": 20000,
            },
        ),
        (
            "ipd",
            {
                "num_pairs": 1,
                "repeats": 8,
                "pair_kinds": ["random"],
                "estimators": ["dice_baseline"],
                "combinations": ["lll"],
                "experiments": ["decomposition"],
                "n": 4000,
            },
        ),
    ],
)
def test_memory_estimates_bound_measured_peaks(suite, overrides):
    """Item 9: the estimate is an upper bound of a cell's measured peak memory, within 3.5x."""
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, suite, json.dumps(overrides)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.splitlines()[-1])
    assert figures["measured"] <= figures["estimate"] <= 3.5 * figures["measured"], figures


# ---------------------------------------------------------------------------------------------
# 10. Early validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: MetaGradientSpec(inner_lr=math.inf), "inner_lr"),
        (lambda: MetaGradientSpec(hessian_bias=math.inf), "hessian_bias"),
        (lambda: MetaGradientSpec(hessian_bias=1.0, hessian_bias_noise=math.nan), "hessian_bias_noise"),
        (lambda: CriticSpec(noise=math.inf), "critic.noise"),
        (lambda: StageSpec("loaded_dice", 8, params=(("lambda_", math.nan),)), "params.lambda_"),
        (lambda: LolaSpec(lookahead_lr=math.inf), "lookahead_lr"),
        (lambda: score(torch.zeros(1, 3, 2), torch.zeros(1, 2), num_bootstrap=0), "num_bootstrap"),
        (lambda: check_unbiased(ESTIMATORS["dice"].fn, alpha=0), "alpha"),
        (lambda: check_unbiased(ESTIMATORS["dice"].fn, critic_noise=math.inf), "critic_noise"),
        (
            lambda: tabular_return(
                random_task(seed=0),
                torch.zeros(20, 5, dtype=torch.float64),
                reward=torch.full((20, 5), math.nan, dtype=torch.float64),
            ),
            "reward",
        ),
    ],
)
def test_library_inputs_are_checked_when_given(build, match):
    """Item 10: these failed later as "logits: contains NaN", or never (alpha=0 always passed)."""
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["compare", "maml", "--inner-lr", "inf"], "inner_lr"),
        (["compare", "ipd", "--lookahead-lr", "inf", "--pairings", "NL-NL,LOLA-DiCE"], "lookahead_lr"),
        (["compare", "ipd", "--seeds", "-1"], "seeds"),
        ([*TINY_ARGS, "--seed", "-1"], "seed: expected an integer >= 0"),
        ([*TINY_ARGS, "--seed", str(2**64)], r"seed: expected an integer >= 0 and <= 4294967295"),
        (["bench", "ipd", "--preset", "quick", "--seed", "-1"], "seed"),
        (["perf", "--episodes", "0"], "--episodes"),
        (["perf", "--loop-episodes", "0"], "--loop-episodes"),
        (["check", "--against", "rows.jsonl", "--z", "-1"], "--z"),
        (["check", "--against", "rows.jsonl", "--z", "nan"], "--z"),
    ],
)
def test_command_line_values_are_checked_before_any_work(tmp_path, monkeypatch, argv, match):
    """Item 10: tracebacks, late failures without the field's name, or accepted nonsense."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text(json.dumps(row_json()) + "\n")

    def no_work(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr("metagrad.app.running.runner.execute", no_work)
    monkeypatch.setattr(perf, "rollout_throughput", no_work)
    with pytest.raises(SystemExit, match=match):
        cli.main(argv)


def test_check_out_is_checked_before_the_recompute(tmp_path, monkeypatch):
    """Item 10: `check --out DIR` (now `check --store`) failed only after the full recompute."""
    store = tmp_path / "rows.jsonl"
    assert _bench(store) == 0

    def no_work(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr("metagrad.app.judging.check.score_tasks", no_work)
    with pytest.raises(SystemExit, match="is a directory"):
        cli.main(["check", "--against", str(store), "--store", str(tmp_path)])
    with pytest.raises(ValueError, match="z: expected a finite number > 0"):
        check_against(store, z=math.nan)


# ---------------------------------------------------------------------------------------------
# 11. --import forms
# ---------------------------------------------------------------------------------------------

_PLUGIN = (
    "from metagrad.estimators import ESTIMATORS, register_estimator\n"
    "register_estimator({name!r}, ESTIMATORS['pg'].fn, reference='test', summary='test', uses_critic=True)\n"
)


@pytest.mark.skipif(not METAGRAD.exists(), reason="the metagrad console script is not installed")
@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_import_by_module_name_and_by_path_reaches_every_worker(tmp_path, backend):
    """Item 11: `--import my_estimators` (a module in the working directory) failed with "No
    module named"; `--import ./mine.py` was a raw TypeError. Both now reach the pool workers and
    the tasks of a local Ray (the estimators are looked up by name in those processes)."""
    if backend == "ray":
        pytest.importorskip("ray")
    (tmp_path / "my_estimators.py").write_text(_PLUGIN.format(name="from_cwd"))
    (tmp_path / "mine.py").write_text(_PLUGIN.format(name="from_file"))
    plugins = ["--import", "my_estimators", "--import", "./mine.py"]
    run = ["--estimators", "from_cwd,from_file", "--backend", backend, "--workers", "2", "--store", "r.jsonl"]
    proc = subprocess.run(
        [str(METAGRAD), *plugins, *TINY_ARGS, *run],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    rows = _lines(tmp_path / "r.jsonl")
    assert len(rows) == _tiny_cells(("pg", "dice"))  # as many cells as two built-in estimators
    assert {r["estimator"] for r in rows} == {"from_cwd", "from_file", "exact"}


def test_import_errors_are_one_line(tmp_path, monkeypatch):
    """Item 11: a missing module or file, or a file shadowing another module, is one line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "json.py").write_text("")
    for text, match in (
        ("no_such_module_here", "no module named 'no_such_module_here'"),
        ("./missing.py", "no such file"),
        ("./json.py", "a different module named 'json' is already imported"),
    ):
        with pytest.raises(PluginError, match=match):
            load_plugin(text)
        with pytest.raises(SystemExit, match=match):
            cli.main(["--import", text, "list"])


# ---------------------------------------------------------------------------------------------
# 12. Provenance
# ---------------------------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _repo(path: Path, project: str, package: str) -> Path:
    path.mkdir(parents=True)
    _git(path, "init", "-q")
    (path / "pyproject.toml").write_text(f'[project]\nname = "{project}"\nversion = "1"\n')
    (path / package).mkdir(parents=True)
    (path / package / "__init__.py").write_text("")
    _git(path, "add", ".")
    _git(path, "commit", "-q", "-m", "init")
    return path / package


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_provenance_records_only_the_suites_own_commit(tmp_path):
    """Item 12: installed in a venv inside a user's repository, rows recorded the user's commit."""
    users = _repo(tmp_path / "user", "my-research", ".venv/lib/python3/site-packages/metagrad")
    assert checkout_commit(users) is None  # never the user's commit
    ours = _repo(tmp_path / "suite", "metagrad", "metagrad")
    head = _git(ours.parent, "rev-parse", "HEAD")
    assert checkout_commit(ours) == head
    (ours / "__init__.py").write_text("# changed\n")
    assert checkout_commit(ours) == head + "-dirty"
    vendored = _repo(tmp_path / "suite2", "metagrad", "vendor/metagrad")
    assert checkout_commit(vendored) is None  # a copy elsewhere inside a metagrad checkout
    assert checkout_commit(tmp_path) is None  # not a git work tree
    row = provenance()
    assert row.versions["metagrad"] and row.git_commit == git_commit()
    if (ROOT / ".git").exists():  # this test runs from the suite's own checkout
        assert git_commit().split("-")[0] == _git(ROOT, "rev-parse", "HEAD")
    else:
        assert git_commit() == NO_CHECKOUT


# ---------------------------------------------------------------------------------------------
# 13. Ray clusters
# ---------------------------------------------------------------------------------------------


def test_an_unreachable_ray_cluster_is_one_line(tmp_path):
    """Item 13: connection failures were a `ConnectionError` traceback (after a long wait)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.monotonic()
    with pytest.raises(SystemExit, match=rf"no Ray cluster answers at 127.0.0.1:{port}"):
        cli.main(
            [
                *TINY_ARGS,
                "--backend",
                "ray",
                "--address",
                f"127.0.0.1:{port}",
                "--store",
                str(tmp_path / "r.jsonl"),
            ]
        )
    assert time.monotonic() - start < 30


def _stop_cluster(marker: str) -> None:
    """Kill the processes of one test cluster (those naming its temporary folder, and the
    raylet's workers); `ray stop` would stop every Ray cluster of this user."""
    own = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    own.add(int(entry.name))
    for pid in list(own):
        own |= _children(pid)
    for pid in own:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_bench_runs_on_a_cluster_started_with_ray_start(tmp_path):
    """Item 13: with Ray >= 2.5x a cluster started with `ray start --head` refused the bench
    until RAY_AUTH_MODE=token was set. The cluster runs with its own HOME (token) and temp dir."""
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path / "home")
    temp = Path(tempfile.mkdtemp(prefix="mgray", dir="/tmp"))  # Ray's socket paths must stay short
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        # a token, as any earlier local `ray.init()` leaves in ~/.ray: `ray start` then enables
        # token authentication, and the driver must use it
        token = subprocess.run([str(ray_cli), "get-auth-token", "--generate"], env=env, capture_output=True)
        started = subprocess.run(
            [
                str(ray_cli),
                "start",
                "--head",
                "--port",
                str(port),
                "--node-ip-address",
                "127.0.0.1",
                "--num-cpus",
                "2",
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
                "--temp-dir",
                str(temp),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert started.returncode == 0, started.stderr
        auto = importlib.util.find_spec("ray._private.authentication.authentication_token_setup")
        if token.returncode == 0 and auto and "def maybe_enable_token_auth" in Path(auto.origin).read_text():
            # a Ray whose `ray start` turns token authentication on when a token exists (2.60)
            assert "Token authentication is enabled" in started.stderr + started.stdout
        argv = [*TINY_ARGS, "--estimators", "pg"]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "metagrad.app.cli",
                *argv,
                "--backend",
                "ray",
                "--address",
                f"127.0.0.1:{port}",
                "--store",
                str(tmp_path / "ray.jsonl"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
    finally:
        _stop_cluster(str(temp))
        shutil.rmtree(temp, ignore_errors=True)
    assert cli.main([*argv, "--backend", "serial", "--store", str(tmp_path / "serial.jsonl")]) == 0
    on_ray = {r["cell_id"]: r["mse"] for r in _lines(tmp_path / "ray.jsonl")}
    assert on_ray == {r["cell_id"]: r["mse"] for r in _lines(tmp_path / "serial.jsonl")}


# ---------------------------------------------------------------------------------------------
# 14. Ecosystem faces: SB3 and PettingZoo
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["MetaGrad/TabularMDP-v0", "MetaGrad/IPD-v0", "MetaGrad/IMP-v0"])
def test_sb3_make_vec_env_and_ppo_train_on_every_env(env_id):
    """Item 14: `make_vec_env` failed with "render_mode: expected one of ['ansi'], got 'rgb_array'"."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env(env_id, n_envs=2, seed=0)
    obs = env.reset()
    assert obs.shape == (2,) and env.render_mode == "rgb_array"
    frame = env.get_images()[0]
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    assert model.num_timesteps >= 64
    env.close()


def test_pettingzoo_aec_api_test_passes_through_parallel_to_aec():
    """Item 14: the AEC `api_test` failed: "'int' object has no attribute 'dtype'"."""
    from pettingzoo.test import api_test, parallel_api_test
    from pettingzoo.utils.conversions import parallel_to_aec

    from metagrad.envs.ipd import IPDParallelEnv

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Observation is not a NumPy array")
        parallel_api_test(IPDParallelEnv(horizon=10), num_cycles=30)
        api_test(parallel_to_aec(IPDParallelEnv(horizon=10)), num_cycles=30)
    env = IPDParallelEnv(horizon=4, render_mode="rgb_array")
    observations, _ = env.reset(seed=0)
    assert all(env.observation_space(a).contains(o) and o.dtype == np.int64 for a, o in observations.items())
    assert env.metadata["render_fps"] > 0 and env.render().shape[2] == 3


# ---------------------------------------------------------------------------------------------
# 15. The README's commands; progress off a terminal
# ---------------------------------------------------------------------------------------------


def _readme_commands() -> tuple[list[list[str]], list[str]]:
    """``metagrad ...`` commands of README.md: runnable ones (fenced blocks and inline code) as
    argv lists, and synopses (with ``[...]``, ``a|b``, ``<name>`` or CAPITAL placeholders)."""
    text = (ROOT / "README.md").read_text()
    spans = []
    for lang, block in re.findall(r"^```(\w*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        if lang in ("", "bash", "sh", "console"):
            spans += [s for s in block.replace("\\\n", " ").splitlines() if s.strip()]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    spans += [s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", prose)]
    commands, synopses = [], []
    for span in spans:
        for part in span.split("&&"):
            if not re.match(r"\s*(\S*/)?metagrad\s", part):
                continue
            words = shlex.split(part.split(" # ")[0], comments=True)
            if not words or Path(words[0]).name != "metagrad" or len(words) < 2:
                continue
            argv = words[1:]
            if any(re.search(r"[\[\]|<>]|\.\.\.", w) or re.fullmatch(r"[A-Z][A-Z:_]*", w) for w in argv):
                synopses.append(part)
            else:
                commands.append(argv)
    return commands, synopses


def test_every_readme_command_parses_and_validates(monkeypatch):
    """Item 15: `metagrad bench --preset quick` was rejected ("--preset needs a suite"). Every
    runnable README command parses and builds its run (configs validated; nothing runs); every
    flag of a synopsis exists."""
    commands, synopses = _readme_commands()
    assert len(commands) >= 15 and len(synopses) >= 5
    # the README's my_estimators.py registers "mine"
    monkeypatch.setitem(ESTIMATORS, "mine", ESTIMATORS["dice"])
    parser = cli.build_parser()
    for argv in commands:
        argv = [a for i, a in enumerate(argv) if not (a == "--import" or argv[i - 1] == "--import")]
        args = parser.parse_args(argv)  # SystemExit on a bad command
        if args.command == "bench":
            assert bench_runs(args), argv
        elif args.command == "compare":
            compare_config(args)
    quick = bench_runs(parser.parse_args(["bench", "--preset", "quick"]))
    assert [(suite, config.preset) for suite, config in quick] == [("tabular", "quick"), ("ipd", "quick")]
    subcommands = {a.dest: a for a in parser._subparsers._group_actions}["command"].choices
    for synopsis in synopses:
        words = shlex.split(synopsis.replace("[", " ").replace("]", " ").replace("|", " "))
        sub = subcommands.get(words[1]) if len(words) > 1 else None
        known = set(parser._option_string_actions) | (set(sub._option_string_actions) if sub else set())
        flags = [w for w in words if w.startswith("--")]
        assert set(flags) <= known, (synopsis, set(flags) - known)


def test_progress_is_a_bar_on_a_terminal_and_sparse_lines_elsewhere(tmp_path):
    """Item 15: tqdm wrote 400 updates into one line of a log."""
    log = tmp_path / "log.txt"
    with open(log, "w") as fh, progress_bar(400, "bench", "cell", file=fh) as bar:
        assert isinstance(bar, LineProgress)
        for _ in range(400):
            bar.update(1)
    lines = log.read_text().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("bench: 400/400 cells (100%)")
    assert "\r" not in log.read_text()
    with open(log, "w") as fh:
        slow = LineProgress(1000, "check", "cell", file=fh, every_seconds=0.0)
        for _ in range(5):
            slow.update(1)
    assert len(log.read_text().splitlines()) == 5  # a line every `every_seconds`, even below a tenth
    import pty

    master, child = pty.openpty()
    with os.fdopen(child, "w") as terminal:
        bar = progress_bar(10, "bench", "cell", file=terminal)
        assert not isinstance(bar, LineProgress)
        bar.close()
    os.close(master)
