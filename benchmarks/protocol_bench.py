"""Protocols against published figures: pass@1 per model x protocol x benchmark, greedy.

    python benchmarks/protocol_bench.py --json PATH [--models default,coder-1.5b]
        [--protocols instruct,completion] [--benchmarks humaneval,mbpp,mbpp-example]
        [--backend vllm|transformers] [--check-transformers] [--limit N] [--out DIR]

Every cell generates with `lineage eval`'s own code (`generate_records`: the same prompts, stops,
token budgets and sanitizer) and is scored by `lineage score` in the sandbox, so a cell's pass@1 is
what `lineage eval --model M --protocol P --benchmark B` prints. Figures per cell, keyed
`{model}_{protocol}_{benchmark}` (model `default` or `coder15`, benchmark `humaneval`, `mbpp`,
`mbpp_example`): `pass@1`, `passed`, `tasks`, `tokens`, `seconds`, `tok_s`, `backend`, and
`published` (the Qwen2.5-Coder technical report's EvalPlus figure for the instruct model's
original bf16 weights: HumanEval, and EvalPlus's MBPP, whose prompt shows one assert as
`mbpp-example`'s does; None where nothing comparable was published). `--check-transformers` adds
`{model}_instruct_humaneval_transformers` (the same cell on the transformers backend, bf16
where the CPU computes it natively).

Each model runs in its own child process (one engine, reused for all its cells; vLLM's CPU
engine takes a share of RAM that is only freed when its process ends). On a CPU, vLLM is bound
to every core (`VLLM_CPU_OMP_THREADS_BIND=0-N`, nothing reserved), which doubles its rate on a
2-core machine. Finished cells are kept in `--out` (default runs/protocol_bench), so a stopped
run continues where it was.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from figures import print_figures

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL_KEYS = {"default": "default", "coder-1.5b": "coder15"}
# Qwen2.5-Coder technical report (arXiv 2409.12186), instruct models, EvalPlus, bf16: HumanEval
# and MBPP (EvalPlus's MBPP shows the model one assert, as mbpp-example does).
PUBLISHED = {
    ("default", "humaneval"): 0.616,
    ("default", "mbpp-example"): 0.524,
    ("coder-1.5b", "humaneval"): 0.707,
    ("coder-1.5b", "mbpp-example"): 0.692,
}
BENCHMARKS = ("humaneval", "mbpp", "mbpp-example")
PROTOCOLS = ("instruct", "completion")


def cell_key(model: str, protocol: str, benchmark: str, backend: str | None = None) -> str:
    key = f"{MODEL_KEYS.get(model, model)}_{protocol}_{benchmark.replace('-', '_')}"
    return f"{key}_{backend}" if backend else key


def cpu_vllm_environment() -> None:
    """Bind vLLM's CPU worker to every core and reserve none (its default binds one core and
    reserves the other on a 2-core machine, halving its rate)."""
    import torch

    if not torch.cuda.is_available():
        cores = os.cpu_count() or 1
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{cores - 1}")
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def load_policy(model: str, backend: str):
    """The backend for generation only, built as `lineage eval --backend` builds it."""
    from agent.commands.eval import load_backend

    if backend == "vllm":
        cpu_vllm_environment()
    return load_backend(backend, model, "auto", 0)


def run_cells(args: argparse.Namespace) -> None:
    """The child: one model and backend, every cell asked for that is not done yet."""
    from agent.commands import score as score_commands
    from agent.commands.eval import generate_records, write_records
    from agent.policy import prompts
    from agent.policy.backend import GenerationConfig
    from evaluators.datasets import load_benchmark

    policy = None
    for benchmark in args.benchmarks:
        tasks = load_benchmark(benchmark)
        tasks = tasks[: args.limit] if args.limit else tasks
        for protocol in args.protocols:
            suffix = args.backend if args.suffix_backend else None
            key = cell_key(args.model, protocol, benchmark, suffix)
            done = args.out / key / "cell.json"
            if done.is_file():
                continue
            policy = policy or load_policy(args.model, args.backend)
            config = GenerationConfig(
                max_new_tokens=prompts.MAX_NEW_TOKENS[protocol],
                temperature=0.0,
                stop=prompts.protocol_stops(protocol),  # type: ignore[arg-type]
                batch_size=args.batch_size,
            )
            records, seconds = generate_records(policy, tasks, protocol, config)
            samples = args.out / key / "samples.jsonl"
            samples.parent.mkdir(parents=True, exist_ok=True)
            write_records(samples, records)
            summary = score_commands.score_samples(
                samples, benchmark, 0, [1], calibrate=True, timeout_floor=3.0
            )
            tokens = sum(r["num_tokens"] for r in records)
            cell = {
                "pass@1": summary.get("pass@1"),
                "passed": summary["verdicts"].get("passed", 0),
                "tasks": len(tasks),
                "infra_errors": summary.get("infra_errors", 0),
                "tokens": tokens,
                "seconds": round(seconds, 1),
                "tok_s": round(tokens / seconds, 1),
                "backend": args.backend,
                "max_new_tokens": config.max_new_tokens,
                "published": PUBLISHED.get((args.model, benchmark)),
            }
            done.write_text(json.dumps(cell, indent=2) + "\n")
            print(f"[protocol_bench] {key}: {cell}", file=sys.stderr, flush=True)


def child(args: argparse.Namespace, model: str, backend: str, protocols, benchmarks, suffix: bool):
    cmd = [sys.executable, __file__, "--child", "--model", model, "--backend", backend]
    cmd += ["--protocols", ",".join(protocols), "--benchmarks", ",".join(benchmarks)]
    cmd += ["--out", str(args.out), "--limit", str(args.limit)]
    cmd += ["--batch-size", str(args.batch_size)] + (["--suffix-backend"] if suffix else [])
    subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--models", default="default,coder-1.5b")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    from agent.policy.backends import backend_names

    parser.add_argument("--backend", default="vllm", choices=backend_names())
    parser.add_argument("--check-transformers", action="store_true")
    parser.add_argument("--limit", type=int, default=0, help="first N tasks of each (0: all)")
    parser.add_argument("--batch-size", type=int, default=32, help="transformers rows at once")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "protocol_bench")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--suffix-backend", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.protocols = [p for p in args.protocols.split(",") if p]
    args.benchmarks = [b for b in args.benchmarks.split(",") if b]
    if args.child:
        run_cells(args)
        return
    if args.json is None:
        parser.error("--json PATH is required")
    models = [m for m in args.models.split(",") if m]
    cells = []
    for model in models:
        child(args, model, args.backend, args.protocols, args.benchmarks, suffix=False)
        cells += [cell_key(model, p, b) for b in args.benchmarks for p in args.protocols]
        if args.check_transformers and args.backend != "transformers":
            child(args, model, "transformers", ["instruct"], ["humaneval"], suffix=True)
            cells.append(cell_key(model, "instruct", "humaneval", "transformers"))
    figures = {key: json.loads((args.out / key / "cell.json").read_text()) for key in cells}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    flat = {}
    for key, cell in figures.items():
        published = cell["published"]
        flat[key] = (
            f"{cell['pass@1']:.3f} ({cell['passed']}/{cell['tasks']}), {cell['tokens']} tok, "
            f"{cell['tok_s']} tok/s" + (f"; published {published:.3f}" if published else "")
        )
    print_figures("protocol_bench: greedy pass@1", flat)


if __name__ == "__main__":
    main()
