"""The paper's claims, each judged on result rows with a criterion fixed in code.

:class:`Claim` is what the report prints: the statement, the criterion, the measured evidence and
the verdict. The claim functions are grouped by suite (:func:`tabular_claims`,
:func:`ipd_claims`); each suite object points at its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from metagrad.app.rows import ResultRow

__all__ = ["Claim", "fit_loglog_slope", "ipd_claims", "select", "tabular_claims"]


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, the evidence measured for it and the verdict."""

    name: str
    statement: str
    criterion: str
    evidence: str
    passed: bool | None  # None: the rows needed were not in this run

    @property
    def verdict(self) -> str:
        return "n/a" if self.passed is None else ("PASS" if self.passed else "FAIL")


def fit_loglog_slope(x: Iterable[float], y: Iterable[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (points with y <= 0 are dropped)."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(x, y, strict=True) if a > 0 and b > 0]
    if len(pts) < 2:
        return float("nan")
    xs, ys = np.array(pts).T
    return float(np.polyfit(xs, ys, 1)[0])


def select(rows: list[ResultRow], **where: Any) -> list[ResultRow]:
    """The rows whose fields (identity or setting) equal every value of ``where``."""
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def _spearman(x: list[float], y: list[float]) -> float:
    if len(x) < 3:
        return float("nan")
    rx = np.argsort(np.argsort(x)).astype(float)
    ry = np.argsort(np.argsort(y)).astype(float)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _fmt_ci(r: ResultRow) -> str:
    m = r.metrics
    return f"{m.bias_debiased:.3g} [{m.bias_ci_low:.3g}, {m.bias_ci_high:.3g}]"


def _claim_slope_n(rows: list[ResultRow]) -> Claim:
    sweep = select(rows, bench="tabular", experiment="sweep_n")
    statement = (
        "Compositional bias shrinks with the inner-loop sample size |tau| (bound O(|tau|^-1/2), "
        "Liu et al. 2022, Theorem 1)."
    )
    criterion = "log-log slope of the debiased bias vs n in [-1.1, -0.25] for every inner estimator"
    if not sweep:
        return Claim("compositional_bias_vs_n", statement, criterion, "no sweep_n rows", None)
    slopes = {}
    for est in dict.fromkeys(r.estimator for r in sweep):
        rs = sorted(select(sweep, estimator=est), key=lambda r: r.get("n_inner"))
        slopes[est] = fit_loglog_slope([r.get("n_inner") for r in rs], [r.metrics.bias_debiased for r in rs])
    ok = all(-1.1 <= s <= -0.25 for s in slopes.values())
    evidence = ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()) + " (theory: -0.5 upper bound)"
    return Claim("compositional_bias_vs_n", statement, criterion, evidence, ok)


def _claim_growth(rows: list[ResultRow], experiment: str, xkey: str, name: str, what: str) -> Claim:
    sweep = select(rows, bench="tabular", experiment=experiment)
    statement = f"Compositional bias grows with {what} (bound O(K alpha^K sigma |tau|^-1/2))."
    criterion = (
        f"for every inner estimator the Spearman rank correlation of the debiased bias with {xkey} is "
        f">= 0.6, and for at least one the increase is resolved (largest {xkey}'s CI above the smallest's)"
    )
    if not sweep:
        return Claim(name, statement, criterion, f"no {experiment} rows", None)
    parts, trend, resolved = [], True, False
    for est in dict.fromkeys(r.estimator for r in sweep):
        rs = sorted(select(sweep, estimator=est), key=lambda r: r.get(xkey))
        rho = _spearman([r.get(xkey) for r in rs], [r.metrics.bias_debiased for r in rs])
        separated = rs[-1].metrics.bias_ci_low > rs[0].metrics.bias_ci_high
        trend = trend and rho >= 0.6
        resolved = resolved or separated
        parts.append(
            f"{est}: rho {rho:.2f}, {xkey}={rs[0].get(xkey)} {_fmt_ci(rs[0])} -> "
            f"{xkey}={rs[-1].get(xkey)} {_fmt_ci(rs[-1])}{' (resolved)' if separated else ''}"
        )
    return Claim(name, statement, criterion, "; ".join(parts), trend and resolved)


def _claim_hessian_injection(rows: list[ResultRow]) -> Claim:
    sweep = select(rows, bench="tabular", experiment="hessian_bias")
    statement = "Multi-step Hessian estimation bias: an injected Hessian bias c raises the MSE like c^2."
    criterion = "log-log slope of the MSE vs c in [1.5, 2.5] for every K"
    if not sweep:
        return Claim("hessian_bias_injection", statement, criterion, "no hessian_bias rows", None)
    slopes = {}
    for k in sorted({r.get("inner_steps") for r in sweep}):
        rs = sorted(select(sweep, inner_steps=k), key=lambda r: r.get("hessian_bias_c"))
        slopes[k] = fit_loglog_slope([r.get("hessian_bias_c") for r in rs], [r.metrics.mse for r in rs])
    ok = all(1.5 <= s <= 2.5 for s in slopes.values())
    evidence = ", ".join(f"K={k}: {s:.2f}" for k, s in slopes.items())
    return Claim("hessian_bias_injection", statement, criterion, evidence, ok)


def _claim_hessian_ranking(rows: list[ResultRow]) -> Claim:
    dec = select(rows, bench="tabular", experiment="decomposition", combination="ele")
    statement = (
        "Hessian estimation bias by estimator (only the Hessian stage sampled, 'ele'): the plain "
        "policy-gradient surrogate (pg) is the most biased, LVC less, DiCE and Loaded DiCE unbiased."
    )
    criterion = "pg's bias CI above LVC's; LVC's CI above 0; the CIs of dice and loaded_dice reach 0"
    by = {r.estimator: r.metrics for r in dec}
    needed = {"pg", "lvc", "dice", "loaded_dice"}
    if not needed <= set(by):
        return Claim(
            "hessian_bias_ranking", statement, criterion, f"missing {sorted(needed - set(by))}", None
        )
    ok = (
        by["pg"].bias_ci_low > by["lvc"].bias_ci_high
        and by["lvc"].bias_ci_low > 0
        and by["dice"].bias_ci_low == 0
        and by["loaded_dice"].bias_ci_low == 0
    )
    named = {r.estimator: r for r in dec}
    evidence = "; ".join(f"{e} {_fmt_ci(named[e])}" for e in ("pg", "lvc", "loaded_dice", "dice"))
    return Claim("hessian_bias_ranking", statement, criterion, evidence, ok)


def _claim_off_policy_lola(rows: list[ResultRow]) -> Claim:
    cells = select(rows, bench="ipd", experiment="off_policy", combination="lee")
    statement = (
        "Off-policy learning (replaying earlier trajectories with importance weights) reduces the "
        "compositional bias of LOLA-DiCE's lookahead."
    )
    criterion = (
        "the on-policy lookahead's bias is resolved (CI excludes 0) for at least one pair kind; where it "
        "is, the off-policy lookahead with the most replay has its whole CI below the on-policy CI, "
        "and elsewhere a debiased bias no larger than the on-policy one"
    )
    if not cells:
        return Claim("off_policy_lola", statement, criterion, "no ipd off_policy rows", None)
    parts, ok, resolved_any = [], True, False
    for kind in dict.fromkeys(r.get("pair_kind") for r in cells):
        on = select(cells, pair_kind=kind, estimator="dice_baseline")
        off = sorted(
            select(cells, pair_kind=kind, estimator="off_policy_dice"), key=lambda r: r.get("replay")
        )
        if not on or not off:
            return Claim("off_policy_lola", statement, criterion, f"{kind}: rows missing", None)
        on_r, off_r = on[0], off[-1]
        resolved = on_r.metrics.bias_ci_low > 0
        resolved_any = resolved_any or resolved
        if resolved:
            ok = ok and off_r.metrics.bias_ci_high < on_r.metrics.bias_ci_low
        else:
            ok = ok and off_r.metrics.bias_debiased <= on_r.metrics.bias_debiased
        parts.append(
            f"{kind} pairs, n = {on_r.get('n_inner')}, lookahead lr {on_r.get('lookahead_lr')}: on-policy "
            f"{_fmt_ci(on_r)} (MSE {on_r.metrics.mse:.3g}) vs + {off_r.get('replay')} replayed "
            f"{_fmt_ci(off_r)} (MSE {off_r.metrics.mse:.3g})"
        )
    return Claim("off_policy_lola", statement, criterion, "; ".join(parts), ok and resolved_any)


def tabular_claims(rows: list[ResultRow]) -> list[Claim]:
    """The claims of Liu et al. 2022 that the tabular rows speak to."""
    return [
        _claim_slope_n(rows),
        _claim_growth(rows, "sweep_k", "inner_steps", "compositional_bias_vs_k", "the inner steps K"),
        _claim_growth(rows, "sweep_alpha", "inner_lr", "compositional_bias_vs_alpha", "the step size alpha"),
        _claim_hessian_injection(rows),
        _claim_hessian_ranking(rows),
    ]


def ipd_claims(rows: list[ResultRow]) -> list[Claim]:
    """The claims of Liu et al. 2022 that the IPD / LOLA rows speak to."""
    return [_claim_off_policy_lola(rows)]
