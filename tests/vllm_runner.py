"""Runs `VllmBackend` in its own process for tests/test_vllm_backend.py and prints JSON.

vLLM spawns its engine process and binds CPU threads, so the tests keep it out of pytest's
process: this script holds the `__main__` guard vLLM needs. Input: a JSON job file naming the
model, dtype, prompts, configs and (optionally) a torch-saved perturbation; output: one JSON
object of generations per job entry, written to the output path (vLLM logs to stdout).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import torch


def main(job_path: str, out_path: str) -> None:
    from agent.policy.backend import GenerationConfig
    from agent.policy.lowrank import PopulationPerturbation
    from agent.policy.vllm_backend import VllmBackend, VllmBackendConfig

    with open(job_path) as f:
        job = json.load(f)
    backend = VllmBackend.from_config(
        VllmBackendConfig(
            model=job["model"],
            dtype=job["dtype"],
            max_model_len=1024,
            enable_lora=True,
            max_loras=8,
        )
    )
    from agent.policy.vllm_spin import vllm_cpu_seconds

    results = {}
    started, cpu_before = time.monotonic(), vllm_cpu_seconds()
    for name, run in job["runs"].items():
        config = GenerationConfig(**{**run["config"], "stop": tuple(run["config"].get("stop", ()))})
        perturbation = None
        if run.get("perturbation"):
            saved = torch.load(run["perturbation"])
            perturbation = PopulationPerturbation(sigma=saved["sigma"], factors=saved["factors"])
        outputs = backend.generate(run["prompts"], config, perturbation, run.get("member_of_row"))
        results[name] = [dataclasses.asdict(g) for g in outputs]
    wall_s, cpu_after = time.monotonic() - started, vllm_cpu_seconds()
    waiting = {
        "workers_parked": backend.llm.collective_rpc("lineage_parked"),
        "wall_s": wall_s,
        "cpu_s": {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after},
    }
    with open(out_path.replace(".json", "-waiting.json"), "w") as f:
        json.dump(waiting, f)
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
