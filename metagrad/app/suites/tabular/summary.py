"""The tabular suite's markdown summary: one table per family, the official code's own metrics
beside ours."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from metagrad.app.judging.paired import task_mean
from metagrad.app.presenting.outputs import write_text_atomic
from metagrad.app.presenting.tables import format_interval, markdown_grid
from metagrad.app.running.rows import ResultRow

__all__ = ["write_summary"]


def _field(name: str) -> Callable[[ResultRow], Any]:
    """The row's ``name`` field (a column of a grid)."""
    return lambda r: r.get(name)


def _corr_and_paper_variance(r: ResultRow) -> str:
    var, _ = task_mean(r, "paper_variance")
    return f"{r.metrics.corr:.3f} ({var:.3g})"


def _bias_and_paper_bias(r: ResultRow) -> str:
    mean, se = task_mean(r, "bias_sq_debiased")
    paper, _ = task_mean(r, "paper_bias")
    return f"{mean:.3g} ± {se:.2g} ({paper:.3g})"


def _bias_with_ci(r: ResultRow) -> str:
    m = r.metrics
    return format_interval(m.bias_debiased, m.bias_ci_low, m.bias_ci_high)


def _injected(r: ResultRow) -> str:
    mean, se = task_mean(r, "bias_sq_debiased")
    predicted, _ = task_mean(r, "predicted_bias_sq")
    paper, _ = task_mean(r, "paper_bias")
    return f"{mean:.3g} ± {se:.2g} / {predicted:.3g} ({paper:.3g})"


def write_summary(rows: list[ResultRow], path: Path, total_seconds: float | None = None) -> Path:
    """Markdown summary: one table per family, with the official code's own metrics beside ours
    (corr with their variance, the sum of per-component standard deviations; our debiased squared
    bias with their non-debiased ``||mean - exact||^2 / D``), so figures compare with the paper's."""
    path = Path(path)
    lines = ["# Tabular meta-gradient bias", ""]
    if rows:
        r0 = rows[0]
        lines += [
            f"Preset `{r0.preset}`, objective `{r0.get('objective')}`, critic noise "
            f"{r0.get('critic_noise')}, seed {r0.seed}, commit `{r0.provenance.git_commit}`."
            + (f" Cell compute {total_seconds:.1f} s." if total_seconds is not None else ""),
            "Cells: `ours (official metric)`. corr: the papers' metric, (sum over components of the "
            "standard deviation: the official `var`). Squared bias: our debiased mean over tasks ± s.e. "
            "(the official non-debiased `||mean - exact||^2 / D`).",
            "",
        ]

    def budget(rs: list[ResultRow]) -> str:
        m = rs[0].metrics
        return f"{m.num_tasks} tasks x {m.repeats} estimates"

    def family(name: str) -> list[ResultRow]:
        return [r for r in rows if r.experiment == name]

    dec = family("decomposition")
    if dec:
        d0 = dec[0]
        lines += [
            f"## Decomposition (K = {d0.get('inner_steps')}, alpha = {d0.get('inner_lr')}, {budget(dec)}): "
            "corr (official variance) by n and stage combination",
            "",
        ]
        for est in dict.fromkeys(r.estimator for r in dec if r.estimator != "exact"):
            lines += [f"### {est}", ""]
            lines += markdown_grid(
                [r for r in dec if r.estimator == est],
                lambda r: f"n = {max(r.get('n_inner'), r.get('n_hessian'), r.get('n_outer'))}",
                lambda r: r.get("combination"),
                _corr_and_paper_variance,
                "n",
            )
    for name, xkey, what in (("k_ablation", "inner_steps", "K"), ("alpha_ablation", "inner_lr", "alpha")):
        rs = family(name)
        if rs:
            lines += [
                f"## {name} ({', '.join(dict.fromkeys(r.estimator for r in rs))}, {budget(rs)}): "
                f"corr (official variance) by {what}",
                "",
            ]
            lines += markdown_grid(
                rs,
                lambda r: r.get("combination"),
                _field(xkey),
                _corr_and_paper_variance,
                "combination",
            )
    for name, xkey in (("sweep_n", "n_inner"), ("sweep_k", "inner_steps"), ("sweep_alpha", "inner_lr")):
        rs = family(name)
        if rs:
            r0 = rs[0]
            lines += [
                f"## {name}: compositional bias, 'lee' (K = {r0.get('inner_steps')} / alpha = "
                f"{r0.get('inner_lr')} / n = {r0.get('n_inner')} where fixed, {budget(rs)}): debiased "
                f"squared bias ± s.e. (official bias) by {xkey}",
                "",
            ]
            lines += markdown_grid(rs, lambda r: r.estimator, _field(xkey), _bias_and_paper_bias, "estimator")
    for name in ("hessian_bias", "hessian_bias_k"):
        rs = family(name)
        if rs:
            lines += [
                f"## {name}: injected Hessian bias ({budget(rs)}): measured debiased squared bias ± s.e. / "
                "exact prediction (official bias) by c",
                "",
            ]
            lines += markdown_grid(
                rs,
                lambda r: f"K = {r.get('inner_steps')}, alpha = {r.get('inner_lr'):g}",
                lambda r: r.get("hessian_bias_c"),
                _injected,
                "series",
            )
    rs = family("hessian_ranking")
    if rs:
        lines += [
            f"## hessian_ranking: 'ele' ({budget(rs)}): debiased squared bias ± s.e. (official bias) by n",
            "",
        ]
        lines += markdown_grid(
            rs, lambda r: r.estimator, lambda r: r.get("n_hessian"), _bias_and_paper_bias, "estimator"
        )
    rs = family("lirpg")
    if rs:
        lines += [
            f"## lirpg: 'ele', GAE lambda {rs[0].get('gae_lambda')} ({budget(rs)}): "
            "corr (official variance) by n",
            "",
        ]
        lines += markdown_grid(
            rs,
            lambda r: f"{r.estimator}, K = {r.get('inner_steps')}",
            lambda r: r.get("n_hessian"),
            _corr_and_paper_variance,
            "Hessian, K",
        )
    rs = family("sweep_states")
    if rs:
        lines += [f"## sweep_states: debiased bias [95% CI] by the number of states S ({budget(rs)})", ""]
        lines += markdown_grid(
            rs,
            lambda r: f"{r.estimator} {r.get('combination')}",
            lambda r: r.get("num_states"),
            _bias_with_ci,
            "series",
        )
    lines += _extension_summary(rows)
    write_text_atomic(path, "\n".join(lines))
    return path


def _extension_summary(rows: list[ResultRow]) -> list[str]:
    """Markdown tables of the hessian_scoring and mlmc_bias rows."""
    lines: list[str] = []
    ope = [r for r in rows if r.experiment == "hessian_scoring"]
    if ope:
        lines += [
            "## hessian_scoring: gradient and Hessian of J (Tang et al. 2021 estimators)",
            "",
            "corr ± s.e. (Tang et al.'s metric, per estimate), debiased bias [95% CI], variance "
            "(tr Cov); target `eps * deterministic + (1 - eps) * uniform`; behaviour `uniform` is "
            "off-policy, `target` on-policy.",
            "",
            "| derivative | behaviour | eps | n | estimator | corr | bias [95% CI] | variance | MSE |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        order = sorted(
            ope,
            key=lambda r: (
                r.get("derivative"),
                r.get("behaviour"),
                r.get("eps"),
                r.get("n_episodes"),
                r.estimator,
            ),
        )
        for r in order:
            m = r.metrics
            lines.append(
                f"| {r.get('derivative')} | {r.get('behaviour')} | {r.get('eps')} | {r.get('n_episodes')} "
                f"| {r.estimator} | {m.corr:.3f} ± {m.corr_se:.3f} | {m.bias_debiased:.4g} "
                f"[{m.bias_ci_low:.3g}, {m.bias_ci_high:.3g}] | {m.variance:.4g} | {m.mse:.4g} |"
            )
        lines.append("")
    mlmc = [r for r in rows if r.experiment == "mlmc_bias"]
    if mlmc:
        r0 = mlmc[0]
        lines += [
            f"## mlmc_bias: compositional bias (lee, K = {r0.get('inner_steps')}, alpha = "
            f"{r0.get('inner_lr')}, {r0.metrics.repeats} estimates per task)",
            "",
            "Episodes: expected episodes per estimate (mlmc: randomised). Efficiency: MSE x episodes.",
            "",
            "| n | estimator | debiased bias [95% CI] | variance | MSE ± s.e. | episodes | MSE x episodes |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sorted(mlmc, key=lambda r: (r.get("n_inner"), r.estimator)):
            m = r.metrics
            lines.append(
                f"| {r.get('n_inner')} | {r.estimator} | {m.bias_debiased:.4g} [{m.bias_ci_low:.3g}, "
                f"{m.bias_ci_high:.3g}] | {m.variance:.4g} | {m.mse:.4g} ± {m.mse_se:.2g} "
                f"| {r.episodes_per_estimate:.4g} | {r.mse_x_episodes:.4g} |"
            )
        lines.append("")
    return lines
