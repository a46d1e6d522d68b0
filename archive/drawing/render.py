"""Pictures of the lineage: one offline HTML file (SVG + vanilla JS) and a static PNG.

Both draw `archive.drawing.view.lineage_view`. The HTML page is self-contained (style, script and data
inlined, nothing fetched) so it opens on a machine without internet; `lineage serve` sends the
same page with `live=True`, and the script then polls the server instead of reading inline data.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archive.drawing.view import lineage_view

if TYPE_CHECKING:
    from archive.store import Archive

_SLOT = re.compile(r"\{\{(title|style|script|config|data)\}\}")


def page_html(
    view: dict[str, Any] | None,
    *,
    title: str = "Lineage",
    live: bool = False,
    url: str = "/api/lineage",
    interval_ms: int = 3000,
) -> str:
    """The page: `view` inlined (static file) or None with live=True (the script polls `url`)."""
    if view is None and not live:
        raise ValueError("a static page needs a view to show")
    web = resources.files("archive.drawing") / "web"
    config = {"live": live, "url": url, "interval_ms": interval_ms}
    slots = {
        "title": html.escape(title),
        "style": (web / "lineage.css").read_text(encoding="utf-8"),
        "script": (web / "lineage.js").read_text(encoding="utf-8"),
        "config": script_json(config),
        "data": script_json(view),
    }
    template = (web / "page.html").read_text(encoding="utf-8")
    return _SLOT.sub(lambda m: slots[m.group(1)], template)  # one pass: data cannot add slots


def script_json(value: Any) -> str:
    """JSON safe inside <script>: no '<' can close the element or open a comment."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def render_html(archive: Archive, path: str | Path, *, title: str | None = None) -> Path:
    """Write the lineage as one self-contained HTML file (tree, best-score chart, details)."""
    path = Path(path)
    view = lineage_view(archive)
    page = page_html(view, title=title or f"Lineage: {archive.run_dir.name}")
    path.write_text(page, encoding="utf-8")
    return path


def render_png(archive: Archive, path: str | Path, *, dpi: int = 110) -> Path:
    """Write the lineage tree as a PNG: nodes coloured by score, shaped by operator."""
    from archive.drawing.png import draw_png

    view = lineage_view(archive, details=False)
    counts = ", ".join(f"{v} {k}" for k, v in view["counts"].items() if v)
    title = f"{archive.run_dir.name}: {len(view['nodes'])} nodes ({counts})"
    return draw_png(view, Path(path), title=title, dpi=dpi)
