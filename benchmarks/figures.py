"""How a benchmark shows its figures: one table (figure, value, and the target where it has one).

Imported by the scripts beside it (`python benchmarks/X.py` puts this folder on sys.path)."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.table import Table


def print_figures(
    title: str,
    figures: Mapping[str, object],
    *,
    targets: Mapping[str, str] | None = None,
    digits: int | None = 3,
    console: Console | None = None,
) -> None:
    """Print `figures` in order; floats with `digits` decimals (None: as `str` writes them)."""
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    if targets is not None:
        table.add_column("target")
    for key, value in figures.items():
        text = (
            f"{value:.{digits}f}" if digits is not None and isinstance(value, float) else str(value)
        )
        table.add_row(key, text, *([targets.get(key, "")] if targets is not None else []))
    (console or Console()).print(table)
