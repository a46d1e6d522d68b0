"""The `lineage` command line: one typer app; each command group lives in agent/commands/."""

from __future__ import annotations

import typer

from agent.commands import eval as eval_commands
from agent.commands import sandbox as sandbox_commands
from agent.commands import score as score_commands

app = typer.Typer(
    name="lineage",
    help="Evolve coding agents: model weights (ES) and scaffolding code, on one lineage.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(sandbox_commands.app, name="sandbox")
app.command(name="score")(score_commands.score)
app.command(name="eval")(eval_commands.eval_command)


def main() -> None:
    """Entry point: errors the user can fix are one clear line and exit code 2, not a traceback."""
    from sandbox.errors import SandboxError

    try:
        app()
    except SandboxError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
