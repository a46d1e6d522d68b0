"""Sandbox jobs that run a scaffold: solve tasks, improve its own repository, run its own tests.

The job's program is a bootstrap (ours) that writes the scaffold's files, the LLM client and the
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

BOOTSTRAP = '''
import os as _os, stat as _stat, sys as _sys, threading as _threading, traceback as _traceback

_FILES = {files!r}
_OURS = {ours!r}


def _write(root, files):
    for rel, text in files.items():
        path = _os.path.join(root, rel)
        _os.makedirs(_os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)


_sys.dont_write_bytecode = True
_write({agent_root!r}, _FILES)
_write({agent_root!r}, _OURS)
_sys.path.insert(0, {agent_root!r})


def _llm(token):
    from {client_module} import LLM
    return LLM({socket!r}, token, timeout_s={call_timeout_s!r})


def lineage_solve(tasks, token, threads):
    """[{{"program": str, "error": str|None}}] per task; tasks run in threads so calls batch."""
    import scaffold
    llm = _llm(token)
    answers = [None] * len(tasks)

    def work(i):
        try:
            program = scaffold.solve(tasks[i], llm)
            if not isinstance(program, str):
                raise TypeError(f"solve returned {{type(program).__name__}}, not str")
            answers[i] = {{"program": program, "error": None}}
        except BaseException as exc:
            answers[i] = {{"program": "", "error": f"{{type(exc).__name__}}: {{exc}}"[:2000]}}

    pending = list(range(len(tasks)))
    lock = _threading.Lock()

    def worker():
        while True:
            with lock:
                if not pending:
                    return
                i = pending.pop(0)
            work(i)

    pool = [_threading.Thread(target=worker, daemon=True) for _ in range(max(1, threads))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return answers


def lineage_improve(problem_statement, token):
    """The workspace's changes after the agent's own `improve`, {{path: text or None (deleted)}},
    and what improve said it did (its return value, if a string, cut)."""
    import scaffold
    _write({workspace!r}, _FILES)
    note = scaffold.improve({workspace!r}, problem_statement, _llm(token))
    note = note[:{note_chars!r}] if isinstance(note, str) else ""
    changes = {{}}
    seen = set()
    for root, dirs, names in _os.walk({workspace!r}):  # links are listed, never followed
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__")]
        for name in dirs + names:
            path = _os.path.join(root, name)
            rel = _os.path.relpath(path, {workspace!r})
            if rel.endswith(".pyc") or (name in dirs and not _os.path.islink(path)):
                continue
            if not _stat.S_ISREG(_os.lstat(path).st_mode):  # a link, FIFO, socket, device
                raise ValueError(f"improve left something that is not a regular file: {{rel!a}}")
            seen.add(rel)
            try:
                with open(path, encoding="utf-8", newline="") as f:
                    text = f.read()
            except UnicodeDecodeError:
                raise ValueError(f"improve wrote a non-text file: {{rel!a}}")
            if _FILES.get(rel) != text:
                changes[rel] = text
    for rel in _FILES:
        if rel not in seen:
            changes[rel] = None
    return {{"changes": changes, "note": note}}


def lineage_selftest():
    """Import the package and run every test_* function under tests/: {{"passed": n, "failures": [...]}}."""
    import importlib
    failures = []
    passed = 0
    try:
        importlib.import_module("scaffold")
    except BaseException:
        return {{"passed": 0, "failures": ["import scaffold: " + _traceback.format_exc(limit=3)[-1500:]]}}
    tests_dir = _os.path.join({agent_root!r}, "tests")
    names = sorted(n for n in (_os.listdir(tests_dir) if _os.path.isdir(tests_dir) else [])
                   if n.startswith("test_") and n.endswith(".py"))
    for name in names:
        try:
            module = importlib.import_module("tests." + name[:-3])
        except BaseException:
            failures.append(f"{{name}}: " + _traceback.format_exc(limit=3)[-1500:])
            continue
        for attr in sorted(dir(module)):
            if attr.startswith("test_") and callable(getattr(module, attr)):
                try:
                    getattr(module, attr)()
                    passed += 1
                except BaseException:
                    failures.append(f"{{name}}::{{attr}}: " + _traceback.format_exc(limit=3)[-1500:])
    return {{"passed": passed, "failures": failures}}
'''


def bootstrap(files: Mapping[str, str], call_timeout_s: float = 600.0) -> str:
    """The job program for a scaffold: a literal of its files plus the three entry functions.

    `call_timeout_s` bounds one LLM call of the agent. Jobs pass their own wall clock: a call may
    wait behind many others in a busy gateway, and any shorter bound drops calls whose answer the
    gateway still computes, so a loaded gateway would spend its time on answers nobody reads."""
    return BOOTSTRAP.format(
        files=dict(files),
        ours={
            f"{CLIENT_MODULE}.py": CLIENT_SOURCE.read_text(),
            f"{SANITIZE_MODULE}.py": SANITIZE_SOURCE.read_text(),
        },
        client_module=CLIENT_MODULE,
        socket=SOCKET,
        agent_root=AGENT_ROOT,
        workspace=WORKSPACE,
        note_chars=IMPROVE_NOTE_CHARS,
        call_timeout_s=float(call_timeout_s),
    )


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
