"""Files the whole project trusts: written whole (temp file, fsync, rename) and checked against a
pinned sha256 before use.

A top-level module, not part of any package, because each package needs it and none may own it:
`evaluators` writes results and checks benchmark data, `agent` writes run state and checks model
weights. It imports nothing of the project (tests/test_import_boundaries.py holds it to that).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Temp file in the same folder, fsync, rename: a kill leaves the old file or the new one."""
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, delete=False, suffix=".part", encoding="utf-8"
    ) as tmp:
        tmp.write(text)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, error: type[Exception], fix: str) -> None:
    """Refuse a file whose content is not the pinned one, naming the file, both hashes and `fix`.
    Data and model weights share it; each passes its own error type and fix."""
    actual = sha256_of(path)
    if actual != expected:
        raise error(
            f"{path} has sha256 {actual}, expected {expected}: the file is corrupt or was "
            f"replaced; {fix}"
        )
