"""Scoring sampled meta-gradients against the exact one: bias, variance, MSE, correlation.

Inputs are ``samples [N, R, D]`` (N tasks, R repeated estimates each, D parameters) and
``exact [N, D]`` (2-D ``[R, D]`` / 1-D ``[D]`` for one task). Per-task quantities are averaged
over tasks so that squared quantities add up: ``mse = bias^2 + (R - 1) / R * variance``.

* ``corr``: the papers' metric (Tang et al. 2021; Liu et al. 2022): for each estimate x and the
  exact e, ``(x - mean x) . (e - mean e) / (|x - mean x| |e - mean e|)`` (means over components),
  averaged over all estimates. It mixes bias and variance, hence the separate metrics.
* ``bias``: ``sqrt(mean_n ||m_n - e_n||^2)`` with ``m_n`` the mean estimate of task n. Noise
  inflates it by about ``variance / R``; ``bias_sq_debiased`` subtracts that
  (``||m - e||^2 - tr(Cov) / R``, unbiased for the squared bias) and ``bias_debiased`` is its
  square root clipped at 0; ``bias_ci_low/high`` is a bootstrap percentile interval of
  ``bias_debiased`` (repeats resampled within tasks).
* ``variance``: ``tr(Cov)`` with the unbiased covariance, averaged over tasks.
* ``mse``: ``mean ||x - e||^2``; ``cosine_of_mean``: ``cos(m_n, e_n)`` averaged over tasks;
  ``relative_bias``: ``bias_debiased / rms ||e_n||``.
Every metric carries an uncertainty (``*_se`` standard errors or the CI).

:func:`task_metrics` gives the per-task values behind these averages (and the official code's
own metrics), from which paired comparisons between estimators scored on the same tasks and
samples are computed (a bootstrap over tasks of the per-task differences).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from metagrad.validation import check_int, check_real

__all__ = ["TASK_METRICS", "Score", "centred_cosine", "score", "task_metrics"]


def centred_cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine between ``x - mean(x)`` and ``y - mean(y)`` over the last axis (broadcasting)."""
    xc = x - x.mean(-1, keepdim=True)
    yc = y - y.mean(-1, keepdim=True)
    denom = xc.norm(dim=-1) * yc.norm(dim=-1)
    return (xc * yc).sum(-1) / denom.clamp_min(torch.finfo(denom.dtype).tiny)


@dataclass(frozen=True)
class Score:
    """Metrics of R sampled meta-gradients per task against the exact ones (see module docstring)."""

    corr: float
    corr_std: float
    corr_se: float
    bias: float
    bias_sq_debiased: float
    bias_debiased: float
    bias_ci_low: float
    bias_ci_high: float
    variance: float
    variance_se: float
    mse: float
    mse_se: float
    cosine_of_mean: float
    cosine_of_mean_se: float
    relative_bias: float
    exact_norm: float
    num_tasks: int
    repeats: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _bias_terms(samples: torch.Tensor, exact: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task ``||m - e||^2`` and unbiased ``tr(Cov)``; samples ``[..., N, R, D]``, exact ``[N, D]``."""
    R = samples.shape[-2]
    mean = samples.mean(-2)
    bias_sq = ((mean - exact) ** 2).sum(-1)
    variance = ((samples - mean.unsqueeze(-2)) ** 2).sum((-2, -1)) / (R - 1)
    return bias_sq, variance


def _bootstrap_terms(
    samples: torch.Tensor, exact: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_bias_terms` and ``cos(m, e)`` of every bootstrap resample ``idx [B, N, R]``
    (resampled repeat indices per task), without materialising the resamples.

    A resample is a count vector ``w [R]`` over the repeats; with the repeats centred on their
    mean (``z_r = x_r - m``, ``d = m - e``), its mean is ``m + Z^T w / R`` and every term is a
    quadratic form in ``w`` of the ``[R, R]`` Gram matrix ``Z Z^T`` and the projections
    ``Z d``, ``Z e``, ``Z m``: O(N R^2 D) once, O(B N R^2) per bootstrap, whatever D.
    Returns ``(||m_b - e||^2, unbiased tr(Cov_b), cos(m_b, e))``, each ``[B, N]``.
    """
    R = samples.shape[-2]
    mean = samples.mean(-2)  # [N, D]
    Z = samples - mean.unsqueeze(-2)  # [N, R, D]
    gram = Z @ Z.transpose(-1, -2)  # [N, R, R]
    d = mean - exact
    proj = Z @ torch.stack([d, exact, mean], dim=-1)  # [N, R, 3]: z.d, z.e, z.m
    ones = torch.ones(idx.shape, dtype=samples.dtype, device=samples.device)
    w = torch.zeros_like(ones).scatter_add_(-1, idx.to(samples.device), ones)  # resample counts
    shift_sq = torch.einsum("bnr,nrs,bns->bn", w, gram, w) / R**2  # ||zbar_b||^2
    shift_dot = torch.einsum("bnr,nrk->bnk", w, proj) / R  # zbar_b . (d, e, m)
    bias_sq = (d * d).sum(-1) + 2 * shift_dot[..., 0] + shift_sq
    variance = (w * gram.diagonal(dim1=-2, dim2=-1)).sum(-1) - R * shift_sq
    variance = variance / (R - 1)
    dot = (mean * exact).sum(-1) + shift_dot[..., 1]  # m_b . e
    norm_sq = (mean * mean).sum(-1) + 2 * shift_dot[..., 2] + shift_sq  # ||m_b||^2
    eps = 1e-8  # torch.nn.functional.cosine_similarity's floor on each norm
    cos = dot / (norm_sq.clamp_min(0).sqrt().clamp_min(eps) * exact.norm(dim=-1).clamp_min(eps))
    return bias_sq, variance, cos


# The per-task metrics of :func:`task_metrics`, in order
TASK_METRICS: tuple[str, ...] = (
    "bias_sq_debiased",
    "mse",
    "variance",
    "corr",
    "paper_bias",
    "paper_variance",
)


def task_metrics(samples: torch.Tensor, exact: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-task metrics ``[N]`` of ``samples [N, R, D]`` against ``exact [N, D]``.

    * ``bias_sq_debiased``: ``||m_n - e_n||^2 - tr(Cov_n) / R`` (unbiased for the squared bias of
      task n; its mean over tasks is :class:`Score`'s ``bias_sq_debiased``);
    * ``mse``: ``mean_r ||x_nr - e_n||^2``; ``variance``: ``tr(Cov_n)``; ``corr``: the papers'
      centred cosine averaged over the task's estimates;
    * the metrics of Liu et al. (NeurIPS 2022)'s own tabular MAML experiments, for
      comparison with the paper's figures: ``paper_bias = ||m_n - e_n||^2 / D`` (not debiased) and
      ``paper_variance = sum_d std_d`` (the sum over components of the unbiased standard deviation).
    """
    samples = torch.as_tensor(samples).detach().to(torch.float64)
    exact = torch.as_tensor(exact).detach().to(torch.float64)
    R, D = samples.shape[-2], samples.shape[-1]
    bias_sq, variance = _bias_terms(samples, exact)
    return {
        "bias_sq_debiased": bias_sq - variance / R,
        "mse": ((samples - exact.unsqueeze(-2)) ** 2).sum(-1).mean(-1),
        "variance": variance,
        "corr": centred_cosine(samples, exact.unsqueeze(-2)).mean(-1),
        "paper_bias": bias_sq / D,
        "paper_variance": samples.std(-2, unbiased=True).sum(-1),
    }


def score(
    samples: torch.Tensor,
    exact: torch.Tensor,
    *,
    num_bootstrap: int = 200,
    confidence: float = 0.95,
    generator: torch.Generator | None = None,
) -> Score:
    """Score sampled meta-gradients against the exact ones.

    Args:
        samples: ``[N, R, D]`` (or ``[R, D]`` for one task); R >= 2 estimates per task.
        exact: ``[N, D]`` (or ``[D]``), the exact meta-gradients.
        num_bootstrap: bootstrap resamples for the bias CI and the variance standard error.
        confidence: level of the bias CI.
        generator: randomness of the bootstrap (seeded: the same inputs give the same score).
    Returns:
        A :class:`Score`; every metric is finite (``ValueError`` naming the metrics otherwise, e.g.
        when estimates are so large that their squares overflow float64).
    """
    samples = torch.as_tensor(samples).detach().to(torch.float64)
    exact = torch.as_tensor(exact).detach().to(torch.float64)
    if samples.ndim == 2 and exact.ndim == 1:
        samples, exact = samples.unsqueeze(0), exact.unsqueeze(0)
    if (
        samples.ndim != 3
        or exact.ndim != 2
        or samples.shape[0] != exact.shape[0]
        or samples.shape[2] != exact.shape[1]
    ):
        raise ValueError(
            "samples/exact: expected [N, R, D] with [N, D], or [R, D] with [D] (flatten parameter "
            f"shapes first), got {list(samples.shape)} and {list(exact.shape)}"
        )
    N, R, _ = samples.shape
    if R < 2:
        raise ValueError(f"samples: need at least 2 repeats per task to estimate a variance, got {R}")
    if not (torch.isfinite(samples).all() and torch.isfinite(exact).all()):
        raise ValueError("samples/exact: contain NaN or infinite entries")
    check_real("confidence", confidence, minimum=0.0, maximum=1.0, open_min=True, open_max=True)
    check_int("num_bootstrap", num_bootstrap, 2)

    corr_each = centred_cosine(samples, exact.unsqueeze(1)).reshape(-1)
    bias_sq, variance = _bias_terms(samples, exact)
    debiased = (bias_sq - variance / R).mean()
    sq_err = ((samples - exact.unsqueeze(1)) ** 2).sum(-1).reshape(-1)
    cos_mean = torch.nn.functional.cosine_similarity(samples.mean(1), exact, dim=-1)
    exact_rms = exact.pow(2).sum(-1).mean().sqrt()

    idx = torch.randint(0, R, (num_bootstrap, N, R), generator=generator)
    b_bias_sq, b_var, b_cos_each = _bootstrap_terms(samples, exact, idx)
    # Resampling re-adds noise, shifting the bootstrap distribution of the squared bias upward;
    # centre it on the estimate (bias-corrected percentile interval), then map to the bias scale.
    b_sq = (b_bias_sq - b_var / R).mean(-1)
    b_sq = b_sq - (b_sq.mean() - debiased)
    levels = torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(b_sq, levels).clamp_min(0).sqrt()
    b_cos = b_cos_each.mean(-1)

    n_all = corr_each.numel()
    result = Score(
        corr=float(corr_each.mean()),
        corr_std=float(corr_each.std()) if n_all > 1 else 0.0,
        corr_se=float(corr_each.std() / math.sqrt(n_all)) if n_all > 1 else 0.0,
        bias=float(bias_sq.mean().sqrt()),
        bias_sq_debiased=float(debiased),
        bias_debiased=float(debiased.clamp_min(0).sqrt()),
        bias_ci_low=float(lo),
        bias_ci_high=float(hi),
        variance=float(variance.mean()),
        variance_se=float(b_var.mean(-1).std()),
        mse=float(sq_err.mean()),
        mse_se=float(sq_err.std() / math.sqrt(n_all)),
        cosine_of_mean=float(cos_mean.mean()),
        cosine_of_mean_se=float(b_cos.std()),
        relative_bias=float(debiased.clamp_min(0).sqrt() / exact_rms.clamp_min(1e-300)),
        exact_norm=float(exact_rms),
        num_tasks=N,
        repeats=R,
    )
    bad = {k: v for k, v in result.to_dict().items() if not math.isfinite(v)}
    if bad:
        raise ValueError(
            "score: non-finite metrics "
            + ", ".join(f"{k}={v}" for k, v in bad.items())
            + f" (largest |estimate| {float(samples.abs().max()):.3g}: the squared errors overflow float64)"
        )
    return result
