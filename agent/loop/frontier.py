"""The run's answer: which node is best, claimed only on a paired significant difference.

Every node passing stage 1 is judged on the same dev tasks, task by task. Taking the node with
the highest dev score would follow noise: with tens of children, the luckiest one wins a few
points it does not have on held-out tasks. So the frontier starts at the base node, and a later
node replaces it only when it beats the frontier on their shared dev tasks with McNemar's exact
one-sided p at most `alpha` (and a higher dev score). Nodes are taken in the order they were
evaluated, so the answer never changes when later nodes are added unless one of them beats it.
"""

from __future__ import annotations

from dataclasses import dataclass

from archive import Archive, Node, Status
from evaluators.stats import PairedDifference, paired_on_shared

ROOT_ID = "n0000"
RESULTS_KEY = "results"  # node metadata: {split: {task_id: passed}} for train and dev
HELDOUT_KEY = "heldout_results"  # the final report's, apart: selection never reads it


@dataclass(frozen=True)
class Step:
    """A node that replaced the frontier, and by how much."""

    node: str
    against: str
    difference: PairedDifference


def results(node: Node, split: str) -> dict[str, bool]:
    """The node's per-task results on a split ({} when it has none, e.g. an old archive)."""
    stored = node.metadata.get(HELDOUT_KEY if split == "heldout" else RESULTS_KEY)
    if split != "heldout":
        stored = stored.get(split) if isinstance(stored, dict) else None
    if not isinstance(stored, dict):
        return {}
    return {str(k): bool(v) for k, v in stored.items()}


def frontier(archive: Archive, alpha: float = 0.05, split: str = "dev") -> tuple[str, list[Step]]:
    """The frontier node and the steps that led to it (empty: the base is the answer).

    Nodes without per-task results (archives written before they were kept) fall back to a
    plain comparison of scores, as before."""
    nodes = sorted(
        (n for n in archive.nodes() if n.status is Status.EVALUATED and split in n.scores),
        key=evaluated_order,
    )
    by_id = {n.id: n for n in nodes}
    current = by_id.get(ROOT_ID) or (nodes[0] if nodes else None)
    if current is None:
        return ROOT_ID, []
    steps: list[Step] = []
    for node in nodes:
        if node.id == current.id:
            continue
        mine, theirs = results(node, split), results(current, split)
        if not mine or not theirs:
            if node.scores[split].score > current.scores[split].score:
                current = node
            continue
        diff = paired_on_shared(theirs, mine)
        if is_gain(diff, alpha):
            steps.append(Step(node.id, current.id, diff))
            current = node
    return current.id, steps


def is_gain(diff: PairedDifference, alpha: float) -> bool:
    """The claim the frontier makes: higher on the shared tasks, one-sided McNemar p <= alpha."""
    return bool(diff.n and diff.diff > 0 and diff.p_greater <= alpha)


def evaluated_order(node: Node) -> tuple[float, str]:
    at = node.metadata.get("evaluated_at")
    return (float(at) if isinstance(at, int | float) else node.created_at, node.id)
