"""User benchmarks as JSONL: one task a line, in one schema, checked before anything runs.

Schema (one JSON object per line; blank lines are skipped):

    task_id      str, required, non-empty, unique in the file
    prompt       str, required: the code a model continues (signature + docstring)
    entry_point  str, required: a Python identifier, the function the tests call
    tests        str, required: Python source defining `check(candidate)`, which raises
                 AssertionError when `candidate` (the entry point) is wrong
    reference    str, optional: a correct completion of `prompt` (calibrates timeouts)

Example:
    {"task_id": "add/0", "prompt": "def add(a, b):\\n", "entry_point": "add",
     "tests": "def check(candidate):\\n    assert candidate(1, 2) == 3\\n",
     "reference": "    return a + b\\n"}

Any other field is an error (so a typo like `test` is caught rather than ignored).
"""

from __future__ import annotations

import ast
from pathlib import Path

from evaluators.jsonl_lines import LineError, json_lines
from evaluators.task import Task

REQUIRED = ("task_id", "prompt", "entry_point", "tests")
OPTIONAL = ("reference",)


class BenchmarkFileError(ValueError):
    """A JSONL benchmark line breaks the schema; names the file, line and field."""

    def __init__(self, path: Path, line: int, field: str | None, message: str) -> None:
        self.path, self.line, self.field = path, line, field
        where = f"{path}:{line}" + (f": field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


def defines_check(tests: str) -> bool:
    """Whether `tests` defines `check` at top level; SyntaxError if it is not Python, including
    source nested too deeply for the parser (which raises RecursionError or MemoryError)."""
    try:
        tree = ast.parse(tests)
    except (RecursionError, MemoryError):
        raise SyntaxError("nested too deeply to parse") from None
    return any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)


def parse_task(path: Path, line_no: int, row: object, benchmark: str) -> Task:
    """The task on line `line_no`, whose parsed JSON value is `row`."""

    def fail(field: str | None, message: str) -> BenchmarkFileError:
        return BenchmarkFileError(path, line_no, field, message)

    if not isinstance(row, dict):
        raise fail(None, f"expected a JSON object, got {type(row).__name__}")
    for field in REQUIRED:
        if field not in row:
            raise fail(field, "missing")
    for field in row:
        if field not in REQUIRED + OPTIONAL:
            raise fail(field, f"unknown field (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    for field in REQUIRED + OPTIONAL:
        if field in row and not isinstance(row[field], str):
            raise fail(field, f"must be a string, got {type(row[field]).__name__}")
    if not row["task_id"].strip():
        raise fail("task_id", "must not be empty")
    if not row["entry_point"].isidentifier():
        raise fail("entry_point", f"{row['entry_point']!r} is not a Python identifier")
    try:
        has_check = defines_check(row["tests"])
    except SyntaxError as e:
        raise fail("tests", f"not valid Python ({e.msg}, line {e.lineno})") from e
    if not has_check:
        raise fail("tests", "must define `check(candidate)`")
    return Task(
        task_id=row["task_id"],
        prompt=row["prompt"],
        entry_point=row["entry_point"],
        tests=row["tests"],
        benchmark=benchmark,
        reference=row.get("reference"),
    )


def load_jsonl_benchmark(path: Path, benchmark: str | None = None) -> list[Task]:
    """All tasks of a JSONL benchmark; the benchmark is named after the file unless given."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkFileError(path, 0, None, "no such file")
    benchmark = benchmark or path.stem
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    try:
        for line_no, row in json_lines(path):
            task = parse_task(path, line_no, row, benchmark)
            if task.task_id in seen:
                raise BenchmarkFileError(
                    path,
                    line_no,
                    "task_id",
                    f"duplicate {task.task_id!r} (first on line {seen[task.task_id]})",
                )
            seen[task.task_id] = line_no
            tasks.append(task)
    except LineError as e:
        raise BenchmarkFileError(path, e.line, None, str(e)) from None
    if not tasks:
        raise BenchmarkFileError(path, 0, None, "no tasks")
    return tasks
