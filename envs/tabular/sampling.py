"""Exact categorical draws for the batched engines: inverse-CDF sampling, Walker alias tables built
in one vectorised pass, and :class:`RowSampler` (alias tables for short rows, binary search on the
cumulative sums for long ones)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metagrad.validation import check_choice

__all__ = ["ALIAS_MAX_CATEGORIES", "RowSampler", "alias_table", "sample_alias", "sample_categorical"]


def sample_categorical(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: index of the first entry of ``cdf[..., k]`` above ``u[...]``.

    Args:
        cdf: ``[..., K]`` cumulative probabilities (non-decreasing, last entry ~1).
        u: ``[...]`` uniforms in ``[0, 1)``.
    Returns:
        long ``[...]`` in ``[0, K)`` (clamped against round-off in the last cdf entry).
    """
    k = cdf.shape[-1]
    return (u.unsqueeze(-1) >= cdf).sum(-1).clamp_(max=k - 1)


def _shift_right(x: torch.Tensor, fill: float | int) -> torch.Tensor:
    """``x[..., :-1]`` moved one place right along the last axis, ``fill`` in front."""
    return torch.cat([torch.full_like(x[..., :1], fill), x[..., :-1]], dim=-1)


def _shift_left(x: torch.Tensor, fill: float | int) -> torch.Tensor:
    """``x[..., 1:]`` moved one place left along the last axis, ``fill`` at the end."""
    return torch.cat([x[..., 1:], torch.full_like(x[..., :1], fill)], dim=-1)


def alias_table(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Walker alias tables for a batch of categorical distributions, built in one vectorised pass.

    With scaled probabilities ``q_i = K p_i``, items with ``q < 1`` are *light* (bucket ``i``
    keeps ``q_i`` and needs ``1 - q_i`` from an alias) and the others *heavy* (``q_j - 1`` to
    give away). Lay the lights' deficits end to end on a line (light ``i`` covers
    ``[D_{i-1}, D_i)``, ``D`` their running sum in index order) and the heavies' excesses likewise
    (heavy ``j`` covers ``[E_{j-1}, E_j)``). Light ``i`` takes its whole deficit from the heavy
    whose excess covers ``D_{i-1}``; a heavy whose last light runs past ``E_j`` pays the rest
    ``D_i - E_j < 1`` out of its own bucket, which the next heavy fills (the sequential sweep of
    Vose's method, with the pairing read off prefix sums: two ``searchsorted`` merges and no loop
    over K). Every bucket then holds at most two items, so a draw costs O(1)
    (:func:`sample_alias`, :class:`RowSampler`); building costs O(K log K) per row.

    Args:
        probs: ``[..., K]`` probabilities (rows sum to 1).
    Returns:
        ``(threshold [..., K], alias long [..., K])``: bucket ``j`` returns ``j`` with probability
        ``threshold_j``, else ``alias_j``.
    """
    k = probs.shape[-1]
    q = (probs * k).reshape(-1, k)
    index = torch.arange(k, device=q.device).expand_as(q)
    heavy = q >= 1.0
    heavy.scatter_(1, q.argmax(1, keepdim=True), True)  # round-off can leave a row without a heavy
    end = (1.0 - q).masked_fill_(heavy, 0.0).cumsum(1)  # D: end of each light's deficit (flat at heavies)
    start = _shift_right(end, 0.0)  # D_{i-1}: the same floats as the previous end
    filled = (q - 1.0).clamp_min_(0.0).masked_fill_(~heavy, 0.0).cumsum(1)  # E: end of each heavy's excess
    last_heavy = index.masked_fill(~heavy, -1).amax(1, keepdim=True)
    donor = torch.minimum(torch.searchsorted(filled, start, right=True), last_heavy)
    cut = torch.searchsorted(end, filled, right=True).clamp_(max=k - 1)  # first light ending past E_j
    cut_end = end.gather(1, cut)
    straddles = (start.gather(1, cut) < filled) & (cut_end > filled)
    overdraft = (cut_end - filled).masked_fill_(~straddles, 0.0)
    next_heavy = _shift_left(index.masked_fill(~heavy, k).flip(1).cummin(1).values.flip(1), k)
    threshold = torch.where(heavy, 1.0 - overdraft, q).clamp_(0.0, 1.0)
    alias = torch.where(heavy, torch.where(next_heavy < k, next_heavy, index), donor)
    alias = torch.where(threshold >= 1.0, index, alias)
    return threshold.reshape(probs.shape), alias.reshape(probs.shape)


def sample_alias(
    threshold: torch.Tensor, alias: torch.Tensor, row: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """Draw from rows of alias tables with one uniform per draw.

    Args:
        threshold, alias: ``[N, K]`` tables from :func:`alias_table`.
        row: long ``[...]`` row index per draw.
        u: ``[...]`` uniforms in ``[0, 1)``.
    Returns:
        long ``[...]`` category per draw: ``j = floor(K u)`` is kept when the fractional part
        of ``K u`` is below ``threshold[row, j]``, else ``alias[row, j]`` is returned.
    """
    return RowSampler.from_alias(threshold, alias).sample(row, u)


# Rows of up to this many categories are sampled with alias tables (O(1) draws, O(K log K) build
# per row); longer rows by binary search on their cumulative sums (O(log K) draws, O(K) build):
# large state spaces are dominated by preparing the tables, small ones by drawing.
ALIAS_MAX_CATEGORIES = 64


@dataclass(frozen=True, eq=False)
class RowSampler:
    """Exact draws from the rows of a table of categorical distributions ``probs [N, K]``.

    Two samplers of the same distribution, chosen by ``K`` (:data:`ALIAS_MAX_CATEGORIES`):

    * ``"alias"``: Walker alias tables (:func:`alias_table`); a draw is ``j = floor(K u)`` and one
      comparison of the fractional part of ``K u`` with ``threshold[row, j]``;
    * ``"search"``: binary search for the first entry of the row's normalised cumulative sum above
      ``u`` (``1 + floor(log2 K)`` gathers per draw, the first step uneven so that every probe
      stays inside the row); building it is one cumulative sum.

    Tables are stored flat (``[N * K]``) so every draw gathers with ``index_select``. Build with
    :meth:`build`; draw with :meth:`sample`, or in a loop with :meth:`prepare` once for all the
    uniforms and :meth:`draw` per step (what the batched engines do).
    """

    kind: str
    num_categories: int
    table: torch.Tensor  # alias thresholds, or the cumulative distribution (flat [N * K])
    alias: torch.Tensor | None = None  # long [N * K] (alias kind)

    @classmethod
    def build(
        cls, probs: torch.Tensor, dtype: torch.dtype | None = None, kind: str | None = None
    ) -> RowSampler:
        """Tables for the rows of ``probs [N, K]``, stored in ``dtype`` (default ``probs.dtype``;
        build from float64 probabilities for float64-exact tables)."""
        k = int(probs.shape[-1])
        kind = kind or ("alias" if k <= ALIAS_MAX_CATEGORIES else "search")
        dtype = dtype or probs.dtype
        if kind == "alias":
            return cls.from_alias(*alias_table(probs.reshape(-1, k)), dtype=dtype)
        check_choice("kind", kind, ("alias", "search"))
        cdf = probs.reshape(-1, k).cumsum(1)
        cdf = cdf.div_(cdf[:, -1:].clone()).clamp_(max=1.0)  # trailing zero-probability entries read 1
        return cls("search", k, cdf.to(dtype).reshape(-1))

    @classmethod
    def from_alias(
        cls, threshold: torch.Tensor, alias: torch.Tensor, dtype: torch.dtype | None = None
    ) -> RowSampler:
        """Wrap alias tables ``[N, K]`` from :func:`alias_table`."""
        k = int(threshold.shape[-1])
        return cls("alias", k, threshold.to(dtype or threshold.dtype).reshape(-1), alias.reshape(-1))

    def prepare(
        self, u: torch.Tensor, base: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The per-draw constants of uniforms ``u [..., D]`` for rows ``base + ...`` (``base``, long
        ``[D]``, default 0): computed once for a whole rollout; ``D`` draws per step."""
        k = self.num_categories
        if self.kind == "alias":
            x = u * k
            j = x.floor().clamp_(max=k - 1)
            frac = x.sub_(j)
            j = j.long()
            return j, j if base is None else j + base * k, frac
        offset = torch.full_like(u, -1, dtype=torch.long) if base is None else (base * k - 1).expand_as(u)
        return u, offset, u

    def draw(
        self,
        prepared: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        terms: tuple[tuple[torch.Tensor, int], ...],
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One step's draws (long ``[D]``) for rows ``base + sum(x * stride for x, stride in
        terms)`` (``prepared``: one step of :meth:`prepare`'s constants), written to ``out``."""
        k = self.num_categories
        first, flat, last = prepared
        for x, stride in terms:
            flat = torch.add(flat, x, alpha=stride * k)
        if self.kind == "alias":
            keep = last < self.table.index_select(0, flat)
            other = self.alias.index_select(0, flat)  # type: ignore[union-attr]
            return (
                torch.where(keep, first, other, out=out)
                if out is not None
                else torch.where(keep, first, other)
            )
        # "search": ``position`` walks to the last entry <= u of the row (``flat`` is the entry
        # before the row's first; the last entry, 1, exceeds every u), the draw is the entry after
        # it. With p the largest power of two <= K, the first probe (entry p - 1) leaves p - 1
        # or K - p entries, then steps p / 2, ..., 1: every probe stays in the row.
        if k == 1:
            return torch.zeros_like(flat) if out is None else out.zero_()
        step = 1 << (k.bit_length() - 1)
        below = self.table.index_select(0, flat + step) <= first
        position = torch.where(below, flat + (k - step), flat)
        while step > 1:
            step //= 2
            candidate = position + step
            below = self.table.index_select(0, candidate) <= first
            position = torch.where(below, candidate, position)
        return torch.sub(position, flat, out=out) if out is not None else position - flat

    def sample(self, row: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One draw per entry of ``row`` (long ``[...]``) with uniforms ``u`` (same shape)."""
        return self.draw(self.prepare(u.reshape(-1)), ((row.reshape(-1), 1),)).view(row.shape)
