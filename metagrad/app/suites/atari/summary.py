"""The atari suite's markdown summary: the paired biases with their CIs and verdicts, LVC
against pg, then the reference view."""

from __future__ import annotations

from pathlib import Path

import torch

from metagrad.agents.mgrl import META_NAMES
from metagrad.app.presenting.outputs import write_text_atomic
from metagrad.app.presenting.tables import format_interval
from metagrad.app.running.rows import ResultRow
from metagrad.app.suites.atari.claims import lvc_vs_pg

__all__ = ["write_summary"]


def _paired_pairs(rows: list[ResultRow]) -> list[tuple[str, ResultRow, ResultRow]]:
    """``(game, pg row, lvc row)`` for games whose paired pg and lvc rows share their samples."""
    out = []
    for game in dict.fromkeys(r.get("game") for r in rows):
        mine = {r.estimator: r for r in rows if r.experiment == "paired" and r.get("game") == game}
        pg, lvc = mine.get("pg"), mine.get("lvc")
        if pg and lvc and pg.get("reference_digest") == lvc.get("reference_digest"):
            out.append((game, pg, lvc))
    return out


def write_summary(rows: list[ResultRow], path: Path, total_seconds: float | None = None) -> Path:
    """Markdown: the paired biases with their CIs and verdicts, LVC vs pg, then the reference view."""
    path = Path(path)
    lines = ["# MGRL meta-gradient estimators on Atari / MinAtar (no closed form)", ""]
    paired = [r for r in rows if r.experiment == "paired"]
    if paired:
        r0 = paired[0]
        lines += [
            "## Paired view: E[g_X - g_ref] on the same samples",
            "",
            f"Reference {r0.get('reference_estimator')} (lambda = 1, critic cut from the graph, policy "
            f"advantages G_t - V(s_t)); K = {r0.get('inner_steps')}; each estimate: "
            f"{r0.get('n_inner')} games x {r0.get('n_steps')} steps x {r0.get('inner_steps') + 1} batches. "
            f"CIs: Student-t on means of {r0.get('ci_block')} consecutive estimates, 95% family-wise "
            f"(Bonferroni over {', '.join(META_NAMES)}). RESOLVED: some component's CI excludes 0. "
            f"Commit `{r0.provenance.git_commit}`."
            + (f" Cell compute {total_seconds:.0f} s." if total_seconds else ""),
            "",
            "| game | X | " + " | ".join(META_NAMES) + " | norm [95% CI] | rel. to norm of g_ref "
            "| verdict | budget: estimates (frames, CPU s) | lag-1 autocorr. |",
            "|---|---|" + "---|" * len(META_NAMES) + "---|---|---|---|---|",
        ]
        for r in paired:
            m = r.metrics
            comps = [
                format_interval(a, b, c)
                for a, b, c in zip(
                    r.get("paired_mean"), r.get("paired_ci_low"), r.get("paired_ci_high"), strict=True
                )
            ]
            first = r.get("resolved_from_estimates")
            verdict = (
                f"RESOLVED ({', '.join(r.get('resolved_components'))})"
                if r.get("resolved")
                else "INCONCLUSIVE"
            )
            if first:
                verdict += f"; resolved from {first} estimates on (descriptive)"
            lag = ", ".join(f"{x:.2f}" for x in r.get("lag1_autocorr"))
            lines.append(
                f"| {r.get('game')} | {r.estimator} | " + " | ".join(comps)
                + f" | {m.bias_debiased:.3g} [{m.bias_ci_low:.3g}, {m.bias_ci_high:.3g}] "
                f"| {m.relative_bias:.3g} | {verdict} | {r.get('estimates')} ({r.get('frames')}, "
                f"{r.get('cpu_s'):.0f}) | {lag} |"
            )  # fmt: skip
        pairs = _paired_pairs(paired)
        if pairs:
            lines += [
                "",
                "LVC against pg on the same blocks: ||E d_pg||^2 - ||E d_lvc||^2 (> 0: LVC's Hessian "
                "bias is smaller), bias-corrected block-bootstrap 95% CI.",
                "",
                "| game | difference [95% CI] | verdict |",
                "|---|---|---|",
            ]
            for game, pg, lvc in pairs:
                out = lvc_vs_pg(
                    torch.tensor(pg.get("paired_blocks"), dtype=torch.float64),
                    torch.tensor(lvc.get("paired_blocks"), dtype=torch.float64),
                    seed=pg.seed,
                )
                lines.append(
                    f"| {game} | {format_interval(out['difference'], out['ci_low'], out['ci_high'])} "
                    f"| {out['verdict']} |"
                )
        lines.append("")
    view = [r for r in rows if r.experiment == "reference"]
    if view:
        r0 = view[0]
        lines += [
            "## Reference view: against a high-budget reference",
            "",
            f"Reference: {r0.get('reference_estimator')} with {r0.get('reference_scale')}x the games, mean "
            f"of {r0.get('reference_repeats')} estimates on its own stream; {r0.metrics.repeats} estimates "
            "per estimator (common random numbers).",
            "",
            "| game | inner estimator | corr | cosine of mean | debiased bias [CI] "
            "| bias^2 minus both noises "
            "| variance | MSE | reference s.e. |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in view:
            m = r.metrics
            lines.append(
                f"| {r.get('game')} | {r.estimator} | {m.corr:.3f} ± {m.corr_se:.3f} "
                f"| {m.cosine_of_mean:.3f} "
                f"| {m.bias_debiased:.4g} [{m.bias_ci_low:.3g}, {m.bias_ci_high:.3g}] "
                f"| {r.get('bias_sq_debiased_vs_reference'):.4g} | {m.variance:.4g} "
                f"| {m.mse:.4g} ± {m.mse_se:.2g} | {r.get('reference_se'):.3g} |"
            )
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
