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

import git

from archive.errors import ArchiveError

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
        full_env = {**os.environ, **_IDENTITY, **(env or {})}
        proc = subprocess.run(
            [self.repo.git.GIT_PYTHON_GIT_EXECUTABLE, "--git-dir", str(self.path), *args],
            input=stdin,
            capture_output=True,
            env=full_env,
        )
        if check and proc.returncode != 0:
            raise ArchiveError(
                f"{self.path}: git {' '.join(args[:2])} failed: {proc.stderr.decode().strip()}"
            )
        return proc.stdout.decode()

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
        return self.commit_tree(tree, parents, message, date)

    def commit_files(
        self,
        files: Mapping[str, bytes | str | None],
        parents: Sequence[str],
        message: str,
        date: float,
    ) -> str:
        """Apply a file mapping (path -> content, None deletes) to the first parent's tree."""
        with tempfile.TemporaryDirectory(prefix=_TMP_PREFIX, dir=self.path) as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._git("read-tree", parents[0] if parents else "--empty", env=env)
            written = {p: c for p, c in files.items() if c is not None}
            lines: list[str] = []
            if written:
                stage = Path(tmp) / "stage"
                stage.mkdir()
                staged: list[str] = []
                for i, content in enumerate(written.values()):
                    f = stage / str(i)
                    f.write_bytes(content.encode() if isinstance(content, str) else content)
                    staged.append(str(f))
                shas = self._git(
                    "hash-object",
                    "-w",
                    "--no-filters",
                    "--stdin-paths",
                    stdin="\n".join(staged).encode(),
                ).split()
                lines += [f"100644 {sha}\t{path}" for path, sha in zip(written, shas, strict=True)]
            lines += [f"0 {'0' * 40}\t{p}" for p, c in files.items() if c is None]
            if lines:
                self._git(
                    "update-index", "--index-info", stdin="\n".join(lines).encode() + b"\n", env=env
                )
            tree = self._git("write-tree", env=env).strip()
        return self.commit_tree(tree, parents, message, date)

    def empty_commit(self, message: str, date: float) -> str:
        tree = self._git("hash-object", "-t", "tree", "-w", "--stdin", stdin=b"").strip()
        assert tree == _EMPTY_TREE
        return self.commit_tree(tree, [], message, date)

    def checkout(self, commit: str, dest: Path) -> Path:
        """Materialize a scaffold commit into `dest` (created; must be empty or absent)."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=_TMP_PREFIX, dir=self.path) as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._git("--work-tree", str(dest), "read-tree", commit, env=env)
            self._git("--work-tree", str(dest), "checkout-index", "-a", "-f", env=env)
        return dest

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
