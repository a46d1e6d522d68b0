"""What each operator's children came to: the yield of a run's search, operator by operator.

A run's answer is one node; whether its operators work is the share of their children that got
as far as a dev score, and the share of those that beat their parent there. Failed children are
counted by the first words of their reason (`empty diff`, `agent error`, ...), which say where
in the operator the attempt broke.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from agent.loop.frontier import is_gain, results
from archive import Node, Status
from evaluators.stats import paired_on_shared


@dataclass
class OperatorOutcomes:
    """Counts over one operator's children (the root is not a child)."""

    operator: str
    made: int = 0
    failed: int = 0  # no score at all: the operator or the evaluation broke
    reasons: Counter[str] = field(default_factory=Counter)
    pending: int = 0  # not judged yet (a stopped run)
    stopped_at_stage1: int = 0  # scored on stage 1 only: too far below the parent
    judged_on_dev: int = 0
    above_parent: int = 0  # dev score higher than the parent's
    significant: int = 0  # beat the parent on their shared dev tasks, one-sided p <= alpha
    dev_changes: list[float] = field(default_factory=list)  # dev minus the parent's dev

    @property
    def mean_dev_change(self) -> float | None:
        return sum(self.dev_changes) / len(self.dev_changes) if self.dev_changes else None

    def to_json(self) -> dict[str, object]:
        return {
            "made": self.made,
            "failed": self.failed,
            "failure_reasons": dict(self.reasons.most_common()),
            "pending": self.pending,
            "stopped_at_stage1": self.stopped_at_stage1,
            "judged_on_dev": self.judged_on_dev,
            "above_parent_on_dev": self.above_parent,
            "significant_on_dev": self.significant,
            "mean_dev_change": self.mean_dev_change,
        }


def reason_kind(reason: str | None) -> str:
    """`empty diff: improve changed nothing` -> `empty diff`: the class, not the particulars."""
    text = (reason or "no reason given").strip()
    return text.split(":", 1)[0].strip()[:60] or "no reason given"


def operator_outcomes(
    nodes: list[Node], alpha: float = 0.05, split: str = "dev"
) -> dict[str, OperatorOutcomes]:
    """Per operator, in the order operators first appear; each child is compared with its
    first parent (the node it was made from)."""
    by_id = {n.id: n for n in nodes}
    table: dict[str, OperatorOutcomes] = {}
    for node in nodes:
        if not node.parent_ids:
            continue
        row = table.setdefault(node.operator, OperatorOutcomes(node.operator))
        row.made += 1
        if node.status is Status.FAILED:
            row.failed += 1
            row.reasons[reason_kind(node.failure_reason)] += 1
            continue
        if node.status is not Status.EVALUATED:
            row.pending += 1
            continue
        if split not in node.scores:
            row.stopped_at_stage1 += 1
            continue
        row.judged_on_dev += 1
        parent = by_id.get(node.parent_ids[0])
        if parent is None or split not in parent.scores:
            continue
        change = node.scores[split].score - parent.scores[split].score
        row.dev_changes.append(change)
        row.above_parent += change > 0
        mine, theirs = results(node, split), results(parent, split)
        if mine and theirs:
            row.significant += is_gain(paired_on_shared(theirs, mine), alpha)
    return table
