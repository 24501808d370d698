"""The MLMC inner stage: an inner loop without compositional bias (Blanchet & Glynn 2015).

Statistical checks are seeded z-tests of the mean of R estimates against the exact
meta-gradient, component by component, Bonferroni-corrected (tolerance from the standard error).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metagrad.critics import CriticSpec
from metagrad.decomposed import (
    MetaGradientSpec,
    episodes_per_estimate,
    exact_meta_gradient,
    sample_meta_gradients,
)
from metagrad.envs import random_task
from metagrad.lola import LolaSpec
from metagrad.mlmc import MLMC
from metagrad.staged import StageSpec

LOGITS = torch.zeros(4, 3, dtype=torch.float64)
ALPHA = 1e-3  # family-wise false-alarm level


@pytest.fixture(scope="module")
def task():
    return random_task(4, 3, gamma=0.9, horizon=6, dirichlet_alpha=1.0, seed=3, start_state=None)


def _spec(estimator, n, steps, lr, mlmc=None):
    return MetaGradientSpec(
        inner=StageSpec(estimator, n, mlmc=mlmc), inner_steps=steps, inner_lr=lr, critic=CriticSpec(noise=1.0)
    )


def _samples(task, spec, repeats, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return sample_meta_gradients(task, LOGITS, spec, repeats, generator=gen).reshape(repeats, -1)


def _threshold(dims: int) -> float:
    return float(torch.special.ndtri(torch.tensor(1 - ALPHA / (2 * dims), dtype=torch.float64)))


def _max_z(x: torch.Tensor, target: torch.Tensor, target_se: torch.Tensor | None = None) -> float:
    se2 = x.var(0) / x.shape[0] + (0 if target_se is None else target_se**2)
    return float(((x.mean(0) - target) / se2.sqrt()).abs().max())


@pytest.mark.parametrize(
    ("estimator", "steps", "lr", "repeats"),
    [("dice", 1, 5.0, 20_000), ("pg", 2, 3.0, 12_000)],
)
def test_mlmc_removes_the_compositional_bias(task, estimator, steps, lr, repeats):
    """Plain inner stage (n = 4): the mean misses the exact meta-gradient by many standard
    errors. MLMC on the same stage (n0 = 4, untruncated): the mean matches it."""
    plain = _spec(estimator, 4, steps, lr)
    exact = exact_meta_gradient(task, LOGITS, plain).reshape(-1)
    threshold = _threshold(exact.numel())
    assert _max_z(_samples(task, plain, repeats), exact) > 3 * threshold
    debiased = _spec(estimator, 4, steps, lr, MLMC())
    assert _max_z(_samples(task, debiased, repeats), exact) < threshold


def test_truncated_mlmc_is_unbiased_for_its_finest_level(task):
    """With L_max = 2 the estimator telescopes to E F_{4 n0}: its mean matches the plain
    estimator with 4 n0 episodes per step (two independent samples) and still misses the exact
    meta-gradient (the truncation bias)."""
    truncated = _samples(task, _spec("dice", 4, 1, 5.0, MLMC(max_level=2)), 20_000)
    finest = _samples(task, _spec("dice", 16, 1, 5.0), 20_000, seed=1)
    exact = exact_meta_gradient(task, LOGITS, _spec("dice", 4, 1, 5.0)).reshape(-1)
    threshold = _threshold(exact.numel())
    assert _max_z(truncated, finest.mean(0), finest.std(0) / finest.shape[0] ** 0.5) < threshold
    assert _max_z(truncated, exact) > threshold


def test_level_law_and_expected_cost():
    mlmc = MLMC()
    q = 2**-1.5
    assert sum(mlmc.probability(level) for level in range(1, 200)) == pytest.approx(1.0)
    assert mlmc.probability(0) == 0.0 and mlmc.probability(3) == pytest.approx((1 - q) * q**2)
    levels = mlmc.sample_levels(200_000, torch.Generator().manual_seed(0))
    for level in (1, 2, 3, 4):
        p = mlmc.probability(level)
        freq = float((levels == level).double().mean())
        assert abs(freq - p) < 5 * (p * (1 - p) / 200_000) ** 0.5
    assert mlmc.expected_scale() == pytest.approx(sum(mlmc.probability(k) * 2**k for k in range(1, 400)))
    truncated = MLMC(max_level=3)
    assert sum(truncated.probability(k) for k in (1, 2, 3)) == pytest.approx(1.0)
    assert truncated.probability(4) == 0.0
    assert int(truncated.sample_levels(10_000, torch.Generator().manual_seed(1)).max()) == 3


def test_expected_episodes_per_estimate():
    scale = MLMC().expected_scale()
    assert episodes_per_estimate(_spec("pg", 8, 1, 10.0, MLMC())) == pytest.approx(8 * (1 + scale))
    # K = 2: base 2 n0; fine 2 n0 2^L; each half replays step 1 with n0 2^(L-1)
    assert episodes_per_estimate(_spec("pg", 8, 2, 3.0, MLMC())) == pytest.approx(16 + 24 * scale)
    # sampled Jacobian and outer stages: the fine path pays them, a half path where it has moved
    spec = dataclasses.replace(
        _spec("pg", 8, 2, 3.0, MLMC(max_level=1)), hessian=StageSpec("dice", 5), outer=StageSpec("dice", 7)
    )
    base = 2 * 8 + 2 * 5 + 7
    fine = 2 * 16 + 2 * 5 + 7
    half = (8 + 5) + 7
    assert episodes_per_estimate(spec) == pytest.approx(base + fine + 2 * half)
    assert isinstance(episodes_per_estimate(_spec("pg", 8, 1, 10.0)), int)


def test_mlmc_same_seed_same_numbers_and_other_stages(task):
    spec = dataclasses.replace(
        _spec("loaded_dice", 4, 2, 3.0, MLMC(max_level=3)),
        hessian=StageSpec("dice", 4),
        outer=StageSpec("dice", 4),
    )
    a, b = _samples(task, spec, 16), _samples(task, spec, 16)
    assert torch.equal(a, b) and not torch.equal(a, _samples(task, spec, 16, seed=1))
    assert torch.isfinite(a).all()


def test_mlmc_spec_validation_and_stored_form():
    with pytest.raises(ValueError, match="mlmc: needs an estimated stage"):
        StageSpec(mlmc=MLMC())
    with pytest.raises(ValueError, match="mlmc: needs an estimated stage"):
        StageSpec("off_policy_dice", 4, replay=8, mlmc=MLMC())
    with pytest.raises(ValueError, match=r"hessian\.mlmc"):
        MetaGradientSpec(hessian=StageSpec("dice", 4, mlmc=MLMC()))
    with pytest.raises(ValueError, match=r"inner\.mlmc"):
        LolaSpec(inner=StageSpec("dice", 4, mlmc=MLMC()))
    with pytest.raises(ValueError, match="replayed"):
        MetaGradientSpec(
            inner=StageSpec("dice", 4, mlmc=MLMC()), outer=StageSpec("off_policy_dice", 4, replay=4)
        )
    with pytest.raises(ValueError, match=r"mlmc\.rate"):
        MLMC(rate=2.0)  # untruncated: the variance would diverge
    with pytest.raises(ValueError, match=r"mlmc\.max_level"):
        MLMC(max_level=0)
    with pytest.raises(ValueError, match="mlmc: expected an MLMC"):
        StageSpec("dice", 4, mlmc=3)
    assert MLMC(max_level=4, rate=2.5).max_level == 4  # any rate when truncated
    # a stage without MLMC keeps its stored form; one with MLMC round-trips through a dict
    assert "mlmc" not in MetaGradientSpec.from_combination("lee", "pg", 8).to_dict()["inner"]
    stored = _spec("pg", 8, 1, 10.0, MLMC(max_level=5)).to_dict()["inner"]
    assert StageSpec(**stored) == StageSpec("pg", 8, mlmc=MLMC(max_level=5))
