"""The vLLM backend agrees with the transformers backend on SmolLM2-135M (fp32, same weights):
greedy tokens, stop strings, and ES population rows through multi-LoRA vs the batched low-rank
hooks. vLLM runs in a subprocess (tests/vllm_runner.py) because it spawns its own engine process;
one engine start serves every test here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e .[vllm])")

from populations import random_population  # noqa: E402

from agent.policy.backend import Generation, GenerationConfig  # noqa: E402
from agent.policy.prompts import COMPLETION_STOPS  # noqa: E402
from agent.policy.transformers_backend import (  # noqa: E402
    TransformersBackend,
    TransformersBackendConfig,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    'def add(a, b):\n    """Return the sum of a and b."""\n',
    "def fib(n):\n",
    "The capital of France is",
    "# Python\nimport os\n",
    "def is_prime(n):\n",
    "class Stack:\n",
    "Once upon a time",
    "def reverse(s):\n    return",
]
GREEDY = GenerationConfig(max_new_tokens=24, batch_size=8)
STOPPED = GenerationConfig(max_new_tokens=48, batch_size=8, stop=COMPLETION_STOPS)
MEMBERS, SIGMA = 2, 0.004


def as_job(config: GenerationConfig) -> dict:
    return {"max_new_tokens": config.max_new_tokens, "stop": list(config.stop)}


@pytest.fixture(scope="module")
def reference() -> TransformersBackend:
    return TransformersBackend.from_config(
        TransformersBackendConfig(model="smollm2-135m", dtype="float32")
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The engine's job, its outputs and its log."""
    return tmp_path_factory.mktemp("vllm")


@pytest.fixture(scope="module")
def runs(
    reference: TransformersBackend, folder: Path
) -> dict[str, tuple[list[Generation], list[Generation]]]:
    """Each job as (vLLM, transformers) generations: one engine start, overlapped with the
    transformers reference generating the same rows in this process."""
    perturbation = random_population(reference.model, MEMBERS, SIGMA, rank=1)
    torch.save({"sigma": perturbation.sigma, "factors": perturbation.factors}, folder / "pert.pt")
    member_of_row = [m for m in range(MEMBERS) for _ in PROMPTS] + [-1, -1]
    rows = PROMPTS * MEMBERS + PROMPTS[:2]
    job = {
        "model": "smollm2-135m",
        "dtype": "float32",
        "runs": {
            "greedy": {"prompts": PROMPTS, "config": as_job(GREEDY)},
            "stopped": {"prompts": PROMPTS, "config": as_job(STOPPED)},
            "population": {
                "prompts": rows,
                "config": as_job(GREEDY),
                "perturbation": str(folder / "pert.pt"),
                "member_of_row": member_of_row,
            },
        },
    }
    (folder / "job.json").write_text(json.dumps(job))
    runner = ROOT / "tests" / "vllm_runner.py"
    with open(folder / "log.txt", "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(runner), str(folder / "job.json"), str(folder / "out.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
        try:
            expected = {
                "greedy": reference.generate(PROMPTS, GREEDY),
                "stopped": reference.generate(PROMPTS, STOPPED),
                "population": reference.generate(rows, GREEDY, perturbation, member_of_row),
            }
            returncode = process.wait(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
    log = (folder / "log.txt").read_text()
    assert returncode == 0, log[-4000:]
    # On a CPU the population rides on this project's plugin (agent/policy/vllm_cpu_lora.py).
    assert torch.cuda.is_available() or "Using SlotMatmulPunicaWrapper" in log, log[-4000:]
    raw = json.loads((folder / "out.json").read_text())
    return {name: ([Generation(**g) for g in raw[name]], expected[name]) for name in expected}


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU vLLM keeps its own waiting")
def test_vllm_processes_wait_without_spinning_on_a_cpu(runs, folder: Path) -> None:
    """While the worker decodes, the engine core waits for its reply parked, not spinning: it
    used to burn a whole core of a 2-core machine beside the worker (agent/policy/vllm_spin.py)."""
    waiting = json.loads((folder / "out-waiting.json").read_text())
    assert waiting["workers_parked"] == [True]
    share = waiting["cpu_s"]["engine_core"] / waiting["wall_s"]
    worker = waiting["cpu_s"]["worker"] / waiting["wall_s"]
    assert share < 0.5, (share, worker, waiting)  # spinning, it was 0.8
    assert worker > share, (share, worker, waiting)


def agreement(a: list[Generation], b: list[Generation]) -> int:
    return sum(x.text == y.text and x.num_tokens == y.num_tokens for x, y in zip(a, b, strict=True))


def test_greedy_agrees_with_transformers(runs) -> None:
    got, expected = runs["greedy"]
    same = agreement(got, expected)
    print(f"vLLM vs transformers greedy: {same}/{len(PROMPTS)} identical")
    assert same >= 7
    assert "Paris" in got[2].text
    assert all(g.finish_reason in ("length", "eos") for g in got)


def test_stop_strings_are_honoured(runs) -> None:
    got, expected = runs["stopped"]
    assert any(g.finish_reason == "stop" for g in got)
    for g in got:
        assert not any(stop in g.text for stop in COMPLETION_STOPS)
        if g.finish_reason == "stop":
            assert g.num_tokens < STOPPED.max_new_tokens
    same = agreement(got, expected)
    print(f"vLLM vs transformers with stops: {same}/{len(PROMPTS)} identical")
    assert same >= 7
    matching = [(a, b) for a, b in zip(got, expected, strict=True) if a.text == b.text]
    assert all(a.finish_reason == b.finish_reason for a, b in matching)


def test_lora_population_matches_low_rank_hooks(runs) -> None:
    got, expected = runs["population"]
    members = len(PROMPTS) * MEMBERS
    same = agreement(got[:members], expected[:members])
    print(f"vLLM LoRA population vs transformers low-rank hooks: {same}/{members} identical")
    assert same >= members - 2
    # The check means something only if the members really generate differently from the base.
    base, _ = runs["greedy"]
    changed = sum(g != base[i % len(PROMPTS)] for i, g in enumerate(got[:members]))
    print(f"rows changed by the perturbation: {changed}/{members}")
    assert changed >= 2
    # Rows with member -1 are the unperturbed model, in the same batch.
    assert got[members:] == base[:2]
