"""The lineage tree drawn with matplotlib from a `lineage_view` (the static twin of the page).

Uses a bare `Figure` rather than pyplot: no global backend state, so it is safe in a thread
and never opens a window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archive.drawing.view import FAILED_COLOR, OPERATOR_STYLES, OTHER_STYLE, SCORE_STOPS

MARKERS = {"square": "s", "circle": "o", "triangle": "^", "diamond": "D", "hexagon": "h"}
MAX_INCHES = 40.0  # 4400 px at 110 dpi: past that the picture is for zooming, not reading


def draw_png(view: dict[str, Any], path: Path, *, title: str, dpi: int = 110) -> Path:
    """Draw the view's tree: top-down generations, colour bar for the score, operator legend."""
    figure(view, title=title, dpi=dpi).savefig(path, dpi=dpi)
    return path


def figure(view: dict[str, Any], *, title: str, dpi: int = 110) -> Any:
    """The picture as a matplotlib Figure (what `draw_png` saves; tests measure its labels)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # a dev extra; the HTML view needs nothing
        raise RuntimeError(
            "render_png needs matplotlib: pip install matplotlib (or the project's dev extra)"
        ) from exc

    nodes = view["nodes"]
    width = max((n["x"] for n in nodes), default=0) + 1
    depth = max((n["depth"] for n in nodes), default=0) + 1
    fig = Figure(
        figsize=(
            min(MAX_INCHES, max(7.0, 0.7 * width + 3)),  # room for a label per column
            min(MAX_INCHES, max(4.0, 0.9 * depth + 2)),
        ),
        dpi=dpi,
    )
    ax = fig.subplots()
    size = 110 if len(nodes) <= 60 else 55 if len(nodes) <= 300 else 20
    _edges(ax, view)
    _nodes(ax, view, size, labels=len(nodes) <= 120)
    ax.set_xlim(-0.8, width - 0.2)
    ax.set_ylim(-depth + 0.4, 0.6)
    step = max(1, depth // 25)
    ax.set_yticks([-d for d in range(0, depth, step)], [str(d) for d in range(0, depth, step)])
    ax.set_ylabel("generation")
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, fontsize=10)
    _colorbar(fig, ax, view)
    _legend(ax, view)
    fig.tight_layout()
    return fig


def _edges(ax: Any, view: dict[str, Any]) -> None:
    """One line per parent link, coloured by the child's operator; secondary parents dashed.
    Unlabelled: the colour and the child's marker name the operator (see the legend), and
    sibling edges meet at their parent, where labels would overlap."""
    from matplotlib.collections import LineCollection

    by_id = {n["id"]: n for n in view["nodes"]}
    groups: dict[tuple[str, bool], list[list[tuple[float, float]]]] = {}
    for n in view["nodes"]:
        for i, pid in enumerate(n["parents"]):
            p = by_id.get(pid)
            if p is not None:
                seg = [(p["x"], -p["depth"]), (n["x"], -n["depth"])]
                groups.setdefault((n["operator"], i > 0), []).append(seg)
    for (operator, merge), segs in groups.items():
        color = view["operators"][operator]["color"]
        style = "--" if merge else "-"
        ax.add_collection(
            LineCollection(segs, colors=color, linewidths=1.2, linestyles=style, zorder=1)
        )


def _nodes(ax: Any, view: dict[str, Any], size: float, *, labels: bool) -> None:
    """Markers by operator, filled by score; failed nodes get a red edge and a red cross."""
    nodes = view["nodes"]
    for operator, style in view["operators"].items():
        group = [n for n in nodes if n["operator"] == operator]
        failed = [n["status"] == "failed" for n in group]
        ax.scatter(
            [n["x"] for n in group],
            [-n["depth"] for n in group],
            c=[n["color"] for n in group],
            marker=MARKERS[style["shape"]],
            s=size,
            edgecolors=[FAILED_COLOR if f else "#333333" for f in failed],
            linewidths=[2.0 if f else 0.6 for f in failed],
            zorder=3,
        )
    dead = [n for n in nodes if n["status"] == "failed"]
    if dead:
        ax.scatter(
            [n["x"] for n in dead],
            [-n["depth"] for n in dead],
            marker="x",
            c=FAILED_COLOR,
            s=size * 0.5,
            linewidths=1.5,
            zorder=4,
        )
    if labels:
        from matplotlib.patheffects import withStroke

        for n in nodes:
            ax.annotate(
                "\n".join(n["label"]),
                (n["x"], -n["depth"]),
                xytext=(0, -7),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=5.5,
                color=FAILED_COLOR if n["status"] == "failed" else "#222222",
                path_effects=[withStroke(linewidth=2.5, foreground="white")],  # edges pass under
                zorder=5,
            )


def _colorbar(fig: Any, ax: Any, view: dict[str, Any]) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    lo, hi = view["range"]
    cmap = LinearSegmentedColormap.from_list("lineage", SCORE_STOPS)
    mappable = ScalarMappable(norm=Normalize(lo, hi if hi > lo else lo + 1), cmap=cmap)
    inches = fig.get_figwidth()
    bar = fig.colorbar(mappable, ax=ax, fraction=min(0.03, 0.3 / inches), pad=0.01)
    bar.set_label(f"{view['split']} score" if view["split"] else "no scores yet")


def _legend(ax: Any, view: dict[str, Any]) -> None:
    """One entry per marker shape in use (operators sharing 'other' share one), plus failed."""
    from matplotlib.lines import Line2D

    styles = {s.shape: s for s in (*OPERATOR_STYLES.values(), OTHER_STYLE)}
    ops_by_shape: dict[str, list[str]] = {}
    for op, st in view["operators"].items():
        ops_by_shape.setdefault(st["shape"], []).append(op)
    handles = [
        Line2D(
            [],
            [],
            marker=MARKERS[shape],
            color=styles[shape].color,
            markerfacecolor="#cccccc",
            markeredgecolor="#333333",
            label=", ".join(ops),
        )
        for shape, ops in ops_by_shape.items()
    ]
    if view["counts"].get("failed"):
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                linestyle="none",
                markerfacecolor="#cccccc",
                markeredgecolor=FAILED_COLOR,
                markeredgewidth=2,
                label="failed",
            )
        )
    ax.legend(handles=handles, loc="upper left", fontsize=7, frameon=False, title="operator")
