"""Sandbox jobs that run a scaffold: solve tasks, improve its own repository, run its own tests.

The job's program is a bootstrap (ours, `bootstrap.py`) that writes the scaffold's files, the LLM client and the
evaluators' reply sanitizer (so the agent can turn a chat reply into the program the evaluators'
instruct protocol would judge) into the container's scratch area and defines three entry functions; the trusted check calls one and
hands the plain-data answer back with `keep(...)`. What reaches the container is the scaffold, the
task's prompt and entry point, and a gateway token: never a test of the task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import evaluators.sanitize
from sandbox.config import GATEWAY_MOUNT
from sandbox.job import Job, Limits

CLIENT_MODULE = "lineage_llm"  # the LLM client's module name inside the container
CLIENT_SOURCE = Path(__file__).with_name("llm_client.py")
SANITIZE_MODULE = "lineage_sanitize"  # evaluators/sanitize.py inside the container
SANITIZE_SOURCE = Path(evaluators.sanitize.__file__)
SOCKET = f"{GATEWAY_MOUNT}/llm.sock"
AGENT_ROOT = "/tmp/agent"  # the code that runs (the node's scaffold)
WORKSPACE = "/tmp/workspace"  # the copy that `improve` edits
IMPROVE_NOTE_CHARS = 1000  # of what `improve` returns, kept with the child
# Ours, written last: an edit may not shadow them.
PROTECTED_PATHS = (f"{CLIENT_MODULE}.py", f"{SANITIZE_MODULE}.py")

BOOTSTRAP_SOURCE = Path(__file__).with_name("bootstrap.py")  # the job program, a real file


def bootstrap(files: Mapping[str, str], call_timeout_s: float = 600.0) -> str:
    """The job program for a scaffold: `bootstrap.py` and a `_start` call with its files.

    `call_timeout_s` bounds one LLM call of the agent. Jobs pass their own wall clock: a call may
    wait behind many others in a busy gateway, and any shorter bound drops calls whose answer the
    gateway still computes, so a loaded gateway would spend its time on answers nobody reads."""
    settings = {
        "files": dict(files),
        "ours": {
            f"{CLIENT_MODULE}.py": CLIENT_SOURCE.read_text(),
            f"{SANITIZE_MODULE}.py": SANITIZE_SOURCE.read_text(),
        },
        "agent_root": AGENT_ROOT,
        "workspace": WORKSPACE,
        "client_module": CLIENT_MODULE,
        "socket": SOCKET,
        "call_timeout_s": float(call_timeout_s),
        "note_chars": IMPROVE_NOTE_CHARS,
    }
    return f"{BOOTSTRAP_SOURCE.read_text()}\n_start(**{settings!r})\n"


def task_view(task) -> dict[str, str]:
    """What the agent may see of a task: its prompt and entry point, never its tests."""
    return {"task_id": task.task_id, "prompt": task.prompt, "entry_point": task.entry_point}


def solve_job(
    files: Mapping[str, str],
    tasks: Sequence[Mapping[str, str]],
    token: str,
    limits: Limits,
    threads: int = 8,
    tag: str = "",
) -> Job:
    check = f"keep(lineage_solve({list(tasks)!r}, {token!r}, {int(threads)!r}))"
    program = bootstrap(files, call_timeout_s=limits.wall_s)
    return Job(program=program, checks=(check,), limits=limits, tag=tag)


def improve_job(
    files: Mapping[str, str], problem_statement: str, token: str, limits: Limits
) -> Job:
    check = f"keep(lineage_improve({problem_statement!r}, {token!r}))"
    program = bootstrap(files, call_timeout_s=limits.wall_s)
    return Job(program=program, checks=(check,), limits=limits, tag="improve")


def selftest_job(files: Mapping[str, str], limits: Limits) -> Job:
    return Job(
        program=bootstrap(files),
        checks=("keep(lineage_selftest())",),
        limits=limits,
        tag="selftest",
    )
