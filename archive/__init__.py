"""The lineage archive: nodes (weights + scaffold), storage, crash recovery, selection, graph."""

from archive.errors import (
    ArchiveError,
    ArchiveLockedError,
    DuplicateNodeError,
    ForeignDatabaseError,
    InvalidNodeError,
    NewerSchemaError,
    NodeNotFoundError,
    NoEligibleNodeError,
    SchemaError,
    UnsafeScaffoldError,
)
from archive.graph import export_graphml, export_node_link, lineage_graph, read_node_link
from archive.node import (
    DEFAULT_OPERATOR,
    ROOT_OPERATOR,
    Cost,
    NewNode,
    Node,
    Score,
    Status,
    WeightsChain,
)
from archive.recovery import RecoveryReport
from archive.selection import STRATEGIES, Candidates, Gate, Strategy, register_strategy
from archive.store import Archive

__all__ = [
    "DEFAULT_OPERATOR",
    "ROOT_OPERATOR",
    "STRATEGIES",
    "Archive",
    "ArchiveError",
    "ArchiveLockedError",
    "Cost",
    "DuplicateNodeError",
    "ForeignDatabaseError",
    "Gate",
    "InvalidNodeError",
    "NewNode",
    "NewerSchemaError",
    "Node",
    "NoEligibleNodeError",
    "NodeNotFoundError",
    "Candidates",
    "RecoveryReport",
    "SchemaError",
    "Score",
    "Status",
    "Strategy",
    "UnsafeScaffoldError",
    "WeightsChain",
    "export_graphml",
    "export_node_link",
    "lineage_graph",
    "read_node_link",
    "register_strategy",
]
