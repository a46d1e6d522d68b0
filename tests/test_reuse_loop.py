"""Reused greedy replies in a real run's runtime: the real gateway, sandbox pools, archive and
scaffold, the tiny random model saved as a folder. A node judged again on the weights it was
judged with (what a self-edit's child and the held-out report do) is answered from the kept
replies and scores the same; a node with other weights (an ES child) generates afresh; a node's
cost counts only what was generated for it."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from agent.es import EggRoll, EsConfig
from agent.loop.config import from_dict
from agent.loop.evaluation import evaluate, run_tasks
from agent.loop.frontier import ROOT_ID
from agent.loop.runtime import Runtime, model_hash
from agent.policy.tiny import tiny_model
from agent.scaffold.repo import seed_files


def es_record(target_modules) -> dict:
    """A record for the tiny model's shapes (made on a copy of its own)."""
    model, _ = tiny_model()
    es = EggRoll(
        EsConfig(population=2, seed=0, target_modules=tuple(target_modules), alpha=0.05),
        model,
        step=1,
    )
    return asdict(es.tell(es.ask(), [1.0, 0.0]))


@pytest.mark.docker
@pytest.mark.slow
def test_judging_a_node_again_reuses_its_replies_and_other_weights_generate(tiny_dir, tmp_path):
    config = from_dict(
        {
            "seed": 3,
            "model": {"name": str(tiny_dir), "backend": "transformers", "threads": 1},
            "tasks": {"stage1_tasks": 3, "dev_tasks": 1, "heldout_tasks": 1},
            "solve": {"wall_s": 120, "tokens_per_task": 64, "max_tokens_per_call": 16},
            "sandbox": {"agent_workers": 1, "scoring_workers": 1},
        },
        "test",
    )
    with Runtime(config, tmp_path / "run") as rt:
        rt.archive.add_root(
            config.model.name, model_hash(rt.backend), files=seed_files(), node_id=ROOT_ID
        )
        files = rt.archive.scaffold_files(ROOT_ID)
        first = run_tasks(rt, ROOT_ID, files, rt.tasks.stage1, "train")
        generated = rt.gateway.usage()["tokens"]
        assert generated > 0 and rt.gateway.usage()["reused_calls"] == 0

        again = run_tasks(rt, ROOT_ID, files, rt.tasks.stage1, "train")
        usage = rt.gateway.usage()
        assert usage["tokens"] == generated  # nothing generated the second time
        assert usage["reused_calls"] == first.llm_calls > 0
        assert usage["reused_tokens"] == first.tokens == again.tokens
        assert again.per_task == first.per_task
        assert [a.program for a in again.attempts] == [a.program for a in first.attempts]

        rt.archive.add_child(
            ROOT_ID, "es_step", node_id="n0001", es_record=es_record(config.es.target_modules)
        )
        run_tasks(rt, "n0001", files, rt.tasks.stage1, "train")
        usage = rt.gateway.usage()
        assert usage["tokens"] > generated  # other weights: generated for
        assert usage["reused_calls"] == first.llm_calls  # nothing of the base's reused

        run_tasks(rt, ROOT_ID, files, rt.tasks.stage1, "train")  # the base again, after n0001
        usage = rt.gateway.usage()
        assert usage["reused_calls"] == 2 * first.llm_calls

        # A node's cost counts what was generated for it, not what was reused: stage 1 (the
        # same tasks again) is all reused, the dev task is new.
        judged = evaluate(rt, ROOT_ID, None)
        after = rt.gateway.usage()
        assert judged.cost.generated_tokens == after["tokens"] - usage["tokens"]
        assert after["reused_tokens"] - usage["reused_tokens"] == first.tokens
