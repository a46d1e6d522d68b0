"""Errors raised by the archive, each naming the file or node it is about."""

from __future__ import annotations

from pathlib import Path


class ArchiveError(Exception):
    """Base class: every archive failure can be caught with one except clause."""


class SchemaError(ArchiveError):
    """The database file is not a Lineage archive this code can read."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class NewerSchemaError(SchemaError):
    """Written by a newer Lineage; refusing beats silently misreading it."""


class ForeignDatabaseError(SchemaError):
    """A valid file, but not a Lineage archive (another SQLite DB or not SQLite at all)."""


class ArchiveLockedError(ArchiveError):
    """Another process holds the run directory: two writers would race on git refs."""


class NodeNotFoundError(ArchiveError, KeyError):
    """A node id that the archive does not hold."""

    def __init__(self, node_id: str) -> None:
        super().__init__(f"no node {node_id!r} in the archive")
        self.node_id = node_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class DuplicateNodeError(ArchiveError):
    """A node id that is already taken: ids are never reused, so lineage stays unambiguous."""


class InvalidNodeError(ArchiveError, ValueError):
    """A node that breaks a rule of the data model (bad id, missing parent, bad status)."""


class NoEligibleNodeError(ArchiveError):
    """Selection found no node passing the validity gate."""


class UnsafeScaffoldError(ArchiveError, ValueError):
    """Scaffold files the archive will not store or check out: a path, mode or size outside the
    scaffold policy (`archive.paths`). The same files always fail the same way: never retry."""
