"""The SQLite schema, its version stamp, and the checks that refuse a file we cannot read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from archive.errors import ForeignDatabaseError, NewerSchemaError, SchemaError

APPLICATION_ID = 0x4C4E4147  # "LNAG": lets `file`, sqlite and we tell our databases apart
APPLICATION_NAME = "lineage-archive"
SCHEMA_VERSION = 1
_SQLITE_MAGIC = b"SQLite format 3\x00"

DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE nodes (
    seq INTEGER PRIMARY KEY,                 -- insertion order, stable across reopen
    id TEXT NOT NULL UNIQUE,
    operator TEXT NOT NULL,
    scaffold TEXT NOT NULL,                  -- commit sha in scaffolds.git
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'evaluating', 'evaluated', 'failed')),
    failure_reason TEXT,
    base_model TEXT,                         -- roots only
    base_hash TEXT,
    generated_tokens INTEGER NOT NULL DEFAULT 0,
    sandbox_s REAL NOT NULL DEFAULT 0,
    wall_s REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    children INTEGER NOT NULL DEFAULT 0,     -- maintained in the same transaction as the edge
    checkpoint TEXT                          -- file name under blobs/
);
CREATE TABLE payloads (                      -- the bulky JSON, kept out of the hot nodes table
    node INTEGER PRIMARY KEY REFERENCES nodes(seq),
    es_record TEXT,                          -- this node's ES step (NULL: weights inherited)
    metadata TEXT NOT NULL DEFAULT '{}'      -- diagnosis, proposal, diff stats...
);
CREATE TABLE edges (
    child INTEGER NOT NULL REFERENCES nodes(seq),
    position INTEGER NOT NULL,               -- 0 = primary parent (weights are inherited from it)
    parent INTEGER NOT NULL REFERENCES nodes(seq),
    PRIMARY KEY (child, position)
) WITHOUT ROWID;
CREATE INDEX edges_by_parent ON edges(parent);
CREATE TABLE scores (
    node INTEGER NOT NULL REFERENCES nodes(seq),
    split TEXT NOT NULL,
    score REAL NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (node, split)
) WITHOUT ROWID;
CREATE INDEX scores_by_split ON scores(split, score);
CREATE INDEX nodes_by_status ON nodes(status) WHERE status != 'evaluated';
"""


def check_file(path: Path) -> None:
    """Refuse anything that is not an SQLite file before sqlite3 touches (or converts) it."""
    with open(path, "rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        raise ForeignDatabaseError(path, "not an SQLite database (bad file header)")


def check_schema(db: sqlite3.Connection, path: Path) -> None:
    """Accept only our application id at a version we know."""
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise ForeignDatabaseError(path, f"unreadable SQLite database ({exc})") from exc
    if app_id != APPLICATION_ID:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        raise ForeignDatabaseError(
            path,
            f"not a Lineage archive (application_id {app_id:#x}, expected {APPLICATION_ID:#x}; "
            f"tables: {', '.join(tables) or 'none'})",
        )
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(
            path,
            f"archive schema version {version} is newer than this Lineage supports "
            f"({SCHEMA_VERSION}); upgrade Lineage to open it",
        )
    if version < SCHEMA_VERSION:
        raise SchemaError(
            path, f"archive schema version {version} has no migration to {SCHEMA_VERSION}"
        )
    row = db.execute("SELECT value FROM meta WHERE key = 'application'").fetchone()
    if row is None or row[0] != APPLICATION_NAME:
        raise ForeignDatabaseError(path, "meta table lacks application = lineage-archive")


def is_empty(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def create(db: sqlite3.Connection, created_at: float) -> None:
    """Create the schema in one transaction (so a crash leaves an empty file, not half a schema)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for stmt in DDL.split(";"):
            if stmt.strip():
                db.execute(stmt)
        db.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?)",
            [
                ("application", APPLICATION_NAME),
                ("schema_version", str(SCHEMA_VERSION)),
                ("created_at", repr(created_at)),
                ("open", "0"),
            ],
        )
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class transaction:  # noqa: N801 - used like a keyword: `with transaction(db):`
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception: every change is one of these."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.db.execute("ROLLBACK")
            return
        try:
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # e.g. disk full: nothing of it may stay half-applied
                self.db.execute("ROLLBACK")
            raise
