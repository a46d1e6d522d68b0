"""ES throughput and memory: EGGROLL's batched population against plain inference and naive ES.

One run, same prompts, same rows (members x prompts), greedy, a fixed number of new tokens:
- plain: the base model generates all rows in batches (the limit);
- eggroll: the same rows, each with its member's low-rank perturbation, in the same batches;
- naive: member by member, perturb the weights in place, generate that member's rows, restore.
Peak RSS of inference alone and of a whole ES step as the loop runs it (a `ChainReplayer` on the
model, its chain set, then ask, population generate, tell) are measured in separate child
processes, each with the kernel's peak counter reset after the model is loaded (both keep the
weights resident; loading's transient copies would otherwise set both peaks). On
CUDA the children also report peak GPU memory (torch.cuda.max_memory_allocated, reset likewise),
and every path is warmed up once before it is timed (kernel loading, cuBLAS handles).
`--repeats K` times plain and eggroll K times each, interleaved, and keeps each one's best: on a
shared machine one pass of each can differ by 20% for reasons of the machine's own.

--random-init builds the model's architecture from its config.json with seeded random weights on
the device (for a GPU machine the weights cannot reach): decoding cost depends on shapes, not
values, and EOS is switched off so every row generates exactly --max-new-tokens tokens (no stop
strings are used here), which the run checks.

    python benchmarks/es_bench.py [--model default] [--dtype float32] [--random-init] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from figures import print_figures
from rich.console import Console


def build(args):
    """Backend, rows, their members, decoding settings, and a maker for the throughput passes'
    ES strategy (made only when needed: with a bf16 model it spills an fp32 master copy)."""
    from agent.es import EggRoll
    from agent.policy.backend import GenerationConfig
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
    from evaluators.datasets import load_humaneval

    if args.random_init:
        backend = TransformersBackend.with_random_weights(args.model, dtype=args.dtype)
    else:
        backend = TransformersBackend.from_config(
            TransformersBackendConfig(model=args.model, dtype=args.dtype)
        )
    prompts = [
        t.prompt for t in sorted(load_humaneval(), key=lambda t: len(t.prompt))[: args.prompts]
    ]
    rows = [p for _ in range(args.members) for p in prompts]
    member_of_row = [m for m in range(args.members) for _ in prompts]
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)

    def make_es() -> EggRoll:
        return EggRoll(es_config(args), backend.model)

    return backend, make_es, rows, member_of_row, gen


def es_config(args):
    from agent.es import EsConfig

    return EsConfig(population=args.members, rank=1, seed=0, optimizer=args.optimizer)


def timed(fn) -> tuple[float, int]:
    started = time.perf_counter()
    generations = fn()
    return time.perf_counter() - started, sum(g.num_tokens for g in generations)


def on_cuda(backend) -> bool:
    return backend.device.type == "cuda"


def torch_device_name(backend) -> str:
    import torch

    if on_cuda(backend):
        return torch.cuda.get_device_name(backend.device)
    return "cpu"


def warm_up(backend, es, population, rows, member_of_row, gen) -> None:
    """One untimed pass of each path at the timed shapes, so CUDA's one-time costs (kernel
    loading, cuBLAS handles, per-shape plans, allocator growth) land in no timed figure."""
    backend.generate(rows, gen)
    backend.generate(rows, gen, population.perturbation, member_of_row)
    with es.member(population, 0):
        backend.generate(rows[: len(rows) // len(set(member_of_row))], gen)


def throughput(args) -> dict[str, float]:
    backend, make_es, rows, member_of_row, gen = build(args)
    es = make_es()
    population = es.ask()
    perturbation = population.perturbation
    if on_cuda(backend):
        warm_up(backend, es, population, rows, member_of_row, gen)
    plain_s = egg_s = float("inf")
    for _ in range(args.repeats):  # interleaved, each path's best: a shared machine drifts
        s, plain_tokens = timed(lambda: backend.generate(rows, gen))
        plain_s = min(plain_s, s)
        s, egg_tokens = timed(lambda: backend.generate(rows, gen, perturbation, member_of_row))
        egg_s = min(egg_s, s)
    per_member = len(rows) // args.members
    naive_s = naive_tokens = 0
    for m in range(args.naive_members):
        with es.member(population, m):
            s, tokens = timed(
                lambda m=m: backend.generate(rows[m * per_member : (m + 1) * per_member], gen)
            )
        naive_s, naive_tokens = naive_s + s, naive_tokens + tokens
    if args.random_init:  # EOS is off: every row must have run to max_new_tokens
        naive_rows = args.naive_members * per_member
        for name, tokens, n in (
            ("plain", plain_tokens, len(rows)),
            ("eggroll", egg_tokens, len(rows)),
            ("naive", naive_tokens, naive_rows),
        ):
            if tokens != n * args.max_new_tokens:
                raise RuntimeError(
                    f"random-init: {name} generated {tokens} tokens, not {n} x {args.max_new_tokens}"
                )
    return {
        "plain_tok_s": plain_tokens / plain_s,
        "eggroll_tok_s": egg_tokens / egg_s,
        "naive_tok_s": naive_tokens / naive_s,
        "plain_tokens": plain_tokens,
        "eggroll_tokens": egg_tokens,
        "naive_tokens": naive_tokens,
        "device": torch_device_name(backend),
    }


def peak_memory_child(args, what: str) -> dict[str, float]:
    """Run `what` (inference | es_step) in a fresh process; its peak RSS (and GPU memory) in MiB."""
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
        "--optimizer",
        args.optimizer,
    ] + (["--random-init"] if args.random_init else [])
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the {what} child failed:\n{result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


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
    import torch

    from agent.es.chain_replayer import ChainReplayer

    backend, make_es, rows, member_of_row, gen = build(args)
    cuda = on_cuda(backend)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset_peak_rss()
    figures: dict[str, float] = {}
    if args.child == "inference":
        backend.generate(rows, gen)
    else:  # the loop's ES step: the chain's own strategy, from the base model's weights
        weights = ChainReplayer(backend.model, es_config(args).target_modules)
        weights.set([])
        es = weights.strategy(es_config(args), step=0)
        population = es.ask()
        backend.generate(rows, gen, population.perturbation, member_of_row)
        started = time.perf_counter()
        es.tell(population, [float(i % 3) for i in range(args.members)])
        if cuda:
            torch.cuda.synchronize()
        figures["tell_s"] = time.perf_counter() - started
    figures["rss_mb"] = peak_rss_mb()
    if cuda:
        figures["gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--dtype", default="float32", help="float32 (master = model) or bfloat16")
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--optimizer", default="sgd", help="sgd, or adam (two more fp32 copies)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--naive-members", type=int, default=4, help="members timed on the naive path"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="plain and eggroll passes, interleaved; the best"
    )
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="random weights from the model's config.json (--model: a name or a folder); "
        "EOS off, every row generates --max-new-tokens",
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
    with console.status("peak memory: inference alone, then a whole ES step"):
        inference = peak_memory_child(args, "inference")
        step = peak_memory_child(args, "es_step")
    figures.update(
        eggroll_vs_plain=figures["eggroll_tok_s"] / figures["plain_tok_s"],
        eggroll_vs_naive=figures["eggroll_tok_s"] / figures["naive_tok_s"],
        inference_peak_rss_mb=inference["rss_mb"],
        step_peak_rss_mb=step["rss_mb"],
        step_peak_rss_vs_inference=step["rss_mb"] / inference["rss_mb"],
        step_tell_s=step["tell_s"],
    )
    if "gpu_mb" in step:
        figures.update(
            inference_peak_gpu_mb=inference["gpu_mb"],
            step_peak_gpu_mb=step["gpu_mb"],
            step_peak_gpu_vs_inference=step["gpu_mb"] / inference["gpu_mb"],
        )
    device = figures.pop("device")
    weights = "random weights, EOS off" if args.random_init else "real weights"
    print_figures(
        f"ES throughput, {args.model} {args.dtype} on {device} ({weights}), N={args.members}, "
        f"r=1, {args.optimizer}, {args.prompts} prompts x {args.max_new_tokens} new tokens, "
        f"batch {args.batch_size}",
        figures,
        targets={
            "eggroll_vs_plain": ">= 0.8",
            "eggroll_vs_naive": ">= 3",
            "step_peak_rss_vs_inference": "<= 1.3",
            "step_peak_gpu_vs_inference": "<= 1.3",
        },
        digits=2,
        console=console,
    )
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({**figures, "device": device, "config": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
