"""The archive's SQL: nodes into rows in one transaction, rows back into nodes.

The Archive keeps the lock, the git side and the in-memory index; this module only speaks to
SQLite, so each statement is written once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from archive.errors import ArchiveError
from archive.index import Entry
from archive.node import Cost, NewNode, Node, Score, Status, WeightsChain
from archive.schema import transaction

NODE_SELECT = (
    "SELECT seq, id, operator, scaffold, status, failure_reason, base_model, base_hash, "
    "es_record, generated_tokens, sandbox_s, wall_s, created_at, metadata, children, checkpoint "
    "FROM nodes JOIN payloads ON payloads.node = nodes.seq"
)


def next_seq(db: sqlite3.Connection) -> int:
    return db.execute("SELECT coalesce(max(seq), 0) + 1 FROM nodes").fetchone()[0]


def insert_nodes(
    db: sqlite3.Connection,
    specs: Sequence[NewNode],
    parents_of: Mapping[str, tuple[int, ...]],
    *,
    checkpoints: set[str],
    first_seq: int | None = None,
    db_path: Path,
) -> list[Entry]:
    """The one transaction behind every add: rows, edges, scores, children counts.

    `first_seq` is the seq the caller numbered a batch from (parents inside the batch are
    referred to by seq); it must still be next, which the single-writer lock guarantees.
    Returns the index entries of what was committed.
    """
    now = time.time()
    node_rows, payload_rows, edge_rows, score_rows = [], [], [], []
    bumps: dict[int, int] = {}
    entries = []
    with transaction(db):
        seq = next_seq(db)
        if first_seq is not None and seq != first_seq:
            raise ArchiveError(f"{db_path}: written by another process during a batch")
        for spec in specs:
            cost = spec.cost or Cost()
            node_rows.append(
                (
                    seq,
                    spec.id,
                    str(spec.operator),
                    spec.scaffold,
                    str(spec.status),
                    spec.failure_reason,
                    spec.base_model,
                    spec.base_hash,
                    cost.generated_tokens,
                    cost.sandbox_s,
                    cost.wall_s,
                    spec.created_at if spec.created_at is not None else now,
                    spec.id if spec.id in checkpoints else None,
                )
            )
            payload_rows.append(
                (
                    seq,
                    dumps(spec.es_record) if spec.es_record is not None else None,
                    dumps(spec.metadata or {}),
                )
            )
            parent_seqs = parents_of[spec.id]
            edge_rows += [(seq, pos, p) for pos, p in enumerate(parent_seqs)]
            for p in dict.fromkeys(parent_seqs):
                bumps[p] = bumps.get(p, 0) + 1
            scores = spec.scores or {}
            score_rows += [(seq, split, s.score, s.n) for split, s in scores.items()]
            entries.append(
                Entry(
                    seq,
                    spec.id,
                    parent_seqs,
                    Status(spec.status),
                    spec.scaffold or "",
                    {k: (s.score, s.n) for k, s in scores.items()},
                )
            )
            seq += 1
        db.executemany(
            "INSERT INTO nodes (seq, id, operator, scaffold, status, failure_reason, "
            "base_model, base_hash, generated_tokens, sandbox_s, wall_s, created_at, checkpoint) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            node_rows,
        )
        db.executemany(
            "INSERT INTO payloads (node, es_record, metadata) VALUES (?,?,?)", payload_rows
        )
        db.executemany("INSERT INTO edges (child, position, parent) VALUES (?,?,?)", edge_rows)
        db.executemany("INSERT INTO scores (node, split, score, n) VALUES (?,?,?,?)", score_rows)
        db.executemany(
            "UPDATE nodes SET children = children + ? WHERE seq = ?",
            [(k, p) for p, k in bumps.items()],
        )
    return entries


def node_from_row(row: tuple[Any, ...], e: Entry, entries: Mapping[int, Entry]) -> Node:
    """A row of NODE_SELECT plus its index entry (parents, scores) as a Node."""
    return Node(
        id=row[1],
        parent_ids=tuple(entries[p].id for p in e.parents),
        operator=row[2],
        scaffold=row[3],
        status=Status(row[4]),
        failure_reason=row[5],
        base_model=row[6],
        base_hash=row[7],
        es_record=json.loads(row[8]) if row[8] is not None else None,
        cost=Cost(row[9], row[10], row[11]),
        created_at=row[12],
        metadata=json.loads(row[13]),
        children=row[14],
        checkpoint=row[15],
        scores={k: Score(s, n) for k, (s, n) in e.scores.items()},
    )


def set_status(db: sqlite3.Connection, seq: int, status: Status, reason: str | None) -> None:
    with transaction(db):
        db.execute(
            "UPDATE nodes SET status = ?, failure_reason = ? WHERE seq = ?",
            (str(status), reason, seq),
        )


def store_scores(
    db: sqlite3.Connection,
    seq: int,
    scores: Mapping[str, tuple[float, int]],
    status: Status | None,
    cost: Cost | None,
) -> None:
    """Scores (replacing each split's), the status and the added cost, in one transaction."""
    with transaction(db):
        db.executemany(
            "INSERT OR REPLACE INTO scores (node, split, score, n) VALUES (?,?,?,?)",
            [(seq, split, score, n) for split, (score, n) in scores.items()],
        )
        if status is not None:
            db.execute(
                "UPDATE nodes SET status = ?, failure_reason = NULL WHERE seq = ?",
                (str(status), seq),
            )
        if cost is not None:
            _add_cost(db, seq, cost)


def add_cost(db: sqlite3.Connection, seq: int, cost: Cost) -> None:
    with transaction(db):
        _add_cost(db, seq, cost)


def merge_metadata(db: sqlite3.Connection, seq: int, patch: Mapping[str, Any]) -> None:
    with transaction(db):
        (text,) = db.execute("SELECT metadata FROM payloads WHERE node = ?", (seq,)).fetchone()
        db.execute(
            "UPDATE payloads SET metadata = ? WHERE node = ?",
            (dumps({**json.loads(text), **patch}), seq),
        )


def checkpoint_name(db: sqlite3.Connection, seq: int) -> str | None:
    (name,) = db.execute("SELECT checkpoint FROM nodes WHERE seq = ?", (seq,)).fetchone()
    return name


def weights_chain(
    db: sqlite3.Connection, seq: int, node_id: str, blob_path: Callable[[str], Path]
) -> WeightsChain:
    """Base model + ordered ES records along first parents: what replays the weights."""
    rows = db.execute(
        """
        WITH RECURSIVE chain(seq, depth) AS (
            SELECT ?, 0
            UNION ALL
            SELECT edges.parent, chain.depth + 1 FROM edges
            JOIN chain ON edges.child = chain.seq AND edges.position = 0
        )
        SELECT nodes.id, base_model, base_hash, es_record, checkpoint
        FROM chain JOIN nodes ON nodes.seq = chain.seq
        JOIN payloads ON payloads.node = chain.seq ORDER BY chain.depth DESC
        """,
        (seq,),
    ).fetchall()
    root_id, base_model, base_hash, _, _ = rows[0]
    if not base_model or not base_hash:
        raise ArchiveError(f"root {root_id!r} of {node_id!r} has no base model")
    records: list[dict[str, Any]] = []
    checkpoint, held = None, 0
    for _, _, _, record, blob in rows:
        if record is not None:
            records.append(json.loads(record))
        if blob is not None and records:
            checkpoint, held = blob_path(blob), len(records)
    return WeightsChain(base_model, base_hash, records, checkpoint, held)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _add_cost(db: sqlite3.Connection, seq: int, cost: Cost) -> None:
    db.execute(
        "UPDATE nodes SET generated_tokens = generated_tokens + ?, sandbox_s = sandbox_s + ?, "
        "wall_s = wall_s + ? WHERE seq = ?",
        (cost.generated_tokens, cost.sandbox_s, cost.wall_s, seq),
    )
