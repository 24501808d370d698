"""The leaderboard and the reproduction report, built from result rows.

* :func:`write_leaderboard`: for every setting scored by more than one estimator, the estimators
  ranked by debiased bias (with its bootstrap CI) and by MSE (with its standard error), with the
  sample budget of one estimate.
* :func:`evaluate_claims` / :func:`write_report`: each claim of Liu et al. (NeurIPS 2022, arXiv
  2112.15400) that the default suite measures, with the fitted numbers and PASS / FAIL, and the
  plots embedded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metagrad.plotting import fit_loglog_slope

__all__ = ["Claim", "evaluate_claims", "settings", "write_leaderboard", "write_report"]

# Row fields that define a setting (everything that is not the estimator itself).
_SETTING_FIELDS = (
    "bench",
    "preset",
    "experiment",
    "pair_kind",
    "combination",
    "n_inner",
    "n_hessian",
    "n_outer",
    "inner_steps",
    "inner_lr",
    "lookahead_steps",
    "lookahead_lr",
    "hessian_bias_c",
    "objective",
    "horizon",
)
_MIN_SE = 1e-300


def settings(rows: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows grouped by setting; only settings scored by two or more estimators."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple((f, row.get(f)) for f in _SETTING_FIELDS if row.get(f) is not None)
        groups.setdefault(key, []).append(row)
    return {k: v for k, v in groups.items() if len({r["estimator"] for r in v}) > 1}


def _label(row: dict[str, Any]) -> str:
    if row.get("experiment") == "off_policy":
        return f"{row['estimator']} (replay {row.get('replay', 0)})"
    return str(row["estimator"])


def _setting_title(key: tuple) -> str:
    d = dict(key)
    parts = [f"{d.pop('bench')}/{d.pop('preset')}", d.pop("experiment")]
    parts += [f"{k}={v}" for k, v in d.items()]
    return " · ".join(parts)


def write_leaderboard(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """``leaderboard.md``: per setting, estimators ranked by debiased bias and by MSE."""
    path = Path(path)
    lines = [
        "# Leaderboard: which meta-gradient estimator to trust where",
        "",
        "Every number is a distance to the exact meta-gradient (float64 closed form, same horizon and",
        "discount as the samples). Bias: the debiased bias (bias with the sampling noise of the mean",
        "removed) and its 95% bootstrap CI; MSE: mean squared error ± its standard error. Budget: the",
        "episodes one estimate samples (per task or policy pair). Rank 1 is best; ties in CI are not",
        "resolved, so read the intervals.",
        "",
    ]
    commits = sorted({r.get("git_commit", "?") for r in rows})
    lines += [f"Rows: {len(rows)}; commit(s): {', '.join(f'`{c}`' for c in commits)}.", ""]
    for key, group in settings(rows).items():
        lines += [f"## {_setting_title(key)}", ""]
        lines += [
            "| rank | by bias | debiased bias [95% CI] | by MSE | MSE ± s.e. | corr ± s.e. | budget |",
            "|---|---|---|---|---|---|---|",
        ]
        by_bias = sorted(group, key=lambda r: (r["bias_debiased"], r["bias_ci_high"]))
        by_mse = sorted(group, key=lambda r: r["mse"])
        for rank, (rb, rm) in enumerate(zip(by_bias, by_mse, strict=True), start=1):
            lines.append(
                f"| {rank} | {_label(rb)} | {rb['bias_debiased']:.4g} [{rb['bias_ci_low']:.3g}, "
                f"{rb['bias_ci_high']:.3g}] | {_label(rm)} | {rm['mse']:.4g} ± {rm['mse_se']:.2g} "
                f"| {rm['corr']:.3f} ± {rm['corr_se']:.3f} | {rm.get('episodes_per_estimate', '?')} |"
            )
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


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


def _select(rows: list[dict], **where: Any) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def _spearman(x: list[float], y: list[float]) -> float:
    if len(x) < 3:
        return float("nan")
    rx = np.argsort(np.argsort(x)).astype(float)
    ry = np.argsort(np.argsort(y)).astype(float)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _fmt_ci(r: dict) -> str:
    return f"{r['bias_debiased']:.3g} [{r['bias_ci_low']:.3g}, {r['bias_ci_high']:.3g}]"


def _claim_slope_n(rows: list[dict]) -> Claim:
    sweep = _select(rows, bench="tabular", experiment="sweep_n")
    statement = (
        "Compositional bias shrinks with the inner-loop sample size |tau| (bound O(|tau|^-1/2), "
        "Liu et al. 2022, Theorem 1)."
    )
    criterion = "log-log slope of the debiased bias vs n in [-1.1, -0.25] for every inner estimator"
    if not sweep:
        return Claim("compositional_bias_vs_n", statement, criterion, "no sweep_n rows", None)
    slopes = {}
    for est in dict.fromkeys(r["estimator"] for r in sweep):
        rs = sorted(_select(sweep, estimator=est), key=lambda r: r["n_inner"])
        slopes[est] = fit_loglog_slope([r["n_inner"] for r in rs], [r["bias_debiased"] for r in rs])
    ok = all(-1.1 <= s <= -0.25 for s in slopes.values())
    evidence = ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()) + " (theory: -0.5 upper bound)"
    return Claim("compositional_bias_vs_n", statement, criterion, evidence, ok)


def _claim_growth(rows: list[dict], experiment: str, xkey: str, name: str, what: str) -> Claim:
    sweep = _select(rows, bench="tabular", experiment=experiment)
    statement = f"Compositional bias grows with {what} (bound O(K alpha^K sigma |tau|^-1/2))."
    criterion = (
        f"for every inner estimator the Spearman rank correlation of the debiased bias with {xkey} is "
        f">= 0.6, and for at least one the increase is resolved (largest {xkey}'s CI above the smallest's)"
    )
    if not sweep:
        return Claim(name, statement, criterion, f"no {experiment} rows", None)
    parts, trend, resolved = [], True, False
    for est in dict.fromkeys(r["estimator"] for r in sweep):
        rs = sorted(_select(sweep, estimator=est), key=lambda r: r[xkey])
        rho = _spearman([r[xkey] for r in rs], [r["bias_debiased"] for r in rs])
        separated = rs[-1]["bias_ci_low"] > rs[0]["bias_ci_high"]
        trend = trend and rho >= 0.6
        resolved = resolved or separated
        parts.append(
            f"{est}: rho {rho:.2f}, {xkey}={rs[0][xkey]} {_fmt_ci(rs[0])} -> "
            f"{xkey}={rs[-1][xkey]} {_fmt_ci(rs[-1])}{' (resolved)' if separated else ''}"
        )
    return Claim(name, statement, criterion, "; ".join(parts), trend and resolved)


def _claim_hessian_injection(rows: list[dict]) -> Claim:
    sweep = _select(rows, bench="tabular", experiment="hessian_bias")
    statement = "Multi-step Hessian estimation bias: an injected Hessian bias c raises the MSE like c^2."
    criterion = "log-log slope of the MSE vs c in [1.5, 2.5] for every K"
    if not sweep:
        return Claim("hessian_bias_injection", statement, criterion, "no hessian_bias rows", None)
    slopes = {}
    for k in sorted({r["inner_steps"] for r in sweep}):
        rs = sorted(_select(sweep, inner_steps=k), key=lambda r: r["hessian_bias_c"])
        slopes[k] = fit_loglog_slope([r["hessian_bias_c"] for r in rs], [r["mse"] for r in rs])
    ok = all(1.5 <= s <= 2.5 for s in slopes.values())
    evidence = ", ".join(f"K={k}: {s:.2f}" for k, s in slopes.items())
    return Claim("hessian_bias_injection", statement, criterion, evidence, ok)


def _claim_hessian_ranking(rows: list[dict]) -> Claim:
    dec = _select(rows, bench="tabular", experiment="decomposition", combination="ele")
    statement = (
        "Hessian estimation bias by estimator (only the Hessian stage sampled, 'ele'): the plain "
        "policy-gradient surrogate (pg) is the most biased, LVC less, DiCE and Loaded DiCE unbiased."
    )
    criterion = "pg's bias CI above LVC's; LVC's CI above 0; the CIs of dice and loaded_dice reach 0"
    by = {r["estimator"]: r for r in dec}
    needed = {"pg", "lvc", "dice", "loaded_dice"}
    if not needed <= set(by):
        return Claim(
            "hessian_bias_ranking", statement, criterion, f"missing {sorted(needed - set(by))}", None
        )
    ok = (
        by["pg"]["bias_ci_low"] > by["lvc"]["bias_ci_high"]
        and by["lvc"]["bias_ci_low"] > 0
        and by["dice"]["bias_ci_low"] == 0
        and by["loaded_dice"]["bias_ci_low"] == 0
    )
    evidence = "; ".join(f"{e} {_fmt_ci(by[e])}" for e in ("pg", "lvc", "loaded_dice", "dice"))
    return Claim("hessian_bias_ranking", statement, criterion, evidence, ok)


def _claim_off_policy_lola(rows: list[dict]) -> Claim:
    cells = _select(rows, bench="ipd", experiment="off_policy", combination="lee")
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
    for kind in dict.fromkeys(r["pair_kind"] for r in cells):
        on = _select(cells, pair_kind=kind, estimator="dice_baseline")
        off = sorted(_select(cells, pair_kind=kind, estimator="off_policy_dice"), key=lambda r: r["replay"])
        if not on or not off:
            return Claim("off_policy_lola", statement, criterion, f"{kind}: rows missing", None)
        on_r, off_r = on[0], off[-1]
        resolved = on_r["bias_ci_low"] > 0
        resolved_any = resolved_any or resolved
        if resolved:
            ok = ok and off_r["bias_ci_high"] < on_r["bias_ci_low"]
        else:
            ok = ok and off_r["bias_debiased"] <= on_r["bias_debiased"]
        parts.append(
            f"{kind} pairs, n = {on_r['n_inner']}, lookahead lr {on_r['lookahead_lr']}: on-policy "
            f"{_fmt_ci(on_r)} (MSE {on_r['mse']:.3g}) vs + {off_r['replay']} replayed {_fmt_ci(off_r)} "
            f"(MSE {off_r['mse']:.3g})"
        )
    return Claim("off_policy_lola", statement, criterion, "; ".join(parts), ok and resolved_any)


def evaluate_claims(rows: list[dict[str, Any]]) -> list[Claim]:
    """Each claim of Liu et al. 2022 that the rows can speak to, with its verdict."""
    return [
        _claim_slope_n(rows),
        _claim_growth(rows, "sweep_k", "inner_steps", "compositional_bias_vs_k", "the inner steps K"),
        _claim_growth(rows, "sweep_alpha", "inner_lr", "compositional_bias_vs_alpha", "the step size alpha"),
        _claim_hessian_injection(rows),
        _claim_hessian_ranking(rows),
        _claim_off_policy_lola(rows),
    ]


def write_report(
    rows: list[dict[str, Any]],
    path: str | Path,
    *,
    plots: list[Path] | None = None,
    summaries: list[Path] | None = None,
) -> Path:
    """``report.md``: each claim with its measured evidence and verdict, then the plots."""
    path = Path(path)
    claims = evaluate_claims(rows)
    commits = sorted({r.get("git_commit", "?") for r in rows})
    wall = sum(r.get("wall_s", 0.0) for r in rows)
    lines = [
        "# Reproduction report: Liu et al., NeurIPS 2022 (arXiv 2112.15400)",
        "",
        f"{len(rows)} scored cells, {wall:.0f} s of cell compute, commit(s) "
        f"{', '.join(f'`{c}`' for c in commits)}. Every figure is measured against the exact float64 "
        "meta-gradient on the samples' own horizon and discount; CIs are 95% bootstrap intervals.",
        "",
        "| claim | verdict |",
        "|---|---|",
    ]
    lines += [f"| {c.name} | **{c.verdict}** |" for c in claims]
    lines.append("")
    for c in claims:
        lines += [
            f"## {c.name}: {c.verdict}",
            "",
            f"*Claim.* {c.statement}",
            "",
            f"*Criterion.* {c.criterion}.",
            "",
            f"*Measured.* {c.evidence}",
            "",
        ]
    if summaries:
        lines += ["## Tables", ""]
        lines += [f"- [{p.name}]({_relative(p, path.parent)})" for p in summaries]
        lines.append("")
    if plots:
        lines += ["## Plots", ""]
        for p in plots:
            lines += [f"![{p.stem}]({_relative(p, path.parent)})", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _relative(p: Path, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(p)
