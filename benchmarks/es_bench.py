"""ES throughput and memory: EGGROLL's batched population against plain inference and naive ES.

One run, same prompts, same rows (members x prompts), greedy, a fixed number of new tokens:
- plain: the base model generates all rows in batches (the limit);
- eggroll: the same rows, each with its member's low-rank perturbation, in the same batches;
- naive: member by member, perturb the weights in place, generate that member's rows, restore.
Peak RSS of inference alone and of a whole ES step (ask, population generate, tell) are measured
in separate child processes, each with the kernel's peak counter reset after the model is loaded
(both keep the weights resident; loading's transient copies would otherwise set both peaks).

    python benchmarks/es_bench.py [--model default] [--dtype float32] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table


def build(args):
    from agent.es import EggRoll, EsConfig
    from agent.policy.backend import GenerationConfig
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
    from evaluators.datasets import load_humaneval

    backend = TransformersBackend.from_config(
        TransformersBackendConfig(model=args.model, dtype=args.dtype)
    )
    prompts = [
        t.prompt for t in sorted(load_humaneval(), key=lambda t: len(t.prompt))[: args.prompts]
    ]
    rows = [p for _ in range(args.members) for p in prompts]
    member_of_row = [m for m in range(args.members) for _ in prompts]
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    es = EggRoll(EsConfig(population=args.members, rank=1, seed=0), backend.model)
    return backend, es, rows, member_of_row, gen


def timed(fn) -> tuple[float, int]:
    started = time.perf_counter()
    generations = fn()
    return time.perf_counter() - started, sum(g.num_tokens for g in generations)


def throughput(args) -> dict[str, float]:
    backend, es, rows, member_of_row, gen = build(args)
    population = es.ask()
    perturbation = population.perturbation
    plain_s, plain_tokens = timed(lambda: backend.generate(rows, gen))
    egg_s, egg_tokens = timed(lambda: backend.generate(rows, gen, perturbation, member_of_row))
    per_member = len(rows) // args.members
    naive_s = naive_tokens = 0
    for m in range(args.naive_members):
        with es.member(population, m):
            s, tokens = timed(
                lambda m=m: backend.generate(rows[m * per_member : (m + 1) * per_member], gen)
            )
        naive_s, naive_tokens = naive_s + s, naive_tokens + tokens
    return {
        "plain_tok_s": plain_tokens / plain_s,
        "eggroll_tok_s": egg_tokens / egg_s,
        "naive_tok_s": naive_tokens / naive_s,
        "plain_tokens": plain_tokens,
        "eggroll_tokens": egg_tokens,
        "naive_tokens": naive_tokens,
    }


def peak_rss_child(args, what: str) -> float:
    """Run `what` (inference | es_step) in a fresh process; its peak RSS in MiB."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        what,
        "--model",
        args.model,
        "--dtype",
        args.dtype,
        "--members",
        str(args.members),
        "--prompts",
        str(args.prompts),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--batch-size",
        str(args.batch_size),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def reset_peak_rss() -> None:
    """Restart the kernel's high-water mark, so loading the model does not set the peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    backend, es, rows, member_of_row, gen = build(args)
    reset_peak_rss()
    if args.child == "inference":
        backend.generate(rows, gen)
    else:
        population = es.ask()
        backend.generate(rows, gen, population.perturbation, member_of_row)
        es.tell(population, [float(i % 3) for i in range(args.members)])
    print(peak_rss_mb())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--dtype", default="float32", help="float32 (master = model) or bfloat16")
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--naive-members", type=int, default=4, help="members timed on the naive path"
    )
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--child", choices=("inference", "es_step"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    console = Console()
    with console.status("throughput: plain, eggroll, naive"):
        figures = throughput(args)
    with console.status("peak RSS: inference alone, then a whole ES step"):
        inference_mb = peak_rss_child(args, "inference")
        step_mb = peak_rss_child(args, "es_step")
    figures.update(
        eggroll_vs_plain=figures["eggroll_tok_s"] / figures["plain_tok_s"],
        eggroll_vs_naive=figures["eggroll_tok_s"] / figures["naive_tok_s"],
        inference_peak_rss_mb=inference_mb,
        step_peak_rss_mb=step_mb,
        step_peak_rss_vs_inference=step_mb / inference_mb,
    )
    table = Table(
        title=f"ES throughput, {args.model} {args.dtype}, N={args.members}, r=1, "
        f"{args.prompts} prompts x {args.max_new_tokens} new tokens, batch {args.batch_size}"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target")
    targets = {
        "eggroll_vs_plain": ">= 0.8",
        "eggroll_vs_naive": ">= 3",
        "step_peak_rss_vs_inference": "<= 1.3",
    }
    for key, value in figures.items():
        table.add_row(key, f"{value:.2f}", targets.get(key, ""))
    console.print(table)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({**figures, "config": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
