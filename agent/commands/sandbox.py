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


@app.command()
def clean(
    all_: bool = typer.Option(
        False,
        "--all",
        help="Also remove containers of live Lineage processes (ours only, by label).",
    ),
) -> None:
    """Remove sandbox containers left by crashed runs and our outdated images (ours only, by label)."""
    from sandbox.containers import remove_leftovers
    from sandbox.image import remove_stale_images

    typer.echo(f"removed {remove_leftovers(everything=all_)} container(s)")
    typer.echo(f"removed {remove_stale_images()} outdated image(s)")


START_MODES = ("fork", "exec")


@app.command()
def selftest(
    image: str = typer.Option(None, help="Test this sandbox image instead of ours."),
    start: str = typer.Option(
        "both", help="How candidates start: fork (from a zygote), exec, or both in turn."
    ),
) -> None:
    """Run the adversarial suite against the real engine; exit 1 on any failure."""
    from rich.console import Console
    from rich.table import Table

    from agent.commands.errors import fail
    from sandbox import SandboxConfig, SandboxPool
    from sandbox.selftest import ATTACKS, run_attacks

    if start not in (*START_MODES, "both"):
        raise fail(f"--start must be fork, exec or both, got {start!r}")
    modes = START_MODES if start == "both" else (start,)
    console = Console()
    table = Table(title="sandbox selftest: each attack, then a canary on the same container")
    for column in ("start", "attack", "verdict", "seconds", "canary", "result"):
        table.add_column(column)
    results = []
    for mode in modes:
        config = SandboxConfig(workers=1, candidate_start=mode)
        with SandboxPool(config, image=image) as pool, console.status("") as status:
            done = 0

            def show(result, mode=mode) -> None:
                nonlocal done
                done += 1
                status.update(f"{mode} start, attack {done}/{len(ATTACKS)}: {result.attack.name}")
                table.add_row(
                    mode,
                    result.attack.name,
                    result.verdict.status.value,
                    f"{result.verdict.duration_s:.2f}",
                    result.canary.status.value,
                    "[green]ok[/]" if result.ok else f"[red]FAIL: {result.problem}[/]",
                )

            results += run_attacks(pool, on_result=show)
    console.print(table)
    failed = [r for r in results if not r.ok]
    if failed:
        console.print(f"[red]{len(failed)} of {len(results)} attack runs got through[/]")
        raise typer.Exit(1)
    console.print(f"[green]all {len(ATTACKS)} attacks contained ({' and '.join(modes)} start)[/]")
