"""Power and false-alarm rate of :func:`~metagrad.testing.check_unbiased`, measured at its defaults.

::

    python -m metagrad.testing.power                      # the full study (tens of minutes, one core)
    python -m metagrad.testing.power --power-seeds 5 --null-seeds 5 --orders 1   # a quick look

**Power curve.** Estimators biased by a known relative amount: an unbiased estimator times
``1 + eps`` (its mean is ``(1 + eps)`` times the exact derivative, a relative bias ``eps``), run
on the default task of each seed. ``dice`` is the case of the issue that asked for this study
(its noise is shared with a reference, so the paired test resolves it); ``dice_baseline`` is a
built-in unbiased estimator whose second-order noise the references do not explain, the harder
case. Each case runs with the paired test (the default) and with the direct test alone.

**False-alarm rate.** Estimators unbiased at an order by theory (the registry's
``unbiased_orders``; the Taylor expansions, per-step IS and V-trace on-policy where their
conditions hold), a plug-in copy of DiCE (an unregistered function), and off-policy runs of the
importance-weighted estimators. A run's family-wise p-value gives its verdict at every level, so
the rate is reported at the nominal ``alpha = 0.001`` and at 0.01 and 0.05, where it can be
resolved with tens of seeds per case.

**Criteria** (fixed in this module before the study was first run; the command prints whether
each holds):

1. power: ``dice x 1.05`` is detected at orders 1 and 2 on at least 95% of the seeds;
2. false alarms: at each level ``a`` in (0.05, 0.01, 0.001), the ``k`` false alarms of the ``M``
   pooled null runs are not significantly more than ``a M``: ``P(Binomial(M, a) >= k) >= 0.01``.

Each row also states the mean minimum detectable relative bias the runs reported (95% power),
and the tables end with the time of one call (one torch thread).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from scipy import stats

from metagrad.estimators import ESTIMATORS, dice
from metagrad.testing.unbiased import _default_task, check_unbiased

__all__ = [
    "FALSE_ALARM_LEVELS",
    "NullCase",
    "PowerRow",
    "dice_copy",
    "false_alarm_study",
    "main",
    "null_cases",
    "power_study",
    "scaled",
]

FALSE_ALARM_LEVELS = (0.05, 0.01, 0.001)
POWER_TARGET = 0.95  # criterion 1: the share of seeds on which dice x 1.05 is detected
POWER_CASE = ("dice", 0.05)
BINOMIAL_LEVEL = 0.01  # criterion 2: the one-sided binomial test's level


def scaled(name: str, factor: float) -> Callable[..., torch.Tensor]:
    """The registered estimator ``name`` times ``factor`` (a plug-in with relative bias ``factor - 1``)."""
    fn = ESTIMATORS[name].fn

    def estimator(log_probs, rewards, discounts, **kwargs):
        return factor * fn(log_probs, rewards, discounts, **kwargs)

    estimator.__name__ = f"{name}_x{factor:g}"
    return estimator


def dice_copy(log_probs, rewards, discounts, **kwargs):
    """An unregistered plug-in that returns exactly :func:`~metagrad.estimators.dice`'s surrogate."""
    return dice(log_probs, rewards, discounts, **kwargs)


@dataclass(frozen=True)
class NullCase:
    """One estimator unbiased at ``order`` by theory; ``off_policy``: episodes of the uniform policy."""

    label: str
    estimator: str | Callable[..., torch.Tensor]
    order: int
    off_policy: bool = False


def null_cases(orders: Sequence[int] = (1, 2)) -> list[NullCase]:
    """The false-alarm cases: every registered estimator at the orders it is unbiased at on-policy
    (:meth:`~metagrad.estimators.EstimatorInfo.unbiased_at`), the plug-in copy of DiCE, and the
    importance-weighted estimators off-policy."""
    cases = []
    for order in orders:
        for name, info in ESTIMATORS.items():
            if info.unbiased_at(order):
                cases.append(NullCase(name, name, order))
        cases.append(NullCase("dice_copy (plug-in)", dice_copy, order))
        for name in ("off_policy_dice", "stepwise_is", "doubly_robust"):
            if name in ESTIMATORS and ESTIMATORS[name].unbiased_at(order):
                cases.append(NullCase(f"{name} (off-policy)", name, order, off_policy=True))
    return cases


@dataclass(frozen=True)
class PowerRow:
    """Detections of one biased case over the seeds."""

    base: str
    epsilon: float
    order: int
    paired: bool
    detected: int
    runs: int
    mean_mdb: float
    seconds: tuple[float, ...]


def _interval(k: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson 95% interval of a proportion."""
    lo = 0.0 if k == 0 else float(stats.beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(0.975, k + 1, n - k))
    return lo, hi


def _timed(estimator, order: int, seed: int, **kwargs):
    start = time.perf_counter()
    report = check_unbiased(estimator, order, seed=seed, **kwargs)
    return report, time.perf_counter() - start


def power_study(
    bases: Sequence[str],
    epsilons: Sequence[float],
    orders: Sequence[int],
    seeds: Sequence[int],
    *,
    direct: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[PowerRow]:
    """Detection counts of ``base x (1 + eps)`` for each base, eps, order and test (paired; and
    direct alone when ``direct``) over ``seeds``, at the check's defaults."""
    rows = []
    for base in bases:
        for order in orders:
            for paired in (True, False) if direct else (True,):
                for eps in epsilons:
                    fn = scaled(base, 1.0 + eps)
                    detected, mdbs, seconds = 0, [], []
                    for seed in seeds:
                        report, sec = _timed(fn, order, seed, paired=paired)
                        detected += not report.passed
                        mdbs.append(report.min_detectable_bias)
                        seconds.append(sec)
                    rows.append(
                        PowerRow(
                            base,
                            eps,
                            order,
                            paired,
                            detected,
                            len(seeds),
                            statistics.mean(mdbs),
                            tuple(seconds),
                        )
                    )
                    if progress:
                        label = f"power {base} x (1 + {eps:g}) order {order} paired={paired}"
                        progress(f"{label}: {detected}/{len(seeds)}")
    return rows


@dataclass(frozen=True)
class NullRow:
    """p-values of one unbiased case over the seeds."""

    case: NullCase
    p_values: tuple[float, ...]
    mdbs: tuple[float, ...]
    seconds: tuple[float, ...]


def false_alarm_study(
    cases: Sequence[NullCase], seeds: Sequence[int], *, progress: Callable[[str], None] | None = None
) -> list[NullRow]:
    """Family-wise p-values of each null case over ``seeds``, at the check's defaults."""
    rows = []
    for case in cases:
        p_values, mdbs, seconds = [], [], []
        for seed in seeds:
            kwargs = {}
            if case.off_policy:
                task = _default_task(seed)
                kwargs["behaviour_logits"] = torch.zeros(
                    task.num_states, task.num_actions, dtype=torch.float64
                )
            report, sec = _timed(case.estimator, case.order, seed, **kwargs)
            p_values.append(report.p_value)
            mdbs.append(report.min_detectable_bias)
            seconds.append(sec)
        rows.append(NullRow(case, tuple(p_values), tuple(mdbs), tuple(seconds)))
        if progress:
            alarms = sum(p <= 0.001 for p in p_values)
            progress(f"null {case.label} order {case.order}: {alarms}/{len(seeds)} false alarms at 0.001")
    return rows


def _fmt_rate(k: int, n: int) -> str:
    lo, hi = _interval(k, n)
    return f"{k}/{n} = {k / n:.3g} [{lo:.3g}, {hi:.3g}]"


def power_table(rows: Sequence[PowerRow]) -> str:
    lines = [
        "| estimator | relative bias | order | test | detected (95% CI) "
        "| mean min. detectable bias (95% power) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        test = "paired + direct (default)" if r.paired else "direct only"
        lines.append(
            f"| {r.base} x (1 + eps) | {r.epsilon:g} | {r.order} | {test} | {_fmt_rate(r.detected, r.runs)} "
            f"| {100 * r.mean_mdb:.3g}% |"
        )
    return "\n".join(lines)


def false_alarm_table(rows: Sequence[NullRow]) -> str:
    head = " | ".join(f"p <= {a:g}" for a in FALSE_ALARM_LEVELS)
    lines = [
        f"| estimator | order | runs | {head} | mean min. detectable bias |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        counts = " | ".join(str(sum(p <= a for p in r.p_values)) for a in FALSE_ALARM_LEVELS)
        lines.append(
            f"| {r.case.label} | {r.case.order} | {len(r.p_values)} | {counts} | "
            f"{100 * statistics.mean(r.mdbs):.3g}% |"
        )
    return "\n".join(lines)


def pooled_false_alarms(rows: Sequence[NullRow]) -> list[tuple[float, int, int, float]]:
    """Per level: ``(alpha, false alarms k, runs M, P(Binomial(M, alpha) >= k))``."""
    p_values = [p for r in rows for p in r.p_values]
    out = []
    for a in FALSE_ALARM_LEVELS:
        k = sum(p <= a for p in p_values)
        out.append((a, k, len(p_values), float(stats.binom.sf(k - 1, len(p_values), a))))
    return out


def timing_table(power_rows: Sequence[PowerRow], null_rows: Sequence[NullRow]) -> str:
    by_order: dict[int, list[float]] = {}
    for r in power_rows:
        if r.paired:
            by_order.setdefault(r.order, []).extend(r.seconds)
    for r in null_rows:
        by_order.setdefault(r.case.order, []).extend(r.seconds)
    lines = ["| order | calls | median s | max s |", "|---|---|---|---|"]
    for order in sorted(by_order):
        s = by_order[order]
        lines.append(f"| {order} | {len(s)} | {statistics.median(s):.2f} | {max(s):.2f} |")
    return "\n".join(lines)


def criteria(power_rows: Sequence[PowerRow], null_rows: Sequence[NullRow]) -> list[tuple[str, bool | None]]:
    """The pre-registered criteria (module docstring) and whether each holds (None: not run)."""
    out: list[tuple[str, bool | None]] = []
    base, eps = POWER_CASE
    for order in (1, 2):
        hits = [r for r in power_rows if (r.base, r.epsilon, r.order, r.paired) == (base, eps, order, True)]
        label = f"power: {base} x {1 + eps:g} detected at order {order} on >= {POWER_TARGET:.0%} of seeds"
        out.append((label, None if not hits else hits[0].detected >= POWER_TARGET * hits[0].runs))
    for a, k, m, tail in pooled_false_alarms(null_rows) if null_rows else []:
        label = f"false alarms at {a:g}: {k}/{m}, P(Binomial({m}, {a:g}) >= {k}) = {tail:.3g}"
        label += f" >= {BINOMIAL_LEVEL:g}"
        out.append((label, tail >= BINOMIAL_LEVEL))
    return out


def _seeds(first: int, count: int) -> range:
    return range(first, first + count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metagrad.testing.power", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--power-seeds", type=int, default=40, help="seeds per biased case (default 40)")
    parser.add_argument("--null-seeds", type=int, default=30, help="seeds per unbiased case (default 30)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epsilons", default="0.02,0.05,0.1", help="relative biases, comma-separated")
    parser.add_argument("--bases", default="dice,dice_baseline", help="estimators scaled by 1 + eps")
    parser.add_argument("--orders", default="1,2")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct-test-only power rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    orders = [int(o) for o in args.orders.split(",")]
    epsilons = [float(e) for e in args.epsilons.split(",")]
    bases = [b for b in args.bases.split(",") if b]

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    power_rows = power_study(
        bases,
        epsilons,
        orders,
        _seeds(args.first_seed, args.power_seeds) if args.power_seeds > 0 else [],
        direct=not args.no_direct,
        progress=progress,
    )
    null_rows = (
        false_alarm_study(null_cases(orders), _seeds(args.first_seed, args.null_seeds), progress=progress)
        if args.null_seeds > 0
        else []
    )
    print(f"# check_unbiased: power and false-alarm rate at its defaults (torch threads: {args.threads})\n")
    print(
        f"command: python -m metagrad.testing.power {' '.join(argv if argv is not None else sys.argv[1:])}\n"
    )
    if power_rows:
        print(f"## Power (seeds {args.first_seed}..{args.first_seed + args.power_seeds - 1})\n")
        print(power_table(power_rows) + "\n")
    if null_rows:
        print(f"## False alarms (seeds {args.first_seed}..{args.first_seed + args.null_seeds - 1})\n")
        print(false_alarm_table(null_rows) + "\n")
        print(
            "Pooled: "
            + "; ".join(f"{_fmt_rate(k, m)} at {a:g}" for a, k, m, _ in pooled_false_alarms(null_rows))
        )
        print()
    print("## Time of one call\n")
    print(timing_table(power_rows, null_rows) + "\n")
    print("## Criteria (fixed before the study)\n")
    ok = True
    for label, held in criteria(power_rows, null_rows):
        verdict = "not run" if held is None else ("MET" if held else "NOT MET")
        ok &= held is not False
        print(f"- {verdict}: {label}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
