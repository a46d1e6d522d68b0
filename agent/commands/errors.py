"""How every command reports an error the user can fix: one line on stderr, exit code 2."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape


def fail(message: object) -> typer.Exit:
    """Print `error: message` (never parsed as markup: paths and `[section]` names stay intact)
    and return the Exit to raise."""
    Console(stderr=True).print(
        f"[red]error:[/red] {escape(str(message))}", highlight=False, soft_wrap=True
    )
    return typer.Exit(2)
