"""The reproduction report and the outputs of a store.

:func:`write_outputs` rebuilds everything a result store's rows give: per-run plots and summaries
(``SUITE_PRESET_*``), ``leaderboard.md`` and ``report.md``. :func:`evaluate_claims` asks every
registered suite for the claims its rows speak to; :func:`write_report` prints each with its
criterion, evidence and verdict, then links the tables and embeds the plots.
"""

from __future__ import annotations

from pathlib import Path

from metagrad.app.claims import Claim
from metagrad.app.leaderboard import write_leaderboard
from metagrad.app.outputs import write_text_atomic
from metagrad.app.rows import ResultRow
from metagrad.app.runner import RunResults
from metagrad.app.suites import SUITES

__all__ = ["evaluate_claims", "write_outputs", "write_report", "write_suite_outputs"]


def evaluate_claims(rows: list[ResultRow]) -> list[Claim]:
    """Each claim every registered suite's rows speak to, with its verdict."""
    claims: list[Claim] = []
    for suite in SUITES.values():
        claims += suite.claims([r for r in rows if r.bench == suite.name])
    return claims


def write_report(
    rows: list[ResultRow],
    path: str | Path,
    *,
    plots: list[Path] | None = None,
    summaries: list[Path] | None = None,
) -> Path:
    """``report.md``: each claim with its measured evidence and verdict, then the plots."""
    path = Path(path)
    claims = evaluate_claims(rows)
    commits = sorted({r.provenance.git_commit for r in rows})
    wall = sum(r.wall_s for r in rows)
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
    return write_text_atomic(path, "\n".join(lines))


def write_suite_outputs(suite: str, rows: list[ResultRow], folder: str | Path, stem: str) -> list[Path]:
    """Plots and the markdown summary of one run's rows (``folder/stem_*``)."""
    s = SUITES[suite]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wall = sum(r.wall_s for r in rows)
    plots = s.write_plots(rows, folder, stem)
    summary = s.write_summary(rows, folder / f"{stem}_summary.md", wall)
    return [*plots, summary]


def write_outputs(results: RunResults, folder: str | Path) -> dict[str, Path]:
    """Per-run plots and summaries (``SUITE_PRESET_*``), then ``leaderboard.md`` and ``report.md``
    over all the rows; returns the paths of the leaderboard and the report."""
    folder = Path(folder)
    plots: list[Path] = []
    summaries: list[Path] = []
    all_rows: list[ResultRow] = []
    for (suite, preset), rows in results.items():
        written = write_suite_outputs(suite, rows, folder, f"{suite}_{preset}")
        plots += [p for p in written if p.suffix == ".png"]
        summaries += [p for p in written if p.suffix == ".md"]
        all_rows += rows
    return {
        "leaderboard": write_leaderboard(all_rows, folder / "leaderboard.md"),
        "report": write_report(all_rows, folder / "report.md", plots=plots, summaries=summaries),
    }


def _relative(p: Path, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(p)
