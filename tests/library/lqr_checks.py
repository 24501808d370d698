"""Shared pieces of the LQR tests: random general tasks and policies, and the z-test that judges
an estimator's mean against an exact value (tolerance from the standard error)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metagrad.envs.lqr import LQRTask

# Family-wise false-alarm level of every statistical check (Bonferroni over the components of
# one check), fixed before any of these tests was run.
ALPHA = 1e-3


def _psd(rng: np.random.Generator, n: int, rank: int, shift: float = 0.0) -> np.ndarray:
    L = rng.standard_normal((n, rank)) / np.sqrt(n)
    return L @ L.T + shift * np.eye(n)


def random_task(
    seed: int, n: int = 3, m: int = 2, *, num_tasks: int | None = None, horizon: int = 6, gamma: float = 0.9
) -> LQRTask:
    """A general task (or batch): random A (spectral radius up to ~1.1), B, Q (PSD, possibly
    singular), R (PD), W and S0 (PSD), mu0 and goal; not the isotropic families."""
    rng = np.random.default_rng(seed)

    def one() -> dict[str, np.ndarray]:
        A = rng.standard_normal((n, n))
        A *= rng.uniform(0.5, 1.1) / np.abs(np.linalg.eigvals(A)).max()
        return {
            "A": A,
            "B": rng.standard_normal((n, m)) / np.sqrt(n),
            "Q": _psd(rng, n, max(1, n - 1)),
            "R": _psd(rng, m, m, shift=0.2),
            "W": 0.1 * _psd(rng, n, n),
            "mu0": rng.standard_normal(n),
            "S0": 0.2 * _psd(rng, n, n),
            "goal": rng.standard_normal(n),
        }

    if num_tasks is None:
        return LQRTask(**one(), gamma=gamma, horizon=horizon)
    fields = [one() for _ in range(num_tasks)]
    stacked = {name: np.stack([f[name] for f in fields]) for name in fields[0]}
    return LQRTask(**stacked, gamma=gamma, horizon=horizon)


def random_policy(
    seed: int, n: int = 3, m: int = 2, batch: tuple[int, ...] = (), scale: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(K [*batch, m, n], k [*batch, m], log_std [*batch, m])`` float64."""
    g = torch.Generator().manual_seed(seed)
    K = scale * torch.randn(*batch, m, n, generator=g, dtype=torch.float64)
    k = torch.randn(*batch, m, generator=g, dtype=torch.float64)
    log_std = -0.5 + 0.3 * torch.randn(*batch, m, generator=g, dtype=torch.float64)
    return K, k, log_std


@dataclass(frozen=True)
class ZTest:
    """Per-component ``z = (mean - exact) / stderr`` of ``samples [R, D]`` against ``exact [D]``."""

    z: torch.Tensor
    threshold: float

    @property
    def max_abs_z(self) -> float:
        return float(self.z.abs().max())

    def __str__(self) -> str:
        dims = self.z.numel()
        return f"max |z| = {self.max_abs_z:.2f} (threshold {self.threshold:.2f} over {dims} components)"


def z_test(samples: torch.Tensor, exact: torch.Tensor, alpha: float = ALPHA) -> ZTest:
    samples = samples.reshape(samples.shape[0], -1).to(torch.float64)
    exact = exact.reshape(-1).to(torch.float64)
    mean, stderr = samples.mean(0), samples.std(0) / samples.shape[0] ** 0.5
    diff = mean - exact
    tiny = 1e-10 * (1 + exact.abs())
    z = torch.where(
        stderr > 0,
        diff / stderr.clamp_min(1e-300),
        torch.where(diff.abs() <= tiny, torch.zeros_like(diff), torch.full_like(diff, float("inf"))),
    )
    dims = exact.numel()
    threshold = float(torch.special.ndtri(torch.tensor(1 - alpha / (2 * dims), dtype=torch.float64)))
    return ZTest(z, threshold)


def assert_unbiased(samples: torch.Tensor, exact: torch.Tensor, label: str = "") -> ZTest:
    result = z_test(samples, exact)
    assert result.max_abs_z <= result.threshold, f"{label}: looks biased, {result}"
    return result


def assert_biased(samples: torch.Tensor, exact: torch.Tensor, label: str = "") -> ZTest:
    result = z_test(samples, exact)
    assert result.max_abs_z > result.threshold, f"{label}: no bias detected, {result}"
    return result
