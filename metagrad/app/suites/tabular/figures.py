"""The tabular suite's figures (PNG + PDF + caption): the decomposition per stage combination,
the compositional-bias sweeps, the injected Hessian bias, LIRPG and the extensions."""

from __future__ import annotations

import math
from pathlib import Path

from metagrad.app.judging.paired import task_mean
from metagrad.app.presenting.names import human, sequence_styles
from metagrad.app.presenting.plotting import series_grid, series_panel
from metagrad.app.running.rows import ResultRow
from metagrad.derivatives import DERIVATIVES

__all__ = ["write_figures"]


def _series(rows: list[ResultRow], experiment: str, xkey: str) -> dict[str, list[ResultRow]]:
    """Rows of one experiment by series label (the estimator; (K, alpha) for the injections),
    each sorted by ``xkey``."""
    out: dict[str, list[ResultRow]] = {}
    for r in rows:
        if r.experiment == experiment:
            injected = experiment.startswith("hessian_bias")
            label = f"K={r.get('inner_steps')}, alpha={r.get('inner_lr'):g}" if injected else r.estimator
            if experiment == "lirpg":
                label = f"{r.estimator}, K={r.get('inner_steps')}"
            elif experiment == "sweep_states":
                label = f"{r.estimator} {r.get('combination')}"
            out.setdefault(label, []).append(r)
    return {k: sorted(v, key=lambda r: r.value(xkey)) for k, v in out.items()}


_BIAS = "debiased bias (95% CI)"
_CORR = "correlation with the exact gradient"
_PANELS = (
    ("sweep_n", "n_inner", "corr", "inner sample size n (episodes)", _CORR, False),
    ("sweep_n", "n_inner", "bias_debiased", "inner sample size n (episodes)", _BIAS, True),
    ("sweep_k", "inner_steps", "bias_debiased", "inner steps K", _BIAS, False),
    ("sweep_alpha", "inner_lr", "bias_debiased", "inner step size alpha", _BIAS, False),
    ("hessian_bias", "hessian_bias_c", "bias_debiased", "injected Hessian bias c", _BIAS, True),
    ("hessian_bias_k", "hessian_bias_c", "bias_debiased", "injected Hessian bias c", _BIAS, True),
    ("lirpg", "n_hessian", "corr", "Hessian sample size n (episodes)", _CORR, False),
    ("sweep_states", "num_states", "bias_debiased", "number of states S", _BIAS, True),
    ("sweep_states", "num_states", "relative_bias", "number of states S", "relative bias", True),
)
_SLOPE_NOTE = (
    "Dashed grey: slope -1/2, the paper's O(n^-1/2) bound on the compositional bias (the delta method "
    "gives -1 asymptotically: expect exponents between -1 and -1/2)."
)
_INJECTION_NOTE = (
    "Dotted: the exact prediction of the injected bias (the exact meta-gradient with the injected "
    "Hessian term in expectation), root of the mean over tasks of its squared distance to the exact one."
)


def _theory(
    experiment: str, series: dict[str, list[ResultRow]]
) -> dict[str, tuple[list[float], list[float]]]:
    """The exact injected-Hessian prediction per series, from the rows' ``predicted_bias_sq``."""
    if not experiment.startswith("hessian_bias"):
        return {}
    out: dict[str, tuple[list[float], list[float]]] = {}
    for label, rows in series.items():
        have = [r for r in rows if "predicted_bias_sq" in r.per_task]
        if have:
            x = [float(r.get("hessian_bias_c")) for r in have]
            y = [math.sqrt(max(task_mean(r, "predicted_bias_sq")[0], 0.0)) for r in have]
            out[f"prediction, {label}"] = (x, y)
    return out


def _decomposition_plots(rows: list[ResultRow], folder: Path, stem: str) -> list[Path]:
    """The paper's main figure: per stage combination, each estimator's corr and debiased bias
    against the sample size n of its sampled stages (one panel per combination)."""
    dec = [r for r in rows if r.experiment == "decomposition" and r.estimator != "exact"]
    if len({r.cell.get("n") for r in dec}) < 2:
        return []
    panels: dict[str, dict[str, list[ResultRow]]] = {}
    for combo in dict.fromkeys(r.get("combination") for r in dec):
        series: dict[str, list[ResultRow]] = {}
        for r in sorted((r for r in dec if r.get("combination") == combo), key=lambda r: int(r.cell["n"])):
            series.setdefault(human(r.estimator), []).append(r)
        panels[human(combo)] = series
    written = []
    for ykey, ylabel, loglog in (("corr", "corr", False), ("bias_debiased", "debiased bias", True)):
        written.append(
            series_grid(
                folder / f"{stem}_decomposition_{ykey}.png",
                panels,
                "n",
                ykey,
                xlabel="episodes n per sampled stage",
                ylabel=ylabel,
                title=f"Decomposition: {human(ykey)} per stage combination (inner, Hessian, outer; e exact, "
                "l sampled) vs n",
                loglog=loglog,
                notes="One panel per stage combination; colours: estimators (the same in every figure).",
            )
        )
    return written


def write_figures(rows: list[ResultRow], folder: Path, stem: str = "tabular") -> list[Path]:
    """Figures (PNG + PDF + caption): the decomposition per stage combination, the
    compositional-bias sweeps, the injected Hessian bias, LIRPG, the extensions."""
    folder = Path(folder)
    written = _decomposition_plots(rows, folder, stem)
    for experiment, xkey, ykey, xlabel, ylabel, loglog in _PANELS:
        series = _series(rows, experiment, xkey)
        if series:
            injected = experiment.startswith("hessian_bias")
            slope = -0.5 if experiment == "sweep_n" and ykey == "bias_debiased" else None
            notes = _SLOPE_NOTE if slope else (_INJECTION_NOTE if injected else "")
            written.append(
                series_panel(
                    folder / f"{stem}_{experiment}_{ykey}.png",
                    {human(k) if not injected else k: v for k, v in series.items()},
                    xkey,
                    ykey,
                    xlabel=xlabel,
                    ylabel=ylabel,
                    title=human(experiment),
                    loglog=loglog,
                    reference_slope=slope,
                    theory=_theory(experiment, series),
                    colors=sequence_styles(series) if injected else None,
                    notes=notes,
                )
            )
    return written + _extension_plots(rows, folder, stem)


def _extension_plots(rows: list[ResultRow], folder: Path, stem: str) -> list[Path]:
    """hessian_scoring: corr and debiased bias vs the number of episodes per estimator, per
    derivative, off-policy (behaviour uniform) at the largest eps, and corr vs eps at the largest n
    when several eps were run; mlmc_bias: debiased bias (95% CI) and MSE per estimator vs the
    (expected) episodes per estimate."""
    written = []
    ope = [r for r in rows if r.experiment == "hessian_scoring"]
    for derivative in DERIVATIVES:
        mine = [r for r in ope if r.get("derivative") == derivative]
        off = [r for r in mine if r.get("behaviour") == "uniform"] or mine
        if not off:
            continue
        eps = max(r.get("eps") for r in off)
        at_eps = [r for r in off if r.get("eps") == eps]
        for ykey, ylabel in (("corr", "corr (Tang et al.'s metric)"), ("bias_debiased", "debiased bias")):
            series = _by_estimator(at_eps, "n_episodes")
            written.append(
                series_panel(
                    folder / f"{stem}_hessian_scoring_{derivative}_{ykey}.png",
                    series,
                    "n_episodes",
                    ykey,
                    xlabel="episodes per estimate",
                    ylabel=ylabel,
                    title=f"{derivative} of J, {at_eps[0].get('behaviour')} behaviour, eps = {eps}",
                    loglog=ykey == "bias_debiased",
                    logx=True,
                )
            )
        if len({r.get("eps") for r in off}) > 1:
            n = max(r.get("n_episodes") for r in off)
            at_n = [r for r in off if r.get("n_episodes") == n]
            written.append(
                series_panel(
                    folder / f"{stem}_hessian_scoring_{derivative}_corr_vs_eps.png",
                    _by_estimator(at_n, "eps"),
                    "eps",
                    "corr",
                    xlabel="eps (0: target = behaviour)",
                    ylabel="corr",
                    title=f"{derivative} of J vs off-policyness, n = {n}",
                )
            )
    mlmc = [r for r in rows if r.experiment == "mlmc_bias"]
    if mlmc:
        for ykey, ylabel in (("bias_debiased", "debiased bias (95% CI)"), ("mse", "MSE")):
            written.append(
                series_panel(
                    folder / f"{stem}_mlmc_bias_{ykey}.png",
                    _by_estimator(mlmc, "episodes_per_estimate"),
                    "episodes_per_estimate",
                    ykey,
                    xlabel="(expected) episodes per estimate",
                    ylabel=ylabel,
                    title=f"mlmc_bias: {ylabel} vs cost",
                    logx=True,
                )
            )
    return written


def _by_estimator(rows: list[ResultRow], xkey: str) -> dict[str, list[ResultRow]]:
    out: dict[str, list[ResultRow]] = {}
    for r in sorted(rows, key=lambda r: r.value(xkey)):
        out.setdefault(r.estimator, []).append(r)
    return out
