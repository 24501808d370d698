"""The staged MAML sampler on LQR tasks, judged against the exact meta-gradient.

What the theory says each stage combination estimates (fixed before these tests were run):

* every stage exact (``eee``) reproduces :func:`lqr_maml_meta_gradient` to rounding;
* ``eel`` and ``ele`` are unbiased with an estimator unbiased at the orders they use (DiCE,
  Loaded DiCE, pathwise): the outer gradient, resp. each Jacobian ``I + alpha H_hat``, is
  estimated from fresh samples at the exact iterates, independent across steps;
* an estimated inner stage (``lee``, ``lll``, ...) carries compositional bias (Liu et al. 2022):
  the outer gradient is nonlinear in the sampled iterates. So ``lll`` is *not* unbiased for the
  oracle; what holds is that, given the inner samples, the estimated Jacobian and outer stages
  are unbiased: ``E[lll - lee] = 0`` when both see the same inner episodes (common random
  numbers, which the per-role random streams provide);
* pg's Hessian is biased, so ``ele`` with pg is biased.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from lqr_checks import assert_biased, assert_unbiased, random_policy

from metagrad.critics import CriticSpec
from metagrad.envs.lqr import LinearGaussian, PointMassNavigation
from metagrad.exact import lqr_maml_meta_gradient, lqr_return
from metagrad.lqr import (
    LQRMetaGradientSpec,
    exact_lqr_meta_gradient,
    lqr_episodes_per_estimate,
    sample_lqr_meta_gradients,
)
from metagrad.mlmc import MLMC
from metagrad.staged import StageSpec

ALPHA_INNER = 0.05
REPEATS = 1000


def _setting():
    dist = PointMassNavigation(horizon=8, noise_std=0.1, init_std=0.1)
    tasks = dist.sample(2, dist.train_rng(0))
    return tasks, random_policy(1, 2, 2, scale=0.3)


def _flat(grads: LinearGaussian) -> torch.Tensor:
    return grads.flatten()


def _sample(
    combination: str,
    estimator: str,
    steps: int,
    *,
    n: int = 20,
    seed: int = 0,
    repeats: int = REPEATS,
    **kwargs,
) -> torch.Tensor:
    tasks, policy = _setting()
    spec = LQRMetaGradientSpec.from_combination(
        combination, estimator, n, inner_steps=steps, inner_lr=ALPHA_INNER, **kwargs
    )
    gen = torch.Generator().manual_seed(seed)
    return _flat(sample_lqr_meta_gradients(tasks, *policy, spec, repeats, generator=gen))  # [R, N, D]


def _exact(steps: int) -> torch.Tensor:
    tasks, policy = _setting()
    return _flat(lqr_maml_meta_gradient(tasks, *policy, inner_lr=ALPHA_INNER, inner_steps=steps))  # [N, D]


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
def test_exact_stages_reproduce_the_oracle(steps):
    tasks, (K, k, log_std) = _setting()
    spec = LQRMetaGradientSpec(inner_steps=steps, inner_lr=ALPHA_INNER)
    estimates = sample_lqr_meta_gradients(tasks, K, k, log_std, spec, 3)
    assert (
        estimates.K.shape == (3, 2, 2, 2)
        and estimates.k.shape == (3, 2, 2)
        and estimates.log_std.shape == (3, 2, 2)
    )
    exact = _flat(exact_lqr_meta_gradient(tasks, K, k, log_std, spec))
    assert torch.allclose(_flat(estimates), exact.expand(3, -1, -1), rtol=1e-12, atol=1e-12)
    # one start per task works the same way
    per_task = tuple(x.expand(2, *x.shape) for x in (K, k, log_std))
    assert torch.allclose(
        _flat(sample_lqr_meta_gradients(tasks, *per_task, spec, 1))[0], exact, rtol=1e-12, atol=1e-12
    )


def test_first_order_exact_stages_give_the_gradient_at_the_adapted_policy():
    tasks, policy = _setting()
    spec = LQRMetaGradientSpec(inner_steps=2, inner_lr=ALPHA_INNER, first_order=True)
    theta = LinearGaussian(*policy).flatten().expand(2, -1).clone()
    for _ in range(2):
        leaf = theta.requires_grad_(True)
        (grad,) = torch.autograd.grad(lqr_return(tasks, *LinearGaussian.unflatten(leaf, 2, 2)).sum(), leaf)
        theta = (leaf + ALPHA_INNER * grad).detach()
    leaf = theta.requires_grad_(True)
    (expected,) = torch.autograd.grad(lqr_return(tasks, *LinearGaussian.unflatten(leaf, 2, 2)).sum(), leaf)
    got = _flat(sample_lqr_meta_gradients(tasks, *policy, spec, 1))[0]
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


UNBIASED_COMBINATIONS = [
    (estimator, combination, steps)
    for estimator in ("dice", "loaded_dice", "pathwise")
    for combination in ("eel", "ele")
    for steps in (1, 2)
]


@pytest.mark.parametrize(("estimator", "combination", "steps"), UNBIASED_COMBINATIONS)
def test_outer_and_jacobian_stages_are_unbiased(estimator, combination, steps):
    estimates = _sample(combination, estimator, steps)
    assert_unbiased(
        estimates.reshape(REPEATS, -1), _exact(steps).reshape(-1), f"{estimator} {combination} K={steps}"
    )


def test_a_noisy_critic_keeps_loaded_dice_unbiased():
    estimates = _sample("ele", "loaded_dice", 2, critic=CriticSpec(noise=0.5))
    assert_unbiased(estimates.reshape(REPEATS, -1), _exact(2).reshape(-1), "loaded_dice ele noisy critic")


def _paired_check(estimator: str, steps: int, combinations: tuple[str, ...]) -> None:
    reference = _sample("lee", estimator, steps)
    differences = [_sample(c, estimator, steps) - reference for c in combinations]
    paired = torch.stack(differences, dim=1).reshape(REPEATS, -1)
    zero = torch.zeros(paired.shape[1], dtype=torch.float64)
    assert_unbiased(paired, zero, f"{estimator} K={steps} {combinations} - lee")


@pytest.mark.parametrize("estimator", ["dice", "loaded_dice", "pathwise"])
@pytest.mark.parametrize("steps", [1, 2])
def test_given_the_inner_samples_the_other_stages_are_unbiased(estimator, steps):
    """``lll`` minus ``lee`` on the same inner episodes: mean zero."""
    _paired_check(estimator, steps, ("lll",))


def test_compositional_bias_is_detected():
    """An estimated inner stage with few episodes (n = 10) is biased for the oracle."""
    estimates = _sample("lee", "dice", 1, n=10)
    assert_biased(estimates.reshape(REPEATS, -1), _exact(1).reshape(-1), "dice lee n=10")


def test_pg_hessian_bias_is_detected():
    estimates = _sample("ele", "pg", 1)
    assert_biased(estimates.reshape(REPEATS, -1), _exact(1).reshape(-1), "pg ele")


def test_common_random_numbers_and_determinism():
    # Loaded DiCE without a critic has DiCE's first derivative on the same episodes; with the
    # Jacobian dropped (first order) only first derivatives enter, so the estimates coincide.
    no_critic = CriticSpec(kind="zero")
    dice = _sample("lel", "dice", 2, first_order=True, critic=no_critic)
    loaded = _sample("lel", "loaded_dice", 2, first_order=True, critic=no_critic)
    assert torch.allclose(dice, loaded, rtol=1e-9, atol=1e-9)
    again = _sample("lll", "pathwise", 1, seed=3, repeats=20)
    assert torch.equal(again, _sample("lll", "pathwise", 1, seed=3, repeats=20))
    assert not torch.equal(again, _sample("lll", "pathwise", 1, seed=4, repeats=20))


def test_spec_validation_and_cost():
    spec = LQRMetaGradientSpec.from_combination("lll", "dice", 10, inner_steps=3)
    assert spec.combination == "lll" and lqr_episodes_per_estimate(spec) == 3 * 20 + 10
    assert lqr_episodes_per_estimate(dataclasses.replace(spec, first_order=True)) == 3 * 10 + 10
    with pytest.raises(ValueError, match="replay"):
        LQRMetaGradientSpec(inner=StageSpec("off_policy_dice", 4, replay=2))
    with pytest.raises(ValueError, match="learned"):
        LQRMetaGradientSpec(critic=CriticSpec(kind="learned"))
    with pytest.raises(ValueError, match="mlmc"):
        LQRMetaGradientSpec(inner=StageSpec("dice", 4, mlmc=MLMC()))
    with pytest.raises(ValueError, match="inner_steps"):
        LQRMetaGradientSpec(inner_steps=-1)
    tasks, policy = _setting()
    with pytest.raises(ValueError, match="repeats"):
        sample_lqr_meta_gradients(tasks, *policy, spec, 0)
    with pytest.raises(ValueError, match="spec"):
        sample_lqr_meta_gradients(tasks, *policy, "lll", 1)


# ------------------------------------------------------------------------------------------------
# Heavier checks (pytest -m slow)
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["dice", "loaded_dice", "pathwise"])
@pytest.mark.parametrize("steps", [1, 2])
def test_given_the_inner_samples_each_estimated_stage_is_unbiased(estimator, steps):
    """``lel`` and ``lle`` minus ``lee`` on the same inner episodes: mean zero."""
    _paired_check(estimator, steps, ("lel", "lle"))


@pytest.mark.slow
def test_compositional_bias_shrinks_like_one_over_n():
    """Delta method: the bias of ``lee`` is ``c / n + O(n^-2)``. Criterion: quadrupling n from 20 to
    80 divides the bias norm by a factor between 2 and 8 (4 expected)."""
    exact = _exact(1)
    norms = []
    for n in (20, 80):
        estimates = torch.cat([_sample("lee", "dice", 1, n=n, seed=s) for s in range(8)])
        norms.append(float((estimates.mean(0) - exact).norm()))
    assert 2.0 <= norms[0] / norms[1] <= 8.0, norms


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["dice", "loaded_dice", "pathwise"])
def test_jacobian_stage_unbiased_over_three_steps_on_random_stable_systems(estimator):
    from metagrad.envs.lqr import RandomStableSystem

    dist = RandomStableSystem(state_dim=3, action_dim=2, goal_scale=1.0, horizon=6, noise_std=0.2)
    tasks = dist.sample(3, dist.train_rng(1))
    policy = random_policy(2, 3, 2, scale=0.2)
    spec = LQRMetaGradientSpec.from_combination("ele", estimator, 20, inner_steps=3, inner_lr=0.002)
    exact = _flat(exact_lqr_meta_gradient(tasks, *policy, spec))
    estimates = _flat(
        sample_lqr_meta_gradients(tasks, *policy, spec, 4000, generator=torch.Generator().manual_seed(5))
    )
    assert_unbiased(estimates.reshape(4000, -1), exact.reshape(-1), f"{estimator} ele K=3")
