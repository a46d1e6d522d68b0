"""Every promise the archive makes, checked against what is on disk."""

from __future__ import annotations

import sqlite3

from archive.scaffolds import ScaffoldRepo


def check_invariants(db: sqlite3.Connection, indexed: int, scaffolds: ScaffoldRepo) -> list[str]:
    """The problems found ([] means consistent); `indexed` is the in-memory index's size."""
    problems = []
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    count, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM nodes").fetchone()
    if count != distinct:
        problems.append(f"{count} rows but {distinct} distinct ids")
    if count != indexed:
        problems.append(f"{count} rows but {indexed} indexed nodes")
    for query, problem in _ZERO_COUNTS:
        found = db.execute(query).fetchone()[0]
        if found:
            problems.append(problem.format(found))
    payloads = db.execute("SELECT count(*) FROM payloads").fetchone()[0]
    if payloads != count:
        problems.append(f"{count} nodes but {payloads} payload rows")
    rows = dict(db.execute("SELECT id, scaffold FROM nodes"))
    missing = scaffolds.missing_commits(rows.values())
    if missing:
        problems.append(f"{len(missing)} scaffold commits missing: {sorted(missing)[:3]}")
    refs = scaffolds.node_refs()
    if set(refs) - set(rows):
        problems.append(f"refs without a node: {sorted(set(refs) - set(rows))[:5]}")
    if set(rows) - set(refs):
        problems.append(f"nodes without a ref: {sorted(set(rows) - set(refs))[:5]}")
    wrong = [i for i, sha in rows.items() if i in refs and refs[i] != sha]
    if wrong:
        problems.append(f"refs pointing at the wrong commit: {wrong[:5]}")
    return problems


# Queries that count broken rows: each must find none.
_ZERO_COUNTS = (
    (
        "SELECT count(*) FROM edges LEFT JOIN nodes p ON p.seq = edges.parent "
        "LEFT JOIN nodes c ON c.seq = edges.child WHERE p.seq IS NULL OR c.seq IS NULL",
        "{} edges point at missing nodes",
    ),
    (
        "SELECT count(*) FROM nodes n WHERE n.children != "
        "(SELECT count(DISTINCT child) FROM edges WHERE edges.parent = n.seq)",
        "{} nodes have a wrong children count",
    ),
    (
        "SELECT count(*) FROM scores LEFT JOIN nodes ON nodes.seq = scores.node "
        "WHERE nodes.seq IS NULL",
        "{} scores belong to no node",
    ),
)
