"""Issue 13: the leaderboard overview, outputs of the whole store, paper-grade figures and the
one-page HTML report."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from rowkit import synthetic_row
from test_verdicts import _row

from metagrad.app.cli import main
from metagrad.app.judging.leaderboard import overview, paired_ranks, write_leaderboard
from metagrad.app.presenting import plotting
from metagrad.app.presenting.html import write_html
from metagrad.app.presenting.names import PALETTE
from metagrad.app.presenting.plotting import caption_path, series_panel
from metagrad.app.presenting.report import output_prefix

# --------------------------------------------------------------------------------------------
# Leaderboard


def _setting(combination: str, values: dict[str, tuple[list[float], list[float]]], **extra) -> list:
    """Paired rows of one setting: estimator -> (per-task bias_sq_debiased, per-task mse)."""
    return [
        _row(
            name,
            {"bias_sq_debiased": bias, "mse": mse},
            pairing=f"{combination}-{extra}",
            combination=combination,
            **extra,
        )
        for name, (bias, mse) in values.items()
    ]


def test_overview_orders_estimators_per_stage_by_probability_of_improvement(tmp_path):
    good, bad = [0.0, 0.01, 0.02, 0.0, 0.01, 0.0], [0.5, 0.6, 0.4, 0.5, 0.7, 0.5]
    rows = []
    for n in (8, 32):  # two settings per stage: the stratified bootstrap pools them
        rows += _setting("lee", {"a": (good, bad), "b": (bad, good)}, n_inner=n)
        rows += _setting("ele", {"a": (bad, bad), "b": (good, good)}, n_hessian=n)
    inner = overview(rows, "lee")
    assert [e.estimator for e in inner] == ["a", "b"] and [e.rank for e in inner] == [1, 2]
    assert inner[0].improvement["bias_sq_debiased"].estimate == 1.0 and inner[0].settings == 2
    assert inner[0].improvement["mse"].estimate == 0.0  # a has the higher MSE on every task
    hessian = overview(rows, "ele")
    assert [e.estimator for e in hessian] == ["b", "a"]
    text = write_leaderboard(rows, tmp_path / "lb.md").read_text()
    assert text.index("## Overview") < text.index("## Per setting")
    assert "### Inner stage" in text and "### Hessian stage" in text and "nan" not in text
    # no outer-stage rows: said in one line
    outer = text.split("### Outer stage")[1].split("###")[0]
    assert "nothing to rank" in outer


def test_setting_tables_rank_once_and_state_ties(tmp_path):
    # a: an unresolved zero with a wide spread; b: a resolved small value
    rows = _setting(
        "lll",
        {
            "a": ([0.3, -0.3, 0.25, -0.25, 0.0, 0.0], [1.0] * 6),
            "b": ([0.01, 0.012, 0.011, 0.009, 0.01, 0.01], [1.0] * 6),
        },
    )
    ranked = paired_ranks(rows, "bias_sq_debiased")
    assert [r.estimator for _, r, _ in ranked] == ["b", "a"] and {rank for rank, _, _ in ranked} == {1}
    text = write_leaderboard(
        [*rows, _row("solo", {"mse": [1.0, 2.0]}, pairing="q", combination="eee")], tmp_path / "l.md"
    ).read_text()
    assert "Ties (the data cannot order them): b, a (rank 1)" in text
    assert (
        text.split("## Per setting")[1].count("| rank by ") == 2
    )  # one ranking per table: bias, MSE (equal costs: no third)
    assert "only solo" in text and "nothing to rank" in text


# --------------------------------------------------------------------------------------------
# Figures


def _bias_row(estimator: str, n: int, bias: float, low: float, high: float, **fields):
    return synthetic_row(
        cell_id=f"{estimator}{n}{fields}",
        estimator=estimator,
        experiment="sweep_n",
        n_inner=n,
        bias_debiased=bias,
        bias_ci_low=low,
        bias_ci_high=high,
        **fields,
    )


@pytest.fixture
def figures(monkeypatch):
    """Every figure saved through plotting.save_figure, kept for inspection."""
    kept = []
    real = plotting.save_figure

    def keep(fig, path, **kwargs):
        kept.append(fig)
        return real(fig, path, **kwargs)

    monkeypatch.setattr(plotting, "save_figure", keep)
    return kept


def _legend_colours(fig) -> dict[str, str]:
    """Legend label -> colour of its line (an error-bar container's data line)."""
    out = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            line = handle[0] if isinstance(handle, tuple) else handle
            out[label] = line.get_color()
    return out


def _lines(fig):
    return [line for ax in fig.axes for line in ax.get_lines()]


def test_one_palette_zero_points_drawn_pdf_dpi_and_caption(tmp_path, figures):
    dice = [_bias_row("dice", n, 0.1 / n**0.5, 0.05 / n**0.5, 0.2 / n**0.5) for n in (2, 8, 32)]
    pg = [
        _bias_row("pg", 2, 0.2, 0.1, 0.3),
        _bias_row("pg", 8, 0.0, 0.0, 0.05),
        _bias_row("pg", 32, 0.0, 0.0, 0.0),
    ]
    first = series_panel(
        tmp_path / "a.png", {"DiCE": dice, "PG": pg}, "n_inner", "bias_debiased",
        xlabel="n", ylabel="bias", title="t", loglog=True, reference_slope=-0.5,
    )  # fmt: skip
    series_panel(
        tmp_path / "b.png",
        {"PG": pg[:1], "DiCE": dice},
        "n_inner",
        "corr",
        xlabel="n",
        ylabel="corr",
        title="t",
    )
    a, b = figures
    colour = {fig: _legend_colours(fig) for fig in (a, b)}
    # the same estimator has the same colour in both figures: the palette's, defined once
    assert colour[a]["PG"] == colour[b]["PG"] == PALETTE["pg"].color
    assert (
        next(v for k, v in colour[a].items() if k.startswith("DiCE"))
        == colour[b]["DiCE"]
        == PALETTE["dice"].color
    )
    # the unresolved point (CI to 0): an open down-triangle at its upper end; the exact zero: at the bottom
    bounds = [line for line in _lines(a) if line.get_marker() == "v"]
    ys = sorted(float(y) for line in bounds for y in line.get_ydata())
    assert 0.05 in ys and 0.02 in ys  # 0.02: axes fraction of the bottom-edge marker
    assert "nan" not in " ".join(
        t.get_text() for ax in a.axes if ax.get_legend() for t in ax.get_legend().get_texts()
    )
    assert a.axes[0].get_xscale() == "log"  # n = 2..32, powers of two: log2 axis
    assert {t for t in a.axes[0].get_xticks()} >= {2.0, 8.0, 32.0}
    assert any(label.startswith("slope -0.5") for label in _legend_colours(a))
    with Image.open(first) as img:
        assert min(img.info["dpi"]) >= 150
    assert first.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    caption = caption_path(first).read_text()
    assert "Preset tabular/p" in caption and "upper end" in caption and "bottom edge" in caption


# --------------------------------------------------------------------------------------------
# Outputs of the whole store, one page


TINY_TABULAR = ["--num-tasks", "2", "--repeats", "3", "--estimators", "dice,pg", "--n", "4,8"]


def _bench(store: Path, *args: str) -> None:
    assert main(["bench", *args, "--store", str(store), "--no-progress", "--backend", "serial"]) == 0


@pytest.fixture(scope="module")
def two_suites(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    store = folder / "rows.jsonl"
    _bench(store, "tabular", "--preset", "quick", "--experiments", "decomposition", *TINY_TABULAR)
    _bench(
        store, "ipd", "--preset", "quick", "--experiments", "decomposition", "--num-tasks", "2", "--n", "8"
    )
    return folder


def test_bench_rebuilds_outputs_from_the_whole_store(two_suites):
    report = (two_suites / "report.md").read_text()
    leaderboard = (two_suites / "leaderboard.md").read_text()
    # the second bench (ipd) did not shrink the outputs to its own rows
    assert "tabular/quick" in leaderboard and "ipd/quick" in leaderboard
    assert "ipd_quick_summary.md" in report and "tabular_quick_summary.md" in report
    stored = len((two_suites / "rows.jsonl").read_text().splitlines())
    assert report.startswith("# ") and f"{stored} scored cells" in report
    assert "Preset tabular/quick" in report
    assert (two_suites / "tabular_quick_decomposition_corr.png").exists()
    assert (two_suites / "tabular_quick_decomposition_corr.pdf").exists()
    assert report.count("*Figure ") >= 2 and "[PDF](" in report


def test_two_stores_in_one_folder_keep_their_own_outputs(two_suites, tmp_path):
    assert output_prefix("results/rows.jsonl") == "" and output_prefix("results/quick.jsonl") == "quick_"
    lines = (two_suites / "rows.jsonl").read_text().splitlines()
    for name, bench in (("one", "tabular"), ("two", "ipd")):
        mine = [line for line in lines if json.loads(line)["bench"] == bench]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(mine) + "\n")
        assert main(["report", "--store", str(tmp_path / f"{name}.jsonl")]) == 0
    one, two = (tmp_path / "one_leaderboard.md").read_text(), (tmp_path / "two_leaderboard.md").read_text()
    assert "tabular/quick" in one and "ipd/quick" not in one
    assert "ipd/quick" in two and "tabular/quick" not in two
    assert (tmp_path / "one_report.html").exists() and (tmp_path / "two_report.html").exists()
    assert (tmp_path / "one_tabular_quick_summary.md").exists() and (
        tmp_path / "two_ipd_quick_summary.md"
    ).exists()
    assert not (tmp_path / "leaderboard.md").exists()


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables = 0
        self.urls: list[str] = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "table":
            self.tables += 1
        self.urls += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith("data:")]

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_is_self_contained(two_suites):
    page = (two_suites / "report.html").read_text()
    parser = _Page()
    parser.feed(page)
    assert parser.images and parser.tables >= 2
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "http://" not in page and "https://" not in page
    assert all(u.startswith("#") for u in parser.urls)  # links only within the page
    text = "".join(parser.text)
    assert (
        "Overview: which estimator for which stage" in text
        and "Figure 1." in text
        and "nan ± nan" not in text
    )


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_html_report_renders_in_a_headless_browser(two_suites):
    """Every figure loads (naturalWidth > 0) and the page is not blank, in headless Chromium."""
    browser = _browser()
    if browser is None:
        pytest.skip("no headless browser on this machine (chromium, chromium-browser, google-chrome)")
    script = (
        "<script>window.onload=()=>{const i=[...document.images];document.title="
        "'IMAGES '+i.length+' LOADED '+i.filter(x=>x.complete&&x.naturalWidth>0).length+"
        "' TEXT '+document.body.innerText.length;}</script>"
    )
    page = two_suites / "probe.html"
    page.write_text((two_suites / "report.html").read_text().replace("</body>", script + "</body>"))
    out = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    title = out.stdout.split("<title>")[1].split("</title>")[0].split()
    images, loaded, text = int(title[1]), int(title[3]), int(title[5])
    assert images > 0 and loaded == images and text > 1000


def test_write_html_drops_links_out_of_the_page(tmp_path):
    (tmp_path / "f.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "r.md").write_text(
        "# R\n\n![f](f.png)\n\n[PDF](f.pdf) [table](t.md)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    (tmp_path / "t.md").write_text("# T\n")
    page = write_html(tmp_path / "r.html", [tmp_path / "r.md", tmp_path / "t.md"]).read_text()
    assert 'href="#doc-t-md"' in page and "f.pdf" not in page and "<table>" in page
    assert page.split('src="')[1].startswith("data:image/png;base64,")
