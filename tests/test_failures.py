"""Failures as a self-edit is shown them, and as a node's metadata keeps them."""

from __future__ import annotations

from agent.scaffold.failures import PROGRAM_KEPT, TaskFailure, failed, from_notes, notes_of
from agent.scaffold.solving import Attempt
from evaluators.task import Task
from sandbox.job import Status, Verdict

TASKS = {f"t{i}": Task(f"t{i}", f"def f{i}():\n", f"f{i}", "", "mbpp") for i in range(3)}


def attempts() -> list[Attempt]:
    t0, t1, t2 = TASKS.values()
    return [
        Attempt(t0, -1, "def f0():\n    return 1\n", None, Verdict(Status.PASSED)),
        Attempt(t1, -1, "x" * (PROGRAM_KEPT + 10), None, Verdict(Status.FAILED, detail="wrong")),
        Attempt(t2, -1, "", "agent error: boom", None),  # no program, never judged
    ]


def test_the_metadata_keeps_every_attempt_that_did_not_pass():
    notes = notes_of(attempts(), kept=8)
    assert [n["task_id"] for n in notes] == ["t1", "t2"]
    assert notes[0] == {"task_id": "t1", "program": "x" * PROGRAM_KEPT, "detail": "wrong"}
    assert notes[1]["detail"] == "agent error: boom"  # why there is no program
    assert notes_of(attempts(), kept=1) == notes[:1]


def test_an_edit_is_shown_the_judged_failures_and_reads_back_what_was_kept():
    live = failed(attempts())
    assert [f.task.task_id for f in live] == ["t1"]  # an unjudged attempt has no verdict to show
    kept = from_notes(notes_of(attempts(), kept=8), TASKS)
    assert [(f.task.task_id, f.result) for f in kept] == [
        ("t1", "wrong"),
        ("t2", "agent error: boom"),
    ]
    assert kept[0].program == live[0].program[:PROGRAM_KEPT]
    assert TaskFailure(TASKS["t0"], "", "").result == "failed"  # nothing said: still a failure


def test_notes_that_name_no_known_task_or_are_not_notes_are_passed_over():
    notes = [{"task_id": "dev/1", "program": "p"}, "junk", {"task_id": "t0", "program": 5}]
    (only,) = from_notes(notes, TASKS)
    assert (only.task.task_id, only.program, only.result) == ("t0", "5", "failed")
    assert from_notes("not a list", TASKS) == [] and from_notes(None, TASKS) == []
