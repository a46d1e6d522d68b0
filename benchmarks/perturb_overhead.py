"""What the per-row low-rank terms add to a decoding step where launching ops, not arithmetic, is
the cost: the regime of a small model decoding on a GPU.

A 0.5B model on an H100 decodes a 128-row step in about 30 ms, almost all of it spent launching
some 1,400 small kernels from Python; there, each op the ES population adds to a layer costs as
much as any op of the model. This script builds Qwen2.5-0.5B's architecture (24 blocks, the same
seven projections per block) at a width where the arithmetic vanishes, and measures, in one run:

- aten ops dispatched per decoding step, plain and with a population (counted, not timed: the
  same on every machine for a given torch and transformers);
- milliseconds per decoding step, plain and with a population (min over interleaved repeats of
  the difference between a long and a short generation, so prefill cancels out);
- what a new row-to-member assignment adds to the next forward, in ops and microseconds: with
  continuous batching, rows that finish make a new assignment every few steps.

`eggroll_vs_plain` here tracks es_bench's figure on a GPU (the earlier 7-op form measured
0.67-0.69 here and 0.58-0.65 on an H100); on a GPU this script measures the regime directly
(`--device`).

    python benchmarks/perturb_overhead.py [--members 8] [--device cpu] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from figures import print_figures
from rich.console import Console
from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched inside the block (views included: each costs a call)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def synchronize(args) -> None:
    """Wait for the GPU's queued work, so a timer around it measures the work itself."""
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def build(args):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from agent.es import EggRoll, EsConfig
    from agent.policy.tiny import byte_tokenizer
    from agent.policy.transformers_backend import TransformersBackend

    tokenizer = byte_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=2 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Qwen2ForCausalLM(config).eval()
    backend = TransformersBackend(model, tokenizer)
    backend.eos_ids = set()  # random weights: every row runs to max_new_tokens
    es = EggRoll(EsConfig(population=args.members), model)
    rows = ["def f(x):\n    return"] * args.members
    return backend, es.ask().perturbation, rows, list(range(args.members))


def measure(args) -> dict[str, float]:
    from agent.policy.backend import GenerationConfig

    backend, perturbation, rows, member_of_row = build(args)
    paths = {"plain": (), "eggroll": (perturbation, member_of_row)}
    short, long = 1, 1 + args.steps

    def run(path: str, tokens: int) -> None:
        config = GenerationConfig(max_new_tokens=tokens, batch_size=len(rows))
        backend.generate(rows, config, *paths[path])
        synchronize(args)

    def ops(path: str, tokens: int) -> int:
        with OpCounter() as counter:
            run(path, tokens)
        return counter.ops

    def seconds(path: str, tokens: int) -> float:
        started = time.perf_counter()
        run(path, tokens)
        return time.perf_counter() - started

    figures: dict[str, float] = {}
    for path in paths:
        run(path, long)  # warm-up: one-time costs land in no figure
        figures[f"{path}_ops_per_step"] = (ops(path, long) - ops(path, short)) / args.steps
    best = {path: float("inf") for path in paths}
    for _ in range(args.repeats):  # interleaved, so both paths see the same machine
        for path in paths:
            step = (seconds(path, long) - seconds(path, short)) / args.steps
            best[path] = min(best[path], step)
    layers = len(perturbation.factors)
    figures.update(reassignment(backend.model, perturbation, member_of_row, args))
    figures.update(
        ops_added_per_layer=(figures["eggroll_ops_per_step"] - figures["plain_ops_per_step"])
        / layers,
        plain_ms_per_step=best["plain"] * 1e3,
        eggroll_ms_per_step=best["eggroll"] * 1e3,
        us_added_per_layer=(best["eggroll"] - best["plain"]) / layers * 1e6,
        eggroll_vs_plain=best["plain"] / best["eggroll"],
        perturbed_layers=layers,
    )
    return figures


def reassignment(model, perturbation, member_of_row: list[int], args) -> dict[str, float]:
    """Ops and time a `rows.set` adds to the forward after it (one token per row, no cache)."""
    from agent.policy.lowrank import perturbed

    ids = torch.ones(len(member_of_row), 1, dtype=torch.long, device=args.device)
    orders = [member_of_row, member_of_row[::-1]]

    def forward(rows, order: list[int] | None) -> float:
        started = time.perf_counter()
        if order is not None:
            rows.set(order)
        model(ids)
        synchronize(args)
        return time.perf_counter() - started

    with torch.inference_mode(), perturbed(model, perturbation) as rows:
        forward(rows, orders[0])
        with OpCounter() as same:
            forward(rows, None)
        with OpCounter() as new:
            forward(rows, orders[1])
        kept = min(forward(rows, None) for _ in range(args.repeats * 4))
        changed = min(forward(rows, orders[i % 2]) for i in range(args.repeats * 4))
    return {
        "ops_per_reassignment": new.ops - same.ops,
        "us_per_reassignment": (changed - kept) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8, help="rows, one per member")
    parser.add_argument("--layers", type=int, default=24, help="blocks (Qwen2.5-0.5B has 24)")
    parser.add_argument("--hidden", type=int, default=32, help="width, small so compute vanishes")
    parser.add_argument("--steps", type=int, default=64, help="decoding steps timed per repeat")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (tiny ops: 1)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    with console.status("decoding steps: plain and with a population"):
        figures = measure(args)
    print_figures(
        f"Per-row low-rank terms in an op-bound decoding step: {args.layers} Qwen2 blocks, "
        f"width {args.hidden}, {args.members} rows (one per member), {args.device}, "
        f"torch {torch.__version__}",
        figures,
        console=console,
    )
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({**figures, "config": vars(args), "torch": torch.__version__}, f, indent=2)


if __name__ == "__main__":
    main()
