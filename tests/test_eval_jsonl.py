"""User JSONL benchmarks: valid files load; each schema error names the file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluators.datasets import load_benchmark
from evaluators.jsonl_benchmark import BenchmarkFileError, load_jsonl_benchmark

GOOD = {
    "task_id": "add/0",
    "prompt": "def add(a, b):\n",
    "entry_point": "add",
    "tests": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
    "reference": "    return a + b\n",
}


def write(tmp_path: Path, rows: list[object]) -> Path:
    path = tmp_path / "bench.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_loads_valid_file(tmp_path: Path) -> None:
    second = dict(GOOD, task_id="add/1")
    del second["reference"]
    tasks = load_benchmark(str(write(tmp_path, [GOOD, "", second])))
    assert [t.task_id for t in tasks] == ["add/0", "add/1"]
    assert tasks[0].benchmark == "bench"
    assert tasks[0].reference == "    return a + b\n"
    assert tasks[1].reference is None


@pytest.mark.parametrize(
    ("bad", "field", "message"),
    [
        ("{not json", None, "invalid JSON"),
        ("[1, 2]", None, "JSON object"),
        ({k: v for k, v in GOOD.items() if k != "tests"}, "tests", "missing"),
        ({k: v for k, v in GOOD.items() if k != "task_id"}, "task_id", "missing"),
        (dict(GOOD, test="x"), "test", "unknown field"),
        (dict(GOOD, prompt=3), "prompt", "must be a string"),
        (dict(GOOD, entry_point="not an id"), "entry_point", "identifier"),
        (dict(GOOD, tests="def check(candidate:\n"), "tests", "not valid Python"),
        (dict(GOOD, tests="assert True\n"), "tests", "check(candidate)"),
        (dict(GOOD, task_id=" "), "task_id", "empty"),
        (GOOD, "task_id", "duplicate"),
    ],
)
def test_errors_name_line_and_field(
    tmp_path: Path, bad: object, field: str | None, message: str
) -> None:
    path = write(tmp_path, [GOOD, "", bad])
    with pytest.raises(BenchmarkFileError) as info:
        load_jsonl_benchmark(path)
    error = info.value
    assert error.line == 3
    assert error.field == field
    assert str(error).startswith(f"{path}:3")
    assert message in str(error)
    if field:
        assert f"field '{field}'" in str(error)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkFileError, match="no tasks"):
        load_jsonl_benchmark(write(tmp_path, [""]))


DEEP_TESTS = "def check(candidate):\n    assert candidate(1, 2) == " + "1+" * 100_000 + "3\n"
DEEP_UNARY = "def check(candidate):\n    assert candidate(1, 2) == " + "-" * 100_000 + "3\n"


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (b'{"task_id": "add/\xff"}', None, "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, None, "nested too deeply"),
        (json.dumps(dict(GOOD, tests=DEEP_TESTS)).encode(), "tests", "nested too deeply"),
        (json.dumps(dict(GOOD, tests=DEEP_UNARY)).encode(), "tests", "nested too deeply"),
    ],
)
def test_unparseable_lines_name_the_line(
    tmp_path: Path, raw: bytes, field: str | None, message: str
) -> None:
    """Bytes that are not UTF-8, and JSON or tests nested past the parser's depth, were a
    UnicodeDecodeError, RecursionError or MemoryError; now each is the line's error."""
    path = tmp_path / "bench.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\n" + raw + b"\n")
    with pytest.raises(BenchmarkFileError) as info:
        load_jsonl_benchmark(path)
    assert (info.value.line, info.value.field) == (3, field)
    assert str(info.value).startswith(f"{path}:3") and message in str(info.value)
