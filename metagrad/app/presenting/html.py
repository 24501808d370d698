"""One self-contained static page: ``report.html``, beside ``report.md``.

The page is the report, the leaderboard and the per-run summaries (the markdown the suite
writes, rendered with Python-Markdown and its ``tables`` extension) in one file: every figure is
embedded as a ``data:image/png;base64`` URI, the style sheet is inline, and nothing refers to
the network, so it opens anywhere (a browser, an e-mail attachment, a CI artifact) as it is.
Links between the markdown files become links within the page; links to the PDFs beside the
figures are dropped (the PNG is in the page).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

import markdown

from metagrad.app.presenting.outputs import write_text_atomic

__all__ = ["render_html", "write_html"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
.caption { font-size: 0.85em; color: #444; margin: 0 0 1.5em 0; }
section { border-top: 2px solid #ddd; margin-top: 2em; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""

_IMG = re.compile(r'<img alt="([^"]*)" src="([^"]+)"\s*/?>')
_LINK = re.compile(r'<a href="([^"]+)">(.*?)</a>')


def _anchor(name: str) -> str:
    return "doc-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def render_html(title: str, documents: Sequence[Path]) -> str:
    """The page for the markdown ``documents`` (the first is the main one): each a section,
    figures embedded, links between them made local."""
    names = {doc.name: _anchor(doc.name) for doc in documents}
    sections = []
    for doc in documents:
        body = markdown.markdown(doc.read_text(encoding="utf-8"), extensions=["tables"])

        def embed(match: re.Match[str], folder: Path = doc.parent) -> str:
            alt, src = match.group(1), match.group(2)
            path = folder / src
            if src.startswith("data:") or not path.is_file():
                return f'<p class="caption">(figure {html.escape(src)} missing)</p>'
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            return f'<img alt="{alt}" src="data:image/png;base64,{data}">'

        def relink(match: re.Match[str]) -> str:
            href, text = match.group(1), match.group(2)
            target = Path(href).name
            if target in names:
                return f'<a href="#{names[target]}">{text}</a>'
            return text  # a PDF or any other file beside the report: the page stands alone

        body = _LINK.sub(relink, _IMG.sub(embed, body))
        sections.append(f'<section id="{names[doc.name]}">\n{body}\n</section>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def write_html(path: str | Path, documents: Sequence[Path], title: str = "metagrad report") -> Path:
    """Write :func:`render_html` of ``documents`` to ``path`` (atomically)."""
    return write_text_atomic(path, render_html(title, documents))
