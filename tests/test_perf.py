"""Throughput targets (benchmark-sized, excluded from the default run: ``pytest -m slow``).

The figures depend on the machine; the targets are the issues' for a 2-core CPU with one torch
thread, and the README records what was measured.
"""

from __future__ import annotations

import pytest

from metagrad.app.perf import (
    ipd_rollout_throughput,
    lola_dice_update_rate,
    python_loop_throughput,
    rollout_throughput,
)

pytestmark = pytest.mark.slow


def test_tabular_engine_throughput():
    engine = rollout_throughput()
    assert engine["steps_per_s"] >= 10e6
    assert engine["steps_per_s"] / python_loop_throughput(num_episodes=200)["steps_per_s"] >= 50


def test_ipd_engine_throughput():
    assert ipd_rollout_throughput()["steps_per_s"] >= 10e6


def test_lola_dice_update_rate():
    assert lola_dice_update_rate()["updates_per_s"] >= 50
