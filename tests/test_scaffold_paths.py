"""Hostile self-edits against the host: the path policy, the archive's commits and checkouts,
reading a scaffold folder, the host-side checks of a change, and resuming past a child that
cannot be evaluated. Real git, real SQLite, real files; no Docker."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.scaffold.edit import check_changes
from agent.scaffold.jobs import PROTECTED_PATHS
from agent.scaffold.repo import MAX_FILE_BYTES, ScaffoldError, read_files
from archive import Archive, ArchiveError, NewNode, Status

UNSAFE_PATHS = [
    "/etc/passwd",  # absolute
    "../evil.py",
    "scaffold/../../evil.py",
    "a//b.py",  # git would store a/b.py
    "a/./b.py",  # git would store a/b.py
    "./a.py",
    "a/",
    "",
    "scaffold/.git/x",  # git drops it
    ".git/config",
    ".GIT/hooks/pre-commit",
    "x.txt\n120000 " + "0" * 40 + "\tleak.txt",  # an index line of the agent's choosing
    "a\0b.py",
    "tab\tname.py",
    "quote'.py",
    'dq".py',
    "back\\slash.py",
    "\udcff.py",  # an undecodable byte, as os.walk hands it over
    "caf\u00e9.py",
    "sp ace.py",
    "-rf.py",
    "/".join(["d"] * 20) + "/x.py",  # too deep
    "x" * 300 + ".py",  # too long
    "scaffold/__pycache__/solve.cpython-311.pyc",  # the reader skips it
    "lineage_llm.py",  # the protected client module ...
    "lineage_llm/__init__.py",  # ... shadowed by a package
    "lineage_llm.cpython-311-x86_64-linux-gnu.so",  # ... or an extension module
]


@pytest.mark.parametrize("path", UNSAFE_PATHS, ids=ascii)
def test_check_changes_refuses_every_unsafe_path(path):
    why = check_changes({path: "x = 1\n"}, PROTECTED_PATHS)
    assert why is not None, f"{path!a} accepted"
    assert "\n" not in why  # one line, printable, whatever the path held
    assert why.isascii()


@pytest.mark.parametrize(
    "path", ["scaffold/solve.py", "README.md", ".gitignore", "tests/test_a-b_c.py", "x+y=z@1,2"]
)
def test_check_changes_accepts_ordinary_paths(path):
    assert check_changes({path: "x = 1\n"}, PROTECTED_PATHS) is None


@pytest.mark.parametrize(
    "source",
    ["x = " + "+".join(["1"] * 3000), "-" * 100000 + "1", "x" + "()" * 100000, "x = 1\0\n"],
    ids=["deep-sum", "unary-minus", "deep-calls", "nul-byte"],
)
def test_hostile_python_is_a_failed_child_not_an_exception(source):
    why = check_changes({"scaffold/solve.py": source}, PROTECTED_PATHS)
    assert why and why.startswith("scaffold/solve.py"), why


def test_a_changed_file_over_the_size_cap_is_refused_before_parsing():
    big = "x = 1\n" * (MAX_FILE_BYTES // 6 + 1)
    why = check_changes({"scaffold/data.txt": big}, PROTECTED_PATHS)
    assert why and "bytes" in why and str(MAX_FILE_BYTES) in why
    assert check_changes({"scaffold/data.txt": big[: MAX_FILE_BYTES - 6]}, PROTECTED_PATHS) is None


def test_text_that_is_not_utf8_and_file_directory_clashes_are_refused():
    assert "UTF-8" in check_changes({"notes.txt": "a\udcffb"}, PROTECTED_PATHS)
    parent = {"scaffold/solve.py": "x = 1\n"}
    why = check_changes({"scaffold": "x = 1\n"}, PROTECTED_PATHS, parent)
    assert why and "scaffold" in why and "directory" in why
    assert check_changes({"a": "1", "a/b": "2"}, PROTECTED_PATHS) is not None


# ---- the archive: commits -----------------------------------------------------------------


def blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def tree_modes(archive: Archive, node_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["git", "--git-dir", str(archive.scaffolds.path), "ls-tree", "-r", "-z", "--full-tree"]
        + [archive.get(node_id).scaffold],
        capture_output=True,
        check=True,
    ).stdout
    entries = {}
    for record in filter(None, out.split(b"\0")):
        meta, path = record.split(b"\t", 1)
        entries[path.decode(errors="surrogateescape")] = meta.split()[0].decode()
    return entries


def injection(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """An edit whose second path, written as one line of `update-index --index-info`, would add
    a symlink to a host file (its target is the first file's content, so the blob exists)."""
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST SECRET\n")
    injected = f"x.txt\n120000 {blob_sha(str(secret).encode())}\tleak.txt"
    return injected, {"target.txt": str(secret), injected: "x\n"}


def test_a_newline_in_a_path_cannot_store_a_symlink_to_a_host_file(tmp_path):
    _, files = injection(tmp_path)
    with Archive(tmp_path / "run") as archive:
        root = archive.add_root("m", "h", files={"README.md": "hi\n"})
        with pytest.raises(ArchiveError, match="path"):
            archive.add_child(root.id, "scaffold_edit", files=files)
        assert archive.ids() == [root.id]  # nothing stored


def test_the_index_protocol_alone_cannot_be_broken_out_of(tmp_path, monkeypatch):
    """Even with the path policy switched off, the index is built without a text protocol an
    entry can leave: the weird name is one 100644 entry, never a symlink."""
    import archive.scaffolds as scaffolds

    monkeypatch.setattr(scaffolds, "path_problem", lambda path, protected=(): None)
    injected, files = injection(tmp_path)
    with Archive(tmp_path / "run") as archive:
        root = archive.add_root("m", "h", files={"README.md": "hi\n"})
        child = archive.add_child(root.id, "scaffold_edit", files=files)
        modes = tree_modes(archive, child.id)
        out = archive.checkout(child.id, tmp_path / "out")
    assert set(modes.values()) == {"100644"}
    assert injected in modes and "leak.txt" not in modes
    written = list(out.rglob("*"))
    assert not any(p.is_symlink() for p in written)
    assert not any(b"HOST SECRET" in p.read_bytes() for p in written)


@pytest.mark.parametrize("path", ["a//b.py", "a/./b.py", "scaffold/.git/x", "\udcff.py"], ids=ascii)
def test_the_archive_refuses_paths_git_would_normalize_drop_or_cannot_encode(tmp_path, path):
    with Archive(tmp_path / "run") as archive:
        root = archive.add_root("m", "h", files={"README.md": "hi\n"})
        with pytest.raises(ArchiveError):
            archive.add_child(root.id, "scaffold_edit", files={path: "x = 1\n"})
        assert archive.ids() == [root.id]


def test_the_archive_refuses_a_file_that_would_replace_a_directory(tmp_path):
    with Archive(tmp_path / "run") as archive:
        root = archive.add_root("m", "h", files={"scaffold/solve.py": "x = 1\n"})
        with pytest.raises(ArchiveError, match="scaffold"):
            archive.add_child(root.id, "scaffold_edit", files={"scaffold": "x = 2\n"})
        with pytest.raises(ArchiveError, match="bytes"):
            archive.add_child(root.id, "scaffold_edit", files={"big": b"x" * (MAX_FILE_BYTES + 1)})
        assert archive.ids() == [root.id]


def test_a_workspace_holding_a_symlink_is_not_stored(tmp_path):
    (tmp_path / "secret").write_text("HOST SECRET\n")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "agent.py").write_text("x = 1\n")
    os.symlink(tmp_path / "secret", workspace / "leak.txt")
    with Archive(tmp_path / "run") as archive:
        with pytest.raises(ArchiveError, match="leak.txt"):
            archive.add_root("m", "h", workspace=workspace)
        assert archive.ids() == []


# ---- the archive: checkouts of a tree built by hand -----------------------------------------


def git(repo: Path, *args: str, stdin: bytes = b"") -> str:
    out = subprocess.run(
        ["git", "--git-dir", str(repo), *args], input=stdin, capture_output=True, check=True
    )
    return out.stdout.decode().strip()


def hostile_commit(repo: Path, kind: str, secret: Path) -> str:
    """A commit whose tree holds one entry no commit of ours would: made with git plumbing."""
    ok = git(repo, "hash-object", "-w", "--stdin", stdin=b"x = 1\n")
    lines = f"100644 blob {ok}\tagent.py\n"
    if kind == "symlink":
        link = git(repo, "hash-object", "-w", "--stdin", stdin=str(secret).encode())
        lines += f"120000 blob {link}\tleak.txt\n"
    elif kind == "gitlink":
        lines += f"160000 commit {'1' * 40}\tsub\n"
    elif kind in ("dotdot", "dotgit"):
        inner = git(repo, "mktree", stdin=f"100644 blob {ok}\tescaped.py\n".encode())
        name = ".." if kind == "dotdot" else ".git"
        lines += f"040000 tree {inner}\t{name}\n"
    elif kind == "duplicate":
        lines += f"100644 blob {ok}\tagent.py\n"
    elif kind == "huge":
        big = git(repo, "hash-object", "-w", "--stdin", stdin=b"#" * (MAX_FILE_BYTES + 1))
        lines += f"100644 blob {big}\tbig.py\n"
    tree = git(repo, "mktree", stdin=lines.encode())
    return git(repo, "commit-tree", tree, "-m", kind)


@pytest.mark.parametrize("kind", ["symlink", "gitlink", "dotdot", "dotgit", "duplicate", "huge"])
def test_checkout_writes_nothing_outside_its_folder_whatever_the_tree_holds(tmp_path, kind):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST SECRET\n")
    with Archive(tmp_path / "run") as archive:
        commit = hostile_commit(archive.scaffolds.path, kind, secret)
        archive.add_root("m", "h")
        archive.add_many([NewNode("bad", [archive.ids()[0]], scaffold=commit)])
        dest = tmp_path / "box" / "dest"
        with pytest.raises(ArchiveError, match="commit|tree"):
            archive.checkout("bad", dest)
    assert not (tmp_path / "box" / "escaped.py").exists()
    written = [p for p in dest.rglob("*")] if dest.exists() else []
    assert not any(p.is_symlink() for p in written)
    assert not any("HOST SECRET" in p.read_text() for p in written if p.is_file())


def test_checkout_writes_the_stored_bytes_exactly(tmp_path):
    files = {"a.py": "x = 1\r\n", "d/e/f.txt": "caf\u00e9\n", ".gitattributes": "* text eol=crlf\n"}
    with Archive(tmp_path / "run") as archive:
        root = archive.add_root("m", "h", files=files)
        archive.checkout(root.id, tmp_path / "out")
        assert read_files(tmp_path / "out") == files
        assert (tmp_path / "out" / "a.py").read_bytes() == b"x = 1\r\n"
        with pytest.raises(ArchiveError, match="empty"):  # never over files already there
            archive.checkout(root.id, tmp_path / "out")


# ---- reading a scaffold folder ---------------------------------------------------------------


SPECIAL_FILES = {
    "file-link": lambda root, secret: os.symlink(secret, root / "leak.txt"),
    "dangling-link": lambda root, secret: os.symlink(root / "nowhere", root / "leak.txt"),
    "dir-link": lambda root, secret: os.symlink(secret.parent, root / "up"),
    "fifo": lambda root, secret: os.mkfifo(root / "pipe"),
    "undecodable-name": lambda root, secret: Path(os.fsdecode(bytes(root) + b"/\xff.py")).touch(),
}


@pytest.mark.parametrize("kind", SPECIAL_FILES)
def test_read_files_refuses_links_special_files_and_odd_names_never_following(tmp_path, kind):
    secret = tmp_path / "secret.txt"
    secret.write_text("HOST SECRET\n")
    root = tmp_path / "scaffold"
    root.mkdir()
    (root / "agent.py").write_text("x = 1\n")
    SPECIAL_FILES[kind](root, secret)
    with pytest.raises(ScaffoldError, match="regular file|symbolic link|not allowed"):
        read_files(root)


def test_read_files_caps_size_by_the_bytes_read_not_the_size_reported(tmp_path, monkeypatch):
    """/proc files report size 0: the cap must count what is read."""
    root = tmp_path / "s"
    root.mkdir()
    (root / "big.txt").write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    real_stat, real_fstat = Path.stat, os.fstat

    def zero(result):
        return os.stat_result((*result[:6], 0, *result[7:]))

    monkeypatch.setattr(Path, "stat", lambda self, **kw: zero(real_stat(self, **kw)))
    monkeypatch.setattr(os, "fstat", lambda fd: zero(real_fstat(fd)))
    with pytest.raises(ScaffoldError, match="larger than"):
        read_files(root)


# ---- resuming past a child that cannot be evaluated -----------------------------------------


def test_a_pending_child_that_cannot_be_evaluated_is_marked_failed_on_resume(tmp_path):
    from agent.loop.loop import Loop

    run_dir = tmp_path / "run"
    with Archive(run_dir) as archive:
        root = archive.add_root("m", "h", files={"agent.py": "x = 1\n"})
        archive.set_status(root.id, Status.EVALUATED)
        bad = hostile_commit(archive.scaffolds.path, "huge", tmp_path / "none")
        archive.add_many([NewNode("n0001", [root.id], "scaffold_edit", scaffold=bad)])
        rt = SimpleNamespace(
            run_dir=run_dir,
            archive=archive,
            config=SimpleNamespace(report=SimpleNamespace(tensorboard=False)),
            gateway=SimpleNamespace(usage=lambda: {"tokens": 0}),
        )
        loop = Loop(rt)
        loop.progress, loop.bar = SimpleNamespace(update=lambda *a, **k: None), None
        loop._drain_pending()  # evaluating would need a sandbox: it never gets that far
        node = archive.get("n0001")
        assert node.status is Status.FAILED
        assert "cannot be evaluated" in node.failure_reason and "big.py" in node.failure_reason
        assert archive.pending() == []
        loop.events.close()
