"""The Archive: one run directory holding every node of a lineage, crash-safe and fast to reopen.

    run_dir/archive.sqlite   nodes, edges, scores (WAL, synchronous=FULL)
    run_dir/scaffolds.git    one commit per scaffold, one ref per node (refs/nodes/<id>)
    run_dir/blobs/           optional weight checkpoints, one file per node

synchronous=FULL: in WAL mode NORMAL already survives kill -9, FULL also keeps the last
committed node or score through a power cut. It costs one fsync per transaction, nothing next
to an evaluation that takes minutes; bulk inserts are one transaction, so one fsync.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from archive import rows
from archive.blobs import BlobStore
from archive.errors import (
    ArchiveError,
    DuplicateNodeError,
    InvalidNodeError,
    NodeNotFoundError,
    NoEligibleNodeError,
    UnsafeScaffoldError,
)
from archive.index import Entry, load_index, paused_gc
from archive.invariants import check_invariants
from archive.locking import lock_run_dir
from archive.node import (
    DEFAULT_OPERATOR,
    ROOT_OPERATOR,
    Cost,
    NewNode,
    Node,
    Score,
    Status,
    WeightsChain,
    check_node_id,
    check_status,
)
from archive.recovery import RecoveryReport, recover
from archive.scaffolds import ScaffoldRepo
from archive.schema import check_file, check_schema, create, is_empty, transaction
from archive.selection import Candidates, Gate, Strategy, eligible, make_strategy

DB_NAME = "archive.sqlite"
GIT_NAME = "scaffolds.git"
BLOBS_NAME = "blobs"
LOCK_NAME = "archive.lock"


class Archive:
    """All nodes of one run. Single writer (a lock file enforces it); use as a context manager.

    Readers beside the writer (`lineage graph`, `lineage serve`) open with readonly=True.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        create: bool = True,
        synchronous: str = "FULL",
        verify: bool = False,
        lock_timeout: float = 0.0,
        readonly: bool = False,
    ) -> None:
        """Open (or create) the run directory and repair what a crash left; see `recovery`.

        verify=True also runs SQLite's quick_check (O(database size), ~0.5 s per 100k nodes).
        lock_timeout: seconds to wait for another writer to let go (a killed writer's child
        processes can hold the lock for a moment after its death).
        readonly=True: take no lock, run no recovery, write nothing (a running writer is not
        disturbed); every read sees the archive as it was at open, so reopen to refresh.
        """
        # Absolute: git runs with other working directories, and a library caller (a notebook)
        # may pass a relative path the CLI would have made absolute already.
        self.run_dir = Path(run_dir).absolute()
        self.readonly = readonly
        if not self.run_dir.is_dir():
            if not create or readonly:
                raise ArchiveError(f"{self.run_dir}: no such run directory")
            self.run_dir.mkdir(parents=True)
        if readonly:
            self._open_readonly()
            return
        self._lock = lock_run_dir(self.run_dir / LOCK_NAME, lock_timeout)
        try:
            self._open(create, synchronous, verify)
        except BaseException:
            db = getattr(self, "_db", None)
            if db is not None:
                db.close()
            self._lock.close()
            raise

    def _open(self, create_new: bool, synchronous: str, verify: bool) -> None:
        self.db_path = self.run_dir / DB_NAME
        existed = self.db_path.exists() and self.db_path.stat().st_size > 0
        if existed:
            check_file(self.db_path)
        elif not create_new:
            raise ArchiveError(f"{self.db_path}: no archive database in this run directory")
        db = sqlite3.connect(self.db_path, isolation_level=None)
        try:
            fresh = is_empty(db)
            if existed and not fresh:
                check_schema(db, self.db_path)
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
                raise ArchiveError(f"{self.db_path}: cannot switch to WAL mode")
            if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
                raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
            db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            db.execute("PRAGMA foreign_keys = ON")
            if fresh:
                create(db, time.time())
        except BaseException:
            db.close()
            raise
        self._db = db
        git_dir = self.run_dir / GIT_NAME
        if not (git_dir / "HEAD").exists() and db.execute("SELECT 1 FROM nodes LIMIT 1").fetchone():
            raise ArchiveError(
                f"{git_dir}: missing, but {self.db_path} holds nodes whose scaffolds live there; "
                "restore it rather than start an empty one (every node would lose its commit)"
            )
        self.scaffolds = ScaffoldRepo(git_dir)
        self.blobs = BlobStore(self.run_dir / BLOBS_NAME)
        unclean = db.execute("SELECT value FROM meta WHERE key = 'open'").fetchone()[0] == "1"
        refs = _Background(self.scaffolds.node_refs)  # git lists refs while we read the DB
        self._index = load_index(db)
        with paused_gc():  # recovery compares 100k-entry dicts of ids, shas and refs
            self.recovery: RecoveryReport = recover(
                db,
                self.db_path,
                self.scaffolds,
                self.blobs,
                self._index,
                refs.result,
                unclean=unclean,
                verify=verify,
            )
        with transaction(db):
            db.execute("UPDATE meta SET value = '1' WHERE key = 'open'")
        self._strategies: dict[tuple[str, tuple[tuple[str, Any], ...]], Strategy] = {}
        self._closed = False

    def _open_readonly(self) -> None:
        """One read transaction held until close: index and rows come from the same snapshot
        (WAL lets it run beside the writer, whose commits it simply does not see)."""
        self.db_path = self.run_dir / DB_NAME
        if not (self.db_path.exists() and self.db_path.stat().st_size > 0):
            raise ArchiveError(f"{self.db_path}: no archive database in this run directory")
        check_file(self.db_path)
        uri = self.db_path.resolve().as_uri() + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            check_schema(db, self.db_path)
            db.execute("PRAGMA query_only = ON")
            db.execute("BEGIN")
            self._index = load_index(db)
            self.scaffolds = ScaffoldRepo(self.run_dir / GIT_NAME, readonly=True)
        except BaseException:
            db.close()
            raise
        self._db = db
        self._lock = None
        self.blobs = BlobStore(self.run_dir / BLOBS_NAME, create=False)
        self.recovery = RecoveryReport()
        self._strategies = {}
        self._closed = False

    # ---- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Mark a clean shutdown (the next open skips the integrity check) and release the lock."""
        if self._closed:
            return
        self._closed = True
        if self._lock is None:  # readonly: nothing was written, nothing to mark
            self._db.close()
            return
        with transaction(self._db):
            self._db.execute("UPDATE meta SET value = '0' WHERE key = 'open'")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
        self._lock.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- adding nodes --------------------------------------------------------------------
    def add_root(
        self,
        base_model: str,
        base_hash: str,
        *,
        workspace: str | Path | None = None,
        files: Mapping[str, bytes | str | None] | None = None,
        message: str = "root scaffold",
        node_id: str | None = None,
        status: Status = Status.PENDING,
        failure_reason: str | None = None,
        scores: Mapping[str, Score | dict[str, Any]] | None = None,
        cost: Cost | None = None,
        metadata: Mapping[str, Any] | None = None,
        checkpoint: bytes | Path | None = None,
    ) -> Node:
        """Start a lineage: a base model (id + content hash) and the initial scaffold."""
        if not base_model or not base_hash:
            raise InvalidNodeError("a root needs base_model and base_hash")
        return self._add(
            (),
            ROOT_OPERATOR,
            base=(base_model, base_hash),
            es_record=None,
            workspace=workspace,
            files=files,
            message=message,
            node_id=node_id,
            status=status,
            failure_reason=failure_reason,
            scores=scores,
            cost=cost,
            metadata=metadata,
            checkpoint=checkpoint,
        )

    def add_child(
        self,
        parents: str | Sequence[str],
        operator: str = DEFAULT_OPERATOR,
        *,
        es_record: Mapping[str, Any] | None = None,
        workspace: str | Path | None = None,
        files: Mapping[str, bytes | str | None] | None = None,
        message: str | None = None,
        node_id: str | None = None,
        status: Status = Status.PENDING,
        failure_reason: str | None = None,
        scores: Mapping[str, Score | dict[str, Any]] | None = None,
        cost: Cost | None = None,
        metadata: Mapping[str, Any] | None = None,
        checkpoint: bytes | Path | None = None,
    ) -> Node:
        """Add a child atomically. A scaffold edit gives `workspace` (a dir) or `files`
        (path -> content, None deletes; applied to the first parent's tree); without either the
        child shares its first parent's commit. `es_record` is this step's ES record (weights
        are inherited from the first parent when it is None)."""
        parent_ids = (parents,) if isinstance(parents, str) else tuple(parents)
        if not parent_ids:
            raise InvalidNodeError("a child needs at least one parent; use add_root for roots")
        return self._add(
            parent_ids,
            str(operator),
            base=None,
            es_record=es_record,
            workspace=workspace,
            files=files,
            message=message,
            node_id=node_id,
            status=status,
            failure_reason=failure_reason,
            scores=scores,
            cost=cost,
            metadata=metadata,
            checkpoint=checkpoint,
        )

    def _add(
        self,
        parent_ids: tuple[str, ...],
        operator: str,
        *,
        base: tuple[str, str] | None,
        es_record: Mapping[str, Any] | None,
        workspace: str | Path | None,
        files: Mapping[str, bytes | str | None] | None,
        message: str | None,
        node_id: str | None,
        status: Status,
        failure_reason: str | None,
        scores: Mapping[str, Score | dict[str, Any]] | None,
        cost: Cost | None,
        metadata: Mapping[str, Any] | None,
        checkpoint: bytes | Path | None,
    ) -> Node:
        self._check_writable()
        node_id = check_node_id(node_id) if node_id is not None else _new_id()
        if node_id in self._index.by_id:
            raise DuplicateNodeError(f"node {node_id!r} already exists")
        if workspace is not None and files is not None:
            raise InvalidNodeError("give a workspace or a file mapping, not both")
        status = check_status(status, failure_reason)
        parent_seqs = tuple(self._seq(p) for p in parent_ids)
        parent_shas = [self._index.entries[s].scaffold for s in parent_seqs]
        created_at = time.time()
        text = message or f"{operator} {node_id}"
        # 1. the commit object (durable: core.fsync=objects) before anything names it
        if workspace is not None:
            sha = self.scaffolds.commit_workspace(Path(workspace), parent_shas, text, created_at)
        elif files is not None:
            sha = self.scaffolds.commit_files(files, parent_shas, text, created_at)
        elif not parent_shas:
            sha = self.scaffolds.empty_commit(text, created_at)
        else:
            sha = parent_shas[0]
        # 2. the checkpoint blob (atomic rename) before the row that names it
        if checkpoint is not None:
            self.blobs.put(node_id, checkpoint)
        spec = NewNode(
            id=node_id,
            parent_ids=parent_ids,
            operator=operator,
            es_record=dict(es_record) if es_record is not None else None,
            scaffold=sha,
            base_model=base[0] if base else None,
            base_hash=base[1] if base else None,
            status=status,
            failure_reason=failure_reason,
            scores={k: Score.coerce(v) for k, v in (scores or {}).items()},
            cost=cost,
            metadata=dict(metadata or {}),
            created_at=created_at,
        )
        # 3. the row, edges, scores and children counts: one transaction
        try:
            entries = rows.insert_nodes(
                self._db,
                [spec],
                {node_id: parent_seqs},
                checkpoints={node_id} if checkpoint is not None else set(),
                db_path=self.db_path,
            )
        except BaseException:
            if checkpoint is not None:
                self.blobs.remove(node_id)
            raise
        for e in entries:  # the index mirrors what is committed, whatever happens next
            self._index.add(e)
        # 4. the ref (derived data: recovery re-creates it if we die right here)
        self.scaffolds.set_ref(node_id, sha)
        return self.get(node_id)

    def add_many(self, nodes: Iterable[NewNode]) -> list[str]:
        """Bulk insert in one transaction (e.g. a population of ES children, or a benchmark).

        Makes no git commits: each scaffold is an existing commit or the primary parent's.
        Parents may be earlier nodes of the same batch.
        """
        self._check_writable()
        specs = list(nodes)
        batch: dict[str, int] = {}
        scaffold_of: dict[str, str] = {}
        parents_of: dict[str, tuple[int, ...]] = {}
        next_seq = batch_start = self._next_seq()
        for spec in specs:
            check_node_id(spec.id)
            if spec.id in self._index.by_id or spec.id in batch:
                raise DuplicateNodeError(f"node {spec.id!r} already exists")
            spec.status = check_status(spec.status, spec.failure_reason)
            seqs = []
            for p in spec.parent_ids:
                if p in batch:
                    seqs.append(batch[p])
                else:
                    seqs.append(self._seq(p))
            if not seqs and not (spec.base_model and spec.base_hash and spec.scaffold):
                raise InvalidNodeError(f"root {spec.id!r} needs base_model, base_hash, scaffold")
            if spec.scaffold is None:
                first = spec.parent_ids[0]
                spec.scaffold = scaffold_of.get(first) or self._index.entries[seqs[0]].scaffold
            spec.scores = {k: Score.coerce(v) for k, v in (spec.scores or {}).items()}
            scaffold_of[spec.id] = spec.scaffold
            parents_of[spec.id] = tuple(seqs)
            batch[spec.id] = next_seq
            next_seq += 1
        new_shas = {s.scaffold for s in specs} - {e.scaffold for e in self._index.entries.values()}
        missing = self.scaffolds.missing_commits(s for s in new_shas if s)
        if missing:
            raise InvalidNodeError(f"scaffold commits not in {GIT_NAME}: {sorted(missing)[:5]}")
        entries = rows.insert_nodes(
            self._db,
            specs,
            parents_of,
            checkpoints=set(),
            first_seq=batch_start,
            db_path=self.db_path,
        )
        for e in entries:
            self._index.add(e)
        self.scaffolds.set_refs(scaffold_of)
        return [s.id for s in specs]

    # ---- updating nodes ------------------------------------------------------------------
    def set_status(self, node_id: str, status: Status | str, reason: str | None = None) -> None:
        """Move a node through pending -> evaluating -> evaluated | failed (reason required)."""
        self._check_writable()
        status = check_status(status, reason)
        e = self._entry(node_id)
        rows.set_status(self._db, e.seq, status, reason)
        e.status = status
        self._index.changed(e)

    def record_scores(
        self,
        node_id: str,
        scores: Mapping[str, Score | dict[str, Any]],
        *,
        status: Status | None = Status.EVALUATED,
        cost: Cost | None = None,
        accumulate: bool = False,
    ) -> None:
        """Store scores per split (and the cost of getting them) in one transaction.

        accumulate=True merges with the stored score as a task-weighted mean (HGM evaluates an
        existing node on more tasks); otherwise the split's score is replaced.
        """
        self._check_writable()
        e = self._entry(node_id)
        merged = dict(e.scores)
        for split, value in scores.items():
            s = Score.coerce(value)
            if accumulate and split in merged and merged[split][1] + s.n > 0:
                old, n_old = merged[split]
                n = n_old + s.n
                s = Score((old * n_old + s.score * s.n) / n, n)
            merged[split] = (s.score, s.n)
        if status is not None:
            status = check_status(status, None)
        rows.store_scores(self._db, e.seq, {split: merged[split] for split in scores}, status, cost)
        e.scores = merged
        if status is not None:
            e.status = Status(status)
        self._index.changed(e)

    def add_cost(self, node_id: str, cost: Cost) -> None:
        self._check_writable()
        e = self._entry(node_id)
        rows.add_cost(self._db, e.seq, cost)

    def update_metadata(self, node_id: str, patch: Mapping[str, Any]) -> None:
        """Merge keys into the node's free metadata (diagnosis, proposal, diff stats...)."""
        self._check_writable()
        e = self._entry(node_id)
        rows.merge_metadata(self._db, e.seq, patch)

    # ---- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._index.by_id

    def ids(self) -> list[str]:
        """All node ids in insertion order."""
        return [e.id for e in self._index.entries.values()]

    def get(self, node_id: str) -> Node:
        e = self._entry(node_id)
        row = self._db.execute(rows.NODE_SELECT + " WHERE seq = ?", (e.seq,)).fetchone()
        return rows.node_from_row(row, e, self._index.entries)

    def nodes(self) -> Iterator[Node]:
        """Every node, oldest first (one query, streamed)."""
        entries = self._index.entries
        for row in self._db.execute(rows.NODE_SELECT + " ORDER BY seq"):
            yield rows.node_from_row(row, entries[row[0]], entries)

    def children_of(self, node_id: str) -> list[str]:
        entries = self._index.entries
        return [entries[c].id for c in self._entry(node_id).children]

    def pending(self) -> list[str]:
        """Nodes waiting for evaluation, oldest first (the queue a resumed run drains)."""
        return [e.id for e in self._index.entries.values() if e.status is Status.PENDING]

    def weights_chain(self, node_id: str) -> WeightsChain:
        """Base model + ordered ES records along first parents: what replays the weights."""
        e = self._entry(node_id)
        return rows.weights_chain(self._db, e.seq, node_id, self.blobs.path_for)

    def checkout(self, node_id: str, dest: str | Path) -> Path:
        """Write the node's scaffold files into `dest`."""
        return self.scaffolds.checkout(self._entry(node_id).scaffold, Path(dest))

    def scaffold_files(self, node_id: str) -> dict[str, str]:
        """The node's scaffold as text by path, read from git in memory (what evaluation and
        the operators hand the sandbox); a file that is not UTF-8 cannot be a scaffold's."""
        sha = self._entry(node_id).scaffold
        files = {}
        for path, content in self.scaffolds.read_tree(sha).items():
            try:
                files[path] = content.decode("utf-8")
            except UnicodeDecodeError:
                raise UnsafeScaffoldError(f"commit {sha}: path {path!a}: not UTF-8 text") from None
        return files

    def checkpoint_path(self, node_id: str) -> Path | None:
        name = rows.checkpoint_name(self._db, self._entry(node_id).seq)
        return self.blobs.path_for(name) if name else None

    # ---- selection -----------------------------------------------------------------------
    def eligible(self, split: str = "train", gate: Gate | None = None) -> Candidates:
        """The nodes a parent may be drawn from: evaluated, scored on `split`, passing `gate`."""
        return eligible(self._index, split, gate, self.get)

    def select_parent(
        self,
        strategy: str | Strategy,
        rng: random.Random,
        *,
        split: str = "train",
        gate: Gate | None = None,
        **params: Any,
    ) -> str:
        """Draw one parent id. `strategy` is a registered name (params go to its factory) or a
        callable `(pool, rng) -> id`; all randomness comes from `rng`, so a seed replays a run."""
        pool = self.eligible(split, gate)
        if len(pool) == 0:
            raise NoEligibleNodeError(f"no node is eligible for selection on split {split!r}")
        if isinstance(strategy, str):
            key = (strategy, tuple(sorted(params.items())))
            chosen = self._strategies.get(key)
            if chosen is None:  # kept: a strategy may cache work that outlives one draw
                chosen = self._strategies[key] = make_strategy(strategy, **params)
        else:
            chosen = strategy
        return chosen(pool, rng)

    # ---- checks --------------------------------------------------------------------------
    def check_invariants(self) -> list[str]:
        """Every promise the archive makes, checked against disk; [] means consistent."""
        return check_invariants(self._db, len(self._index), self.scaffolds)

    def size_bytes(self) -> int:
        """Bytes on disk of the whole run directory (database, WAL, git, blobs)."""
        return sum(f.stat().st_size for f in self.run_dir.rglob("*") if f.is_file())

    # ---- helpers -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ArchiveError(f"{self.run_dir}: archive is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise ArchiveError(f"{self.run_dir}: archive is open read-only")

    def _seq(self, node_id: str) -> int:
        try:
            return self._index.by_id[node_id]
        except KeyError:
            raise NodeNotFoundError(node_id) from None

    def _entry(self, node_id: str) -> Entry:
        self._check_open()
        return self._index.entries[self._seq(node_id)]

    def _next_seq(self) -> int:
        return rows.next_seq(self._db)


class _Background:
    """Run one call in a thread; result() re-raises its exception in the caller."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._value = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _new_id() -> str:
    return uuid.uuid4().hex[:16]
