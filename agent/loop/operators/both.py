"""Both at once: an edit proposed with the parent's weights, then an ES step on the parent's
pair; the child takes the new weights and the new scaffold together."""

from __future__ import annotations

import random

from agent.loop.operators.es_step import es_step
from agent.loop.operators.registry import Child, register_operator
from agent.loop.operators.scaffold_edit import scaffold_edit
from agent.loop.runtime import Runtime
from archive.drawing.view import OperatorStyle


@register_operator(
    "both",
    style=OperatorStyle("diamond", "#9467bd", "ES + edit"),
    rank=2,
    steps_weights=True,
    edits=True,
)
def both(rt: Runtime, parent_id: str, iteration: int, rng: random.Random) -> Child:
    edit = scaffold_edit(rt, parent_id, iteration, rng)
    edit.operator = "both"
    if edit.failure:
        return edit
    step = es_step(rt, parent_id, iteration, rng)
    if step.failure:  # no weights step to add: the edit alone, on the parent's weights
        edit.metadata |= step.metadata | {"es_failure": step.failure}
        edit.cost = edit.cost + step.cost
        return edit
    return Child(
        "both",
        es_record=step.es_record,
        checkpoint=step.checkpoint,
        changes=edit.changes,
        cost=edit.cost + step.cost,
        metadata=edit.metadata | step.metadata,
    )
