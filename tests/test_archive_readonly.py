"""Archive(readonly=True): a reader beside the running writer (real SQLite WAL + git)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from lineage_builder import build_lineage

from archive import Archive, ArchiveError, Score, Status
from archive.store import DB_NAME


def _open_flag(run_dir: Path) -> str:
    db = sqlite3.connect(f"{(run_dir / DB_NAME).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return db.execute("SELECT value FROM meta WHERE key = 'open'").fetchone()[0]
    finally:
        db.close()


def test_reader_beside_writer_sees_a_snapshot(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with build_lineage(run) as writer:
        writer.set_status("es1", Status.EVALUATING)  # recovery would requeue this
        with Archive(run, readonly=True) as reader:  # the writer's lock is not taken
            assert reader.ids() == writer.ids()
            assert reader.get("es1").status is Status.EVALUATING  # no recovery ran
            assert reader.get("edit1").metadata["flags"] == ["touches_entrypoint", "new_file"]
            writer.add_child("es1", node_id="later", scores={"train": Score(0.5, 5)})
            assert "later" not in reader  # one snapshot for index and rows alike
            assert [n.id for n in reader.nodes()] == reader.ids()
        with Archive(run, readonly=True) as fresh:
            assert "later" in fresh and fresh.get("later").scores["train"] == Score(0.5, 5)
        assert _open_flag(run) == "1"  # the reader did not mark the writer's session closed


def test_reader_writes_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    build_lineage(run).close()
    before = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    with Archive(run, readonly=True) as reader:
        for write in (
            lambda: reader.add_child("root", node_id="x"),
            lambda: reader.set_status("root", Status.PENDING),
            lambda: reader.record_scores("root", {"train": Score(1.0, 1)}),
            lambda: reader.update_metadata("root", {"a": 1}),
        ):
            with pytest.raises(ArchiveError, match="read-only"):
                write()
    after = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= {Path(DB_NAME + "-wal"), Path(DB_NAME + "-shm")}  # SQLite's own files
    with Archive(run, readonly=True) as reader, Archive(run) as writer:  # no lock taken
        assert len(writer) == len(reader)


def test_reader_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="no such run directory"):
        Archive(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArchiveError, match="no archive database"):
        Archive(tmp_path / "empty", readonly=True)
    assert list((tmp_path / "empty").iterdir()) == []
    other = tmp_path / "other"
    other.mkdir()
    sqlite3.connect(other / DB_NAME).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ArchiveError, match="not a Lineage archive"):
        Archive(other, readonly=True)
