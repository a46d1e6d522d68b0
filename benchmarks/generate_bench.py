"""Generation throughput on HumanEval's prompts: our transformers backend, greedy, completion mode.

    .venv/bin/python benchmarks/generate_bench.py --json bench.json [--limit N] [--batch-size B]
        [--threads T] [--population P]

One run over the first --limit prompts (default all 164), greedy, max 384 new tokens, stopping at a
new top-level def/class/if/print/#. Figures: `transformers_tok_s` (generated tokens / wall time,
prefill included; target >= 30) and `transformers_wall_s`. With --population P > 0 the same
prompts run again as one ES population batch (each prompt's row assigned to one of P members,
rank-1 perturbations on all seven projections): `population_tok_s` and
`population_vs_plain` (= population / plain). The vLLM figures (`vllm_raw_tok_s`,
`vllm_ours_tok_s`, `ours_vs_raw_vllm`) are null here: `benchmarks/vllm_bench.py` measures them, with
one engine for raw and ours (and, with --agreement, greedy agreement with this backend).

--random-init builds the model's architecture from its config.json with seeded random weights on
the device (for a GPU machine the weights cannot reach): EOS and the stop strings are off, so every
row generates exactly --max-new-tokens tokens (checked), and the figures measure decoding speed on
that shape only, not the real model's (shorter, stopping) completions.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from figures import print_figures

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.policy.backend import GenerationConfig  # noqa: E402
from agent.policy.lowrank import PopulationPerturbation  # noqa: E402
from agent.policy.prompts import COMPLETION_STOPS, completion_prompt  # noqa: E402
from agent.policy.transformers_backend import (  # noqa: E402
    TransformersBackend,
    TransformersBackendConfig,
)
from evaluators.datasets import load_humaneval  # noqa: E402

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def rank_one_population(
    model: torch.nn.Module, members: int, sigma: float = 1e-3
) -> PopulationPerturbation:
    """Seeded rank-1 noise for every projection: the shape of an ES population (EGGROLL)."""
    gen = torch.Generator().manual_seed(0)
    factors = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in PROJECTIONS:
            out_features, in_features = module.weight.shape
            factors[name] = (
                torch.randn(members, out_features, 1, generator=gen),
                torch.randn(members, in_features, 1, generator=gen),
            )
    return PopulationPerturbation(sigma=sigma, factors=factors)


def timed(
    backend: TransformersBackend, prompts: list[str], config: GenerationConfig, **population
) -> dict:
    start = time.perf_counter()
    generations = backend.generate(prompts, config, **population)
    wall = time.perf_counter() - start
    tokens = sum(g.num_tokens for g in generations)
    return {"wall_s": round(wall, 2), "tokens": tokens, "tok_s": round(tokens / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--limit", type=int, default=0, help="first N prompts (0: all 164)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--population", type=int, default=0, help="ES members (0: skip)")
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="random weights from the model's config.json (--model: a name or a folder); "
        "EOS and stops off, every row generates --max-new-tokens",
    )
    args = parser.parse_args()

    tasks = load_humaneval()
    tasks = tasks[: args.limit] if args.limit else tasks
    prompts = [completion_prompt(t.prompt) for t in tasks]
    if args.random_init:
        if args.threads:
            torch.set_num_threads(args.threads)
        backend = TransformersBackend.with_random_weights(args.model, dtype=args.dtype)
    else:
        backend = TransformersBackend.from_config(
            TransformersBackendConfig(model=args.model, dtype=args.dtype, threads=args.threads)
        )
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        stop=() if args.random_init else COMPLETION_STOPS,
        batch_size=args.batch_size,
    )
    if backend.device.type == "cuda":  # CUDA's one-time costs (kernels, cuBLAS) in no figure
        timed(backend, prompts[: args.batch_size], config)
    plain = timed(backend, prompts, config)
    fixed_length = len(prompts) * args.max_new_tokens
    if args.random_init and plain["tokens"] != fixed_length:
        raise RuntimeError(f"random-init: {plain['tokens']} tokens generated, not {fixed_length}")
    figures: dict = {
        "model": args.model,
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "dtype": str(backend.model.dtype).removeprefix("torch."),
        "device": str(backend.device),
        "gpu": torch.cuda.get_device_name(backend.device)
        if backend.device.type == "cuda"
        else None,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "transformers_tok_s": plain["tok_s"],
        "transformers_wall_s": plain["wall_s"],
        "transformers_tokens": plain["tokens"],
        "random_init": args.random_init,
        "vllm_raw_tok_s": None,
        "vllm_ours_tok_s": None,
        "ours_vs_raw_vllm": None,
    }
    if args.population:
        perturbation = rank_one_population(backend.model, args.population)
        members = [i % args.population for i in range(len(prompts))]
        population = timed(
            backend, prompts, config, perturbation=perturbation, member_of_row=members
        )
        figures["population_members"] = args.population
        figures["population_tok_s"] = population["tok_s"]
        figures["population_wall_s"] = population["wall_s"]
        figures["population_vs_plain"] = round(population["tok_s"] / plain["tok_s"], 3)

    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print_figures(f"generate_bench: {len(prompts)} HumanEval prompts, greedy", figures, digits=None)


if __name__ == "__main__":
    main()
