"""A failed task as a self-edit is shown it: the task, the agent's program, what the tests said.

Evaluation keeps the failures of a node's stage-1 tasks in its metadata (`to_note`), and a later
scaffold edit of that node (in this run or a resumed one) reads them back (`from_note`), so the
edit sees what the evaluation saw without judging anything again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.scaffold.solving import Attempt
from evaluators.task import Task

PROGRAM_KEPT = 4000  # characters of the agent's program kept in a note
RESULT_KEPT = 500  # characters of what the tests said


@dataclass(frozen=True)
class TaskFailure:
    task: Task
    program: str
    detail: str  # the verdict's detail, or why the agent gave no program ("" if neither)

    @property
    def result(self) -> str:
        return self.detail or "failed"

    @classmethod
    def of(cls, attempt: Attempt) -> TaskFailure:
        verdict = attempt.verdict
        detail = verdict.detail if verdict else attempt.error or ""
        return cls(attempt.task, attempt.program, detail[:RESULT_KEPT])

    def to_note(self) -> dict[str, str]:
        return {
            "task_id": self.task.task_id,
            "program": self.program[:PROGRAM_KEPT],
            "detail": self.detail[:RESULT_KEPT],
        }

    @classmethod
    def from_note(cls, note: Mapping[str, object], tasks: Mapping[str, Task]) -> TaskFailure | None:
        """None when the note names no task of `tasks` (the only ones an edit may be shown)."""
        task = tasks.get(str(note.get("task_id", "")))
        if task is None:
            return None
        program, detail = note.get("program", ""), note.get("detail", "")
        return cls(
            task,
            str(program)[:PROGRAM_KEPT],
            str(detail)[:RESULT_KEPT],
        )


def failed(attempts: Iterable[Attempt]) -> list[TaskFailure]:
    """The attempts that were judged and failed (an unjudged one has nothing to show)."""
    return [TaskFailure.of(a) for a in attempts if a.verdict is not None and not a.verdict.passed]


def notes_of(attempts: Iterable[Attempt], kept: int) -> list[dict[str, str]]:
    """What a node's metadata keeps: every attempt that did not pass (an agent error too), at
    most `kept`."""
    return [TaskFailure.of(a).to_note() for a in attempts if not a.passed][:kept]


def from_notes(notes: object, tasks: Mapping[str, Task]) -> list[TaskFailure]:
    """The failures a node's metadata kept (anything that is not a note is passed over)."""
    if not isinstance(notes, Sequence) or isinstance(notes, str):
        return []
    found = (TaskFailure.from_note(n, tasks) for n in notes if isinstance(n, Mapping))
    return [f for f in found if f is not None]
