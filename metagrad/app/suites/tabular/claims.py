"""The claims of Liu et al., NeurIPS 2022 (arXiv 2112.15400) that the tabular rows speak to,
as pre-registered tests (the framework: :mod:`metagrad.app.judging.claims`; the statistics:
:mod:`metagrad.app.judging.statistics`)."""

from __future__ import annotations

import math

import numpy as np

from metagrad.app.judging.claims import (
    FAIL,
    INCONCLUSIVE,
    NOT_APPLICABLE,
    PASS,
    Claim,
    by_estimator,
    claim_seed,
    combine,
    curve,
    format_value,
    select,
    tasks_factor,
)
from metagrad.app.judging.statistics import (
    CONFIDENCE,
    decline_at_the_end,
    exponent_interval,
    mean_interval,
    paired_mean_difference,
    point_weights,
    power_law_exponent,
    task_bootstrap,
    task_spearman_interval,
)
from metagrad.app.running.rows import ResultRow
from metagrad.estimators import ESTIMATORS

__all__ = ["tabular_claims"]


def _claim_slope_n(rows: list[ResultRow]) -> Claim:
    name = "compositional_bias_vs_n"
    statement = (
        "Compositional bias shrinks with the inner-loop sample size n at least as fast as the bound "
        "O(n^-1/2) on the bias (Liu et al. 2022, Theorem 1), i.e. O(1/n) for the squared bias."
    )
    criterion = (
        "per estimator (official vs-n family, 'lee'), the exponent s of the debiased squared bias "
        "~ A n^s (weighted least squares, 95% task-bootstrap CI): supports if the CI lies below 0 and "
        "reaches -1 or lower; contradicts if the CI lies above -1 (slower than the bound, or growth); "
        "PASS if every estimator supports, FAIL if any contradicts, else INCONCLUSIVE"
    )
    source = (
        "the paper's bound ||bias|| = O(n^-1/2) gives squared-bias exponent <= -1; the delta method "
        "gives -2 asymptotically for a smooth inner map (the bias of a smooth function of a sample "
        "mean is O(1/n)), so any resolved "
        "exponent <= -1 agrees with the theory and a resolved exponent above -1 contradicts the bound"
    )
    sweep = select(rows, bench="tabular", experiment="sweep_n")
    if not sweep:
        return Claim(name, statement, criterion, source, "no sweep_n rows", NOT_APPLICABLE)
    parts, statuses, figures = [], [], {}
    for est, rs in by_estimator(sweep).items():
        x, m = curve(rs, "n_inner")
        ci = exponent_interval(x, m, seed=claim_seed(name, est))
        figures[f"{est} exponent"] = ci.estimate
        if ci.high < 0 and ci.low <= -1:
            status = PASS
        elif ci.low > -1:
            status = FAIL
        else:
            status = INCONCLUSIVE
        statuses.append(status)
        parts.append(
            f"{est}: s = {ci.format()} over n = {int(x[0])}..{int(x[-1])} "
            f"(squared bias {format_value(m[:, 0].mean())} -> {format_value(m[:, -1].mean())}; {status})"
        )
    verdict = combine(statuses)
    evidence = "; ".join(parts)
    if verdict == INCONCLUSIVE:
        evidence += ". Unresolved exponents need more tasks (the CI shrinks like 1/sqrt(tasks))"
    return Claim(name, statement, criterion, source, evidence, verdict, figures)


def _claim_growth(rows: list[ResultRow], experiment: str, xkey: str, name: str, what: str) -> Claim:
    statement = (
        f"Compositional bias grows with {what} over the official range (the bound "
        "O(K alpha^K sigma n^-1/2) grows in both)."
    )
    criterion = (
        f"per estimator ('lee', official {experiment} family), a trend test on each task's debiased "
        f"squared bias: the mean over tasks of the task's Spearman rho (tie-averaged ranks) between "
        f"{xkey} and its bias, 95% task-bootstrap CI. PASS if every estimator's CI lies above 0, FAIL "
        "if one lies below 0, else INCONCLUSIVE. Reported beside it, not judged: whether the typical "
        f"task's bias at the largest {xkey} is below that at a smaller one (one-sided Wilcoxon "
        "signed-rank over tasks, Bonferroni-adjusted), i.e. whether the growth stops inside the range"
    )
    source = (
        "the bound holds task by task and grows monotonically in K and alpha, so the claim is about "
        "each task's curve; a rank statistic per task is a trend test that a few tasks with huge "
        "biases (the heavy tail of the task distribution) cannot swing, unlike the mean over tasks"
    )
    sweep = select(rows, bench="tabular", experiment=experiment)
    if not sweep:
        return Claim(name, statement, criterion, source, f"no {experiment} rows", NOT_APPLICABLE)
    parts, statuses, figures = [], [], {}
    for est, rs in by_estimator(sweep).items():
        x, m = curve(rs, xkey)
        rho = task_spearman_interval(x, m, seed=claim_seed(name, est))
        j, p_decline = decline_at_the_end(m)
        figures[f"{est} rho"] = rho.estimate
        status = PASS if rho.low > 0 else (FAIL if rho.high < 0 else INCONCLUSIVE)
        statuses.append(status)
        medians = np.median(m, axis=0)
        text = ", ".join(f"{x[i]:g}: {format_value(float(medians[i]))}" for i in range(len(x)))
        peak = x[int(np.argmax(medians))]
        decline = (
            f"the bias at {xkey}={x[-1]:g} is below {xkey}={x[j]:g} for the typical task "
            f"(p = {p_decline:.2g})"
            if p_decline < 1 - CONFIDENCE
            else f"no resolved decline at the end (p = {p_decline:.2g})"
        )
        parts.append(
            f"{est}: rho {rho.format('.2f')} ({status}); median squared bias {text}, peak at "
            f"{xkey}={peak:g}; {decline}"
        )
    return Claim(name, statement, criterion, source, "; ".join(parts), combine(statuses), figures)


def _claim_hessian_injection(rows: list[ResultRow]) -> Claim:
    name = "hessian_bias_injection"
    statement = (
        "Multi-step Hessian estimation bias: an injected Hessian bias c compounds over the K Jacobian "
        "factors (the paper's O((K-1) Delta_H^(K-1)) term), so the squared meta-gradient bias is a "
        "polynomial of degree 2K in c whose log-log exponent grows with K."
    )
    criterion = (
        "(a) at every (K, alpha, c) of the official family (K = 2) and of the K-extension, the "
        "measured debiased squared bias matches the exact prediction: the Student-t CI of the mean "
        "per-task difference (Bonferroni-corrected over all points) contains 0; (b) the fitted "
        "exponent in c grows with K: every difference between consecutive K (joint task bootstrap, "
        "Bonferroni-corrected) lies above 0. PASS if (a) and (b) hold, FAIL if (a) fails or a "
        "difference in (b) is resolved below 0, else INCONCLUSIVE"
    )
    source = (
        "with every other stage exact the expected meta-gradient is prod_k (I + alpha (H_k + 2 c' I)) "
        "grad J(theta_K), c' = c / (|S||A|) (README, 'Decomposed meta-gradients'; "
        "metagrad.decomposed.expected_injected_meta_gradient), so the prediction has no free parameter"
    )
    cells = select(rows, bench="tabular", experiment="hessian_bias") + select(
        rows, bench="tabular", experiment="hessian_bias_k"
    )
    if not cells:
        return Claim(name, statement, criterion, source, "no hessian_bias rows", NOT_APPLICABLE)
    groups: dict[tuple[str, int, float], list[ResultRow]] = {}
    for r in cells:
        groups.setdefault((r.experiment, r.get("inner_steps"), r.get("inner_lr")), []).append(r)
    total = sum(len(v) for v in groups.values())
    level = 1 - (1 - CONFIDENCE) / total
    mismatches, parts, figures = [], [], {}
    for (experiment, k, alpha), rs in sorted(groups.items()):
        x, measured = curve(rs, "hessian_bias_c")
        _, predicted = curve(rs, "hessian_bias_c", "predicted_bias_sq")
        worst = 0.0
        for j in range(len(x)):
            diff = mean_interval(measured[:, j] - predicted[:, j], level)
            rel = abs(diff.estimate) / max(predicted[:, j].mean(), 1e-300)
            worst = max(worst, rel)
            if not diff.contains(0.0):
                mismatches.append(f"K={k}, alpha={alpha:g}, c={x[j]:g}: measured - predicted {diff.format()}")
        figures[f"{experiment} K={k} a={alpha:g} max rel. dev."] = worst
    ext = {k: rs for (e, k, _), rs in groups.items() if e == "hessian_bias_k"}
    growth_status = INCONCLUSIVE
    if len(ext) >= 2:
        ks = sorted(ext)
        curves = [curve(ext[k], "hessian_bias_c") for k in ks]
        x = curves[0][0]
        joint = np.concatenate([m for _, m in curves], axis=1)
        p = len(x)
        weights = [point_weights(m) for _, m in curves]
        predicted_means = [curve(ext[k], "hessian_bias_c", "predicted_bias_sq")[1].mean(0) for k in ks]
        step_level = 1 - (1 - CONFIDENCE) / (len(ks) - 1)
        diffs = []
        for i in range(len(ks) - 1):

            def statistic(m: np.ndarray, i: int = i) -> np.ndarray:
                a = power_law_exponent(x, m[..., i * p : (i + 1) * p].mean(-2), weights[i])
                b = power_law_exponent(x, m[..., (i + 1) * p : (i + 2) * p].mean(-2), weights[i + 1])
                return b - a

            diffs.append(
                task_bootstrap(
                    joint,
                    statistic,
                    seed=claim_seed(name, "growth", i),
                    confidence=step_level,
                    vectorized=True,
                )
            )
        exponents = []
        for i, k in enumerate(ks):
            exponent_ci = exponent_interval(x, curves[i][1], seed=claim_seed(name, "exponent", k))
            s_pred = float(power_law_exponent(x, predicted_means[i], weights[i]))
            figures[f"exponent K={k}"] = exponent_ci.estimate
            figures[f"predicted exponent K={k}"] = s_pred
            exponents.append(f"K={k}: {exponent_ci.format('.2f')} (predicted {s_pred:.2f})")
        if any(d.high < 0 for d in diffs):
            growth_status = FAIL
        elif all(d.low > 0 for d in diffs):
            growth_status = PASS
        alpha_ext = next(iter(ext.values()))[0].get("inner_lr")
        parts.append(
            f"exponent of the squared bias in c at alpha = {alpha_ext:g}: "
            + ", ".join(exponents)
            + "; consecutive differences "
            + ", ".join(d.format(".2f") for d in diffs)
        )
    else:
        parts.append("exponent growth with K not tested (needs the hessian_bias_k extension, K >= 2 values)")
    match_status = FAIL if mismatches else PASS
    parts.insert(
        0,
        f"{total} points, measured vs predicted: "
        + (
            "; ".join(mismatches)
            if mismatches
            else "all match (largest relative deviation of the means "
            + f"{max(figures[k] for k in figures if 'max rel' in k):.1%})"
        ),
    )
    measured_k = [v for k, v in figures.items() if k.startswith("exponent K=")]
    predicted_k = [v for k, v in figures.items() if k.startswith("predicted exponent K=")]
    deviation = max((v for k, v in figures.items() if "max rel" in k), default=math.nan)
    summary = (
        f"exponents {'/'.join(f'{v:.2f}' for v in measured_k)} "
        f"(predicted {'/'.join(f'{v:.2f}' for v in predicted_k)}); largest deviation {deviation:.1%}"
    )
    verdict = combine([match_status, growth_status])
    return Claim(name, statement, criterion, source, "; ".join(parts), verdict, figures, summary)


def _unbiased_at_second_order(estimator: str) -> bool:
    info = ESTIMATORS.get(estimator)
    return info is not None and info.unbiased_at(2) is True


def _claim_hessian_ranking(rows: list[ResultRow]) -> Claim:
    name = "hessian_bias_ranking"
    statement = (
        "Hessian estimation bias by estimator (only the Hessian stage sampled, 'ele'): the plain "
        "policy-gradient surrogate (pg) is more biased than LVC, LVC is biased, and DiCE and Loaded "
        "DiCE are unbiased."
    )
    criterion = (
        "on the 'ele' rows of the hessian_ranking experiment (the official decomposition's setting, "
        "K = 1, alpha = 10, n >= 32, on more MDPs; the decomposition's own 'ele' rows when it is absent), "
        "each estimator's debiased squared bias pooled over n with weights proportional to n, 95% "
        "task-bootstrap CIs: (i) the "
        "paired difference pg - lvc lies above 0; (ii) lvc's lies above 0; (iii) 'X is unbiased' for "
        "dice and loaded_dice passes when X's CI upper end is below the smallest bias resolved for a "
        "biased estimator (pg, lvc) in the same experiment and fails when X's CI lies above 0. PASS "
        "if all hold, FAIL if a part is contradicted (pg - lvc or lvc resolved below 0, or X resolved "
        "above 0), else INCONCLUSIVE"
    )
    source = (
        "at K = 1 the 'ele' estimate is linear in the Hessian estimate, so its bias is the Hessian "
        "estimator's and the same at every n: pooling over n is unbiased, weights ~ n follow the "
        "1/n noise; unbiasedness of DiCE / Loaded DiCE at every order and the first-order-only "
        "unbiasedness of pg / LVC are the estimators' theory (Farquhar et al. 2019; Rothfuss et al. "
        "2019; the unbiased orders each estimator registers, README 'Estimators')"
    )
    dec = select(
        rows, bench="tabular", experiment="hessian_ranking", combination="ele", inner_steps=1
    ) or select(rows, bench="tabular", experiment="decomposition", combination="ele", inner_steps=1)
    by = by_estimator(dec)
    needed = {"pg", "lvc", "dice", "loaded_dice"}
    if not needed <= set(by):
        return Claim(
            name, statement, criterion, source, f"missing {sorted(needed - set(by))}", NOT_APPLICABLE
        )
    order = ["pg", "lvc", "loaded_dice", "dice"]
    pooled = []
    for est in order:
        x, m = curve(by[est], "n_hessian")
        pooled.append(m @ (x / x.sum()))
    data = np.stack(pooled, axis=1)  # [N, 4] on the same tasks
    seed = claim_seed(name)
    cis = {
        est: task_bootstrap(data[:, i], lambda d: d.mean(-1), seed=seed + i, vectorized=True)
        for i, est in enumerate(order)
    }
    gap = paired_mean_difference(data[:, :2], seed=seed + 9)
    statuses = [PASS if gap.low > 0 else (FAIL if gap.high < 0 else INCONCLUSIVE)]
    statuses.append(PASS if cis["lvc"].low > 0 else (FAIL if cis["lvc"].high < 0 else INCONCLUSIVE))
    resolved = [cis[e].estimate for e in order if not _unbiased_at_second_order(e) and cis[e].low > 0]
    floor = min(resolved) if resolved else math.nan
    parts = [f"pg - lvc {gap.format()}"] + [f"{e} {cis[e].format()}" for e in order]
    for est in ("loaded_dice", "dice"):
        ci = cis[est]
        if ci.low > 0:
            statuses.append(FAIL)
            parts.append(f"{est} resolved biased")
        elif resolved and ci.high < floor:
            statuses.append(PASS)
        else:
            statuses.append(INCONCLUSIVE)
            parts.append(
                f"{est} unresolved: CI upper end {format_value(ci.high)} vs smallest resolved biased "
                f"{format_value(floor)} (needs about {tasks_factor(ci, floor):.1f}x the tasks)"
                if resolved
                else f"{est} unresolved: no biased estimator resolved"
            )
    figures = {f"{e} sq. bias": cis[e].estimate for e in order}
    evidence = "squared bias pooled over n: " + "; ".join(parts)
    return Claim(name, statement, criterion, source, evidence, combine(statuses), figures)


def tabular_claims(rows: list[ResultRow]) -> list[Claim]:
    """The claims of Liu et al. 2022 that the tabular rows speak to."""
    return [
        _claim_slope_n(rows),
        _claim_growth(rows, "sweep_k", "inner_steps", "compositional_bias_vs_k", "the inner steps K"),
        _claim_growth(rows, "sweep_alpha", "inner_lr", "compositional_bias_vs_alpha", "the step size alpha"),
        _claim_hessian_injection(rows),
        _claim_hessian_ranking(rows),
    ]
