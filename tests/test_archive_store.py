"""Archive storage: real SQLite file and real git repository in tmp_path, no fakes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from archive import (
    ROOT_OPERATOR,
    Archive,
    ArchiveError,
    ArchiveLockedError,
    Cost,
    DuplicateNodeError,
    ForeignDatabaseError,
    InvalidNodeError,
    NewerSchemaError,
    NewNode,
    NodeNotFoundError,
    Score,
    Status,
    UnsafeScaffoldError,
    rows,
)
from archive.scaffolds import REF_PREFIX


def crash(archive: Archive) -> None:
    """Drop the archive the way kill -9 would: no clean-shutdown mark, lock released."""
    archive._db.close()
    archive._lock.close()
    archive._closed = True


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


def test_root_child_roundtrip(run_dir: Path, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "tools").mkdir(parents=True)
    (workspace / "agent.py").write_text("print('v0')\n")
    (workspace / "tools" / "grep.py").write_text("x = 1\n")
    with Archive(run_dir) as archive:
        root = archive.add_root("Qwen/Qwen2.5-0.5B", "sha256:abc", workspace=workspace)
        edit = archive.add_child(
            root.id,
            "scaffold_edit",
            files={"agent.py": "print('v1')\n", "tools/grep.py": None},
            metadata={"diagnosis": "timeouts", "diff": {"added": 1, "removed": 1}},
            cost=Cost(1200, 3.5, 9.0),
        )
        es = archive.add_child(edit.id, es_record={"seeds": [1, 2, 3], "sigma": 0.01})
        archive.record_scores(root.id, {"train": {"score": 0.4, "n": 50}, "dev": Score(0.3, 20)})
        archive.update_metadata(edit.id, {"proposal": "retry on timeout"})
        archive.add_cost(edit.id, Cost(100, 0.5, 1.0))

        assert len(archive) == 3 and archive.ids() == [root.id, edit.id, es.id]
        assert es.scaffold == edit.scaffold != root.scaffold  # ES steps share the commit
        got = archive.get(edit.id)
        assert got.parent_ids == (root.id,) and got.operator == "scaffold_edit"
        assert got.metadata == {
            "diagnosis": "timeouts",
            "diff": {"added": 1, "removed": 1},
            "proposal": "retry on timeout",
        }
        assert got.cost == Cost(1300, 4.0, 10.0)
        assert got.children == 1 and archive.children_of(edit.id) == [es.id]
        assert archive.get(root.id).scores == {"train": Score(0.4, 50), "dev": Score(0.3, 20)}
        assert archive.get(root.id).status is Status.EVALUATED
        assert archive.get(root.id).base_model == "Qwen/Qwen2.5-0.5B"

        out = archive.checkout(es.id, tmp_path / "out")
        assert (out / "agent.py").read_text() == "print('v1')\n"
        assert not (out / "tools" / "grep.py").exists()
        assert archive.scaffolds.read_file(root.scaffold, "tools/grep.py") == b"x = 1\n"
        refs = archive.scaffolds.node_refs()
        assert refs == {root.id: root.scaffold, edit.id: edit.scaffold, es.id: es.scaffold}
        assert archive.check_invariants() == []

    with Archive(run_dir, create=False) as again:  # everything survives a reopen
        assert again.get(edit.id) == got
        assert not again.recovery.repaired and not again.recovery.unclean


def test_weights_chain_follows_first_parents(run_dir: Path) -> None:
    with Archive(run_dir) as archive:
        root = archive.add_root("base-model", "sha256:base")
        a = archive.add_child(root.id, es_record={"step": 1})
        b = archive.add_child(a.id, "scaffold_edit", files={"f.py": "1"})
        c = archive.add_child(b.id, "both", es_record={"step": 2}, files={"f.py": "2"})
        other = archive.add_child(root.id, es_record={"step": 99})
        cross = archive.add_child([c.id, other.id], "crossover", es_record={"step": 3})
        assert archive.weights_chain(root.id).records == []
        chain = archive.weights_chain(cross.id)
        assert (chain.base_model, chain.base_hash) == ("base-model", "sha256:base")
        assert chain.records == [{"step": 1}, {"step": 2}, {"step": 3}]
        assert archive.weights_chain(other.id).records == [{"step": 99}]
        assert archive.get(cross.id).parent_ids == (c.id, other.id)
        assert archive.get(cross.id).scaffold == c.scaffold


def test_weights_chain_names_its_deepest_checkpoint(run_dir: Path) -> None:
    with Archive(run_dir) as archive:
        root = archive.add_root("base-model", "sha256:base", checkpoint=b"base")  # holds nothing
        a = archive.add_child(root.id, es_record={"step": 1}, checkpoint=b"after 1")
        b = archive.add_child(a.id, "scaffold_edit", files={"f.py": "1"})
        c = archive.add_child(b.id, es_record={"step": 2}, checkpoint=b"after 2")
        d = archive.add_child(c.id, es_record={"step": 3})
        assert archive.weights_chain(root.id).checkpoint is None
        for node, held in ((a, 1), (b, 1), (c, 2), (d, 2)):
            chain = archive.weights_chain(node.id)
            assert chain.checkpoint_records == held, node.id
            assert chain.checkpoint.read_bytes() == f"after {held}".encode(), node.id


def test_status_and_scores(run_dir: Path) -> None:
    with Archive(run_dir) as archive:
        root = archive.add_root("m", "h")
        child = archive.add_child(root.id)
        assert archive.pending() == [root.id, child.id]
        archive.set_status(child.id, Status.EVALUATING)
        with pytest.raises(InvalidNodeError, match="reason"):
            archive.set_status(child.id, Status.FAILED)
        with pytest.raises(InvalidNodeError, match="unknown status"):
            archive.set_status(child.id, "done")
        archive.set_status(child.id, "failed", "sandbox timeout")
        node = archive.get(child.id)
        assert node.status is Status.FAILED and node.failure_reason == "sandbox timeout"
        archive.record_scores(root.id, {"train": Score(0.5, 10)})
        archive.record_scores(root.id, {"train": Score(1.0, 30)}, accumulate=True)
        assert archive.get(root.id).scores["train"] == Score((5 + 30) / 40, 40)
        with pytest.raises(InvalidNodeError, match="finite"):
            archive.record_scores(root.id, {"train": Score(float("nan"), 5)})
        archive.record_scores(root.id, {"train": Score(0.1, 5)})  # replace
        assert archive.get(root.id).scores["train"] == Score(0.1, 5)
        assert archive.pending() == []


def test_rejects_bad_nodes(run_dir: Path) -> None:
    with Archive(run_dir) as archive:
        root = archive.add_root("m", "h", node_id="root")
        with pytest.raises(DuplicateNodeError):
            archive.add_child(root.id, node_id="root")
        for bad in ("../x", "a/b", "x.lock", "", "-x", "a b"):
            with pytest.raises(InvalidNodeError):
                archive.add_child(root.id, node_id=bad)
        with pytest.raises(NodeNotFoundError, match="nope"):
            archive.add_child("nope")
        with pytest.raises(NodeNotFoundError):
            archive.get("nope")
        with pytest.raises(InvalidNodeError):
            archive.add_root("", "h")
        with pytest.raises(InvalidNodeError, match="scaffold commits"):
            archive.add_many(
                [NewNode("r2", [], ROOT_OPERATOR, scaffold="f" * 40, base_model="m", base_hash="h")]
            )
        with pytest.raises(DuplicateNodeError):
            archive.add_many([NewNode("n1", ["root"]), NewNode("n1", ["root"])])
        assert len(archive) == 1 and archive.check_invariants() == []


def test_add_many_bulk(run_dir: Path) -> None:
    with Archive(run_dir) as archive:
        root = archive.add_root("m", "h", files={"a.py": "1"})
        edit = archive.add_child(root.id, "scaffold_edit", files={"a.py": "2"})
        specs = []
        for i in range(600):  # > 256: refs go through the packed-refs path
            parent = [root.id, edit.id][i % 2] if i < 2 else f"n{i // 2}"
            specs.append(
                NewNode(
                    f"n{i}",
                    [parent],
                    es_record={"step": i},
                    status=Status.EVALUATED,
                    scores={"train": Score(i / 600, 10)},
                )
            )
        specs.append(NewNode("x", ["n5", "n6"], "crossover", scaffold=root.scaffold))
        archive.add_many(specs)
        assert len(archive) == 603
        assert archive.get("n0").scaffold == root.scaffold
        assert archive.get("n9").scaffold == edit.scaffold  # inherited along the batch
        assert archive.get("x").parent_ids == ("n5", "n6")
        assert archive.get("n1").children == 2
        assert archive.weights_chain("n9").records == [{"step": s} for s in (1, 2, 4, 9)]
        assert archive.check_invariants() == []
        archive.add_child("n7", "scaffold_edit", files={"b.py": "3"})  # loose ref after packed
        assert archive.check_invariants() == []
        before = {n.id: n for n in archive.nodes()}
    with Archive(run_dir) as again:
        assert {n.id: n for n in again.nodes()} == before
        assert again.check_invariants() == []


def test_checkpoint_blobs(run_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "ckpt.bin"
    source.write_bytes(b"w" * 1000)
    with Archive(run_dir) as archive:
        root = archive.add_root("m", "h", checkpoint=b"weights")
        child = archive.add_child(root.id, checkpoint=source)
        assert archive.checkpoint_path(root.id).read_bytes() == b"weights"
        assert archive.checkpoint_path(child.id).read_bytes() == b"w" * 1000
        plain = archive.add_child(root.id)
        assert archive.checkpoint_path(plain.id) is None
    blobs = run_dir / "blobs"
    (blobs / ".tmp-crashed").write_bytes(b"half")  # a write killed before its rename
    (blobs / "ghost").write_bytes(b"orphan")  # a blob whose row never committed
    with Archive(run_dir) as again:
        assert sorted(again.recovery.blobs_removed) == [".tmp-crashed", "ghost"]
        assert sorted(p.name for p in blobs.iterdir()) == sorted([root.id, child.id])


def test_schema_newer_version_is_refused(run_dir: Path) -> None:
    Archive(run_dir).close()
    db_path = run_dir / "archive.sqlite"
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(NewerSchemaError) as info:
        Archive(run_dir)
    assert str(db_path) in str(info.value) and "99" in str(info.value)
    assert "newer" in str(info.value)
    # the failed open released its lock, so the repaired file opens again
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA user_version = 1")
    Archive(run_dir).close()


def test_foreign_sqlite_database_is_refused(run_dir: Path) -> None:
    run_dir.mkdir()
    db_path = run_dir / "archive.sqlite"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE programs (id TEXT)")
    with pytest.raises(ForeignDatabaseError) as info:
        Archive(run_dir)
    message = str(info.value)
    assert str(db_path) in message and "not a Lineage archive" in message and "programs" in message


def test_non_sqlite_file_is_refused(run_dir: Path) -> None:
    run_dir.mkdir()
    db_path = run_dir / "archive.sqlite"
    db_path.write_text("name,score\nx,1\n")
    with pytest.raises(ForeignDatabaseError, match="not an SQLite database") as info:
        Archive(run_dir)
    assert str(db_path) in str(info.value)
    assert db_path.read_text() == "name,score\nx,1\n"  # untouched


def test_missing_run_dir_without_create(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no such run directory"):
        Archive(tmp_path / "absent", create=False)


def test_single_writer_lock(run_dir: Path) -> None:
    with Archive(run_dir), pytest.raises(ArchiveLockedError, match="archive.lock"):
        Archive(run_dir)
    Archive(run_dir).close()


def test_evaluating_nodes_are_requeued(run_dir: Path) -> None:
    archive = Archive(run_dir)
    root = archive.add_root("m", "h")
    a = archive.add_child(root.id)
    b = archive.add_child(root.id)
    archive.set_status(a.id, Status.EVALUATING)
    archive.set_status(b.id, Status.EVALUATING)
    archive.record_scores(b.id, {"train": Score(0.5, 4)})
    crash(archive)
    with Archive(run_dir) as again:
        assert again.recovery.unclean
        assert again.recovery.requeued == [a.id]
        assert again.get(a.id).status is Status.PENDING
        assert again.get(b.id).status is Status.EVALUATED
        assert again.pending() == [root.id, a.id]


def test_failure_between_commit_and_row_leaves_node_absent(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = Archive(run_dir)
    root = archive.add_root("m", "h", files={"a.py": "0"})

    def die(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed between the commit and the row")

    monkeypatch.setattr(rows, "insert_nodes", die)
    with pytest.raises(KeyboardInterrupt):
        archive.add_child(
            root.id, "scaffold_edit", files={"a.py": "1"}, node_id="lost", checkpoint=b"c"
        )
    monkeypatch.undo()
    assert "lost" not in archive
    crash(archive)
    with Archive(run_dir) as again:
        assert "lost" not in again and len(again) == 1
        assert "lost" not in again.scaffolds.node_refs()
        assert not (run_dir / "blobs" / "lost").exists()
        assert again.check_invariants() == []
        again.add_child(root.id, node_id="lost")  # the id is free again


def test_death_after_row_before_ref_is_adopted(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = Archive(run_dir)
    root = archive.add_root("m", "h")

    def die(*args: object) -> None:
        raise KeyboardInterrupt("killed between the row and the ref")

    monkeypatch.setattr(archive.scaffolds, "set_ref", die)
    with pytest.raises(KeyboardInterrupt):
        archive.add_child(root.id, "scaffold_edit", files={"a": "1"}, node_id="kept")
    crash(archive)
    with Archive(run_dir) as again:
        assert again.recovery.refs_restored == ["kept"]
        assert again.scaffolds.node_refs()["kept"] == again.get("kept").scaffold
        assert again.check_invariants() == []


def test_orphan_ref_is_deleted_and_missing_commit_marked_failed(run_dir: Path) -> None:
    with Archive(run_dir) as archive:
        root = archive.add_root("m", "h")
        child = archive.add_child(root.id)
        archive.scaffolds.set_ref("ghost", root.scaffold)  # a ref whose row never committed
    with sqlite3.connect(run_dir / "archive.sqlite") as db:  # impossible by construction
        db.execute("UPDATE nodes SET scaffold = ? WHERE id = ?", ("e" * 40, child.id))
    with Archive(run_dir) as again:
        assert again.recovery.refs_deleted == ["ghost"]
        assert again.recovery.missing_scaffold == [child.id]
        node = again.get(child.id)
        assert node.status is Status.FAILED and "missing" in (node.failure_reason or "")
        assert REF_PREFIX + "ghost" not in again.scaffolds._git("for-each-ref")


def test_empty_database_file_is_initialised(run_dir: Path) -> None:
    run_dir.mkdir()
    (run_dir / "archive.sqlite").touch()  # a crash during creation can leave this
    with Archive(run_dir) as archive:
        archive.add_root("m", "h")
        assert len(archive) == 1


def test_lock_timeout_waits_for_the_other_writer(run_dir: Path) -> None:
    import fcntl
    import threading

    Archive(run_dir).close()
    holder = open(run_dir / "archive.lock", "a+")  # noqa: SIM115 - another "process" holding it
    fcntl.flock(holder, fcntl.LOCK_EX)
    timer = threading.Timer(0.3, holder.close)
    timer.start()
    with pytest.raises(ArchiveLockedError):
        Archive(run_dir, lock_timeout=0.05)
    with Archive(run_dir, lock_timeout=5) as archive:
        assert len(archive) == 0
    timer.join()


def test_verify_runs_quick_check(run_dir: Path) -> None:
    with Archive(run_dir) as archive:
        archive.add_root("m", "h")
    with Archive(run_dir, verify=True) as again:
        assert len(again) == 1


def test_missing_scaffold_repository_is_an_error_not_a_reset(run_dir: Path) -> None:
    import shutil

    with Archive(run_dir) as archive:
        archive.add_root("m", "h")
    shutil.rmtree(run_dir / "scaffolds.git")
    with pytest.raises(ArchiveError, match="scaffolds.git: missing"):
        Archive(run_dir)
    assert not (run_dir / "scaffolds.git").exists()


def test_scaffold_files_read_in_memory_equal_a_checkout(run_dir: Path, tmp_path: Path) -> None:
    from agent.scaffold.repo import read_files

    with Archive(run_dir) as archive:
        root = archive.add_root(
            "m", "h", files={"a.py": "é = 1\n", "pkg/b.py": "x\r\ny\n", "README.md": ""}
        )
        child = archive.add_child(root.id, "scaffold_edit", files={"a.py": None, "c.txt": "c"})
        for node in (root.id, child.id):
            archive.checkout(node, tmp_path / node)
            assert archive.scaffold_files(node) == read_files(tmp_path / node)
        assert archive.scaffold_files(child.id) == {
            "README.md": "",
            "c.txt": "c",
            "pkg/b.py": "x\r\ny\n",
        }
        binary = archive.add_child(root.id, "scaffold_edit", files={"a.py": b"\xff\xfe"})
        with pytest.raises(UnsafeScaffoldError, match="not UTF-8"):
            archive.scaffold_files(binary.id)
