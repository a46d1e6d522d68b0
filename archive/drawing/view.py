"""What a picture of the lineage shows, computed once for every way of drawing it.

`lineage_view` turns an archive into plain JSON-able data: per node its position, fill colour
(score on one split), shape (operator), status and details (scores, cost, scaffold diff, ES
record, the loop's diagnosis); plus the best score per split over time. The HTML page's script
and the PNG renderer both draw from this, so the two pictures cannot drift apart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archive.drawing.layout import tree_layout
from archive.node import ROOT_OPERATOR, Node, Status

if TYPE_CHECKING:
    from archive.store import Archive

COLOR_SPLITS = ("dev", "train")  # the split that colours nodes: the first one any node has
# viridis, sampled at 9 points: perceptually even and readable by colour-blind users
SCORE_STOPS = (
    "#440154",
    "#472d7b",
    "#3b528b",
    "#2c728e",
    "#21918c",
    "#28ae80",
    "#5ec962",
    "#addc30",
    "#fde725",
)
SCORE_RANGE = (0.0, 1.0)  # scores are pass rates: one fixed scale, so a tie keeps its own colour
UNSCORED_COLOR = "#d9d9d9"
FAILED_COLOR = "#d62728"
MAX_DIFF_CHARS = 200_000  # a root's full scaffold can be large; the page stays loadable


@dataclass(frozen=True, slots=True)
class OperatorStyle:
    """How edges into a node made by an operator look, and the node's marker shape."""

    shape: str  # one of: square, circle, triangle, diamond, hexagon (SVG and matplotlib)
    color: str
    label: str


# The root's style; every operator adds its own when it registers (agent/loop/operators).
OPERATOR_STYLES: dict[str, OperatorStyle] = {
    ROOT_OPERATOR: OperatorStyle("square", "#555555", "root"),
}
OTHER_STYLE = OperatorStyle("hexagon", "#7f7f7f", "other")
_DETAIL_KEYS = (
    "diagnosis",
    "problem_statement",
    "improve_note",
    "flags",
    "iteration",
    "evaluated_at",
)


def register_operator_style(operator: str, style: OperatorStyle) -> None:
    """How the pictures draw `operator`'s nodes (a program that draws must have imported the
    operators it expects, or their nodes share the 'other' style)."""
    OPERATOR_STYLES[operator] = style


def operator_style(operator: str) -> OperatorStyle:
    """The style of a known operator; any other string shares one 'other' style."""
    return OPERATOR_STYLES.get(operator, OTHER_STYLE)


def score_color(value: float | None, lo: float, hi: float) -> str:
    """Hex colour of `value` on the viridis ramp over [lo, hi] (grey when unscored)."""
    if value is None:
        return UNSCORED_COLOR
    t = 0.5 if hi <= lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))
    pos = t * (len(SCORE_STOPS) - 1)
    i = min(int(pos), len(SCORE_STOPS) - 2)
    a, b = _rgb(SCORE_STOPS[i]), _rgb(SCORE_STOPS[i + 1])
    f = pos - i
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b, strict=True))


def color_split(nodes: Iterable[Node]) -> str | None:
    """dev if any node has a dev score, else train, else None (nodes are then all grey)."""
    seen = {split for node in nodes for split in node.scores}
    return next((s for s in COLOR_SPLITS if s in seen), None)


def short_reason(reason: str | None, limit: int = 14) -> str:
    """The head of a failure reason ("empty diff", "agent error", "self-test failed"), cut
    to fit under a node; the whole reason is on hover and in the details."""
    head = (reason or "failed").split(":", 1)[0].strip() or "failed"
    return head if len(head) <= limit else head[: limit - 1] + "\u2026"


def outcome_totals(node: Node) -> dict[str, int]:
    """How the node's tasks ended, over its splits (the loop's metadata `outcomes`): passed,
    wrong (a program that failed), agent_error (no program at all), infra."""
    totals: dict[str, int] = {}
    outcomes = node.metadata.get("outcomes")
    for per_split in outcomes.values() if isinstance(outcomes, dict) else ():
        for kind, count in per_split.items() if isinstance(per_split, dict) else ():
            if isinstance(count, int) and not isinstance(count, bool):
                totals[kind] = totals.get(kind, 0) + count
    return totals


def agent_errors(node: Node) -> int:
    """Tasks where the node's agent produced no program at all (not wrong answers)."""
    return outcome_totals(node).get("agent_error", 0)


def node_label(node: Node, value: float | None) -> list[str]:
    """What is written under a node: its id, then its score, why it failed, or its status."""
    if node.status is Status.FAILED:
        second = short_reason(node.failure_reason)
    elif value is not None or node.scores:
        if value is None:  # not scored on the colour split (stopped at stage 1): say which
            split, score = next(iter(sorted(node.scores.items())))
            second = f"{split} {score.score:.2f}"
        else:
            second = f"{value:.2f}"
        errors = agent_errors(node)
        second += f" ({errors} err)" if errors else ""
    else:
        second = str(node.status)
    return [node.id[:10], second]


def evaluated_at(node: Node) -> float:
    """When the node's scores were recorded: metadata.evaluated_at, else its creation time."""
    t = node.metadata.get("evaluated_at")
    if isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t):
        return float(t)
    return node.created_at


def best_over_time(nodes: Iterable[Node]) -> dict[str, list[list[Any]]]:
    """Per split, the running best score as [time, best, node id] at each improvement."""
    rows = sorted(
        (evaluated_at(n), split, s.score, n.id)
        for n in nodes
        if n.status is Status.EVALUATED
        for split, s in n.scores.items()
    )
    best: dict[str, list[list[Any]]] = {}
    for t, split, score, node_id in rows:
        points = best.setdefault(split, [])
        if not points or score > points[-1][1]:
            points.append([t, score, node_id])
    return best


def lineage_view(
    archive: Archive,
    *,
    details: bool = True,
    diff_cache: MutableMapping[tuple[str | None, str], str] | None = None,
) -> dict[str, Any]:
    """The whole picture as JSON-able data (see the module docstring).

    details=False skips diffs and payloads (the PNG needs none). `diff_cache` keeps diffs
    between calls: commits never change, so a live view computes each diff once.
    """
    nodes = list(archive.nodes())
    by_id = {n.id: n for n in nodes}
    positions = tree_layout({n.id: n.parent_ids for n in nodes})
    split = color_split(nodes)
    values = [n.scores[split].score for n in nodes if split in n.scores] if split else []
    lo, hi = min([SCORE_RANGE[0], *values]), max([SCORE_RANGE[1], *values])
    cache = diff_cache if diff_cache is not None else {}
    out = []
    for n in nodes:
        pos = positions[n.id]
        value = n.scores[split].score if split and split in n.scores else None
        item: dict[str, Any] = {
            "id": n.id,
            "parents": list(n.parent_ids),
            "operator": n.operator,
            "shape": operator_style(n.operator).shape,
            "status": str(n.status),
            "failure_reason": n.failure_reason,
            "label": node_label(n, value),
            "agent_errors": agent_errors(n),
            "x": pos.x,
            "depth": pos.depth,
            "value": value,
            "color": score_color(value, lo, hi),
            "scores": {k: s.to_json() for k, s in sorted(n.scores.items())},
            "created_at": n.created_at,
            "evaluated_at": evaluated_at(n),
        }
        if details:
            item.update(_details(archive, n, by_id, cache))
        out.append(item)
    styles = {op: operator_style(op) for op in dict.fromkeys(n.operator for n in nodes)}
    return {
        "run_dir": str(archive.run_dir),
        "split": split,
        "range": [lo, hi],
        "stops": list(SCORE_STOPS),
        "operators": {
            op: {"shape": s.shape, "color": s.color, "label": s.label} for op, s in styles.items()
        },
        "counts": {s.value: sum(n.status is s for n in nodes) for s in Status},
        "nodes": out,
        "progress": best_over_time(nodes),
    }


def _details(
    archive: Archive,
    node: Node,
    by_id: dict[str, Node],
    cache: MutableMapping[tuple[str | None, str], str],
) -> dict[str, Any]:
    """What the click panel shows beyond the picture: cost, diff, ES record, loop notes."""
    parent = by_id.get(node.parent_ids[0]) if node.parent_ids else None
    old = parent.scaffold if parent is not None else None
    if old == node.scaffold:
        diff = ""
    else:
        key = (old, node.scaffold)
        if key not in cache:
            text = archive.scaffolds.diff(old, node.scaffold)
            if len(text) > MAX_DIFF_CHARS:
                cut = len(text) - MAX_DIFF_CHARS
                text = text[:MAX_DIFF_CHARS] + f"\n... ({cut} more characters not shown)\n"
            cache[key] = text
        diff = cache[key]
    meta = node.metadata
    flags = meta.get("flags")
    return {
        "cost": {
            "generated_tokens": node.cost.generated_tokens,
            "sandbox_s": node.cost.sandbox_s,
            "wall_s": node.cost.wall_s,
        },
        "scaffold": node.scaffold,
        "diff_base": old,
        "diff": diff,
        "es_record": _finite(node.es_record),
        "base_model": node.base_model,
        "diagnosis": _text(meta.get("diagnosis")),
        "problem_statement": _text(meta.get("problem_statement")),
        "improve_note": _text(meta.get("improve_note")),
        "flags": [str(f) for f in flags] if isinstance(flags, list) else _text(flags),
        "iteration": _finite(meta.get("iteration")),
        "metadata": _finite({k: v for k, v in meta.items() if k not in _DETAIL_KEYS}),
    }


def _finite(value: Any) -> Any:
    """NaN and infinities as strings: stored JSON may hold them, JSON.parse rejects them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _text(value: Any) -> str | None:
    """Loop notes are meant to be strings; anything else is shown as JSON rather than dropped."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return int(hex_color[1:3], 16), int(hex_color[3:5], 16), int(hex_color[5:7], 16)
