"""The atari suite's pre-registered verdicts, fixed before any run.

Paired view: X's Hessian bias on a game is RESOLVED when at least one component's 95% CI
(Student-t on block means of the paired differences, Bonferroni over the D meta-parameters)
excludes 0, otherwise INCONCLUSIVE (:func:`paired_statistics`; recorded in every paired row).
LVC against pg on the same blocks: ``||E d_pg||^2 - ||E d_lvc||^2`` with a bias-corrected block
bootstrap 95% interval, ``LVC smaller`` / ``LVC larger`` / INCONCLUSIVE (:func:`lvc_vs_pg`;
in the summary). These are per-game verdicts of the rows, not claims of a paper:
:func:`atari_claims` (the ``claims`` hook) returns none.
"""

from __future__ import annotations

from typing import Any

import torch

from metagrad.agents.mgrl import META_NAMES
from metagrad.app.judging.claims import Claim
from metagrad.app.judging.statistics import ALPHA, block_bootstrap, t_intervals
from metagrad.app.running.rows import ResultRow

__all__ = ["ALPHA", "atari_claims", "first_resolved", "lvc_vs_pg", "paired_statistics"]


def atari_claims(rows: list[ResultRow]) -> list[Claim]:
    """No claim of a paper: the atari rows carry per-game verdicts (see the module docstring)."""
    return []


def paired_statistics(blocks: torch.Tensor, alpha: float = ALPHA) -> dict[str, Any]:
    """Per-component mean, Student-t CI (Bonferroni over the D components, family level
    ``1 - alpha``) and verdict from block means of paired differences ``[nb, D]``."""
    D = blocks.shape[1]
    mean, low, high, t = t_intervals(blocks, alpha=alpha)
    excludes = (low > 0) | (high < 0)
    return {
        "mean": mean.tolist(),
        "ci_low": low.tolist(),
        "ci_high": high.tolist(),
        "t_quantile": t,
        "resolved": bool(excludes.any()),
        "resolved_components": [META_NAMES[i] for i in range(D) if excludes[i]],
    }


def first_resolved(blocks: torch.Tensor) -> int | None:
    """Descriptive only: the smallest prefix (in blocks) from which every longer prefix is resolved."""
    first = None
    for n in range(2, blocks.shape[0] + 1):
        if paired_statistics(blocks[:n])["resolved"]:
            first = n if first is None else first
        else:
            first = None
    return first


def lvc_vs_pg(
    pg_blocks: torch.Tensor, lvc_blocks: torch.Tensor, *, seed: int = 0, num_bootstrap: int = 2000
) -> dict[str, Any]:
    """``||E d_pg||^2 - ||E d_lvc||^2`` from block means of the paired differences on the same
    blocks (``[nb, D]`` each): the unbiased estimate ``m_e . m_s - tr Cov(e, s) / nb`` with
    ``e = d_pg - d_lvc``, ``s = d_pg + d_lvc``, and a bias-corrected block-bootstrap 95% interval.
    Verdict: ``LVC smaller`` (interval above 0), ``LVC larger`` (below 0) or ``INCONCLUSIVE``."""
    if pg_blocks.shape != lvc_blocks.shape:
        raise ValueError(f"blocks: shapes differ, {list(pg_blocks.shape)} vs {list(lvc_blocks.shape)}")
    nb = pg_blocks.shape[0]

    def estimate(pg: torch.Tensor, lvc: torch.Tensor) -> torch.Tensor:  # [..., nb, D]
        e, s = pg - lvc, pg + lvc
        me, ms = e.mean(-2), s.mean(-2)
        cov = ((e - me.unsqueeze(-2)) * (s - ms.unsqueeze(-2))).sum((-2, -1)) / (nb - 1)
        return (me * ms).sum(-1) - cov / nb

    ci = block_bootstrap(estimate, pg_blocks, lvc_blocks, seed=seed, num_resamples=num_bootstrap)
    verdict = "LVC smaller" if ci.low > 0 else ("LVC larger" if ci.high < 0 else "INCONCLUSIVE")
    return {"difference": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "verdict": verdict}
