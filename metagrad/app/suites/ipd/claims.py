"""The claims of Liu et al., NeurIPS 2022 (arXiv 2112.15400) that the IPD / LOLA rows speak
to, as pre-registered tests (the framework: :mod:`metagrad.app.judging.claims`)."""

from __future__ import annotations

import numpy as np

from metagrad.app.judging.claims import (
    FAIL,
    INCONCLUSIVE,
    NOT_APPLICABLE,
    PASS,
    Claim,
    claim_seed,
    combine,
    select,
)
from metagrad.app.judging.paired import task_matrix
from metagrad.app.judging.statistics import Interval, paired_mean_difference, task_bootstrap
from metagrad.app.running.rows import ResultRow

__all__ = ["ipd_claims"]


def _off_policy_variant(
    rows: list[ResultRow], estimator: str, replay: bool, baseline: str
) -> ResultRow | None:
    for r in rows:
        if r.estimator == estimator and bool(r.get("replay")) == replay and r.get("baseline") == baseline:
            return r
    return None


def _claim_off_policy_lola(rows: list[ResultRow]) -> Claim:
    name = "off_policy_lola"
    statement = (
        "Off-policy learning (replaying earlier trajectories with importance weights) improves "
        "LOLA-DiCE's gradient estimate (Liu et al. 2022, section 6: a higher correlation with the "
        "exact LOLA gradient)."
    )
    criterion = (
        "on the official protocol's pairs ('run': along an off-policy LOLA-DiCE training run from zero "
        "logits, lookahead 0.3, 128 + 128 episodes, FIFO buffer of 1024) with the outer gradient exact "
        "('lle', the lookahead alone), paired differences of the MSE on the same fresh episodes (95% "
        "pair-bootstrap CIs): replay - no replay with the same baseline, for the cumulative baseline "
        "(off_policy_dice) and for none (off_policy_dice vs dice); PASS if both lie below 0, FAIL if "
        "either lies above 0, else INCONCLUSIVE. Reported beside it: the split of the total gain "
        "(dice_baseline on-policy -> off_policy_dice with replay) into the baseline part "
        "(dice_baseline -> off_policy_dice without replay) and the replay part"
    )
    source = (
        "replay raises the lookahead's effective sample size (lower variance and compositional bias, "
        "Liu et al. 2022), so it must lower the MSE at a fixed baseline; the two baselines "
        "differ in kind (per-step (1 - box(log pi_t)) b vs cumulative (rho_{t-1} - rho_t) b), so the "
        "comparison holds the baseline fixed"
    )
    cells = select(rows, bench="ipd", experiment="off_policy", pair_kind="run", combination="lle")
    if not cells:
        return Claim(name, statement, criterion, source, "no ipd off_policy 'run' rows", NOT_APPLICABLE)
    variants = {
        "on-policy, per-step baseline": _off_policy_variant(cells, "dice_baseline", False, "per_step"),
        "off-policy, cumulative baseline, no replay": _off_policy_variant(
            cells, "off_policy_dice", False, "cumulative"
        ),
        "off-policy, cumulative baseline, replay": _off_policy_variant(
            cells, "off_policy_dice", True, "cumulative"
        ),
        "on-policy, no baseline": _off_policy_variant(cells, "dice", False, "none"),
        "off-policy, no baseline, replay": _off_policy_variant(cells, "off_policy_dice", True, "none"),
    }
    found = {k: v for k, v in variants.items() if v is not None}
    missing = [k for k in variants if k not in found]
    if missing:
        return Claim(name, statement, criterion, source, f"missing variants: {missing}", NOT_APPLICABLE)
    a, b, c, d, e = found.values()
    data = task_matrix([a, b, c, d, e], "mse")
    seed = claim_seed(name)

    def diff(i: int, j: int, k: int) -> Interval:
        return paired_mean_difference(data[:, [i, j]], seed=seed + k)

    replay_cum, replay_none = diff(2, 1, 0), diff(4, 3, 1)
    baseline_part, replay_part = diff(0, 1, 2), diff(1, 2, 3)
    share = task_bootstrap(
        data[:, :3],
        lambda m: (m[..., 0].mean(-1) - m[..., 1].mean(-1)) / (m[..., 0].mean(-1) - m[..., 2].mean(-1)),
        seed=seed + 4,
        vectorized=True,
        method="percentile",
    )
    statuses = [
        PASS if x.high < 0 else (FAIL if x.low > 0 else INCONCLUSIVE) for x in (replay_cum, replay_none)
    ]
    mse = {k: float(np.mean(v.per_task["mse"])) for k, v in found.items()}
    corr = {k: float(np.mean(v.per_task["corr"])) for k, v in found.items()}
    lll = select(rows, bench="ipd", experiment="off_policy", pair_kind="run", combination="lll")
    corr_lll = {
        k: float(np.mean(r.per_task["corr"]))
        for k, (est, rep, base) in {
            "on-policy, no baseline": ("dice", False, "none"),
            "off-policy, no baseline, replay": ("off_policy_dice", True, "none"),
        }.items()
        if (r := _off_policy_variant(lll, est, rep, base)) is not None
    }
    on, no_replay, replayed = (float(np.mean(v.per_task["mse"])) for v in (a, b, c))
    evidence = (
        "MSE (corr) of the lookahead alone: "
        + "; ".join(f"{k} {mse[k]:.3g} ({corr[k]:.2f})" for k in variants)
        + f". Replay at a fixed baseline: cumulative {replay_cum.format()}, none {replay_none.format()}. "
        f"Of the total gain {on - replayed:.3g}, the baseline gives {baseline_part.format()} and replay "
        f"{replay_part.format()} (baseline share {share.format('.1%')}; factors "
        f"{on / no_replay:.1f}x and {no_replay / replayed:.1f}x)"
    )
    if corr_lll:
        evidence += (
            ". The official code's pattern (no baseline), corr with the outer gradient sampled / exact: "
            + "; ".join(f"{k} {corr_lll[k]:.2f} / {corr[k]:.2f}" for k in corr_lll)
        )
    figures = {
        "replay gain (cumulative)": -replay_cum.estimate,
        "replay gain (none)": -replay_none.estimate,
        "baseline share": share.estimate,
    }
    return Claim(name, statement, criterion, source, evidence, combine(statuses), figures)


def ipd_claims(rows: list[ResultRow]) -> list[Claim]:
    """The claims of Liu et al. 2022 that the IPD / LOLA rows speak to."""
    return [_claim_off_policy_lola(rows)]
