"""The loop's vLLM path end to end on SmolLM2-135M, in its own process (vLLM spawns its engine and
binds CPU threads); tests/test_vllm_loop.py asserts on the JSON it writes.

One engine as `lineage run` builds it (`build_backend("vllm", backend_spec(...))`: LoRA slots,
the worker extension) behind a real `Gateway`, called over its Unix socket by the agents' own client:

- weights: greedy rows of the base; an ES step (ask, tell) on the host master, pushed into the
  engine; the same node exported as `lineage export` does (replayed anew on a fresh copy of the
  base, `save_pretrained`); back to the base. After the loop engine is closed, an engine started
  from the export folder with the same engine settings generates the same rows; the transformers
  backend generates the base's and the node's rows too (its agreement with the engine);
- stream: jobs with different max tokens, stops, temperatures and n at once, and how many engine
  steps they took;
- abort: a long call whose session is closed while it decodes;
- population: sessions of members 0 and 1 and of the base at once, against
  `VllmBackend.generate` of the same rows with the same population.

    python tests/vllm_loop_runner.py OUT.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_vllm_backend import PROMPTS  # noqa: E402 (the same eight prompts)

# A registry name or a model folder (benchmarks/gpu_check.sh passes random weights of SmolLM2's
# shape: the device machine cannot download the real ones).
MODEL = os.environ.get("LINEAGE_VLLM_TEST_MODEL", "smollm2-135m")
MAX_TOKENS = 32


def run_config(population: int = 4):
    from agent.loop.config import from_dict

    return from_dict(
        {
            "model": {"name": MODEL, "backend": "vllm"},
            "es": {"population": population, "sigma": 0.01, "alpha": 1e-5},
        },
        "vllm_loop_runner",
    )


def complete(gateway, token: str, prompt, **decoding) -> list[str]:
    from agent.scaffold.llm_client import LLM

    return LLM(gateway.socket_path, token).complete(prompt, **decoding)


def session(gateway, member: int = -1) -> str:
    from agent.gateway import Budget

    return gateway.open_session(f"test:m{member}", Budget(tokens=100_000, calls=100), member=member)


def greedy(gateway) -> list[str]:
    token = session(gateway)
    try:
        return complete(gateway, token, PROMPTS, max_tokens=MAX_TOKENS)
    finally:
        gateway.close_session(token)


def weights(policy, gateway, folder: Path) -> dict:
    from agent.es.chain_replayer import ChainReplayer
    from agent.es.config import DEFAULT_TARGETS, EsConfig
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig

    config = run_config()
    chain = ChainReplayer(policy.model, DEFAULT_TARGETS)
    chain.set([])

    def sync() -> float:
        started = time.perf_counter()
        policy.sync(chain.loaded, list(chain.base), gateway.run_exclusive)
        return time.perf_counter() - started

    sync()  # the base: nothing to push
    out = {"base": greedy(gateway), "pushes_at_base": policy.pushes}
    es = chain.strategy(
        EsConfig(population=4, sigma=config.es.sigma, alpha=config.es.alpha, seed=3), step=1
    )
    population = es.ask()
    record = es.tell(population, [1.0, 0.0, 0.5, 0.25])
    out["push_s"] = sync()
    out["node"] = greedy(gateway)
    out["pushes_at_node"] = policy.pushes
    # `lineage export`: the chain replayed on a fresh copy of the base, then save_pretrained.
    dtype = str(policy.engine.dtype).removeprefix("torch.")
    fresh = TransformersBackend.from_config(
        TransformersBackendConfig(model=MODEL, device="cpu", dtype=dtype)
    )
    out["transformers_base"] = [g.text for g in fresh.generate(PROMPTS, greedy_config())]
    ChainReplayer(fresh.model, DEFAULT_TARGETS).set([dataclasses.asdict(record)])
    fresh.model.save_pretrained(folder / "model")
    fresh.tokenizer.save_pretrained(folder / "model")
    out["transformers_node"] = [g.text for g in fresh.generate(PROMPTS, greedy_config())]
    chain.set([])
    sync()
    out["base_again"] = greedy(gateway)
    return out


def greedy_config():
    from agent.policy.backend import GenerationConfig

    return GenerationConfig(max_new_tokens=MAX_TOKENS, batch_size=len(PROMPTS))


def stream(gateway) -> dict:
    """Four jobs of different settings at once; the engine steps they took together."""
    jobs = {
        "long": dict(prompt=PROMPTS[:2], max_tokens=48),
        "stopped": dict(prompt=PROMPTS[2:4], max_tokens=24, stop=["\n"]),
        "sampled": dict(prompt=PROMPTS[4], max_tokens=40, temperature=0.7),
        "n2": dict(prompt=PROMPTS[5], max_tokens=16, n=2),
    }
    results: dict[str, list[str]] = {}
    tokens = {name: session(gateway) for name in jobs}
    before = gateway.usage()["batches"]
    barrier = threading.Barrier(len(jobs))

    def call(name: str) -> None:
        barrier.wait()
        results[name] = complete(gateway, tokens[name], **jobs[name])

    threads = [threading.Thread(target=call, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = {name: gateway.close_session(token) for name, token in tokens.items()}
    return {
        "results": results,
        "steps": gateway.usage()["batches"] - before,
        "tokens": {name: r.tokens_used for name, r in records.items()},
    }


def abort(gateway) -> dict:
    """A call of 2,000 tokens whose session closes while it decodes."""
    token = session(gateway)
    answer: dict = {}

    def call() -> None:
        try:
            answer["texts"] = complete(gateway, token, "1, 2, 3, 4, 5,", max_tokens=2000)
        except Exception as exc:
            answer["error"] = str(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(3.0)  # decoding by now
    started = time.perf_counter()
    gateway.close_session(token)
    idle = gateway.run_exclusive(lambda: True)  # runs once no row decodes
    out = {"idle_after_s": time.perf_counter() - started, "idle": idle}
    thread.join()
    return out | answer


def population(policy, gateway) -> dict:
    from populations import random_population

    from agent.policy.backend import GenerationConfig

    perturbation = random_population(policy.model, 2, sigma=0.02, rank=1)
    gateway.set_population(perturbation)
    results: dict[int, list[str]] = {}
    try:

        def call(member: int) -> None:
            token = session(gateway, member)
            try:
                results[member] = complete(gateway, token, PROMPTS[:4], max_tokens=MAX_TOKENS)
            finally:
                gateway.close_session(token)

        threads = [threading.Thread(target=call, args=(m,)) for m in (0, 1, -1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        members = [m for m in (0, 1, -1) for _ in PROMPTS[:4]]
        config = GenerationConfig(max_new_tokens=MAX_TOKENS)
        direct = gateway.run_exclusive(
            lambda: policy.engine.generate(PROMPTS[:4] * 3, config, perturbation, members)
        )
    finally:
        gateway.set_population(None)
    return {"gateway": {str(k): v for k, v in results.items()}, "direct": [g.text for g in direct]}


def raw_engine(folder: Path) -> list[str]:
    """The exported node (`folder/model`) on an engine of its own, with the loop engine's
    settings (also `python tests/vllm_loop_runner.py --raw FOLDER OUT.json`)."""
    from agent.policy.backends import lora_rank
    from agent.policy.vllm_backend import VllmBackend, VllmBackendConfig

    config = run_config()
    engine = VllmBackend.from_config(
        VllmBackendConfig(
            model=str(folder / "model"),
            max_model_len=None,
            enable_lora=True,
            max_loras=config.es.population,
            max_lora_rank=lora_rank(config.es.rank),
            seed=config.seed,
        )
    )
    try:
        return [g.text for g in engine.generate(PROMPTS, greedy_config())]
    finally:
        engine.close()


def main(out_path: str) -> None:
    from agent.gateway import Gateway, GatewayConfig, tokenizer_chat_template
    from agent.loop.policy import backend_spec
    from agent.policy.backends import build_backend

    folder = Path(tempfile.mkdtemp(prefix="vllm-loop-"))
    started = time.perf_counter()
    policy = build_backend("vllm", backend_spec(run_config())).generator
    out: dict = {"engine_start_s": time.perf_counter() - started}
    try:
        with Gateway(
            policy, GatewayConfig(), chat_template=tokenizer_chat_template(policy.tokenizer)
        ) as gateway:
            out["streaming"] = gateway._batcher.streaming
            out["weights"] = weights(policy, gateway, folder)
            out["stream"] = stream(gateway)
            out["abort"] = abort(gateway)
            out["population"] = population(policy, gateway)
    finally:
        policy.close()
    out["weights"]["raw_engine_node"] = raw_engine(folder)
    Path(out_path).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    if sys.argv[1] == "--raw":
        Path(sys.argv[3]).write_text(json.dumps(raw_engine(Path(sys.argv[2]))))
    else:
        main(sys.argv[1])
