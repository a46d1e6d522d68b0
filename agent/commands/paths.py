"""Every path a user types becomes absolute here, once, before any command uses it.

A run directory is handed to git (which changes its working directory), to Docker (bind mounts
must be absolute), to SQLite and to subprocesses started elsewhere; a relative path means
something different to each of them. `~` is expanded for paths that reach us quoted. Symlinks
are kept as typed (the absolute path through the link works everywhere and reads as the user
wrote it).
"""

from __future__ import annotations

import os
from pathlib import Path


def absolute(path: Path | None) -> Path | None:
    """`path` made absolute against the current directory, `~` expanded (None stays None).

    Used as the typer `callback` of every path parameter of the CLI."""
    if path is None:
        return None
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
