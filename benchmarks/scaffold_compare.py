"""The seed scaffold against a hand-written improved one, same model, same tasks, one run.

Both run the real path: the scaffold in the sandbox, its LLM calls through the gateway to one
batched backend, its answers scored in a separate pool. The improved scaffold is the seed with the
files of `--variant` laid over it (default: benchmarks/scaffolds/selftests, sample 7 and choose
by self-written tests). Its own tests must pass in the sandbox first.

    python benchmarks/scaffold_compare.py [--model default] [--split mbpp:dev] [--limit 0] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--split", default="mbpp:dev")
    parser.add_argument("--limit", type=int, default=0, help="first N tasks of the split (0: all)")
    parser.add_argument("--variant", type=Path, default=HERE / "scaffolds" / "selftests")
    parser.add_argument("--agent-workers", type=int, default=4)
    parser.add_argument("--max-tokens-per-call", type=int, default=384, help="gateway cap per row")
    parser.add_argument("--wall-s", type=float, default=900.0, help="wall clock of one agent job")
    parser.add_argument("--tasks-per-job", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from agent.gateway import Gateway, GatewayConfig, tokenizer_chat_template
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
    from agent.scaffold.jobs import selftest_job
    from agent.scaffold.repo import read_files, seed_files
    from agent.scaffold.solving import Scoring, SolveConfig, solve
    from evaluators.splits import load_split
    from evaluators.timeouts import calibrate
    from sandbox import Limits, SandboxConfig, SandboxPool

    console = Console(stderr=True)
    tasks = load_split(args.split)
    tasks = tasks[: args.limit] if args.limit else tasks
    scaffolds = {"seed": seed_files(), "improved": {**seed_files(), **read_files(args.variant)}}
    backend = TransformersBackend.from_config(TransformersBackendConfig(model=args.model))
    rows, figures, passed_ids = [], {}, {}
    with (
        Gateway(backend, GatewayConfig(), tokenizer_chat_template(backend.tokenizer)) as gateway,
        SandboxPool(SandboxConfig()) as scoring_pool,
        SandboxPool(
            SandboxConfig(
                workers=args.agent_workers, gateway_dir=str(Path(gateway.socket_path).parent)
            )
        ) as agent_pool,
    ):
        (check,) = agent_pool.run(
            [selftest_job(scaffolds["improved"], Limits(wall_s=120, cpu_s=120))]
        )
        failures = check.kept[0]["failures"] if check.kept else [check.detail]
        if failures:
            raise SystemExit(f"the improved scaffold fails its own tests: {failures[0]}")
        timeouts = calibrate(tasks, scoring_pool)
        solve_config = SolveConfig(
            tasks_per_job=args.tasks_per_job,
            wall_s=args.wall_s,
            max_tokens_per_call=args.max_tokens_per_call,
        )
        for name, files in scaffolds.items():
            started = time.perf_counter()
            result = solve(
                files,
                tasks,
                agent_pool,
                gateway,
                solve_config,
                scoring=Scoring(scoring_pool, timeouts),
            )
            seconds = time.perf_counter() - started
            passed = sum(a.passed for a in result.attempts)
            passed_ids[name] = {a.task.task_id for a in result.attempts if a.passed}
            errors = sum(a.error is not None for a in result.attempts)
            rows.append(
                (name, passed, len(tasks), passed / len(tasks), result.tokens, seconds, errors)
            )
            figures[f"{name}_pass1"] = passed / len(tasks)
            figures[f"{name}_tokens"] = result.tokens
            figures[f"{name}_s"] = round(seconds, 1)
            figures[f"{name}_agent_errors"] = {
                a.task.task_id: a.error for a in result.attempts if a.error is not None
            }
            console.print(f"{name}: {passed}/{len(tasks)} in {seconds:.0f} s", highlight=False)
    figures["improved_minus_seed"] = figures["improved_pass1"] - figures["seed_pass1"]
    # Paired: the tasks only one of them passes (a tie can hide wins and losses).
    figures["improved_only"] = sorted(passed_ids["improved"] - passed_ids["seed"])
    figures["seed_only"] = sorted(passed_ids["seed"] - passed_ids["improved"])
    figures["token_ratio"] = figures["improved_tokens"] / max(figures["seed_tokens"], 1)
    figures.update(model=args.model, split=args.split, tasks=len(tasks))
    table = Table(title=f"scaffolds on {args.split} ({len(tasks)} tasks, model {args.model})")
    for col in ("scaffold", "passed", "tasks", "pass@1", "tokens", "seconds", "agent errors"):
        table.add_column(col)
    for name, passed, n, rate, tokens, seconds, errors in rows:
        table.add_row(
            name, str(passed), str(n), f"{rate:.3f}", str(tokens), f"{seconds:.0f}", str(errors)
        )
    Console().print(table)
    console.print(
        f"paired: improved alone passes {len(figures['improved_only'])} tasks, the seed alone "
        f"{len(figures['seed_only'])}",
        highlight=False,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
