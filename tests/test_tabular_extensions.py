"""The tabular suite's extensions: Hessian scoring (tang2021 / ope presets), the MLMC
compositional-bias experiment (mlmc preset) and the cost-aware row fields."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from metagrad.app.judging.leaderboard import setting_key
from metagrad.app.running.rows import ResultRow
from metagrad.app.suites import tabular
from metagrad.derivatives import exact_derivatives
from metagrad.mlmc import MLMC
from tests.rowkit import row_json, synthetic_row


def _small(**overrides):
    base = dict(num_states=5, num_actions=3, horizon=6, dirichlet_alpha=1.0, num_tasks=2, repeats=4)
    return dataclasses.replace(tabular.PRESETS["tang2021"], **{**base, **overrides})


def test_tang2021_preset_is_the_public_codes_toy_protocol():
    c = tabular.PRESETS["tang2021"]
    assert (c.num_states, c.num_actions, c.dirichlet_alpha, c.gamma, c.horizon) == (20, 5, 0.001, 0.8, 20)
    assert (c.critic_noise, c.num_tasks, c.ope_eps, c.ope_behaviours) == (1.0, 10, (0.8,), ("uniform",))
    assert c.objective == "infinite" and 1000 in c.ope_n
    assert c.ope_estimators == ("stepwise_is", "doubly_robust", "vtrace", "taylor1", "taylor2")
    assert c.experiments == ("hessian_scoring",)
    cells = tabular.make_cells(c)
    assert len(cells) == 5 * 2 * len(c.ope_n)
    assert len({cell.key for cell in cells}) == len(cells)
    # the extensions stay out of the papers' presets
    assert not set(tabular.EXTRA_EXPERIMENTS) & set(tabular.PRESETS["liu2022"].experiments)


def test_hessian_scoring_rows_are_paired_and_rebuild():
    """Every estimator of a setting sees the same episodes: on-policy, step-wise IS is DiCE, so
    their rows agree to rounding; the Hessian row is scored against the exact Hessian."""
    config = _small(
        ope_estimators=("dice", "stepwise_is"), ope_behaviours=("target",), ope_n=(8,), ope_eps=(0.5,)
    )
    rows = {(c.estimator, c.spec.derivative): tabular.run_cell(config, c) for c in tabular.make_cells(config)}
    for derivative in ("gradient", "hessian"):
        a, b = rows[("dice", derivative)].metrics, rows[("stepwise_is", derivative)].metrics
        assert a.mse == pytest.approx(b.mse, rel=1e-9) and a.corr == pytest.approx(b.corr, rel=1e-9)
    row = rows[("stepwise_is", "hessian")]
    assert (row.get("derivative"), row.get("behaviour"), row.get("eps"), row.get("n_episodes")) == (
        "hessian",
        "target",
        0.5,
        8,
    )
    exact = torch.stack(
        [
            exact_derivatives(
                task, tabular.target_logits(config, i, 0.5), "hessian", config.objective
            ).reshape(-1)
            for i, task in enumerate(config.tasks(config.num_tasks))
        ]
    )
    assert row.metrics.exact_norm == pytest.approx(float((exact**2).sum(-1).mean().sqrt()), rel=1e-12)
    config2, cell = tabular.SUITE.rebuild(ResultRow.from_json(json.loads(json.dumps(row.to_json()))))
    assert (
        config2 == config
        and cell.spec == next(c for c in tabular.make_cells(config) if c.key == row.cell_id).spec
    )


def test_target_policy_is_shared_across_eps_and_cells():
    config = _small()
    a = torch.softmax(tabular.target_logits(config, 1, 0.8), -1)
    b = torch.softmax(tabular.target_logits(config, 1, 0.2), -1)
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert torch.allclose(a.max(-1).values, torch.full((5,), 0.8 + 0.2 / 3, dtype=torch.float64))
    assert torch.allclose(
        torch.softmax(tabular.target_logits(config, 1, 0.0), -1),
        torch.full((5, 3), 1 / 3, dtype=torch.float64),
    )


def test_mlmc_preset_cells_and_rows():
    config = dataclasses.replace(
        tabular.PRESETS["mlmc"], num_tasks=1, mlmc_repeats=6, mlmc_plain_estimators=("pg",), mlmc_max_level=2
    )
    cells = tabular.make_cells(config)
    assert [c.estimator for c in cells] == ["pg", "mlmc", "pg", "pg", "pg"]
    assert all(c.repeats == 6 for c in cells)
    row = tabular.run_cell(config, cells[1])
    assert row.estimator == "mlmc" and row.metrics.repeats == 6
    assert row.get("mlmc_base") == "pg" and row.get("mlmc_max_level") == 2
    assert row.episodes_per_estimate == pytest.approx(8 * (1 + MLMC(max_level=2).expected_scale()))
    assert row.mse_x_episodes == pytest.approx(row.metrics.mse * row.episodes_per_estimate)
    # the plain and the MLMC rows form one leaderboard setting
    plain = tabular.run_cell(config, cells[0])
    assert setting_key(plain) == setting_key(row)
    assert plain.cell["pairing"] == row.cell["pairing"]  # the MLMC stage pairs with the plain ones
    stored = ResultRow.from_json(json.loads(json.dumps(row.to_json())))
    assert stored.episodes_per_estimate == row.episodes_per_estimate
    assert tabular.SUITE.rebuild(stored)[1].spec == cells[1].spec


def test_extension_config_validation():
    for bad, match in (
        (dict(ope_eps=(1.0,)), "ope_eps"),
        (dict(ope_behaviours=("replay",)), "ope_behaviours"),
        (dict(ope_derivatives=("third",)), "ope_derivatives"),
        (dict(ope_estimators=("nope",)), "unknown name"),
        (dict(mlmc_estimator="nope"), "unknown name"),
        (dict(mlmc_n=(0,)), "mlmc_n"),
        (dict(mlmc_repeats=1), "mlmc_repeats"),
        (dict(mlmc_max_level=0), "max_level"),
        (dict(experiments=("nope",)), "experiments"),
    ):
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(tabular.PRESETS["tang2021"], **bad)


def test_cost_aware_row_fields():
    row = synthetic_row(episodes_per_estimate=43.25, mse=0.5, mse_se=0.1)
    assert row.episodes_per_estimate == 43.25
    assert row.value("mse_x_episodes") == pytest.approx(21.625)
    assert row.value("mse_x_episodes_se") == pytest.approx(4.325)
    data = row.to_json()
    assert data["mse_x_episodes"] == pytest.approx(21.625)
    # derived: recomputed on load, never a setting field; whole counts stay integers
    again = ResultRow.from_json({**data, "mse_x_episodes": 1e9})
    assert again.mse_x_episodes == pytest.approx(21.625) and "mse_x_episodes" not in again.setting
    assert isinstance(ResultRow.from_json(row_json(episodes_per_estimate=32.0)).episodes_per_estimate, int)
