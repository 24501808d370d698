"""The off-policy-evaluation family (Tang et al., NeurIPS 2021): reductions to the existing
estimators on identical samples, unbiasedness at the claimed orders on- and off-policy, and the
biases theory predicts."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from metagrad import estimators as E
from metagrad.derivatives import DerivativeSpec, exact_derivatives, mixture_logits, sample_derivatives
from metagrad.envs import policy_log_probs, rollout
from metagrad.exact import tabular_return, tabular_values
from metagrad.testing import assert_unbiased, central_difference, check_unbiased

OPE = ("stepwise_is", "doubly_robust", "vtrace", "taylor1", "taylor2")
NO_TRUNCATION = dict(rho_bar=math.inf, c_bar=math.inf)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-10) -> bool:
    return float((a - b).abs().max()) <= tol * (1.0 + float(b.abs().max()))


@pytest.fixture
def target(small_task):
    """Tang et al.'s target: 0.8 * a deterministic policy + 0.2 * uniform."""
    return mixture_logits(
        small_task.num_states, small_task.num_actions, 0.8, actions=torch.tensor([0, 2, 1, 0])
    )


def _data(task, logits, behaviour, n=64, seed=0):
    """Episodes of ``behaviour`` (None: the target itself), log-probs of the target with a graph,
    a random critic and bootstrap values."""
    theta = logits.clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    traj = rollout(task, logits if behaviour is None else behaviour, n, generator=gen)
    lp = policy_log_probs(theta, traj.states, traj.actions)
    behaviour_lp = None if behaviour is None else traj.behaviour_log_probs
    values = torch.rand(traj.rewards.shape, generator=gen, dtype=torch.float64)
    boot = torch.rand(traj.final_states.shape, generator=gen, dtype=torch.float64)
    return theta, lp, behaviour_lp, traj, values, boot


def _derivatives(fn, theta, lp, behaviour_lp, traj, **kw):
    """Gradient, two Hessian-vector products and a third-order directional derivative."""
    obj = fn(lp, traj.rewards, traj.discounts, behaviour_log_probs=behaviour_lp, **kw).mean()
    (g,) = torch.autograd.grad(obj, theta, create_graph=True)
    gen = torch.Generator().manual_seed(7)
    v, w = torch.randn(2, *theta.shape, generator=gen, dtype=theta.dtype)
    (hv,) = torch.autograd.grad((g * v).sum(), theta, create_graph=True)
    (hw,) = torch.autograd.grad((g * w).sum(), theta, create_graph=True)
    (third,) = torch.autograd.grad((hv * w).sum(), theta, retain_graph=True)
    return g.detach(), hv.detach(), hw.detach(), third.detach()


def _same(a, b, orders):
    """The first ``orders`` of (gradient, HVPs, third order) agree to 1e-10."""
    parts = [(0,), (1, 2), (3,)][:orders]
    return all(_close(a[i], b[i]) for group in parts for i in group)


# ---- reductions (same samples, gradient and Hessian-vector products to 1e-10) ------------------


def test_stepwise_is_on_policy_is_dice_at_every_order(small_task, small_logits):
    theta, lp, _, traj, values, boot = _data(small_task, small_logits, None)
    ope = _derivatives(E.stepwise_is, theta, lp, None, traj, values=values, bootstrap_value=boot)
    assert _same(ope, _derivatives(E.dice, theta, lp, None, traj), 3)


def test_stepwise_is_off_policy_is_off_policy_dice_without_critic(small_task, target):
    mu = torch.zeros_like(target)
    theta, lp, blp, traj, values, boot = _data(small_task, target, mu)
    ope = _derivatives(E.stepwise_is, theta, lp, blp, traj, values=values, bootstrap_value=boot)
    assert _same(ope, _derivatives(E.off_policy_dice, theta, lp, blp, traj), 3)


def test_doubly_robust_on_policy_is_loaded_dice_at_every_order(small_task, small_logits):
    theta, lp, _, traj, values, boot = _data(small_task, small_logits, None)
    kw = dict(values=values, bootstrap_value=boot)
    dr = _derivatives(E.doubly_robust, theta, lp, None, traj, **kw)
    assert _same(dr, _derivatives(E.loaded_dice, theta, lp, None, traj, lambda_=1.0, **kw), 3)
    # no critic: step-wise IS, i.e. DiCE
    assert _same(
        _derivatives(E.doubly_robust, theta, lp, None, traj), _derivatives(E.dice, theta, lp, None, traj), 3
    )


def test_doubly_robust_matches_dice_baseline_only_at_first_order(small_task, small_logits):
    """With a zero bootstrap DR and DiCE-with-baseline share the gradient; their baselines
    differ in the cross-time terms, so the Hessians differ."""
    theta, lp, _, traj, values, _ = _data(small_task, small_logits, None)
    dr = _derivatives(E.doubly_robust, theta, lp, None, traj, values=values)
    db = _derivatives(E.dice_baseline, theta, lp, None, traj, values=values)
    assert _same(dr, db, 1)
    assert not _close(dr[1], db[1], 1e-6)


def test_doubly_robust_off_policy_adds_the_bootstrap_to_off_policy_dice(small_task, target):
    mu = torch.zeros_like(target)
    theta, lp, blp, traj, values, boot = _data(small_task, target, mu)
    dr = _derivatives(E.doubly_robust, theta, lp, blp, traj, values=values)
    assert _same(dr, _derivatives(E.off_policy_dice, theta, lp, blp, traj, values=values), 3)
    value = E.doubly_robust(
        lp, traj.rewards, traj.discounts, behaviour_log_probs=blp, values=values, bootstrap_value=boot
    )
    # the recursion v_t = V_t + rho_t (r_t + gamma v_{t+1} - V_t), v_T = V_T, written out
    rho = torch.exp(lp - blp).detach()
    v = boot
    for t in range(traj.horizon - 1, -1, -1):
        v = values[t] + rho[t] * (traj.rewards[t] + traj.discounts[t] * v - values[t])
    assert _close(value.detach(), v)


@pytest.mark.parametrize("on_policy", [True, False])
def test_vtrace_without_truncation_is_doubly_robust(small_task, target, on_policy):
    mu = None if on_policy else torch.zeros_like(target)
    theta, lp, blp, traj, values, boot = _data(small_task, target, mu)
    kw = dict(values=values, bootstrap_value=boot)
    vt = _derivatives(E.vtrace, theta, lp, blp, traj, **NO_TRUNCATION, **kw)
    assert _same(vt, _derivatives(E.doubly_robust, theta, lp, blp, traj, **kw), 3)
    v1 = E.vtrace(lp, traj.rewards, traj.discounts, behaviour_log_probs=blp, **NO_TRUNCATION, **kw)
    v2 = E.doubly_robust(lp, traj.rewards, traj.discounts, behaviour_log_probs=blp, **kw)
    assert _close(v1.detach(), v2.detach())


def test_vtrace_on_policy_ties_take_the_untruncated_derivative(small_task, small_logits):
    """On-policy every ratio is 1 = rho_bar: the untruncated branch, so doubly robust again."""
    theta, lp, _, traj, values, boot = _data(small_task, small_logits, None)
    kw = dict(values=values, bootstrap_value=boot)
    vt = _derivatives(E.vtrace, theta, lp, None, traj, rho_bar=1.0, c_bar=1.0, **kw)
    assert _same(vt, _derivatives(E.doubly_robust, theta, lp, None, traj, **kw), 3)


def test_vtrace_truncation_cuts_the_derivative_of_large_ratios(small_task, target):
    """With rho_bar = c_bar below every ratio, every ratio is a constant: no derivative at all."""
    mu = torch.zeros_like(target)
    theta, lp, blp, traj, values, _ = _data(small_task, target, mu)
    g = _derivatives(E.vtrace, theta, lp, blp, traj, rho_bar=1e-3, c_bar=1e-3, values=values)[0]
    assert float(g.abs().max()) == 0.0


def test_taylor1_on_policy_is_lvc_at_every_order(small_task, small_logits):
    theta, lp, _, traj, values, boot = _data(small_task, small_logits, None)
    kw = dict(values=values, bootstrap_value=boot)
    assert _same(
        _derivatives(E.taylor1, theta, lp, None, traj, **kw),
        _derivatives(E.lvc, theta, lp, None, traj, **kw),
        3,
    )


def test_taylor2_on_policy_is_loaded_dice_to_second_order_only(small_task, small_logits):
    theta, lp, _, traj, values, boot = _data(small_task, small_logits, None)
    kw = dict(values=values, bootstrap_value=boot)
    t2 = _derivatives(E.taylor2, theta, lp, None, traj, **kw)
    ld = _derivatives(E.loaded_dice, theta, lp, None, traj, lambda_=1.0, **kw)
    assert _same(t2, ld, 2)
    assert not _close(t2[3], ld[3], 1e-6)  # third-order terms of the expansion are missing


def test_ope_estimators_agree_on_policy_at_first_order(small_task, small_logits):
    theta, lp, _, traj, values, boot = _data(small_task, small_logits, None)
    kw = dict(values=values, bootstrap_value=boot)
    grads = [_derivatives(E.get_estimator(n).fn, theta, lp, None, traj, **kw)[0] for n in OPE[1:]]
    assert all(_close(g, grads[0]) for g in grads[1:])


# ---- unbiasedness at the claimed orders, and the biases theory predicts ------------------------


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("name", ["stepwise_is", "doubly_robust", "vtrace"])
def test_importance_sampling_estimators_unbiased_on_and_off_policy(small_task, target, name, order):
    kw = NO_TRUNCATION if name == "vtrace" else {}
    assert_unbiased(E.get_estimator(name).fn, order, task=small_task, logits=target, estimator_kwargs=kw)
    assert_unbiased(
        E.get_estimator(name).fn,
        order,
        task=small_task,
        logits=target,
        behaviour_logits=torch.zeros_like(target),
        estimator_kwargs=kw,
    )


@pytest.mark.parametrize(("name", "orders"), [("taylor1", (1,)), ("taylor2", (1, 2))])
def test_taylor_expansions_unbiased_on_policy_at_their_orders(small_task, target, name, orders):
    for order in orders:
        assert_unbiased(E.get_estimator(name).fn, order, task=small_task, logits=target)


def test_vtrace_on_policy_unbiased_with_default_bars(small_task, target):
    for order in (1, 2):
        assert_unbiased(E.vtrace, order, task=small_task, logits=target)


@pytest.mark.parametrize(
    ("name", "order", "on_policy"),
    [
        ("taylor1", 2, True),  # the LVC Hessian
        ("taylor1", 1, False),  # off-policy the first-order expansion misses the state shift
        ("taylor1", 2, False),
        ("taylor2", 1, False),  # off-policy: the terms of order >= 3 are missing
        ("taylor2", 2, False),
        ("vtrace", 1, False),  # rho_bar = c_bar = 1 bind where pi / mu > 1
        ("vtrace", 2, False),
    ],
)
def test_predicted_biases_are_detected(small_task, target, name, order, on_policy):
    behaviour = None if on_policy else torch.zeros_like(target)
    report = check_unbiased(
        E.get_estimator(name).fn, order, task=small_task, logits=target, behaviour_logits=behaviour
    )
    assert not report.unbiased, report.summary()


def test_taylor2_less_biased_than_taylor1_off_policy(small_task, target):
    mu = torch.zeros_like(target)
    for order in (1, 2):
        r1 = check_unbiased(E.taylor1, order, task=small_task, logits=target, behaviour_logits=mu)
        r2 = check_unbiased(E.taylor2, order, task=small_task, logits=target, behaviour_logits=mu)
        gap1, gap2 = (r1.estimate - r1.exact).norm(), (r2.estimate - r2.exact).norm()
        # the margin: gap1 - gap2 against the noise of both norms (at most the stderr norms)
        assert gap1 - gap2 > 3 * (r1.stderr.norm() + r2.stderr.norm()), (float(gap1), float(gap2))


# ---- validation and the registry -----------------------------------------------------------------


@pytest.mark.parametrize("name", OPE)
def test_ope_estimators_reject_bad_input(name):
    fn = E.get_estimator(name).fn
    with pytest.raises(ValueError, match="behaviour_log_probs: shape"):
        fn(torch.zeros(6, 3), torch.zeros(6, 3), torch.ones(6, 3), behaviour_log_probs=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="rewards: contains NaN"):
        fn(torch.zeros(6, 3), torch.full((6, 3), float("nan")), torch.ones(6, 3))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "1"])
def test_vtrace_rejects_bad_bars(bad):
    args = (torch.zeros(2, 1), torch.zeros(2, 1), torch.ones(2, 1))
    with pytest.raises(ValueError, match="rho_bar"):
        E.vtrace(*args, rho_bar=bad)
    with pytest.raises(ValueError, match="c_bar"):
        E.vtrace(*args, c_bar=bad)


def test_ope_family_is_registered_with_orders_and_references():
    for name in OPE:
        info = E.get_estimator(name)
        assert info.off_policy and info.reference and info.unbiased_orders is not None
    assert E.get_estimator("vtrace").params == ("rho_bar", "c_bar")
    assert not E.get_estimator("stepwise_is").uses_critic


# ---- the library module: gradient and Hessian of J on- and off-policy -----------------------------


def test_exact_derivatives_match_finite_differences(small_task, target):
    grad = exact_derivatives(small_task, target, "gradient")
    hess = exact_derivatives(small_task, target, "hessian")
    fd_grad = central_difference(lambda x: tabular_return(small_task, x), target).reshape(-1)
    fd_hess = central_difference(
        lambda x: exact_derivatives(small_task, x, "gradient"), target, eps=1e-4
    ).reshape(12, 12)
    assert _close(grad, fd_grad, 1e-8)
    assert _close(hess, fd_hess, 1e-6)
    assert torch.allclose(hess, hess.T, atol=1e-12)


@pytest.mark.parametrize("behaviour", ["target", "uniform"])
def test_sampled_hessians_unbiased_for_doubly_robust(small_task, target, behaviour):
    """The batched Hessian path: DR's mean Hessian matches the exact one (z-test per entry)."""
    spec = DerivativeSpec("doubly_robust", 50, "hessian", behaviour)
    x = sample_derivatives(small_task, target, spec, 400, generator=torch.Generator().manual_seed(0))
    exact = exact_derivatives(small_task, target, "hessian")
    se = x.std(0) / 400**0.5
    z = (x.mean(0) - exact) / se.clamp_min(1e-12)
    threshold = float(torch.special.ndtri(torch.tensor(1 - 1e-3 / (2 * exact.numel()), dtype=torch.float64)))
    assert float(z.abs().max()) < threshold


def test_sampled_hessians_match_a_per_repeat_autograd_hessian(small_task, target):
    """The vectorised Hessian rows equal torch.autograd.functional.hessian of each repeat's
    surrogate on the same episodes (critic noise is drawn first, then the episodes)."""
    spec = DerivativeSpec("stepwise_is", 8, "hessian", "uniform")
    h = sample_derivatives(small_task, target, spec, 2, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    mu = torch.zeros(2, 4, 3, dtype=torch.float64)
    torch.randn(tabular_values(small_task, mu).shape, generator=gen, dtype=torch.float64)
    traj = rollout(small_task, mu, 8, generator=gen)
    for r in range(2):

        def surrogate(x, r=r):
            lp = policy_log_probs(x, traj.states[:, :, r], traj.actions[:, :, r])
            return E.stepwise_is(
                lp,
                traj.rewards[:, :, r],
                traj.discounts[:, :, r],
                behaviour_log_probs=traj.behaviour_log_probs[:, :, r],
            ).mean()

        ref = torch.autograd.functional.hessian(surrogate, target).reshape(12, 12)
        assert _close(h[r], ref)
    g = sample_derivatives(
        small_task,
        target,
        dataclasses.replace(spec, derivative="gradient"),
        2,
        generator=torch.Generator().manual_seed(3),
    )
    assert g.shape == (2, 12) and h.shape == (2, 12, 12)


def test_derivative_spec_validation():
    with pytest.raises(ValueError, match="unknown name"):
        DerivativeSpec("nope", 4)
    with pytest.raises(ValueError, match="derivative"):
        DerivativeSpec("dice", 4, "third")
    with pytest.raises(ValueError, match="behaviour"):
        DerivativeSpec("dice", 4, "gradient", "replay")
    with pytest.raises(ValueError, match="params"):
        DerivativeSpec("dice", 4, params=(("rho_bar", 1.0),))
    with pytest.raises(ValueError, match="eps"):
        mixture_logits(3, 2, 1.0)
    assert DerivativeSpec("vtrace", 4, params=(("c_bar", 2.0), ("rho_bar", 1.0))).params == (
        ("c_bar", 2.0),
        ("rho_bar", 1.0),
    )
