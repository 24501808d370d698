"""Decomposed meta-gradients: reductions, compositional-bias theory, off-policy, LIRPG, validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from metagrad.critics import CriticSpec
from metagrad.decomposed import MetaGradientSpec, exact_meta_gradient, sample_meta_gradients
from metagrad.envs import random_task
from metagrad.exact import maml_meta_gradient
from metagrad.scoring import score
from metagrad.staged import StageSpec

LOGITS = torch.zeros(20, 5, dtype=torch.float64)


@pytest.fixture(scope="module")
def tasks():
    return [random_task(seed=s) for s in range(4)]


def _cell(tasks, spec, repeats, seed=0, **kw):
    gen = torch.Generator().manual_seed(seed)
    x = torch.stack(
        [
            sample_meta_gradients(t, LOGITS, spec, repeats, generator=gen, **kw).reshape(repeats, -1)
            for t in tasks
        ]
    )
    e = torch.stack([exact_meta_gradient(t, LOGITS, spec, **kw).reshape(-1) for t in tasks])
    return score(x, e, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("objective", ["finite", "infinite"])
@pytest.mark.parametrize("steps", [0, 1, 3])
def test_all_exact_stages_reproduce_the_oracle(tasks, objective, steps):
    spec = MetaGradientSpec(inner_steps=steps, inner_lr=10.0, objective=objective)
    assert spec.combination == "eee"
    s = _cell(tasks[:2], spec, 3)
    assert s.corr == pytest.approx(1.0, abs=1e-9)
    assert s.variance == pytest.approx(0.0, abs=1e-20)
    assert s.bias < 1e-10


def test_first_order_drops_the_jacobian(tasks):
    task = tasks[0]
    spec = MetaGradientSpec(inner_steps=2, inner_lr=10.0, first_order=True)
    fo = sample_meta_gradients(task, LOGITS, spec, 2)
    theta = LOGITS.clone()
    for _ in range(2):  # FOMAML: the gradient at theta_K
        theta = theta + 10.0 * maml_meta_gradient(task, theta, 0, 0.0)
    assert torch.allclose(fo[0], maml_meta_gradient(task, theta, 0, 0.0))
    assert not torch.allclose(fo[0], exact_meta_gradient(task, LOGITS, spec))


def test_same_seed_same_estimates(tasks):
    spec = MetaGradientSpec.from_combination("lll", "loaded_dice", 8, critic=CriticSpec(noise=1.0))
    a = sample_meta_gradients(tasks[0], LOGITS, spec, 4, generator=torch.Generator().manual_seed(3))
    b = sample_meta_gradients(tasks[0], LOGITS, spec, 4, generator=torch.Generator().manual_seed(3))
    c = sample_meta_gradients(tasks[0], LOGITS, spec, 4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # repeats are independent estimates


def test_unbiased_outer_stage_alone_is_unbiased(tasks):
    """K = 1, only the outer gradient estimated (eel) with DiCE: no composition, so no bias."""
    spec = MetaGradientSpec.from_combination("eel", "dice", 64, inner_steps=1, inner_lr=10.0)
    s = _cell(tasks[:2], spec, 200)
    # zero bias lies inside the bootstrap interval of the debiased bias
    assert s.bias_ci_low == 0.0


def test_compositional_bias_falls_with_n():
    """Inner stage estimated, Hessian and outer exact: bias ~ n^slope with slope in [-0.75, -0.25]."""
    tasks = [random_task(seed=s) for s in range(4)]
    ns = [2, 4, 8, 16, 32, 64, 128, 256]
    biases, cis = [], []
    for n in ns:
        spec = MetaGradientSpec.from_combination("lee", "dice", n, inner_steps=1, inner_lr=10.0)
        s = _cell(tasks, spec, 100)
        biases.append(s.bias_debiased)
        cis.append((s.bias_ci_low, s.bias_ci_high))
    assert min(biases) > 0, biases  # every point resolved above 0, so a log-log fit drops nothing
    slope = np.polyfit(np.log(ns), np.log(biases), 1)[0]
    assert -0.75 <= slope <= -0.25, (slope, biases)
    assert cis[0][0] > cis[-1][1]  # the smallest n is clearly more biased than the largest


def test_compositional_bias_rises_with_k_and_alpha(tasks):
    by_k = [
        _cell(tasks, MetaGradientSpec.from_combination("lee", "dice", 32, inner_steps=k, inner_lr=10.0), 60)
        for k in (1, 2, 3)
    ]
    assert by_k[0].bias_ci_high < by_k[1].bias_ci_low and by_k[1].bias_ci_high < by_k[2].bias_ci_low
    by_alpha = [
        _cell(tasks, MetaGradientSpec.from_combination("lee", "dice", 32, inner_steps=1, inner_lr=a), 60)
        for a in (1.0, 5.0, 13.0)
    ]
    assert (
        by_alpha[0].bias_ci_high < by_alpha[1].bias_ci_low
        and by_alpha[1].bias_ci_high < by_alpha[2].bias_ci_low
    )


def test_injected_hessian_bias_mse_grows_like_c_squared(tasks):
    cs = [0.5, 1.0, 2.0, 4.0]
    mses = [
        _cell(tasks[:2], MetaGradientSpec(inner_steps=1, inner_lr=10.0, hessian_bias=c), 40).mse for c in cs
    ]
    assert all(a < b for a, b in itertools.pairwise(mses))
    assert 1.7 < np.polyfit(np.log(cs), np.log(mses), 1)[0] < 2.1


def test_pg_hessian_more_biased_than_dice(tasks):
    """ele (only the Hessian estimated): pg's biased Hessian shows, DiCE's does not."""
    common = dict(inner_steps=1, inner_lr=10.0, critic=CriticSpec(noise=0.0))
    pg = _cell(tasks, MetaGradientSpec.from_combination("ele", "pg", 64, **common), 100)
    dice = _cell(tasks, MetaGradientSpec.from_combination("ele", "dice", 64, **common), 100)
    assert pg.bias_ci_low > dice.bias_debiased
    assert dice.bias_ci_low == 0.0


def test_off_policy_inner_stage_reduces_compositional_bias(tasks):
    """Replaying earlier trajectories with importance weights raises the effective |tau|."""
    on = MetaGradientSpec(inner=StageSpec("off_policy_dice", 8), inner_steps=1, inner_lr=10.0)
    off = MetaGradientSpec(inner=StageSpec("off_policy_dice", 8, replay=120), inner_steps=1, inner_lr=10.0)
    s_on, s_off = _cell(tasks, on, 60), _cell(tasks, off, 60)
    assert s_off.bias_ci_high < s_on.bias_ci_low
    assert s_off.mse < s_on.mse


def test_lirpg_meta_gradient_all_exact_and_estimated(tasks):
    eta = 0.1 * torch.randn(20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact_spec = MetaGradientSpec(inner_steps=2, inner_lr=10.0, meta_parameter="intrinsic_reward")
    s = _cell(tasks[:2], exact_spec, 2, eta=eta)
    assert s.corr == pytest.approx(1.0, abs=1e-9) and s.bias < 1e-10
    spec = MetaGradientSpec.from_combination(
        "ele", "loaded_dice", 128, inner_steps=1, inner_lr=10.0, meta_parameter="intrinsic_reward"
    )
    est = _cell(tasks[:2], spec, 20, eta=eta)
    assert est.cosine_of_mean > 0.9


def test_learned_and_zero_critics_run(tasks):
    for critic in (CriticSpec(kind="learned", learned_episodes=16), CriticSpec(kind="zero")):
        spec = MetaGradientSpec.from_combination("lll", "lvc", 16, critic=critic)
        x = sample_meta_gradients(tasks[0], LOGITS, spec, 3, generator=torch.Generator().manual_seed(0))
        assert x.shape == (3, 20, 5) and torch.isfinite(x).all()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: StageSpec("nope", 4), "unknown name 'nope'"),
        (lambda: StageSpec("dice", 0), "n: expected an integer >= 1"),
        (lambda: StageSpec("dice", -2), "n: expected an integer >= 1"),
        (lambda: StageSpec("dice", 4, replay=8), "cannot use replayed"),
        (lambda: StageSpec("exact", replay=8), "exact stage"),
        (lambda: MetaGradientSpec(inner_steps=-1), "inner_steps"),
        (lambda: MetaGradientSpec(objective="mean"), "objective"),
        (lambda: MetaGradientSpec(meta_parameter="gamma"), "meta_parameter"),
        (lambda: MetaGradientSpec.from_combination("lxl", "dice", 4), "combination"),
        (lambda: CriticSpec(kind="oracle"), "critic.kind"),
        (lambda: CriticSpec(noise=-1.0), "critic.noise"),
    ],
)
def test_bad_specs_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_sampler_rejects_bad_calls(tasks):
    spec = MetaGradientSpec()
    with pytest.raises(ValueError, match="repeats"):
        sample_meta_gradients(tasks[0], LOGITS, spec, 0)
    with pytest.raises(ValueError, match="logits"):
        sample_meta_gradients(tasks[0], torch.zeros(5, 20), spec, 2)
    with pytest.raises(ValueError, match="eta"):
        sample_meta_gradients(tasks[0], LOGITS, MetaGradientSpec(meta_parameter="intrinsic_reward"), 2)


def test_score_validation():
    with pytest.raises(ValueError, match="at least 2 repeats"):
        score(torch.zeros(1, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="expected"):
        score(torch.zeros(2, 3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        score(torch.full((2, 3), float("nan")), torch.zeros(3))
    assert np.isclose(score(torch.ones(4, 3), torch.ones(3)).corr, 0.0)  # constant vectors: no direction
