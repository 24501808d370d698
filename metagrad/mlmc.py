"""Randomized multilevel Monte Carlo (MLMC): unbiased estimates of a nonlinear function of an
expectation, here a meta-gradient whose inner loop is built on sampled gradients.

:class:`MLMC` is the law of the levels and its cost; :func:`randomized_mlmc` adds the weighted
antithetic level differences to a batch of plain estimates, whatever computes the three coupled
paths of a level (the tabular sampler's is :func:`metagrad.decomposed.sample_meta_gradients_wrt`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from metagrad.validation import check_int, check_real

__all__ = ["MLMC", "LevelPaths", "randomized_mlmc"]


@dataclass(frozen=True)
class MLMC:
    """Randomized multilevel Monte Carlo for the inner stage: an inner loop without compositional
    bias (Blanchet & Glynn, WSC 2015; for nested expectations Hu, Chen & He, NeurIPS 2021, and
    Asi, Carmon, Jambulapati, Jin & Sidford, 2021).

    Let ``F_n`` be the meta-gradient whose K inner updates each use ``n`` sampled episodes (the
    stage's estimator), so that ``E F_n -> F_inf`` (the inner loop made exact) as ``n`` grows. With
    ``n0`` the stage's ``n``, one estimate is::

        Y = F_{n0} + Delta_L / p_L,   L ~ p  (L >= 1),
        Delta_L = F_{n0 2^L} - (F^A_{n0 2^(L-1)} + F^B_{n0 2^(L-1)}) / 2

    with ``F^A``, ``F^B`` computed from the two halves of the ``n0 2^L`` episodes of every inner
    step (antithetic; the level-0 term is independent). Since ``F^A``, ``F^B`` are distributed as
    ``F_{n0 2^(L-1)}``, ``E Delta_L = E F_{n0 2^L} - E F_{n0 2^(L-1)}`` and the sum telescopes:
    ``E Y = lim_n E F_n``, no compositional bias.

    Choice of ``p``: ``p_L`` proportional to ``2^(-rate L)``. For a smooth inner map the first-order
    terms of the two halves cancel in ``Delta_L`` (the full mean is the mean of the half means), so
    ``Delta_L = O(1 / n_L)`` and ``Var Delta_L = O(2^(-2L))``, while a level costs ``O(2^L)``
    episodes. Then ``Var Y <= sum_L E[Delta_L^2] / p_L ~ sum_L 2^((rate - 2) L)`` is finite for
    ``rate < 2`` and the expected cost ``sum_L p_L 2^L ~ sum_L 2^((1 - rate) L)`` for ``rate > 1``:
    ``rate = 1.5`` balances the two (both series converge like ``2^(-L/2)``). Untruncated,
    ``p_L = (1 - q) q^(L-1)`` with ``q = 2^-rate``, and ``E 2^L = 2 (1 - q) / (1 - 2q)``.

    ``max_level``: truncation ``L_max`` (``p`` renormalised over ``1..L_max``). ``E Y`` is then
    ``E F_{n0 2^L_max}``: the compositional bias of ``n0 2^L_max`` episodes per inner step is
    left (``O(1 / (n0 2^L_max))`` for a smooth map, by the delta method), in exchange for a
    bounded cost per estimate. Any ``rate > 0`` is allowed when truncated.

    Coupling: the paths of a level share their random numbers (for tabular meta-gradients,
    :class:`metagrad.decomposed.CoupledSampler`). At
    inner step 0 all paths sit at ``theta_0``, so the halves are literally halves of the fine
    episodes; with K >= 2 the later steps replay the same uniforms at nearby policies, which a
    simulator allows (a real environment would only couple K = 1 exactly).
    """

    max_level: int | None = None
    rate: float = 1.5

    def __post_init__(self) -> None:
        if self.max_level is not None:
            check_int("mlmc.max_level", self.max_level, 1)
            check_real("mlmc.rate", self.rate, minimum=0.0, open_min=True)
        else:
            check_real("mlmc.rate", self.rate, minimum=1.0, maximum=2.0, open_min=True, open_max=True)

    @property
    def _ratio(self) -> float:
        return 2.0 ** (-self.rate)

    def probability(self, level: int) -> float:
        """``p_L`` of a level ``L >= 1`` (0 above the truncation)."""
        if level < 1 or (self.max_level is not None and level > self.max_level):
            return 0.0
        q = self._ratio
        if self.max_level is None:
            return (1.0 - q) * q ** (level - 1)
        return q ** (level - 1) * (1.0 - q) / (1.0 - q**self.max_level)

    def sample_levels(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` independent levels ``L ~ p`` (long ``[count]``, on the CPU)."""
        device = generator.device if generator is not None else "cpu"
        u = torch.rand(count, generator=generator, dtype=torch.float64, device=device).cpu()
        q = self._ratio
        if self.max_level is not None:
            u = u * (1.0 - q**self.max_level)  # inverse CDF of the renormalised geometric law
        levels = 1 + torch.floor(torch.log1p(-u) / math.log(q)).long()
        return levels if self.max_level is None else levels.clamp(max=self.max_level)

    def expected_scale(self) -> float:
        """``E[2^L]``: the expected fine-path size in units of ``n0``."""
        q = self._ratio
        if self.max_level is None:
            return 2.0 * (1.0 - q) / (1.0 - 2.0 * q)
        return sum(self.probability(level) * 2.0**level for level in range(1, self.max_level + 1))


# ``(level, repeats) -> (fine, half_a, half_b)``: the three coupled paths of a level for the repeats
# ``repeats`` (long ``[m]``), each a ``{name: [m, ...]}`` of estimates.
LevelPaths = Callable[
    [int, torch.Tensor],
    tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]],
]


def randomized_mlmc(
    mlmc: MLMC,
    plain: dict[str, torch.Tensor],
    level_paths: LevelPaths,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """``Y = F_{n0} + Delta_L / p_L`` for every repeat (see :class:`MLMC`), in place in ``plain``.

    Args:
        mlmc: the law of the levels.
        plain: ``{name: [R, ...]}`` level-0 estimates ``F_{n0}`` of the ``R`` repeats (updated).
        level_paths: the coupled fine and half paths of one level for some repeats; the repeats
            that drew the same level are one call (one batch).
        generator: draws the ``R`` levels (first), then whatever ``level_paths`` draws.
    Returns:
        ``plain``, each repeat's entry now its MLMC estimate.
    """
    first = next(iter(plain.values()))
    levels = mlmc.sample_levels(first.shape[0], generator)
    for level in sorted(set(levels.tolist())):
        idx = (levels == level).nonzero().flatten().to(first.device)
        fine, half_a, half_b = level_paths(level, idx)
        weight = 1.0 / mlmc.probability(level)
        for name in plain:
            plain[name][idx] += weight * (fine[name] - 0.5 * (half_a[name] + half_b[name]))
    return plain
