"""The package's shape: one import namespace, two layers, plugins.

* the wheel installs exactly one top-level package, ``metagrad``;
* the layering contract (``[tool.importlinter]`` in pyproject.toml) holds on the package as
  installed and catches a library module that imports the application;
* ``import metagrad``, the Gymnasium ``metagrad:`` form and a tiny bench work from a directory
  holding a user's own ``envs.py`` and ``agents.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from metagrad.app.suites import SUITES

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source")  # setuptools builds in-tree: keep the checkout clean
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("metagrad", "envs", "agents"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            out,
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("metagrad-*.whl")
    return path


def test_the_wheel_installs_one_top_level_package(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"metagrad"}
    for module in (
        "metagrad/envs/tabular/engine.py",
        "metagrad/agents/lola.py",
        "metagrad/app/cli/__init__.py",
    ):
        assert module in names


def _lint_imports(site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=site,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (dev extra)")
def test_layering_contract_holds_and_catches_a_library_module_importing_the_app(wheel, tmp_path):
    # import-linter walks the package folder; the installed layout (envs/ and agents/ inside
    # metagrad/) is what it must see, so the contract runs on the unpacked wheel
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    shutil.copy(ROOT / "pyproject.toml", site / "pyproject.toml")
    ok = _lint_imports(site)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "BROKEN" not in ok.stdout and "2 kept, 0 broken" in ok.stdout

    with open(site / "metagrad" / "estimators.py", "a") as fh:
        fh.write("\nimport metagrad.app.running.rows  # a deliberate violation\n")
    broken = _lint_imports(site)
    assert broken.returncode != 0
    assert "metagrad.estimators is not allowed to import metagrad.app" in broken.stdout


def test_import_and_a_tiny_bench_beside_a_users_envs_and_agents_modules(tmp_path):
    for name in ("envs", "agents"):
        (tmp_path / f"{name}.py").write_text(
            f"raise RuntimeError('the user\\'s own {name}.py was imported')\n"
        )
    script = (
        "import gymnasium, metagrad\n"
        "from metagrad.app.cli import main\n"
        "env = gymnasium.make('MetaGrad/TabularMDP-v0')\n"
        "assert env.reset(seed=0)[0] == 0\n"
        "raise SystemExit(main(['bench', 'tabular', '--preset', 'quick', '--num-tasks', '1',"
        " '--repeats', '2', '--experiments', 'decomposition', '--estimators', 'dice',"
        " '--workers', '2', '--no-progress', '--store', 'out/rows.jsonl']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len((tmp_path / "out" / "rows.jsonl").read_text().splitlines()) == 5  # the quick decomposition
    assert (tmp_path / "out" / "leaderboard.md").exists()


def test_gymnasium_module_prefix_imports_metagrad_in_a_fresh_interpreter(tmp_path):
    script = (
        "import gymnasium\n"
        "env = gymnasium.make('metagrad:MetaGrad/TabularMDP-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "env.step(env.action_space.sample())\n"
        "ipd = gymnasium.make('metagrad:MetaGrad/IPD-v0')\n"
        "ipd.reset(seed=0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_suite_is_a_complete_plugin():
    for suite in SUITES.values():
        assert suite.default_preset in suite.presets
        for config in suite.presets.values():
            assert set(config.experiments) <= set(suite.experiments)
            cells = suite.make_cells(config)
            assert cells and len({cell.key for cell in cells}) == len(cells)
            if suite.memory_estimate is not None:  # every cell of every preset has an estimate
                assert all(suite.memory_estimate(config, cell).bytes > 0 for cell in cells)
        assert {o.dest for o in suite.options} >= {"seed", "repeats", "estimators"}
        assert suite.describe_preset(suite.presets[suite.default_preset])
