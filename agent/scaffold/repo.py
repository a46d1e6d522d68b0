"""A scaffold as data: its repository's text files, read from the seed folder or an archive commit.

The host only ever reads and writes these files; it never imports or runs them (agent code runs in
the sandbox alone).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from archive.paths import MAX_FILE_BYTES, SKIPPED_PARTS, path_problem

SEED_DIR = Path(__file__).parent / "seed"

Files = dict[str, str]  # repository-relative posix path -> text


class ScaffoldError(ValueError):
    """A scaffold folder that cannot be sent to the sandbox (binary, huge or special files)."""


def read_files(root: Path) -> Files:
    """Every text file under `root` (skipping .git and caches), by relative posix path.

    Links are never followed and only regular files are read: a symlink, a FIFO or a device is
    refused, and the size cap counts the bytes read (a /proc file reports size 0). The text is
    the file's bytes decoded, newlines untouched, so it is exactly what is stored."""
    root = Path(root)
    files: Files = {}

    def walk_error(exc: OSError) -> None:
        raise ScaffoldError(f"{exc.filename}: cannot be listed ({exc.strerror})")

    for here, dirs, names in os.walk(root, onerror=walk_error):  # never follows links
        for name in dirs + names:
            if name in SKIPPED_PARTS or name.endswith(".pyc"):
                continue
            path = Path(here, name)
            if name in dirs and not path.is_symlink():
                continue
            rel = path.relative_to(root).as_posix()
            why = path_problem(rel)
            if why:
                raise ScaffoldError(f"{path}: {why}")
            files[rel] = _read_text(path)
        dirs[:] = [d for d in dirs if d not in SKIPPED_PARTS]
    return dict(sorted(files.items()))


def _read_text(path: Path) -> str:
    """One regular file's text: at most MAX_FILE_BYTES, read without following a link."""
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise ScaffoldError(f"{path}: a symbolic link (never followed)")
        if not stat.S_ISREG(mode):
            raise ScaffoldError(f"{path}: not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced since the lstat
                raise ScaffoldError(f"{path}: not a regular file")
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ScaffoldError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ScaffoldError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScaffoldError(f"{path}: not a UTF-8 text file ({exc.reason})") from None


def seed_files() -> Files:
    return read_files(SEED_DIR)


def apply_changes(files: Mapping[str, str], changes: Mapping[str, str | None]) -> Files:
    """`files` with `changes` applied: a text replaces or adds a file, None deletes it."""
    out = dict(files)
    for rel, text in changes.items():
        if text is None:
            out.pop(rel, None)
        else:
            out[rel] = text
    return out
