"""`lineage graph RUN_DIR --html FILE --png FILE`: pictures of a run's lineage.

Opens the archive read-only, so it works on a run that is still going.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agent.commands.errors import fail
from agent.commands.paths import absolute


def graph(
    run_dir: Annotated[
        Path, typer.Argument(help="Run directory (holds archive.sqlite).", callback=absolute)
    ],
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Write a self-contained HTML view here.", callback=absolute),
    ] = None,
    png: Annotated[
        Path | None, typer.Option("--png", help="Write a static PNG here.", callback=absolute)
    ] = None,
) -> None:
    """Draw the lineage tree: an interactive offline HTML page and/or a PNG."""
    import agent.loop.operators  # noqa: F401  (each registers how its nodes are drawn)
    from archive import Archive, ArchiveError
    from archive.drawing.render import render_html, render_png

    console = Console(stderr=True, soft_wrap=True)  # paths stay whole
    if html is None and png is None:
        console.print("[red]error:[/red] nothing to write: give --html FILE and/or --png FILE")
        raise typer.Exit(2)
    try:
        with Archive(run_dir, readonly=True) as archive:
            written = []
            if html is not None:
                written.append(render_html(archive, html))
            if png is not None:
                written.append(render_png(archive, png))
            count = len(archive)
    except ArchiveError as exc:
        raise fail(f"{run_dir} is not a readable run directory: {exc}") from exc
    except (OSError, RuntimeError) as exc:  # unwritable output path, matplotlib missing
        raise fail(exc) from exc
    for path in written:
        console.print(f"wrote {path} ({count} nodes)", highlight=False)
