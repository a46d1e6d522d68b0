"""A broken agent must never look like a bad one: how the loop classifies what went wrong.

Unit tests of the logic (a real archive, the evaluation replaced by what it raises); the same
paths through the real CLI, the sandbox and a real model are in tests/test_demo_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.loop import loop as loop_module
from agent.loop.config import RunConfig
from agent.loop.evaluation import (
    Evaluation,
    GatewayDown,
    InfraError,
    NoProgram,
    Outcomes,
    outcome,
)
from agent.loop.loop import INFRA_STREAK_MAX, ROOT_ID, Loop, SeedScaffoldError
from agent.loop.operators import Child
from agent.scaffold.solving import Attempt
from archive import Archive, Cost, Score, Status
from evaluators.task import Task
from sandbox.job import Status as VerdictStatus
from sandbox.job import Verdict

TASK = Task("t1", "def f():\n", "f", "def check(candidate):\n    pass\n", "toy")


def attempt(program: str, verdict: Verdict | None, *, error: str | None = None, infra=False):
    return Attempt(TASK, -1, program, error, verdict, infra)


def test_outcomes_keep_agent_errors_apart_from_wrong_answers():
    attempts = [
        attempt("x", Verdict(VerdictStatus.PASSED)),
        attempt("x", Verdict(VerdictStatus.FAILED)),
        attempt("", Verdict(VerdictStatus.ERROR), error="NameError: boom"),
        attempt("", Verdict(VerdictStatus.INFRA_ERROR), error="agent job infra", infra=True),
        attempt("x", Verdict(VerdictStatus.INFRA_ERROR)),  # the scoring pool died twice
    ]
    assert [outcome(a) for a in attempts] == ["passed", "wrong", "agent_error", "infra", "infra"]
    assert Outcomes.of(attempts).to_json() == {
        "passed": 1,
        "wrong": 1,
        "agent_error": 1,
        "infra": 2,
    }


def test_no_program_says_whether_the_agent_ever_called_the_model():
    assert "before any LLM call" in str(NoProgram("ModuleNotFoundError: x", 4, 0))
    assert "after 3 LLM calls" in str(NoProgram("ValueError: y", 4, 3))


@pytest.fixture
def loop(tmp_path: Path, monkeypatch):
    """A Loop over a real archive holding a root and two pending children; `evaluate` is
    replaced per test by what it should raise."""
    archive = Archive(tmp_path / "run")
    archive.add_root("m", "h", files={"a.py": "x = 1\n"}, node_id=ROOT_ID)
    for child in ("n0001", "n0002", "n0003", "n0004"):
        archive.add_child(ROOT_ID, "es_step", node_id=child, es_record={"seeds": [1]})
    gateway = SimpleNamespace(usage=lambda: {"tokens": 0})
    rt = SimpleNamespace(
        config=RunConfig(),
        run_dir=tmp_path / "run",
        archive=archive,
        gateway=gateway,
    )
    lp = Loop(rt)
    lp.progress, lp.bar = SimpleNamespace(update=lambda *a, **k: None), 0  # as run() sets them
    yield lp, archive, monkeypatch
    archive.close()


def raising(exc: Exception):
    def evaluate(rt, node_id, parent_train):
        raise exc

    return evaluate


def events(archive: Archive) -> list[dict]:
    path = archive.run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_base_node_without_programs_stops_the_run_and_stays_pending(loop):
    lp, archive, monkeypatch = loop
    cause = NoProgram("ModuleNotFoundError: No module named 'scaffold'", 6, 0)
    monkeypatch.setattr(loop_module, "evaluate", raising(cause))
    with pytest.raises(SeedScaffoldError) as info:
        lp._evaluate(ROOT_ID)
    message = str(info.value)
    assert "ModuleNotFoundError" in message and "before any LLM call" in message
    assert "did not reach the agent container" in message  # the likely fix for that error
    assert archive.get(ROOT_ID).status is Status.PENDING  # kept, never scored 0
    assert archive.get(ROOT_ID).scores == {}
    lp.events.close()
    assert [e["event"] for e in events(archive)][-1] == "agent_error"


def test_a_child_that_breaks_itself_fails_with_its_error_and_the_run_goes_on(loop):
    lp, archive, monkeypatch = loop
    monkeypatch.setattr(loop_module, "evaluate", raising(NoProgram("SyntaxError: oops", 6, 0)))
    lp._evaluate("n0001")  # no exception: an agent cannot stop the run by breaking itself
    node = archive.get("n0001")
    assert node.status is Status.FAILED and node.scores == {}
    assert node.failure_reason.startswith("agent error: ") and "SyntaxError: oops" in (
        node.failure_reason
    )


def test_sandbox_failures_are_charged_to_no_node_and_a_streak_stops_the_run(loop):
    lp, archive, monkeypatch = loop
    monkeypatch.setattr(loop_module, "evaluate", raising(InfraError("a container died twice")))
    for child in ("n0001", "n0002"):
        lp._evaluate(child)
        node = archive.get(child)
        assert node.status is Status.FAILED and node.scores == {}  # no score of 0
        assert node.failure_reason.startswith("infrastructure error (no score)")
    with pytest.raises(InfraError, match=f"{INFRA_STREAK_MAX} children in a row"):
        lp._evaluate("n0003")
    assert archive.get("n0003").status is Status.PENDING  # resume judges it again


def test_a_good_evaluation_resets_the_infra_streak(loop):
    lp, archive, monkeypatch = loop
    monkeypatch.setattr(loop_module, "evaluate", raising(InfraError("died")))
    lp._evaluate("n0001")
    lp._evaluate("n0002")
    fine = Evaluation({"train": Score(0.5, 2)}, Cost(1, 1.0, 1.0), {"outcomes": {}})
    monkeypatch.setattr(loop_module, "evaluate", lambda rt, node_id, parent_train: fine)
    lp._evaluate("n0003")
    assert archive.get("n0003").status is Status.EVALUATED
    monkeypatch.setattr(loop_module, "evaluate", raising(InfraError("died")))
    lp._evaluate("n0004")  # one failure after a success: not a streak
    assert archive.get("n0004").status is Status.FAILED


@pytest.mark.parametrize("node_id", [ROOT_ID, "n0001"])
def test_a_dead_gateway_stops_the_run_whoever_was_being_judged(loop, node_id):
    lp, archive, monkeypatch = loop
    monkeypatch.setattr(loop_module, "evaluate", raising(GatewayDown("no answer")))
    with pytest.raises(GatewayDown):
        lp._evaluate(node_id)
    assert archive.get(node_id).status is Status.PENDING


def test_files_the_archive_refuses_make_a_failed_child_not_a_crash(loop):
    """check_changes and the archive share one path policy; should they ever disagree, the
    archive's refusal is the child's failure, and the run goes on."""
    lp, archive, _ = loop
    child = Child("scaffold_edit", changes={"a.py": "x = 2\n", "b\n120000 x\tc": "y\n"})
    lp._store("n0005", ROOT_ID, 5, child)
    node = archive.get("n0005")
    assert node.status is Status.FAILED
    assert node.failure_reason.startswith("scaffold refused by the archive:")
    assert node.scaffold == archive.get(ROOT_ID).scaffold  # no files of the refused edit
