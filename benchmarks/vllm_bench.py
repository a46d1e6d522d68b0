"""vLLM backend throughput: our `VllmBackend` against vLLM called directly, and the ES population
through multi-LoRA against the same rows on an engine without LoRA.

- raw / ours: the first `--limit` HumanEval prompts, greedy, completion stops, max 384 new tokens,
  through `LLM.generate` directly and through `VllmBackend.generate` on one engine; two
  alternating rounds each (raw, ours, raw, ours) so machine noise hits both alike;
- population: `--members` rank-1 members x `--prompts-per-member` prompts, `--pop-tokens` new
  tokens, each row with its member's LoRA adapter, against the limit: the same rows on an engine
  built without LoRA (on a CPU, vLLM turns off torch.compile once LoRA is on, so the LoRA
  engine's own plain rows are reported too). Each engine runs in its own process, one after the
  other, best of `--pop-repeats`. With `--reference-lora`, a third engine runs the population on
  vLLM's own CPU LoRA ops (this project's plugin off: `VLLM_PLUGINS=`), the baseline of
  `agent/policy/vllm_cpu_lora.py`.
With `--agreement`, the transformers backend (same weights, same dtype) also generates the raw
prompts and the fraction of identical greedy completions is reported (issue 4's target: >= 95%).

    python benchmarks/vllm_bench.py [--limit 32] [--model default] [--reference-lora]
        [--agreement] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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
    from agent.policy.vllm_backend import VllmBackend, VllmBackendConfig
    from evaluators.datasets import load_humaneval

    population = {
        **population_child(args, "plain"),
        **population_child(args, "lora"),
        **(population_child(args, "reference-lora") if args.reference_lora else {}),
    }
    population["lora_vs_plain_pop"] = (
        population["vllm_lora_pop_tok_s"] / population["vllm_plain_pop_tok_s"]
    )
    if args.reference_lora:
        population["plugin_vs_reference_lora"] = (
            population["vllm_lora_pop_tok_s"] / population["vllm_reference_lora_pop_tok_s"]
        )
    show(args, population)  # kept if the raw/ours part is cut short
    config = VllmBackendConfig(model=args.model)
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

    figures = {
        **population,
        "engine_start_s": start_s,
        "prompts": len(prompts),
        "vllm_raw_tok_s": raw_tokens / raw_s,
        "vllm_ours_tok_s": ours_tokens / ours_s,
        "ours_vs_raw_vllm": (ours_tokens / ours_s) / (raw_tokens / raw_s),
        "raw_wall_s": raw_s / args.rounds,
        "ours_wall_s": ours_s / args.rounds,
    }
    if args.agreement:
        show(args, figures)  # the throughput figures stand on their own; agreement takes minutes
        figures.update(agreement(args, prompts, ours, gen))
    return figures


# The punica wrapper each LoRA engine must report in its log (vLLM logs "Using <class>.").
EXPECTED_WRAPPER = {"lora": "SlotMatmulPunicaWrapper", "reference-lora": "PunicaWrapperCPU"}


def population_child(args: argparse.Namespace, engine: str) -> dict[str, float]:
    """Run `--population-child ENGINE` in its own process (one engine per process: vLLM binds
    the CPU's threads and keeps its engine process until exit) and return its figures; on a
    CPU, check from its log that the LoRA engine used the intended punica wrapper."""
    print(f"population rows on the {engine} engine (own process, vLLM's log kept quiet)...")
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "figures.json")
        env = dict(os.environ)
        if engine == "reference-lora":
            env["VLLM_PLUGINS"] = ""  # no general plugins: vLLM's own CPU LoRA ops
        command = [os.path.abspath(__file__), "--population-child", engine, "--json", out]
        for flag in (
            "model",
            "members",
            "prompts_per_member",
            "pop_tokens",
            "pop_repeats",
            "max_lora_rank",
        ):
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        done = subprocess.run(
            [sys.executable, *command], env=env, capture_output=True, text=True, check=False
        )
        log = done.stdout + done.stderr
        if done.returncode != 0:
            raise SystemExit(f"the {engine} engine failed:\n{log[-4000:]}")
        wrapper = EXPECTED_WRAPPER.get(engine)
        if wrapper and not torch.cuda.is_available() and f"Using {wrapper}." not in log:
            raise SystemExit(f"the {engine} engine did not use {wrapper}:\n{log[-4000:]}")
        with open(out) as f:
            return json.load(f)


def population_figures(args: argparse.Namespace) -> dict[str, float]:
    """The child's side: build one engine, generate the population rows, best of the repeats."""
    from agent.policy.backend import GenerationConfig
    from agent.policy.vllm_backend import VllmBackend, VllmBackendConfig, engine_args
    from evaluators.datasets import load_humaneval

    lora = args.population_child != "plain"
    config = VllmBackendConfig(
        model=args.model, enable_lora=lora, max_loras=args.members, max_lora_rank=args.max_lora_rank
    )
    backend = VllmBackend.from_config(config)
    pool = [t.prompt for t in load_humaneval()[: args.prompts_per_member]]
    rows = [p for _ in range(args.members) for p in pool]
    member_of_row = [m for m in range(args.members) for _ in pool]
    perturbation = population_for(engine_args(config)["model"], args.members)
    gen = GenerationConfig(max_new_tokens=args.pop_tokens)
    backend.generate(rows[:8], gen)  # warm-up (and, without LoRA, torch.compile)

    def best_tok_s(**population) -> float:
        runs = [
            timed(lambda: backend.generate(rows, gen, **population))
            for _ in range(args.pop_repeats)
        ]
        return max(sum(g.num_tokens for g in out) / seconds for seconds, out in runs)

    name = args.population_child.replace("-", "_")
    if not lora:
        return {"population_rows": len(rows), "vllm_plain_pop_tok_s": best_tok_s()}
    figures = {
        f"vllm_{name}_pop_tok_s": best_tok_s(perturbation=perturbation, member_of_row=member_of_row)
    }
    if name == "lora":
        figures["vllm_plain_on_lora_engine_tok_s"] = best_tok_s()
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
    parser.add_argument("--pop-tokens", type=int, default=64)
    parser.add_argument("--pop-repeats", type=int, default=2)
    parser.add_argument("--max-lora-rank", type=int, default=1, help="the members are rank 1")
    parser.add_argument("--reference-lora", action="store_true")
    parser.add_argument("--agreement", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--population-child", choices=["plain", "lora", "reference-lora"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.population_child:
        with open(args.json, "w") as f:
            json.dump(population_figures(args), f)
        return
    show(args, run(args))


def show(args: argparse.Namespace, figures: dict) -> None:
    """Print the figures as a table and write them to `--json`."""
    print_figures(f"vLLM backend, {args.model}", figures)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), **figures}, f, indent=2)


if __name__ == "__main__":
    main()
