"""check_unbiased / assert_unbiased: power at the default budget, false alarms, the report, plug-ins,
and the study command (metagrad.testing.power)."""

from __future__ import annotations

import math

import pytest
import torch

from metagrad import estimators as E
from metagrad.testing import assert_unbiased, check_unbiased
from metagrad.testing.power import (
    NullCase,
    NullRow,
    PowerRow,
    criteria,
    dice_copy,
    main,
    null_cases,
    pooled_false_alarms,
    power_study,
    scaled,
)

# ---- the acceptance criteria of the check's default ---------------------------------------------


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_times_1_05_raises_by_default(order, seed):
    with pytest.raises(AssertionError, match="looks biased"):
        assert_unbiased(scaled("dice", 1.05), order, seed=seed)


@pytest.mark.parametrize("order", [1, 2])
def test_dice_passes_on_at_least_5_of_6_seeds(order):
    reports = [check_unbiased("dice", order, seed=seed) for seed in range(6)]
    assert sum(r.passed for r in reports) >= 5, [r.summary() for r in reports]


# ---- what the report states ----------------------------------------------------------------------


def test_report_has_a_verdict_a_p_value_and_a_detectable_bias():
    passed = check_unbiased("dice_baseline", 2, num_groups=2000)
    failed = check_unbiased("pg", 2, num_groups=2000)
    for report, verdict in ((passed, True), (failed, False)):
        assert report.passed is verdict and report.unbiased is verdict
        assert (report.p_value > report.alpha) is verdict
        assert (report.max_abs_z <= report.threshold) is verdict
        assert report.summary().startswith("PASS" if verdict else "FAIL")
        assert "relative bias" in report.summary() and "95% power" in report.summary()
        assert 0 < report.min_detectable_bias <= report.min_detectable_bias_direct < math.inf
    assert not passed.matches_references  # its second-order noise is not the references'


def test_the_stated_detectable_bias_is_detected():
    """A bias twice the run's stated minimum detectable bias is detected (direct test alone, and
    the paired test on an estimator the references do not explain)."""
    for order, paired, name in ((1, False, "dice"), (2, True, "dice_baseline")):
        clean = check_unbiased(name, order, paired=paired, num_groups=2000)
        assert clean.passed, clean.summary()
        eps = 2 * clean.min_detectable_bias
        biased = check_unbiased(scaled(name, 1 + eps), order, paired=paired, num_groups=2000)
        assert not biased.passed, (eps, biased.summary())


def test_paired_test_removes_the_shared_noise():
    direct = check_unbiased(scaled("dice", 1.05), 2, paired=False, num_groups=2000)
    paired = check_unbiased(scaled("dice", 1.05), 2, num_groups=2000)
    assert direct.references == () and direct.paired_z is None
    assert paired.references[0] == "stepwise_is" and paired.matches_references
    assert paired.min_detectable_bias < 1e-3 * direct.min_detectable_bias
    # the direct statistics are the same in both (same episodes)
    assert torch.equal(direct.z, paired.z)


def test_an_exact_plug_in_copy_of_dice_passes():
    assert check_unbiased(dice_copy, 2, num_groups=2000).passed


# ---- plug-ins: a registered name, its facts, or a function --------------------------------------


def test_name_info_and_function_give_the_same_report():
    by_name = check_unbiased("lvc", 1, num_groups=1000)
    by_info = check_unbiased(E.get_estimator("lvc"), 1, num_groups=1000)
    by_fn = check_unbiased(E.lvc, 1, num_groups=1000)
    assert by_name.name == by_info.name == by_fn.name == "lvc"
    assert torch.equal(by_name.z, by_info.z) and torch.equal(by_name.z, by_fn.z)


def test_a_registered_plug_in_is_checked_by_name():
    E.register_estimator("my_biased_dice", scaled("dice", 1.05), reference="test", unbiased_orders=0)
    try:
        report = check_unbiased("my_biased_dice", 1)
        assert report.name == "my_biased_dice" and not report.passed
    finally:
        E.ESTIMATORS.unregister("my_biased_dice")


def test_an_unregistered_function_is_named_by_its_name():
    assert check_unbiased(dice_copy, 1, num_groups=1000).name == "dice_copy"


def test_bad_input_raises_before_any_work():
    with pytest.raises(ValueError, match="no_such_estimator"):
        check_unbiased("no_such_estimator")
    with pytest.raises(ValueError, match="order"):
        check_unbiased("dice", 3)
    with pytest.raises(ValueError, match="power"):
        check_unbiased("dice", power=1.0)
    with pytest.raises(ValueError, match="num_groups"):
        check_unbiased("dice", num_groups=2)

    def per_step(log_probs, rewards, discounts, **kwargs):
        return log_probs * rewards

    with pytest.raises(ValueError, match="per_step: expected a per-episode surrogate"):
        check_unbiased(per_step, num_groups=8, episodes_per_group=2)


def test_off_policy_references_stay_unbiased():
    """The references weight by importance ratios: the paired test keeps its level off-policy."""
    mu = torch.zeros(4, 3, dtype=torch.float64)
    report = check_unbiased("doubly_robust", 2, behaviour_logits=mu, num_groups=2000)
    assert report.passed, report.summary()
    assert not check_unbiased("dice", 1, behaviour_logits=mu, num_groups=2000).passed


# ---- the study command -----------------------------------------------------------------------------


def test_null_cases_follow_the_registry():
    cases = {(c.label, c.order) for c in null_cases()}
    assert ("dice", 2) in cases and ("pg", 1) in cases and ("dice_copy (plug-in)", 2) in cases
    assert ("pg", 2) not in cases and ("lvc", 2) not in cases and ("taylor1", 2) not in cases
    assert ("taylor2", 2) in cases and ("doubly_robust (off-policy)", 2) in cases


def test_power_study_counts_detections():
    (row,) = power_study(["dice"], [0.05], [1], [0], direct=False)
    assert (row.detected, row.runs, row.paired) == (1, 1, True)


def test_criteria_judge_the_rows():
    def power(detected: int, order: int) -> PowerRow:
        return PowerRow("dice", 0.05, order, True, detected, 40, 0.01, (1.0,))

    assert [held for _, held in criteria([power(38, 1), power(37, 2)], [])] == [True, False]
    null = [NullRow(NullCase("x", "dice", 1), tuple([0.5] * 87 + [0.03] * 13), (0.1,) * 100, (1.0,) * 100)]
    (a05, k, m, tail), *_ = pooled_false_alarms(null)
    assert (a05, k, m) == (0.05, 13, 100) and tail < 0.01
    assert [held for _, held in criteria([], null)] == [None, None, False, True, True]


def test_study_command_prints_its_tables(capsys):
    code = main(
        ["--bases", "dice", "--orders", "1", "--epsilons", "0.05", "--power-seeds", "1", "--null-seeds", "0"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "## Power" in out and "## Time of one call" in out and "MET: power: dice x 1.05" in out


@pytest.mark.slow
def test_power_study_meets_its_criteria_on_unseen_seeds(capsys):
    code = main(["--first-seed", "1000", "--power-seeds", "20", "--null-seeds", "10", "--no-direct"])
    assert code == 0, capsys.readouterr().out
