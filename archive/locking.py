"""One writer per run directory: an exclusive flock, or refs and seqs would race."""

from __future__ import annotations

import fcntl
import time
from pathlib import Path
from typing import IO

from archive.errors import ArchiveLockedError


def lock_run_dir(path: Path, timeout: float) -> IO[str]:
    """Hold an exclusive flock on `path` until the returned file is closed.

    timeout: seconds to wait for another writer (a killed writer's child processes can hold the
    lock for a moment after its death).
    """
    f = open(path, "a+")  # noqa: SIM115 - held open for the archive's lifetime
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() >= deadline:
                f.close()
                raise ArchiveLockedError(
                    f"{path}: run directory is open in another process"
                ) from None
            time.sleep(0.02)
