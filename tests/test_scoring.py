"""The arithmetic of metagrad.scoring.score against hand-computed cases and its statistics."""

from __future__ import annotations

import math

import pytest
import torch

from metagrad.scoring import centred_cosine, score


def test_one_task_two_estimates_by_hand():
    # estimates 1 and 3 of a scalar whose exact value is 1: mean 2, bias 1, unbiased variance 2,
    # squared errors 0 and 4, debiased squared bias 1 - 2 / 2 = 0
    s = score(torch.tensor([[1.0], [3.0]]), torch.tensor([1.0]), num_bootstrap=50)
    assert s.num_tasks == 1 and s.repeats == 2
    assert s.bias == pytest.approx(1.0)
    assert s.variance == pytest.approx(2.0)
    assert s.mse == pytest.approx(2.0)
    assert s.mse_se == pytest.approx(math.sqrt(8.0) / math.sqrt(2.0))  # std([0, 4]) / sqrt(2)
    assert s.bias_sq_debiased == pytest.approx(0.0)
    assert s.bias_debiased == 0.0 and s.relative_bias == 0.0
    assert s.exact_norm == pytest.approx(1.0)
    assert s.cosine_of_mean == pytest.approx(1.0)  # cos(2, 1) in one dimension


def test_two_tasks_average_their_squared_quantities():
    samples = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [1.0, 3.0]]])  # [N=2, R=2, D=2]
    exact = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    s = score(samples, exact, num_bootstrap=50)
    # task 1: mean (1, 0), ||m - e||^2 = 1, tr Cov = 2; task 2: mean (1, 2), ||m - e||^2 = 1, tr Cov = 2
    assert s.bias == pytest.approx(1.0)
    assert s.variance == pytest.approx(2.0)
    # squared errors 0, 4, 0, 4
    assert s.mse == pytest.approx(2.0)
    assert s.bias_sq_debiased == pytest.approx(1.0 - 2.0 / 2)
    assert s.exact_norm == pytest.approx(math.sqrt((0 + 2) / 2))


def test_mse_is_squared_bias_plus_variance_on_any_sample():
    gen = torch.Generator().manual_seed(0)
    samples = torch.randn(5, 7, 4, generator=gen, dtype=torch.float64) * 0.3 + 0.2
    exact = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    s = score(samples, exact, num_bootstrap=50)
    R = samples.shape[1]
    # with means over tasks: mse = bias^2 + (R - 1) / R * variance, exactly
    assert s.mse == pytest.approx(s.bias**2 + (R - 1) / R * s.variance, rel=1e-12)
    assert s.bias_sq_debiased == pytest.approx(s.bias**2 - s.variance / R, rel=1e-12)


def test_exact_estimates_score_perfectly():
    exact = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]], dtype=torch.float64)
    samples = exact.unsqueeze(1).expand(2, 4, 3)
    s = score(samples, exact)
    assert s.bias == s.variance == s.mse == s.bias_debiased == 0.0
    assert s.bias_ci_low == s.bias_ci_high == 0.0
    assert s.corr == pytest.approx(1.0) and s.corr_std == pytest.approx(0.0, abs=1e-12)
    assert s.cosine_of_mean == pytest.approx(1.0)


def test_corr_is_the_mean_centred_cosine_by_hand():
    e = torch.tensor([1.0, 2.0, 3.0])
    assert float(centred_cosine(torch.tensor([2.0, 4.0, 6.0]), e)) == pytest.approx(1.0)
    assert float(centred_cosine(torch.tensor([3.0, 2.0, 1.0]), e)) == pytest.approx(-1.0)
    # x - mean x = (-1, 1, 0), e - mean e = (-1, 0, 1): cosine 1 / 2
    assert float(centred_cosine(torch.tensor([0.0, 2.0, 1.0]), e)) == pytest.approx(0.5)
    s = score(torch.tensor([[3.0, 2.0, 1.0], [0.0, 2.0, 1.0]]), e, num_bootstrap=20)
    assert s.corr == pytest.approx((-1.0 + 0.5) / 2)
    assert s.corr_std == pytest.approx(torch.tensor([-1.0, 0.5]).std().item())
    assert s.corr_se == pytest.approx(s.corr_std / math.sqrt(2))


def test_debiased_squared_bias_is_unbiased_on_synthetic_draws():
    """Over many independent cells with a known bias, the mean of ``bias_sq_debiased`` matches
    ``||b||^2`` within 4 standard errors (the plain squared bias overshoots by ``tr Cov / R``)."""
    gen = torch.Generator().manual_seed(1)
    D, R, N, cells = 3, 4, 2, 400
    b = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    sigma = 1.0
    exact = torch.zeros(N, D, dtype=torch.float64)
    debiased, plain = [], []
    for _ in range(cells):
        samples = exact.unsqueeze(1) + b + sigma * torch.randn(N, R, D, generator=gen, dtype=torch.float64)
        s = score(samples, exact, num_bootstrap=2)
        debiased.append(s.bias_sq_debiased)
        plain.append(s.bias**2)
    truth = float((b**2).sum())
    d = torch.tensor(debiased)
    se = float(d.std() / math.sqrt(cells))
    assert abs(float(d.mean()) - truth) < 4 * se
    # the undebiased square is off by the noise term D sigma^2 / R, far beyond its error
    p = torch.tensor(plain)
    assert float(p.mean()) - truth > 4 * float(p.std() / math.sqrt(cells))
    assert float(p.mean()) - truth == pytest.approx(D * sigma**2 / R, rel=0.2)


def test_bias_ci_covers_the_truth_at_about_its_level():
    gen = torch.Generator().manual_seed(2)
    b = torch.tensor([0.5, 0.0], dtype=torch.float64)
    hits, trials = 0, 60
    for i in range(trials):
        samples = b + 0.5 * torch.randn(3, 20, 2, generator=gen, dtype=torch.float64)
        s = score(samples, torch.zeros(3, 2, dtype=torch.float64), generator=torch.Generator().manual_seed(i))
        hits += s.bias_ci_low <= 0.5 <= s.bias_ci_high
    # nominal 95%; 60 trials: fewer than 48 hits has probability < 1e-3 at the nominal rate
    assert hits >= 48


def test_bootstrap_is_seeded():
    gen = torch.Generator().manual_seed(3)
    samples = torch.randn(2, 6, 3, generator=gen)
    exact = torch.zeros(2, 3)
    a = score(samples, exact, generator=torch.Generator().manual_seed(9))
    b = score(samples, exact, generator=torch.Generator().manual_seed(9))
    assert a == b


@pytest.mark.parametrize(
    ("samples", "exact", "match"),
    [
        (torch.zeros(1, 3), torch.zeros(3), "at least 2 repeats"),
        (torch.zeros(2, 4, 3), torch.zeros(3, 3), "expected"),
        (torch.tensor([[0.0], [float("nan")]]), torch.zeros(1), "NaN"),
        (torch.tensor([[0.0], [float("inf")]]), torch.zeros(1), "NaN or infinite"),
    ],
)
def test_bad_inputs_are_rejected(samples, exact, match):
    with pytest.raises(ValueError, match=match):
        score(samples, exact)


def test_bad_confidence_is_rejected():
    with pytest.raises(ValueError, match="confidence"):
        score(torch.zeros(3, 2), torch.zeros(2), confidence=1.0)
