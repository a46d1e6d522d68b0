"""A networkx view of the lineage (edges parent -> child) and its JSON / GraphML exports.

GraphML holds only scalars, so nested fields are flattened (score_train, n_train, ...) and
None values are dropped; the node-link JSON keeps the same flat attributes for symmetry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx

    from archive.store import Archive


def lineage_graph(archive: Archive) -> nx.DiGraph:
    """One node per agent variant, one edge per parent link (attribute `position`: 0 = primary)."""
    import networkx as nx  # 0.2 s to import: paid only by callers that want a graph

    graph = nx.DiGraph()
    for node in archive.nodes():
        attrs: dict[str, Any] = {
            "operator": node.operator,
            "status": str(node.status),
            "scaffold": node.scaffold,
            "created_at": node.created_at,
            "children": node.children,
            "generated_tokens": node.cost.generated_tokens,
            "sandbox_s": node.cost.sandbox_s,
            "wall_s": node.cost.wall_s,
        }
        for key in ("failure_reason", "base_model", "base_hash", "checkpoint"):
            value = getattr(node, key)
            if value is not None:
                attrs[key] = value
        for split, score in node.scores.items():
            attrs[f"score_{split}"] = score.score
            attrs[f"n_{split}"] = score.n
        if node.es_record is not None:
            attrs["es_record"] = json.dumps(node.es_record, sort_keys=True)
        if node.metadata:
            attrs["metadata"] = json.dumps(node.metadata, sort_keys=True)
        graph.add_node(node.id, **attrs)
        for position, parent in enumerate(node.parent_ids):
            graph.add_edge(parent, node.id, position=position)
    return graph


def export_node_link(archive: Archive, path: str | Path) -> Path:
    """Write the lineage as node-link JSON, edges under "edges" (see `read_node_link`)."""
    import networkx as nx

    path = Path(path)
    graph = lineage_graph(archive)
    try:
        data = nx.node_link_data(graph, edges="edges")
    except TypeError:  # networkx < 3.4 names the keyword `link`
        data = nx.node_link_data(graph, link="edges")
    path.write_text(json.dumps(data, indent=1))
    return path


def read_node_link(path: str | Path) -> nx.DiGraph:
    """Read a file written by `export_node_link` back into a DiGraph."""
    import networkx as nx

    data = json.loads(Path(path).read_text())
    try:
        return nx.node_link_graph(data, edges="edges")
    except TypeError:  # networkx < 3.4
        return nx.node_link_graph(data, link="edges")


def export_graphml(archive: Archive, path: str | Path) -> Path:
    """Write the lineage as GraphML (Gephi, yEd, nx.read_graphml)."""
    import networkx as nx

    path = Path(path)
    nx.write_graphml(lineage_graph(archive), path)
    return path
