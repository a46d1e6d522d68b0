"""What a scaffold file may be called and how big it may be: one policy for every path an agent
hands back, every commit the archive writes and every tree it checks out or reads.

Strict on purpose. A path that git, a filesystem or Python's import system would read otherwise
than it is written (`a//b`, `a/./b`, `x/.git/y`, a control character, an undecodable byte) is
refused, never normalized, so the files a self-test checked are exactly the files stored and run;
and one that could name something outside the repository (`..`, a leading `/`) cannot exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MAX_FILE_BYTES = 256 * 1024  # a scaffold is a small program; bigger files are refused, not sent
MAX_SCAFFOLD_BYTES = 4 * 1024 * 1024  # all files of one change together (the host parses them)
MAX_FILES = 1000
MAX_PATH_CHARS = 200
MAX_PATH_DEPTH = 8
SKIPPED_PARTS = frozenset({".git", "__pycache__"})  # what a reader of a folder leaves out

_ALLOWED = re.compile(r"[A-Za-z0-9._+=@,/-]*")  # printable ASCII without quotes, \, spaces


def path_problem(path: object, protected: Sequence[str] = ()) -> str | None:
    """Why `path` cannot name a scaffold file (one printable line), or None.

    `protected` names modules of ours (`lineage_llm.py`): a path that Python could import
    under that name instead (a package `lineage_llm/`, `lineage_llm.so`, ...) is refused too.
    """
    if not isinstance(path, str):
        return f"path {path!a}: not a string"
    shown = f"path {path[:MAX_PATH_CHARS]!a}"
    if not path:
        return "path '': empty"
    if len(path) > MAX_PATH_CHARS:
        return f"{shown}...: longer than {MAX_PATH_CHARS} characters"
    bad = _ALLOWED.fullmatch(path) is None
    if bad:
        char = next(c for c in path if _ALLOWED.fullmatch(c) is None)
        return f"{shown}: character {char!a} not allowed (letters, digits and ._+=@,- only)"
    parts = path.split("/")
    if path.startswith("/") or ".." in parts:
        return f"{shown}: outside the repository"
    if "" in parts or "." in parts:
        return f"{shown}: not normalized (an empty or '.' component)"
    if len(parts) > MAX_PATH_DEPTH:
        return f"{shown}: deeper than {MAX_PATH_DEPTH} levels"
    for part in parts:
        if part.lower() == ".git":
            return f"{shown}: a .git component (git would drop it)"
        if part.startswith("-"):
            return f"{shown}: a component starting with '-'"
    if SKIPPED_PARTS & set(parts) or path.endswith(".pyc"):
        return f"{shown}: a cache file (never read back, so never stored)"
    for name in protected:
        stem = name.removesuffix(".py")
        if path in (name, stem) or path.startswith((stem + "/", stem + ".")):
            return f"{shown}: touches a protected path ({name}, ours, as a file or package)"
    return None


def tree_problem(paths: Iterable[str]) -> str | None:
    """Why these paths cannot be one scaffold (a file where another needs a directory, too many
    files), or None. Git would silently replace one by the other."""
    paths = list(paths)
    if len(paths) > MAX_FILES:
        return f"{len(paths)} files: more than {MAX_FILES}"
    dirs = {path[:i] for path in paths for i, c in enumerate(path) if c == "/"}
    clash = sorted(dirs.intersection(paths))
    if clash:
        return f"path {clash[0]!a}: both a file and a directory"
    return None


def size_problem(path: str, size: int) -> str | None:
    if size > MAX_FILE_BYTES:
        return f"path {path!a}: {size} bytes, larger than {MAX_FILE_BYTES} bytes"
    return None
