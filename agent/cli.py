"""The `lineage` command line: one typer app; each command group lives in agent/commands/."""

from __future__ import annotations

import typer

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
