"""`lineage run [CONFIG.toml]`, `lineage resume RUN_DIR`, `lineage status RUN_DIR`."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agent.commands.errors import fail
from agent.commands.paths import absolute
from lineage_files import write_atomically


def run(
    config: Annotated[
        Path | None,
        typer.Argument(help="Run config (TOML). Every key has a default.", callback=absolute),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir", help="Where the run lives (default runs/<time>).", callback=absolute
        ),
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="Override [budget] iterations.")] = None,
) -> None:
    """Start a run: evaluate the base node, then evolve weights and scaffold until a budget ends."""
    from agent.loop.config import ConfigError, load_config

    console = Console(stderr=True)
    try:
        cfg = with_iterations(load_config(config), iterations)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    run_dir = run_dir or absolute(Path("runs") / time.strftime("run-%Y%m%d-%H%M%S"))
    if (run_dir / "config.json").exists():
        raise fail(f"{run_dir} already holds a run: use `lineage resume {run_dir}`")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(run_dir / "config.json", cfg.to_json())
    if config is not None:
        shutil.copyfile(config, run_dir / "config.toml")
    _go(cfg, run_dir, console)


def with_iterations(cfg, iterations: int | None):
    """The config with [budget] iterations replaced (validated like the file itself)."""
    from agent.loop.config import from_dict

    if iterations is None:
        return cfg
    data = json.loads(cfg.to_json())
    data["budget"]["iterations"] = iterations
    return from_dict(data, "--iterations")


def resume(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory made by `lineage run`.", callback=absolute)
    ],
    iterations: Annotated[
        int | None, typer.Option(help="Raise [budget] iterations (total, not additional).")
    ] = None,
) -> None:
    """Continue a stopped or killed run exactly where it left off."""
    from agent.loop.config import ConfigError, load_saved

    console = Console(stderr=True)
    try:
        cfg = with_iterations(load_saved(run_dir), iterations)
        if iterations is not None:
            write_atomically(run_dir / "config.json", cfg.to_json())
    except ConfigError as exc:
        raise fail(str(exc)) from None
    _go(cfg, run_dir, console)


def _go(cfg, run_dir: Path, console: Console) -> None:
    from agent.loop.config import ConfigError
    from agent.loop.evaluation import InfraError
    from agent.loop.loop import Loop, SeedScaffoldError
    from agent.loop.runtime import Runtime
    from agent.policy.backend import EngineDied
    from archive import ArchiveError

    console.print(f"[bold]run directory:[/bold] {run_dir}", highlight=False)
    try:
        with Runtime(cfg, run_dir) as rt:
            console.print(f"[bold]generating with:[/bold] {rt.policy.kind}", highlight=False)
            summary = Loop(rt, console).run()
    except (ArchiveError, ConfigError) as exc:
        raise fail(str(exc)) from None
    except (SeedScaffoldError, InfraError, EngineDied) as exc:  # ours to fix, not the agent's
        fail(f"{exc} (stopped; what is stored is kept: `lineage resume {run_dir}`)")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted; continue with: lineage resume {run_dir}[/yellow]")
        raise typer.Exit(130) from None
    console.print(f"stopped: {summary.stopped} after {summary.iterations} iterations")
    if summary.table:
        table = Table(title="base vs best node (chosen by dev score)")
        splits = sorted({k for row in summary.table for k in row} - {"node", "id", "operator"})
        for col in ("node", "id", "operator", *splits):
            table.add_column(col)
        for row in summary.table:
            table.add_row(
                *(str(row.get(c, "")) for c in ("node", "id", "operator")),
                *(f"{row[s]:.3f}" if s in row else "-" for s in splits),
            )
        Console().print(table)
    if summary.heldout_difference is not None:
        d = summary.heldout_difference
        if summary.best_id == summary.base_id:
            Console().print(
                "best by dev is the base: no node beat it task by task on dev (see "
                "[selection] frontier_alpha)",
                highlight=False,
            )
        else:
            Console().print(
                f"held-out, {summary.best_id} minus base: {d.describe()}, 95% paired bootstrap",
                highlight=False,
            )


def status(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.", callback=absolute)],
) -> None:
    """Nodes by operator and status, best scores per split, budget spent."""
    from agent.loop.config import ConfigError, load_saved
    from agent.loop.frontier import frontier
    from agent.loop.loop import Spent
    from archive import Archive, ArchiveError

    try:
        cfg = load_saved(run_dir)
        archive = Archive(run_dir, readonly=True)
    except (ConfigError, ArchiveError) as exc:
        raise fail(str(exc)) from None
    out = Console()
    if not out.is_terminal:  # piped or logged: rich's 80 columns would fold every table
        out = Console(width=max(out.width, 132))
    with archive:
        nodes = list(archive.nodes())
        best_id, steps = frontier(archive, cfg.selection.frontier_alpha)
    counts: dict[tuple[str, str], int] = {}
    best: dict[str, tuple[float, int, str]] = {}
    for n in nodes:
        counts[(n.operator, str(n.status))] = counts.get((n.operator, str(n.status)), 0) + 1
        for split, s in n.scores.items():
            if split not in best or s.score > best[split][0]:
                best[split] = (s.score, s.n, n.id)
    table = Table(title=f"nodes in {run_dir}")
    statuses = sorted({s for _, s in counts})
    table.add_column("operator")
    for s in statuses:
        table.add_column(s, justify="right")
    for op in sorted({o for o, _ in counts}):
        table.add_row(op, *(str(counts.get((op, s), 0)) for s in statuses))
    out.print(table)
    out.print(nodes_table(nodes))
    out.print(outcomes_table(nodes, cfg.selection.frontier_alpha))
    out.print(f"best by dev (the frontier): {best_id}", highlight=False)
    for step in steps:
        out.print(f"  {step.node} beat {step.against} on dev: {step.difference.describe()}")
    scores = Table(title="best score per split")
    for col in ("split", "score", "n", "node"):
        scores.add_column(col)
    for split, (score, n, node) in sorted(best.items()):
        scores.add_row(split, f"{score:.3f}", str(n), node)
    out.print(scores)
    spent = Spent.read(run_dir / "spent.json")
    b = cfg.budget
    budget = Table(title="budget")
    for col in ("budget", "spent", "limit"):
        budget.add_column(col)
    done = max((int(n.id[1:]) for n in nodes if n.id[1:].isdigit()), default=0)
    budget.add_row("iterations", str(done), str(b.iterations))
    budget.add_row("wall clock (s)", f"{spent.wall_s:.0f}", str(b.wall_clock_s))
    budget.add_row("generated tokens", str(spent.generated_tokens), str(b.generated_tokens))
    budget.add_row("sandbox (s)", f"{spent.sandbox_s:.0f}", str(b.sandbox_s))
    out.print(budget)


NODES_SHOWN = 40  # the newest; `lineage graph` draws them all
SPLITS = ("train", "dev", "heldout")  # n per split is in the "best score per split" table


def outcomes_table(nodes: list, alpha: float) -> Table:
    """What each operator's children came to: failed (and why), stopped at stage 1, judged on
    dev, above their parent there, and above it with the frontier's paired significance."""
    from agent.loop.outcomes import operator_outcomes

    table = Table(title="children by operator (each against its parent)")
    for col in ("operator", "made", "failed", "pending", "stage 1 only", "on dev", "above parent"):
        table.add_column(col, justify="left" if col == "operator" else "right")
    table.add_column(f"significant (p<={alpha:g})", justify="right")
    table.add_column("mean dev change", justify="right")
    table.add_column("why they failed", overflow="fold")
    for op, row in operator_outcomes(nodes, alpha).items():
        mean = row.mean_dev_change
        table.add_row(
            op,
            str(row.made),
            str(row.failed),
            str(row.pending),
            str(row.stopped_at_stage1),
            str(row.judged_on_dev),
            str(row.above_parent),
            str(row.significant),
            "-" if mean is None else f"{mean:+.3f}",
            ", ".join(f"{k} x{v}" for k, v in row.reasons.most_common(4)),
        )
    return table


def nodes_table(nodes: list) -> Table:
    """One row per node: scores, wrong answers apart from agent errors (no program at all),
    and why a failed node failed."""
    from agent.loop.frontier import ROOT_ID, results
    from archive.drawing.view import outcome_totals
    from evaluators.stats import paired_on_shared, wilson_interval

    base = next((results(n, "dev") for n in nodes if n.id == ROOT_ID), {})
    shown = nodes[-NODES_SHOWN:]
    title = (
        "nodes" if len(shown) == len(nodes) else f"the newest {len(shown)} of {len(nodes)} nodes"
    )
    table = Table(title=title)
    for col in ("node", "operator", "status", "train", "dev", "heldout", "wrong", "agent errors"):
        table.add_column(
            col, justify="right" if col not in ("node", "operator", "status") else "left"
        )
    table.add_column("dev 95%", justify="right")
    table.add_column("dev vs base, paired", justify="right")
    table.add_column("failure reason", overflow="fold")
    for n in shown:
        totals = outcome_totals(n)
        scores = [f"{n.scores[s].score:.3f}" if s in n.scores else "-" for s in SPLITS]
        counts = [str(totals[k]) if k in totals else "-" for k in ("wrong", "agent_error")]
        dev = n.scores.get("dev")
        interval = "-"
        if dev is not None and dev.n:
            low, high = wilson_interval(round(dev.score * dev.n), dev.n)
            interval = f"[{low:.2f}, {high:.2f}]"
        mine = results(n, "dev")
        paired = "-"
        if n.id != ROOT_ID and mine and base:
            d = paired_on_shared(base, mine)
            paired = f"{d.diff:+.3f} [{d.low:+.2f}, {d.high:+.2f}] one-sided p={d.p_greater:.2g}"
        table.add_row(
            n.id,
            n.operator,
            str(n.status),
            *scores,
            *counts,
            interval,
            paired,
            (n.failure_reason or "")[:160],
        )
    return table
