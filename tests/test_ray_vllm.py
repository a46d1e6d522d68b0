"""vLLM on Ray replicas (`[model] backend = "vllm"`, `executor = "ray"`): a replica builds its own
engine and host copy (`RegisteredSource`: the backend registry's vllm builder), replays ES records itself and pushes the result into its
engine; its greedy rows of a node equal the node's export on an engine of its own, and a
population given as seeds runs as LoRA adapters. SmolLM2-135M on one real `ray start` node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e .[vllm])")

from vllm_loop_runner import MAX_TOKENS, PROMPTS, run_config  # noqa: E402

from agent.es.chain_replayer import ChainReplayer  # noqa: E402
from agent.es.config import DEFAULT_TARGETS, EsConfig  # noqa: E402
from agent.loop.policy import backend_spec  # noqa: E402
from agent.policy.backend import GenerationConfig  # noqa: E402
from agent.policy.transformers_backend import (  # noqa: E402
    TransformersBackend,
    TransformersBackendConfig,
)
from agent.scale.backend_source import RegisteredSource  # noqa: E402
from agent.scale.local_cluster import LocalRayCluster  # noqa: E402
from agent.scale.ray_policy import RayPolicy  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def host(dtype: str = "bfloat16") -> TransformersBackend:
    return TransformersBackend.from_config(
        TransformersBackendConfig(model="smollm2-135m", device="cpu", dtype=dtype)
    )


def test_a_vllm_replica_generates_the_nodes_export(tmp_path) -> None:
    config = run_config()
    es = ChainReplayer(host().model, DEFAULT_TARGETS)
    es.set([])
    strategy = es.strategy(
        EsConfig(population=4, sigma=config.es.sigma, alpha=config.es.alpha, seed=3), step=1
    )
    population = strategy.ask()
    record = asdict(strategy.tell(population, [1.0, 0.0, 0.5, 0.25]))
    export = host()
    ChainReplayer(export.model, DEFAULT_TARGETS).set([record])
    export.model.save_pretrained(tmp_path / "model")
    export.tokenizer.save_pretrained(tmp_path / "model")
    raw = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "vllm_loop_runner.py"),
            "--raw",
            str(tmp_path),
            str(tmp_path / "raw.json"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=600,
    )
    assert raw.returncode == 0, raw.stdout[-3000:] + raw.stderr[-3000:]
    expected = json.loads((tmp_path / "raw.json").read_text())

    greedy = GenerationConfig(max_new_tokens=MAX_TOKENS, batch_size=len(PROMPTS))
    source = RegisteredSource("vllm", backend_spec(config))
    with (
        LocalRayCluster(nodes=1, cpus_per_node=2, object_store_mb=100) as cluster,
        RayPolicy(source, replicas=1, address=cluster.address, cpus_per_replica=1) as policy,
    ):
        base = [g.text for g in policy.generate(PROMPTS, greedy)]
        assert policy.set_weights([record]) == [1]
        node = [g.text for g in policy.generate(PROMPTS, greedy)]
        members = [m for m in (0, 1, -1) for _ in PROMPTS[:2]]
        rows = policy.generate(PROMPTS[:2] * 3, greedy, population, members)  # seeds cross
        policy.set_weights([])
        again = [g.text for g in policy.generate(PROMPTS, greedy)]
    assert node == expected
    assert node != base and again == base
    assert [g.text for g in rows[4:]] == node[:2]  # member -1: the node itself
    assert [g.text for g in rows[:2]] != node[:2]  # a member's perturbation changes its rows
