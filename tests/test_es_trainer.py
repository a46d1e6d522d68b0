"""An ES step end to end: a real (tiny) model generates for the whole population in one batched
call, the real sandbox scores the completions, and the step's record replays to the same bits."""

from __future__ import annotations

import pytest
import torch

from agent.es import EggRoll, EsConfig
from agent.es.replay import base_weights, replay
from agent.es.trainer import EsTrainer, EsTrainerConfig
from agent.policy.backend import GenerationConfig
from agent.policy.tiny import tiny_model
from agent.policy.transformers_backend import TransformersBackend
from evaluators.task import Task

pytestmark = pytest.mark.docker

TASKS = [
    Task(
        f"toy/{i}",
        f"def f{i}(x):\n    return ",
        f"f{i}",
        f"def check(candidate):\n    assert candidate(1) == {i}\n    assert candidate(2) == {i}\n",
        "toy",
    )
    for i in range(3)
]


@pytest.mark.parametrize("mode", ["lowrank", "fullrank"])
def test_an_es_step_runs_end_to_end_and_replays(one_worker_pool, mode):
    model, tokenizer = tiny_model()
    backend = TransformersBackend(model, tokenizer)
    config = EsConfig(population=4, sigma=0.05, alpha=0.01, seed=3, mode=mode)
    es = EggRoll(config, model)
    base = base_weights(model, config.target_modules)
    trainer = EsTrainer(
        es,
        backend,
        one_worker_pool,
        TASKS,
        EsTrainerConfig(
            tasks_per_step=2, generation=GenerationConfig(max_new_tokens=8, stop=("\n",))
        ),
    )
    result = trainer.step(parent="node-1")
    assert len(result.rewards) == 4 and all(len(row) == 2 for row in result.rewards)
    assert result.infra_errors == 0 and result.tokens > 0
    assert result.record.parent == "node-1" and len(result.record.coefficients) == 4
    replayed, _ = replay(base, [result.record])
    assert all(torch.equal(replayed[n], es.master[n]) for n in replayed)
    assert trainer.minibatch(0) == trainer.minibatch(0)  # seeded by step
