"""The `lineage` command line: one typer app; each command group lives in agent/commands/."""

from __future__ import annotations

import os

import typer

from agent.commands import eval as eval_commands
from agent.commands import export as export_commands
from agent.commands import graph as graph_commands
from agent.commands import run as run_commands
from agent.commands import sandbox as sandbox_commands
from agent.commands import score as score_commands
from agent.commands import serve as serve_commands

app = typer.Typer(
    name="lineage",
    help="Evolve coding agents: model weights (ES) and scaffolding code, on one lineage.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(sandbox_commands.app, name="sandbox")
app.command(name="score")(score_commands.score)
app.command(name="eval")(eval_commands.eval_command)
app.command(name="graph")(graph_commands.graph)
app.command(name="serve")(serve_commands.serve)
app.command(name="run")(run_commands.run)
app.command(name="resume")(run_commands.resume)
app.command(name="status")(run_commands.status)
app.command(name="export")(export_commands.export)


def main() -> None:
    """Entry point: errors the user can fix are one clear line and exit code 2, not a traceback."""
    from sandbox.errors import SandboxError

    # vLLM logs its engine's setup at INFO, and a warning per cast weight, over the progress
    # bars; a user who wants them sets VLLM_LOGGING_LEVEL. Here, not at import: code that imports
    # the app (the tests read vLLM's log) keeps vLLM's default.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

    try:
        app()
    except SandboxError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
