"""vLLM backend throughput: our `VllmBackend` against vLLM called directly, and the ES population
through multi-LoRA against the same rows without adapters.

One engine (LoRA enabled) serves every figure, so the ratios compare like with like:
- raw / ours: the first `--limit` HumanEval prompts, greedy, completion stops, max 384 new tokens,
  through `LLM.generate` directly and through `VllmBackend.generate`; two alternating rounds each
  (raw, ours, raw, ours) so machine noise hits both alike;
- population: `--members` rank-1 members x `--prompts-per-member` prompts, `--pop-tokens` new
  tokens, each row with its member's LoRA adapter (lora) and the same rows plain (plain).
With `--agreement`, the transformers backend (same weights, same dtype) also generates the raw
prompts and the fraction of identical greedy completions is reported (issue 4's target: >= 95%).

    python benchmarks/vllm_bench.py [--limit 32] [--model default] [--agreement] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from figures import print_figures


def population_for(model_path: str, members: int, seed: int = 0):
    """Rank-1 factors for every attention and MLP projection, shapes read from the checkpoint."""
    from safetensors import safe_open

    from agent.policy.lowrank import PopulationPerturbation
    from agent.policy.vllm_backend import LORA_TARGETS

    gen = torch.Generator().manual_seed(seed)
    factors = {}
    with safe_open(f"{model_path}/model.safetensors", framework="pt") as f:
        for key in sorted(f.keys()):
            name = key.removesuffix(".weight")
            if key.endswith(".weight") and name.rsplit(".", 1)[-1] in LORA_TARGETS:
                out_features, in_features = f.get_slice(key).get_shape()
                factors[name] = (
                    torch.randn(members, out_features, 1, generator=gen),
                    torch.randn(members, in_features, 1, generator=gen),
                )
    return PopulationPerturbation(sigma=0.001, factors=factors)


def timed(fn) -> tuple[float, list]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def run(args: argparse.Namespace) -> dict[str, float]:
    from vllm import SamplingParams

    from agent.policy.backend import GenerationConfig
    from agent.policy.prompts import COMPLETION_STOPS
    from agent.policy.vllm_backend import VllmBackend, VllmBackendConfig, engine_args
    from evaluators.datasets import load_humaneval

    config = VllmBackendConfig(
        model=args.model, enable_lora=True, max_loras=args.members, max_lora_rank=args.max_lora_rank
    )
    start_s, backend = timed(lambda: VllmBackend.from_config(config))
    prompts = [t.prompt for t in load_humaneval()[: args.limit]]
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, stop=COMPLETION_STOPS)
    raw_params = SamplingParams(
        temperature=0.0, max_tokens=args.max_new_tokens, stop=list(COMPLETION_STOPS)
    )
    backend.llm.generate(prompts[:2], raw_params, use_tqdm=False)  # warm-up

    raw_s = ours_s = 0.0
    raw_tokens = ours_tokens = 0
    for _ in range(args.rounds):
        seconds, outputs = timed(lambda: backend.llm.generate(prompts, raw_params, use_tqdm=False))
        raw_s += seconds
        raw_tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
        seconds, ours = timed(lambda: backend.generate(prompts, gen))
        ours_s += seconds
        ours_tokens += sum(g.num_tokens for g in ours)

    partial = {"raw_tok_s": raw_tokens / raw_s, "ours_tok_s": ours_tokens / ours_s}
    show(args, {"engine_start_s": start_s, **partial})  # kept if the population part is cut short
    pool = prompts[: args.prompts_per_member]
    rows = [p for _ in range(args.members) for p in pool]
    member_of_row = [m for m in range(args.members) for _ in pool]
    perturbation = population_for(engine_args(config)["model"], args.members)
    pop_gen = GenerationConfig(max_new_tokens=args.pop_tokens)
    plain_s, plain = timed(lambda: backend.generate(rows, pop_gen))
    lora_s, lora = timed(lambda: backend.generate(rows, pop_gen, perturbation, member_of_row))

    figures = {
        "engine_start_s": start_s,
        "prompts": len(prompts),
        "vllm_raw_tok_s": raw_tokens / raw_s,
        "vllm_ours_tok_s": ours_tokens / ours_s,
        "ours_vs_raw_vllm": (ours_tokens / ours_s) / (raw_tokens / raw_s),
        "raw_wall_s": raw_s / args.rounds,
        "ours_wall_s": ours_s / args.rounds,
        "population_rows": len(rows),
        "vllm_plain_pop_tok_s": sum(g.num_tokens for g in plain) / plain_s,
        "vllm_lora_pop_tok_s": sum(g.num_tokens for g in lora) / lora_s,
        "plain_pop_wall_s": plain_s,
        "lora_pop_wall_s": lora_s,
    }
    figures["lora_vs_plain_pop"] = figures["vllm_lora_pop_tok_s"] / figures["vllm_plain_pop_tok_s"]
    if args.agreement:
        show(args, figures)  # the throughput figures stand on their own; agreement takes minutes
        figures.update(agreement(args, prompts, ours, gen))
    return figures


def agreement(args: argparse.Namespace, prompts: list[str], ours: list, gen) -> dict[str, float]:
    """Greedy completions of the transformers backend on the same prompts, compared exactly."""
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
    from agent.policy.vllm_backend import VllmBackendConfig, engine_args

    dtype = engine_args(VllmBackendConfig(model=args.model))["dtype"]
    reference = TransformersBackend.from_config(
        TransformersBackendConfig(model=args.model, dtype=dtype)
    )
    seconds, theirs = timed(lambda: reference.generate(prompts, gen))
    same = sum(a.text == b.text for a, b in zip(ours, theirs, strict=True))
    return {
        "agreement_dtype": dtype,
        "agreement_identical": same,
        "agreement_rate": same / len(prompts),
        "transformers_tok_s": sum(g.num_tokens for g in theirs) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--prompts-per-member", type=int, default=4)
    parser.add_argument("--pop-tokens", type=int, default=32)
    parser.add_argument("--max-lora-rank", type=int, default=8)
    parser.add_argument("--agreement", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    show(args, run(args))


def show(args: argparse.Namespace, figures: dict) -> None:
    """Print the figures as a table and write them to `--json`."""
    print_figures(f"vLLM backend, {args.model}", figures)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), **figures}, f, indent=2)


if __name__ == "__main__":
    main()
