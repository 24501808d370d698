"""The reproduction report and the outputs of a store.

:func:`write_outputs` rebuilds everything a result store's rows give: per-run plots and summaries
(``SUITE_PRESET_*``), ``leaderboard.md`` and ``report.md``. :func:`evaluate_claims` asks every
registered suite for the claims its rows of one run seed speak to; :func:`claims_by_seed` does
so for every seed of a store; :func:`write_report` prints each claim with its criterion, the
reason for it, the evidence and the verdict, then links the tables and embeds the plots. A store
holding several run seeds also gets :func:`seed_table` (``seed_table.md``): the verdict and the
fitted numbers of every claim for every seed, the robustness check of the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metagrad.app.judging.claims import FAIL, Claim
from metagrad.app.judging.leaderboard import overview_lines, write_leaderboard
from metagrad.app.presenting.html import write_html
from metagrad.app.presenting.outputs import write_text_atomic
from metagrad.app.presenting.plotting import caption_path, rows_caption
from metagrad.app.running.rows import ResultRow
from metagrad.app.running.runner import RunResults
from metagrad.app.suites import SUITES

__all__ = [
    "DEFAULT_STORE_NAME",
    "Outputs",
    "claims_by_seed",
    "evaluate_claims",
    "failed",
    "output_paths",
    "output_prefix",
    "seed_table",
    "write_outputs",
    "write_report",
    "write_suite_outputs",
]


def evaluate_claims(rows: list[ResultRow]) -> list[Claim]:
    """Each claim every registered suite's rows speak to, with its verdict (rows of one run
    seed: the claims' statistics are over the tasks of one run)."""
    seeds = sorted({r.seed for r in rows})
    if len(seeds) > 1:
        raise ValueError(f"evaluate_claims: rows of several run seeds {seeds}; use claims_by_seed")
    claims: list[Claim] = []
    # the claims' statistics are over tasks: rows from before per-task metrics cannot serve
    rows = [r for r in rows if r.per_task]
    for suite in SUITES.values():
        claims += suite.claims([r for r in rows if r.bench == suite.name])
    return claims


def claims_by_seed(rows: list[ResultRow], seeds: list[int] | None = None) -> dict[int, list[Claim]]:
    """:func:`evaluate_claims` per run seed (all the store's seeds, or ``seeds``)."""
    present = sorted({r.seed for r in rows})
    wanted = present if seeds is None else seeds
    return {seed: evaluate_claims([r for r in rows if r.seed == seed]) for seed in wanted}


def failed(claims: dict[int, list[Claim]]) -> list[tuple[int, str]]:
    """``(seed, claim)`` of every FAIL."""
    return [(seed, c.name) for seed, cs in claims.items() for c in cs if c.verdict == FAIL]


def seed_table(claims: dict[int, list[Claim]]) -> str:
    """Markdown: one row per claim, one column per seed, each cell the verdict and the claim's
    fitted numbers for that seed."""
    seeds = list(claims)
    names = list(dict.fromkeys(c.name for cs in claims.values() for c in cs))
    by = {(seed, c.name): c for seed, cs in claims.items() for c in cs}
    lines = [
        "| claim | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---" * (len(seeds) + 1) + "|",
    ]
    for name in names:
        cells = []
        for seed in seeds:
            c = by.get((seed, name))
            if c is None:
                cells.append("-")
                continue
            numbers = c.summary or ", ".join(f"{k} {_short(v)}" for k, v in c.figures.items())
            cells.append(f"**{c.verdict}**" + (f" ({numbers})" if numbers else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = []
    for name in names:
        verdicts = [by[(s, name)].verdict for s in seeds if (s, name) in by]
        counts.append(f"{name}: " + ", ".join(f"{v} {verdicts.count(v)}" for v in dict.fromkeys(verdicts)))
    return "\n".join([*lines, "", "Verdicts per claim over the seeds: " + "; ".join(counts) + ".", ""])


def _short(value: float) -> str:
    if value == 0 or 1e-2 <= abs(value) < 1e3:
        return f"{value:.3g}"
    return f"{value:.2g}"


def write_report(
    rows: list[ResultRow],
    path: str | Path,
    *,
    plots: list[Path] | None = None,
    summaries: list[Path] | None = None,
    claims: dict[int, list[Claim]] | None = None,
    overview: list[str] | None = None,
) -> Path:
    """``report.md``: the leaderboard's overview (``overview``: its lines, default computed), each
    claim with its measured evidence and verdict (per run seed; pass ``claims`` from
    :func:`claims_by_seed` to reuse them), then the figures, each with its caption (the
    ``.caption.md`` beside it, else the preset, tasks x repeats and seeds of the rows) and a link
    to its PDF."""
    path = Path(path)
    by_seed = claims_by_seed(rows) if claims is None else claims
    commits = sorted({r.provenance.git_commit for r in rows})
    wall = sum(r.wall_s for r in rows)
    lines = [
        "# Reproduction report: Liu et al., NeurIPS 2022 (arXiv 2112.15400)",
        "",
        f"{len(rows)} scored cells, {wall:.0f} s of cell compute, run seed(s) "
        f"{', '.join(map(str, by_seed))}, commit(s) {', '.join(f'`{c}`' for c in commits)}. Every figure "
        "is measured against the exact float64 meta-gradient (the official protocol's oracle in the "
        "paper-parity preset); CIs are 95% bootstrap intervals over tasks unless stated. Verdicts: PASS "
        "(supported), FAIL (contradicted), INCONCLUSIVE (the data cannot tell), n/a (rows missing).",
        "",
    ]
    lines += overview_lines(rows) if overview is None else overview
    if len(by_seed) > 1:
        lines += ["## Verdicts per seed", "", seed_table(by_seed)]
    for seed, seed_claims in by_seed.items():
        lines += [f"## Seed {seed}", "", "| claim | verdict |", "|---|---|"]
        lines += [f"| {c.name} | **{c.verdict}** |" for c in seed_claims]
        lines.append("")
        for c in seed_claims:
            lines += [
                f"### {c.name}: {c.verdict}",
                "",
                f"*Claim.* {c.statement}",
                "",
                f"*Criterion.* {c.criterion}.",
                "",
                f"*Why this criterion.* {c.source}.",
                "",
                f"*Measured.* {c.evidence}",
                "",
            ]
    if summaries:
        lines += ["## Tables", ""]
        lines += [f"- [{p.name}]({_relative(p, path.parent)})" for p in summaries]
        lines.append("")
    if plots:
        lines += ["## Figures", ""]
        for number, p in enumerate(plots, start=1):
            caption = caption_path(p)
            text = caption.read_text().strip() if caption.exists() else rows_caption(rows)
            pdf = p.with_suffix(".pdf")
            link = f" [PDF]({_relative(pdf, path.parent)})" if pdf.exists() else ""
            lines += [f"![{p.stem}]({_relative(p, path.parent)})", "", f"*Figure {number}.* {text}{link}", ""]
    return write_text_atomic(path, "\n".join(lines))


def write_suite_outputs(suite: str, rows: list[ResultRow], folder: str | Path, stem: str) -> list[Path]:
    """Plots and the markdown summary of one run's rows (``folder/stem_*``)."""
    s = SUITES[suite]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wall = sum(r.wall_s for r in rows)
    plots = s.write_figures(rows, folder, stem)
    summary = s.write_summary(rows, folder / f"{stem}_summary.md", wall)
    return [*plots, summary]


@dataclass(frozen=True)
class Outputs:
    """What :func:`write_outputs` wrote (``paths`` by name) and the claims per seed it judged."""

    paths: dict[str, Path]
    claims: dict[int, list[Claim]]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


DEFAULT_STORE_NAME = "rows.jsonl"


def output_prefix(store: str | Path) -> str:
    """The prefix of the outputs of a store: none for the default ``rows.jsonl``, else the store's
    name without its suffix and an underscore (``results/quick.jsonl`` -> ``quick_``), so that
    the outputs of two stores in one folder never overwrite each other."""
    store = Path(store)
    return "" if store.name == DEFAULT_STORE_NAME else f"{store.stem}_"


def output_paths(store: str | Path) -> dict[str, Path]:
    """The fixed outputs written beside ``store`` (leaderboard, report, HTML report, seed table)."""
    store = Path(store)
    prefix = output_prefix(store)
    names = {"leaderboard": "leaderboard.md", "report": "report.md", "html": "report.html"}
    names["seed_table"] = "seed_table.md"
    return {key: store.parent / f"{prefix}{name}" for key, name in names.items()}


def write_outputs(
    results: RunResults, folder: str | Path, seeds: list[int] | None = None, *, prefix: str = ""
) -> Outputs:
    """Per-run plots and summaries (``SUITE_PRESET_*``, ``SUITE_PRESET_seedS_*`` for a run seed
    other than the first), then ``leaderboard.md`` and ``report.md`` over all the rows,
    ``seed_table.md`` when the rows hold several run seeds (``seeds``: only those), and
    ``report.html``, all of it on one self-contained page (:mod:`metagrad.app.presenting.html`); every name
    starts with ``prefix`` (:func:`output_prefix` of the store)."""
    folder = Path(folder)
    plots: list[Path] = []
    summaries: list[Path] = []
    all_rows: list[ResultRow] = [
        r for rows in results.values() for r in rows if seeds is None or r.seed in seeds
    ]
    first = min((r.seed for r in all_rows), default=0)
    for (suite, preset), rows in results.items():
        for seed in sorted({r.seed for r in rows}):
            stem = f"{prefix}{suite}_{preset}" + ("" if seed == first else f"_seed{seed}")
            if seeds is not None and seed not in seeds:
                continue
            written = write_suite_outputs(suite, [r for r in rows if r.seed == seed], folder, stem)
            plots += [p for p in written if p.suffix == ".png" and seed == first]
            summaries += [p for p in written if p.suffix == ".md"]
    by_seed = claims_by_seed(all_rows)
    overview = overview_lines(all_rows)
    out = {
        "leaderboard": write_leaderboard(all_rows, folder / f"{prefix}leaderboard.md", overview),
        "report": write_report(
            all_rows,
            folder / f"{prefix}report.md",
            plots=plots,
            summaries=summaries,
            claims=by_seed,
            overview=overview,
        ),
    }
    if len(by_seed) > 1:
        out["seed_table"] = write_text_atomic(
            folder / f"{prefix}seed_table.md", "# Verdicts per seed\n\n" + seed_table(by_seed)
        )
    documents = [
        out["report"],
        out["leaderboard"],
        *([out["seed_table"]] if "seed_table" in out else []),
        *summaries,
    ]
    out["html"] = write_html(
        folder / f"{prefix}report.html", documents, title=f"metagrad report ({prefix.rstrip('_') or 'rows'})"
    )
    return Outputs(out, by_seed)


def _relative(p: Path, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(p)
