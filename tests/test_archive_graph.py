"""Lineage graph view and its exports, read back with networkx."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx

from archive import (
    Archive,
    Cost,
    Score,
    Status,
    export_graphml,
    export_node_link,
    lineage_graph,
    read_node_link,
)


def small_lineage(run_dir: Path) -> Archive:
    archive = Archive(run_dir)
    archive.add_root("base", "sha256:b", node_id="r", files={"a.py": "0"})
    archive.record_scores(
        "r", {"train": Score(0.3, 50), "dev": Score(0.25, 20)}, cost=Cost(10, 1.0, 2.0)
    )
    archive.add_child("r", es_record={"seeds": [1, 2], "sigma": 0.01}, node_id="e1")
    archive.add_child(
        "r", "scaffold_edit", files={"a.py": "1"}, node_id="s1", metadata={"diagnosis": "x"}
    )
    archive.add_child(["e1", "s1"], "crossover", node_id="x")
    archive.set_status("s1", Status.FAILED, "tests broke")
    return archive


def test_graph_view(tmp_path: Path) -> None:
    with small_lineage(tmp_path / "run") as archive:
        graph = lineage_graph(archive)
    assert set(graph.nodes) == {"r", "e1", "s1", "x"}
    assert set(graph.edges) == {("r", "e1"), ("r", "s1"), ("e1", "x"), ("s1", "x")}
    assert graph.edges["e1", "x"]["position"] == 0 and graph.edges["s1", "x"]["position"] == 1
    assert nx.is_directed_acyclic_graph(graph)
    assert graph.nodes["r"]["score_train"] == 0.3 and graph.nodes["r"]["n_dev"] == 20
    assert graph.nodes["s1"]["failure_reason"] == "tests broke"
    assert json.loads(graph.nodes["e1"]["es_record"]) == {"seeds": [1, 2], "sigma": 0.01}
    assert graph.nodes["r"]["generated_tokens"] == 10


def test_node_link_round_trip(tmp_path: Path) -> None:
    with small_lineage(tmp_path / "run") as archive:
        graph = lineage_graph(archive)
        path = export_node_link(archive, tmp_path / "lineage.json")
    data = json.loads(path.read_text())
    assert {"nodes", "edges", "directed"} <= set(data)
    back = read_node_link(path)
    assert back.is_directed()
    assert dict(back.nodes(data=True)) == dict(graph.nodes(data=True))
    assert sorted(back.edges(data=True)) == sorted(graph.edges(data=True))


def test_graphml_round_trip(tmp_path: Path) -> None:
    with small_lineage(tmp_path / "run") as archive:
        graph = lineage_graph(archive)
        path = export_graphml(archive, tmp_path / "lineage.graphml")
    back = nx.read_graphml(path)
    assert back.is_directed()
    assert set(back.edges) == set(graph.edges)
    for node_id, attrs in graph.nodes(data=True):
        assert back.nodes[node_id] == attrs
