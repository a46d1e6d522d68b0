"""Top-down positions for drawing the lineage: generations by depth, subtrees side by side.

depth = 1 + the deepest parent (so every edge points down, merges included); x comes from the
tree of primary parents: leaves take consecutive slots in depth-first order and a parent sits
midway over its first and last child, so each subtree owns a contiguous band of columns.
Iterative throughout: an ES chain can be thousands of generations deep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Position:
    """Where a node is drawn: x in leaf slots (0, 1, ...), depth in generations (root 0)."""

    x: float
    depth: int


def tree_layout(parents: Mapping[str, Sequence[str]]) -> dict[str, Position]:
    """Positions for nodes given as id -> parent ids, parents listed before their children.

    Parents outside the mapping are ignored (the node is then drawn as a root).
    """
    depth: dict[str, int] = {}
    kids: dict[str, list[str]] = {}
    roots: list[str] = []
    for node_id, ps in parents.items():
        known = [p for p in ps if p in depth]
        if len(known) != sum(p in parents for p in ps):
            raise ValueError(f"node {node_id!r} is listed before its parents")
        depth[node_id] = 1 + max((depth[p] for p in known), default=-1)
        kids[node_id] = []
        if known:
            kids[known[0]].append(node_id)
        else:
            roots.append(node_id)

    x: dict[str, float] = {}
    next_slot = 0
    for root in roots:
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            node_id, expanded = stack.pop()
            children = kids[node_id]
            if not children:
                x[node_id] = float(next_slot)
                next_slot += 1
            elif expanded:
                x[node_id] = (x[children[0]] + x[children[-1]]) / 2
            else:
                stack.append((node_id, True))
                stack.extend((c, False) for c in reversed(children))
    return {node_id: Position(x[node_id], depth[node_id]) for node_id in parents}
