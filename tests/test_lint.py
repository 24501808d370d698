"""lint_surrogate: the built-ins are clean; each bug class a structural check targets is flagged."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metagrad import estimators as E
from metagrad.estimators import advantages, cumulative_discounts, magic_box, stop_gradient
from metagrad.testing import Finding, lint_surrogate
from metagrad.testing.lint import FORWARD_VALUES

BUILT_INS = sorted(FORWARD_VALUES)


def _checks(findings: list[Finding]) -> set[str]:
    return {f.check for f in findings}


@pytest.mark.parametrize("name", BUILT_INS)
def test_every_built_in_estimator_is_clean(name):
    assert lint_surrogate(name) == []
    assert lint_surrogate(E.get_estimator(name).fn) == []  # the function finds its registry facts


def test_built_in_table_names_registered_estimators_only():
    assert set(FORWARD_VALUES) <= set(E.ESTIMATORS)


def test_vtrace_with_other_bars_and_loaded_dice_with_lambda_are_clean():
    assert lint_surrogate("vtrace", rho_bar=2.0, c_bar=2.0) == []
    # lambda < 1 is biased at order >= 2 but keeps cross-time terms: structurally clean
    assert lint_surrogate("loaded_dice", lambda_=0.5) == []


def test_a_plug_in_copy_is_clean_with_its_claims_stated():
    def my_dice(log_probs, rewards, discounts, **kwargs):
        return E.dice(log_probs, rewards, discounts, **kwargs)

    assert lint_surrogate(my_dice, claims_orders="all", value="return") == []


# ---- a magic box detached inside ------------------------------------------------------------------


def _dice_with_box(box):
    def surrogate(log_probs, rewards, discounts, **kwargs):
        weights = cumulative_discounts(discounts)
        return (weights * box(log_probs) * rewards).sum(0)

    return surrogate


def test_a_magic_box_over_detached_log_probs_is_flagged():
    detached = _dice_with_box(lambda lp: magic_box(torch.cumsum(lp.detach(), 0)))
    findings = lint_surrogate(detached, claims_orders="all", value="return")
    assert "order 1" in _checks(findings), findings
    # also with no claims stated: a surrogate without a gradient is never right
    assert "order 1" in _checks(lint_surrogate(detached))


def test_a_magic_box_detached_after_the_first_derivative_is_flagged_at_order_2():
    # exp(x - stop(x)) replaced by 1 + x - stop(x): same value and gradient, no second derivative
    linear = _dice_with_box(lambda lp: 1 + torch.cumsum(lp, 0) - stop_gradient(torch.cumsum(lp, 0)))
    findings = lint_surrogate(linear, claims_orders="all", value="return")
    assert _checks(findings) == {"order 2"}, findings
    assert lint_surrogate(linear, claims_orders=1, value="return") == []  # claimed first order only


def test_a_per_step_magic_box_is_flagged_where_second_order_is_claimed():
    per_step = _dice_with_box(magic_box)  # box(log pi_t) instead of box(sum_{k<=t} log pi_k)
    assert _checks(lint_surrogate(per_step, claims_orders=2, value="return")) == {"order 2"}


def test_a_second_order_expansion_claiming_third_order_is_flagged():
    assert _checks(lint_surrogate("taylor2", claims_orders=3)) == {"order 3"}


def test_a_magic_box_whose_value_is_not_one_is_flagged():
    no_stop = _dice_with_box(lambda lp: torch.exp(torch.cumsum(lp, 0)))
    assert "value" in _checks(lint_surrogate(no_stop, claims_orders="all", value="return"))


# ---- leaks into the critic and the behaviour log-probs --------------------------------------------


def test_a_critic_leak_is_flagged():
    def leaky_pg(log_probs, rewards, discounts, *, values=None, bootstrap_value=None, **kwargs):
        weights = cumulative_discounts(discounts)
        returns = advantages(rewards, discounts, None, stop_gradient(bootstrap_value))
        return (weights * (returns - values) * log_probs).sum(0)  # values not cut

    findings = lint_surrogate(leaky_pg, claims_orders=1)
    assert _checks(findings) == {"critic"}, findings
    assert "values" in findings[0].message


def test_a_critic_leak_that_only_the_gradient_carries_is_flagged():
    def leaky_loaded_dice(log_probs, rewards, discounts, *, values=None, bootstrap_value=None, **kw):
        weights = cumulative_discounts(discounts)
        deps = torch.cumsum(log_probs, 0)
        adv = advantages(rewards, discounts) - values  # value 0 times a leak: only derivatives see it
        return (weights * (magic_box(deps) - magic_box(deps - log_probs)) * adv).sum(0)

    findings = lint_surrogate(leaky_loaded_dice, claims_orders="all", value="zero")
    assert _checks(findings) == {"critic"}, findings
    assert "its gradient" in findings[0].message


def test_a_behaviour_leak_is_flagged():
    def leaky_ratio(log_probs, rewards, discounts, *, behaviour_log_probs=None, **kwargs):
        weights = cumulative_discounts(discounts)
        rho = torch.exp(torch.cumsum(log_probs - behaviour_log_probs, 0))  # denominator not cut
        return (weights * rho * rewards).sum(0)

    findings = lint_surrogate(leaky_ratio, claims_orders="all", value="return")
    assert _checks(findings) == {"behaviour"}, findings


# ---- dtype, precision, shape, episodes, call ------------------------------------------------------


def test_a_float32_downcast_is_flagged():
    def float32_dice(log_probs, rewards, discounts, **kwargs):
        return E.dice(log_probs.float(), rewards.float(), discounts.float())

    assert "dtype" in _checks(lint_surrogate(float32_dice, claims_orders="all", value="return"))


def test_a_float32_round_trip_is_flagged():
    def round_trip(log_probs, rewards, discounts, **kwargs):
        return E.dice(log_probs.float(), rewards.float(), discounts.float()).double()

    checks = _checks(lint_surrogate(round_trip, claims_orders="all", value="return"))
    assert {"precision", "value"} <= checks, checks

    # a zero-valued surrogate shows it in its gradient
    def round_trip_lvc(log_probs, rewards, discounts, **kwargs):
        return E.lvc(log_probs.float(), rewards.float(), discounts.float()).double()

    assert "precision" in _checks(lint_surrogate(round_trip_lvc, claims_orders=1, value="zero"))


@pytest.mark.parametrize(
    ("reduce", "hint"),
    [(lambda x: x, "per step"), (lambda x: x.sum(0).mean(), "batch mean"), (lambda x: x.sum(0)[:2], "")],
)
def test_a_wrong_output_shape_is_flagged(reduce, hint):
    def wrong(log_probs, rewards, discounts, **kwargs):
        return reduce(cumulative_discounts(discounts) * magic_box(torch.cumsum(log_probs, 0)) * rewards)

    findings = [f for f in lint_surrogate(wrong) if f.check == "shape"]
    assert findings and hint in findings[0].message


def test_a_surrogate_that_flattens_the_batch_axes_is_flagged():
    def flat(log_probs, rewards, discounts, **kwargs):
        out = E.dice(
            log_probs.reshape(log_probs.shape[0], -1),
            rewards.reshape(rewards.shape[0], -1),
            discounts.reshape(discounts.shape[0], -1),
        )
        return out.reshape(-1)[: log_probs.shape[1]]

    assert _checks(lint_surrogate(flat, claims_orders="all", value="return")) == {"shape"}


def test_batch_normalised_advantages_are_flagged():
    def normalised_pg(log_probs, rewards, discounts, **kwargs):
        adv = advantages(rewards, discounts)
        adv = (adv - adv.mean(1, keepdim=True)) / adv.std(1, keepdim=True)
        return (cumulative_discounts(discounts) * adv.detach() * log_probs).sum(0)

    assert _checks(lint_surrogate(normalised_pg, claims_orders=1)) == {"episodes"}


def test_a_raising_surrogate_is_flagged_not_raised():
    def broken(log_probs, rewards, discounts, **kwargs):
        raise RuntimeError("boom")

    (finding,) = lint_surrogate(broken)
    assert finding.check == "call" and "boom" in finding.message


def test_finding_is_a_frozen_one_line_record():
    finding = Finding("order 2", "message")
    assert str(finding) == "order 2: message"
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.check = "x"  # type: ignore[misc]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="value"):
        lint_surrogate("dice", value="returns")
    with pytest.raises(ValueError, match="estimator"):
        lint_surrogate("no_such_estimator")
    with pytest.raises(ValueError, match="estimator"):
        lint_surrogate(3)
