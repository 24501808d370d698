"""The atari suite's figures: one per view, every estimator in its palette colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metagrad.agents.mgrl import META_NAMES
from metagrad.app.presenting.names import PALETTE, human
from metagrad.app.presenting.plotting import new_figure, save_figure
from metagrad.app.running.rows import ResultRow

__all__ = ["write_figures"]


def write_figures(rows: list[ResultRow], folder: Path, stem: str = "atari") -> list[Path]:
    """One figure per view, every estimator in its :data:`~metagrad.app.presenting.names.PALETTE` colour:
    the paired bias per component relative to the norm of the reference's mean meta-gradient,
    with its family-wise CI, per game; the reference view's MSE and debiased bias per game."""
    paths = []
    paired = [r for r in rows if r.experiment == "paired"]
    if paired:
        games = list(dict.fromkeys(r.get("game") for r in paired))
        fig, axes = new_figure((4.2 * len(games), 3.6), ncols=len(games))
        axes = np.atleast_1d(axes)
        for ax, game in zip(axes, games, strict=True):
            ours = sorted((r for r in paired if r.get("game") == game), key=lambda r: r.estimator)
            width = 0.8 / len(ours)
            for i, r in enumerate(ours):
                scale = float(np.linalg.norm(r.get("reference_mean"))) or 1.0
                x = np.arange(len(META_NAMES)) + (i - (len(ours) - 1) / 2) * width
                m = np.array(r.get("paired_mean")) / scale
                low, high = (
                    np.array(r.get("paired_ci_low")) / scale,
                    np.array(r.get("paired_ci_high")) / scale,
                )
                style = PALETTE[r.estimator]
                ax.bar(
                    x,
                    m,
                    width,
                    yerr=[m - low, high - m],
                    capsize=3,
                    color=style.color,
                    label=human(r.estimator),
                )
            ax.axhline(0.0, color="k", lw=0.8)
            ax.set_xticks(np.arange(len(META_NAMES)), [human(n) for n in META_NAMES], fontsize=8)
            ax.set_ylabel("E[g_X - g_ref] / ||E g_ref||", fontsize=8)
            ax.set_title(f"{game}: paired bias against Loaded DiCE", fontsize=9)
            ax.legend(fontsize=8)
        r0 = paired[0]
        caption = (
            f"Paired bias of each inner estimator's MGRL meta-gradient against Loaded DiCE (lambda = 1, "
            f"critic cut) on the same batches, per meta-parameter, divided by the norm of the reference's "
            f"mean meta-gradient; K = {r0.get('inner_steps')}, {r0.metrics.repeats} paired estimates per "
            f"game, run seed {r0.seed}, preset {r0.get('preset')}. Bars: means; error bars: 95% "
            f"Student-t CIs on blocks of {r0.get('ci_block')} estimates, family-wise over the "
            f"{len(META_NAMES)} components (Bonferroni). Theory line: 0 (an unbiased Hessian)."
        )
        paths.append(save_figure(fig, Path(folder) / f"{stem}_paired.png", caption=caption))
    view = [r for r in rows if r.experiment == "reference"]
    if view:
        games = list(dict.fromkeys(r.get("game") for r in view))
        fig, axes = new_figure((9, 3.6), ncols=2)
        estimators = sorted({r.estimator for r in view})
        width = 0.8 / len(estimators)
        for i, est in enumerate(estimators):
            mine = {r.get("game"): r.metrics for r in view if r.estimator == est}
            x = np.array([g for g, game in enumerate(games) if game in mine], dtype=float)
            x += (i - (len(estimators) - 1) / 2) * width
            scores = [mine[game] for game in games if game in mine]
            style = PALETTE[est]
            axes[0].bar(x, [v.mse for v in scores], width, yerr=[v.mse_se for v in scores], capsize=2,
                        color=style.color, label=human(est))  # fmt: skip
            err = [
                [v.bias_debiased - v.bias_ci_low for v in scores],
                [v.bias_ci_high - v.bias_debiased for v in scores],
            ]
            axes[1].bar(x, [v.bias_debiased for v in scores], width, yerr=err, capsize=2, color=style.color)
        for ax, label in zip(
            axes, ("MSE against the reference", "debiased bias against the reference"), strict=True
        ):
            ax.set_yscale("log")
            ax.set_xticks(np.arange(len(games)), [g.split("/")[-1] for g in games], fontsize=8)
            ax.set_ylabel(label, fontsize=8)
        axes[0].legend(fontsize=7)
        fig.suptitle("MGRL meta-gradient estimators against a high-budget Loaded DiCE reference", fontsize=9)
        r0 = view[0]
        caption = (
            f"Reference view: each estimator's {r0.metrics.repeats} estimates per game against the mean of "
            f"{r0.get('reference_repeats')} Loaded DiCE estimates with more games, run seed {r0.seed}, "
            f"preset {r0.get('preset')}; log axes, one axis per metric because the games differ by orders "
            "of magnitude. Error bars: ± one standard error (MSE), 95% bootstrap CI (debiased bias); a "
            "debiased bias of 0 has no bar on the log axis (its CI is in the summary table)."
        )
        paths.append(save_figure(fig, Path(folder) / f"{stem}_estimators.png", caption=caption))
    return paths
