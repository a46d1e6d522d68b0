"""A scaffold as data: its repository's text files, read from the seed folder or an archive commit.

The host only ever reads and writes these files; it never imports or runs them (agent code runs in
the sandbox alone).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

SEED_DIR = Path(__file__).parent / "seed"
MAX_FILE_BYTES = 256 * 1024  # a scaffold is a small program; bigger files are refused, not sent
SKIPPED_PARTS = {".git", "__pycache__"}

Files = dict[str, str]  # repository-relative posix path -> text


class ScaffoldError(ValueError):
    """A scaffold folder that cannot be sent to the sandbox (binary or huge files)."""


def read_files(root: Path) -> Files:
    """Every text file under `root` (skipping .git and caches), by relative posix path."""
    files: Files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or SKIPPED_PARTS & set(rel.parts) or path.suffix == ".pyc":
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ScaffoldError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        try:
            files[rel.as_posix()] = path.read_text()
        except UnicodeDecodeError as exc:
            raise ScaffoldError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    return files


def seed_files() -> Files:
    return read_files(SEED_DIR)


def write_files(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def apply_changes(files: Mapping[str, str], changes: Mapping[str, str | None]) -> Files:
    """`files` with `changes` applied: a text replaces or adds a file, None deletes it."""
    out = dict(files)
    for rel, text in changes.items():
        if text is None:
            out.pop(rel, None)
        else:
            out[rel] = text
    return out


def unified_diff(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    """The change between two versions of a scaffold, as one unified diff (for people and LLMs)."""
    chunks = []
    for rel in sorted(set(old) | set(new)):
        a, b = old.get(rel), new.get(rel)
        if a == b:
            continue
        chunks.extend(
            difflib.unified_diff(
                (a or "").splitlines(keepends=True),
                (b or "").splitlines(keepends=True),
                fromfile=f"a/{rel}" if a is not None else "/dev/null",
                tofile=f"b/{rel}" if b is not None else "/dev/null",
            )
        )
    return "".join(chunks)
