"""A scaffold edit: the parent's own `improve` edits a copy of its repository after a diagnosis
of its recorded train failures; the child is the edited scaffold with the parent's weights."""

from __future__ import annotations

import random
import time

from agent.loop.evaluation import run_tasks
from agent.loop.frontier import results
from agent.loop.operators.registry import Child, register_operator
from agent.loop.runtime import Runtime
from agent.scaffold.edit import propose
from agent.scaffold.failures import failed, from_notes
from archive import Cost, Node
from archive.drawing.view import OperatorStyle
from evaluators.task import Task


@register_operator(
    "scaffold_edit",
    style=OperatorStyle("triangle", "#ff7f0e", "scaffold edit"),
    weight=0.5,
    rank=1,
    edits=True,
)
def scaffold_edit(rt: Runtime, parent_id: str, iteration: int, rng: random.Random) -> Child:
    """Diagnose one of the parent's recorded train failures; the parent's own `improve` edits a
    copy of its repository (with the parent's weights, unless an external proposer is set)."""
    started = time.time()
    parent = rt.archive.get(parent_id)
    rt.set_weights(rt.archive.weights_chain(parent_id))
    files = rt.archive.scaffold_files(parent_id)
    by_id = {t.task_id: t for t in rt.tasks.train}
    failures = from_notes(parent.metadata.get("failures", []), by_id)
    if not failures:  # nothing recorded: look for failures now, on a train minibatch
        sample = rng.sample(rt.tasks.train, min(rt.config.es.tasks_per_step, len(rt.tasks.train)))
        failures = failed(run_tasks(rt, parent_id, files, sample, f"look{iteration}").attempts)
    edit = rt.config.edit
    solved = solved_tasks(parent, by_id, edit.solved_shown, rng)
    reused = rt.reused_since()  # improve's checks may be answered with the parent's replies
    proposal = propose(
        files,
        failures,
        rt.agent_pool,
        rt.gateway,
        edit,
        rng,
        f"edit{iteration}",
        proposer=rt.proposer,
        solved=solved,
    )
    metadata = {
        "diagnosis": proposal.diagnosis,
        "problem_statement": proposal.problem_statement,
        "flags": proposal.flags,
        "improve_note": proposal.note,
    }
    return Child(
        "scaffold_edit",
        changes=proposal.changes if proposal.ok else None,
        failure=proposal.failure,
        cost=Cost(
            proposal.tokens - reused(),
            proposal.sandbox_s,
            time.time() - started,
        ),
        metadata=metadata,
    )


def solved_tasks(
    parent: Node, train: dict[str, Task], count: int, rng: random.Random
) -> list[Task]:
    """Up to `count` train tasks the parent passed (its stored train results), drawn at random:
    only train tasks, so no dev or held-out task ever reaches `improve`."""
    if count <= 0:
        return []
    passed = sorted(t for t, ok in results(parent, "train").items() if ok and t in train)
    return [train[t] for t in rng.sample(passed, min(count, len(passed)))]
