"""The scaffold store: a bare git repository holding one commit per scaffold and a ref per node.

Commit objects are written before the database row that names them, and git is configured to
fsync objects, so a row can never point at a commit that a crash (or power loss) took away.
Refs are derived data: the database is the truth and recovery rewrites refs from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import git

from archive.errors import ArchiveError, UnsafeScaffoldError
from archive.paths import path_problem, size_problem, tree_problem

REF_PREFIX = "refs/nodes/"
_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "lineage",
    "GIT_AUTHOR_EMAIL": "lineage@localhost",
    "GIT_COMMITTER_NAME": "lineage",
    "GIT_COMMITTER_EMAIL": "lineage@localhost",
}
_TMP_PREFIX = "lineage-tmp-"  # scratch index dirs; a killed writer may leave one behind
_PACKED_HEADER = b"# pack-refs with: peeled fully-peeled sorted \n"
REGULAR = "100644"  # the only mode stored: no links, gitlinks or executables


class Entry(NamedTuple):
    """One entry of a stored tree, as `git ls-tree -l` gives it (size -1: not a blob)."""

    mode: str
    kind: str
    sha: str
    size: int


def _checked_contents(files: Mapping[str, bytes | str | None]) -> dict[str, bytes | None]:
    """The file mapping as bytes, refused when a path or a size breaks the scaffold policy."""
    out: dict[str, bytes | None] = {}
    for path, content in files.items():
        why = path_problem(path)
        if why is None and isinstance(content, str):
            try:
                content = content.encode("utf-8")
            except UnicodeEncodeError:
                why = f"path {path!a}: not UTF-8 text"
        if why is None and content is not None:
            why = size_problem(path, len(content))
        if why:
            raise UnsafeScaffoldError(f"scaffold files: {why}")
        out[path] = content
    return out


class ScaffoldRepo:
    """Writes scaffold commits and node refs; never touches the database."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """readonly=True: only read (no init, lock cleanup or config writes; a writer may run)."""
        self.path = path
        self.locks_removed: list[str] = []
        if readonly:
            if not (path / "HEAD").exists():
                raise ArchiveError(f"{path}: no scaffold repository (git) in this run directory")
            self.repo = git.Repo(path)
            return
        if not (path / "HEAD").exists():
            git.Repo.init(path, bare=True)
        else:  # the caller holds the archive lock, so any git lock file is stale
            self.locks_removed = self.clear_stale_locks()
        self.repo = git.Repo(path)
        cfg = {"core.fsync": "objects", "gc.auto": "0", "core.logAllRefUpdates": "false"}
        with self.repo.config_reader("repository") as reader:
            todo = {
                k: v
                for k, v in cfg.items()
                if str(reader.get_value(*k.split("."), default="")) != v
            }
        if todo:
            with self.repo.config_writer() as writer:
                for key, value in todo.items():
                    writer.set_value(*key.split("."), value)

    # ---- plumbing ------------------------------------------------------------------------
    def _git(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> str:
        return self._git_bytes(*args, stdin=stdin, env=env, check=check).decode()

    def _git_bytes(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> bytes:
        full_env = {**os.environ, **_IDENTITY, **(env or {})}
        proc = subprocess.run(
            [self.repo.git.GIT_PYTHON_GIT_EXECUTABLE, "--git-dir", str(self.path), *args],
            input=stdin,
            capture_output=True,
            env=full_env,
        )
        if check and proc.returncode != 0:
            raise ArchiveError(
                f"{self.path}: git {' '.join(args[:2])} failed: "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout

    def tree_entries(self, treeish: str) -> dict[str, Entry]:
        """Every entry of a tree, recursively (raw: nothing is checked here)."""
        out = self._git_bytes("ls-tree", "-r", "-z", "-l", "--full-tree", treeish)
        entries: dict[str, Entry] = {}
        for record in filter(None, out.split(b"\0")):
            meta, raw = record.split(b"\t", 1)
            mode, kind, sha, size = meta.decode().split()
            path = raw.decode("utf-8", errors="surrogateescape")
            if path in entries:
                raise UnsafeScaffoldError(f"tree {treeish}: path {path!a} appears twice")
            entries[path] = Entry(mode, kind, sha, int(size) if size.isdigit() else -1)
        return entries

    def check_tree(self, entries: Mapping[str, Entry], where: str) -> None:
        """Refuse a tree outside the scaffold policy: only regular files (100644) under paths
        the policy accepts, each within the size cap."""
        for path, e in entries.items():
            why = path_problem(path)
            if why is None and (e.mode != REGULAR or e.kind != "blob"):
                why = f"path {path!a}: mode {e.mode} {e.kind}, not a regular file ({REGULAR})"
            why = why or size_problem(path, e.size)
            if why:
                raise UnsafeScaffoldError(f"{where}: {why}")
        why = tree_problem(entries)
        if why:
            raise UnsafeScaffoldError(f"{where}: {why}")

    def _blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """The contents of blobs, in one `cat-file --batch` call."""
        wanted = sorted(set(shas))
        if not wanted:
            return {}
        out = self._git_bytes("cat-file", "--batch", stdin=("\n".join(wanted) + "\n").encode())
        blobs: dict[str, bytes] = {}
        pos = 0
        for sha in wanted:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            if len(header) != 3 or header[1] != b"blob":
                raise ArchiveError(f"{self.path}: object {sha} is not a blob")
            size = int(header[2])
            blobs[sha] = out[end + 1 : end + 1 + size]
            pos = end + 1 + size + 1
        return blobs

    # ---- commits -------------------------------------------------------------------------
    def commit_tree(self, tree: str, parents: Sequence[str], message: str, date: float) -> str:
        """Write a commit object (no ref): the first step of an atomic add."""
        args = ["commit-tree", tree, "-m", message or "scaffold"]
        for parent in dict.fromkeys(parents):
            args += ["-p", parent]
        stamp = f"@{int(date)} +0000"
        env = {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
        return self._git(*args, env=env).strip()

    def commit_workspace(
        self, workspace: Path, parents: Sequence[str], message: str, date: float
    ) -> str:
        """Snapshot a directory (honouring its .gitignore) as a commit on top of `parents`."""
        workspace = Path(workspace)
        if not workspace.is_dir():
            raise ArchiveError(f"{workspace}: scaffold workspace is not a directory")
        with tempfile.TemporaryDirectory(prefix=_TMP_PREFIX, dir=self.path) as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            wt = ["--work-tree", str(workspace)]
            self._git(*wt, "add", "-A", "--", ".", env=env)
            tree = self._git("write-tree", env=env).strip()
        self.check_tree(self.tree_entries(tree), str(workspace))
        return self.commit_tree(tree, parents, message, date)

    def commit_files(
        self,
        files: Mapping[str, bytes | str | None],
        parents: Sequence[str],
        message: str,
        date: float,
    ) -> str:
        """Apply a file mapping (path -> content, None deletes) to the first parent's tree.

        Every path passes the scaffold policy first, the index is fed NUL-separated records
        (no entry can start another), only 100644 files are written, and the tree written is
        read back and compared with the one intended, so what is stored is what was given."""
        contents = _checked_contents(files)
        base = parents[0] if parents else None
        expected = self.tree_entries(base) if base else {}
        with tempfile.TemporaryDirectory(prefix=_TMP_PREFIX, dir=self.path) as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._git("read-tree", base or "--empty", env=env)
            written = {p: c for p, c in contents.items() if c is not None}
            records: list[bytes] = []
            if written:
                stage = Path(tmp) / "stage"
                stage.mkdir()
                staged: list[str] = []
                for i, content in enumerate(written.values()):
                    f = stage / str(i)
                    f.write_bytes(content)
                    staged.append(str(f))
                shas = self._git(
                    "hash-object",
                    "-w",
                    "--no-filters",
                    "--stdin-paths",
                    stdin="\n".join(staged).encode(),
                ).split()
                for path, sha in zip(written, shas, strict=True):
                    records.append(f"{REGULAR} {sha}\t{path}".encode())
                    expected[path] = Entry(REGULAR, "blob", sha, len(written[path]))
            for path in (p for p, c in contents.items() if c is None):
                records.append(f"0 {'0' * 40}\t{path}".encode())
                expected.pop(path, None)
            if records:
                stdin = b"\0".join(records) + b"\0"
                self._git("update-index", "-z", "--index-info", stdin=stdin, env=env)
            tree = self._git("write-tree", env=env).strip()
        stored = self.tree_entries(tree)
        if stored != expected:
            diff = sorted(set(stored.items()) ^ set(expected.items()))
            raise UnsafeScaffoldError(
                f"{self.path}: the tree git wrote differs from the files given, at path "
                f"{diff[0][0]!a}"
            )
        self.check_tree(stored, "scaffold files")
        return self.commit_tree(tree, parents, message, date)

    def empty_commit(self, message: str, date: float) -> str:
        tree = self._git("hash-object", "-t", "tree", "-w", "--stdin", stdin=b"").strip()
        assert tree == _EMPTY_TREE
        return self.commit_tree(tree, [], message, date)

    def checkout(self, commit: str, dest: Path) -> Path:
        """Materialize a scaffold commit into `dest` (created; must be empty or absent).

        The files are written here, not by git: each path is checked by the scaffold policy
        and only regular files are written (never a link, never over an existing entry), so
        nothing lands outside `dest` whatever the stored tree holds."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise ArchiveError(f"{dest}: not empty; a checkout writes into an empty folder")
        files = self.read_tree(commit)
        try:
            for path, content in files.items():
                target = dest.joinpath(*path.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                with os.fdopen(os.open(target, flags, 0o644), "wb") as f:
                    f.write(content)
        except OSError as exc:
            raise ArchiveError(f"{dest}: checkout of {commit} failed: {exc}") from None
        return dest

    def read_tree(self, commit: str) -> dict[str, bytes]:
        """A scaffold commit's files in memory, by path (sorted), checked by the scaffold
        policy as a checkout is: two git calls, nothing written."""
        entries = self.tree_entries(commit)
        self.check_tree(entries, f"commit {commit}")
        blobs = self._blobs(e.sha for e in entries.values())
        return {path: blobs[e.sha] for path, e in sorted(entries.items())}

    def read_file(self, commit: str, path: str) -> bytes:
        proc = subprocess.run(
            [
                self.repo.git.GIT_PYTHON_GIT_EXECUTABLE,
                "--git-dir",
                str(self.path),
                "cat-file",
                "blob",
                f"{commit}:{path}",
            ],
            capture_output=True,
        )
        if proc.returncode != 0:
            raise ArchiveError(f"{self.path}: no file {path!r} in commit {commit}")
        return proc.stdout

    def diff(self, old: str | None, new: str) -> str:
        """Unified diff of commit `new` against `old` (None: the empty tree, i.e. every file).

        Decoded leniently: a scaffold may hold files in any encoding, and a diff is for reading.
        """
        proc = subprocess.run(
            [
                self.repo.git.GIT_PYTHON_GIT_EXECUTABLE,
                "--git-dir",
                str(self.path),
                "diff",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                old or _EMPTY_TREE,
                new,
            ],
            capture_output=True,
        )
        if proc.returncode != 0:
            raise ArchiveError(
                f"{self.path}: git diff {old} {new} failed: {proc.stderr.decode().strip()}"
            )
        return proc.stdout.decode("utf-8", errors="replace")

    def missing_commits(self, shas: Iterable[str]) -> set[str]:
        """Shas that are not commit objects in the repository (one git process for all)."""
        wanted = sorted(set(shas))
        if not wanted:
            return set()
        out = self._git("cat-file", "--batch-check", stdin=("\n".join(wanted) + "\n").encode())
        missing = set()
        for sha, line in zip(wanted, out.splitlines(), strict=True):
            parts = line.split()
            if len(parts) < 2 or parts[1] != "commit":
                missing.add(sha)
        return missing

    # ---- refs ----------------------------------------------------------------------------
    def clear_stale_locks(self) -> list[str]:
        """Remove lock files a killed git left behind (they would block those refs forever)
        and our scratch index directories.

        Safe only because the archive lock guarantees no other writer is running.
        """
        stale = [self.path / "packed-refs.lock", self.path / "HEAD.lock", self.path / "config.lock"]
        stale += list((self.path / "refs").rglob("*.lock"))
        removed = []
        for scratch in self.path.glob(_TMP_PREFIX + "*"):
            shutil.rmtree(scratch, ignore_errors=True)
            removed.append(scratch.name)
        for lock in stale:
            if lock.exists():
                lock.unlink()
                removed.append(str(lock.relative_to(self.path)))
        return removed

    def node_refs(self) -> dict[str, str]:
        """Every refs/nodes/<id> with its target, in one git call."""
        out = self._git("for-each-ref", "--format=%(objectname) %(refname)", REF_PREFIX)
        fields = out.split()  # sha, name, sha, name, ... (ids and refs contain no spaces)
        cut = len(REF_PREFIX)
        return {name[cut:]: sha for sha, name in zip(fields[::2], fields[1::2], strict=True)}

    def set_ref(self, node_id: str, sha: str) -> None:
        self._git("update-ref", REF_PREFIX + node_id, sha)

    def set_refs(self, refs: Mapping[str, str]) -> None:
        """Point many node refs at once; large batches go straight into packed-refs."""
        if not refs:
            return
        if len(refs) < 256:
            lines = "".join(f"update {REF_PREFIX}{i} {sha}\n" for i, sha in refs.items())
            self._git("update-ref", "--stdin", stdin=lines.encode())
            return
        # git writes one file per loose ref (100k refs: ~20 s); git's own pack-refs protocol
        # (packed-refs.lock created exclusively, then renamed) takes well under a second.
        loose = [i for i in refs if (self.path / (REF_PREFIX + i)).exists()]
        if loose:
            self.delete_refs(loose)
        self._rewrite_packed_refs(
            {(REF_PREFIX + i).encode(): sha.encode() for i, sha in refs.items()}
        )

    def delete_refs(self, node_ids: Iterable[str]) -> None:
        lines = "".join(f"delete {REF_PREFIX}{i}\n" for i in node_ids)
        if lines:
            self._git("update-ref", "--stdin", stdin=lines.encode())

    def _rewrite_packed_refs(self, updates: Mapping[bytes, bytes]) -> None:
        packed = self.path / "packed-refs"
        lock = self.path / "packed-refs.lock"
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError as exc:
            raise ArchiveError(f"{lock}: exists; another git process is packing refs") from exc
        try:
            out = os.fdopen(fd, "wb")
            entries: dict[bytes, list[bytes]] = {}
            if packed.exists():
                current: list[bytes] | None = None
                for line in packed.read_bytes().splitlines():
                    if line.startswith(b"#") or not line:
                        continue
                    if line.startswith(b"^") and current is not None:
                        current.append(line)  # peeled value of the tag just before
                        continue
                    name = line.split(b" ", 1)[1]
                    current = entries[name] = [line]
            for name, sha in updates.items():
                entries[name] = [sha + b" " + name]
            with out:
                out.write(_PACKED_HEADER)
                for name in sorted(entries):
                    out.write(b"\n".join(entries[name]) + b"\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(lock, packed)
        except BaseException:
            lock.unlink(missing_ok=True)
            raise

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
