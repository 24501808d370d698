"""Verdicts that hold for any seed: common random numbers, paired comparisons, the pre-registered
claims, the injected-Hessian-bias oracle, the off-policy LOLA protocol, the seed table."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics

import numpy as np
import pytest
import torch
from rowkit import row_json, synthetic_row

from metagrad.app.cli import main, parse_seeds
from metagrad.app.judging.claims import FAIL, INCONCLUSIVE, PASS
from metagrad.app.judging.leaderboard import paired_ranks, write_leaderboard
from metagrad.app.judging.paired import paired_difference, probability_of_improvement, unpaired_difference
from metagrad.app.judging.statistics import (
    exponent_interval,
    mean_interval,
    mean_t_half_width,
    power_law_exponent,
    t_intervals,
)
from metagrad.app.presenting.report import claims_by_seed, seed_table
from metagrad.app.running.rows import ResultRow, RowError
from metagrad.app.running.store import ResultStore
from metagrad.app.suite import Cell
from metagrad.app.suites.ipd import IPDBenchConfig, fifo_buffer_updates, ipd_claims
from metagrad.app.suites.ipd import make_cells as make_ipd_cells
from metagrad.app.suites.ipd import run_cell as run_ipd_cell
from metagrad.app.suites.tabular import TabularBenchConfig, make_cells, run_cell, tabular_claims
from metagrad.critics import CriticSpec
from metagrad.decomposed import MetaGradientSpec, exact_meta_gradient, sample_meta_gradients
from metagrad.envs import random_task
from metagrad.estimators import ESTIMATORS, dice, register_estimator
from metagrad.injected import expected_injected_meta_gradient
from metagrad.lola import LolaSpec, exact_lola_target, sample_lola_gradients
from metagrad.staged import StageSpec

ALPHA = 1e-3  # family-wise false-alarm rate of each statistical test


def _threshold(components: int) -> float:
    return statistics.NormalDist().inv_cdf(1 - ALPHA / (2 * components))


@pytest.fixture(scope="module")
def dice_copy():
    """``dice`` registered again under another name (removed after the module)."""
    register_estimator(
        "dice_copy", dice, reference="test", summary="dice under another name", unbiased_orders="all"
    )
    yield "dice_copy"
    ESTIMATORS.pop("dice_copy", None)


# ---------------------------------------------------------------------------------------------
# Common random numbers
# ---------------------------------------------------------------------------------------------

SMALL = dict(num_states=6, num_actions=3, horizon=8, num_tasks=3, repeats=6, objective="finite")


def test_a_copy_of_an_estimator_scores_bit_identically(dice_copy):
    config = TabularBenchConfig(
        **SMALL, estimators=("dice", dice_copy), combinations=("lll",), decomposition_n=(8,)
    )
    cells = [c for c in make_cells(config) if c.experiment == "decomposition" and c.estimator != "exact"]
    assert [c.estimator for c in cells] == ["dice", dice_copy]
    assert cells[0].key != cells[1].key  # two cells ...
    assert cells[0].pairing == cells[1].pairing  # ... of one setting
    a, b = (run_cell(config, c) for c in cells)
    assert a.metrics == b.metrics and a.per_task == b.per_task


def test_a_copy_scores_bit_identically_in_the_ipd_bench(dice_copy):
    config = IPDBenchConfig(
        horizon=8,
        num_pairs=2,
        repeats=3,
        train_iterations=2,
        n=8,
        estimators=("dice", dice_copy),
        combinations=("lll",),
        experiments=("decomposition",),
        pair_kinds=("random",),
    )
    a, b = (run_ipd_cell(config, c) for c in make_ipd_cells(config))
    assert a.metrics == b.metrics and a.per_task == b.per_task


def test_estimators_with_the_same_first_derivative_coincide_when_only_the_inner_value_is_sampled():
    """'lee' samples only the inner value, whose gradient is sum_t gamma^t A_t grad log pi_t for pg,
    lvc and loaded_dice alike: on common random numbers (same episodes, same critic noise) their
    meta-gradient estimates are the same numbers."""
    task = random_task(6, 3, horizon=8, seed=1)
    logits = torch.zeros(6, 3, dtype=torch.float64)
    out = []
    for est in ("pg", "lvc", "loaded_dice"):
        spec = MetaGradientSpec.from_combination(
            "lee", est, 8, inner_steps=2, inner_lr=2.0, critic=CriticSpec(noise=1.0)
        )
        out.append(sample_meta_gradients(task, logits, spec, 4, generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close(out[0], out[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[0], out[2], rtol=1e-12, atol=1e-12)


def test_critic_draws_of_one_stage_do_not_shift_the_episodes_of_the_next():
    """With alpha = 0 the inner stage moves nothing, so the meta-gradient is the outer estimate at
    theta_0: it must not depend on whether the inner estimator drew critic noise (pg) or not (dice)."""
    task = random_task(6, 3, horizon=8, seed=2)
    logits = torch.zeros(6, 3, dtype=torch.float64)
    out = []
    for inner in ("dice", "pg"):
        spec = MetaGradientSpec(
            inner=StageSpec(inner, 8),
            outer=StageSpec("pg", 8),
            inner_steps=1,
            inner_lr=0.0,
            critic=CriticSpec(noise=1.0),
        )
        out.append(sample_meta_gradients(task, logits, spec, 3, generator=torch.Generator().manual_seed(9)))
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)


def test_paired_comparison_is_tighter_than_unpaired():
    """On a real setting ('ele', pg vs lvc, common random numbers) the CI of the paired difference
    is narrower than that of the same rows compared unpaired; rows of different settings (other
    random numbers) refuse to be paired."""
    config = TabularBenchConfig(
        num_tasks=8,
        repeats=10,
        estimators=("pg", "lvc"),
        combinations=("ele",),
        decomposition_n=(16,),
        experiments=("decomposition",),
    )
    pg_cell, lvc_cell = (c for c in make_cells(config) if c.estimator in ("pg", "lvc"))
    pg, lvc = run_cell(config, pg_cell), run_cell(config, lvc_cell)
    for metric in ("mse", "bias_sq_debiased"):
        paired = paired_difference(pg, lvc, metric).interval
        unpaired = unpaired_difference(pg, lvc, metric)
        assert paired.estimate == pytest.approx(unpaired.estimate)
        assert paired.high - paired.low < unpaired.high - unpaired.low, metric
    other = dataclasses.replace(pg_cell, tags={"independent": 1}).bind(config)
    assert other.seed != pg_cell.seed
    with pytest.raises(ValueError, match="not paired"):
        paired_difference(run_cell(config, other), lvc)


def test_common_random_numbers_shrink_the_noise_of_a_difference():
    """Per estimate, the squared error of Loaded DiCE minus that of LVC ('lll') varies much less on
    common random numbers than with independent ones."""
    task = random_task(6, 3, horizon=8, seed=4)
    logits = torch.zeros(6, 3, dtype=torch.float64)
    common = dict(inner_steps=1, inner_lr=2.0, critic=CriticSpec(noise=0.5))
    exact = exact_meta_gradient(task, logits, MetaGradientSpec(**common))

    def errors(est: str, seed: int) -> torch.Tensor:
        spec = MetaGradientSpec.from_combination("lll", est, 8, **common)
        x = sample_meta_gradients(task, logits, spec, 300, generator=torch.Generator().manual_seed(seed))
        return ((x - exact) ** 2).sum((-2, -1))

    loaded = errors("loaded_dice", 1)
    crn = (loaded - errors("lvc", 1)).var()
    independent = (loaded - errors("lvc", 2)).var()
    assert crn < 0.5 * independent, (crn, independent)


def test_paired_helpers_on_synthetic_rows():
    a = _row("a", {"mse": [1.0, 2.0, 3.0, 4.0]})
    b = _row("b", {"mse": [0.5, 1.5, 2.5, 3.0]})
    diff = paired_difference(a, b, "mse")
    assert diff.interval.estimate == pytest.approx(0.625) and diff.interval.low > 0 and diff.num_tasks == 4
    same = paired_difference(a, a, "mse").interval
    assert (same.low, same.estimate, same.high) == (0.0, 0.0, 0.0)
    assert probability_of_improvement(b, a, "mse").estimate == 1.0
    assert mean_interval(np.array([1.0, 1.0])).low == 1.0
    with pytest.raises(ValueError, match="no per-task"):
        paired_difference(a, b, "bias_sq_debiased")


# ---------------------------------------------------------------------------------------------
# Rows with per-task metrics
# ---------------------------------------------------------------------------------------------


def _row(
    estimator: str, per_task: dict[str, list[float]], *, pairing: str = "p", seed: int = 0, **setting
) -> ResultRow:
    n = len(next(iter(per_task.values())))
    cell = {
        "experiment": setting.get("experiment", "decomposition"),
        "estimator": estimator,
        "n": 0,
        "extra": {},
        "tags": {},
        "pairing": pairing,
    }
    metrics = {}
    if "mse" in per_task:
        metrics["mse"] = float(np.mean(per_task["mse"]))
    if "bias_sq_debiased" in per_task:
        metrics["bias_sq_debiased"] = float(np.mean(per_task["bias_sq_debiased"]))
    return synthetic_row(
        cell_id=f"{estimator}-{pairing}-{seed}-{sorted(setting.items())}",
        estimator=estimator,
        num_tasks=n,
        seed=seed,
        cell=cell,
        per_task=per_task,
        **metrics,
        **setting,
    )


def test_rows_carry_and_validate_per_task_metrics():
    row = _row("a", {"mse": [1.0, 2.0]})
    again = ResultRow.from_json(json.loads(json.dumps(row.to_json())))
    assert again == row and again.per_task["mse"] == (1.0, 2.0) and "per_task" not in again.setting
    with pytest.raises(RowError, match=r"per_task\.mse"):
        ResultRow.from_json(row_json(num_tasks=2, per_task={"mse": [1.0]}))
    with pytest.raises(RowError, match="per_task"):
        ResultRow.from_json(row_json(num_tasks=1, per_task={"mse": [float("nan")]}))


# ---------------------------------------------------------------------------------------------
# Fits
# ---------------------------------------------------------------------------------------------


def test_power_law_fit_recovers_exponents_and_keeps_non_positive_points():
    x = np.array([2.0, 4, 8, 16, 32, 64])
    assert power_law_exponent(x, 3 * x**-1.5) == pytest.approx(-1.5, abs=0.01)
    assert power_law_exponent(x, 0.5 * x**2.2) == pytest.approx(2.2, abs=0.01)
    # a negative (unresolved) point at the end is not dropped: it pulls the fit steeper
    y = 3 * x**-0.5
    y_neg = y.copy()
    y_neg[-1] = -0.2
    assert power_law_exponent(x, y_neg) < power_law_exponent(x, y[:-1] if False else y)
    assert math.isnan(power_law_exponent(x, -np.ones_like(x)))
    batch = power_law_exponent(x, np.stack([x**-1.0, x**1.0]))
    assert batch == pytest.approx([-1.0, 1.0], abs=0.01)


def test_exponent_interval_covers_the_truth_and_shrinks_with_tasks():
    rng = np.random.default_rng(0)
    x = np.array([2.0, 4, 8, 16, 32])

    def matrix(n):
        return (x**-1.0)[None] * rng.lognormal(0.0, 0.3, (n, 1)) + rng.normal(0, 0.01, (n, len(x)))

    small, large = exponent_interval(x, matrix(8), seed=1), exponent_interval(x, matrix(64), seed=1)
    assert small.contains(-1.0) and large.contains(-1.0)
    assert large.high - large.low < small.high - small.low


# ---------------------------------------------------------------------------------------------
# Claims as pre-registered tests
# ---------------------------------------------------------------------------------------------


def _curve_rows(experiment, xkey, xs, means, *, estimator="dice", n_tasks=12, noise=0.05, seed=0, **setting):
    rng = np.random.default_rng(seed)
    rows = []
    for x, m in zip(xs, means, strict=True):
        values = m * np.exp(rng.normal(0, noise, n_tasks))
        rows.append(
            _row(
                estimator,
                {"bias_sq_debiased": values.tolist()},
                pairing=f"{experiment}{x}",
                experiment=experiment,
                bench="tabular",
                **{xkey: x},
                **setting,
            )
        )
    return rows


def _verdicts(rows):
    return {c.name: c.verdict for c in tabular_claims(rows)}


def test_compositional_bias_vs_n_verdicts():
    ns = [2, 4, 8, 16, 32, 64]
    ok = _curve_rows("sweep_n", "n_inner", ns, [0.1 * n**-1.5 for n in ns])
    assert _verdicts(ok)["compositional_bias_vs_n"] == PASS
    slow = _curve_rows("sweep_n", "n_inner", ns, [0.1 * n**-0.4 for n in ns])  # slower than the bound
    assert _verdicts(slow)["compositional_bias_vs_n"] == FAIL
    noisy = _curve_rows("sweep_n", "n_inner", ns, [1e-3] * len(ns), noise=3.0, n_tasks=3)
    assert _verdicts(noisy)["compositional_bias_vs_n"] in (INCONCLUSIVE, FAIL)


def test_growth_verdicts_are_a_trend_test_and_report_a_decline_at_the_top():
    ks = [1, 2, 3, 4, 5, 6]
    grows = _curve_rows("sweep_k", "inner_steps", ks, [0.01 * 2**k for k in ks])
    assert _verdicts(grows)["compositional_bias_vs_k"] == PASS
    falls = _curve_rows("sweep_k", "inner_steps", ks, [0.01 * 2.0**-k for k in ks])
    assert _verdicts(falls)["compositional_bias_vs_k"] == FAIL
    peaks = _curve_rows("sweep_k", "inner_steps", ks, [0.01, 0.1, 0.4, 0.8, 0.4, 0.2], n_tasks=30)
    claim = tabular_claims(peaks)[1]
    assert claim.verdict == PASS and "for the typical task" in claim.evidence
    ties = _curve_rows("sweep_k", "inner_steps", ks, [0.1] * 6, noise=0.5, n_tasks=4)
    assert _verdicts(ties)["compositional_bias_vs_k"] == INCONCLUSIVE


def _injection_rows(predicted_scale=1.0, measured_scale=1.0):
    rows = []
    cs = [0.5, 1.0, 2.0, 4.0]
    rng = np.random.default_rng(1)
    for experiment, k, alpha in (
        ("hessian_bias", 2, 4.0),
        ("hessian_bias_k", 1, 10.0),
        ("hessian_bias_k", 2, 10.0),
    ):
        for c in cs:
            truth = np.array([0.01 * c ** (2 + 0.4 * (k - 1)) * (1 + 0.1 * i) for i in range(10)])
            measured = measured_scale * truth * (1 + rng.normal(0, 0.01, 10))
            rows.append(
                _row(
                    "exact",
                    {
                        "bias_sq_debiased": measured.tolist(),
                        "predicted_bias_sq": (predicted_scale * truth).tolist(),
                    },
                    pairing=f"{experiment}{k}{c}",
                    experiment=experiment,
                    bench="tabular",
                    inner_steps=k,
                    inner_lr=alpha,
                    hessian_bias_c=c,
                )
            )
    return rows


def test_hessian_injection_verdicts():
    claim = next(c for c in tabular_claims(_injection_rows()) if c.name == "hessian_bias_injection")
    assert claim.verdict == PASS, claim.evidence
    assert claim.figures["exponent K=2"] > claim.figures["exponent K=1"]
    wrong = next(
        c for c in tabular_claims(_injection_rows(measured_scale=1.5)) if c.name == "hessian_bias_injection"
    )
    assert wrong.verdict == FAIL and "measured - predicted" in wrong.evidence


def _ranking_rows(dice_bias=0.0, tasks=12):
    rng = np.random.default_rng(2)
    truth = {"pg": 0.01, "lvc": 0.002, "loaded_dice": 0.0, "dice": dice_bias}
    rows = []
    for n in (32, 256):
        for est, b in truth.items():
            values = b * (1 + rng.normal(0, 0.2, tasks)) + rng.normal(0, 1e-4, tasks)
            rows.append(
                _row(
                    est,
                    {"bias_sq_debiased": values.tolist()},
                    pairing=f"ele{n}",
                    experiment="hessian_ranking",
                    bench="tabular",
                    combination="ele",
                    inner_steps=1,
                    n_hessian=n,
                )
            )
    return rows


def test_hessian_ranking_verdicts():
    assert _verdicts(_ranking_rows())["hessian_bias_ranking"] == PASS
    assert _verdicts(_ranking_rows(dice_bias=0.003))["hessian_bias_ranking"] == FAIL


def _off_policy_rows(replay_helps=True):
    rng = np.random.default_rng(3)
    base = {
        ("dice_baseline", 0, "per_step"): 20.0,
        ("off_policy_dice", 0, "cumulative"): 0.3,
        ("off_policy_dice", 896, "cumulative"): 0.05,
        ("dice", 0, "none"): 20.0,
        ("off_policy_dice", 896, "none"): 3.0,
    }
    rows = []
    for (est, replay, baseline), mse in base.items():
        if not replay_helps and replay:
            mse *= 10
        values = mse * np.exp(rng.normal(0, 0.1, 8))
        rows.append(
            _row(
                est,
                {"mse": values.tolist(), "corr": [0.5] * 8},
                pairing="run",
                bench="ipd",
                experiment="off_policy",
                pair_kind="run",
                combination="lle",
                replay=replay,
                baseline=baseline,
            )
        )
    return rows


def test_off_policy_claim_separates_baseline_from_replay():
    claim = ipd_claims(_off_policy_rows())[0]
    assert claim.verdict == PASS and "baseline share" in claim.evidence
    assert claim.figures["baseline share"] > 0.9
    assert ipd_claims(_off_policy_rows(replay_helps=False))[0].verdict == FAIL
    assert ipd_claims([])[0].verdict == "n/a"


# ---------------------------------------------------------------------------------------------
# The injected-Hessian-bias oracle
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "alpha", "objective"), [(1, 10.0, "finite"), (2, 4.0, "infinite"), (3, 10.0, "finite")]
)
def test_expected_injected_meta_gradient_matches_monte_carlo(steps, alpha, objective):
    task = random_task(6, 3, horizon=8, seed=3)
    logits = torch.zeros(6, 3, dtype=torch.float64)
    spec = MetaGradientSpec(inner_steps=steps, inner_lr=alpha, hessian_bias=2.0, objective=objective)
    predicted = expected_injected_meta_gradient(task, logits, spec)
    # noise-free injection: the sampler's path is the prediction itself
    quiet = dataclasses.replace(spec, hessian_bias_noise=0.0)
    torch.testing.assert_close(
        sample_meta_gradients(task, logits, quiet, 1)[0], predicted, rtol=1e-10, atol=1e-12
    )
    # the noisy injection averages to it (z-test, tolerance from the standard error)
    samples = sample_meta_gradients(task, logits, spec, 2000, generator=torch.Generator().manual_seed(0))
    z = (samples.mean(0) - predicted) / (samples.std(0) / math.sqrt(2000))
    assert z.abs().max() < _threshold(18), z
    # and it is biased: far from the exact meta-gradient
    assert (predicted - exact_meta_gradient(task, logits, spec)).norm() > 20 * (
        samples.std(0) / math.sqrt(2000)
    ).norm()


def test_expected_injected_meta_gradient_rejects_other_specs():
    task = random_task(6, 3, horizon=8, seed=3)
    with pytest.raises(ValueError, match="hessian_bias"):
        expected_injected_meta_gradient(task, torch.zeros(6, 3), MetaGradientSpec())
    with pytest.raises(ValueError, match="every stage exact"):
        spec = MetaGradientSpec.from_combination("ele", "dice", 4, hessian_bias=1.0)
        expected_injected_meta_gradient(task, torch.zeros(6, 3), spec)


# ---------------------------------------------------------------------------------------------
# Off-policy LOLA: the official FIFO buffer
# ---------------------------------------------------------------------------------------------


def test_fifo_buffer_holds_two_batches_per_earlier_update():
    assert fifo_buffer_updates(10, 7) == [9, 9, 8, 8, 7, 7, 6]
    assert fifo_buffer_updates(1, 7) == [0, 0, 0, 0, 0, 0, 0]  # the initial fill at zero logits


def test_off_policy_lookahead_over_a_buffer_of_several_earlier_pairs_is_unbiased():
    gen = torch.Generator().manual_seed(11)
    t1, t2 = (
        torch.randn(5, generator=gen, dtype=torch.float64),
        torch.randn(5, generator=gen, dtype=torch.float64),
    )
    mu1 = t1 + 0.1 * torch.randn(3, 5, generator=gen, dtype=torch.float64)
    mu2 = t2 + 0.1 * torch.randn(3, 5, generator=gen, dtype=torch.float64)
    look = StageSpec("off_policy_dice", 12, 36)
    spec = LolaSpec(
        inner=look,
        hessian=look,
        shared_lookahead=True,
        gamma=0.9,
        horizon=12,
        lookahead_lr=0.5,
        critic=CriticSpec("noisy_exact", 0.5),
    )
    samples = sample_lola_gradients(
        t1, t2, spec, 400, generator=torch.Generator().manual_seed(4), behaviour=(mu1, mu2)
    )
    z = (samples.mean(0) - exact_lola_target(t1, t2, spec)) / (samples.std(0) / math.sqrt(400))
    assert z.abs().max() < _threshold(5), z
    with pytest.raises(ValueError, match="split evenly"):
        bad = dataclasses.replace(
            spec, inner=StageSpec("off_policy_dice", 12, 10), hessian=StageSpec("off_policy_dice", 12, 10)
        )
        sample_lola_gradients(t1, t2, bad, 2, behaviour=(mu1, mu2))


def test_off_policy_cells_share_their_fresh_episodes():
    config = IPDBenchConfig(
        horizon=8,
        num_pairs=2,
        repeats=3,
        off_policy_n=4,
        off_policy_buffer=12,
        run_iterations=4,
        experiments=("off_policy",),
    )
    cells = make_ipd_cells(config)
    assert len(cells) == 10 and {c.tags["pair_kind"] for c in cells} == {"run"}
    assert len({c.pairing for c in cells}) == 2  # one setting per outer stage (exact, sampled)
    assert {(c.estimator, c.extra["replay"], c.extra["baseline"]) for c in cells} == {
        ("dice_baseline", 0, "per_step"),
        ("off_policy_dice", 0, "cumulative"),
        ("off_policy_dice", 8, "cumulative"),
        ("dice", 0, "none"),
        ("off_policy_dice", 8, "none"),
    }
    row = run_ipd_cell(config, cells[2])
    assert row.get("replay") == 8 and row.get("pair_kind") == "run" and row.metrics.num_tasks == 2


# ---------------------------------------------------------------------------------------------
# Leaderboard, report, seed table, CLI
# ---------------------------------------------------------------------------------------------


def test_leaderboard_ranks_by_paired_differences_and_states_ties():
    a = _row(
        "a", {"mse": [1.0, 1.1, 0.9, 1.0, 1.05, 0.95], "bias_sq_debiased": [0.0, 0.1, -0.1, 0.05, -0.05, 0.0]}
    )
    b = _row(
        "b",
        {"mse": [2.0, 2.2, 1.8, 2.0, 2.1, 1.9], "bias_sq_debiased": [0.01, 0.011, 0.009, 0.01, 0.01, 0.01]},
    )
    c = _row("c", {"mse": [1.0, 1.2, 0.8, 1.1, 1.0, 0.9], "bias_sq_debiased": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]})
    ranks = {r.estimator: rank for rank, r, _ in paired_ranks([a, b, c], "mse")}
    assert ranks == {"a": 1, "c": 1, "b": 3}  # a and c cannot be told apart; both beat b
    by_bias = {r.estimator: rank for rank, r, _ in paired_ranks([a, b, c], "bias_sq_debiased")}
    # a's zero is unresolved: it does not rank above b's resolved small bias
    assert by_bias["a"] == by_bias["b"] == 1 and by_bias["c"] == 3


def test_rows_without_per_task_metrics_give_no_verdicts():
    old = [synthetic_row(cell_id=f"x{n}", experiment="sweep_n", n_inner=n) for n in (2, 4, 8)]
    assert {c.verdict for c in claims_by_seed(old)[0]} == {"n/a"}


def test_leaderboard_says_when_there_is_nothing_to_rank(tmp_path):
    text = write_leaderboard([_row("a", {"mse": [1.0, 2.0]})], tmp_path / "lb.md").read_text()
    assert "nothing to rank" in text


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("3,1,1-2") == [3, 1, 2]
    for bad in ("", "a", "4-1", "-1"):
        with pytest.raises(SystemExit):
            parse_seeds(bad)


def _store(tmp_path, rows):
    store = ResultStore(tmp_path / "rows.jsonl")
    for r in rows:
        store.append(r)
    return store.path


def test_report_seeds_and_strict(tmp_path, capsys):
    ns = [2, 4, 8, 16, 32, 64]
    good = _curve_rows("sweep_n", "n_inner", ns, [0.1 * n**-1.5 for n in ns], seed=0)
    bad = [
        dataclasses.replace(r, seed=1, cell_id=r.cell_id + "s1")
        for r in _curve_rows("sweep_n", "n_inner", ns, [0.1 * n**-0.3 for n in ns])
    ]
    path = _store(tmp_path, good + bad)
    assert main(["report", "--store", str(path), "--seeds", "0"]) == 0
    assert main(["report", "--store", str(path), "--seeds", "0-1"]) == 0
    out = capsys.readouterr().out
    assert "| compositional_bias_vs_n | **PASS**" in out and "**FAIL**" in out
    table = (tmp_path / "seed_table.md").read_text()
    assert "seed 0" in table and "seed 1" in table and "exponent" in table
    assert main(["report", "--store", str(path), "--seeds", "0-1", "--strict"]) == 1
    assert main(["report", "--store", str(path), "--seeds", "0", "--strict"]) == 0
    with pytest.raises(SystemExit, match="no rows of seed"):
        main(["report", "--store", str(path), "--seeds", "7"])
    by_seed = claims_by_seed(good + bad)
    assert set(by_seed) == {0, 1} and "| claim | seed 0 | seed 1 |" in seed_table(by_seed)


def test_bench_seeds_runs_every_seed_into_one_store(tmp_path, capsys):
    store = tmp_path / "rows.jsonl"
    args = [
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
        "--estimators",
        "pg",
        "--no-progress",
        "--store",
        str(store),
    ]
    assert main([*args, "--seeds", "0-1"]) == 0
    rows = ResultStore(store).load(warn=False).rows.values()
    assert {r.seed for r in rows} == {0, 1} and len(rows) == 2 * 5
    assert (tmp_path / "seed_table.md").exists()
    with pytest.raises(SystemExit, match="either --seed or --seeds"):
        main([*args, "--seeds", "0-1", "--seed", "3"])


def test_cell_budget_fields_round_trip():
    config = TabularBenchConfig(
        **SMALL,
        experiments=("sweep_n",),
        sweep_n=(4,),
        sweep_n_estimators=("pg",),
        budget_scales=(("sweep_n", 2.0, 1.5),),
    )
    (cell,) = make_cells(config)
    assert (cell.tasks, cell.repeats) == (6, 9)
    row = run_cell(config, cell)
    assert row.metrics.num_tasks == 6 and row.metrics.repeats == 9
    from metagrad.app.suites import get_suite

    rebuilt_config, rebuilt = get_suite("tabular").rebuild(row)
    assert rebuilt == cell and rebuilt_config == config
    assert isinstance(rebuilt, Cell)


def test_student_t_intervals_of_the_one_statistics_module_agree():
    """Per-component intervals at a family-wise level (Bonferroni) and a mean over seeds with NaN
    runs left out are the same Student-t intervals as :func:`mean_interval`'s."""
    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, low, high, _ = t_intervals(x, alpha=0.05)
    for j in range(3):
        ref = mean_interval(x[:, j].numpy(), confidence=1 - 0.05 / 3)
        assert float(mean[j]) == pytest.approx(ref.estimate, rel=1e-12)
        assert float(low[j]) == pytest.approx(ref.low, rel=1e-10)
        assert float(high[j]) == pytest.approx(ref.high, rel=1e-10)
    m, half, n = mean_t_half_width([1.0, 2.0, math.nan, 4.0])
    ref = mean_interval(np.array([1.0, 2.0, 4.0]))
    assert n == 3 and m == pytest.approx(ref.estimate) and half == pytest.approx(ref.high - ref.estimate)
