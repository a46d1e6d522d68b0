"""Reopen checks: make the run directory consistent after a kill -9 at any instant.

Write order of an add is commit object -> checkpoint blob -> one SQLite transaction -> ref, so:
a ref or blob without a row is a crashed add (removed), a row without its ref is an add that
died just after committing (ref re-created), and a row naming a missing commit cannot happen
(asserted here; such nodes are marked failed rather than silently dropped).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from archive.blobs import BlobStore
from archive.errors import ArchiveError
from archive.index import LineageIndex
from archive.node import Status
from archive.scaffolds import ScaffoldRepo
from archive.schema import transaction


@dataclass
class RecoveryReport:
    """What reopening repaired; empty lists mean the previous session left everything tidy."""

    unclean: bool = False
    git_locks_removed: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    refs_deleted: list[str] = field(default_factory=list)
    refs_restored: list[str] = field(default_factory=list)
    missing_scaffold: list[str] = field(default_factory=list)
    blobs_removed: list[str] = field(default_factory=list)
    checkpoints_lost: list[str] = field(default_factory=list)

    @property
    def repaired(self) -> bool:
        return any(
            (
                self.requeued,
                self.git_locks_removed,
                self.refs_deleted,
                self.refs_restored,
                self.missing_scaffold,
                self.blobs_removed,
                self.checkpoints_lost,
            )
        )


def recover(
    db: sqlite3.Connection,
    db_path: Path,
    scaffolds: ScaffoldRepo,
    blobs: BlobStore,
    index: LineageIndex,
    node_refs: Callable[[], dict[str, str]],
    *,
    unclean: bool,
    verify: bool = False,
) -> RecoveryReport:
    """Reconcile database, git refs and blobs (and the freshly loaded index with them).

    Every database change is one transaction; the index is updated only after it commits.
    """
    report = RecoveryReport(unclean=unclean)
    # A kill -9 cannot corrupt a WAL database (SQLite's own guarantee), so the O(size) scan
    # is opt-in: for a suspected disk fault, not for a crashed process.
    if verify:
        result = db.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise ArchiveError(f"{db_path}: SQLite quick_check failed: {result}")

    rows = {e.id: e.scaffold for e in index.entries.values()}
    missing = scaffolds.missing_commits(rows.values())
    report.missing_scaffold = sorted(i for i, sha in rows.items() if sha in missing)

    with transaction(db):
        if report.missing_scaffold:
            db.executemany(
                "UPDATE nodes SET status = 'failed', failure_reason = ? WHERE id = ?",
                [
                    (f"recovery: scaffold commit {rows[i]} missing from scaffolds.git", i)
                    for i in report.missing_scaffold
                ],
            )
        report.requeued = [
            r[0]
            for r in db.execute(
                "UPDATE nodes SET status = 'pending' WHERE status = 'evaluating' RETURNING id"
            )
        ]
        checkpoints = dict(
            db.execute("SELECT id, checkpoint FROM nodes WHERE checkpoint IS NOT NULL")
        )
        present = set(blobs.names())
        report.checkpoints_lost = sorted(
            i for i, name in checkpoints.items() if name not in present
        )
        db.executemany(
            "UPDATE nodes SET checkpoint = NULL WHERE id = ?",
            [(i,) for i in report.checkpoints_lost],
        )
    report.requeued.sort()
    for node_id in report.requeued:
        index.entries[index.by_id[node_id]].status = Status.PENDING
    for node_id in report.missing_scaffold:
        index.entries[index.by_id[node_id]].status = Status.FAILED

    report.git_locks_removed = scaffolds.locks_removed
    refs = node_refs()
    report.refs_deleted = sorted(set(refs) - set(rows))
    scaffolds.delete_refs(report.refs_deleted)
    restore = {i: sha for i, sha in rows.items() if sha not in missing and refs.get(i) != sha}
    scaffolds.set_refs(restore)
    report.refs_restored = sorted(restore)

    keep = set(checkpoints.values())
    for name in sorted(present - keep):
        blobs.remove(name)  # temp files of a crashed write, or a blob whose row never committed
        report.blobs_removed.append(name)
    return report
