"""`lineage sandbox build|clean|selftest`."""

from __future__ import annotations

import typer

app = typer.Typer(help="The Docker sandbox that runs all untrusted code.", no_args_is_help=True)


@app.command()
def build(
    image: str = typer.Option(None, help="Base a derived image on this image (must have python3)."),
    force: bool = typer.Option(False, help="Rebuild even if the recipe hash is unchanged."),
) -> None:
    """Build the sandbox image (only when its recipe changed)."""
    from sandbox.image import ensure_image

    tag = ensure_image(image, force=force)
    typer.echo(tag)
