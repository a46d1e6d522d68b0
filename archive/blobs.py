"""Optional weight checkpoints, one file per node, written so a crash never leaves half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_TMP_PREFIX = ".tmp-"


class BlobStore:
    """blobs/<node id>: temp file + fsync + os.replace + directory fsync."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if create:  # a read-only archive must not create directories
            path.mkdir(parents=True, exist_ok=True)

    def path_for(self, node_id: str) -> Path:
        return self.path / node_id

    def put(self, node_id: str, source: bytes | Path) -> Path:
        """Store bytes or copy a file; the final name appears only once the content is durable."""
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self.path)
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(source, bytes | bytearray | memoryview):
                    out.write(source)
                else:
                    with open(source, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            final = self.path_for(node_id)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._fsync_dir()
        return final

    def remove(self, node_id: str) -> None:
        self.path_for(node_id).unlink(missing_ok=True)

    def names(self) -> list[str]:
        return [p.name for p in self.path.iterdir() if p.is_file()]

    def _fsync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
